"""Is a design small enough to build and to generate ``W`` from? Checked from shapes alone.

The widgets ask before they build anything, so that a typo (``1e3`` as a bond dimension) is
refused in place instead of filling the machine's memory. Two checks, both against the
memory budget of :mod:`adntn_lab.resources` (half the available memory unless set):

1. the package's own estimate (:func:`adntn_lab.resources.estimate_from`: cores and a few
   copies of ``W``), which :func:`adntn_lab.build` also applies;
2. the peak of generating ``W`` once from the contraction plan (the largest pairwise
   intermediates, which for a wide MERA are far larger than ``W``): the designer shows this
   peak and calibrates by generating ``W``, so it refuses what could not be generated.

Both raise :class:`~adntn_lab.resources.ResourceLimitError` naming the need, the budget and a
smaller setting of the family's knob that fits.
"""

from __future__ import annotations

import math

from .. import resources
from ..resources import ResourceLimitError, format_size

__all__ = ["ResourceLimitError", "check_graph", "check_preset", "plan_peak"]

_ITEMSIZE = 8  # numpy generation runs in float64


def plan_peak(bp) -> int:
    """Bytes held at the peak of generating ``W`` of blueprint ``bp`` (float64), from its plan.

    No parameter array is allocated.
    """
    from ..engine.cost import cost_report

    return int(cost_report(_shape_only(bp).program, dtype="float64").peak_bytes)


def _shape_only(bp):
    """A Generator of ``bp`` with its plan and no parameter arrays (for cost reports)."""
    from ..generator import Generator

    class ShapeOnlyGenerator(Generator):
        def _initial_params(self, seed):
            return {}

    acts = "identity" if bp.num_stages == 1 else ["identity"] * bp.num_stages
    # nothing is allocated, so the Generator's own budget check does not apply
    return ShapeOnlyGenerator(bp, acts, calibrate=False, memory_budget="none")


def _fits(bp, params, budget, what) -> tuple[bool, int | None, str | None]:
    """(fits, peak bytes, None) or, when the package's estimate refuses it, (False, None,
    that estimate)."""
    limit = resources.memory_budget(budget)
    est = resources.estimate_from(params, bp.tensorization)
    try:
        resources.check(est, budget=budget, what=what)
    except ResourceLimitError:  # the package's own estimate refused it
        return False, None, est
    peak = plan_peak(bp)
    return limit is None or peak <= limit, peak, None


def _smaller(value: int, fits) -> int | None:
    """The first of value/2, value/4, ... (then value-1, ...) for which ``fits(v)``."""
    v = value
    while v > 1:
        v = v // 2 if v > 8 else v - 1
        if fits(v):
            return v
    return None


def _refuse(what: str, peak, refusal, budget, hint: str | None):
    if refusal is not None:  # the package's message, with the smaller setting
        resources.check(refusal, budget=budget, what=what, suggestion=hint)
    limit = resources.memory_budget(budget)
    msg = (f"{what} needs about {format_size(peak)} at its peak while generating W, over the "
           f"memory budget of {format_size(limit)}")
    msg += f"; {hint} would fit" if hint else "; choose a smaller design"
    msg += (". Raise the budget with memory_budget=... if the machine really has the "
            "memory")
    raise ResourceLimitError(msg)


def check_preset(family: str, in_features: int, out_features: int, *, budget=None,
                 **kwargs) -> int:
    """Refuse a family preset (``build`` arguments) that would not fit; return its peak.

    Raises
    ------
    ResourceLimitError
        With the need, the budget and a smaller value of the family's knob that fits.
    """
    from ..families import get_family

    fam = get_family(family)
    opts = {k: v for k, v in kwargs.items() if k not in ("seed", "activation", "n_sites")}
    opts = fam.resolve_options(opts)
    tz = fam.tensorize(out_features, in_features, n_sites=kwargs.get("n_sites"),
                       options=opts)
    knob = fam.knob
    what = f"{fam.name} {out_features}x{in_features} with {knob}={opts.get(knob)}"

    def attempt(o):
        return _fits(fam.blueprint(tz, o), fam.num_params(tz, o), budget, what)

    ok, peak, refusal = attempt(opts)
    if ok:
        return peak
    value = opts.get(knob)
    smaller = (_smaller(value, lambda v: attempt({**opts, knob: v})[0])
               if isinstance(value, int) else None)
    _refuse(what, peak, refusal, budget, None if smaller is None else f"{knob}={smaller}")


def check_graph(spec: dict, *, budget=None) -> int:
    """Refuse a drawn ``adntn-graph/1`` design that would not fit; return its peak.

    The suggestion caps the largest bonds at a dimension that fits.
    """
    from ..topologies.custom import graph_to_blueprint

    bp = graph_to_blueprint(spec)
    tz = bp.tensorization
    what = f"the drawing ({tz.out_features}x{tz.in_features}, {len(bp.cores)} cores)"

    def attempt(b):
        params = sum(math.prod(c.shape) for c in b.cores if not c.constant)
        return _fits(b, params, budget, what)

    ok, peak, refusal = attempt(bp)
    if ok:
        return peak
    bonds = spec.get("bonds") or []
    big = max((int(b.get("dim") or 0) for b in bonds), default=0)

    def fits(v):
        capped = dict(spec, bonds=[dict(b, dim=min(int(b["dim"]), v)) for b in bonds])
        return attempt(graph_to_blueprint(capped))[0]

    smaller = _smaller(big, fits) if big > 1 else None
    _refuse(what, peak, refusal, budget,
            None if smaller is None else f"bond dimensions of at most {smaller}")
