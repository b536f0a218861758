"""Mean, RMS and row means of a generated ``W`` without forming it.

When the last stage is linear, ``W`` is the last group's contraction of its cores with the
results of the groups before it (the *last operands*). Its sum of squares is the contraction
of that group with a copy of itself over the physical legs (every other index primed), and
its row means are the fused schedule applied to one row ``1 / in_features``
(:meth:`~adntn_lab.engine.program.Program.fused_last`). For a tree, whose last operands are a
few small subtrees, both cost a tiny fraction of ``W``; calibration
(:meth:`adntn_lab.Generator.calibrate`) then needs only one pass over the groups before the
last, however many times it rescales or re-centres the last stage's cores.

A padded ``W`` (rows or columns beyond ``out_features``/``in_features``) is cropped by a mask
that is not a product over the physical legs, but ``{c < N}`` for a mixed-radix ``c`` is the
disjoint union over digit positions ``k`` of "the leading ``k`` digits equal ``N``'s and digit
``k`` below ``N``'s", each a product of one 0/1 vector per digit: the cropped sum of squares is
a sum of at most ``n_sites`` (rows) times ``n_sites`` (columns) doubled contractions, each with
one copy's physical legs multiplied by such vectors.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from .planning import contraction_tree
from .program import Program, _contract
from .walk import Front, walk

__all__ = ["moments_are_cheap", "last_operands", "square_sum", "row_means", "with_cores",
           "std_of", "crop_masks"]

# the doubled contraction is used when it costs at most this fraction of forming W
_CHEAP_FRACTION = 0.25
_TREES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _square_sum_tree(program: Program):
    """The cotengra tree of the last group contracted with its primed copy (cached)."""
    tree = _TREES.get(program)
    if tree is None:
        last = program.groups[-1]
        physical = set(last.output)
        primed = {ix: f"{ix}~" for term in last.inputs for ix in term if ix not in physical}
        inputs = tuple(last.inputs) + tuple(tuple(primed.get(ix, ix) for ix in term)
                                            for term in last.inputs)
        sizes = {**program.size_dict,
                 **{p: program.size_dict[ix] for ix, p in primed.items()}}
        tree = _TREES[program] = contraction_tree(inputs, (), sizes, program.optimize)
    return tree


def _below(n: int, modes) -> list[tuple[np.ndarray, ...]]:
    """Product masks whose sum is ``[c < n]`` for ``c`` in mixed radix over ``modes`` (first
    digit most significant): one 0/1 vector per digit in each term."""
    if n == math.prod(modes):
        return [tuple(np.ones(m) for m in modes)]
    digits, rest = [], n
    for k in range(len(modes)):
        step = math.prod(modes[k + 1:])
        digits.append(rest // step)
        rest %= step
    terms = []
    for k, d in enumerate(digits):
        if d == 0:
            continue
        term = []
        for j, m in enumerate(modes):
            v = np.zeros(m) if j <= k else np.ones(m)
            if j < k:
                v[digits[j]] = 1.0
            elif j == k:
                v[:d] = 1.0
            term.append(v)
        terms.append(tuple(term))
    return terms


def crop_masks(tz) -> list[tuple[np.ndarray, ...]]:
    """Product masks (one vector of length ``o_k * i_k`` per physical leg, in site order)
    whose sum selects the unpadded ``W`` inside the physical tensor."""
    return [tuple(np.outer(r, c).reshape(-1) for r, c in zip(rows, cols))
            for rows in _below(tz.out_features, tz.out_modes)
            for cols in _below(tz.in_features, tz.in_modes)]


def _padded(tz) -> bool:
    return (tz.padded_out, tz.padded_in) != (tz.out_features, tz.in_features)


def moments_are_cheap(program: Program) -> bool:
    """Whether :func:`square_sum` and :func:`row_means` can stand in for passes over ``W``:
    a linear last stage that is not a gate chain, and doubled last groups (one per crop mask
    of a padded ``W``) that cost at most ``_CHEAP_FRACTION`` of forming ``W``."""
    last = program.groups[-1]
    if (not program.activations[-1].is_identity or program.chains[-1] is not None
            or len(last.operands) < 2):
        return False
    terms = len(crop_masks(program.tz)) if _padded(program.tz) else 1
    doubled = terms * float(_square_sum_tree(program).contraction_cost())
    forming = float(program.trees()[-1].contraction_cost())
    return doubled <= _CHEAP_FRACTION * forming


def last_operands(program: Program, arrays: dict, hook=None) -> list:
    """Run every group but the last and return the last group's operands.

    Parameters
    ----------
    program : Program
    arrays : dict of str -> torch.Tensor
        One array per core.
    hook : callable, optional
        ``hook(group, pre_activation) -> array``, as for
        :meth:`~adntn_lab.engine.program.Program.run`.

    Returns
    -------
    list of array
        In ``program.groups[-1].operands`` order (cores from ``arrays``).
    """
    trees, chains = program.trees(), program.chains

    def visit(index, group, ops):
        out = _contract(chains[index] or trees[index], ops, group)
        if hook is not None:
            out = hook(group, out)
        return program.activations[group.stage](out)

    return walk(program.groups[:-1], Front(arrays), visit).gather(program.groups[-1])


def square_sum(program: Program, ops: list):
    """``sum(W ** 2)`` of the unpadded ``W`` from the last group's operands (a 0-d array of
    their type)."""
    tree = _square_sum_tree(program)
    if not _padded(program.tz):
        return tree.contract([*ops, *ops])
    import torch

    last = program.groups[-1]
    # the operand (and its axis) that carries each physical leg in the first copy
    carriers = {}
    for j, term in enumerate(last.inputs):
        for axis, ix in enumerate(term):
            carriers.setdefault(ix, (j, axis))
    total = 0
    for masks in crop_masks(program.tz):
        masked = list(ops)
        for k, mask in enumerate(masks):
            j, axis = carriers[f"p{k}"]
            shape = [1] * masked[j].ndim
            shape[axis] = mask.size
            vec = torch.as_tensor(mask, dtype=ops[j].dtype, device=ops[j].device)
            masked[j] = masked[j] * vec.reshape(shape)
        total = total + tree.contract([*masked, *ops])
    return total


def row_means(program: Program, ops: list):
    """``W.mean(dim=1)`` from the last group's operands, shape (out_features,)."""
    import torch

    x = ops[0]
    one_row = torch.full((1, program.tz.in_features), 1.0 / program.tz.in_features,
                         dtype=x.dtype, device=x.device)
    return program.fused_last(ops, one_row)[0]


def with_cores(program: Program, ops: list, cores: dict) -> list:
    """``ops`` with the last group's cores named in ``cores`` replaced."""
    return [cores.get(name, op) for name, op in zip(program.groups[-1].operands, ops)]


def std_of(program: Program, ops: list) -> tuple[float, float, float]:
    """``(mean, rms, std)`` of ``W`` from the last group's operands."""
    count = program.tz.out_features * program.tz.in_features
    sq = float(square_sum(program, ops))
    mean = float(row_means(program, ops).double().sum()) / program.tz.out_features
    rms = math.sqrt(max(sq, 0.0) / count)
    return mean, rms, math.sqrt(max(rms * rms - mean * mean, 0.0))
