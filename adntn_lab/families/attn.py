"""aTTN: a TTN plus boundary disentanglers on neighbouring physical legs."""

from __future__ import annotations

from ..topologies import build_attn
from ._spec import Family, tree_tensorization
from .ttn import BOND_DIM, LATERAL


def _tensorize(out_features, in_features, **modes):
    # disentanglers cost |W| * d^2: small physical legs (about 4)
    return tree_tensorization(out_features, in_features, leg_dim=4.0, **modes)


FAMILY = Family(
    name="attn",
    summary="augmented TTN: a TTN with boundary disentanglers",
    builder=build_attn,
    options=(BOND_DIM, LATERAL),
    knob="bond_dim",
    nonlinear=True,
    tensorizer=_tensorize,
    designer_fields=("bond_dim", "n_sites", "activation", "lateral"),
    order=1,
)
