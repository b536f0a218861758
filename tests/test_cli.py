"""The adntn-lab command line: train (with resume and strategies), costs, sweep."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adntn_lab as al
from adntn_lab import cli
from adntn_lab import data as data_mod
from adntn_lab.train import load_checkpoint
from adntn_lab.train import runs as runs_mod
from adntn_lab.train import sweep as sweep_mod

DIGITS = [
    "--dataset",
    "digits",
    "--hidden",
    "24",
    "--batch-size",
    "128",
    "--lr",
    "1e-2",
    "--no-progress",
]


def train(out, *extra):
    return cli.main(["train", *DIGITS, "--out", str(out), *extra])


def test_help_from_installed_script():
    exe = Path(sys.executable).with_name("adntn-lab")
    script = str(exe) if exe.exists() else shutil.which("adntn-lab")
    assert script, "the adntn-lab entry point is not installed (pip install -e .)"
    res = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for word in ("train", "costs", "sweep", "demo"):
        assert word in res.stdout


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: adntn-lab" in capsys.readouterr().out


def test_train_writes_a_run_folder(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--family", "ttn", "--bond-dim", "2", "--epochs", "2") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.safetensors",
        "config.json",
        "curves.png",
        "metrics.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "ttn" and config["bond_dim"] == 2 and config["hidden"] == 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["epochs_done"] == 2
    layer = metrics["compressed_layers"][0]
    assert layer["name"] == "fc1" and layer["params_after"] < layer["params_before"] == 24 * 64
    assert metrics["final"]["test_acc"] > 0.3  # well above chance (0.1) after two epochs
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the checkpoint holds the compressed model: rebuild it and get the stored accuracy back
    ck = load_checkpoint(out / "checkpoint.safetensors")
    cfg = runs_mod.RunConfig.from_dict(ck.config)
    ds = data_mod.load_dataset("digits")
    model = ck.restore_model(runs_mod.build_run_model(cfg, ds))
    from adntn_lab.train import evaluate

    assert evaluate(model, ds.test).accuracy == metrics["final"]["test_acc"]


def test_resume_equals_uninterrupted_run(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--family", "mera", "--bond-dim", "2", "--seed", "3"]
    assert train(full, *common, "--epochs", "2") == 0
    assert train(part, *common, "--epochs", "1") == 0
    # continue in a fresh model/optimiser built from the checkpoint; settings come from it
    assert (
        cli.main(["train", "--out", str(part), "--resume", "--epochs", "2", "--no-progress"]) == 0
    )
    assert "resuming" in capsys.readouterr().out
    a = load_checkpoint(full / "checkpoint.safetensors")
    b = load_checkpoint(part / "checkpoint.safetensors")
    assert a.model_state.keys() == b.model_state.keys()
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k
    for k in a.optimizer_state["state"]:
        for name, v in a.optimizer_state["state"][k].items():
            assert torch.equal(v, b.optimizer_state["state"][k][name])
    ha, hb = a.history, b.history
    assert ha.step_loss == hb.step_loss and ha.test_acc == hb.test_acc
    assert json.loads((part / "metrics.json").read_text())["epochs_done"] == 2


def test_resume_refuses_changed_settings_and_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--family", "dense", "--epochs", "1") == 0
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--batch-size", "7",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "only epochs, device and lr may change" in err.lower()
    assert train(out, "--family", "dense", "--epochs", "1") == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err


def test_fit_finetune_strategy(tmp_path):
    out = tmp_path / "ff"
    assert (
        train(
            out,
            "--family",
            "ttn",
            "--bond-dim",
            "3",
            "--strategy",
            "fit-finetune",
            "--dense-epochs",
            "1",
            "--fit-steps",
            "30",
            "--epochs",
            "1",
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "fit-finetune"
    assert len(metrics["dense_pretraining"]["epoch"]) == 1
    # relative error below 1, that of a zero weight: the generator moved towards the dense one
    assert 0 < metrics["fit_errors"]["fc1"] < 1.0
    assert metrics["complete"]


def test_dmrg_strategy_runs(tmp_path):
    out = tmp_path / "dmrg"
    assert (
        train(out, "--family", "mpo", "--bond-dim", "2", "--strategy", "dmrg", "--epochs", "1") == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "dmrg" and metrics["complete"]
    assert metrics["history"]["epoch"] == [1] and len(metrics["history"]["step_loss"]) > 0
    assert load_checkpoint(out / "checkpoint.safetensors").meta["train_state"] is None


def test_dmrg_strategy_unavailable_is_clear(tmp_path, monkeypatch, capsys):
    def missing(name, *a, **k):
        raise ImportError(f"No module named {name!r}")

    from adntn_lab.train import strategies

    monkeypatch.setattr(strategies.importlib, "import_module", missing)
    rc = train(tmp_path / "d", "--family", "mpo", "--strategy", "dmrg", "--epochs", "1")
    assert rc == 2
    err = capsys.readouterr().err
    assert "dmrg" in err and "'e2e'" in err
    assert train(tmp_path / "d2", "--family", "ttn", "--strategy", "dmrg") == 2
    assert "family 'mpo'" in capsys.readouterr().err


def test_offline_dataset_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_mod, "_import_torchvision", lambda: None)
    rc = cli.main(
        ["train", "--dataset", "cifar10", "--model", "vgg", "--out", str(tmp_path), "--no-progress"]
    )
    assert rc == 2
    assert "'digits', 'mnist-5k'" in capsys.readouterr().err


def test_costs(capsys):
    assert (
        cli.main(
            [
                "costs",
                "--family",
                "ttn",
                "--in-features",
                "64",
                "--out-features",
                "32",
                "--bond-dim",
                "3",
                "--batch-size",
                "16",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    gen = al.build("ttn", 64, 32, bond_dim=3)
    # DESIGN.md: sum_k d_k chi + (N - 2) chi^3 + chi^2 for a uniform-chi TTN
    d = gen.tensorization.site_dims
    assert report["num_params"] == sum(d) * 3 + (len(d) - 2) * 27 + 9
    assert report["batch_size"] == 16 and report["dense_flops"] == 2 * 16 * 64 * 32
    assert report["compression_ratio"] == pytest.approx(64 * 32 / report["num_params"])

    assert (
        cli.main(
            [
                "costs",
                "--family",
                "lowrank",
                "--rank",
                "5",
                "--in-features",
                "40",
                "--out-features",
                "30",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "lowrank" in text and "params 350 " in text  # rank * (in + out)

    assert (
        cli.main(["costs", "--family", "ttn", "--bond-dim", "2", "--activation", "sigmoidx"]) == 2
    )
    assert "sigmoidx" in capsys.readouterr().err


def _rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_sweep_runs_grid_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--families",
        "ttn",
        "dense",
        "--bond-dims",
        "2",
        "3",
        "--seeds",
        "0",
        "--dataset",
        "digits",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--lr",
        "1e-2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main(args) == 0
    rows = _rows(out)
    assert sorted(r["key"] for r in rows) == ["dense-seed0", "ttn-chi2-seed0", "ttn-chi3-seed0"]
    by_key = {r["key"]: r for r in rows}
    assert by_key["dense-seed0"]["compression"] is None
    assert (
        by_key["ttn-chi2-seed0"]["compressed_params"]
        < by_key["ttn-chi3-seed0"]["compressed_params"]
        < 16 * 64
    )
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and (out / r["key"] / "checkpoint.safetensors").exists()

    calls = []
    real = sweep_mod.run_training

    def counting(config, *a, **k):
        calls.append(sweep_mod.point_key(config.family, config.bond_dim, config.seed))
        return real(config, *a, **k)

    monkeypatch.setattr(sweep_mod, "run_training", counting)
    assert cli.main(args) == 0  # everything done: nothing runs again
    assert calls == [] and len(_rows(out)) == 3
    assert cli.main(args[:8] + ["0", "1"] + args[9:]) == 0  # one more seed: only new points
    assert sorted(calls) == ["dense-seed1", "ttn-chi2-seed1", "ttn-chi3-seed1"]
    assert len(_rows(out)) == 6
    capsys.readouterr()

    changed = [a if a != "1e-2" else "2e-2" for a in args]
    assert cli.main(changed) == 2
    assert "lr" in capsys.readouterr().err


def test_sweep_continues_an_interrupted_point(tmp_path, monkeypatch):
    base = runs_mod.RunConfig(
        model="fc2", dataset="digits", hidden=16, epochs=2, batch_size=256, lr=1e-2
    )
    out = tmp_path / "s"
    stop_after = {"n": 3}

    def stopper(ev):
        if ev["event"] == "step":
            stop_after["n"] -= 1
            return stop_after["n"] > 0

    real = sweep_mod.run_training
    monkeypatch.setattr(
        sweep_mod, "run_training", lambda *a, **k: real(*a, callbacks=[stopper], **k)
    )
    rows = sweep_mod.run_sweep(
        base, out, families=["mpo"], bond_dims=[2], seeds=[0], progress=False, log=None
    )
    assert rows == []  # stopped mid-way: nothing recorded
    ck = load_checkpoint(out / "mpo-chi2-seed0" / "checkpoint.safetensors")
    assert ck.meta["train_state"]["step"] == 3
    monkeypatch.setattr(sweep_mod, "run_training", real)
    rows = sweep_mod.run_sweep(
        base, out, families=["mpo"], bond_dims=[2], seeds=[0], progress=False, log=None
    )
    assert [r["key"] for r in rows] == ["mpo-chi2-seed0"] and rows[0]["epochs"] == 2
    # equals an uninterrupted run of the same point
    ref = runs_mod.run_training(
        sweep_mod.copy_config(base, family="mpo", bond_dim=2),
        tmp_path / "ref",
        progress=False,
        log=None,
    )
    assert math.isclose(rows[0]["test_acc"], ref.metrics["final"]["test_acc"], abs_tol=0)
    a = load_checkpoint(out / "mpo-chi2-seed0" / "checkpoint.safetensors").model_state
    b = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)
