"""Brick-wall ADTN: layers of 2x2x2x2 gates on a product state of qubits."""

from __future__ import annotations

from ..tensorize import qubit_tensorization
from ..topologies import PATTERNS, build_brickwall
from ._spec import Family, Option


def _tensorize(out_features, in_features, *, n_sites=None, out_modes=None, in_modes=None):
    return qubit_tensorization(out_features, in_features)


def _params(tz, options):
    return 16 * options["depth"] * (tz.n_sites - 1)


FAMILY = Family(
    name="brickwall",
    summary="deep brick-wall network of 2x2x2x2 gates (ADTN)",
    builder=build_brickwall,
    options=(Option("depth", "int", 3, "number of gate layers M"),
             Option("pattern", "choice", "staircase", "order of the gates in a layer",
                    choices=PATTERNS)),
    knob="depth",
    nonlinear=True,
    tensorizer=_tensorize,
    takes_modes=False,
    legs="qubit legs",
    param_formula=_params,
    designer_fields=("depth", "pattern", "activation"),
    order=3,
)
