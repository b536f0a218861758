"""recompute="lean": the least-memory backward pass (adntn_lab.engine.lean_backward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adntn_lab as al

CASES = [
    ("brickwall", 256, 64, dict(depth=3, activation="tanh")),
    ("brickwall", 1024, 256, dict(depth=2, pattern="brickwall")),
    ("ttn", 300, 200, dict(bond_dim=3, activation="gelu")),
    ("attn", 128, 100, dict(bond_dim=2)),
    ("mera", 256, 256, dict(bond_dim=2)),
    ("mpo", 100, 100, dict(bond_dim=3)),
    ("lowrank", 50, 40, dict(rank=3)),
]


def _weight_and_grads(gen, mode, dtype=torch.float64):
    arrays = {k: torch.tensor(v, dtype=dtype, requires_grad=not gen.cores[k].constant)
              for k, v in gen.params.items()}
    w = gen.program.run(arrays, recompute=mode)
    probe = torch.linspace(-1, 1, w.numel(), dtype=dtype).view_as(w)
    (w * probe).sum().backward()
    return w.detach(), {k: a.grad for k, a in arrays.items() if a.grad is not None}


@pytest.fixture(params=["kept", "swept", "kept-kernels", "kept-kernels-rebuilt",
                        "swept-kernels"])
def chain_mode(request, monkeypatch):
    """Run gate chains' lean backward both ways: with every block's (or, with the CPU
    kernels, phase's) input kept (what fits), and by the one-state reverse sweep (what runs
    when memory is short); by blocks of merged gates and by the numba kernels."""
    from adntn_lab.engine import gate_kernels, lean_backward

    mode, _, kernels = request.param.partition("-")
    if kernels.endswith("rebuilt"):  # phase inputs rebuilt in the backward, not kept
        monkeypatch.setattr(lean_backward, "_keeps_phase_states", lambda *args: False)
    if kernels and not gate_kernels.available():
        pytest.skip("numba is not installed")
    if not kernels:
        monkeypatch.setenv("ADNTN_LAB_GATE_KERNELS", "0")
    prefix = "_chain_backward_phases_" if kernels else "_chain_backward_"
    calls = {"kept": 0, "swept": 0}
    # the choice is made once per backward pass, from the memory available then
    for way in calls:
        real = getattr(lean_backward, prefix + way)

        def counted(*args, _real=real, _way=way):
            calls[_way] += 1
            return _real(*args)
        monkeypatch.setattr(lean_backward, prefix + way, counted)
    if mode == "swept":
        monkeypatch.setattr(lean_backward, "available_memory", lambda: 1 << 10)
    return mode, calls


@pytest.mark.parametrize("family,i,o,kw", CASES, ids=[c[0] + str(c[1]) for c in CASES])
def test_lean_weight_and_gradients_equal_the_ordinary_pass(family, i, o, kw, chain_mode):
    mode, calls = chain_mode
    gen = al.build(family, i, o, **kw)
    w_lean, g_lean = _weight_and_grads(gen, "lean")
    w_auto, g_auto = _weight_and_grads(gen, "auto")
    torch.testing.assert_close(w_lean, w_auto, rtol=1e-12, atol=1e-13)
    assert set(g_lean) == set(g_auto) == set(gen.trainable_names)
    for name in g_auto:
        torch.testing.assert_close(g_lean[name], g_auto[name], rtol=1e-9, atol=1e-12)
    # the forward pass must not have touched the cores (chains and activations run in place)
    np.testing.assert_allclose(gen.weight(), w_auto.numpy(), rtol=1e-10, atol=1e-12)
    from adntn_lab.engine.lean_backward import _chain

    if any(_chain(gen.program, k) is not None for k in range(len(gen.program.groups))):
        other = "swept" if mode == "kept" else "kept"
        assert calls[mode] > 0 and calls[other] == 0


def test_lean_gradients_pass_gradcheck():
    # gate chains need a state of at least 2**14 elements; fast mode checks random
    # projections of the Jacobian (one backward pass each instead of one per entry of W)
    gen = al.build("brickwall", 256, 64, depth=2, activation="tanh")
    assert any(c is not None for c in gen.program.chains)
    names = gen.trainable_names
    fixed = {k: torch.tensor(v) for k, v in gen.params.items() if k not in names}

    def weight(*cores):
        return gen.program.run({**fixed, **dict(zip(names, cores))}, recompute="lean")

    cores = tuple(torch.tensor(gen.params[k], requires_grad=True) for k in names)
    assert torch.autograd.gradcheck(weight, cores, fast_mode=True)


@pytest.mark.parametrize("short_of_memory", [True, False], ids=["swept", "kept"])
def test_lean_forward_saves_only_the_cores(short_of_memory, monkeypatch):
    """What the forward pass leaves for the backward is the cores themselves, and, when the
    kept way is chosen, one input state per gate chain; the ordinary pass keeps every
    stage's and block's states."""
    from adntn_lab.engine import gate_kernels, lean_backward

    if short_of_memory:
        monkeypatch.setattr(lean_backward, "available_memory", lambda: 1 << 10)
    gen = al.build("brickwall", 1024, 1024, depth=3)
    w_elems = 1024 * 1024
    core_elems = sum(c.size for c in gen.params.values())
    n_chains = sum(lean_backward._chain(gen.program, k) is not None
                   for k in range(len(gen.program.groups)))
    assert n_chains == 2

    def saved_elements(mode):
        seen = []

        def pack(t):
            seen.append(t.numel())
            return t

        arrays = {k: torch.tensor(v, requires_grad=not gen.cores[k].constant)
                  for k, v in gen.params.items()}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            w = gen.program.run(arrays, recompute=mode)
        kept = getattr(w.grad_fn, "chain_inputs", None) or {}
        # a chain run by the CPU kernels keeps every phase's input, and its pre-activation
        # output, so that the backward pass rebuilds nothing
        kept = [t for v in kept.values() for t in (v if isinstance(v, list) else [v])]
        return sum(seen) + sum(t.numel() for t in kept)

    per_chain = 1
    if gate_kernels.available():
        chain = next(c for c in gen.program.chains if c is not None)
        per_chain = len(gate_kernels.phases_for_chain(chain).phases) + 1
    lean = saved_elements("lean")
    assert lean <= core_elems + (0 if short_of_memory else n_chains * per_chain * w_elems)
    if not short_of_memory:
        assert lean >= n_chains * w_elems
    assert saved_elements("auto") >= 2 * n_chains * w_elems


def test_lean_is_ignored_without_gradients():
    gen = al.build("brickwall", 256, 64, depth=2)
    arrays = {k: torch.tensor(v) for k, v in gen.params.items()}
    w = gen.program.run(arrays, recompute="lean")
    assert w.grad_fn is None
    np.testing.assert_allclose(w.numpy(), gen.weight(), rtol=1e-12, atol=1e-14)


def test_a_shared_program_holds_no_recompute_setting():
    """Generators that share a Program (with_optimizer, exported copies) must not see each
    other's calls: the setting is per call, and the old attribute says so."""
    gen = al.build("brickwall", 256, 64, depth=2)
    with pytest.raises(AttributeError, match="recompute="):
        gen.program.recompute = "lean"
    with pytest.raises(ValueError, match="unknown recompute"):
        gen.program.run(gen.params, recompute="sometimes")


def test_auto_switches_to_lean_when_the_ordinary_pass_would_not_fit(monkeypatch):
    """recompute="auto" runs the lean pass when the ordinary pass's peak (a multiple of W's
    bytes) exceeds half the available memory, and the ordinary pass otherwise."""
    import adntn_lab.engine.program as execute

    gen = al.build("brickwall", 4096, 1024, depth=2)  # W: 16 MiB in float32
    arrays = {k: torch.tensor(v, dtype=torch.float32, requires_grad=not gen.cores[k].constant)
              for k, v in gen.params.items()}
    monkeypatch.setattr(execute, "available_memory", lambda: 64 << 30)
    assert "Lean" not in type(gen.program.run(arrays).grad_fn).__name__
    monkeypatch.setattr(execute, "available_memory", lambda: 256 << 20)
    w = gen.program.run(arrays)
    assert "Lean" in type(w.grad_fn).__name__
    w.sum().backward()
    assert all(arrays[k].grad is not None for k in gen.trainable_names)
    monkeypatch.setattr(execute, "available_memory", lambda: None)  # unknown: ordinary
    assert "Lean" not in type(gen.program.run(arrays).grad_fn).__name__
