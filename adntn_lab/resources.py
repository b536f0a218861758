"""The resource guard: estimate what a design needs before anything large is allocated.

A typo in a bond dimension (``1e3`` for ``10``) must not send a notebook kernel to swap.
:func:`estimate` counts parameters, the bytes of ``W`` and a peak for building and generating
from shapes alone; :func:`check` refuses a design over the memory budget with a
:class:`ResourceLimitError` that gives the estimate, the budget and a smaller setting that fits.

The budget is half the memory available when the check runs, unless set otherwise: per call
(``memory_budget=`` of :func:`adntn_lab.build` and the layers), for the process
(:func:`set_memory_budget`), or by the environment variable ``ADNTN_LAB_MEMORY_BUDGET`` (bytes,
or a size such as ``8GiB``; ``none`` switches the guard off).
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .tensorize import Tensorization
from .utils import available_memory
from .utils import format_bytes as format_size

__all__ = [
    "ResourceEstimate",
    "ResourceLimitError",
    "available_memory",
    "check",
    "estimate",
    "memory_budget",
    "set_memory_budget",
]

#: fraction of the available memory a single design may take by default
DEFAULT_FRACTION = 0.5
# bytes per parameter while building: float64 masters plus float32 working copies
_PARAM_BYTES = 8 + 4
# copies of the largest tensor alive while building: calibration's forward passes and partial
# backward (benchmarks/bench_paper_layers.py measured 6-9x W of peak resident memory for
# building the 25088x4096 layers, the dense layer and the interpreter included)
_W_COPIES = 6
_FLOAT32 = 4

_lock = threading.Lock()
_budget: dict[str, Any] = {"bytes": "auto"}


class ResourceLimitError(ValueError):
    """A design needs more memory than the budget allows (raised before allocating)."""


@dataclass(frozen=True)
class ResourceEstimate:
    """What a design needs, from shapes alone.

    Attributes
    ----------
    params : int
        Trainable scalars of the generator.
    dense_params : int
        ``out_features * in_features`` of the layer it replaces.
    w_bytes : int
        Bytes of the generated tensor before cropping (float32, ``O' * I'`` elements).
    largest_bytes : int
        Bytes of the largest stage-group output (float32); W for most families.
    peak_bytes : int
        Estimated peak of building and generating once: the cores (float64 masters and
        float32 copies) plus a few float32 copies of the largest tensor.
    """

    params: int
    dense_params: int
    w_bytes: int
    largest_bytes: int
    peak_bytes: int

    @property
    def compression(self) -> float:
        return self.dense_params / max(self.params, 1)

    def __str__(self) -> str:
        return (f"{self.params:,} parameters, W {format_size(self.w_bytes)}, estimated peak "
                f"{format_size(self.peak_bytes)}")


def estimate_from(params: int, tz: Tensorization, largest_elements: int | None = None
                  ) -> ResourceEstimate:
    """An estimate from a parameter count and a tensorisation.

    Parameters
    ----------
    params : int
    tz : Tensorization
    largest_elements : int, optional
        Elements of the largest intermediate when known (from a plan); W's by default.
    """
    w_elems = math.prod(tz.site_dims)
    largest = max(w_elems, int(largest_elements or 0))
    peak = params * _PARAM_BYTES + _W_COPIES * largest * _FLOAT32
    return ResourceEstimate(params=int(params),
                            dense_params=tz.out_features * tz.in_features,
                            w_bytes=w_elems * _FLOAT32, largest_bytes=largest * _FLOAT32,
                            peak_bytes=int(peak))


def estimate(family: str, in_features: int, out_features: int, *, in_modes=None,
             out_modes=None, n_sites=None, **options) -> ResourceEstimate:
    """Estimate a family's generator from shapes alone (nothing is allocated).

    Parameters
    ----------
    family : str
    in_features, out_features : int
    in_modes, out_modes, n_sites : optional
        As for :func:`adntn_lab.build`.
    **options
        ``bond_dim`` and the family's options.

    Returns
    -------
    ResourceEstimate
    """
    from .families import get_family
    from .tensorize import check_features

    fam = get_family(family)
    opts = fam.resolve_options(options)
    tz = fam.tensorize(check_features("out_features", out_features),
                       check_features("in_features", in_features),
                       n_sites=n_sites, out_modes=out_modes, in_modes=in_modes, options=opts)
    return estimate_from(fam.num_params(tz, opts), tz)


# ---------------------------------------------------------------------- the budget
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


def parse_size(text: str) -> int | None:
    """``"8GiB" -> 8589934592``; ``"none"``/``"off"`` -> None (no limit)."""
    s = str(text).strip().lower()
    if s in ("none", "off", "unlimited"):
        return None
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-z]*)", s)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"cannot read the memory size {text!r}; write bytes or a size such as "
                         "'8GiB' or '512MiB', or 'none' for no limit")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def set_memory_budget(limit) -> None:
    """Set the process-wide budget: bytes, a size string (``"8GiB"``), None for no limit, or
    ``"auto"`` for half the available memory (the default)."""
    if limit != "auto" and limit is not None and not isinstance(limit, int):
        limit = parse_size(limit)
    if isinstance(limit, bool) or (isinstance(limit, int) and limit <= 0):
        raise ValueError(f"a memory budget must be a positive number of bytes, got {limit!r}")
    with _lock:
        _budget["bytes"] = limit


def memory_budget(override=None) -> int | None:
    """The budget in force, in bytes (None: no limit).

    Parameters
    ----------
    override : int, str or None, optional
        A per-call budget; ``"auto"`` or None defer to the process setting.
    """
    if override is not None and override != "auto":
        return override if isinstance(override, int) else parse_size(override)
    env = os.environ.get("ADNTN_LAB_MEMORY_BUDGET")
    with _lock:
        setting = _budget["bytes"]
    if setting == "auto" and env:
        setting = parse_size(env)
    if setting == "auto":
        avail = available_memory()
        return None if avail is None else int(avail * DEFAULT_FRACTION)
    return setting


def check(est: ResourceEstimate, *, budget=None, what: str = "this design",
          suggestion: str | None = None) -> ResourceEstimate:
    """Refuse ``est`` when its peak is over the budget.

    Parameters
    ----------
    est : ResourceEstimate
    budget : int, str or None, optional
        Per-call budget (see :func:`memory_budget`).
    what : str
        How the message names the design.
    suggestion : str, optional
        A smaller setting that fits, for the message.

    Raises
    ------
    ResourceLimitError
    """
    limit = memory_budget(budget)
    if limit is None or est.peak_bytes <= limit:
        return est
    msg = (f"{what} needs about {format_size(est.peak_bytes)} to build ({est}), over the "
           f"memory budget of {format_size(limit)}")
    if suggestion:
        msg += f"; {suggestion} would fit"
    elif est.w_bytes * _W_COPIES > limit:
        msg += (f"; W alone is {format_size(est.w_bytes)}: use a smaller layer or the fused "
                "schedule of an ADNTNLinear (which never forms W)")
    elif est.largest_bytes > est.w_bytes:
        msg += (f"; its largest intermediate is {format_size(est.largest_bytes)}: try a smaller "
                "bond dimension, or a network without lateral tensors")
    msg += (". Raise the budget with memory_budget=... or adntn_lab.set_memory_budget() if the "
            "machine really has the memory")
    raise ResourceLimitError(msg)


def largest_fitting(fam, tz: Tensorization, options: Mapping[str, Any], budget) -> int | None:
    """The largest value of ``fam``'s knob (below the given one) whose design fits, or None."""
    limit = memory_budget(budget)
    if limit is None:
        return None
    knob = fam.knob
    current = options.get(knob)
    if not isinstance(current, int) or current <= 1:
        return None

    def fits(value):
        opts = {**options, knob: value}
        return estimate_from(fam.num_params(tz, opts), tz).peak_bytes <= limit

    lo, hi = 1, current - 1
    if not fits(lo):
        return None
    while lo < hi:  # parameters grow with the knob: bisect
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
