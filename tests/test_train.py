"""The training loop: learning, determinism, stopping and continuing, callbacks."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from adntn_lab.models import FC2
from adntn_lab.train import History, TrainState, evaluate, fit
from adntn_lab.train.loop import epoch_order


def small_data(n=200, d=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, classes, generator=g)
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x[: n // 2 * 2 - 40], y[: n // 2 * 2 - 40]), TensorDataset(
        x[-40:], y[-40:]
    )


def mlp(seed=0, dropout=0.0, d=12, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, classes))


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_fit_learns_digits(digits):
    torch.manual_seed(0)
    model = FC2(64, 32, 10)
    before = evaluate(model, digits.test)
    assert abs(before.loss - math.log(10)) < 0.5  # near chance
    h = fit(model, digits, epochs=3, lr=1e-2, batch_size=64, seed=0, progress=False)
    assert isinstance(h, History) and h.epoch == [1, 2, 3]
    assert len(h.step_loss) == 3 * math.ceil(1437 / 64)
    assert h.train_loss[-1] < 0.5 * h.train_loss[0]
    assert h.test_acc[-1] > 0.9
    after = evaluate(model, digits.test)
    assert after.accuracy == pytest.approx(h.test_acc[-1]) and after.n == 360
    assert all(t > 0 for t in h.epoch_time)


@pytest.mark.parametrize("family", ["ttn", "brickwall"])
def test_fit_learns_with_a_compressed_layer(digits, family):
    from adntn_lab.nn import compress_model

    torch.manual_seed(0)
    model = compress_model(FC2(64, 32, 10), family, include=["fc1"], min_params=0, bond_dim=2)
    start = evaluate(model, digits.test).loss
    h = fit(model, digits, epochs=2, lr=1e-2, batch_size=64, seed=0, progress=False)
    assert h.test_loss[-1] < 0.6 * start
    assert h.test_acc[-1] > 0.5  # chance is 0.1


def test_evaluate_matches_manual_count():
    train, test = small_data()
    model = mlp()
    ev = evaluate(model, test, batch_size=7)
    with torch.no_grad():
        logits = model(test.tensors[0])
    assert ev.accuracy == (logits.argmax(1) == test.tensors[1]).float().mean().item()
    assert ev.loss == pytest.approx(nn.functional.cross_entropy(logits, test.tensors[1]).item())


def test_fit_is_deterministic_and_leaves_global_rng_alone():
    data = small_data()
    rng_before = torch.get_rng_state()
    a, b, c = mlp(dropout=0.3), mlp(dropout=0.3), mlp(dropout=0.3)
    ha = fit(a, data, epochs=2, batch_size=16, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_before)
    hb = fit(b, data, epochs=2, batch_size=16, seed=5, progress=False)
    fit(c, data, epochs=2, batch_size=16, seed=6, progress=False)
    assert same(params(a), params(b)) and ha.step_loss == hb.step_loss
    assert not same(params(a), params(c))


def test_epoch_order_is_a_seeded_permutation():
    o0, o1 = epoch_order(50, 3, 0), epoch_order(50, 3, 1)
    assert sorted(o0.tolist()) == list(range(50))
    assert not torch.equal(o0, o1)
    assert torch.equal(o0, epoch_order(50, 3, 0))
    assert not torch.equal(o0, epoch_order(50, 4, 0))


@pytest.mark.parametrize("stop_at", [3, 10, 20])  # mid-epoch, epoch boundary, later epoch
def test_stop_and_continue_equals_uninterrupted(stop_at):
    data = small_data()  # 160 examples, batch 16 -> 10 steps per epoch
    ref = mlp(dropout=0.25)
    href = fit(ref, data, epochs=3, batch_size=16, seed=1, progress=False)

    model = mlp(dropout=0.25)
    model.to("cpu")
    state = TrainState.create(model, lr=1e-3, seed=1)

    def stopper(ev):
        return not (ev["event"] == "step" and ev["step"] == stop_at)

    h1 = fit(
        model, data, epochs=3, batch_size=16, seed=1, progress=False, state=state, callbacks=stopper
    )
    assert h1.stopped and state.step == stop_at
    assert (state.rng is not None) == (stop_at % 10 != 0)
    h2 = fit(model, data, epochs=3, batch_size=16, seed=1, progress=False, state=state)
    assert not h2.stopped
    assert same(params(model), params(ref))
    assert h2.step_loss == href.step_loss
    assert h2.train_loss == href.train_loss and h2.test_acc == href.test_acc


def test_stop_event_and_callback_events():
    data = small_data()
    stop = threading.Event()
    events = []

    def record(ev):
        events.append((ev["event"], ev["step"]))
        if ev["event"] == "step" and ev["step"] == 13:
            stop.set()

    model = mlp()
    h = fit(
        model,
        data,
        epochs=3,
        batch_size=16,
        seed=0,
        progress=False,
        callbacks=[record],
        stop_event=stop,
    )
    assert h.stopped and len(h.step_loss) == 13 and h.epoch == [1]
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 13 and kinds.count("epoch") == 1
    assert kinds.index("epoch") == 11  # after the 10 steps of epoch 1


def test_history_round_trip():
    h = History(
        epoch=[1, 2],
        train_loss=[1.0, 0.5],
        train_acc=[0.5, 0.7],
        test_loss=[math.nan, 0.4],
        test_acc=[math.nan, 0.8],
        epoch_time=[0.1, 0.2],
        step_loss=[2.0, 1.0],
    )
    d = h.to_dict()
    assert d["test_acc"][0] is None
    back = History.from_dict(d)
    assert back.epoch == [1, 2] and math.isnan(back.test_acc[0]) and back.test_acc[1] == 0.8
    assert "2 epochs" in repr(back)


def test_fit_without_test_split():
    train, _ = small_data()
    h = fit(mlp(), train, epochs=1, batch_size=32, seed=0, progress=False)
    assert math.isnan(h.test_acc[0]) and h.train_acc[0] > 0


def test_fit_bad_arguments():
    data = small_data()
    with pytest.raises(ValueError, match="epochs"):
        fit(mlp(), data, epochs=-1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        fit(mlp(), data, epochs=1, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="adam, adamw, sgd"):
        fit(mlp(), data, epochs=1, optimizer="lbfgs", progress=False)
    with pytest.raises(TypeError, match="TensorDataset"):
        fit(mlp(), [1, 2, 3], epochs=1, progress=False)
    model = mlp()
    state = TrainState.create(model, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="same seed"):
        fit(model, data, epochs=1, seed=1, state=state, progress=False)


def test_nan_loss_is_reported():
    train, test = small_data()
    bad = TensorDataset(train.tensors[0] * float("nan"), train.tensors[1])
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(mlp(), (bad, test), epochs=1, progress=False)


def test_progress_bar_runs(capsys):
    fit(mlp(), small_data(), epochs=1, batch_size=32, seed=0, progress=True, desc="unit")
    err = capsys.readouterr().err
    assert "unit" in err and "5/5" in err
