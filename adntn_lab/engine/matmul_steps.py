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

from cotengra import get_symbol

from .arrays import do
from .step_products import product

__all__ = ["StepPlan", "contract_tree", "plan_steps", "run_steps"]

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _Step:
    """One pairwise step as a (batched) matrix product of two operands laid out for it.

    ``left``, ``right`` and ``node`` are slots: ``0..n-1`` hold the tree's inputs and slot
    ``n + k`` the result of step ``k``.
    """

    left: int
    right: int
    node: int
    a: tuple            # (perm or None, shape (nb, m, k), transposed view)
    b: tuple            # (perm or None, shape (nb, k, n), transposed view)
    dims: tuple         # shape of the product's natural layout (batch, free a, free b)
    out_perm: tuple | None
    einsum: str | None  # the step as an einsum instead, when it is not a product
    broadcast: bool = False  # ``a`` is (1, m, k), repeated over ``b``'s batch


@dataclass(frozen=True)
class StepPlan:
    """A tree's pairwise steps laid out as matrix products, in plain data (no cotengra).

    Attributes
    ----------
    n_inputs : int
        Operands the plan takes, in the tree's input order.
    steps : tuple of _Step
    """

    n_inputs: int
    steps: tuple


def plan_steps(tree, free: str | None = None) -> StepPlan:
    """Lay out ``tree``'s steps as matrix products (cached per tree when ``free`` is None).

    Parameters
    ----------
    tree : cotengra.ContractionTree
        Unsliced tree with at least one step.
    free : str, optional
        An index whose size is read off the arrays at run time (written ``-1`` in every
        reshape), e.g. the batch of the fused schedule, so that one plan serves any batch.
    """
    if free is not None:
        return _plan(tree, free)
    plan = _PLANS.get(tree)
    if plan is None:
        plan = _PLANS[tree] = _plan(tree)
    return plan


def run_steps(plan: StepPlan, ops):
    """Contract ``ops`` (one array per tree input) along a :class:`StepPlan`.

    Returns
    -------
    array
        In the tree's output index order.
    """
    values = list(ops) + [None] * len(plan.steps)
    for step in plan.steps:
        a, b = values[step.left], values[step.right]
        values[step.left] = values[step.right] = None  # drop inputs as soon as they are used
        if step.einsum is not None:
            values[step.node] = do("einsum", step.einsum, a, b)
            continue
        c = product(_operand(a, *step.a), _operand(b, *step.b), step.broadcast)
        c = do("reshape", c, step.dims)
        values[step.node] = c if step.out_perm is None else do("transpose", c, step.out_perm)
    return values[-1]


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
    return run_steps(plan_steps(tree), ops)


def _operand(x, perm, shape, transposed):
    if perm is not None:
        x = do("transpose", x, perm)
    if transposed:
        x = do("reshape", x, (shape[0], shape[2], shape[1]))
        return do("swapaxes", x, -1, -2)
    return do("reshape", x, shape)


# (broadcast allowed, contracted order from the larger operand): the layout policies tried
_POLICIES = ((False, False), (True, False), (False, True), (True, True))
# outputs smaller than this (elements) are transposed rather than made by a broadcast product
_BROADCAST_MIN = 1 << 16


def _plan(tree, free: str | None = None) -> StepPlan:
    """The layout of the policy that moves the fewest elements (ties go to the first)."""
    best = None
    for policy in _POLICIES:
        plan, moved = _plan_with(tree, free, *policy)
        if best is None or moved < best[1]:
            best = (plan, moved)
    return best[0]


def _plan_with(tree, free, broadcast: bool, k_from_larger: bool):
    """Choose every intermediate's index order from the root down, so that each step is a
    matrix product whose operands already lie as (batch, free, contracted) or its transpose
    wherever the parent allows, and only small leaves or the rare leftover get transposed.

    ``broadcast`` lets a step whose output leads with indices of one operand alone repeat
    the other operand over them (a batched product with a stride-0 operand) instead of
    transposing its output; ``k_from_larger`` orders contracted indices as the larger operand
    holds them (a leaf as stored, an intermediate as its own product would lay it out)
    instead of as any leaf holds them. Returns the plan and the elements it moves: operands
    and outputs transposed, and the repeated operand's gradient of each broadcast product.
    """
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

    def extent(inds):
        return -1 if free in inds else math.prod(size[ix] for ix in inds)

    def elements(inds):
        return math.prod(size[ix] for ix in inds)

    indices = {node: (set(leaves[node]) if node in leaves else kept(node)) for node in members}
    # the order each intermediate's product lays out by itself (larger operand first)
    natural_order = dict(leaves)
    for node, left, right in steps:
        first, second = sorted((left, right), key=lambda x: -elements(indices[x]))
        keep = set(output) if node == steps[-1][0] else indices[node]
        lead = [ix for ix in natural_order[first] if ix in keep]
        natural_order[node] = tuple(lead + [ix for ix in natural_order[second]
                                            if ix in keep and ix not in lead])

    order = dict(leaves)
    order[steps[-1][0]] = output
    plan, moved = [], 0
    for node, left, right in reversed(steps):
        want = order[node]
        ia, ib = indices[left], indices[right]
        batch = [ix for ix in want if ix in ia and ix in ib]
        k_inds = [ix for ix in ia & ib if ix not in want]
        fa = [ix for ix in want if ix in ia and ix not in ib]
        fb = [ix for ix in want if ix in ib and ix not in ia]
        traces = any(len(set(leaves[x])) != len(leaves[x]) for x in (left, right) if x in leaves)
        if traces or (ia ^ ib) - set(want):  # an index summed within one operand
            order.setdefault(left, tuple(sorted(ia)))
            order.setdefault(right, tuple(sorted(ib)))
            plan.append(_einsum_step(node, left, right, order))
            moved += elements(ia) + elements(ib)
            continue
        # which operand comes first in the product: the one whose free indices lead in want
        rest = [ix for ix in want if ix not in batch]
        if rest and rest[0] in set(fb):
            left, right, fa, fb, ia, ib = right, left, fb, fa, ib, ia
        if k_from_larger:
            larger = left if elements(ia) >= elements(ib) else right
            reference = order[larger] if larger in leaves else natural_order[larger]
        else:  # contracted indices in the order of a leaf operand
            reference = (order.get(right) if right in leaves
                         else order.get(left) if left in leaves else None)
        k_inds = ([ix for ix in reference if ix in set(k_inds)] if reference is not None
                  else sorted(k_inds))
        natural = tuple(batch + fa + fb)
        split = (_broadcast_split(want, fa, fb)
                 if broadcast and not batch and natural != want
                 and elements(want) >= _BROADCAST_MIN else None)
        if split is not None:  # want = lead + free of the repeated operand + the rest
            lead, m_inds, n_inds, repeated_is_left = split
            repeated, other = (left, right) if repeated_is_left else (right, left)
            order.setdefault(repeated, tuple(m_inds + k_inds))
            order.setdefault(other, tuple(lead + k_inds + n_inds))
            m, k, n = extent(m_inds), extent(k_inds), extent(n_inds)
            a = _layout(order[repeated], [], m_inds, k_inds, (1, m, k))
            b = _layout(order[other], lead, k_inds, n_inds, (extent(lead), k, n))
            dims = tuple(-1 if ix == free else size[ix] for ix in want)
            plan.append(_Step(repeated, other, node, a, b, dims, None, None, True))
            moved += elements(lead) * elements(m_inds) * elements(k_inds)
            moved += sum(elements(order[x]) for x, lay in ((repeated, a), (other, b))
                         if lay[0] is not None)
            continue
        order.setdefault(left, tuple(batch + fa + k_inds))
        order.setdefault(right, tuple(batch + k_inds + fb))
        nb, m, k, n = extent(batch), extent(fa), extent(k_inds), extent(fb)
        a = _layout(order[left], batch, fa, k_inds, (nb, m, k))
        b = _layout(order[right], batch, k_inds, fb, (nb, k, n))
        out_perm = None if natural == want else tuple(natural.index(ix) for ix in want)
        dims = tuple(-1 if ix == free else size[ix] for ix in natural)
        plan.append(_Step(left, right, node, a, b, dims, out_perm, None))
        moved += sum(elements(order[x]) for x, lay in ((left, a), (right, b))
                     if lay[0] is not None)
        if out_perm is not None:
            moved += elements(want)
    # nodes to slots: the inputs first, then each step's result in execution order
    slot = {tree.input_to_node(i): i for i in range(len(tree.inputs))}
    slot.update({node: len(tree.inputs) + k for k, (node, _, _) in enumerate(steps)})
    laid = tuple(_Step(slot[st.left], slot[st.right], slot[st.node], *_fields_after_slots(st))
                 for st in reversed(plan))
    return StepPlan(len(tree.inputs), laid), moved


def _broadcast_split(want, fa, fb):
    """Split ``want`` as lead + m + n, where lead and n are free indices of one operand and
    m all the free indices of the other (the repeated one), or None when it has no such form.

    Returns
    -------
    (lead, m, n, repeated_is_left) or None
    """
    for own, other, repeated_is_left in ((fa, fb, False), (fb, fa, True)):
        own_set, other_set = set(own), set(other)
        n_lead = 0
        while n_lead < len(want) and want[n_lead] in own_set:
            n_lead += 1
        lead = list(want[:n_lead])
        m_inds = list(want[n_lead:n_lead + len(other)])
        n_inds = list(want[n_lead + len(other):])
        if lead and n_inds and set(m_inds) == other_set and set(n_inds) <= own_set:
            return lead, m_inds, n_inds, repeated_is_left
    return None


def _fields_after_slots(step: _Step) -> tuple:
    """A step's fields after its slots."""
    return step.a, step.b, step.dims, step.out_perm, step.einsum, step.broadcast


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
