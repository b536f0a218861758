"""The stage walk every consumer of a plan shares, and the record of one pairwise step.

A plan's groups run in order; each takes its operands from the cores (the *leaves*) and from
the *front*, the results of earlier groups not yet consumed, and puts its own result on the
front (DESIGN.md section 2). :class:`Front` holds that state and :func:`walk` drives it, so the
executor, the cost report, the low-memory backward pass, the CuPy adjoint and the inspector
differ only in what a front value is (an array, an element count, a set of core names) and
in what they do with a group.

:func:`pairwise_steps` lists the steps of one group's contraction tree as :class:`StepRecord`
objects, labelled the same way for cost reports and for captured intermediates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

__all__ = ["Front", "StepRecord", "pairwise_steps", "walk"]


class Front:
    """Values carried between stage groups.

    Parameters
    ----------
    leaves : mapping of str -> value
        One value per core (arrays, sizes, ...); leaves are read, never consumed.

    Attributes
    ----------
    carried : dict of str -> value
        Results of earlier groups (keys ``X{stage}.{group}``) that no later group has taken.
    """

    def __init__(self, leaves: Mapping):
        self.leaves = leaves
        self.carried: dict = {}

    def gather(self, group) -> list:
        """The group's operands in its input order; carried ones leave the front."""
        leaves, carried = self.leaves, self.carried
        return [leaves[k] if k in leaves else carried.pop(k) for k in group.operands]

    def owned(self, group) -> list[bool]:
        """Per operand, whether it is a carried result (which the group may overwrite)."""
        return [k not in self.leaves for k in group.operands]

    def put(self, group, value) -> None:
        """Store the group's result under its key."""
        self.carried[group.key] = value

    def pop(self, key: str):
        """Take a carried result off the front (e.g. the final tensor)."""
        return self.carried.pop(key)


def walk(groups, front: Front, visit: Callable, *, stop: int | None = None) -> Front:
    """Run ``visit`` on every group in execution order, carrying results on ``front``.

    Parameters
    ----------
    groups : sequence of GroupPlan
    front : Front
        Leaves and any results already carried; updated in place.
    visit : callable
        ``visit(index, group, operands) -> value``: the group's result, put on the front.
    stop : int, optional
        Run only groups ``0..stop-1``.

    Returns
    -------
    Front
        ``front`` itself, holding what no group consumed (the final tensor after a full walk).
    """
    for index, group in enumerate(groups if stop is None else groups[:stop]):
        front.put(group, visit(index, group, front.gather(group)))
    return front


@dataclass
class StepRecord:
    """One pairwise contraction of a stage group, as planned or as executed.

    Attributes
    ----------
    stage, group, step : int
        Where the step happens; ``step`` counts within its group.
    left, right : str
        Labels of the inputs: core names, front keys ``X{s}.{g}``, ``x`` (the input batch of
        the fused schedule) or ``#k`` for the result of step ``k`` of the same group.
    output_shape : tuple of int
    flops : int
        Multiply and add counted as two operations (times the number of slices).
    array : array or None
        The intermediate itself, when captured by ``Program.run(capture=True)``.
    """

    stage: int
    group: int
    step: int
    left: str
    right: str
    output_shape: tuple
    flops: int
    array: object = None

    @property
    def label(self) -> str:
        """Label of the result (``#step``)."""
        return f"#{self.step}"

    @property
    def shape(self) -> tuple:
        return self.output_shape

    @property
    def size(self) -> int:
        return math.prod(self.output_shape)


def pairwise_steps(group, tree, operands=None) -> Iterator[tuple]:
    """The steps of one group's contraction tree in execution order.

    Parameters
    ----------
    group : GroupPlan
    tree : cotengra.ContractionTree
    operands : sequence of str, optional
        Labels of the tree's inputs (``group.operands`` by default).

    Yields
    ------
    (record, node, left, right)
        The :class:`StepRecord` (no array) and the tree's nodes of the result and inputs.
    """
    labels = {tree.input_to_node(i): name
              for i, name in enumerate(group.operands if operands is None else operands)}
    nslices = getattr(tree, "nslices", 1) or 1
    size = tree.size_dict
    for k, (node, left, right) in enumerate(tree.traverse()):
        shape = tuple(size[ix] for ix in tree.get_inds(node))
        flops = 2 * int(tree.get_flops(node)) * nslices
        yield (StepRecord(group.stage, group.group, k, labels[left], labels[right], shape,
                          flops), node, left, right)
        labels[node] = f"#{k}"
