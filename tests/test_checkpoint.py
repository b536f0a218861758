"""Checkpoints: round trips, exact resume, atomic writes, clear errors for bad files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from adntn_lab.train import TrainState, fit, load_checkpoint, save_checkpoint
from adntn_lab.train import checkpoint as ckpt_mod


def small_data(n=160, d=10, classes=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 40, d, generator=g)
    y = (x @ torch.randn(d, classes, generator=g)).argmax(1)
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:])


def model_fn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(10, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.2), nn.Linear(24, 4)
    )


def params(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_round_trip_restores_model_and_optimizer(tmp_path, optimizer):
    data = small_data()
    model = model_fn()
    state = TrainState.create(model, lr=3e-3, seed=0, optimizer=optimizer)
    fit(model, data, epochs=1, batch_size=32, seed=0, state=state, progress=False)
    path = save_checkpoint(tmp_path / "c.safetensors", model, state, config={"lr": 3e-3})

    ck = load_checkpoint(path)
    fresh = ck.restore_model(model_fn(seed=99))
    assert_same_state(params(fresh), params(model))
    model.eval()
    fresh.eval()
    x = data[1].tensors[0]
    assert torch.equal(fresh(x), model(x))
    st = ck.train_state(fresh)
    a, b = state.optimizer.state_dict(), st.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert (
                torch.equal(v, b["state"][pid][k])
                if torch.is_tensor(v)
                else v == b["state"][pid][k]
            )
    assert (st.epoch, st.step, st.seed) == (1, 5, 0)
    assert ck.config == {"lr": 3e-3} and ck.history.train_loss == state.history.train_loss


@pytest.mark.parametrize("stop_step", [5, 7])  # at an epoch boundary and mid-epoch
def test_resume_from_file_equals_uninterrupted(tmp_path, stop_step):
    data = small_data()  # 160 examples, batch 32 -> 5 steps per epoch
    ref = model_fn()
    href = fit(ref, data, epochs=2, batch_size=32, seed=3, progress=False)

    model = model_fn()
    state = TrainState.create(model, lr=1e-3, seed=3)
    fit(
        model,
        data,
        epochs=2,
        batch_size=32,
        seed=3,
        state=state,
        progress=False,
        callbacks=lambda ev: not (ev["event"] == "step" and ev["step"] == stop_step),
    )
    save_checkpoint(tmp_path / "c.safetensors", model, state)
    del model, state

    # fresh objects, as in a new process
    ck = load_checkpoint(tmp_path / "c.safetensors")
    model = ck.restore_model(model_fn(seed=123))
    state = ck.train_state(model)
    h = fit(model, data, epochs=2, batch_size=32, seed=3, state=state, progress=False)
    assert_same_state(params(model), params(ref))
    assert h.step_loss == href.step_loss and h.test_acc == href.test_acc


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = model_fn()
    state = TrainState.create(model, lr=1e-3, seed=0)
    fit(model, small_data(), epochs=1, batch_size=64, seed=0, state=state, progress=False)
    save_checkpoint(tmp_path / "c.safetensors", model, state)

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    ck = load_checkpoint(tmp_path / "c.safetensors")
    ck.train_state(ck.restore_model(model_fn()))


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not an adntn_lab checkpoint.*format marker"):
        load_checkpoint(path)
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not an adntn_lab checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content", [b"", b"abc", os.urandom(4096), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"]
)
def test_random_bytes(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not an adntn_lab checkpoint"):
        load_checkpoint(path)


def test_corrupted_and_truncated(tmp_path):
    model = model_fn()
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "flipped.safetensors"
    raw2 = bytearray(raw)
    raw2[-5] ^= 0xFF  # a byte of tensor data
    bad.write_bytes(bytes(raw2))
    with pytest.raises(ValueError, match="corrupted"):
        load_checkpoint(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(raw[: len(raw) - 100]))
    with pytest.raises(ValueError, match="corrupted|truncated"):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "new.safetensors"
    tensors = {"model/w": torch.zeros(2)}
    save_file(
        tensors,
        str(path),
        metadata={
            "format": "adntn-lab-checkpoint/99",
            "digest": ckpt_mod._digest(tensors),
            "meta": json.dumps({}),
        },
    )
    with pytest.raises(ValueError, match="version 99.*upgrade"):
        load_checkpoint(path)


def test_atomic_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    model = model_fn()
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model_fn(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    load_checkpoint(path)


def test_wrong_architecture_and_weights_only(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", model_fn())
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(path).restore_model(nn.Linear(10, 4))
    ck = load_checkpoint(path)
    with pytest.raises(ValueError, match="no training state"):
        ck.train_state(model_fn())


@pytest.mark.parametrize("family", ["ttn", "mera", "brickwall", "mpo"])
def test_compressed_model_round_trip(tmp_path, family):
    from adntn_lab.nn import compress_model

    def build(seed):
        torch.manual_seed(seed)
        dense = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
        return compress_model(dense, family, include=["0"], min_params=0, bond_dim=2, seed=seed)

    data = small_data()
    model = build(0)
    state = TrainState.create(model, lr=1e-2, seed=0)
    fit(model, data, epochs=1, batch_size=32, seed=0, state=state, progress=False)
    save_checkpoint(tmp_path / "c.safetensors", model, state)

    ck = load_checkpoint(tmp_path / "c.safetensors")
    fresh = build(7)
    x = data[1].tensors[0]
    assert not torch.equal(fresh(x), model(x))
    ck.restore_model(fresh)
    assert torch.equal(fresh(x), model(x))
    assert torch.equal(fresh[0].weight, model[0].weight)  # the generated dense weight
    # and training continues identically from both
    st = ck.train_state(fresh)
    fit(model, data, epochs=2, batch_size=32, seed=0, state=state, progress=False)
    fit(fresh, data, epochs=2, batch_size=32, seed=0, state=st, progress=False)
    assert_same_state(params(fresh), params(model))
