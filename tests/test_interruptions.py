"""Runs survive interruptions: Ctrl-C, kills before the first checkpoint, periodic checkpoints,
temporaries of killed saves; and the CLI answers every mistake in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from designs import small_run_config

from adntn_lab import cli
from adntn_lab.train import checkpoint as ckpt_mod
from adntn_lab.train import load_checkpoint
from adntn_lab.train import runs as runs_mod

DIGITS = ["--dataset", "digits", "--hidden", "24", "--family", "ttn", "--bond-dim", "2",
          "--no-progress"]




def same_checkpoints(a, b):
    a, b = load_checkpoint(a), load_checkpoint(b)
    assert a.model_state.keys() == b.model_state.keys()
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k]), k
    assert a.history.step_loss == b.history.step_loss
    assert a.history.test_acc == b.history.test_acc


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- resume settings


def test_resume_before_the_first_checkpoint_uses_the_saved_settings(tmp_path, monkeypatch,
                                                                   capsys):
    out, ref = tmp_path / "run", tmp_path / "ref"
    settings = ["--batch-size", "100", "--lr", "0.002", "--epochs", "1"]

    def killed(*a, **k):  # as if the process died during epoch 1
        raise SystemExit(9)

    monkeypatch.setattr(runs_mod, "fit", killed)
    with pytest.raises(SystemExit):
        cli.main(["train", *DIGITS, *settings, "--out", str(out)])
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    saved = (out / "config.json").read_text()

    # a conflicting setting is refused, naming it; nothing is overwritten
    assert cli.main(["train", "--out", str(out), "--resume", "--batch-size", "64",
                     "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "batch_size: saved 100, now 64" in err
    assert (out / "config.json").read_text() == saved

    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "from the start with its saved settings" in capsys.readouterr().out
    cfg = load_checkpoint(out / "checkpoint.safetensors").config
    assert cfg["batch_size"] == 100 and cfg["lr"] == 0.002
    assert json.loads((out / "config.json").read_text()) == json.loads(saved)
    assert cli.main(["train", *DIGITS, *settings, "--out", str(ref)]) == 0
    same_checkpoints(out / "checkpoint.safetensors", ref / "checkpoint.safetensors")


def test_unreadable_config_json_is_named(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{not json")
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "config.json is not valid JSON" in one_line_error(capsys)
    (out / "config.json").write_text(json.dumps({"batch_size": "big"}))
    assert cli.main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "batch_size must be an int" in one_line_error(capsys)


# ----------------------------------------------------------------------------- Ctrl-C


def _ctrl_c_at(step, signum=signal.SIGINT):
    def cb(ev):
        if ev["event"] == "step" and ev["step"] == step:
            os.kill(os.getpid(), signum)
    return cb


def test_ctrl_c_writes_a_checkpoint_and_resume_equals_the_uninterrupted_run(tmp_path, digits):
    full, part = tmp_path / "full", tmp_path / "part"
    runs_mod.run_training(small_run_config(), full, data=digits, progress=False, log=None)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(runs_mod.RunInterrupted) as info:
        runs_mod.run_training(small_run_config(), part, data=digits, progress=False, log=None,
                              callbacks=[_ctrl_c_at(5)])
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    err = info.value
    assert isinstance(err, KeyboardInterrupt) and err.checkpoint == part / "checkpoint.safetensors"
    ck = load_checkpoint(err.checkpoint)
    assert ck.meta["train_state"]["step"] == err.step >= 5 and ck.epoch == 0
    assert "--resume" in str(err)
    runs_mod.run_training(small_run_config(), part, resume=True, data=digits, progress=False,
                          log=None)
    same_checkpoints(full / "checkpoint.safetensors", part / "checkpoint.safetensors")


@pytest.mark.parametrize("signum, status, name", [(signal.SIGINT, 130, "Ctrl-C"),
                                                   (signal.SIGTERM, 143, "SIGTERM")])
def test_cli_interrupt_exits_128_plus_signal_with_one_line(tmp_path, monkeypatch, capsys,
                                                          signum, status, name):
    fit = runs_mod.fit

    def fit_with_ctrl_c(*a, callbacks=(), **k):
        return fit(*a, callbacks=[*callbacks, _ctrl_c_at(3, signum)], **k)

    monkeypatch.setattr(runs_mod, "fit", fit_with_ctrl_c)
    before = signal.getsignal(signum)
    out = tmp_path / "run"
    assert cli.main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == status
    assert signal.getsignal(signum) is before
    err = one_line_error(capsys)
    assert err.startswith(f"adntn-lab train: interrupted ({name}) at epoch 1, step")
    assert f"adntn-lab train --out {out} --resume" in err
    assert load_checkpoint(out / "checkpoint.safetensors").meta["train_state"]["step"] >= 3


# ----------------------------------------------------------------------------- periodic saves


def test_checkpoint_every_n_steps_bounds_the_work_a_crash_loses(tmp_path, digits, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    runs_mod.run_training(small_run_config(), full, data=digits, progress=False, log=None)
    seen = []

    def crash_at_7(ev):
        if ev["event"] == "step":
            path = part / "checkpoint.safetensors"
            seen.append(load_checkpoint(path).meta["train_state"]["step"]
                        if path.exists() else None)
            if ev["step"] == 7:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        runs_mod.run_training(small_run_config(), part, data=digits, progress=False, log=None,
                              checkpoint_every=3, callbacks=[crash_at_7])
    # the run's own callback saves first: steps 3 and 6 were written when reached
    assert seen == [None, None, 3, 3, 3, 6, 6]
    assert load_checkpoint(part / "checkpoint.safetensors").meta["train_state"]["step"] == 6
    runs_mod.run_training(small_run_config(), part, resume=True, data=digits, progress=False,
                          log=None)
    same_checkpoints(full / "checkpoint.safetensors", part / "checkpoint.safetensors")
    with pytest.raises(ValueError, match="checkpoint_every"):
        runs_mod.run_training(small_run_config(), tmp_path / "x", data=digits, checkpoint_every=0)
    with pytest.raises(SystemExit) as info:  # argparse's usage error
        cli.main(["train", *DIGITS, "--out", str(tmp_path / "y"), "--checkpoint-every", "0"])
    assert info.value.code == 2


def test_resume_removes_temporaries_of_killed_saves(tmp_path, digits):
    out = tmp_path / "run"
    runs_mod.run_training(small_run_config(epochs=1), out, data=digits, progress=False, log=None)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = out / f"{ckpt_mod._temp_prefix('checkpoint.safetensors', proc.pid)}abcdefgh.tmp"
    stale.write_bytes(b"\0" * 4096)
    lines = []
    runs_mod.run_training(small_run_config(epochs=2), out, resume=True, data=digits, progress=False,
                          log=lines.append)
    assert not stale.exists()
    assert any("removed 1 temporary file" in line for line in lines)


# ----------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("args, words", [
    (["--family", "mpo", "--lateral"], ["mpo", "lateral", "n_cores"]),
    (["--family", "brickwall", "--rank", "3"], ["brickwall", "rank", "depth"]),
    (["--device", "bogus"], ["unknown device 'bogus'", "'cpu'"]),
    (["--device", "cuda:7" if torch.cuda.is_available() else "cuda"],
     ["not available" if not torch.cuda.is_available() else "does not exist", "cpu"]),
])
def test_cli_mistakes_are_one_line_with_exit_status_2(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert cli.main(["train", *DIGITS, "--epochs", "1", "--out", str(out), *args]) == 2
    err = one_line_error(capsys)
    assert err.startswith("adntn-lab train: error: ")
    for w in words:
        assert w in err
    assert not (out / "checkpoint.safetensors").exists()
    assert not (out / "config.json").exists()  # a refused setting leaves no run behind


def test_cli_out_naming_an_existing_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert cli.main(["train", *DIGITS, "--epochs", "1", "--out", str(target)]) == 2
    assert "is an existing file" in one_line_error(capsys)
    assert target.read_text() == "keep me"


def test_cli_full_disk_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "checkpoint.safetensors").read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    assert cli.main(["train", "--out", str(out), "--resume", "--epochs", "2",
                     "--no-progress"]) == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and "previous checkpoint is kept" in err
    assert "--resume" in err
    monkeypatch.undo()
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out / "checkpoint.safetensors").epoch == 1


def test_ctrl_c_during_a_sweep_says_to_run_the_sweep_again(tmp_path, monkeypatch, capsys):
    fit = runs_mod.fit

    def fit_with_ctrl_c(*a, callbacks=(), **k):
        return fit(*a, callbacks=[*callbacks, _ctrl_c_at(2)], **k)

    monkeypatch.setattr(runs_mod, "fit", fit_with_ctrl_c)
    out = tmp_path / "sweep"
    rc = cli.main(["sweep", "--families", "ttn", "--bond-dims", "2", "--out", str(out),
                   "--dataset", "digits", "--hidden", "24", "--epochs", "1", "--no-progress"])
    assert rc == 130
    err = one_line_error(capsys)
    assert "interrupted (Ctrl-C)" in err and "run the same sweep command again" in err
    monkeypatch.undo()
    assert cli.main(["sweep", "--families", "ttn", "--bond-dims", "2", "--out", str(out),
                     "--dataset", "digits", "--hidden", "24", "--epochs", "1",
                     "--no-progress"]) == 0
