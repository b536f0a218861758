"""Running a cotengra contraction tree pair by pair, laying large outputs out for free.

A pairwise step ``A[..] B[..] -> C[..]`` is usually done as a tensordot, which returns C's
indices in the order (A's free indices, B's free indices), followed by a transpose into the
requested order. When C is much larger than A and B (the last steps of a generator, which
build ``W`` or a whole stage state out of two halves) that transpose is the most expensive
part of the step: a strided copy over many small axes. Whenever the requested order keeps
A's free indices together and B's together (each in any order), the small operands are
transposed instead and one matrix product writes C directly in its final layout.
"""

from __future__ import annotations

import math
import weakref

import autoray as ar

__all__ = ["contract_tree"]

# steps producing fewer elements than this run as a plain einsum
_LARGE_OUTPUT = 1 << 16

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _steps(tree):
    """``[(node, left, right, eq), ...]`` of ``tree`` in execution order (cached)."""
    steps = _STEPS.get(tree)
    if steps is None:
        steps = [(node, left, right, tree.get_einsum_eq(node))
                 for node, left, right in tree.traverse()]
        _STEPS[tree] = steps
    return steps


def contract_tree(tree, ops):
    """Contract ``ops`` (one array per tree input) along ``tree``.

    Parameters
    ----------
    tree : cotengra.ContractionTree
        Unsliced tree with at least one step.
    ops : list of array

    Returns
    -------
    array
        In the tree's output index order.
    """
    values = {tree.input_to_node(i): op for i, op in enumerate(ops)}
    node = None
    for node, left, right, eq in _steps(tree):
        values[node] = pairwise(eq, values.pop(left), values.pop(right))
    return values[node]


def pairwise(eq: str, a, b):
    """One contraction step ``eq`` (einsum notation, two operands).

    Returns
    -------
    array
        As ``einsum(eq, a, b)``.
    """
    lhs, out = eq.split("->")
    ia, ib = lhs.split(",")
    sizes = dict(zip(ia, a.shape))
    sizes.update(zip(ib, b.shape))
    n_out = math.prod(sizes[ix] for ix in out)
    plan = _blocked(ia, ib, out) if n_out >= _LARGE_OUTPUT else None
    if plan is None or max(_numel(a), _numel(b)) * 4 > n_out:
        return ar.do("einsum", eq, a, b)
    (x, ix, fx), (y, iy, fy), shared = plan(a, b)
    left = _as_matrix(x, ix, fx, shared, sizes, free_first=True)
    right = _as_matrix(y, iy, fy, shared, sizes, free_first=False)
    return ar.do("reshape", left @ right, tuple(sizes[i] for i in out))


def _blocked(ia: str, ib: str, out: str):
    """If ``out`` is A's free indices then B's (or B's then A's), each in any order, and no
    index is a batch or trace index: a function ordering the operands accordingly."""
    if len(set(ia)) != len(ia) or len(set(ib)) != len(ib):
        return None
    shared = [ix for ix in ia if ix in ib]
    if any(ix in out for ix in shared):
        return None
    fa = [ix for ix in ia if ix not in shared]
    fb = [ix for ix in ib if ix not in shared]
    head_a, head_b = out[: len(fa)], out[: len(fb)]
    if set(head_a) == set(fa) and set(out[len(fa):]) == set(fb):
        return lambda a, b: ((a, ia, head_a), (b, ib, out[len(fa):]), shared)
    if set(head_b) == set(fb) and set(out[len(fb):]) == set(fa):
        return lambda a, b: ((b, ib, head_b), (a, ia, out[len(fb):]), shared)
    return None


def _as_matrix(x, inds: str, free: str, shared, sizes, *, free_first: bool):
    """``x`` transposed and reshaped to (free, shared) or (shared, free)."""
    order = [*free, *shared] if free_first else [*shared, *free]
    perm = tuple(inds.index(ix) for ix in order)
    if perm != tuple(range(len(perm))):
        x = ar.do("transpose", x, perm)
    rows = math.prod(sizes[ix] for ix in (free if free_first else shared))
    return ar.do("reshape", x, (rows, -1))


def _numel(x) -> int:
    return math.prod(x.shape)
