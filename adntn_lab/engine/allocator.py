"""Let large freed tensors be reused instead of faulted in again from the operating system.

Generating ``W`` allocates and frees tensors of ``|W|`` elements many times per training step.
glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh mapping and unmaps it on free, so each new tensor page-faults all of its memory in again:
about 25 ms per 64 MiB on a typical x86 core, which for a brick-wall layer with 24 qubits costs
more than its arithmetic (a 64 MiB copy into memory already mapped takes about 3 ms).
Raising the mmap and trim thresholds keeps freed blocks in the heap for the next tensor.

The price is a more fragmented heap: the peak resident set of a large brick-wall training step
grows from about 12x to 19-30x the bytes of ``W`` (see the README's Performance section), while
the step runs 2-3x faster. Because it changes ``malloc`` for the whole process (every other
library in it too), the tuning is opt-in, on Linux with glibc only: call :func:`tune_allocator`,
set ``ADNTN_LAB_ALLOCATOR=tuned`` in the environment before :mod:`adntn_lab` is imported, or pass
``--tune-allocator`` to ``adntn-lab train``. :func:`allocator_status` says what is in effect.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import threading
import warnings

__all__ = ["tune_allocator", "tune_from_environment", "allocator_status", "release_free_memory",
           "memory_first"]

# mallopt parameter numbers from <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: default thresholds (bytes), the largest mallopt takes (an int): blocks up to 2 GiB come
#: from the heap, and up to 2 GiB of free memory at the top of the heap is kept (a 27-qubit
#: brick-wall step, W 512 MiB, then faults in 0-1 GiB a step instead of 2.5 GiB at 1 GiB)
DEFAULT_THRESHOLD = (2 << 30) - (1 << 20)

_status = {"tuned": False, "reason": "not attempted"}
_lock = threading.Lock()
_memory_first_depth = 0
# glibc's largest default mmap threshold (64-bit): blocks above it are mapped fresh and
# unmapped on free, so they neither grow nor fragment the heap
_SYSTEM_MMAP_THRESHOLD = 32 << 20


def tune_allocator(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes.

    Parameters
    ----------
    threshold : int
        Allocations up to this size are served from the heap and reuse freed memory; at most
        this much free memory is kept at the top of the heap. ``0 < threshold < 2**31``.

    Returns
    -------
    bool
        Whether the thresholds were changed (False off glibc, e.g. on macOS or Windows).
    """
    if not 0 < int(threshold) < 2**31:
        raise ValueError(f"threshold must be between 1 and 2**31 - 1 bytes, got {threshold!r}")
    if not sys.platform.startswith("linux"):
        _status.update(tuned=False, reason=f"not glibc ({sys.platform})")
        return False
    if _libc() is None:
        _status.update(tuned=False, reason="no mallopt in the C library (not glibc)")
        return False
    ok = _mallopt(_M_MMAP_THRESHOLD, threshold) and _mallopt(_M_TRIM_THRESHOLD, threshold)
    _status.update(tuned=ok, threshold=int(threshold),
                   reason=f"threshold {int(threshold):,} bytes" if ok
                   else "mallopt refused the threshold")
    return ok


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (``malloc_trim``), so that the resident
    set is what is alive, not what the tuned heap keeps for reuse. Used by the lean backward
    pass between its phases; a no-op when the allocator is not tuned."""
    if _status["tuned"]:
        _libc().malloc_trim(0)


@contextlib.contextmanager
def memory_first():
    """Within the block, tensors above 32 MiB are mapped fresh again, as without the tuning,
    so that the peak resident set is what is alive: for the lean backward pass, which wants
    the least memory more than speed. A no-op when the allocator is not tuned."""
    global _memory_first_depth
    with _lock:
        active = _status["tuned"]
        if active:
            if _memory_first_depth == 0:
                _mallopt(_M_MMAP_THRESHOLD, _SYSTEM_MMAP_THRESHOLD)
            _memory_first_depth += 1
    try:
        yield
    finally:
        if active:
            with _lock:
                _memory_first_depth -= 1
                if _memory_first_depth == 0:
                    _mallopt(_M_MMAP_THRESHOLD, _status["threshold"])


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library with ``mallopt`` and ``malloc_trim`` (glibc), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def _mallopt(param: int, value: int) -> bool:
    return bool(_libc().mallopt(param, int(value)))


def allocator_status() -> dict:
    """``{"tuned": bool, "reason": str}``: whether large tensors reuse freed heap memory."""
    return {"tuned": _status["tuned"], "reason": _status["reason"]}


def tune_from_environment() -> bool:
    """Tune the allocator when ``ADNTN_LAB_ALLOCATOR=tuned``; leave it alone otherwise.

    Returns
    -------
    bool
        Whether the thresholds were changed.
    """
    choice = os.environ.get("ADNTN_LAB_ALLOCATOR", "system").strip().lower()
    if choice not in ("tuned", "system", ""):
        # read at import: a typo must not stop the package from loading
        warnings.warn(f"ignoring ADNTN_LAB_ALLOCATOR={choice!r}; use 'tuned' or 'system'",
                      stacklevel=2)
        choice = "system"
    if choice != "tuned":
        if not _status["tuned"]:
            _status.update(reason="system defaults (set ADNTN_LAB_ALLOCATOR=tuned or call "
                                  "tune_allocator() to opt in)")
        return False
    return tune_allocator()
