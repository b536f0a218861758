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


# ----------------------------------------------------------------------------- header integrity


def tiny_checkpoint(tmp_path):
    """A small checkpoint with a train state (history, optimiser settings, random state)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, generator=g)
    y = torch.randint(0, 2, (12,), generator=g)
    state = TrainState.create(model, lr=1e-2, seed=0)
    ds = TensorDataset(x, y)
    fit(model, (ds, ds), epochs=1, batch_size=4, seed=0, state=state, progress=False,
        callbacks=lambda ev: not (ev["event"] == "step" and ev["step"] == 2))
    return save_checkpoint(tmp_path / "tiny.safetensors", model, state, config={"lr": 1e-2})


def test_every_sampled_header_bit_flip_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n > 1000  # the header carries history, optimiser settings and random state
    rng = torch.Generator().manual_seed(0)
    # every bit of the length prefix, and 600 random bits of the JSON header
    positions = list(range(64)) + [
        64 + int(i) for i in torch.randperm(8 * n, generator=rng)[:600]
    ]
    bad = tmp_path / "flipped.safetensors"
    survivors = []
    for bit in positions:
        data = bytearray(raw)
        data[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(bytes(data))
        try:
            load_checkpoint(bad)
        except ValueError:
            continue
        survivors.append(bit)
    assert survivors == []
    load_checkpoint(path)  # the original still loads


def _rewrite(path, edit):
    """Rewrite ``path`` with ``edit(meta)`` applied and a matching digest (a careful hand edit)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(str(path))
    meta = edit(meta) or meta
    text = json.dumps(meta)
    out = path.with_name("edited.safetensors")
    save_file(tensors, str(out), metadata={
        "format": ckpt_mod.FORMAT_TAG,
        "digest": ckpt_mod._digest(tensors, (ckpt_mod.FORMAT_TAG, text)),
        "meta": text,
    })
    return out


def _set(path, value):
    def edit(meta):
        d = meta
        for key in path[:-1]:
            d = d[key]
        if value is KeyError:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


EDITS = [
    (("train_state", "lr"), "fast", "train_state.lr"),
    (("train_state", "lr"), -1.0, "train_state.lr"),
    (("train_state", "epoch"), 1.5, "train_state.epoch"),
    (("train_state", "step"), None, "train_state.step"),
    (("train_state", "seed"), True, "train_state.seed"),
    (("train_state", "optimizer_name"), "lbfgs", "train_state.optimizer_name"),
    (("train_state", "partial"), KeyError, "train_state.partial"),
    (("train_state", "partial", "count"), "7", "train_state.partial.count"),
    (("train_state", "history", "step_loss"), "x", "train_state.history.step_loss"),
    (("train_state", "history", "step_loss", 0), "0.5", "train_state.history.step_loss[0]"),
    (("train_state", "history", "epoch"), [1], "train_state.history.train_loss"),
    (("train_state", "history", "stopped"), "no", "train_state.history.stopped"),
    (("train_state", "history", "events"), [3], "train_state.history.events[0]"),
    (("train_state", "rng"), None, "train_state.rng"),
    (("train_state", "rng", "cpu"), "!!not base64!!", "train_state.rng.cpu"),
    (("train_state", "rng", "cpu"), "AAAA", "train_state.rng.cpu"),
    (("optimizer", "param_groups"), {}, "optimizer.param_groups"),
    (("optimizer", "param_groups", 0, "lr"), "x", "optimizer.param_groups[0].lr"),
    (("optimizer", "param_groups", 0, "params"), ["0"], "optimizer.param_groups[0].params[0]"),
    (("optimizer", "state_ids"), ["a"], "optimizer.state_ids[0]"),
    (("optimizer", "values"), [], "optimizer.values"),
    (("optimizer",), None, "optimizer"),
    (("config",), 3, "config"),
    (("model_class",), 7, "model_class"),
    (("format_version",), KeyError, "format_version"),
]


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: f"{'.'.join(map(str, e[0]))}={e[1]!r}")
def test_hand_edited_metadata_is_refused_naming_the_field(tmp_path, edit):
    path = tiny_checkpoint(tmp_path)
    keys, value, field = edit
    edited = _rewrite(path, _set(keys, value))
    with pytest.raises(ValueError) as info:
        load_checkpoint(edited)
    assert f"'{field}'" in str(info.value)
    # not even skipping the digest lets it through
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_checkpoint(edited, verify=False)


def test_hand_edit_without_a_new_digest_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path)
    raw = path.read_bytes()
    assert b'"lr\\": 0.01' in raw
    bad = tmp_path / "edited.safetensors"
    bad.write_bytes(raw.replace(b'"lr\\": 0.01', b'"lr\\": 0.02', 1))
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(bad)


def test_non_object_metadata_and_odd_tensor_names(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors = {"model/w": torch.zeros(2)}
    for meta, match in [("[1, 2]", "'meta' must be an object"), ("null", "'meta'")]:
        save_file(tensors, str(path), metadata={
            "format": ckpt_mod.FORMAT_TAG,
            "digest": ckpt_mod._digest(tensors, (ckpt_mod.FORMAT_TAG, meta)), "meta": meta})
        with pytest.raises(ValueError, match=match):
            load_checkpoint(path)
    model = nn.Linear(2, 2)
    good = save_checkpoint(tmp_path / "g.safetensors", model)
    from safetensors.torch import load_file
    t = load_file(str(good))
    t["stray"] = torch.zeros(1)
    meta = json.loads(json.loads(good.read_bytes()[8:8 + int.from_bytes(
        good.read_bytes()[:8], "little")])["__metadata__"]["meta"])
    text = json.dumps(meta)
    save_file(t, str(path), metadata={
        "format": ckpt_mod.FORMAT_TAG,
        "digest": ckpt_mod._digest(t, (ckpt_mod.FORMAT_TAG, text)), "meta": text})
    with pytest.raises(ValueError, match="unexpected tensors"):
        load_checkpoint(path)


def test_version_1_files_still_load(tmp_path):
    """Checkpoints of format 1 (digest over the tensors only) are read as before."""
    model = model_fn()
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()["meta"]
    t = load_file(str(path))
    old = tmp_path / "v1.safetensors"
    save_file(t, str(old), metadata={"format": "adntn-lab-checkpoint/1",
                                     "digest": ckpt_mod._digest(t), "meta": meta})
    ck = load_checkpoint(old)
    assert_same_state(ck.model_state, params(model))


# ----------------------------------------------------------------------------- non-finite, temps


def test_non_finite_weights_are_never_written(tmp_path):
    model = model_fn()
    path = save_checkpoint(tmp_path / "c.safetensors", model)
    before = path.read_bytes()
    with torch.no_grad():
        model[0].weight[1, 2] = float("nan")
    with pytest.raises(ckpt_mod.NonFiniteCheckpointError, match=r"'0\.weight'.*NaN"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]
    # on request (to inspect a diverged model) it is written
    save_checkpoint(tmp_path / "nan.safetensors", model, allow_nonfinite=True)
    assert torch.isnan(load_checkpoint(tmp_path / "nan.safetensors").model_state["0.weight"]).any()


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.safetensors", model_fn())
    prefix = ckpt_mod._temp_prefix
    legacy = tmp_path / ".checkpoint.safetensors.k2x9_q1z.tmp"  # named before writers were
    dead = tmp_path / f"{prefix('checkpoint.safetensors', _dead_pid())}abcdefgh.tmp"
    live = tmp_path / f"{prefix('checkpoint.safetensors', os.getppid())}abcdefgh.tmp"
    elsewhere = tmp_path / f".checkpoint.safetensors.otherhost-{_dead_pid()}-abcdefgh.tmp"
    keep = [tmp_path / ".notes.tmp", tmp_path / ".draft.txt.abcdefgh.tmp"]  # not ours
    for p in (legacy, dead, live, elsewhere, *keep):
        p.write_bytes(b"x" * 1000)
    save_checkpoint(path, model_fn(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["checkpoint.safetensors", live.name, elsewhere.name, *(p.name for p in keep)])
    assert ckpt_mod.remove_stale_temporaries(tmp_path) == []


def test_sigkill_during_a_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, sys, time, torch
        from torch import nn
        from adntn_lab.train import save_checkpoint
        path = {str(tmp_path / "checkpoint.safetensors")!r}
        save_checkpoint(path, nn.Linear(64, 64))
        def stuck(fd):
            print("writing", flush=True)
            time.sleep(600)
        os.fsync = stuck
        save_checkpoint(path, nn.Linear(64, 64))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2
    assert names[0].startswith(ckpt_mod._temp_prefix("checkpoint.safetensors", proc.pid))
    good = load_checkpoint(tmp_path / "checkpoint.safetensors")  # the old one is intact
    assert good.model_state["weight"].shape == (64, 64)
    save_checkpoint(tmp_path / "checkpoint.safetensors", nn.Linear(64, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]


def test_optimiser_tensor_of_the_wrong_shape_is_refused_before_training(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tiny_checkpoint(tmp_path)
    t = load_file(str(path))
    t["optimizer/0/exp_avg"] = torch.zeros(7)
    with safe_open(str(path), "pt") as f:
        text = f.metadata()["meta"]
    save_file(t, str(path), metadata={
        "format": ckpt_mod.FORMAT_TAG,
        "digest": ckpt_mod._digest(t, (ckpt_mod.FORMAT_TAG, text)), "meta": text})
    ck = load_checkpoint(path)
    with pytest.raises(ValueError, match=r"'optimizer/0/exp_avg' has shape \(7,\)"):
        ck.train_state(ck.restore_model(nn.Linear(3, 2)))
