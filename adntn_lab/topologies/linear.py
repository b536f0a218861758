"""Linear baselines: MPO (tensor-train matrix) and low-rank ``W = U V``."""

from __future__ import annotations

from ..tensorize import Tensorization
from ._blueprint import Blueprint, Builder
from .ttn import _check_bond_dim

__all__ = ["build_mpo", "build_lowrank"]


def build_mpo(tz: Tensorization, *, bond_dim=4) -> Blueprint:
    """Blueprint of an MPO: cores ``A_k`` (chi_{k-1}, d_k, chi_k), one linear stage.

    Parameters
    ----------
    tz : Tensorization
    bond_dim : int or sequence of int
        Uniform chi, or one dimension per inner bond (``n_sites - 1`` of them, as left by
        two-site sweeps with rank adaptation).

    The boundary bonds have dimension 1 and are left out, so the first core is (d_1, chi) and
    the last (chi, d_N).
    """
    n = tz.n_sites
    if n < 2:
        raise ValueError(f"an MPO needs at least 2 cores, got n_cores={n}")
    if isinstance(bond_dim, (list, tuple)):
        if len(bond_dim) != n - 1:
            raise ValueError(f"an MPO with {n} cores has {n - 1} bonds, got {len(bond_dim)} "
                             "bond dimensions")
        dims = [_check_bond_dim(int(c)) for c in bond_dim]
    else:
        dims = [_check_bond_dim(bond_dim)] * (n - 1)
    b = Builder(tz)
    bonds = [b.bond(c) for c in dims]
    for k in range(n):
        inds = []
        if k > 0:
            inds.append(bonds[k - 1])
        inds.append(b.physical(k))
        if k < n - 1:
            inds.append(bonds[k])
        fan = dims[k - 1] if k > 0 else 1
        b.core(f"A{k}", inds, 0, "mpo", fan_in=fan, pos=(k, 0))
    return b.blueprint("mpo", 1, set(), bond_dim=bond_dim)


def build_lowrank(tz: Tensorization, *, rank: int = 4) -> Blueprint:
    """Blueprint of ``W = U V`` with ``U`` (O, r) and ``V`` (r, I): two sites (O, 1), (1, I)."""
    r = _check_bond_dim(rank)
    b = Builder(tz)
    k = b.bond(r)
    b.core("U", (b.physical(0), k), 0, "factor", fan_in=1, pos=(0, 0))
    b.core("V", (k, b.physical(1)), 0, "factor", fan_in=r, pos=(1, 0))
    return b.blueprint("lowrank", 1, set(), rank=r)
