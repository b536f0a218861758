"""Torch and CuPy on one GPU: zero-copy DLPack views and CuPy contractions inside autograd.

Training uses torch; the contraction of the generator can run in CuPy instead, with torch
still owning the parameters and the optimiser:

- :func:`to_cupy` and :func:`to_torch` view the same GPU memory from the other library
  (DLPack, no copy). CuPy work is queued on torch's current CUDA stream, so no
  synchronisation is needed between the two.
- :func:`contract_weight` generates ``W`` from a dict of torch tensors with a
  :class:`torch.autograd.Function` whose forward contraction runs in CuPy. Its backward comes
  in two modes:

  ``"adjoint"``
      The forward keeps every pairwise intermediate (as torch's autograd would) and the
      backward runs the adjoint contractions stage by stage in CuPy: for each pairwise step
      ``C = A * B`` it forms ``dA = dC * B`` and ``dB = A * dC`` as matmul-shaped
      contractions, and each activation's derivative is taken by torch on a zero-copy view of
      the pre-activation.
  ``"recompute"``
      The forward keeps nothing; the backward recomputes the contraction in torch on the
      same device with autograd and returns its gradients. Lowest memory, one extra forward.

On tensors on the CPU the same function runs its contractions in numpy (zero-copy views of the
torch tensors), which is how the adjoint algebra is checked on machines without a GPU.
Whether the CuPy path pays over plain torch on CUDA is measured by ``benchmarks/gpu_bench.py``.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
import torch
from cotengra.contract import einsum as _pair_einsum

from .backends import array_namespace, check_arrays, require_cupy
from .walk import Front, walk

__all__ = [
    "MODES",
    "contract_weight",
    "engine_for",
    "layer_weight",
    "to_cupy",
    "to_torch",
    "torch_stream",
]

#: Backward modes of :func:`contract_weight`.
MODES = ("adjoint", "recompute")


# ---------------------------------------------------------------------- DLPack bridge
def to_cupy(tensor: torch.Tensor):
    """View a CUDA torch tensor as a CuPy array without copying.

    Parameters
    ----------
    tensor : torch.Tensor on a CUDA device
        Any shape and strides; autograd history is dropped (the view is detached).

    Returns
    -------
    cupy.ndarray
        Same shape, dtype and memory.

    Raises
    ------
    TypeError
        If ``tensor`` is not a torch tensor or not on a CUDA device.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_cupy needs a torch tensor, got {type(tensor).__name__}")
    if tensor.device.type != "cuda":
        raise TypeError(
            f"to_cupy needs a tensor on a CUDA device, got one on {tensor.device}; move it with "
            "tensor.cuda(), or use tensor.numpy() for a CPU array"
        )
    cupy = require_cupy()
    return cupy.from_dlpack(tensor.detach())


def to_torch(array) -> torch.Tensor:
    """View a CuPy array (or a numpy array) as a torch tensor without copying.

    Parameters
    ----------
    array : cupy.ndarray or numpy.ndarray

    Returns
    -------
    torch.Tensor
        Same shape, dtype and memory, on the array's device.
    """
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    if type(array).__module__.startswith("cupy"):
        return torch.from_dlpack(array)
    raise TypeError(f"to_torch needs a CuPy or numpy array, got {type(array).__name__}")


def _as_array(tensor: torch.Tensor):
    """Zero-copy numpy (CPU) or CuPy (CUDA) view of a tensor."""
    if tensor.device.type == "cpu":
        return tensor.detach().numpy()
    return to_cupy(tensor)


@contextlib.contextmanager
def torch_stream(device):
    """Make CuPy run on torch's current stream of ``device`` (no-op on the CPU).

    Work queued by CuPy inside the context is ordered with torch's work without any
    synchronisation, and DLPack exchanges inside it need no stream handshake.
    """
    device = torch.device(device)
    if device.type != "cuda":
        yield
        return
    cupy = require_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield


def engine_for(device) -> str:
    """The array library that runs contractions for tensors on ``device``.

    Returns ``"cupy"`` for a CUDA device and ``"numpy"`` for the CPU.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return "cupy"
    if kind == "cpu":
        return "numpy"
    raise TypeError(f"no array engine for torch device {device}; use a CUDA or CPU tensor")


# ---------------------------------------------------------------------- compiled steps
class _Schedule:
    """Per-group pairwise steps of a :class:`~adntn_lab.engine.program.Program`, in SSA form.

    Each entry of ``groups`` is ``(group, shapes, steps, perm)``. For a group with ``n``
    operands, slots ``0..n-1`` hold the operands and each step ``(p, l, r, eq)`` writes slot
    ``p = einsum(eq, slot l, slot r)``; the last slot is the group's result. A single-operand
    group is a transpose ``perm`` (``steps`` is None). The last group is contracted, as
    :meth:`Program.run` does, straight into matrix order: its operands are first reshaped to
    ``shapes`` (physical legs split into row and column legs) and its result is reshaped to
    ``matrix_shape``; ``shapes`` is None for the other groups.
    """

    def __init__(self, program):
        *head, last = program.groups
        self.groups = []
        for group, tree in zip(head, program.trees()):
            self.groups.append((group, None, *_compile(group.inputs, group.output, tree)))
        mg = program.matrix_group()
        self.groups.append((last, tuple(mg.shapes), *_compile(mg.inputs, mg.output, mg.tree)))
        tz = program.tz
        self.matrix_shape = (tz.padded_out, tz.padded_in)
        self.crop = (tz.out_features, tz.in_features)


def _compile(inputs, output, tree):
    """``(steps, perm)`` of one group (see :class:`_Schedule`)."""
    if len(inputs) == 1:
        perm = tuple(inputs[0].index(ix) for ix in output)
        return None, (None if perm == tuple(range(len(perm))) else perm)
    slots = {tree.input_to_node(i): i for i in range(len(inputs))}
    steps = []
    for p, (node, left, right) in enumerate(tree.traverse(), start=len(slots)):
        steps.append((p, slots.pop(left), slots.pop(right), tree.get_einsum_eq(node)))
        slots[node] = p
    return steps, None


_SCHEDULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _schedule(program) -> _Schedule:
    sched = _SCHEDULES.get(program)
    if sched is None:
        sched = _SCHEDULES[program] = _Schedule(program)
    return sched


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


# ---------------------------------------------------------------------- adjoint algebra
def _grad_operand(out, g, other_inds, other, target, shape):
    """Gradient of one operand of ``einsum(f"{target},{other_inds}->{out}")``."""
    avail = set(out) | set(other_inds)
    kept = "".join(c for c in target if c in avail)
    r = _pair_einsum(f"{out},{other_inds}->{kept}", g, other)
    if kept != target:  # indices summed within this operand alone: broadcast back
        pos = [target.index(c) for c in kept]
        full = [1] * len(target)
        for p, d in zip(pos, r.shape):
            full[p] = d
        xp = array_namespace(r)
        r = xp.ascontiguousarray(xp.broadcast_to(r.reshape(tuple(full)), tuple(shape)))
    return r


def _vjp_pair(eq, a, b, g, need_a, need_b):
    """Gradients of ``c = einsum(eq, a, b)`` given ``g = dL/dc`` (``None`` where not needed)."""
    lhs, out = eq.split("->")
    ia, ib = lhs.split(",")
    ga = _grad_operand(out, g, ib, b, ia, a.shape) if need_a else None
    gb = _grad_operand(out, g, ia, a, ib, b.shape) if need_b else None
    return ga, gb


def _torch_vjp(fn, x, g):
    """``dL/dx`` for ``y = fn(x)`` given ``g = dL/dy``, computed by torch on zero-copy views."""
    xt = to_torch(x).detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(xt)
    (gx,) = torch.autograd.grad(y, xt, to_torch(g))
    return _as_array(gx)


def _transpose(arr, perm):
    return arr if perm is None else arr.transpose(perm)


def _forward(program, arrays: dict, need: dict, keep: bool):
    """Generate ``W`` from numpy or CuPy arrays, optionally keeping what the adjoint needs.

    Returns
    -------
    W : array, shape (out_features, in_features)
    tape : list
        Per group that leads to a requested gradient: what its adjoint needs.
    """
    sched = _schedule(program)
    tape = []

    def visit(index, group, operands):
        _, shapes, steps, perm = sched.groups[index]
        ops = [op for op, _ in operands]
        op_need = [flag for _, flag in operands]
        in_shapes = None
        if shapes is not None:
            in_shapes = [op.shape for op in ops]
            ops = [op.reshape(shape) for op, shape in zip(ops, shapes)]
        if steps is None:
            out, slots = _transpose(ops[0], perm), None
        else:
            slots = list(ops)
            for _, left, right, eq in steps:
                slots.append(_pair_einsum(eq, slots[left], slots[right]))
            out = slots[-1]
        out_shape = None
        if shapes is not None:
            out_shape = out.shape
            out = out.reshape(sched.matrix_shape)
        act = program.activations[group.stage]
        group_need = any(op_need)
        if keep and group_need:
            tape.append((group, steps, perm, slots, op_need, in_shapes, out_shape,
                         None if act.is_identity else (act, out)))
        return act(out), group_need

    # front values are (array, whether a requested gradient flows through it)
    leaves = {k: (arrays[k], need[k]) for k in arrays}
    final, _ = walk(program.groups, Front(leaves), visit).pop(program.final_key)
    rows, cols = sched.crop
    return final[:rows, :cols], tape


def _backward(program, tape, gW, names):
    """Adjoint of :func:`_forward`: gradients of the cores in ``names`` (``None`` if unused)."""
    cores = set(names)
    sched = _schedule(program)
    if tuple(gW.shape) != sched.matrix_shape:  # W was cropped from the padded matrix
        full = array_namespace(gW).zeros(sched.matrix_shape, dtype=gW.dtype)
        full[: gW.shape[0], : gW.shape[1]] = gW
        gW = full
    gfront = {sched.groups[-1][0].key: gW}
    grads = {}
    for group, steps, perm, slots, op_need, in_shapes, out_shape, pre in reversed(tape):
        g = gfront.pop(group.key)
        if pre is not None:
            act, before = pre
            g = _torch_vjp(act, before, g)
        if out_shape is not None:
            g = g.reshape(out_shape)
        n = len(group.operands)
        if steps is None:
            op_grads = [_transpose(g, None if perm is None else _inverse(perm))]
        else:
            need = list(op_need)
            for _, left, right, _ in steps:
                need.append(need[left] or need[right])
            gslots: dict[int, object] = {len(slots) - 1: g}
            for p, left, right, eq in reversed(steps):
                if not need[p]:
                    continue
                gp = gslots.pop(p)
                ga, gb = _vjp_pair(eq, slots[left], slots[right], gp, need[left], need[right])
                if ga is not None:
                    gslots[left] = ga
                if gb is not None:
                    gslots[right] = gb
            op_grads = [gslots.get(i) for i in range(n)]
        if in_shapes is not None:
            op_grads = [None if gop is None else gop.reshape(shape)
                        for gop, shape in zip(op_grads, in_shapes)]
        for name, gop, needed in zip(group.operands, op_grads, op_need):
            if needed:  # a core when it is among the arrays, else an earlier group's result
                (grads if name in cores else gfront)[name] = gop
    return [grads.get(name) for name in names]


# ---------------------------------------------------------------------- autograd
class _ArrayContraction(torch.autograd.Function):
    """``W`` from torch tensors, contracted by CuPy (CUDA) or numpy (CPU)."""

    # CuPy and numpy have no bfloat16: under CUDA autocast the cores arrive as float32
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, program, names, mode, *tensors):
        device = tensors[0].device
        need = dict(zip(names, ctx.needs_input_grad[3:]))
        keep = mode == "adjoint" and any(need.values())
        with torch_stream(device):
            arrays = {n: _as_array(t) for n, t in zip(names, tensors)}
            if keep:
                W, tape = _forward(program, arrays, need, keep=True)
            else:
                W, tape = program.run(arrays), None
            out = to_torch(W)
        ctx.program, ctx.names, ctx.mode, ctx.tape = program, names, mode, tape
        ctx.device = device
        if mode == "recompute":
            ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, gW):
        flags = ctx.needs_input_grad[3:]
        if ctx.mode == "recompute":
            tensors = ctx.saved_tensors
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(f) for t, f in zip(tensors, flags)]
                W = ctx.program.run(dict(zip(ctx.names, leaves)))
                wanted = [leaf for leaf, f in zip(leaves, flags) if f]
                got = iter(torch.autograd.grad(W, wanted, gW, allow_unused=True))
            grads = [next(got) if f else None for f in flags]
            return (None, None, None, *grads)
        if ctx.tape is None:
            raise RuntimeError(
                "contract_weight(mode='adjoint') frees its intermediates after the first "
                "backward; to backpropagate twice through one W use mode='recompute'"
            )
        with torch_stream(ctx.device):
            g = _as_array(gW.contiguous())
            core_grads = _backward(ctx.program, ctx.tape, g, ctx.names)
            grads = [None if (c is None or not f) else to_torch(c)
                     for c, f in zip(core_grads, flags)]
        ctx.tape = None
        return (None, None, None, *grads)


def contract_weight(program, arrays: dict, *, mode: str = "adjoint") -> torch.Tensor:
    """Generate ``W`` from torch tensors with the contraction run by CuPy (or numpy on CPU).

    Parameters
    ----------
    program : adntn_lab.engine.program.Program
        A generator's compiled program (``gen.program``).
    arrays : dict of str -> torch.Tensor
        One tensor per core, all on one device (e.g. ``layer.generated.arrays()``).
    mode : {"adjoint", "recompute"}
        How the backward is computed; see the module docstring.

    Returns
    -------
    W : torch.Tensor, shape (out_features, in_features)
        On the tensors' device, differentiable with respect to every tensor that requires a
        gradient.

    Raises
    ------
    TypeError
        If the tensors are not torch tensors on one device.
    ValueError
        For an unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if torch.compiler.is_compiling():
        raise ValueError(
            "contract_weight hands the contraction to CuPy (numpy on the CPU), which "
            "torch.compile cannot trace; call it outside the compiled region, or compile the "
            "layer itself, whose torch contraction traces as one graph"
        )
    backend, device = check_arrays(arrays, "contract_weight")
    if backend != "torch":
        raise TypeError(
            f"contract_weight takes torch tensors (it returns a differentiable torch tensor), "
            f"got {backend} arrays; for {backend} arrays call program.run(arrays) directly"
        )
    engine_for(device)  # CPU or CUDA only
    names = tuple(arrays)
    return _ArrayContraction.apply(program, names, mode, *(arrays[n] for n in names))


def layer_weight(layer, *, mode: str = "adjoint") -> torch.Tensor:
    """The generated weight of an ``ADNTNLinear`` (or its ``GeneratedWeight``), contracted by
    CuPy on CUDA (numpy on the CPU) with gradients flowing to its cores.

    Returns
    -------
    W : torch.Tensor, shape (out_features, in_features)
    """
    generated = getattr(layer, "generated", layer)
    if not hasattr(generated, "arrays") or not hasattr(generated, "generator"):
        raise TypeError(f"layer_weight needs an ADNTNLinear or GeneratedWeight, got "
                        f"{type(layer).__name__}")
    return contract_weight(generated.generator.program, generated.arrays(), mode=mode)
