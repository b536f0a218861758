"""Binary MERA generator, read top-down (generative).

A top tensor ``T`` (chi x chi) holds two bonds. Each level splits every bond with an isometry
``w`` (chi_in x chi_out x chi_out) and then applies disentanglers ``u`` (chi_out^2 x chi_out^2)
to neighbouring legs that came from different isometries. The finest level's legs are the
physical legs, so ``N = 2**(L+1)`` sites for ``L`` levels. Level ``l`` is stage ``l-1`` (the top
tensor joins stage 0); the activation follows every level but the last.

With ``lateral=True``, chi^4 mixers act on the input bonds of neighbouring isometries of one
level that have different parents, in that level's stage (after the previous level's
activation, so they are not absorbed by it).
"""

from __future__ import annotations

import math

from ..tensorize import Tensorization
from ._blueprint import Blueprint, Builder
from .ttn import _check_bond_dim

__all__ = ["build_mera"]


def build_mera(tz: Tensorization, *, bond_dim: int = 4, lateral: bool = False) -> Blueprint:
    """Blueprint of a binary MERA with ``tz.n_sites = 2**(L+1)`` physical legs."""
    chi = _check_bond_dim(bond_dim)
    n = tz.n_sites
    if n < 4 or n & (n - 1):
        good = 1 << max(2, round(math.log2(max(n, 2))))
        raise ValueError(
            f"mera needs a power-of-two number of sites >= 4, got {n}; pass n_sites={good} "
            "(or modes of that length)"
        )
    levels = int(math.log2(n)) - 1
    b = Builder(tz)
    legs = [b.bond(chi), b.bond(chi)]
    b.core("T", tuple(legs), 0, "top", fan_in=chi, pos=((n - 1) / 2, levels + 1))
    parents = [0, 0]  # which tensor each current leg came from
    for level in range(1, levels + 1):
        stage = level - 1
        finest = level == levels
        y = levels + 1 - level
        span = n / len(legs)
        if lateral and level > 1:
            for a in range(len(legs) - 1):
                if a % 2 == 1 and parents[a] != parents[a + 1]:
                    new = (b.bond(chi), b.bond(chi))
                    b.core(f"L{level}_{a}", (legs[a], legs[a + 1], *new), stage, "mixer",
                           fan_in=chi * chi, pos=(span * (a + 1) - 0.5, y + 0.5))
                    legs[a], legs[a + 1] = new
        new_legs, new_parents = [], []
        for a, leg in enumerate(legs):
            outs = []
            for k in (2 * a, 2 * a + 1):
                if finest:
                    d = tz.site_dims[k]
                    # physical directly unless a disentangler sits on this leg
                    interior = 0 < k < n - 1
                    outs.append(b.bond(d) if interior else b.physical(k))
                else:
                    outs.append(b.bond(chi))
            b.core(f"W{level}_{a}", (leg, *outs), stage, "isometry", fan_in=b.dims[leg],
                   pos=(span * (a + 0.5) - 0.5, y + 0.25))
            new_legs += outs
            new_parents += [a, a]
        # disentanglers on legs (2a+1, 2a+2), which come from different isometries
        for a in range(len(legs) - 1):
            i, j = 2 * a + 1, 2 * a + 2
            if finest:
                out = (b.physical(i), b.physical(j))
            else:
                out = (b.bond(chi), b.bond(chi))
            fan = b.dims[new_legs[i]] * b.dims[new_legs[j]]
            b.core(f"V{level}_{a}", (new_legs[i], new_legs[j], *out), stage, "disentangler",
                   fan_in=fan, pos=((n / len(new_legs)) * (i + 1) - 0.5, y - 0.25))
            new_legs[i], new_legs[j] = out
        legs, parents = new_legs, new_parents
    return b.blueprint("mera", levels, set(range(levels - 1)), bond_dim=chi, lateral=lateral)
