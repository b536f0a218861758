"""MERA: a top-down binary network of isometries and disentanglers."""

from __future__ import annotations

import math

from ..tensorize import tensorize
from ..topologies import build_mera
from ._spec import Family
from .ttn import BOND_DIM, LATERAL


def _tensorize(out_features, in_features, *, n_sites=None, out_modes=None, in_modes=None):
    if n_sites is None and out_modes is None and in_modes is None:
        guess = math.log2(max(out_features, 1) * max(in_features, 1)) / 2.0
        # a power of two, at least 8 sites, so that the MERA has a nonlinear level
        n_sites = 1 << max(3, round(math.log2(max(guess, 1.0))))
    return tensorize(out_features, in_features, n_sites=n_sites, out_modes=out_modes,
                     in_modes=in_modes, leg_dim=16.0)


FAMILY = Family(
    name="mera",
    summary="binary MERA: isometries and disentanglers, activations between levels",
    builder=build_mera,
    options=(BOND_DIM, LATERAL),
    knob="bond_dim",
    nonlinear=True,
    tensorizer=_tensorize,
    designer_fields=("bond_dim", "n_sites", "activation", "lateral"),
    order=2,
)
