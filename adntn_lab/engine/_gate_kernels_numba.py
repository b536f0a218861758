"""The numba kernels of :mod:`adntn_lab.engine.gate_kernels` (imported only with numba).

A gate is 16 numbers ``g[a, b, a', b']`` (flattened in that order) acting on the lines of a
chunk buffer with strides ``sa`` (line a) and ``sb = sa / 2`` (line b):
``new[a', b'] = sum_{a, b} g[a, b, a', b'] old[a, b]``. Every loop's innermost run is ``sb``
contiguous elements, at least the chunk's spectator run, and is written over separate views
of the buffer so that LLVM vectorises it. The kernels release the GIL and work on a range of
chunks: :mod:`adntn_lab.engine.gate_kernels` runs the ranges on its own threads (numba's
parallel layers would bring a second OpenMP runtime beside torch's).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = dict(fastmath=True, error_model="numpy", boundscheck=False, cache=True, nogil=True)


@njit(inline="always", **_OPTS)
def _gate(buf, g, sa, sb):
    g0, g1, g2, g3, g4, g5, g6, g7 = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    g8, g9, g10, g11, g12, g13, g14, g15 = (g[8], g[9], g[10], g[11], g[12], g[13], g[14],
                                            g[15])
    for x in range(0, buf.size, 2 * sa):
        for y in range(x, x + sa, 2 * sb):
            p0 = buf[y:y + sb]
            p1 = buf[y + sb:y + 2 * sb]
            p2 = buf[y + sa:y + sa + sb]
            p3 = buf[y + sa + sb:y + sa + 2 * sb]
            for z in range(sb):
                v0, v1, v2, v3 = p0[z], p1[z], p2[z], p3[z]
                p0[z] = g0 * v0 + g4 * v1 + g8 * v2 + g12 * v3
                p1[z] = g1 * v0 + g5 * v1 + g9 * v2 + g13 * v3
                p2[z] = g2 * v0 + g6 * v1 + g10 * v2 + g14 * v3
                p3[z] = g3 * v0 + g7 * v1 + g11 * v2 + g15 * v3


@njit(inline="always", **_OPTS)
def _outer_add(acc, x, g, sa, sb):
    """``acc[a, b, a', b'] += sum x[a, b] g[a', b']`` over the buffer (each run summed in the
    buffer's precision, the runs in float64)."""
    # a zero of the buffer's own type (``x[0] * 0`` would be float64 for float32 buffers,
    # and mixed-precision sums keep LLVM from vectorising the loop)
    zero = x[:0].sum()
    for xo in range(0, x.size, 2 * sa):
        for y in range(xo, xo + sa, 2 * sb):
            x0 = x[y:y + sb]
            x1 = x[y + sb:y + 2 * sb]
            x2 = x[y + sa:y + sa + sb]
            x3 = x[y + sa + sb:y + sa + 2 * sb]
            q0 = g[y:y + sb]
            q1 = g[y + sb:y + 2 * sb]
            q2 = g[y + sa:y + sa + sb]
            q3 = g[y + sa + sb:y + sa + 2 * sb]
            # two passes of eight sums each: sixteen vector accumulators would spill
            for half in range(2):
                xa = x0 if half == 0 else x2
                xb = x1 if half == 0 else x3
                sa0 = sa1 = sa2 = sa3 = sb0 = sb1 = sb2 = sb3 = zero
                for z in range(sb):
                    va, vb = xa[z], xb[z]
                    w0, w1, w2, w3 = q0[z], q1[z], q2[z], q3[z]
                    sa0 += va * w0
                    sa1 += va * w1
                    sa2 += va * w2
                    sa3 += va * w3
                    sb0 += vb * w0
                    sb1 += vb * w1
                    sb2 += vb * w2
                    sb3 += vb * w3
                k = 8 * half
                acc[k] += sa0
                acc[k + 1] += sa1
                acc[k + 2] += sa2
                acc[k + 3] += sa3
                acc[k + 4] += sb0
                acc[k + 5] += sb1
                acc[k + 6] += sb2
                acc[k + 7] += sb3


@njit(inline="always", **_OPTS)
def _gather(buf, state, b0, w_off, s_off, layout):
    ns = s_off.size
    if layout == 0:  # spectators contiguous: one row copy per window value
        for w in range(w_off.size):
            src = b0 + w_off[w]
            # explicit loops over views: a slice assignment costs a call each, and indexing
            # the state directly a negative-index test per element
            row, into = state[src:src + ns], buf[w * ns:(w + 1) * ns]
            for s in range(ns):
                into[s] = row[s]
    elif layout == 1:  # window contiguous: read rows, write columns
        nw = w_off.size
        grid = buf.reshape(nw, ns)
        # in tiles of 16 x 16, so that reads and writes both stay within few cache lines
        t = min(16, nw, ns)
        for s0 in range(0, ns, t):
            for w0 in range(0, nw, t):
                for s in range(s0, s0 + t):
                    row = state[b0 + s_off[s] + w0:b0 + s_off[s] + w0 + t]
                    for w in range(t):
                        grid[w0 + w, s] = row[w]
    else:
        grid = buf.reshape(w_off.size, ns)
        for w in range(w_off.size):
            for s in range(ns):
                grid[w, s] = state[b0 + w_off[w] + s_off[s]]


@njit(inline="always", **_OPTS)
def _scatter(state, buf, b0, w_off, s_off, layout):
    ns = s_off.size
    if layout == 0:
        for w in range(w_off.size):
            dst = b0 + w_off[w]
            row, src = state[dst:dst + ns], buf[w * ns:(w + 1) * ns]
            for s in range(ns):
                row[s] = src[s]
    elif layout == 1:
        nw = w_off.size
        grid = buf.reshape(nw, ns)
        t = min(16, nw, ns)
        for s0 in range(0, ns, t):
            for w0 in range(0, nw, t):
                for s in range(s0, s0 + t):
                    row = state[b0 + s_off[s] + w0:b0 + s_off[s] + w0 + t]
                    for w in range(t):
                        row[w] = grid[w0 + w, s]
    else:
        grid = buf.reshape(w_off.size, ns)
        for w in range(w_off.size):
            for s in range(ns):
                state[b0 + w_off[w] + s_off[s]] = grid[w, s]


@njit(**_OPTS)
def forward(src, dst, base, lo, hi, w_off, s_off, gates, sa, sb, layout):
    """Apply ``gates`` (n, 16) to chunks ``lo..hi-1`` of ``src``, written to ``dst`` (which
    may be ``src``)."""
    buf = np.empty(w_off.size * s_off.size, dtype=src.dtype)
    for o in range(lo, hi):
        b0 = base[o]
        _gather(buf, src, b0, w_off, s_off, layout)
        for q in range(gates.shape[0]):
            _gate(buf, gates[q], sa[q], sb[q])
        _scatter(dst, buf, b0, w_off, s_off, layout)


@njit(**_OPTS)
def backward(x, grad, grad_in, base, lo, hi, w_off, s_off, gates, gates_t, sa, sb, layout,
             partial):
    """Backward pass of one phase over chunks ``lo..hi-1``: from ``grad``, the gradient of
    the phase's output, the gradient of its input ``x`` goes to ``grad_in`` (which may be
    ``grad``); ``partial`` (n_gates, 16) receives these chunks' share of each gate's
    gradient."""
    n = w_off.size * s_off.size
    m = gates.shape[0]
    inputs = np.empty((max(m, 1), n), dtype=x.dtype)
    gbuf = np.empty(n, dtype=x.dtype)
    for o in range(lo, hi):
        b0 = base[o]
        _gather(inputs[0], x, b0, w_off, s_off, layout)
        for q in range(m - 1):
            inputs[q + 1] = inputs[q]
            _gate(inputs[q + 1], gates[q], sa[q], sb[q])
        _gather(gbuf, grad, b0, w_off, s_off, layout)
        for q in range(m - 1, -1, -1):
            _outer_add(partial[q], inputs[q], gbuf, sa[q], sb[q])
            _gate(gbuf, gates_t[q], sa[q], sb[q])
        _scatter(grad_in, gbuf, b0, w_off, s_off, layout)
