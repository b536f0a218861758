"""Fast execution of gate chains: one large state tensor and many small two-leg gates.

A brick-wall layer is a state of ``Q`` legs followed by ``Q - 1`` gates of shape
(d_a, d_b, d_a, d_b) on neighbouring legs. Contracting such a group pairwise (as a generic
tensor-network contractor does) moves the whole state through a transposition for every
step. Here neighbouring gates are first multiplied into blocks acting on ``w`` consecutive
legs (a small matrix), and each block is applied to the state viewed as
``(left, 2**w, right)`` with one batched matrix product: the state is read and written once
per block and never transposed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import arrays as ar
from . import gate_chain_op, gate_kernels

__all__ = ["GateChain", "detect_gate_chain"]

# a block acts on at most this many elements along the state (128: 7 qubits)
MAX_BLOCK_DIM = 128
# cost of one pass over the state, in units of one more element of block width: a block
# costs one pass forward and about two backward (its matrix's gradient reads two states),
# while its arithmetic grows with its width. Chosen by timing forward+backward of a 24-qubit
# brick-wall of depth 3 over a range of values (benchmarks/bench_block_partition.py): the
# same split was fastest at one and at two threads, so the cost does not scale with threads
_PASS_COST = 144
# below this many columns a batch of small matrix products is slower than one einsum
_MIN_BATCHED_COLUMNS = 64
# a block matrix's gradient with at most this many (width * trailing) columns is one product
_WIDE_GRAM_MAX = 256
# elements of the per-batch results a block matrix's gradient may sum
_GRAM_BATCH_MAX = 1 << 24


@dataclass(frozen=True)
class _Block:
    lo: int                      # first state axis the block acts on
    dims: tuple[int, ...]        # dimensions of the axes lo..lo+w-1
    gates: tuple[tuple[int, int], ...]  # (operand index, first axis relative to lo)


@dataclass(frozen=True)
class GateChain:
    """How to run one stage group as blocks of gates applied to a state.

    Attributes
    ----------
    state : int
        Operand index of the state.
    state_order : tuple of int
        Permutation putting the state's axes in line order.
    line_dims : tuple of int
        Dimension of each line (state axis), in line order.
    blocks : tuple of _Block
    out_perm : tuple of int
        Permutation from line order to the group's output order.
    """

    state: int
    state_order: tuple[int, ...]
    line_dims: tuple[int, ...]
    blocks: tuple[_Block, ...]
    out_perm: tuple[int, ...]

    def ssa_path(self) -> list[tuple[int, int]]:
        """The same computation as pairwise contractions: each block's gates merged in order,
        then the blocks applied to the state (for cost reports and step captures)."""
        n = 1 + sum(len(b.gates) for b in self.blocks)
        nxt, state, path = n, self.state, []
        for block in self.blocks:
            merged = block.gates[0][0]
            for index, _ in block.gates[1:]:
                path.append((merged, index))
                merged, nxt = nxt, nxt + 1
            path.append((state, merged))
            state, nxt = nxt, nxt + 1
        return path

    def gate_operands(self) -> tuple[int, ...]:
        """Operand index of every gate, in application order."""
        return tuple(index for block in self.blocks for index, _ in block.gates)

    def saved_elements(self) -> int:
        """Elements autograd keeps for the backward pass: one state per block (per phase
        when the CPU kernels run it, :mod:`adntn_lab.engine.gate_kernels`)."""
        states = len(self.blocks)
        if gate_kernels.available():
            plan = gate_kernels.phases_for_chain(self)
            if plan is not None:
                states = len(plan.phases)
        return states * math.prod(self.line_dims)

    def contract(self, ops):
        """Apply the chain to the operands (numpy, torch or CuPy arrays)."""
        state = ops[self.state]
        if self.state_order != tuple(range(len(self.state_order))):
            state = ar.do("transpose", state, self.state_order)
        if ar.is_torch(state) and ar.compiling():
            signature = _compiled_kernel_lines(self, state)
            if signature is not None:  # the kernels as custom operators of the graph
                # no method calls on the chain here: dynamo cannot guard on its methods
                gates = [ops[index] for block in self.blocks for index, _ in block.gates]
                return _finish(self, gate_chain_op.apply(signature, state, gates))
        plan = gate_kernels.torch_phases(self, state) if ar.is_torch(state) else None
        if plan is not None:
            gates = [ops[i] for i in self.gate_operands()]
            if _differentiating_any(gates, state):
                state = _kernel_chain().apply(plan, state, *gates)
            else:
                state = _run_phases(plan, state, gates)
            return _finish(self, state)
        total = math.prod(self.line_dims)
        for block in self.blocks:
            width = math.prod(block.dims)
            left = math.prod(self.line_dims[: block.lo])
            matrix = _block_matrix(block, ops)
            right = total // (left * width)
            if _differentiating(matrix, state):
                state = _block_product(state.device.type).apply(matrix, state, left, width,
                                                                right)
            else:
                state = _apply_block(matrix, state, left, width, right)
        return _finish(self, state)


def _compiled_kernel_lines(chain: GateChain, state):
    """The kernels' signature for ``chain`` inside ``torch.compile`` (a float32/float64 CPU
    state, not ``torch.export``, whose programs keep standard operators), or None."""
    import torch

    if (torch.compiler.is_exporting() or state.device.type != "cpu"
            or state.dtype not in (torch.float32, torch.float64)):
        return None
    lines = tuple(block.lo + rel for block in chain.blocks for _, rel in block.gates)
    return gate_chain_op.kernel_lines(tuple(chain.line_dims), lines)


def _finish(chain: GateChain, state):
    """The chain's output in the group's index order."""
    state = ar.do("reshape", state, chain.line_dims)
    if chain.out_perm != tuple(range(len(chain.out_perm))):
        state = ar.do("transpose", state, chain.out_perm)
    return state


def _differentiating_any(gates, state) -> bool:
    import torch

    return torch.is_grad_enabled() and (state.requires_grad
                                        or any(g.requires_grad for g in gates))


def _run_phases(plan, state, gates):
    """The chain applied by the CPU kernels to a copy of ``state`` (no autograd)."""
    import torch

    with torch.no_grad():
        out = state.detach().reshape(-1).clone(memory_format=torch.contiguous_format)
        gate_kernels.apply_phases_(out.numpy(), gate_kernels.gate_matrix(gates, out.dtype),
                                   plan)
    return out


@functools.cache
def _kernel_chain():
    """A torch autograd function running a qubit chain with the CPU kernels: the forward pass
    keeps each phase's input (one state per phase), the backward pass runs each phase's
    backward kernel (:func:`adntn_lab.engine.gate_kernels.phase_backward_`)."""
    import torch

    class KernelChain(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type="cpu")
        def forward(ctx, plan, state, *gates):
            ctx.plan = plan
            matrix = gate_kernels.gate_matrix(gates, state.dtype)
            inputs = [state.detach().reshape(-1).contiguous()]
            for k in range(len(plan.phases)):  # each phase into a new state: all are kept
                out = torch.empty_like(inputs[-1])
                gate_kernels.apply_phases_(inputs[-1].numpy(), matrix, plan, range(k, k + 1),
                                           out=out.numpy())
                inputs.append(out)
            work = inputs.pop()
            # saved as autograd's own, so that saved-tensor hooks (offloading) see them
            ctx.save_for_backward(*inputs)
            ctx.matrix, ctx.shape = matrix, state.shape
            ctx.gate_dtype = gates[0].dtype
            return work

        @staticmethod
        @torch.amp.custom_bwd(device_type="cpu")
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            plan, inputs, matrix = ctx.plan, ctx.saved_tensors, ctx.matrix
            g = grad.detach().reshape(-1).contiguous()
            grad_gates = np.zeros(matrix.shape, dtype=matrix.dtype)
            for k in range(len(plan.phases) - 1, -1, -1):
                # the incoming gradient is autograd's: the first phase writes a new one
                out = torch.empty_like(g) if k == len(plan.phases) - 1 else g
                gate_kernels.phase_backward_(inputs[k].numpy(), g.numpy(), matrix, plan, k,
                                             grad_gates, out=out.numpy())
                g = out
            gates = torch.from_numpy(grad_gates).to(ctx.gate_dtype).reshape(-1, 2, 2, 2, 2)
            state_grad = g.view(ctx.shape) if ctx.needs_input_grad[1] else None
            return (None, state_grad, *(gates[k] if ctx.needs_input_grad[2 + k] else None
                                        for k in range(gates.shape[0])))

    return KernelChain


def _apply_block(matrix, state, left: int, width: int, right: int):
    """``out[x, a, r] = sum_b matrix[a, b] state[x, b, r]`` with the fastest product for the
    shape (measured on CPU: thin batches are slow, an expanded batch beats broadcasting)."""
    if right == 1:  # one (left, width) x (width, width) product
        view = ar.do("reshape", state, (left, width))
        return ar.do("matmul", view, ar.do("transpose", matrix, (1, 0)))
    view = ar.do("reshape", state, (left, width, right))
    if left == 1:
        return ar.do("matmul", matrix, view[0])
    if right < _MIN_BATCHED_COLUMNS:
        return ar.do("einsum", "ab,xbr->xar", matrix, view)
    if ar.is_torch(view):
        return matrix.expand(left, width, width).bmm(view)
    return ar.do("matmul", matrix, view)


def _gram_method(left: int, width: int, right: int) -> str:
    """How :func:`_block_gram` computes for a (left, width, right) view: ``"rows"`` or
    ``"columns"`` (one product, a side being 1), ``"batch"`` (a summed batch of products,
    when the trailing axis is at least the block's width and the batch of results at most
    ``_GRAM_BATCH_MAX`` elements), ``"folded"`` (one product with the trailing axis folded
    into the block's columns, when they are few) or ``"moved"`` (the trailing axis moved
    first)."""
    if left == 1:
        return "rows"
    if right == 1:
        return "columns"
    if right >= width and left * width * width <= _GRAM_BATCH_MAX:
        return "batch"
    if width * right <= _WIDE_GRAM_MAX:
        return "folded"
    return "moved"


def _block_gram(grad, state, left: int, width: int, right: int):
    """``sum_{x,r} grad[x, a, r] state[x, b, r]``, the gradient of a block's matrix, by the
    fastest product for the shape (:func:`_gram_method`)."""
    method = _gram_method(left, width, right)
    if method == "rows":
        return ar.do("matmul", ar.do("reshape", grad, (width, right)),
                     ar.do("transpose", ar.do("reshape", state, (width, right)), (1, 0)))
    if method == "columns":
        return ar.do("matmul", ar.do("transpose", ar.do("reshape", grad, (left, width)), (1, 0)),
                     ar.do("reshape", state, (left, width)))
    g3 = ar.do("reshape", grad, (left, width, right))
    s3 = ar.do("reshape", state, (left, width, right))
    if method == "batch":
        return ar.do("matmul", g3, ar.do("swapaxes", s3, 1, 2)).sum(0)
    if method == "folded":  # (width*right)^2 products, then the r-diagonal
        cols = width * right
        full = ar.do("matmul", ar.do("transpose", ar.do("reshape", g3, (left, cols)), (1, 0)),
                     ar.do("reshape", s3, (left, cols)))
        return ar.do("einsum", "arbr->ab", ar.do("reshape", full, (width, right, width, right)))
    g2 = ar.do("reshape", ar.do("swapaxes", g3, 1, 2), (left * right, width))
    s2 = ar.do("reshape", ar.do("swapaxes", s3, 1, 2), (left * right, width))
    return ar.do("matmul", ar.do("transpose", g2, (1, 0)), s2)


def _differentiating(matrix, state) -> bool:
    """Whether torch autograd records this block product in eager mode (a compiled graph
    differentiates the plain product itself)."""
    if not ar.is_torch(state) or ar.compiling():
        return False
    import torch  # an array that is a torch tensor means torch is imported

    return torch.is_grad_enabled() and (state.requires_grad or matrix.requires_grad)


@functools.cache
def _block_product(device_type: str):
    """A torch autograd function applying a block whose backward is one product for the
    state's gradient and one for the matrix's (:func:`_block_gram`): autograd's own backward of
    the batched product repeats the matrix per batch and of the einsum path transposes the
    state, several times slower. One class per device type, for autocast's decorators."""
    import torch

    class BlockProduct(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type=device_type)
        def forward(ctx, matrix, state, left, width, right):
            ctx.save_for_backward(matrix, state)
            ctx.dims = (left, width, right)
            return _apply_block(matrix, state, left, width, right)

        @staticmethod
        @torch.amp.custom_bwd(device_type=device_type)
        def backward(ctx, grad):
            matrix, state = ctx.saved_tensors
            left, width, right = ctx.dims
            grad_matrix = grad_state = None
            if ctx.needs_input_grad[0]:
                grad_matrix = _block_gram(grad, state, left, width, right)
            if ctx.needs_input_grad[1]:
                grad_state = _apply_block(matrix.transpose(0, 1), grad.contiguous(), left,
                                          width, right).reshape(state.shape)
            return grad_matrix, grad_state, None, None, None

    return BlockProduct


def _block_matrix(block: _Block, ops):
    """The block's gates multiplied into one (width, width) matrix: rows are outputs."""
    w = len(block.dims)
    width = math.prod(block.dims)
    like = ops[block.gates[0][0]]
    eye = ar.do("eye", width, like=like, dtype=like.dtype)
    # axes 0..w-1 are the block's current lines, axis w enumerates the block's inputs
    tensor = ar.do("reshape", eye, (*block.dims, width))
    for index, rel in block.gates:
        gate = ops[index]  # (in_a, in_b, out_a, out_b)
        tensor = ar.do("tensordot", gate, tensor, ((0, 1), (rel, rel + 1)))
        # the gate's outputs now lead; move them back to positions rel, rel + 1
        order = list(range(2, 2 + rel)) + [0, 1] + list(range(2 + rel, w + 1))
        tensor = ar.do("transpose", tensor, tuple(order))
    return ar.do("reshape", tensor, (width, width))


def _line_order(n_lines: int, edges: list[tuple[int, int]]) -> list[int] | None:
    """Order the lines so that every gate acts on two neighbours, in its own (a, b) order."""
    neighbours: dict[int, set[int]] = {k: set() for k in range(n_lines)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    if any(len(v) > 2 for v in neighbours.values()):
        return None
    ends = [k for k, v in neighbours.items() if len(v) == 1]
    for start in ends:
        order, prev = [start], None
        while True:
            nxt = [k for k in neighbours[order[-1]] if k != prev]
            if not nxt:
                break
            prev = order[-1]
            order.append(nxt[0])
        position = {line: i for i, line in enumerate(order)}
        if len(order) == n_lines and all(position[b] == position[a] + 1 for a, b in edges):
            return order
    return None


def detect_gate_chain(inputs, output, size_dict, max_block_dim: int = MAX_BLOCK_DIM):
    """Recognise a group made of one large tensor and two-in/two-out gates on neighbouring
    lines, applied in operand order.

    Parameters
    ----------
    inputs : sequence of tuple of str
        Indices of each operand; a gate's are (in_a, in_b, out_a, out_b).
    output : tuple of str
    size_dict : dict
    max_block_dim : int
        Largest dimension of a block of merged gates.

    Returns
    -------
    GateChain or None
    """
    sizes = [math.prod(size_dict[ix] for ix in term) for term in inputs]
    state = max(range(len(inputs)), key=sizes.__getitem__)
    gates = [k for k in range(len(inputs)) if k != state]
    if not gates or any(len(inputs[k]) != 4 for k in gates) or sizes[state] < 1 << 14:
        return None
    # follow every line (state axis) through the gates
    current = {ix: line for line, ix in enumerate(inputs[state])}
    edges = []
    for k in gates:
        a, b, c, d = inputs[k]
        if a not in current or b not in current:
            return None
        if size_dict[c] != size_dict[a] or size_dict[d] != size_dict[b]:
            return None
        la, lb = current.pop(a), current.pop(b)
        edges.append((la, lb))
        current[c], current[d] = la, lb
    if sorted(current) != sorted(output):
        return None
    order = _line_order(len(inputs[state]), edges)
    if order is None:
        return None
    position = {line: i for i, line in enumerate(order)}
    line_dims = tuple(size_dict[inputs[state][line]] for line in order)
    applied = [(k, position[la]) for k, (la, _) in zip(gates, edges)]
    blocks = [_make_block(run, line_dims) for run in _partition(applied, line_dims,
                                                                 max_block_dim)]
    final = {line: ix for ix, line in current.items()}
    names_in_order = [final[line] for line in order]
    out_perm = tuple(names_in_order.index(ix) for ix in output)
    return GateChain(state, tuple(order), line_dims, tuple(blocks), out_perm)


def _partition(applied, line_dims, max_block_dim):
    """Split the gates (in application order) into consecutive runs, each merged into one
    block, minimising the summed :func:`_block_cost` (dynamic programming over cut points).

    Returns
    -------
    list of list of (operand index, first line)
    """
    total = math.prod(line_dims)
    pass_cost = _pass_cost()
    n = len(applied)
    best = [0.0] + [math.inf] * n   # best[j]: cheapest split of the first j gates
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        lo, hi = math.inf, -1
        for i in range(j - 1, -1, -1):   # run applied[i:j]
            p = applied[i][1]
            lo, hi = min(lo, p), max(hi, p + 2)
            width = math.prod(line_dims[lo:hi])
            if width > max_block_dim and i < j - 1:
                break
            right = total // (math.prod(line_dims[:lo]) * width)
            cost = _block_cost(width, right, pass_cost)
            if best[i] + cost < best[j]:
                best[j], cut[j] = best[i] + cost, i
    runs, j = [], n
    while j > 0:
        runs.append(applied[cut[j]:j])
        j = cut[j]
    return runs[::-1]


def _pass_cost() -> float:
    """:data:`_PASS_COST`, read at call time (the benchmark varies it)."""
    return _PASS_COST


def _block_cost(width: int, right: int, pass_cost: float = _PASS_COST) -> float:
    """Relative time of applying a (width, width) block to a state viewed as
    (left, width, right), from measurements on one x86 core (2**24 elements: about
    6 + 0.31 width ms; thin trailing dimensions make the batched product inefficient)."""
    cost = pass_cost + width
    if right == 1:
        if width <= 8:  # a tall product with a tiny inner dimension
            cost += 2 * pass_cost
    elif right <= 8:
        cost += 3 * pass_cost + width
    elif right < _MIN_BATCHED_COLUMNS:
        cost += min(1.5 * width, 80)
    return cost


def _make_block(run, line_dims) -> _Block:
    lo = min(p for _, p in run)
    hi = max(p + 2 for _, p in run)
    return _Block(lo, tuple(line_dims[lo:hi]), tuple((k, p - lo) for k, p in run))
