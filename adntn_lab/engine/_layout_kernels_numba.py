"""The numba kernels of :mod:`adntn_lab.engine.matrix_layout` (imported only with numba).

``W[o, i] = tensor[F[o] + G[i]]``, where ``G`` comes as the start of every run of ``run``
columns that are contiguous in the tensor too (its fastest axes are input digits), so each
run is a contiguous copy, over tiles of rows and columns: the rows of a tile differ in their
lowest output digits, which lie among the tensor's fastest axes, so a tile reads few cache
lines. Copies go through views, which spares numba's negative-index test per element.
"""

from __future__ import annotations

from numba import njit

_OPTS = dict(fastmath=True, error_model="numpy", boundscheck=False, cache=True, nogil=True)

_ROWS = 16    # rows per tile
_RUNS = 64    # column runs per tile


@njit(**_OPTS)
def gather(tensor, f, starts, run, w, lo, hi):
    """``w[o, r * run + j] = tensor[f[o] + starts[r] + j]`` for rows ``lo..hi-1``."""
    n_runs = starts.size
    for o0 in range(lo, hi, _ROWS):
        o1 = min(hi, o0 + _ROWS)
        for r0 in range(0, n_runs, _RUNS):
            r1 = min(n_runs, r0 + _RUNS)
            for o in range(o0, o1):
                base = f[o]
                for r in range(r0, r1):
                    a = base + starts[r]
                    src = tensor[a:a + run]
                    dst = w[o, r * run:(r + 1) * run]
                    for j in range(run):
                        dst[j] = src[j]


@njit(**_OPTS)
def scatter(w, f, starts, run, tensor, lo, hi):
    """``tensor[f[o] + starts[r] + j] = w[o, r * run + j]`` for rows ``lo..hi-1``."""
    n_runs = starts.size
    for o0 in range(lo, hi, _ROWS):
        o1 = min(hi, o0 + _ROWS)
        for r0 in range(0, n_runs, _RUNS):
            r1 = min(n_runs, r0 + _RUNS)
            for o in range(o0, o1):
                base = f[o]
                for r in range(r0, r1):
                    a = base + starts[r]
                    dst = tensor[a:a + run]
                    src = w[o, r * run:(r + 1) * run]
                    for j in range(run):
                        dst[j] = src[j]
