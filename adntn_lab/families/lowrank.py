"""Low-rank ``W = U V``: the LoRA-style linear baseline."""

from __future__ import annotations

from ..tensorize import Tensorization, tensorize
from ..topologies import build_lowrank
from ._spec import Family, Option


def _tensorize(out_features, in_features, *, n_sites=None, out_modes=None, in_modes=None):
    tz = tensorize(out_features, in_features, n_sites=1)
    return Tensorization(tz.out_features, tz.in_features, (tz.out_features, 1),
                         (1, tz.in_features))


def _params(tz, options):
    return options["rank"] * (tz.out_features + tz.in_features)


FAMILY = Family(
    name="lowrank",
    summary="low-rank W = U V, linear baseline",
    builder=build_lowrank,
    options=(Option("rank", "int", 4, "rank r (bond_dim is read as the rank)"),),
    knob="rank",
    nonlinear=False,
    role="baseline",
    tensorizer=_tensorize,
    takes_modes=False,
    param_formula=_params,
    designer_fields=("bond_dim",),
    aliases={"bond_dim": "rank"},
    order=5,
)
