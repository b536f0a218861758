"""Cache-blocked CPU kernels for chains of qubit gates (numba).

A gate chain on ``Q`` qubit lines (:mod:`adntn_lab.engine.gate_chains`) applied as merged
blocks costs ``2 * 2**w`` flops per element for a block of ``w`` lines, so its large blocks
are bound by arithmetic; gate by gate it costs 8 flops per element but one pass over memory
per gate. Here the gates are applied one by one to chunks of the state that fit in the cache:
a *phase* takes a *window* of ``T`` consecutive lines, gathers every chunk of the state that
holds all ``2**T`` values of the window's lines and ``2**S`` values of ``S`` *spectator* lines
(lines no gate of the phase touches, the chunk's fastest axis, so that every gate's inner loop
is a contiguous run of at least ``2**S`` elements), applies each of its gates in turn and
writes the chunk back. A chain of ``n`` gates is then a few passes over memory (one per phase)
at the gate-by-gate flop count.

Phases are chosen greedily in gate order (:func:`plan_phases`); a gate joins the current phase
when both of its lines are in the window and no gate left for a later phase shares a line
with it, so the phases apply the gates in an order equivalent to the chain's.

The backward pass of a phase gathers the phase's input and the output gradient chunk by chunk,
reapplies the gates keeping each one's input in the chunk, and walks back: each gate's
gradient is a sum of outer products, and the gradient goes through the transposed gate.

Numba is imported on first use only; :func:`available` says whether the kernels can run
(numba installed and ``ADNTN_LAB_GATE_KERNELS`` not set to ``0``).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = ["available", "ChainPhases", "plan_phases", "phases_for_chain", "apply_phases_",
           "phase_backward_", "torch_phases", "gate_matrix"]

# a chunk holds 2**CHUNK_BITS elements (256 KiB of float32; the backward pass keeps one chunk
# per gate of the phase): the fastest of (14, 6), (16, 6), (14, 4), (16, 8) in a by-hand timing
# of a 26-gate layer on 2**27 elements; benchmarks/bench_gate_kernels.py repeats that sweep
CHUNK_BITS = 16
# spectator lines: every gate's inner loop runs over 2**SPECTATOR_BITS contiguous elements
SPECTATOR_BITS = 6
# ranges of chunks per thread (load balance against scheduling overhead)
_TASKS_PER_THREAD = 4


@dataclass(frozen=True, eq=False)
class Phase:
    """One pass over the state: gates applied chunk by chunk.

    Attributes
    ----------
    gates : tuple of int
        Positions of the phase's gates in the chain's gate order.
    base : ndarray of int64, shape (n_chunks,)
        Offset of each chunk in the flat state.
    window_offsets : ndarray of int64, shape (2**T,)
        Offset (from a chunk's base) of each value of the window's lines.
    spectator_offsets : ndarray of int64, shape (2**S,)
        Offset of each value of the spectator lines.
    sa, sb : ndarray of int64, shape (n_gates,)
        Strides in the chunk buffer of each gate's first and second line.
    layout : int
        0: spectators contiguous in memory (row copies), 1: window contiguous (transposing
        copy), 2: neither (element by element).
    """

    gates: tuple[int, ...]
    base: np.ndarray
    window_offsets: np.ndarray
    spectator_offsets: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    layout: int


@dataclass(frozen=True, eq=False)
class ChainPhases:
    """The phases of a chain of gates on ``n_lines`` qubit lines (line 0 is the slowest axis).

    Attributes
    ----------
    n_lines : int
    lines : tuple of int
        First line of each gate, in the chain's order (a gate acts on ``p, p + 1``).
    phases : tuple of Phase
    """

    n_lines: int
    lines: tuple[int, ...]
    phases: tuple[Phase, ...]


def available() -> bool:
    """Whether the numba kernels can run: numba is installed and the environment variable
    ``ADNTN_LAB_GATE_KERNELS`` is not ``0``."""
    if os.environ.get("ADNTN_LAB_GATE_KERNELS", "1") == "0":
        return False
    return _kernels() is not None


def _line_offsets(lines, n_lines: int) -> np.ndarray:
    """Offsets in the flat state of every combination of ``lines`` (first line slowest)."""
    off = np.zeros(1, dtype=np.int64)
    for line in lines:
        off = (off[:, None] + np.array([0, 1 << (n_lines - 1 - line)])[None, :]).reshape(-1)
    return off


def _contiguous(offsets: np.ndarray) -> bool:
    return bool(np.array_equal(offsets, np.arange(offsets.size)))


@functools.lru_cache(maxsize=64)
def plan_phases(n_lines: int, lines: tuple[int, ...], chunk_bits: int = CHUNK_BITS,
                spectator_bits: int = SPECTATOR_BITS) -> ChainPhases:
    """Group gates on qubit lines ``(p, p + 1)`` (``p`` from ``lines``, in order) into phases.

    Parameters
    ----------
    n_lines : int
        Number of qubit lines ``Q`` of the state (``2**Q`` elements).
    lines : tuple of int
        First line of each gate.
    chunk_bits, spectator_bits : int
        A chunk holds ``2**chunk_bits`` elements, ``2**spectator_bits`` of them along lines
        the phase's gates do not touch.

    Returns
    -------
    ChainPhases
    """
    if any(not 0 <= p < n_lines - 1 for p in lines):
        raise ValueError(f"gate lines {lines} do not fit in {n_lines} lines")
    chunk_bits = min(chunk_bits, n_lines)
    window_size = max(2, min(chunk_bits - spectator_bits, n_lines))
    spectators = min(spectator_bits, n_lines - window_size)
    pending = list(range(len(lines)))
    phases = []
    while pending:
        # the window at the first pending gate, or shifted back so that the lines after it
        # are contiguous spectators: whichever runs more gates per unit of cost
        first = lines[pending[0]]
        starts = {max(0, min(first, n_lines - window_size)),
                  max(0, min(first, n_lines - window_size - spectators))}
        best = None
        for start in sorted(starts):
            if not start <= first <= start + window_size - 2:
                continue
            window = range(start, start + window_size)
            take, rest = _take(pending, lines, window)
            arrangement = _layout(window, n_lines, spectators)
            score = len(take) / (_LAYOUT_COST[arrangement[0]] + _GATE_COST * len(take))
            if best is None or score > best[0]:
                best = (score, window, take, rest, arrangement)
        _, window, take, pending, (layout, spect, w_off, s_off) = best
        local = set(window) | set(spect)
        outer = [line for line in range(n_lines) if line not in local]
        n_spect = 1 << len(spect)
        # buffer: window lines (slowest first), then spectators
        stride = {line: n_spect << (window_size - 1 - k) for k, line in enumerate(window)}
        phases.append(Phase(
            gates=tuple(take), base=_line_offsets(outer, n_lines), window_offsets=w_off,
            spectator_offsets=s_off,
            sa=np.array([stride[lines[g]] for g in take], dtype=np.int64),
            sb=np.array([stride[lines[g] + 1] for g in take], dtype=np.int64), layout=layout))
    return ChainPhases(n_lines, tuple(lines), tuple(phases))


# relative time of a phase's gather and scatter by layout, and of one gate on its chunks
_LAYOUT_COST = {0: 1.0, 1: 2.0, 2: 3.0}
_GATE_COST = 0.1


def _take(pending, lines, window):
    """The pending gates a phase with ``window`` can run (both lines inside, and no earlier
    pending gate that it does not run on either line), and the rest, in order."""
    inside = set(window)
    blocked: set[int] = set()
    take, rest = [], []
    for g in pending:
        pair = {lines[g], lines[g] + 1}
        if pair <= inside and not pair & blocked:
            take.append(g)
        else:
            rest.append(g)
            blocked |= pair
    return take, rest


def _layout(window, n_lines: int, spectators: int):
    """Spectators (the fastest lines outside the window), offsets and gather layout."""
    others = [line for line in range(n_lines) if line not in window]
    spect = others[len(others) - spectators:] if spectators else []
    w_off = _line_offsets(window, n_lines)
    s_off = _line_offsets(spect, n_lines)
    layout = 0 if _contiguous(s_off) else 1 if _contiguous(w_off) else 2
    return layout, spect, w_off, s_off


def phases_for_chain(chain) -> ChainPhases | None:
    """Phases of a :class:`~adntn_lab.engine.gate_chains.GateChain` whose lines are all
    qubits (dimension 2), or None."""
    if any(d != 2 for d in chain.line_dims):
        return None
    lines = tuple(block.lo + rel for block in chain.blocks for _, rel in block.gates)
    return plan_phases(len(chain.line_dims), lines)


def torch_phases(chain, state) -> ChainPhases | None:
    """The phases to run ``chain`` on the torch tensor ``state`` with the kernels, or None
    when they cannot: numba missing or switched off, a device other than the CPU, a dtype
    other than float32 or float64, lines that are not qubits, or ``torch.compile`` tracing."""
    from .arrays import compiling

    if (state.device.type != "cpu" or str(state.dtype) not in ("torch.float32", "torch.float64")
            or compiling() or not available()):
        return None
    return phases_for_chain(chain)


def gate_matrix(gates, dtype) -> np.ndarray:
    """The chain's gates (torch tensors, each (2, 2, 2, 2)) as one (n_gates, 16) array."""
    import torch

    with torch.no_grad():
        stacked = torch.stack([g.detach().reshape(16) for g in gates]).to(dtype)
    return np.ascontiguousarray(stacked.numpy())


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


_POOL: dict = {}


def _run_ranges(fn, n_chunks: int) -> list:
    """``fn(lo, hi)`` over a split of ``range(n_chunks)`` on ``torch.get_num_threads()``
    threads (the kernels release the GIL); returns the results in range order."""
    threads = min(_threads(), n_chunks)
    if threads == 1:
        return [fn(0, n_chunks)]
    # one pool per process (a forked child must not use its parent's threads) and size
    key = (os.getpid(), threads)
    pool = _POOL.get(key)
    if pool is None:
        pool = _POOL[key] = ThreadPoolExecutor(threads, "adntn-gates")
    step = -(-n_chunks // (threads * _TASKS_PER_THREAD))
    futures = [pool.submit(fn, lo, min(n_chunks, lo + step)) for lo in range(0, n_chunks, step)]
    return [f.result() for f in futures]


def apply_phases_(state: np.ndarray, gates: np.ndarray, plan: ChainPhases,
                  phases: range | None = None, *, out: np.ndarray | None = None) -> None:
    """Apply the chain's gates to ``state`` in place (or, with ``out``, write the result
    there and leave ``state`` as it was).

    Parameters
    ----------
    state : ndarray, shape (2**Q,)
        Contiguous, float32 or float64.
    gates : ndarray, shape (n_gates, 16)
        Gate ``g`` flattened from (in_a, in_b, out_a, out_b), same dtype as ``state``.
    plan : ChainPhases
    phases : range, optional
        Which phases to apply (default: all).
    out : ndarray, shape (2**Q,), optional
    """
    kernels = _kernels()
    src = state
    for k in phases if phases is not None else range(len(plan.phases)):
        phase = plan.phases[k]
        dst = src if out is None else out
        g = np.ascontiguousarray(gates[list(phase.gates)])

        def run(lo, hi, src=src, dst=dst, phase=phase, g=g):
            kernels.forward(src, dst, phase.base, lo, hi, phase.window_offsets,
                            phase.spectator_offsets, g, phase.sa, phase.sb, phase.layout)

        _run_ranges(run, phase.base.size)
        src = dst
    if out is not None and src is state:  # no phase ran
        out[...] = state


def phase_backward_(x: np.ndarray, grad: np.ndarray, gates: np.ndarray, plan: ChainPhases,
                    k: int, grad_gates: np.ndarray, *, out: np.ndarray | None = None) -> None:
    """Backward pass of phase ``k``: ``grad`` (of the phase's output) becomes the gradient of
    its input ``x`` in place (or, with ``out``, that gradient is written there and ``grad``
    left as it was), and each gate's gradient is added to ``grad_gates``.

    Parameters
    ----------
    x, grad : ndarray, shape (2**Q,)
    gates, grad_gates : ndarray, shape (n_gates, 16)
    plan : ChainPhases
    k : int
    out : ndarray, shape (2**Q,), optional
    """
    grad_in = grad if out is None else out
    kernels = _kernels()
    phase = plan.phases[k]
    idx = list(phase.gates)
    g = np.ascontiguousarray(gates[idx])
    gt = np.ascontiguousarray(g.reshape(-1, 4, 4).transpose(0, 2, 1).reshape(-1, 16))

    def run(lo, hi):
        partial = np.zeros((len(idx), 16), dtype=np.float64)
        kernels.backward(x, grad, grad_in, phase.base, lo, hi, phase.window_offsets,
                         phase.spectator_offsets, g, gt, phase.sa, phase.sb, phase.layout,
                         partial)
        return partial

    grad_gates[idx] += np.sum(_run_ranges(run, phase.base.size), axis=0).astype(
        grad_gates.dtype)


@functools.cache
def _kernels():
    """The compiled kernels, or None without numba."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return None
    from . import _gate_kernels_numba

    return _gate_kernels_numba
