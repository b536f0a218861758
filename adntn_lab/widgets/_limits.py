"""Is a design small enough to build? Parameters, W and peak memory from shapes alone.

The widgets ask before they build anything, so that a typo (``1e3`` as a bond dimension) is
refused in place instead of allocating gigabytes. :mod:`adntn_lab.resources` answers this
for the whole package when it is present (``estimate`` and ``check``, ``ResourceLimitError``);
until then this module answers it the same way from the structure (a :class:`Blueprint` and
its contraction plan, no arrays), and the designer uses only :func:`estimate_preset`,
:func:`estimate_graph` and :func:`check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._common import format_bytes, format_count

__all__ = ["DEFAULT_LIMIT", "Estimate", "ResourceLimitError", "check", "estimate_graph",
           "estimate_preset"]

try:  # the package-wide guard, once it exists
    from ..resources import ResourceLimitError  # type: ignore[attr-defined]
    from ..resources import check as _package_check  # type: ignore[attr-defined]
    from ..resources import estimate as _package_estimate  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the package version
    _package_check = _package_estimate = None

    class ResourceLimitError(ValueError):
        """A design needs more memory than allowed; ``estimate``, ``limit``, ``suggestion``."""

        def __init__(self, message, estimate=None, limit=None, suggestion=None):
            super().__init__(message)
            self.estimate, self.limit, self.suggestion = estimate, limit, suggestion

DEFAULT_LIMIT = 2 * 2**30  # bytes a design may need at its peak (float64 parameters, W)
_ITEMSIZE = 8              # the generator's parameters and W are float64 in numpy


@dataclass
class Estimate:
    """What building a design and generating its ``W`` once would take.

    Attributes
    ----------
    params : int
        Trainable scalars.
    w_bytes : int
        Bytes of the dense ``W`` (float64).
    peak_bytes : int
        Largest memory held at once while generating ``W`` (parameters, intermediates).
    what : str
        The design, for messages (``"ttn 1024x1024, bond_dim=1000"``).
    """

    params: int
    w_bytes: int
    peak_bytes: int
    what: str = ""
    dense: int = 0
    knob: str | None = None
    value: int | None = None
    retry: object = field(default=None, repr=False)  # knob value -> Estimate (smaller design)


def _from_blueprint(bp, what: str) -> Estimate:
    """Parameters and peak memory of a blueprint, from its contraction plan (no arrays)."""
    from ..engine.cost import cost_report

    tz = bp.tensorization
    o, i = tz.out_features, tz.in_features
    params = sum(math.prod(c.shape) for c in bp.cores if not c.constant)
    est = Estimate(params=int(params), w_bytes=o * i * _ITEMSIZE, peak_bytes=0, what=what,
                   dense=o * i)
    if params * _ITEMSIZE > DEFAULT_LIMIT * 64:  # hopeless: no need to plan the contraction
        est.peak_bytes = params * _ITEMSIZE
        return est
    report = cost_report(_ShapeOnly(bp), dtype="float64")
    est.peak_bytes = int(max(report.peak_bytes, est.w_bytes + params * _ITEMSIZE))
    return est


def _ShapeOnly(bp):
    """A Generator of ``bp`` with its plan but no parameter arrays (cost reports only)."""
    from ..generator import Generator

    class ShapeOnlyGenerator(Generator):
        def _initial_params(self, seed):
            return {}

    acts = "identity" if bp.num_stages == 1 else ["identity"] * bp.num_stages
    return ShapeOnlyGenerator(bp, acts, calibrate=False)


def estimate_preset(family: str, in_features: int, out_features: int, **kw) -> Estimate:
    """Estimate a family preset (``build`` arguments) without building it."""
    if _package_estimate is not None:  # pragma: no cover - depends on the package version
        return _package_estimate(family, in_features, out_features, **kw)
    from .. import topologies as topo
    from ..generator import _tensorization

    kw = dict(kw)
    kw.pop("seed", None)
    kw.pop("activation", None)
    tz = _tensorization(family, out_features, in_features, kw.get("n_sites"), None, None)
    if family in ("ttn", "attn", "mera"):
        knob = "bond_dim"
        make = lambda v: getattr(topo, f"build_{family}")(  # noqa: E731
            tz, bond_dim=v, lateral=bool(kw.get("lateral", False)))
    elif family == "brickwall":
        knob = "depth"
        make = lambda v: topo.build_brickwall(  # noqa: E731
            tz, depth=v, pattern=kw.get("pattern", "staircase"))
    elif family == "mpo":
        knob = "bond_dim"
        make = lambda v: topo.build_mpo(tz, bond_dim=v)  # noqa: E731
    else:
        knob = "rank"
        make = lambda v: topo.build_lowrank(tz, rank=v)  # noqa: E731
    value = int(kw.get(knob, 3 if knob == "depth" else 4))

    def at(v):
        e = _from_blueprint(make(v), f"{family} {out_features}x{in_features}, {knob}={v}")
        e.knob, e.value, e.retry = knob, v, at
        return e

    return at(value)


def estimate_graph(spec: dict) -> Estimate:
    """Estimate a drawn ``adntn-graph/1`` design (validated, not built)."""
    from ..topologies.custom import graph_to_blueprint

    bp = graph_to_blueprint(spec)
    bonds = spec.get("bonds") or []
    big = max(bonds, key=lambda b: b.get("dim") or 0, default=None)
    what = (f"custom {bp.tensorization.out_features}x{bp.tensorization.in_features}, "
            f"{len(bp.cores)} cores")
    est = _from_blueprint(bp, what)
    if big is not None:
        est.knob, est.value = f"bond {big['u']}-{big['v']}", int(big["dim"])

        def at(v):
            smaller = dict(spec, bonds=[dict(b, dim=min(int(b["dim"]), v)) for b in bonds])
            e = _from_blueprint(graph_to_blueprint(smaller), what)
            e.knob, e.value, e.retry = est.knob, v, at
            return e

        est.retry = at
    return est


def _suggest(est: Estimate, limit: int) -> str | None:
    """The largest value of the design's knob (halving from its current one) that fits."""
    if est.retry is None or not est.value or est.value <= 1:
        return None
    v = est.value
    while v > 1:
        v = v // 2 if v > 8 else v - 1
        smaller = est.retry(v)
        if smaller.peak_bytes <= limit:
            return f"{est.knob}={v} fits ({format_bytes(smaller.peak_bytes)} at its peak)"
    return None


def check(est: Estimate, limit: int | None = None) -> Estimate:
    """Raise :class:`ResourceLimitError` when ``est`` needs more than ``limit`` bytes.

    The message says what the design needs, what is allowed and a smaller setting that fits.
    """
    if _package_check is not None and not isinstance(est, Estimate):  # pragma: no cover
        _package_check(est, limit=limit)
        return est
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if est.peak_bytes <= limit:
        return est
    hint = _suggest(est, limit)
    message = (f"{est.what} is too large to build here: {format_count(est.params)} parameters,"
               f" W {format_bytes(est.w_bytes)}, peak {format_bytes(est.peak_bytes)} while "
               f"generating W; the limit is {format_bytes(limit)}. "
               + (f"Try {hint}." if hint else "Choose a smaller design."))
    raise ResourceLimitError(message, est, limit, hint)
