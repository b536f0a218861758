"""Small shared helpers: argument checks, human-readable sizes, JSON-safe values."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["available_memory", "format_bytes", "format_count", "json_safe", "positive_int",
           "write_and_replace"]


def positive_int(name: str, value, *, minimum: int = 1, example: int = 4,
                 from_text: bool = False) -> int:
    """``value`` as an int ``>= minimum``; Python and numpy integers only.

    Parameters
    ----------
    name : str
        How the message names the value (``"ttn option bond_dim"``).
    value : int
        Bools, floats and strings are refused: ``1.5`` or ``"12"`` is never guessed at.
    minimum, example : int
        Smallest allowed value, and a valid one the message offers.
    from_text : bool
        Also accept a string of digits or a whole float (form fields and command lines
        deliver numbers as text).

    Raises
    ------
    ValueError
        Naming the value, what it was and what would be valid.
    """
    if from_text:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
    want = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be {want} (for example {example}), got {value!r}")
    return int(value)


def format_count(n: float, unit: str = "") -> str:
    """``1234567 -> '1.23 M'``; None and non-finite numbers as ``'–'``."""
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "–"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {suffix}{unit}"
    return f"{n:.4g} {unit}".rstrip()


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``, astronomically large sizes included; None as ``'–'``."""
    if n is None:
        return "–"
    n = float(n)
    for div, suffix in ((2**60, "EiB"), (2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"),
                        (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            value = n / div
            return f"{value:.3g} {suffix}" if value < 1e4 else f"{value:.2e} {suffix}"
    return f"{int(n)} B"


def json_safe(obj):
    """A JSON-ready copy: NaN/inf as None, numpy scalars and arrays, tuples and paths as
    plain JSON types, mapping keys as strings (recursively)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def available_memory() -> int | None:
    """Bytes of memory the system can still give now (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def write_and_replace(fd: int, tmp: str | os.PathLike, path: str | os.PathLike,
                      data: bytes) -> None:
    """Write ``data`` to the open temporary file ``fd`` (named ``tmp``), fsync it and move it
    over ``path`` with :func:`os.replace`, so readers see the old file or the new one, never
    a half-written one. The temporary file is removed if anything fails."""
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
