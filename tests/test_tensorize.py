"""Tensorisation: balanced modes, mixed-radix mapping, cropping, qubit legs, Conv2d kernels."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import adntn_lab as al
from adntn_lab.tensorize import balanced_factors


def digits(number: int, radices) -> list[int]:
    """Mixed-radix digits of ``number`` over ``radices``, first radix most significant."""
    out = []
    for k in range(len(radices)):
        place = math.prod(radices[k + 1:])
        out.append((number // place) % radices[k])
    return out


def dense_from_physical(t, out_modes, in_modes, out_features, in_features):
    """The padded (O', I') matrix of a physical tensor, element by element, then cropped.

    Row ``r`` has o-digits ``(o_1..o_N)`` and column ``c`` i-digits ``(i_1..i_N)``; site
    ``k``'s leg index is ``o_k * i_modes[k] + i_k``.
    """
    po, pi = math.prod(out_modes), math.prod(in_modes)
    full = np.empty((po, pi), dtype=t.dtype)
    for r in range(po):
        od = digits(r, out_modes)
        for c in range(pi):
            idd = digits(c, in_modes)
            full[r, c] = t[tuple(od[k] * in_modes[k] + idd[k] for k in range(len(od)))]
    return full[:out_features, :in_features]


@pytest.mark.parametrize("n,k", [(64, 3), (81, 4), (100, 2), (1024, 5), (256, 4)])
def test_perfect_powers_factor_exactly(n, k):
    base = round(n ** (1 / k))
    assert balanced_factors(n, k) == (base,) * k


def test_balanced_factors_cover_and_pad_little():
    for k in (2, 3, 4):
        for n in range(2, 700):
            f = balanced_factors(n, k)
            assert len(f) == k
            assert list(f) == sorted(f, reverse=True)
            assert math.prod(f) >= n
            # never more padding than the plain ceil-root product
            root = math.ceil(round(n ** (1.0 / k), 9))
            assert math.prod(f) <= root**k, (n, k, f)


@pytest.mark.parametrize("out_f,in_f,n", [(60, 100, 3), (10, 784, 3), (33, 17, 2), (7, 5, 2)])
def test_tensorize_modes_cover_features(out_f, in_f, n):
    tz = al.tensorize(out_f, in_f, n_sites=n)
    assert tz.n_sites == n
    assert tz.padded_out == math.prod(tz.out_modes) >= out_f
    assert tz.padded_in == math.prod(tz.in_modes) >= in_f
    assert tz.site_dims == tuple(o * i for o, i in zip(tz.out_modes, tz.in_modes))
    assert tz.physical_inds == tuple(f"p{k}" for k in range(n))


def test_explicit_modes_are_kept():
    tz = al.tensorize(20, 10, out_modes=(2, 3, 4), in_modes=(5, 1, 2))
    assert tz.out_modes == (2, 3, 4) and tz.in_modes == (5, 1, 2)
    assert tz.site_dims == (10, 3, 8)
    gen = al.build("ttn", 10, 20, out_modes=(2, 3, 4), in_modes=(5, 1, 2))
    assert gen.tensorization.out_modes == (2, 3, 4)
    assert gen.tensorization.in_modes == (5, 1, 2)
    assert gen.weight().shape == (20, 10)


@pytest.mark.parametrize("out_modes,in_modes,O,I", [
    ((2, 3, 4), (5, 1, 2), 20, 10),
    ((3, 2), (2, 5), 6, 10),
    ((4, 4), (3, 3), 13, 7),
])
def test_to_matrix_is_the_mixed_radix_map(out_modes, in_modes, O, I):
    tz = al.Tensorization(O, I, out_modes, in_modes)
    rng = np.random.default_rng(1)
    t = rng.standard_normal(tz.site_dims)
    expect = dense_from_physical(t, out_modes, in_modes, O, I)
    np.testing.assert_array_equal(tz.to_matrix(t), expect)


def test_from_matrix_inverts_to_matrix_and_zero_pads():
    tz = al.Tensorization(13, 7, (4, 4), (3, 3))
    w = np.random.default_rng(2).standard_normal((13, 7))
    t = tz.from_matrix(w)
    assert t.shape == tz.site_dims
    np.testing.assert_array_equal(tz.to_matrix(t), w)
    # the padded rows and columns are zero: the full padded matrix has the extra entries 0
    full = dense_from_physical(t, tz.out_modes, tz.in_modes, tz.padded_out, tz.padded_in)
    assert np.all(full[13:] == 0) and np.all(full[:, 7:] == 0)
    np.testing.assert_array_equal(full[:13, :7], w)


def test_to_matrix_works_on_torch_tensors():
    torch = pytest.importorskip("torch")
    tz = al.Tensorization(5, 6, (2, 3), (3, 2))
    t = np.random.default_rng(3).standard_normal(tz.site_dims)
    got = tz.to_matrix(torch.as_tensor(t))
    np.testing.assert_allclose(got.numpy(), tz.to_matrix(t), rtol=0, atol=0)


@pytest.mark.parametrize("out_modes,in_modes,O,I", [
    ((2, 1, 2, 1, 2, 1, 2, 1), (1, 2, 1, 2, 1, 2, 1, 2), 16, 16),   # qubit legs
    ((4, 2, 3, 2, 5), (3, 4, 2, 2, 3), 230, 140),                   # mixed, cropped
    ((4, 4, 4), (4, 4, 4), 64, 64),
])
def test_large_to_matrix_gathers_match_the_mixed_radix_map(monkeypatch, out_modes, in_modes,
                                                            O, I):
    """Above a size threshold to_matrix gathers rows and columns instead of transposing
    2N axes; it must give the same matrix on numpy and torch, and its torch backward (an
    inverse gather) must pass gradcheck."""
    torch = pytest.importorskip("torch")
    tz_module = importlib.import_module("adntn_lab.tensorize")
    monkeypatch.setattr(tz_module, "_FAST_UNSHUFFLE_MIN", 1)
    tz = al.Tensorization(O, I, out_modes, in_modes)
    t = np.random.default_rng(4).standard_normal(tz.site_dims)
    expect = dense_from_physical(t, out_modes, in_modes, O, I)
    np.testing.assert_array_equal(tz.to_matrix(t), expect)
    x = torch.tensor(t, requires_grad=True)
    np.testing.assert_array_equal(tz.to_matrix(x).detach().numpy(), expect)
    assert torch.autograd.gradcheck(tz.to_matrix, (x,), fast_mode=x.numel() > 4096)
    # the gradient is the matrix gradient scattered back to the same places
    g = torch.randn(O, I, dtype=torch.float64)
    tz.to_matrix(x).backward(g)
    np.testing.assert_array_equal(tz.to_matrix(x.grad.numpy()), g.numpy())


@pytest.mark.parametrize("O,I", [(60, 100), (10, 784), (33, 17), (2, 3), (16, 16)])
def test_qubit_tensorization(O, I):
    tz = al.qubit_tensorization(O, I)
    assert all(d == 2 for d in tz.site_dims)
    a, b = math.ceil(math.log2(O)), math.ceil(math.log2(I))
    assert tz.padded_out == 2**a and tz.padded_in == 2**b
    assert tz.n_sites == a + b == round(math.log2(tz.padded_out * tz.padded_in))
    # each leg carries exactly one bit, of the row or of the column
    assert all({o, i} == {1, 2} for o, i in zip(tz.out_modes, tz.in_modes))


def test_brickwall_uses_qubit_legs():
    gen = al.build("brickwall", 33, 17, depth=2)
    tz = gen.tensorization
    assert set(tz.site_dims) == {2}
    q = round(math.log2(tz.padded_out * tz.padded_in))
    assert tz.n_sites == q
    assert gen.weight().shape == (17, 33)


def test_conv_kernel_is_read_as_cout_by_cin_kh_kw():
    pytest.importorskip("torch")
    from adntn_lab.nn import ADNTNConv2d

    layer = ADNTNConv2d(3, 8, (3, 2), bond_dim=2)
    assert layer.generator.shape == (8, 3 * 3 * 2)
    assert tuple(layer.weight.shape) == (8, 3, 3, 2)
    flat = layer.generated().detach()
    np.testing.assert_array_equal(layer.weight.detach().reshape(8, -1).numpy(), flat.numpy())


def test_weight_is_crop_of_padded_physical_tensor():
    gen = al.build("ttn", 17, 33, bond_dim=3, n_sites=3, activation="relu")
    tz = gen.tensorization
    assert tz.padded_out > 33 or tz.padded_in > 17
    t = gen.physical_tensor()
    assert t.shape == tz.site_dims
    np.testing.assert_allclose(
        gen.weight(), dense_from_physical(t, tz.out_modes, tz.in_modes, 33, 17), rtol=1e-12
    )


def test_trivial_factors_are_spread_so_rows_and_columns_meet_everywhere():
    """With more sites than factors, output and input factors alternate along the sites
    instead of filling one end each (which would couple rows and columns through one bond)."""
    tz = al.tensorize(256, 784, n_sites=16)
    assert all(o > 1 for o in tz.out_modes[0::2]) and all(i > 1 for i in tz.in_modes[1::2])
    assert np.prod(tz.out_modes) >= 256 and np.prod(tz.in_modes) >= 784
    w = al.build("ttn", 784, 256, bond_dim=2, n_sites=16).weight()
    assert np.linalg.matrix_rank(w) > 4  # a half/half split would cap the rank at chi
