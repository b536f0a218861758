"""Running a cotengra contraction tree pair by pair as matrix products laid out in advance.

A pairwise step ``A B -> C`` done as a tensordot transposes both operands into matrices and
then transposes the product into the order the next step expects; for the last steps of a
generator, which build ``W`` or a whole stage state out of two halves, those transposes of
large arrays cost more than the arithmetic. Here the index order of every intermediate is
chosen once per tree, from the root down: each step asks its operands to arrive as
(batch, free, contracted) (or the transpose, which a matrix product reads for free), and the
step producing an operand writes it in that order whenever its own product allows it. Only
leaves (cores, the input batch) and the few steps where no order fits are transposed.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from dataclasses import dataclass

import autoray as ar
from cotengra import get_symbol

__all__ = ["contract_tree"]

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Step:
    """One pairwise step as a (batched) matrix product of two operands laid out for it."""

    left: object
    right: object
    node: object
    a: tuple            # (perm or None, shape (nb, m, k), transposed view)
    b: tuple            # (perm or None, shape (nb, k, n), transposed view)
    dims: tuple         # shape of the product's natural layout (batch, free a, free b)
    out_perm: tuple | None
    einsum: str | None  # the step as an einsum instead, when it is not a product


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
    plan = _PLANS.get(tree)
    if plan is None:
        plan = _PLANS[tree] = _plan(tree)
    values = {tree.input_to_node(i): op for i, op in enumerate(ops)}
    node = None
    for step in plan:
        a, b = values.pop(step.left), values.pop(step.right)
        node = step.node
        if step.einsum is not None:
            values[node] = ar.do("einsum", step.einsum, a, b)
            continue
        c = ar.do("matmul", _operand(a, *step.a), _operand(b, *step.b))
        c = ar.do("reshape", c, step.dims)
        values[node] = c if step.out_perm is None else ar.do("transpose", c, step.out_perm)
    return values[node]


def _operand(x, perm, shape, transposed):
    if perm is not None:
        x = ar.do("transpose", x, perm)
    if transposed:
        x = ar.do("reshape", x, (shape[0], shape[2], shape[1]))
        return ar.do("swapaxes", x, -1, -2)
    return ar.do("reshape", x, shape)


def _plan(tree) -> list[_Step]:
    """Choose every intermediate's index order from the root down, so that each step is a
    matrix product whose operands already lie as (batch, free, contracted) or its transpose
    wherever the parent allows, and only small leaves or the rare leftover get transposed."""
    steps = list(tree.traverse())
    leaves = {tree.input_to_node(i): tuple(inds) for i, inds in enumerate(tree.inputs)}
    members = {node: {i} for i, node in enumerate(leaves)}
    for node, left, right in steps:
        members[node] = members[left] | members[right]
    total = Counter(ix for inds in tree.inputs for ix in inds)
    output = tuple(tree.output)

    def kept(node):
        inside = Counter(ix for i in members[node] for ix in tree.inputs[i])
        return {ix for ix in inside if total[ix] > inside[ix] or ix in output}

    size = tree.size_dict
    order = dict(leaves)
    order[steps[-1][0]] = output
    plan = []
    for node, left, right in reversed(steps):
        want = order[node]
        ia = set(leaves[left]) if left in leaves else kept(left)
        ib = set(leaves[right]) if right in leaves else kept(right)
        batch = [ix for ix in want if ix in ia and ix in ib]
        k_inds = [ix for ix in ia & ib if ix not in want]
        fa = [ix for ix in want if ix in ia and ix not in ib]
        fb = [ix for ix in want if ix in ib and ix not in ia]
        traces = any(len(set(leaves[x])) != len(leaves[x]) for x in (left, right) if x in leaves)
        if traces or (ia ^ ib) - set(want):  # an index summed within one operand
            order.setdefault(left, tuple(sorted(ia)))
            order.setdefault(right, tuple(sorted(ib)))
            plan.append(_einsum_step(node, left, right, order))
            continue
        # which operand comes first in the product: the one whose free indices lead in want
        rest = [ix for ix in want if ix not in batch]
        if rest and rest[0] in set(fb):
            left, right, fa, fb, ia, ib = right, left, fb, fa, ib, ia
        # contracted indices in the order of a leaf operand (which cannot be reordered freely)
        fixed = order.get(right) if right in leaves else order.get(left) if left in leaves else None
        if fixed is not None:
            k_inds = [ix for ix in fixed if ix in set(k_inds)]
        else:
            k_inds = sorted(k_inds)
        order.setdefault(left, tuple(batch + fa + k_inds))
        order.setdefault(right, tuple(batch + k_inds + fb))
        nb = math.prod(size[ix] for ix in batch)
        m = math.prod(size[ix] for ix in fa)
        k = math.prod(size[ix] for ix in k_inds)
        n = math.prod(size[ix] for ix in fb)
        a = _layout(order[left], batch, fa, k_inds, (nb, m, k))
        b = _layout(order[right], batch, k_inds, fb, (nb, k, n))
        natural = tuple(batch + fa + fb)
        out_perm = None if natural == want else tuple(natural.index(ix) for ix in want)
        dims = tuple(size[ix] for ix in natural)
        plan.append(_Step(left, right, node, a, b, dims, out_perm, None))
    return plan[::-1]


def _layout(have, batch, first, second, shape):
    """How to view an operand with indices ``have`` as ``shape`` = (batch, first, second)."""
    want = tuple(batch + first + second)
    if tuple(have) == want:
        return None, shape, False
    swapped = tuple(batch + second + first)
    if tuple(have) == swapped:
        return None, shape, True
    return tuple(have.index(ix) for ix in want), shape, False


def _einsum_step(node, left, right, order):
    symbols: dict = {}

    def term(inds):
        return "".join(symbols.setdefault(ix, get_symbol(len(symbols))) for ix in inds)

    eq = f"{term(order[left])},{term(order[right])}->{term(order[node])}"
    return _Step(left, right, node, None, None, None, None, eq)
