"""Executing a plan: stage by stage, group by group, on numpy, torch or CuPy arrays.

The :class:`Program` is compiled once per structure (its groups and cotengra trees come from
:mod:`adntn_lab.engine.planning`) and then runs on whatever arrays it is given: numpy for
reference and inspection, torch for training (autograd flows through every contraction), CuPy
on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import autoray as ar

from ..activations import Activation
from ..tensorize import Tensorization
from .backends import check_arrays
from .gate_chains import GateChain, detect_gate_chain
from .matmul_steps import contract_tree
from .planning import GroupPlan, Plan, contraction_tree, tree_from_path

__all__ = ["Program", "Capture", "MemoryLimitError"]


class MemoryLimitError(ValueError):
    """A plan needs more memory than allowed and slicing cannot bring it under the limit."""


@dataclass
class Capture:
    """One pairwise contraction step, as executed.

    Attributes
    ----------
    stage, group, step : int
        Where the step happened; ``step`` counts within its group.
    left, right : str
        Labels of the two inputs (core names, front keys ``X{s}.{g}`` or ``#k`` for the
        intermediate of step ``k`` of the same group).
    label : str
        Label of the result.
    shape : tuple of int
    array : array
        The intermediate itself (same backend as the inputs).
    """

    stage: int
    group: int
    step: int
    left: str
    right: str
    label: str
    shape: tuple
    array: object


class Program:
    """Compiled execution of a generator's stages.

    Parameters
    ----------
    plan : Plan
    tensorization : Tensorization
    activations : list of Activation, one per stage
    optimize : str or cotengra optimizer
        Contraction-path optimiser for every group.
    """

    def __init__(self, plan: Plan, tensorization: Tensorization, activations: list[Activation],
                 optimize="auto"):
        self.plan = plan
        self.tz = tensorization
        self.activations = list(activations)
        self.optimize = optimize
        self.size_dict = plan.size_dict
        # groups that are one state plus a chain of neighbouring gates run as blocks of gates
        # applied with batched matrix products (the auto optimiser only); their tree is the
        # matching block tree, so that cost reports and captures describe what runs
        self._chains = [
            detect_gate_chain(g.inputs, g.output, self.size_dict)
            if optimize in (None, "auto") else None
            for g in plan.groups
        ]
        self._trees = [
            tree_from_path(g.inputs, g.output, self.size_dict, chain.ssa_path())
            if chain is not None else g.tree(self.size_dict, optimize)
            for g, chain in zip(plan.groups, self._chains)
        ]
        self._sliced: dict = {}
        self._fused: dict = {}
        #: recompute in the backward pass: "auto" (large groups; the lean pass when the
        #: ordinary one would not fit in half the available memory), True (every group),
        #: False, or "lean" (keep nothing; recompute every group's inputs, O(1) states per
        #: gate chain; least memory, about 2.5x the time: see adntn_lab.engine.lean_backward)
        self.recompute = "auto"
        self.last_placement: tuple[str, str] | None = None
        self._recompute_choice: dict = {}

    # ------------------------------------------------------------------ structure
    @property
    def groups(self) -> list[GroupPlan]:
        return self.plan.groups

    def trees(self, memory_limit=None, itemsize=8):
        """The contraction tree of each group, sliced where needed to fit ``memory_limit``."""
        if memory_limit is None:
            return self._trees
        key = (memory_limit, itemsize)
        if key not in self._sliced:
            self._sliced[key] = [self._slice(g, t, memory_limit, itemsize, base)
                                 for g, t, base in zip(self.groups, self._trees,
                                                       self.resident_elements())]
        return self._sliced[key]

    def resident_elements(self) -> list[int]:
        """Elements held outside each group while it runs: the cores of other groups, and
        the tensors carried between stages that the group does not consume."""
        sizes = {k: math.prod(self.size_dict[ix] for ix in inds)
                 for g in self.groups for k, inds in zip(g.operands, g.inputs)
                 if k in g.stage_cores}
        cores = sum(sizes.values())
        front: dict[str, int] = {}
        out = []
        for g in self.groups:
            own = sum(sizes[k] for k in g.stage_cores)
            out.append(cores - own + sum(v for k, v in front.items() if k not in g.operands))
            for k in g.operands:
                front.pop(k, None)
            front[g.key] = math.prod(self.size_dict[ix] for ix in g.output)
        return out

    def minimum_memory(self, itemsize: int = 8) -> int:
        """The smallest ``memory_limit`` (bytes) that every group can meet by slicing: what
        is held meanwhile, plus the group's inputs and output."""
        need = 0
        for g, resident in zip(self.groups, self.resident_elements()):
            operands = sum(math.prod(self.size_dict[ix] for ix in inds) for inds in g.inputs)
            need = max(need, resident + operands + math.prod(self.size_dict[ix]
                                                             for ix in g.output))
        return need * itemsize

    def _slice(self, group, tree, memory_limit, itemsize, resident):
        limit = int(memory_limit) // itemsize
        out_size = math.prod(self.size_dict[ix] for ix in group.output)
        in_size = sum(math.prod(self.size_dict[ix] for ix in inds) for inds in group.inputs)
        peak = tree.peak_size()  # the group's inputs and live intermediates
        if resident + peak <= limit:
            return tree
        if resident + out_size + in_size > limit:
            raise MemoryLimitError(
                f"stage {group.stage} group {group.group} needs at least "
                f"{(resident + out_size + in_size) * itemsize:,} bytes (its inputs, its output "
                f"of {out_size:,} elements and the {resident:,} elements held meanwhile), but "
                f"memory_limit allows {int(memory_limit):,} bytes; raise memory_limit or choose "
                "a smaller bond dimension"
            )
        target = max(1, limit - resident - out_size - in_size)
        try:
            sliced = tree.slice(target_size=target, allow_outer=False)
        except RuntimeError:  # cotengra ran out of indices to slice
            sliced = None
        if sliced is None or sliced.max_size() > target:
            reached = tree.max_size() if sliced is None else sliced.max_size()
            raise MemoryLimitError(
                f"stage {group.stage} group {group.group} needs {peak * itemsize:,} bytes and "
                f"slicing brings its largest intermediate only down to "
                f"{reached * itemsize:,} bytes, over the memory_limit of "
                f"{int(memory_limit):,} bytes; raise memory_limit or choose a smaller bond "
                "dimension"
            )
        return sliced

    # ------------------------------------------------------------------ execution
    def run(self, arrays: dict, *, capture: bool = False, hook=None, memory_limit=None,
            physical: bool = False):
        """Generate the weight.

        Parameters
        ----------
        arrays : dict of str -> array
            One array per core, all from the same backend.
        capture : bool
            Also return every pairwise intermediate as a list of :class:`Capture`.
        hook : callable, optional
            ``hook(group, pre_activation) -> array`` may inspect or rescale a group's result
            before its activation (used for scale calibration).
        memory_limit : int, optional
            Bytes; groups whose peak exceeds it run sliced.
        physical : bool
            Return the physical tensor (site order, shape ``site_dims``) instead of ``W``.

        Returns
        -------
        W : array, shape (out_features, in_features)
            Or ``(W, captures)`` with ``capture=True``.
        """
        #: (backend, device) of the last run, e.g. ("torch", "cpu") or ("cupy", "cuda:0")
        self.last_placement = check_arrays(arrays, "Program.run")
        if (self.last_placement[0] == "torch" and not (capture or hook or physical)
                and memory_limit is None and _needs_grad(list(arrays.values()))
                and self._lean_wanted(arrays)):
            from .lean_backward import lean_weight

            return lean_weight(self, arrays)
        itemsize = _itemsize(next(iter(arrays.values())))
        trees = self.trees(memory_limit, itemsize)
        front: dict = {}
        captures: list[Capture] = []
        chains = self._chains if memory_limit is None else [None] * len(self.groups)
        last = len(self.groups) - 1
        for index, (group, tree, chain) in enumerate(zip(self.groups, trees, chains)):
            ops = [arrays[k] if k in arrays else front.pop(k) for k in group.operands]
            act = self.activations[group.stage]
            if (index == last and not (capture or hook or physical) and memory_limit is None
                    and chain is None and len(ops) > 1):
                # contract the last group straight into matrix order: the physical legs are
                # split into row and column digits on the small operands, so W needs no
                # reordering over all its digits afterwards
                mg = self.matrix_group()
                ops = [ar.do("reshape", op, shape) for op, shape in zip(ops, mg.shapes)]
                w = self._apply(mg.tree, ops, group, act)
                w = ar.do("reshape", w, (self.tz.padded_out, self.tz.padded_in))
                return w[: self.tz.out_features, : self.tz.in_features]
            if not (capture or hook):
                front[group.key] = self._apply(chain or tree, ops, group, act)
                continue
            if capture:
                out = self._contract_stepwise(group, tree, ops, captures)
            else:
                out = _contract(chain or tree, ops, group)
            if hook is not None:
                out = hook(group, out)
            front[group.key] = act(out)
        wp = front.pop(self.plan.final_key)
        wp = _transpose_to(wp, self.plan.final_inds, self.tz.physical_inds)
        result = wp if physical else self.tz.to_matrix(wp)
        return (result, captures) if capture else result

    def _lean_wanted(self, arrays) -> bool:
        """``recompute="lean"``, or ``"auto"`` when the ordinary backward pass would need more
        than half the memory available (it peaks at up to ``ORDINARY_PEAK_FACTOR`` times the
        bytes of W on CPU)."""
        if self.recompute == "lean":
            return True
        if self.recompute != "auto" or self.last_placement[1] not in (None, "cpu"):
            return False
        w_bytes = self.tz.padded_out * self.tz.padded_in * _itemsize(
            next(iter(arrays.values())))
        if w_bytes < _LEAN_MIN_BYTES:
            return False
        available = available_memory()
        return available is not None and ORDINARY_PEAK_FACTOR * w_bytes > available / 2

    def _apply(self, tree, ops, group, activation):
        """Contract one group and activate it; with torch autograd, recompute the group's
        intermediates in the backward pass instead of keeping them when they are large."""
        def fn(*arrays):
            return activation(_contract(tree, list(arrays), group))

        if self.recompute and _needs_grad(ops) and self._worth_recomputing(tree):
            from torch.utils.checkpoint import checkpoint

            return checkpoint(fn, *ops, use_reentrant=False)
        return fn(*ops)

    def _worth_recomputing(self, tree) -> bool:
        if self.recompute is True:
            return True
        key = id(tree)
        if isinstance(tree, GateChain) and key not in self._recompute_choice:
            # every block keeps a copy of the state for its backward pass: keep them while
            # all chains' copies fit in a quarter of the free memory (a recomputed chain runs
            # its blocks twice), else recompute
            chains = sum(c is not None for c in self._chains)
            available = available_memory()
            self._recompute_choice[key] = (
                available is None
                or chains * tree.saved_elements() * _CHAIN_ITEMSIZE > available / 4)
        if key not in self._recompute_choice:
            steps = list(tree.traverse())
            if not steps:
                self._recompute_choice[key] = False
            else:
                out = tree.get_size(steps[-1][0])
                kept = sum(tree.get_size(node) for node, _, _ in steps[:-1])
                self._recompute_choice[key] = out >= _RECOMPUTE_MIN and kept >= 2 * out
        return self._recompute_choice[key]

    def _contract_stepwise(self, group, tree, ops, captures):
        if len(ops) == 1:
            return _transpose_to(ops[0], group.inputs[0], group.output)
        values = {tree.input_to_node(i): op for i, op in enumerate(ops)}
        labels = {tree.input_to_node(i): name for i, name in enumerate(group.operands)}
        node = None
        for step, (node, left, right) in enumerate(tree.traverse()):
            eq = tree.get_einsum_eq(node)
            arr = ar.do("einsum", eq, values.pop(left), values.pop(right))
            values[node] = arr
            labels[node] = f"#{step}"
            captures.append(Capture(group.stage, group.group, step, labels[left], labels[right],
                                    f"#{step}", tuple(arr.shape), arr))
        out = values[node]
        # the root's index order is the tree's output order, which equals group.output
        return out

    def fused(self, arrays: dict, x, *, memory_limit=None):
        """Apply the generated weight to a batch without forming ``W``.

        The input batch is contracted into the final stage, which must be linear (identity
        activation): ``y = x @ W.T`` with ``x`` of shape (B, in_features).

        Returns
        -------
        y : array, shape (B, out_features)
        """
        if not self.activations[-1].is_identity:
            raise ValueError(
                "the fused schedule needs a linear last stage, but this generator's last "
                f"activation is {self.activations[-1].name!r}; use schedule='materialize'"
            )
        batch = x.shape[0]
        itemsize = _itemsize(x)
        trees = self.trees(memory_limit, itemsize)
        front: dict = {}
        chains = self._chains if memory_limit is None else [None] * len(self.groups)
        for group, tree, chain in zip(self.groups[:-1], trees[:-1], chains[:-1]):
            ops = [arrays[k] if k in arrays else front.pop(k) for k in group.operands]
            front[group.key] = self._apply(chain or tree, ops, group,
                                           self.activations[group.stage])
        last = self.groups[-1]
        fg = self.fused_group(batch)
        ops = [arrays[k] if k in arrays else front.pop(k) for k in last.operands]
        ops = [ar.do("reshape", op, shape) for op, shape in zip(ops, fg.shapes)]
        xp = _pad_columns(x, self.tz.padded_in)
        xp = ar.do("reshape", xp, fg.x_shape)
        y = contract_tree(fg.tree, [*ops, xp])
        y = ar.do("reshape", y, (batch, self.tz.padded_out))
        return y[:, : self.tz.out_features]

    def matrix_group(self):
        """The final group contracted directly into matrix order (no batch)."""
        if None not in self._fused:
            self._fused[None] = _FusedGroup(self.groups[-1], self.tz, self.size_dict, None,
                                            self.optimize)
        return self._fused[None]

    def fused_group(self, batch: int):
        """The final group's contraction with the input batch attached (cached per batch)."""
        if batch not in self._fused:
            self._fused[batch] = _FusedGroup(self.groups[-1], self.tz, self.size_dict, batch,
                                             self.optimize)
        return self._fused[batch]


class _FusedGroup:
    """Final group with physical legs split into (o_k, i_k), and the batch attached unless
    ``batch`` is None (then the output is W in matrix order)."""

    def __init__(self, group: GroupPlan, tz: Tensorization, size_dict, batch, optimize):
        split = {}
        sizes = dict(size_dict)
        for k, (o, i) in enumerate(zip(tz.out_modes, tz.in_modes)):
            legs = []
            if o > 1:
                legs.append((f"o{k}", o))
            if i > 1:
                legs.append((f"i{k}", i))
            split[f"p{k}"] = legs
            sizes.update(legs)
        self.inputs, self.shapes = [], []
        for inds in group.inputs:
            new = [leg for ix in inds for leg in (split[ix] if ix in split else [(ix, sizes[ix])])]
            self.inputs.append(tuple(n for n, _ in new))
            self.shapes.append(tuple(d for _, d in new))
        out_legs = tuple(f"o{k}" for k, o in enumerate(tz.out_modes) if o > 1)
        in_legs = tuple(f"i{k}" for k, i in enumerate(tz.in_modes) if i > 1)
        self.size_dict = sizes
        if batch is None:  # W itself, rows then columns
            self.x_inds, self.x_shape = None, None
            self.output = out_legs + in_legs
            self.tree = contraction_tree(self.inputs, self.output, sizes, optimize)
            return
        sizes["batch"] = batch
        self.x_inds = ("batch", *in_legs)
        self.x_shape = (batch, *(sizes[n] for n in in_legs))
        self.output = ("batch", *out_legs)
        self.tree = contraction_tree([*self.inputs, self.x_inds], self.output, sizes, optimize)


# bytes per element assumed when deciding whether a gate chain's states fit (float32)
_CHAIN_ITEMSIZE = 4
# groups whose output has fewer elements than this are never recomputed
_RECOMPUTE_MIN = 1 << 16
#: peak resident memory of the ordinary forward+backward pass in multiples of W's bytes, an
#: upper bound from the brick-wall Q=24 benchmark (19-30x with the tuned allocator)
ORDINARY_PEAK_FACTOR = 32
# below this size W never triggers the automatic switch to the lean pass
_LEAN_MIN_BYTES = 16 << 20


def available_memory() -> int | None:
    """Bytes the system can still give (``MemAvailable`` on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _needs_grad(ops) -> bool:
    return any(getattr(op, "requires_grad", False) for op in ops) and _grad_enabled()


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _contract(tree, ops, group):
    """Contract a group's operands with its tree (or gate chain) into ``group.output`` order."""
    if isinstance(tree, GateChain):
        return tree.contract(ops)
    if len(ops) == 1:
        return _transpose_to(ops[0], group.inputs[0], group.output)
    if tree.sliced_inds:
        return tree.contract(ops)
    return contract_tree(tree, ops)


def _transpose_to(arr, have, want):
    have, want = tuple(have), tuple(want)
    if have == want:
        return arr
    return ar.do("transpose", arr, tuple(have.index(ix) for ix in want))


def _pad_columns(x, width):
    cols = x.shape[1]
    if cols == width:
        return x
    if ar.infer_backend(x) == "torch":
        import torch.nn.functional as F

        return F.pad(x, (0, width - cols))
    xp = ar.do("zeros", (x.shape[0], width), like=x, dtype=x.dtype)
    xp[:, :cols] = x
    return xp


def _itemsize(arr) -> int:
    size = getattr(arr, "itemsize", None)
    if size is None:
        size = arr.element_size()
    return int(size)
