"""Data-parallel training over torch.distributed (gloo on 127.0.0.1): equal to one process at the
same global batch, rank-0 writes, resume with another number of ranks, clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adntn_lab import cli
from adntn_lab.train import distributed as dd
from adntn_lab.train.checkpoint import load_checkpoint
from adntn_lab.train.loop import epoch_order
from adntn_lab.train.runs import RunConfig, run_training

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--model", "fc2", "--dataset", "mnist-5k", "--family", "ttn", "--bond-dim", "2",
         "--batch-size", "100", "--lr", "3e-3", "--seed", "1", "--no-progress"]


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return env


def _weights(run_dir):
    return load_checkpoint(Path(run_dir) / "checkpoint.safetensors").model_state


def _metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def _assert_same_run(a, b, *, atol):
    ha, hb = _metrics(a)["history"], _metrics(b)["history"]
    assert len(ha["step_loss"]) == len(hb["step_loss"])
    np.testing.assert_allclose(ha["step_loss"], hb["step_loss"], rtol=0, atol=atol)
    np.testing.assert_allclose(ha["train_loss"], hb["train_loss"], rtol=0, atol=atol)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


def test_two_ranks_equal_one_process_and_resume_with_one(tmp_path):
    two = tmp_path / "two"
    res = subprocess.run([sys.executable, "-m", "adntn_lab", "train", *TRAIN, "--epochs", "2",
                          "--out", str(two), "--nproc", "2"], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    # rank 0 alone logs and writes: one summary line, one run folder, no stray files
    assert res.stdout.count("2 epoch(s) in") == 1 and res.stdout.count("run folder:") == 1
    assert sorted(p.name for p in two.iterdir()) == [
        "checkpoint.safetensors", "config.json", "curves.png", "metrics.json"]
    assert _metrics(two)["world_size"] == 2 and _metrics(two)["complete"]

    one = tmp_path / "one"
    config = RunConfig(model="fc2", dataset="mnist-5k", family="ttn", bond_dim=2,
                       batch_size=100, lr=3e-3, seed=1, epochs=2)
    run_training(config, one, progress=False, log=None)
    assert _metrics(one)["world_size"] == 1
    _assert_same_run(two, one, atol=2e-5)

    # a two-rank checkpoint continues in one process, as the one-process run does
    assert cli.main(["train", "--out", str(two), "--resume", "--epochs", "3",
                     "--no-progress"]) == 0
    run_training(RunConfig(**{**config.to_dict(), "epochs": 3}), one, resume=True,
                 progress=False, log=None)
    assert len(_metrics(two)["history"]["epoch"]) == 3
    assert _metrics(two)["world_size"] == 1
    _assert_same_run(two, one, atol=5e-5)


def test_plain_torchrun_runs_the_same_training(tmp_path):
    out = tmp_path / "tr"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "adntn_lab",
         "train", "--dataset", "digits", "--hidden", "16", "--family", "mpo", "--bond-dim", "2",
         "--epochs", "1", "--batch-size", "50", "--out", str(out), "--no-progress"],
        env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("run folder:") == 1 and _metrics(out)["world_size"] == 2
    one = tmp_path / "one"
    run_training(RunConfig(dataset="digits", hidden=16, family="mpo", bond_dim=2, epochs=1,
                           batch_size=50), one, progress=False, log=None)
    _assert_same_run(out, one, atol=2e-5)


def test_ddp_gradients_equal_the_full_batch_gradient_for_every_family(tmp_path):
    import _ddp_gradients as helper

    out = tmp_path / "grads.npz"
    code = ("import sys; from adntn_lab.train.distributed import launch\n"
            f"launch([{str(out)!r}], 3, module='_ddp_gradients')\n")
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    got = np.load(out)
    x, y = helper.batch()  # 13 examples on 3 ranks: parts of 5, 4 and 4
    checked = 0
    for family in helper.FAMILIES:
        model = helper.layer(family)
        # the ranks' starting point: a generator's calibrated scale may differ in the last
        # float32 bits with the thread count, and the reference is one process on all threads
        model.load_state_dict({k[len(f"init/{family}/"):]: torch.from_numpy(got[k])
                               for k in got.files if k.startswith(f"init/{family}/")})
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for name, p in model.named_parameters():
            np.testing.assert_allclose(got[f"{family}/{name}"], p.grad.numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=f"{family}/{name}")
            checked += 1
    assert checked == len([k for k in got.files if not k.startswith("init/")]) and checked >= 8


def test_global_batch_sampler_deals_out_the_one_process_order():
    data = torch.utils.data.TensorDataset(torch.arange(23))
    for epoch in (0, 1):
        order = epoch_order(23, 5, epoch)
        parts = [dd.GlobalBatchSampler(data, 8, num_replicas=3, rank=r, seed=5) for r in range(3)]
        for s in parts:
            s.set_epoch(epoch)
        for b in range(3):  # batches of 8, 8 and 7: every example once, in order
            joined = torch.cat([s.local_batch(b) for s in parts])
            assert torch.equal(joined, order[b * 8:(b + 1) * 8])
            assert max(len(s.local_batch(b)) for s in parts) - min(
                len(s.local_batch(b)) for s in parts) <= 1
        assert sorted(i for s in parts for i in s) == list(range(23))
        assert sum(len(s) for s in parts) == 23
    single = dd.GlobalBatchSampler(data, 8, num_replicas=1, rank=0, seed=5)
    single.set_epoch(1)
    assert list(single) == epoch_order(23, 5, 1).tolist()


@pytest.mark.parametrize("env, match", [
    ({"RANK": "0"}, "WORLD_SIZE, MASTER_ADDR, MASTER_PORT missing"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT missing"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK must lie in 0 .. WORLD_SIZE-1 = 1"),
    ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     "RANK='x' is not an integer"),
])
def test_half_set_environment_is_refused(env, match):
    with pytest.raises(ValueError, match=match):
        dd.read_env(env)
    assert dd.read_env({}) is None


def test_cli_reports_a_half_set_environment(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RANK", "0")
    for k in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert cli.main(["train", *TRAIN, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "half set up" in err and "--nproc" in err and not (tmp_path / "x").exists()


def test_a_dead_rank_stops_the_others(tmp_path):
    code = ("import sys; from adntn_lab.train.distributed import launch, LaunchError\n"
            "try:\n    launch([], 2, module='_ddp_rank_dies')\n"
            "except LaunchError as e:\n    print('LaunchError:', e); sys.exit(7)\n")
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 7, res.stdout + res.stderr
    assert "rank 1 of 2 failed with exit code 3" in res.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_peer_times_out_instead_of_hanging():
    env = {**_env(), "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    code = "from adntn_lab.train.distributed import init_distributed; init_distributed(timeout=2)"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0
    assert "timeout" in res.stderr.lower() or "timed out" in res.stderr.lower(), res.stderr


def test_fit_distributed_needs_a_process_group():
    from adntn_lab.train.loop import fit

    model = torch.nn.Linear(4, 2)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="needs a running process group"):
        fit(model, data, epochs=1, distributed=True, progress=False)


def test_nproc_refuses_what_the_ranks_could_not_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "d"
    assert cli.main(["train", "--family", "mpo", "--strategy", "dmrg", "--nproc", "2",
                     "--out", str(out)]) == 2
    assert "dmrg" in capsys.readouterr().err and not out.exists()
    assert cli.main(["train", *TRAIN, "--device", "cuda:0", "--nproc", "2", "--out",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert ("not available" in err or "rank r uses GPU r" in err) and not out.exists()
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    assert cli.main(["train", *TRAIN, "--nproc", "2", "--out", str(out)]) == 2
    assert "under torchrun leave --nproc out" in capsys.readouterr().err
