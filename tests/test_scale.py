"""Large-layer support: calibration cost and its guarantees in any autograd mode, and the
numerical conditioning of deep or small generators at initialisation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import adntn_lab as al

torch = pytest.importorskip("torch")

FAMILIES = [
    ("ttn", {}),
    ("attn", {}),
    ("mera", {}),
    ("brickwall", {"depth": 3}),
    ("mpo", {}),
    ("lowrank", {}),
]


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_build_inside_no_grad_and_inference_mode_calibrates_as_outside(family, options, mode):
    """Calibration differentiates W.mean(); building inside torch.no_grad() or
    torch.inference_mode() must give exactly the cores built outside them."""
    ref = al.build(family, 60, 40, seed=2, **options)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        gen = al.build(family, 60, 40, seed=2, **options)
        assert not torch.is_grad_enabled()  # the caller's mode is restored
    for name in ref.params:
        np.testing.assert_array_equal(gen.params[name], ref.params[name])
    w = gen.weight()
    np.testing.assert_allclose(w.std(), al.default_init_std(60), rtol=1e-6)


@pytest.mark.parametrize("family,options", FAMILIES, ids=[f for f, _ in FAMILIES])
def test_calibration_runs_two_forward_passes_and_one_backward(family, options, monkeypatch):
    """Calibration's cost is bounded by passes of the generator, not by a convergence loop:
    two forward passes and one backward, plus at most ROW_CENTERING_STEPS line searches (two
    passes and one backward each) when W's row means need centring (a nonlinear generator with
    a linear last stage; see tests/test_row_means.py). Linear generators never need them."""
    from adntn_lab.numerics import ROW_CENTERING_STEPS

    gen = al.build(family, 300, 200, calibrate=False, **options)
    runs, backwards = [], []
    original_run = gen.program.run
    monkeypatch.setattr(gen.program, "run",
                        lambda arrays, **kw: runs.append(kw) or original_run(arrays, **kw))
    original_backward = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward",
                        lambda self, *a, **kw: backwards.append(1)
                        or original_backward(self, *a, **kw))
    gen.calibrate()
    steps = 0 if family in ("mpo", "lowrank") else ROW_CENTERING_STEPS
    assert len(runs) <= 2 + 2 * steps + 2 and len(backwards) <= 1 + steps, \
        (len(runs), len(backwards))
    w = gen.weight()
    np.testing.assert_allclose(w.std(), al.default_init_std(300), rtol=1e-6)
    assert abs(w.mean()) < 1e-6 * w.std()


# ---------------------------------------------------------------------- numerics
def _float32_error(gen) -> float:
    """max |W32 - W64| / max |W64| for the generator's own cores."""
    w64 = gen.weight()
    w32 = gen.weight("torch").double().numpy()
    return float(np.abs(w32 - w64).max() / np.abs(w64).max())


def _perturbation_gain(gen, eps=1e-9, seed=0) -> float:
    """Largest relative change of W per relative change ``eps`` of every core entry."""
    rng = np.random.default_rng(seed)
    w = gen.weight()
    params = {k: v if gen.cores[k].constant else v * (1.0 + eps * rng.standard_normal(v.shape))
              for k, v in gen.params.items()}
    return float(np.abs(gen.weight(params=params) - w).max() / np.abs(w).max() / eps)


def test_brickwall_layers_are_isometries_at_initialisation():
    """Orthogonal gates: with linear layers the generated state keeps the product state's unit
    norm, however deep the circuit (Gaussian gates drift by orders of magnitude)."""
    for depth in (1, 4, 30):
        gen = al.build("brickwall", 16, 8, depth=depth, activation="identity", calibrate=False)
        assert gen.tensorization.padded_out * gen.tensorization.padded_in == 128
        np.testing.assert_allclose(np.linalg.norm(gen.weight()), 1.0, rtol=1e-12)
        for name in gen.trainable_names:
            m = gen.params[name].reshape(4, 4)
            np.testing.assert_allclose(m @ m.T, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_depth_50_brickwall_is_well_conditioned(activation):
    """float32 W agrees with float64 W to 2e-6 (relative to max|W|), and a relative change of
    1e-9 in the cores changes W by at most 5e-8 relative (Gaussian gates: up to 5e-6 and
    3.5e-7 here, and far worse on more qubits)."""
    for seed in (1, 2, 3):
        gen = al.build("brickwall", 16, 8, depth=50, activation=activation, seed=seed)
        assert _float32_error(gen) < 2e-6
        assert _perturbation_gain(gen) < 50
        np.testing.assert_allclose(gen.weight().std(), al.default_init_std(16), rtol=1e-6)


def test_saturating_activation_is_supported_to_depth_20():
    for seed in (1, 2, 3):
        gen = al.build("brickwall", 16, 8, depth=21, activation="tanh", seed=seed)  # 20 tanh
        assert _float32_error(gen) < 1e-5
        assert _perturbation_gain(gen) < 100


def test_too_deep_networks_warn(monkeypatch):
    with pytest.warns(al.ConditioningWarning, match="chaotic"):
        al.build("brickwall", 4, 4, depth=22, activation="tanh")
    import adntn_lab.numerics as numerics

    monkeypatch.setattr(numerics, "MAX_HOMOGENEOUS_DEPTH", 4)
    with pytest.warns(al.ConditioningWarning, match="5 nonlinear stages"):
        al.build("brickwall", 4, 4, depth=6, activation="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al.build("brickwall", 4, 4, depth=5, activation="relu")  # 4 nonlinear stages
        al.build("brickwall", 4, 4, depth=21, activation="tanh")


def test_half_precision_deep_generators_warn():
    from adntn_lab.nn import ADNTNLinear

    with pytest.warns(al.ConditioningWarning, match="bfloat16"):
        ADNTNLinear(4, 4, topology="brickwall", depth=21, dtype=torch.bfloat16)
    gen = al.build("brickwall", 4, 4, depth=21)
    with pytest.warns(al.ConditioningWarning, match="float16"):
        gen.weight("torch", dtype=torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ADNTNLinear(4, 4, topology="brickwall", depth=20, dtype=torch.bfloat16)
        gen.weight("torch", dtype=torch.float32)


# two leaves, a ReLU node and a last stage of two numbers: W is a combination of two
# non-negative matrices, so a zero mean means cancelling one against the other
TWO_CHANNEL = {
    "format": "adntn-graph/1",
    "cores": [{"name": "a", "stage": 0, "sites": [0]}, {"name": "b", "stage": 0, "sites": [1]},
              {"name": "m", "stage": 1, "sites": []}, {"name": "t", "stage": 2, "sites": []}],
    "bonds": [{"u": "a", "v": "m", "dim": 2}, {"u": "b", "v": "m", "dim": 2},
              {"u": "m", "v": "t", "dim": 2}],
}


def test_calibration_refuses_an_ill_conditioned_centring():
    """Centring that would leave W as the rounding noise of a cancellation keeps the mean
    instead, with a warning; W keeps its scale and float32 agrees with float64."""
    warned = 0
    for seed in range(12):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen = al.from_graph(TWO_CHANNEL, in_features=20, out_features=12,
                                activation="relu", seed=seed)
        hits = [w for w in caught if issubclass(w.category, al.ConditioningWarning)]
        warned += bool(hits)
        w = gen.weight()
        assert np.all(np.isfinite(w))
        np.testing.assert_allclose(w.std(), al.default_init_std(20), rtol=1e-6)
        assert _float32_error(gen) < 1e-5
        if hits:
            assert "not centred" in str(hits[0].message)
        else:
            assert abs(w.mean()) < 1e-6 * w.std()
    assert warned  # the design does hit the guard


def test_gate_chain_keeps_block_states_only_when_they_fit(monkeypatch):
    """recompute="auto": a gate chain keeps one state per block for its backward pass when all
    chains' states fit in a quarter of the free memory, else recomputes them; gradients are
    the same either way."""
    import adntn_lab.engine.program as program_module

    def grads(free_bytes):
        monkeypatch.setattr(program_module, "available_memory", lambda: free_bytes)
        gen = al.build("brickwall", 256, 128, depth=3)
        arrays = {k: torch.tensor(v, requires_grad=not gen.cores[k].constant)
                  for k, v in gen.params.items()}
        gen.program.run(arrays).square().sum().backward()
        chains = [c for c in gen.program._chains if c is not None]
        assert chains
        recomputed = {gen.program._worth_recomputing(c) for c in chains}
        return recomputed, {k: v.grad for k, v in arrays.items() if v.grad is not None}

    kept, g_kept = grads(1 << 40)
    recomputed, g_recomputed = grads(1 << 10)
    assert kept == {False} and recomputed == {True}
    for name in g_kept:
        torch.testing.assert_close(g_kept[name], g_recomputed[name], rtol=1e-10, atol=0)
