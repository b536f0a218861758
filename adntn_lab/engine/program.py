"""Executing a plan: stage by stage, group by group, on numpy, torch or CuPy arrays.

The :class:`Program` is compiled once per structure (its groups and cotengra trees come from
:mod:`adntn_lab.engine.planning`) and then runs on whatever arrays it is given: numpy for
reference and inspection, torch for training (autograd flows through every contraction), CuPy
on a GPU.

A Program holds structure only: everything a call decides (the backend, the backward pass's
recomputation) is an argument or a local of that call, so generators that share a Program
(``Generator.with_optimizer``, exported copies) never see each other's calls. Everything
derived from the structure (step layouts, the matrix-order last group, per-batch fused
plans) is made on first use by functions that ``torch.compile`` runs at trace time
(:func:`torch.compiler.assume_constant_result`), so a traced forward pass contains only the
array operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..utils import available_memory
from .arrays import compiling, do, is_torch, trace_constant
from .backends import check_arrays
from .gate_chains import GateChain, detect_gate_chain
from .matmul_steps import StepPlan, plan_steps, run_steps
from .planning import GroupPlan, Plan, contraction_tree, tree_from_path
from .walk import Front, StepRecord, pairwise_steps, walk

if TYPE_CHECKING:  # annotations only: activations imports the engine's backends
    from ..activations import Activation
    from ..tensorize import Tensorization

__all__ = ["Program", "MemoryLimitError", "RECOMPUTE"]

#: Values of ``recompute`` (see :meth:`Program.run`).
RECOMPUTE = ("auto", True, False, "lean")


class MemoryLimitError(ValueError):
    """A plan needs more memory than allowed and slicing cannot bring it under the limit."""


class Program:
    """Compiled execution of a generator's stages.

    Parameters
    ----------
    plan : Plan
    tensorization : Tensorization
    activations : sequence of Activation, one per stage
    optimize : str or cotengra optimizer
        Contraction-path optimiser for every group.
    gate_chains : bool
        Run groups that are one state and a chain of neighbouring gates as blocks of gates
        (with the ``"auto"`` optimiser only; see :mod:`adntn_lab.engine.gate_chains`).
    """

    def __init__(self, plan: Plan, tensorization: Tensorization, activations: list[Activation],
                 optimize="auto", *, gate_chains: bool = True):
        self.plan = plan
        self.tz = tensorization
        self.activations = tuple(activations)
        self.optimize = optimize
        self.size_dict = plan.size_dict
        # groups that are one state plus a chain of neighbouring gates run as blocks of gates
        # applied with batched matrix products (the auto optimiser only); their tree is the
        # matching block tree, so that cost reports and captures describe what runs
        self.gate_chains = gate_chains
        use_chains = gate_chains and optimize in (None, "auto")
        self._chains = tuple(
            detect_gate_chain(g.inputs, g.output, self.size_dict) if use_chains else None
            for g in plan.groups
        )
        self._trees = [
            tree_from_path(g.inputs, g.output, self.size_dict, chain.ssa_path())
            if chain is not None else g.tree(self.size_dict, optimize)
            for g, chain in zip(plan.groups, self._chains)
        ]
        # caches of what the structure implies (never per-call state)
        self._sliced: dict = {}
        self._fused: dict = {}
        self._worth: dict = {}
        self._layout: _Layout | None = None

    def with_optimizer(self, optimize) -> Program:
        """The same structure planned with another path optimiser."""
        return Program(self.plan, self.tz, self.activations, optimize,
                       gate_chains=self.gate_chains)

    @property
    def recompute(self):
        raise AttributeError(
            "Program no longer holds a recompute setting (a Program is shared by generators "
            "and layers); pass it per call, e.g. program.run(arrays, recompute='lean'), or "
            "set layer.generated.recompute on an ADNTNLinear"
        )

    @recompute.setter
    def recompute(self, value):
        self.recompute  # noqa: B018 - raises the explanation above

    # ------------------------------------------------------------------ structure
    @property
    def groups(self) -> list[GroupPlan]:
        return self.plan.groups

    @property
    def final_key(self) -> str:
        """Front key of the last group's result."""
        return self.plan.final_key

    @property
    def final_inds(self) -> tuple[str, ...]:
        """Indices of the last group's result (the physical legs, in the plan's order)."""
        return self.plan.final_inds

    @property
    def chains(self) -> tuple:
        """Per group, its :class:`GateChain` or None."""
        return self._chains

    def chain(self, index: int) -> GateChain | None:
        """Group ``index``'s gate chain, or None when it runs as a contraction tree."""
        return self._chains[index]

    def tree(self, index: int):
        """Group ``index``'s (unsliced) contraction tree."""
        return self._trees[index]

    def core_sizes(self) -> dict[str, int]:
        """Elements of every core, by name."""
        return {k: math.prod(self.size_dict[ix] for ix in inds)
                for g in self.groups for k, inds in zip(g.operands, g.inputs)
                if k in g.stage_cores}

    def num_params(self) -> int:
        """Elements of the trainable cores (every core but the plan's constants)."""
        constants = set(self.plan.constants)
        return sum(v for k, v in self.core_sizes().items() if k not in constants)

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
        sizes = self.core_sizes()
        cores = sum(sizes.values())
        front = Front(sizes)
        out = []

        def visit(index, group, operands):
            own = sum(sizes[k] for k in group.stage_cores)
            out.append(cores - own + sum(front.carried.values()))
            return math.prod(self.size_dict[ix] for ix in group.output)

        walk(self.groups, front, visit)
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
            physical: bool = False, recompute="auto"):
        """Generate the weight.

        Parameters
        ----------
        arrays : dict of str -> array
            One array per core, all from the same backend.
        capture : bool
            Also return every pairwise intermediate as a list of :class:`StepRecord`.
        hook : callable, optional
            ``hook(group, pre_activation) -> array`` may inspect or rescale a group's result
            before its activation (used for scale calibration).
        memory_limit : int, optional
            Bytes; groups whose peak exceeds it run sliced.
        physical : bool
            Return the physical tensor (site order, shape ``site_dims``) instead of ``W``.
        recompute : {"auto", True, False, "lean"}
            What the torch backward pass recomputes instead of keeping: ``"auto"`` (large
            groups; the lean pass when the ordinary one would not fit in half the available
            memory, on the CPU and outside ``torch.compile``), ``True`` (every group),
            ``False`` (nothing), or ``"lean"`` (keep only the cores and rebuild every group's
            inputs, O(1) states per gate chain; least memory, about 2.5x the time: see
            :mod:`adntn_lab.engine.lean_backward`).

        Returns
        -------
        W : array, shape (out_features, in_features)
            Or ``(W, captures)`` with ``capture=True``.
        """
        _check_recompute(recompute)
        backend, device = check_arrays(arrays, "Program.run")
        inspecting = capture or hook is not None or physical or memory_limit is not None
        if (backend == "torch" and not inspecting and recompute in ("auto", "lean")
                and _needs_grad(list(arrays.values()))):
            if compiling():
                if recompute == "lean":
                    raise ValueError(
                        "recompute='lean' runs its own backward pass outside autograd's "
                        "graph and cannot be traced by torch.compile; use recompute='auto' "
                        "(or True) in compiled code, or run the lean pass eagerly"
                    )
            elif self._lean_wanted(arrays, recompute, device):
                from .lean_backward import lean_weight

                return lean_weight(self, arrays)
        if inspecting:
            return self._run_inspecting(arrays, capture, hook, memory_limit, physical,
                                        recompute)
        lay = _layout_of(self)
        front = walk(self.groups, Front(arrays), self._visitor(lay, recompute, matrix=True))
        out = front.pop(self.plan.final_key)
        if lay.matrix is not None:
            w = do("reshape", out, (self.tz.padded_out, self.tz.padded_in))
            return w[: self.tz.out_features, : self.tz.in_features]
        return self._to_matrix(out, lay)

    def _visitor(self, lay, recompute, *, matrix: bool):
        """``visit`` for :func:`walk` over the laid-out groups; with ``matrix`` the last
        group is contracted straight into ``W``'s matrix order when it can be."""
        last = len(self.groups) - 1

        def visit(index, group, ops):
            act = self.activations[group.stage]
            if matrix and index == last and lay.matrix is not None:
                # the physical legs are split into row and column digits on the small
                # operands, so W needs no reordering over all its digits afterwards
                ops = [do("reshape", op, shape) for op, shape in zip(ops, lay.matrix_shapes)]
                return _apply(lay.matrix, ops, act, recompute)
            return _apply(lay.groups[index], ops, act, recompute)

        return visit

    def _to_matrix(self, final, lay):
        """``W`` from the last group's result (when it was not contracted into matrix
        order: a gate chain or a single operand)."""
        wp = _transpose_to(final, self.plan.final_inds, self.tz.physical_inds)
        if not compiling():
            return self.tz.to_matrix(wp)  # eager: gathers beat a many-axis transpose
        split, perm = lay.unshuffle  # compiled: one permutation the compiler fuses
        w = do("reshape", do("transpose", do("reshape", wp, split), perm),
               (self.tz.padded_out, self.tz.padded_in))
        return w[: self.tz.out_features, : self.tz.in_features]

    def _run_inspecting(self, arrays, capture, hook, memory_limit, physical, recompute):
        """The stage walk with captures, a hook, slicing or the physical tensor."""
        itemsize = _itemsize(next(iter(arrays.values())))
        trees = self.trees(memory_limit, itemsize)
        chains = self._chains if memory_limit is None else [None] * len(self.groups)
        captures: list[StepRecord] = []

        def visit(index, group, ops):
            tree, chain = trees[index], chains[index]
            act = self.activations[group.stage]
            if not (capture or hook):
                run = chain or tree
                return _apply(_Runner(run, group, self._worth_recomputing(run)), ops, act,
                              recompute)
            if capture:
                out = _contract_stepwise(group, tree, ops, captures)
            else:
                out = _contract(chain or tree, ops, group)
            if hook is not None:
                out = hook(group, out)
            return act(out)

        wp = walk(self.groups, Front(arrays), visit).pop(self.plan.final_key)
        wp = _transpose_to(wp, self.plan.final_inds, self.tz.physical_inds)
        result = wp if physical else self.tz.to_matrix(wp)
        return (result, captures) if capture else result

    def _lean_wanted(self, arrays, recompute, device) -> bool:
        """``recompute="lean"``, or ``"auto"`` on the CPU when the ordinary backward pass
        would need more than half the memory available (it peaks at up to
        ``ORDINARY_PEAK_FACTOR`` times the bytes of W on CPU)."""
        if recompute == "lean":
            return True
        if recompute != "auto" or device not in (None, "cpu"):
            return False
        w_bytes = self.tz.padded_out * self.tz.padded_in * _itemsize(
            next(iter(arrays.values())))
        if w_bytes < _LEAN_MIN_BYTES:
            return False
        available = available_memory()
        return available is not None and ORDINARY_PEAK_FACTOR * w_bytes > available / 2

    def _worth_recomputing(self, tree) -> bool:
        """Whether ``recompute="auto"`` recomputes a group run by ``tree`` (a cotengra tree
        or a gate chain) in the backward pass instead of keeping its intermediates."""
        key = id(tree)
        if isinstance(tree, GateChain) and key not in self._worth:
            # every block keeps a copy of the state for its backward pass: keep them while
            # all chains' copies fit in a quarter of the free memory (a recomputed chain runs
            # its blocks twice), else recompute
            chains = sum(c is not None for c in self._chains)
            available = available_memory()
            self._worth[key] = (
                available is None
                or chains * tree.saved_elements() * _CHAIN_ITEMSIZE > available / 4)
        if key not in self._worth:
            steps = list(tree.traverse())
            if not steps:
                self._worth[key] = False
            else:
                out = tree.get_size(steps[-1][0])
                kept = sum(tree.get_size(node) for node, _, _ in steps[:-1])
                self._worth[key] = out >= _RECOMPUTE_MIN and kept >= 2 * out
        return self._worth[key]

    def fused(self, arrays: dict, x, *, memory_limit=None, recompute="auto"):
        """Apply the generated weight to a batch without forming ``W``.

        The input batch is contracted into the final stage, which must be linear (identity
        activation): ``y = x @ W.T`` with ``x`` of shape (B, in_features).

        Parameters
        ----------
        arrays : dict of str -> array
        x : array, shape (B, in_features)
        memory_limit : int, optional
            Bytes; earlier groups over it run sliced.
        recompute : {"auto", True, False}
            As for :meth:`run` (``"lean"`` acts as ``"auto"`` here).

        Returns
        -------
        y : array, shape (B, out_features)
        """
        _check_recompute(recompute)
        if not self.activations[-1].is_identity:
            raise ValueError(
                "the fused schedule needs a linear last stage, but this generator's last "
                f"activation is {self.activations[-1].name!r}; use schedule='materialize'"
            )
        *head, last = self.groups
        front = Front(arrays)
        if memory_limit is None:
            visit = self._visitor(_layout_of(self), recompute, matrix=False)
        else:
            trees = self.trees(memory_limit, _itemsize(x))

            def visit(index, group, ops):
                return _apply(_Runner(trees[index], group, self._worth_recomputing(
                    trees[index])), ops, self.activations[group.stage], recompute)
        walk(head, front, visit)
        return self.fused_last(front.gather(last), x)

    def fused_last(self, ops: list, x):
        """:meth:`fused` from the last group's operands (its cores and the results of the
        groups before it, in ``groups[-1].operands`` order).

        Returns
        -------
        y : array, shape (B, out_features)
        """
        fg = _fused_plan(self, x)
        ops = [do("reshape", op, shape) for op, shape in zip(ops, fg.shapes)]
        xp = do("reshape", _pad_columns(x, self.tz.padded_in), fg.x_shape)
        y = run_steps(fg.steps, [*ops, xp])
        y = do("reshape", y, (-1, self.tz.padded_out))
        # a slice even of every column costs a zero-filled copy in the backward pass
        return y if self.tz.padded_out == self.tz.out_features else y[:, : self.tz.out_features]

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


# ---------------------------------------------------------------------- laid-out groups
@dataclass(frozen=True)
class _Runner:
    """How one group is contracted: a gate chain, a step layout, a single operand's
    transpose, or (sliced or inspected runs) a cotengra tree. Plain data: it is run by
    :func:`_run_group`, since ``torch.compile`` treats it as a constant whose methods it
    cannot guard."""

    run: object                 # GateChain, StepPlan, cotengra tree, or None (one operand)
    group: GroupPlan
    worth_recomputing: bool


def _run_group(runner: _Runner, ops):
    """The group's pre-activation result, in ``group.output`` order."""
    run = runner.run
    if isinstance(run, StepPlan):
        return run_steps(run, ops)
    if isinstance(run, GateChain):
        return GateChain.contract(run, ops)
    if run is None:
        return _transpose_to(ops[0], runner.group.inputs[0], runner.group.output)
    return _contract(run, ops, runner.group)


@dataclass(frozen=True)
class _Layout:
    """Everything a plain run needs, in plain data: made once per Program."""

    groups: tuple
    matrix: _Runner | None        # the last group contracted into matrix order
    matrix_shapes: tuple | None   # its operands' shapes, physical legs split
    unshuffle: tuple              # (split, perm): physical tensor to matrix digits


@trace_constant
def _layout_of(program: Program) -> _Layout:
    """The program's :class:`_Layout` (made on first use; a constant while tracing)."""
    if program._layout is None:
        runners = []
        for index, group in enumerate(program.groups):
            chain, tree = program._chains[index], program._trees[index]
            if chain is not None:
                run = chain
            elif len(group.operands) == 1:
                run = None
            else:
                run = plan_steps(tree)
            runners.append(_Runner(run, group, program._worth_recomputing(chain or tree)))
        last = program.groups[-1]
        matrix = shapes = None
        if program._chains[-1] is None and len(last.operands) > 1:
            mg = program.matrix_group()
            matrix = _Runner(plan_steps(mg.tree), last, program._worth_recomputing(mg.tree))
            shapes = tuple(mg.shapes)
        tz = program.tz
        n = tz.n_sites
        split = tuple(d for pair in zip(tz.out_modes, tz.in_modes) for d in pair)
        perm = tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2))
        program._layout = _Layout(tuple(runners), matrix, shapes, (split, perm))
    return program._layout


@trace_constant
def _fused_plan(program: Program, x):
    """The fused last group for ``x``'s batch size (a constant while tracing: its layout
    reads the batch off the arrays, so under dynamic shapes one plan serves every batch)."""
    return program.fused_group(int(x.shape[0]))


def _apply(runner: _Runner, ops, activation, recompute):
    """Contract one group and activate it; with torch autograd, recompute the group's
    intermediates in the backward pass instead of keeping them when they are large."""
    def fn(*arrays):
        return activation(_run_group(runner, list(arrays)))

    if (recompute is True or (recompute and runner.worth_recomputing)) and _needs_grad(ops):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(fn, *ops, use_reentrant=False)
    return fn(*ops)


def _contract_stepwise(group, tree, ops, captures):
    """Contract a group pair by pair with einsum, recording every intermediate."""
    if len(ops) == 1:
        return _transpose_to(ops[0], group.inputs[0], group.output)
    values = {tree.input_to_node(i): op for i, op in enumerate(ops)}
    node = None
    for record, node, left, right in pairwise_steps(group, tree):
        eq = tree.get_einsum_eq(node)
        record.array = values[node] = do("einsum", eq, values.pop(left), values.pop(right))
        captures.append(record)
    # the root's index order is the tree's output order, which equals group.output
    return values[node]


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
        # the batch is read off x (-1): the layout serves any batch size, which is what a
        # compiled forward pass with a dynamic batch needs
        self.x_shape = (-1, *(sizes[n] for n in in_legs))
        self.output = ("batch", *out_legs)
        self.tree = contraction_tree([*self.inputs, self.x_inds], self.output, sizes, optimize)
        # the tree's own index names are canonical: the batch is its output's first index
        self.steps = plan_steps(self.tree, free=self.tree.output[0])


# bytes per element assumed when deciding whether a gate chain's states fit (float32)
_CHAIN_ITEMSIZE = 4
# groups whose output has fewer elements than this are never recomputed
_RECOMPUTE_MIN = 1 << 16
#: peak resident memory of the ordinary forward+backward pass in multiples of W's bytes, an
#: upper bound from the brick-wall Q=24 benchmark (19-30x with the tuned allocator)
ORDINARY_PEAK_FACTOR = 32
# below this size W never triggers the automatic switch to the lean pass
_LEAN_MIN_BYTES = 16 << 20


def _check_recompute(recompute) -> None:
    if not any(recompute is r if isinstance(r, bool) else recompute == r for r in RECOMPUTE):
        raise ValueError(f"unknown recompute {recompute!r}; use one of {RECOMPUTE}")


def _needs_grad(ops) -> bool:
    if not any(getattr(op, "requires_grad", False) for op in ops):
        return False
    import torch  # an array that requires a gradient is a torch tensor

    return torch.is_grad_enabled()


def _contract(tree, ops, group):
    """Contract a group's operands with its tree (or gate chain) into ``group.output`` order."""
    if isinstance(tree, GateChain):
        return tree.contract(ops)
    if len(ops) == 1:
        return _transpose_to(ops[0], group.inputs[0], group.output)
    if tree.sliced_inds:
        return tree.contract(ops)
    return run_steps(plan_steps(tree), ops)


def _transpose_to(arr, have, want):
    have, want = tuple(have), tuple(want)
    if have == want:
        return arr
    return do("transpose", arr, tuple(have.index(ix) for ix in want))


def _pad_columns(x, width):
    cols = x.shape[1]
    if cols == width:
        return x
    if is_torch(x):
        import torch

        return torch.nn.functional.pad(x, (0, width - cols))
    xp = do("zeros", (x.shape[0], width), like=x, dtype=x.dtype)
    xp[:, :cols] = x
    return xp


def _itemsize(arr) -> int:
    size = getattr(arr, "itemsize", None)
    if size is None:
        size = arr.element_size()
    return int(size)
