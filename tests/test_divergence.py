"""Non-finite steps: detection every step, exact rollback, resumable checkpoints, new lr."""

from __future__ import annotations

import json
import math

import pytest
import torch
from designs import small_run_config
from torch import nn
from torch.utils.data import TensorDataset

from adntn_lab import cli
from adntn_lab.train import TrainState, fit, load_checkpoint
from adntn_lab.train import runs as runs_mod
from adntn_lab.train.loop import TrainingDiverged


def small_data(n=120, d=6, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 30, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g)).argmax(1)
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def model_fn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(16, 3))


def poison_gradient_at(model, step):
    """Make the gradient of the first layer NaN on optimiser step ``step`` (1-based), once."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * math.nan if calls["n"] == step else grad

    model[0].weight.register_hook(hook)
    return calls


def state_of(model, state):
    opt = state.optimizer.state_dict()["state"]
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {(p, k): v.clone() for p, s in opt.items() for k, v in s.items()})


def assert_equal_states(a, b):
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), k


@pytest.mark.parametrize("bad_step", [1, 4, 8])  # first step; mid-epoch; an epoch's last step
def test_nan_parameters_roll_back_to_the_last_good_step_and_resume_exactly(bad_step):
    data = small_data()  # 120 examples, batch 30: 4 steps per epoch
    ref = model_fn()
    ref_state = TrainState.create(ref, lr=1e-2, seed=1)
    fit(ref, data, epochs=3, batch_size=30, seed=1, state=ref_state, progress=False,
        callbacks=lambda ev: not (ev["event"] == "step" and ev["step"] == bad_step - 1))
    before = state_of(ref, ref_state)

    model = model_fn()
    poison_gradient_at(model, bad_step)
    state = TrainState.create(model, lr=1e-2, seed=1)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, data, epochs=3, batch_size=30, seed=1, state=state, progress=False)
    err = info.value
    epoch, batch = (bad_step - 1) // 4 + 1, (bad_step - 1) % 4 + 1
    assert (err.step, err.epoch, err.batch) == (bad_step, epoch, batch)
    assert f"step {bad_step} (epoch {epoch}, batch {batch} of 4)" in str(err)
    assert "parameter '0.weight'" in str(err) and "lower learning rate" in str(err)
    assert isinstance(err, FloatingPointError)
    if bad_step > 1:
        assert_equal_states(state_of(model, state), before)
    assert state.step == bad_step - 1 and len(state.history.step_loss) == bad_step - 1
    assert state.history.events[-1] == {"event": "diverged", "epoch": epoch,
                                        "step": bad_step, "what": "parameter '0.weight'",
                                        "lr": 1e-2}

    # the hook fired once: continuing equals the uninterrupted run without the fault
    full = model_fn()
    full_state = TrainState.create(full, lr=1e-2, seed=1)
    h_full = fit(full, data, epochs=3, batch_size=30, seed=1, state=full_state, progress=False)
    h = fit(model, data, epochs=3, batch_size=30, seed=1, state=state, progress=False)
    assert_equal_states(state_of(model, state), state_of(full, full_state))
    assert h.step_loss == h_full.step_loss and h.test_acc == h_full.test_acc


def test_nan_loss_rolls_back_batchnorm_buffers():
    train, test = small_data()
    x = train.tensors[0].clone()
    x[17] = math.nan  # the loss goes NaN on whichever step draws this example
    model = model_fn()
    state = TrainState.create(model, lr=1e-2, seed=0)
    snapshots = []
    with pytest.raises(TrainingDiverged, match="the loss became nan") as info:
        fit(model, (TensorDataset(x, train.tensors[1]), test), epochs=2, batch_size=30,
            seed=0, state=state, progress=False,
            callbacks=lambda ev: snapshots.append(state_of(ev["model"], ev["state"]))
            if ev["event"] in ("start", "step") else None)
    assert info.value.what == "loss"
    assert_equal_states(state_of(model, state), snapshots[-1])  # BatchNorm stats included
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()
               if v.is_floating_point())




def test_a_diverged_run_keeps_its_last_good_checkpoint_and_resumes_with_a_lower_lr(
        tmp_path, digits, monkeypatch):
    out = tmp_path / "run"
    build = runs_mod.build_run_model
    fired = []

    def faulty(config, data):  # NaN weights on the last step of the first epoch (12 steps)
        model = build(config, data)
        if not fired:  # the resumed run gets a healthy model
            fired.append(True)
            calls = {"n": 0}

            def hook(grad):
                calls["n"] += 1
                return grad * math.nan if calls["n"] == 12 else grad

            next(model.fc1.parameters()).register_hook(hook)
        return model

    monkeypatch.setattr(runs_mod, "build_run_model", faulty)
    with pytest.raises(TrainingDiverged) as info:
        runs_mod.run_training(small_run_config(), out, data=digits, progress=False, log=None)
    msg = str(info.value)
    assert "step 12 (epoch 1, batch 12 of 12)" in msg
    assert f"--out {out} --resume --lr 0.001" in msg
    ck = load_checkpoint(out / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())
    assert ck.meta["train_state"]["step"] == 11 and ck.epoch == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert not metrics["complete"] and "final" not in metrics  # no accuracy of a NaN model
    assert metrics["events"][-1]["event"] == "diverged"

    res = runs_mod.run_training(small_run_config(lr=1e-3), out, resume=True, data=digits,
                                progress=False, log=None)
    assert res.metrics["complete"] and res.history.epoch == [1, 2]
    assert len(res.history.step_loss) == 24
    kinds = [(e["event"], e["step"]) for e in res.history.events]
    assert kinds == [("diverged", 12), ("lr_changed", 11)]
    assert res.history.events[-1]["from"] == 1e-2 and res.history.events[-1]["to"] == 1e-3
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["events"] == res.history.events
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert res.metrics["final"]["test_acc"] > 0.2


def test_changed_lr_on_resume_is_used_from_the_resumed_step(tmp_path, digits):
    """lr 1e-2 for epoch 1, then 1e-3: equals a run whose lr is changed at that step."""
    out = tmp_path / "run"
    runs_mod.run_training(small_run_config(epochs=1), out, data=digits, progress=False, log=None)
    res = runs_mod.run_training(small_run_config(epochs=2, lr=1e-3), out, resume=True, data=digits,
                                progress=False, log=None)

    def switch(ev):
        if ev["event"] == "epoch" and ev["epoch"] == 1:
            ev["state"].change_lr(1e-3)

    model = runs_mod.build_run_model(small_run_config(), digits)
    ref_state = TrainState.create(model, lr=1e-2, seed=0)
    h = fit(model, digits, epochs=2, batch_size=128, seed=0, state=ref_state,
            progress=False, callbacks=switch)
    assert h.step_loss == res.history.step_loss
    assert h.events == res.history.events == [
        {"event": "lr_changed", "epoch": 1, "step": 12, "from": 1e-2, "to": 1e-3}]


def test_cli_reports_a_nan_loss_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "digits", "--hidden", "24", "--family", "ttn",
                   "--epochs", "1", "--optimizer", "sgd", "--lr", "1e30", "--no-progress",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("adntn-lab train: error: training diverged at step")
    assert "--resume --lr 1e+29" in err
    load_checkpoint(out / "checkpoint.safetensors")  # finite, loadable


def test_without_rollback_divergence_is_still_detected_and_nothing_is_copied(monkeypatch):
    from adntn_lab.train import loop

    def no_copies(*a, **k):
        raise AssertionError("rollback=False must not snapshot the training state")

    monkeypatch.setattr(loop, "_StepSnapshot", no_copies)
    model = model_fn()
    poison_gradient_at(model, 3)
    state = TrainState.create(model, lr=1e-2, seed=0)
    with pytest.raises(TrainingDiverged, match="keeps the non-finite values"):
        fit(model, small_data(), epochs=1, batch_size=30, seed=0, state=state,
            progress=False, rollback=False)
    assert state.step == 2 and torch.isnan(model[0].weight).any()
