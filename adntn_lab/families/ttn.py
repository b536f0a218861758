"""TTN: a binary tree tensor network with activations between its levels."""

from __future__ import annotations

from ..topologies import build_ttn
from ._spec import Family, Option, tree_tensorization, uniform_tree_params

BOND_DIM = Option("bond_dim", "int", 4, "bond dimension chi")
LATERAL = Option("lateral", "bool", False, "add lateral mixing tensors between subtrees")


def _params(tz, options):
    if options["lateral"]:
        return None  # mixers depend on the tree's shape: counted from the blueprint
    return uniform_tree_params(tz.site_dims, options["bond_dim"])


def _tensorize(out_features, in_features, **modes):
    # at least 3 sites, so that the tree has a nonlinear level
    return tree_tensorization(out_features, in_features, leg_dim=16.0, **modes)


FAMILY = Family(
    name="ttn",
    summary="binary tree tensor network, activations between levels",
    builder=build_ttn,
    options=(BOND_DIM, LATERAL),
    knob="bond_dim",
    nonlinear=True,
    tensorizer=_tensorize,
    param_formula=_params,
    designer_fields=("bond_dim", "n_sites", "activation", "lateral"),
    order=0,
)
