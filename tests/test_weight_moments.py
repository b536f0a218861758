"""W's sum of squares and row means from the last group's operands, against W itself, and
calibration through them against calibration through passes over W."""

import numpy as np
import pytest
import torch

import adntn_lab as al
import adntn_lab.generator as generator_module
from adntn_lab.engine import weight_moments as wm

# (family, in, out, options): trees, MERA, MPO, low-rank, an augmented tree, unpadded
CASES = [
    ("ttn", 256, 256, {}),
    ("ttn", 400, 120, {"bond_dim": 3}),
    ("attn", 256, 256, {}),
    ("mera", 256, 256, {}),
    ("mpo", 256, 256, {}),
    ("lowrank", 256, 64, {}),
]


def _operands(gen):
    arrays = {k: torch.tensor(v) for k, v in gen.params.items()}
    return wm.last_operands(gen.program, arrays), arrays


@pytest.mark.parametrize("family,n_in,n_out,opts", CASES)
def test_square_sum_and_row_means_equal_those_of_w(family, n_in, n_out, opts):
    gen = al.build(family, n_in, n_out, seed=4, **opts)
    assert wm.moments_are_cheap(gen.program)
    ops, _ = _operands(gen)
    w = gen.weight()  # float64, through the ordinary executor
    np.testing.assert_allclose(float(wm.square_sum(gen.program, ops)), np.sum(w * w),
                               rtol=1e-12)
    np.testing.assert_allclose(wm.row_means(gen.program, ops).numpy(), w.mean(axis=1),
                               rtol=1e-10, atol=1e-16)
    mean, rms, std = wm.std_of(gen.program, ops)
    np.testing.assert_allclose([mean, rms, std], [w.mean(), np.sqrt(np.mean(w * w)), w.std()],
                               rtol=1e-10, atol=1e-18)


def test_with_cores_changes_only_the_named_last_stage_cores():
    gen = al.build("ttn", 256, 256, seed=1)
    ops, arrays = _operands(gen)
    root = gen.program.groups[-1].stage_cores[0]
    doubled = {root: 2.0 * arrays[root]}
    sq = float(wm.square_sum(gen.program, wm.with_cores(gen.program, ops, doubled)))
    # W is linear in the root: doubling it multiplies sum(W^2) by four
    np.testing.assert_allclose(sq, 4.0 * float(wm.square_sum(gen.program, ops)), rtol=1e-12)


@pytest.mark.parametrize("family,n_in,n_out,opts", [
    ("ttn", 250, 120, {}),            # columns padded
    ("mera", 1024, 1000, {}),         # rows padded
    ("mpo", 300, 110, {"n_sites": 3}),  # rows and columns padded
])
def test_padded_w_has_its_moments_through_crop_masks(family, n_in, n_out, opts):
    gen = al.build(family, n_in, n_out, seed=6, **opts)
    tz = gen.tensorization
    assert (tz.padded_out, tz.padded_in) != (n_out, n_in)
    assert wm.moments_are_cheap(gen.program)
    ops, _ = _operands(gen)
    w = gen.weight()
    assert w.shape == (n_out, n_in)
    np.testing.assert_allclose(float(wm.square_sum(gen.program, ops)), np.sum(w * w),
                               rtol=1e-12)
    mean, rms, std = wm.std_of(gen.program, ops)
    np.testing.assert_allclose([mean, rms, std], [w.mean(), np.sqrt(np.mean(w * w)), w.std()],
                               rtol=1e-10, atol=1e-18)


def test_crop_masks_sum_to_the_unpadded_block():
    tz = al.tensorize(120, 250, n_sites=3)
    full = np.zeros((tz.padded_out, tz.padded_in))
    for masks in wm.crop_masks(tz):
        term = np.ones(())
        for mask in masks:
            term = np.multiply.outer(term, mask)
        full += _unpadded(term, tz)
    expected = np.zeros_like(full)
    expected[:120, :250] = 1.0
    np.testing.assert_array_equal(full, expected)


def _unpadded(wp, tz):
    """The physical tensor as a padded (rows, columns) matrix."""
    n = tz.n_sites
    split = [d for pair in zip(tz.out_modes, tz.in_modes) for d in pair]
    perm = tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2))
    return wp.reshape(split).transpose(perm).reshape(tz.padded_out, tz.padded_in)


def test_gate_chain_and_nonlinear_last_stages_form_w():
    assert not wm.moments_are_cheap(al.build("brickwall", 256, 256).program)
    assert not wm.moments_are_cheap(
        al.build("ttn", 256, 256, activation=["relu", "relu", "tanh"]).program)


@pytest.mark.parametrize("family,n_in,n_out,opts", [*CASES[:4], ("ttn", 250, 120, {}),
                                                    ("mpo", 300, 110, {"n_sites": 3})])
def test_calibration_through_moments_equals_calibration_through_w(family, n_in, n_out, opts,
                                                                  monkeypatch):
    by_moments = al.build(family, n_in, n_out, seed=2, **opts)
    monkeypatch.setattr(generator_module.weight_moments, "moments_are_cheap", lambda p: False)
    by_w = al.build(family, n_in, n_out, seed=2, **opts)
    for name in by_w.params:
        np.testing.assert_allclose(by_moments.params[name], by_w.params[name], rtol=1e-8,
                                   atol=1e-12, err_msg=name)
    w = by_moments.weight()
    np.testing.assert_allclose(w.std(), al.default_init_std(n_in), rtol=1e-9)
    assert abs(w.mean()) < 1e-9 * w.std()


def test_calibration_through_moments_runs_inside_no_grad_and_inference_mode():
    with torch.no_grad():
        a = al.build("ttn", 256, 256, seed=3)
    with torch.inference_mode():
        b = al.build("ttn", 256, 256, seed=3)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    np.testing.assert_allclose(a.weight().std(), al.default_init_std(256), rtol=1e-9)


def test_frobenius_norm_stays_accurate_on_large_float32_tensors():
    from adntn_lab.numerics import frobenius_norm

    x = torch.randn((1 << 24) + 17, generator=torch.Generator().manual_seed(0)) * 4e-3
    exact = float(torch.linalg.vector_norm(x, dtype=torch.float64))
    assert frobenius_norm(x) == pytest.approx(exact, rel=1e-6)
    assert frobenius_norm(torch.full((70000,), 1e-30)) == pytest.approx(1e-30 * 70000 ** 0.5)
    assert frobenius_norm(torch.zeros(3)) == 0.0


def test_a_drawn_network_calibrates_the_same_through_moments_and_through_w(monkeypatch):
    from designs import CUSTOM

    # unpadded, and wide enough for the doubled last group to cost less than W
    design = {**CUSTOM, "in_features": 256, "out_features": 64, "in_modes": [4, 4, 4, 4],
              "out_modes": [4, 4, 4, 1]}
    by_moments = al.from_graph(design, activation="relu", seed=5)
    assert wm.moments_are_cheap(by_moments.program)
    monkeypatch.setattr(generator_module.weight_moments, "moments_are_cheap", lambda p: False)
    by_w = al.from_graph(design, activation="relu", seed=5)
    for name in by_w.params:
        np.testing.assert_allclose(by_moments.params[name], by_w.params[name], rtol=1e-8,
                                   atol=1e-12, err_msg=name)


def test_a_refused_centring_warns_and_keeps_the_same_cores_on_both_paths(monkeypatch):
    import warnings

    # any centring that shrinks W counts as a cancellation: both paths must refuse it alike
    monkeypatch.setattr(generator_module, "MAX_CENTERING_GAIN", 1.0)
    results = []
    for cheap in (True, False):
        if not cheap:
            monkeypatch.setattr(generator_module.weight_moments, "moments_are_cheap",
                                lambda p: False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen = al.build("ttn", 256, 256, seed=7)
        hits = [w for w in caught if issubclass(w.category, al.ConditioningWarning)]
        assert hits and "not centred" in str(hits[0].message)
        results.append((gen, (hits[0].filename, hits[0].lineno)))
    assert results[0][1] == results[1][1]  # the same line of the caller's stack
    results = [gen for gen, _ in results]
    for name in results[0].params:
        np.testing.assert_allclose(results[0].params[name], results[1].params[name],
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(results[0].weight().std(), al.default_init_std(256), rtol=1e-9)
