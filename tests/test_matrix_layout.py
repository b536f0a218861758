"""W from the physical tensor through two offset tables (adntn_lab.engine.matrix_layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adntn_lab.engine import gate_kernels, matrix_layout
from adntn_lab.tensorize import qubit_tensorization, tensorize

pytestmark = pytest.mark.skipif(not gate_kernels.available(), reason="numba is not installed")

LAYOUTS = [
    qubit_tensorization(1000, 1100),                       # interleaved qubits, padded
    qubit_tensorization(1024, 1024),                       # qubits, no padding
    tensorize(1000, 1200, n_sites=3),                      # large mixed radices
    tensorize(1024, 2048, out_modes=(4, 16, 16), in_modes=(8, 16, 16)),
]


def _general_to_matrix(wp, tz, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("ADNTN_LAB_GATE_KERNELS", "0")
        assert not matrix_layout.usable(wp)
        return tz.to_matrix(wp).contiguous()


@pytest.mark.parametrize("tz", LAYOUTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_layout_equals_the_general_one(tz, dtype, monkeypatch):
    wp = torch.randn(tz.site_dims, dtype=dtype, generator=torch.Generator().manual_seed(1))
    assert matrix_layout.usable(wp)
    ref = _general_to_matrix(wp, tz, monkeypatch)
    assert torch.equal(tz.to_matrix(wp), ref)
    # any axis order of the same buffer
    perm = list(np.random.default_rng(0).permutation(tz.n_sites))
    scrambled = wp.permute(*perm).contiguous().permute(*np.argsort(perm))
    assert torch.equal(matrix_layout.to_matrix(scrambled, tz), ref)
    # the adjoint, zero at the padding, and in any requested axis order
    back = matrix_layout.from_matrix(ref, tz)
    assert torch.equal(matrix_layout.to_matrix(back, tz), ref)
    with monkeypatch.context() as m:
        m.setenv("ADNTN_LAB_GATE_KERNELS", "0")
        assert torch.equal(back, tz.from_matrix(ref).contiguous())
    ordered = matrix_layout.from_matrix(ref, tz, perm)
    assert torch.equal(ordered, back.permute(*perm))


def test_layout_gradient_is_its_adjoint():
    tz = qubit_tensorization(1000, 1100)
    gen = torch.Generator().manual_seed(2)
    wp = torch.randn(tz.site_dims, dtype=torch.float64, generator=gen, requires_grad=True)
    probe = torch.randn(tz.out_features, tz.in_features, dtype=torch.float64, generator=gen)
    (tz.to_matrix(wp) * probe).sum().backward()
    assert torch.equal(wp.grad, matrix_layout.from_matrix(probe, tz))
    assert (wp.grad.reshape(-1) != 0).sum() == tz.out_features * tz.in_features
