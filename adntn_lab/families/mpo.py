"""MPO (tensor-train matrix): a chain of cores, linear; the baseline of Jahromi and Orus."""

from __future__ import annotations

from ..tensorize import tensorize
from ..topologies import build_mpo
from ._spec import Family, Option, mpo_params


def _tensorize(out_features, in_features, *, n_sites=None, out_modes=None, in_modes=None):
    return tensorize(out_features, in_features, n_sites=n_sites, out_modes=out_modes,
                     in_modes=in_modes, leg_dim=16.0)


def _params(tz, options):
    return mpo_params(tz.site_dims, options["bond_dim"])


FAMILY = Family(
    name="mpo",
    summary="tensor-train matrix (MPO), linear baseline",
    builder=build_mpo,
    options=(Option("bond_dim", "int_or_ints", 4,
                    "bond dimension chi (or one per inner bond)"),
             Option("n_cores", "int", None, "number of cores (another name for n_sites)",
                    minimum=2)),
    knob="bond_dim",
    nonlinear=False,
    role="baseline",
    tensorizer=_tensorize,
    param_formula=_params,
    designer_fields=("bond_dim", "n_sites"),
    site_option="n_cores",
    order=4,
)
