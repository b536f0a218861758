"""Generating ``W`` under torch autograd with the least memory: ``recompute="lean"``.

The ordinary backward pass keeps each stage's activated state for the next stage's backward,
and a checkpointed gate chain keeps every block's input while it is differentiated. Here the
forward pass keeps nothing but the cores (and, the kept way below, each gate chain's input
state). The backward pass walks the groups in reverse and, for each one,

- for a gate chain, one of two ways, chosen once per pass from the memory available then:

  - *kept* (when every block input of the largest chain fits in half of it): take the
    chain's input as the forward pass kept it, keep each block's input on the way forward,
    then walk back through them, taking each block matrix's gradient as one product and
    applying the block's transpose to the gradient, the backward products written into the
    buffers the walk frees. ``n`` block applications for ``n`` blocks, ``n + 3`` states alive;
  - *swept*: from last block to first, rebuild the chain's input from the cores into one
    buffer (earlier stages run with their own chains in place) and apply blocks ``0..b-1``
    to it in place, chunk by chunk, before block ``b``. ``O(n^2)`` block applications (and
    ``n`` rebuilds), one state alive;
- for any other group: differentiates a recomputed contraction with autograd.

Activations are differentiated chunk by chunk in place, and ``W``'s reordering drops each
intermediate as soon as the next exists. In the swept way large blocks are mapped fresh and
free heap pages are handed back between phases (:mod:`adntn_lab.engine.allocator`), so the
resident set follows what is alive: for a 24-qubit brick-wall layer, 3.2x the bytes of ``W``
at the peak (``W``, its gradient and the working state) against 12-30x for the ordinary
pass. The kept way lets the heap reuse its pages instead, since every freshly mapped state
page-faults all of its memory in again.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from ..tensorize import _FAST_UNSHUFFLE_MIN, _unshuffle_plan, unshuffle_rows_columns
from ..utils import available_memory
from . import gate_kernels, matrix_layout
from .allocator import memory_first, release_free_memory
from .gate_chains import GateChain, _apply_block, _block_gram, _block_matrix
from .matmul_steps import contract_tree
from .walk import Front, walk

__all__ = ["lean_weight"]

# elements processed at once by the in-place chunked operations
_CHUNK = 1 << 18


def lean_weight(program, arrays: dict):
    """``W`` of ``program`` from torch ``arrays``; its backward recomputes instead of storing.

    Parameters
    ----------
    program : Program
    arrays : dict of str -> torch.Tensor
        One tensor per core; those with ``requires_grad`` receive gradients.

    Returns
    -------
    torch.Tensor, shape (out_features, in_features)
    """
    names = list(arrays)
    first = next(iter(arrays.values()))
    keep = _keeps_block_inputs(program, first.element_size())
    # keeping block inputs is the fast way: let the (tuned) heap reuse its pages then, since
    # a fresh mapping page-faults every state in again; otherwise least memory first
    with contextlib.nullcontext() if keep else memory_first():
        return _Lean.apply(program, names, keep, *(arrays[n] for n in names))


class _Lean(torch.autograd.Function):
    # the backward recomputes the forward: under autocast it must run in the same precision
    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, program, names, keep, *tensors):
        ctx.program, ctx.names, ctx.keep = program, names, keep
        ctx.save_for_backward(*tensors)
        release = (lambda: None) if keep else release_free_memory
        release()
        # kept: each chain's input state, so that the backward pass need not rebuild it
        ctx.chain_inputs = {} if keep else None
        with torch.no_grad():
            arrays = dict(zip(names, (t.detach() for t in tensors)))
            trainable = {n for n, need in zip(names, ctx.needs_input_grad[3:]) if need}
            front = _run_groups(program, arrays, len(program.groups), ctx.chain_inputs,
                                _differentiated(program, trainable))
            w = _to_matrix(program, front.pop(program.final_key))
        del front
        release()
        return w

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_w):
        keep = ctx.keep  # chosen with the forward pass (see lean_weight)
        with contextlib.nullcontext() if keep else memory_first():
            return _Lean._backward(ctx, grad_w, keep)

    @staticmethod
    def _backward(ctx, grad_w, keep: bool):
        release = (lambda: None) if keep else release_free_memory
        # states a kept chain backward has finished with, for the next chain to write into
        # (a fresh state page-faults all of its memory in)
        spare_states: list = []
        program, names = ctx.program, ctx.names
        tensors = ctx.saved_tensors
        arrays = {n: t.detach() for n, t in zip(names, tensors)}
        wanted = {n for n, t, need in zip(names, tensors, ctx.needs_input_grad[3:]) if need}
        grads: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            pending = {program.final_key: _from_matrix(program, grad_w)}
        del grad_w
        release()
        for index in range(len(program.groups) - 1, -1, -1):
            group = program.groups[index]
            g = pending.pop(group.key, None)
            if g is None:
                continue
            needs = [n in wanted if n in arrays else True for n in group.operands]
            if not any(needs):
                continue

            def operands(index=index, group=group):
                """The group's operands: a chain's input kept by the forward pass (once), or
                recomputed from the cores (fresh each call)."""
                kept = ctx.chain_inputs.pop(index, None) if ctx.chain_inputs else None
                if kept is not None:
                    return [arrays[n] if n in arrays else kept for n in group.operands]
                with torch.no_grad():
                    front = _run_groups(program, arrays, index)
                return front.gather(group)

            results = _group_backward(program, index, operands, g, needs,
                                      spare_states if keep else None)
            del g
            release()
            for name, grad in zip(group.operands, results):
                if grad is None:
                    continue
                if name in arrays:
                    grads[name] = grads[name] + grad if name in grads else grad
                else:
                    pending[name] = grad
        ctx.chain_inputs = None
        return (None, None, None, *(grads.get(n) for n in names))


# ---------------------------------------------------------------------- forward pieces
def _run_groups(program, arrays, stop: int, chain_inputs: dict | None = None,
                differentiated: set | None = None) -> Front:
    """The front after groups ``0..stop-1`` (no autograd): their activated outputs not yet
    consumed; gate chains run in place on a buffer they own. With ``chain_inputs``, a copy
    of the input state of each chain whose other operands are all cores goes there, by
    group index (only for the groups in ``differentiated``, when given)."""
    front = Front(arrays)

    def visit(index, group, ops):
        act = program.activations[group.stage]
        if (chain_inputs is not None and _input_worth_keeping(program, index, arrays)
                and (differentiated is None or index in differentiated)):
            chain = _chain(program, index)
            plan = gate_kernels.torch_phases(chain, ops[chain.state])
            if plan is not None and _keeps_phase_states(program, ops[chain.state]):
                states, out = _phase_states(chain, plan, ops, act)
                chain_inputs[index] = states
                del ops[:]
                return out
            chain_inputs[index] = ops[chain.state].clone()
        out = _contract(program, index, ops, front.owned(group))
        del ops[:]  # the group's inputs may go as soon as its output exists
        return _activate_(act, out)

    return walk(program.groups, front, visit, stop=stop)


def _differentiated(program, trainable: set) -> set:
    """Indices of the groups whose output depends on a core in ``trainable``: the ones the
    backward pass differentiates (calibration differentiates one last-stage core only)."""
    depends: set = set()
    out = set()
    for index, group in enumerate(program.groups):
        if any(n in trainable or n in depends for n in group.operands):
            depends.add(group.key)
            out.add(index)
    return out


def _phase_states(chain: GateChain, plan, ops, act):
    """Run a qubit chain with the CPU kernels phase by phase, each phase into a new buffer.

    Returns
    -------
    states : list of torch.Tensor
        The flat input of every phase, then (for an activation other than the identity) the
        pre-activation output: what the chain's backward pass needs, so that it rebuilds
        nothing.
    out : torch.Tensor, shape ``chain.line_dims``
        The activated output.
    """
    matrix = _gate_matrix(chain, ops, ops[chain.state])
    states = [ops[chain.state].reshape(-1)]  # read only: whoever else holds it keeps it
    for k in range(len(plan.phases)):
        nxt = torch.empty_like(states[-1], memory_format=torch.contiguous_format)
        gate_kernels.apply_phases_(states[-1].numpy(), matrix, plan, range(k, k + 1),
                                   out=nxt.numpy())
        states.append(nxt)
    if act.is_identity:
        return states[:-1], states[-1].view(chain.line_dims)
    out = torch.empty_like(states[-1])
    _activate_into(act, states[-1], out)
    return states, out.view(chain.line_dims)


def _keeps_phase_states(program, like) -> bool:
    """Whether the forward pass keeps every phase input of every qubit chain (the backward
    pass then rebuilds none): when they, and three states besides, fit in half the memory
    available now."""
    sizes = []
    for index in range(len(program.groups)):
        chain = _chain(program, index)
        plan = gate_kernels.phases_for_chain(chain) if chain is not None else None
        if plan is not None:
            sizes.append((len(plan.phases) + 1, math.prod(chain.line_dims)))
    if not sizes:
        return False
    need = (sum(n * size for n, size in sizes) + 3 * max(size for _, size in sizes)) \
        * like.element_size()
    available = available_memory()
    return available is not None and need <= available / 2


def _input_worth_keeping(program, index, arrays) -> bool:
    """Whether group ``index`` is a chain whose state comes from an earlier group and whose
    other operands are all cores (so that a copy of the state is all a rebuild needs)."""
    chain = _chain(program, index)
    if chain is None:
        return False
    names = program.groups[index].operands
    return (names[chain.state] not in arrays
            and all(n in arrays for k, n in enumerate(names) if k != chain.state))


def _contract(program, index, ops, owned):
    """Group ``index``'s pre-activation output; a chain runs in place when its state is owned
    (a front tensor nobody else holds), otherwise on one copy."""
    chain = _chain(program, index)
    group = program.groups[index]
    if chain is not None:
        state = ops[chain.state]
        buf = state if owned[chain.state] else state.clone()
        flat = buf.reshape(-1)
        plan = gate_kernels.torch_phases(chain, flat)
        if plan is not None:
            gate_kernels.apply_phases_(flat.numpy(), _gate_matrix(chain, ops, flat), plan)
            return flat.view(chain.line_dims)
        for block in chain.blocks:
            _apply_block_(_block_matrix(block, ops), flat, *_block_dims(chain, block))
        return flat.view(chain.line_dims)
    tree = program.tree(index)
    if len(ops) == 1:  # a fresh copy: the activation then runs in place on it
        inds = group.inputs[0]
        return ops[0].permute(*(inds.index(ix) for ix in group.output)).clone(
            memory_format=torch.contiguous_format)
    return contract_tree(tree, ops)


def _chain(program, index) -> GateChain | None:
    chain = program.chain(index)
    if chain is None:
        return None
    ident = tuple(range(len(chain.state_order)))
    if chain.state_order != ident or chain.out_perm != ident:
        return None  # reordered lines: let autograd differentiate it (correct, not lean)
    return chain


def _block_dims(chain: GateChain, block):
    total = math.prod(chain.line_dims)
    left = math.prod(chain.line_dims[: block.lo])
    width = math.prod(block.dims)
    return left, width, total // (left * width)


def _activate_into(act, x, out):
    """``out <- act(x)`` chunk by chunk (flat, contiguous tensors)."""
    for start in range(0, x.numel(), _CHUNK):
        out[start:start + _CHUNK].copy_(act(x[start:start + _CHUNK]))


def _activate_(act, x):
    if act.is_identity:
        return x
    x = x.contiguous()
    flat = x.view(-1)
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start:start + _CHUNK]
        part.copy_(act(part))
    return x


def _to_matrix(program, final):
    """``W`` from the final group's output, dropping each intermediate as soon as the next
    exists (the caller must hold no other reference to ``final``)."""
    tz = program.tz
    have, want = tuple(program.final_inds), tuple(tz.physical_inds)
    if have != want:
        final = final.permute(*(have.index(ix) for ix in want))
    if matrix_layout.usable(final):  # one gather, whatever the axis order
        return matrix_layout.to_matrix(final, tz)
    if tz.n_sites < 3 or math.prod(tz.site_dims) < _FAST_UNSHUFFLE_MIN:
        return tz.to_matrix(final).contiguous()
    h_order, t_order, _ = _unshuffle_plan(tz)
    w = final.reshape(len(h_order), len(t_order))
    del final  # the gathers below then free the final state as soon as they have read it
    w = unshuffle_rows_columns(w, tz).reshape(tz.padded_out, tz.padded_in)
    return w[: tz.out_features, : tz.in_features].contiguous()


def _from_matrix(program, grad_w):
    """Gradient of the final group's output (in ``final_inds`` order) from that of ``W``."""
    have, want = tuple(program.final_inds), tuple(program.tz.physical_inds)
    if matrix_layout.usable(grad_w):  # one scatter, straight into the final group's order
        return matrix_layout.from_matrix(grad_w, program.tz,
                                         tuple(want.index(ix) for ix in have))
    g = program.tz.from_matrix(grad_w)
    if have != want:
        g = g.permute(*(want.index(ix) for ix in have))
    return g.contiguous()


# ---------------------------------------------------------------------- in-place kernels
def _chunks(left, width, right):
    """Slices of the (left, width, right) view with about ``_CHUNK`` elements each."""
    if width * right <= _CHUNK:
        rows = max(1, _CHUNK // (width * right))
        for x0 in range(0, left, rows):
            yield slice(x0, min(left, x0 + rows)), slice(None)
    else:
        cols = max(1, _CHUNK // width)
        for x in range(left):
            for c0 in range(0, right, cols):
                yield slice(x, x + 1), slice(c0, min(right, c0 + cols))


def _apply_block_(matrix, flat, left, width, right):
    """``state <- matrix`` applied along the middle axis of ``flat`` viewed as
    (left, width, right), in place, chunk by chunk."""
    view = flat.view(left, width, right)
    for rows, cols in _chunks(left, width, right):
        part = view[rows, :, cols]
        r, c = part.shape[0], part.shape[2]
        new = _apply_block(matrix, part.contiguous(), r, width, c)
        part.copy_(new.reshape(r, width, c))


def _block_grad(g_flat, s_flat, left, width, right):
    """``sum_{x,r} g[x, a, r] s[x, b, r]``: the gradient of a block's matrix."""
    g3, s3 = g_flat.view(left, width, right), s_flat.view(left, width, right)
    out = torch.zeros(width, width, dtype=g_flat.dtype, device=g_flat.device)
    for rows, cols in _chunks(left, width, right):
        gp = g3[rows, :, cols].transpose(0, 1).reshape(width, -1)
        sp = s3[rows, :, cols].transpose(0, 1).reshape(width, -1)
        out += gp @ sp.T
    return out


# ---------------------------------------------------------------------- group backward
def _group_backward(program, index, operands, g, needs, spare_states=None):
    """Gradients of group ``index``'s operands given ``g``, the gradient of its activated
    output (consumed in place); ``operands()`` recomputes the operands. Entries are None where
    not needed."""
    group = program.groups[index]
    act = program.activations[group.stage]
    chain = _chain(program, index)
    g = g.contiguous()  # updated in place below
    if chain is not None:
        # a state made by an earlier group is recomputed fresh for every use; a core is not
        owned = group.operands[chain.state] in {grp.key for grp in program.groups}
        plan = gate_kernels.torch_phases(chain, g)
        if plan is not None and spare_states is not None:
            return _chain_backward_phases_kept(chain, plan, operands, owned, act,
                                               g.reshape(-1), needs, spare_states)
        if plan is not None:
            return _chain_backward_phases_swept(chain, plan, operands, owned, act,
                                                g.reshape(-1), needs)
        if spare_states is not None:
            return _chain_backward_kept(chain, operands, owned, act, g.reshape(-1), needs,
                                        spare_states)
        return _chain_backward_swept(chain, operands, owned, act, g.reshape(-1), needs)
    ops = operands()
    if not act.is_identity:
        with torch.no_grad():
            pre = _contract(program, index, ops, [False] * len(ops))
            _activation_backward_(act, pre, g)
            del pre
    leaves = [op.detach().requires_grad_(need) for op, need in zip(ops, needs)]
    del ops
    with torch.enable_grad():
        out = _contract_autograd(program, index, leaves)
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    got = iter(torch.autograd.grad(out, wanted, g.view(out.shape), allow_unused=True))
    return [next(got) if leaf.requires_grad else None for leaf in leaves]


def _contract_autograd(program, index, ops):
    group = program.groups[index]
    if len(ops) == 1:
        inds = group.inputs[0]
        return ops[0].permute(*(inds.index(ix) for ix in group.output))
    chain = program.chain(index)
    if chain is not None:
        return chain.contract(ops)
    return contract_tree(program.tree(index), ops)


def _activation_backward_(act, pre, g):
    """``g <- g * act'(pre)``, chunk by chunk, in place."""
    if act.is_identity:
        return
    p_flat, g_flat = pre.reshape(-1), g.view(-1)
    for start in range(0, p_flat.numel(), _CHUNK):
        p = p_flat[start:start + _CHUNK].detach().requires_grad_(True)
        with torch.enable_grad():
            y = act(p)
        (gp,) = torch.autograd.grad(y, p, g_flat[start:start + _CHUNK])
        g_flat[start:start + _CHUNK].copy_(gp)


def _keeps_block_inputs(program, itemsize: int) -> bool:
    """Whether the backward pass keeps every block input of a gate chain (one rebuild, ``n``
    block applications per chain) rather than sweeping with one state (``n`` rebuilds,
    ``O(n^2)`` applications): when the largest chain's inputs, besides the gradient, its next
    value and the work, and each chain's input state fit in half the memory available now."""
    chains = [c for c in (_chain(program, i) for i in range(len(program.groups)))
              if c is not None]
    if not chains:
        return False
    # and one kept input state per chain, from the forward pass to the backward
    need = (max(_chain_states(c) + 3 for c in chains) * max(math.prod(c.line_dims) for c in chains)
            + sum(math.prod(c.line_dims) for c in chains)) * itemsize
    available = available_memory()
    return available is not None and need <= available / 2


def _chain_states(chain: GateChain) -> int:
    """States a chain's kept backward keeps besides its gradient: one per block, or one per
    phase when the CPU kernels run it."""
    plan = gate_kernels.phases_for_chain(chain) if gate_kernels.available() else None
    return len(chain.blocks) if plan is None else len(plan.phases)


def _gate_matrix(chain: GateChain, ops, like):
    return gate_kernels.gate_matrix([ops[i] for i in chain.gate_operands()], like.dtype)


def _chain_backward_phases_kept(chain: GateChain, plan, operands, owned, act, g_flat, needs,
                                spare_states: list):
    """A qubit chain's backward pass with the CPU kernels (:mod:`.gate_kernels`), the kept
    way: the phase inputs are built once, one after the other, in buffers taken from (and
    given back to) ``spare_states``; then each phase's backward kernel turns ``g_flat`` into
    the gradient of the phase's input in place and adds up its gates' gradients."""
    ops = operands()
    matrix, dtypes = _gate_matrix(chain, ops, g_flat), _gate_dtypes(chain, ops)
    kept = ops[chain.state]
    del ops
    grad_gates = np.zeros(matrix.shape, dtype=matrix.dtype)
    with torch.no_grad():
        if isinstance(kept, list):  # every phase's input, as the forward pass kept them
            inputs, kept = kept, None
            pre = None if act.is_identity else inputs.pop()
        else:
            inputs = [kept.reshape(-1)]
            for k in range(len(plan.phases)):
                nxt = _spare_like(inputs[-1], spare_states)
                gate_kernels.apply_phases_(inputs[-1].numpy(), matrix, plan, range(k, k + 1),
                                           out=nxt.numpy())
                inputs.append(nxt)
            pre = inputs.pop()
        if pre is not None:
            _activation_backward_(act, pre, g_flat)
            spare_states.append(pre)
        for k in range(len(plan.phases) - 1, -1, -1):
            gate_kernels.phase_backward_(inputs[k].numpy(), g_flat.numpy(), matrix, plan, k,
                                         grad_gates)
            spare_states.append(inputs[k])
            inputs[k] = None
    return _phase_grads(chain, grad_gates, dtypes, g_flat, needs)


def _chain_backward_phases_swept(chain: GateChain, plan, operands, owned, act, g_flat, needs):
    """:func:`_chain_backward_phases_kept` with one state alive: before each phase's backward
    kernel its input is rebuilt from the chain's input (``operands()``)."""
    ops = operands()
    matrix, dtypes = _gate_matrix(chain, ops, g_flat), _gate_dtypes(chain, ops)
    work = _chain_input(chain, ops, owned)
    del ops
    grad_gates = np.zeros(matrix.shape, dtype=matrix.dtype)
    with torch.no_grad():
        gate_kernels.apply_phases_(work.numpy(), matrix, plan)
        _activation_backward_(act, work, g_flat)
        del work
        for k in range(len(plan.phases) - 1, -1, -1):
            work = _chain_input(chain, operands(), owned)
            gate_kernels.apply_phases_(work.numpy(), matrix, plan, range(k))
            gate_kernels.phase_backward_(work.numpy(), g_flat.numpy(), matrix, plan, k,
                                         grad_gates)
            del work
            release_free_memory()
    return _phase_grads(chain, grad_gates, dtypes, g_flat, needs)


def _gate_dtypes(chain: GateChain, ops) -> dict:
    return {i: ops[i].dtype for i in chain.gate_operands()}


def _phase_grads(chain: GateChain, grad_gates, dtypes, g_flat, needs) -> list:
    """Per-operand gradients from the kernels' (n_gates, 16) gate gradients and the state's."""
    grads = [None] * len(needs)
    for j, i in enumerate(chain.gate_operands()):
        if needs[i]:
            grad = torch.from_numpy(grad_gates[j].copy()).to(dtypes[i]).reshape(2, 2, 2, 2)
            grads[i] = grad if grads[i] is None else grads[i] + grad
    if needs[chain.state]:
        grads[chain.state] = g_flat.view(chain.line_dims)
    return grads


def _chain_backward_kept(chain: GateChain, operands, owned, act, g_flat, needs,
                         spare_states: list):
    """Rebuild the chain's input once, keep each block's input on the way forward, and walk
    back through them, each block's products over whole states (no chunks). Every fresh
    state costs its page faults, so the backward products write into the buffers the sweep
    frees (the pre-activation output's, then each block input's once it is used), and the
    states it ends with go to ``spare_states`` for the next chain; it takes its own from
    there first."""
    ops = operands()
    gates = {index for block in chain.blocks for index, _ in block.gates}
    leaves = [op.detach().requires_grad_(needs[i]) if i in gates else None
              for i, op in enumerate(ops)]
    grads = [None] * len(ops)
    dims = [_block_dims(chain, block) for block in chain.blocks]
    with torch.no_grad():
        matrices = [_block_matrix(block, ops) for block in chain.blocks]
        state = _chain_input(chain, ops, owned)
        del ops
        inputs = []
        for matrix, d in zip(matrices, dims):
            inputs.append(state)
            state = _apply_block_into(matrix, state, *d, out=_spare_like(state, spare_states))
        _activation_backward_(act, state, g_flat)  # state: the pre-activation output
        spare, state = state, None
    for b in range(len(chain.blocks) - 1, -1, -1):
        with torch.no_grad():
            grad_m = _block_gram(g_flat, inputs[b], *dims[b])
            _apply_block_into(matrices[b].transpose(0, 1), g_flat, *dims[b], out=spare)
            spare_states.append(g_flat)  # the old gradient's buffer, for the next chain
            g_flat, spare = spare, inputs[b]
            inputs[b] = None
        _block_gate_grads(chain.blocks[b], leaves, grads, grad_m)
    spare_states.append(spare)
    if needs[chain.state]:
        grads[chain.state] = g_flat.view(chain.line_dims)
    return grads


def _spare_like(state, spare_states: list):
    """A flat buffer like ``state``: one from ``spare_states`` if any fits, else a new one."""
    for k, buf in enumerate(spare_states):
        if (buf.numel() == state.numel() and buf.dtype == state.dtype
                and buf.device == state.device):
            return spare_states.pop(k)
    return torch.empty_like(state)


def _apply_block_into(matrix, flat, left, width, right, *, out):
    """:func:`_apply_block` written into the flat buffer ``out`` (no new state); returns
    ``out``."""
    if right == 1:
        torch.matmul(flat.view(left, width), matrix.transpose(0, 1), out=out.view(left, width))
    elif left == 1:
        torch.matmul(matrix, flat.view(width, right), out=out.view(width, right))
    else:
        torch.bmm(matrix.expand(left, width, width), flat.view(left, width, right),
                  out=out.view(left, width, right))
    return out


def _block_gate_grads(block, leaves, grads, grad_m) -> None:
    """Add the gradients of ``block``'s gates, given that of its matrix, into ``grads``."""
    members = [leaves[i] for i, _ in block.gates if leaves[i].requires_grad]
    if not members:
        return
    with torch.enable_grad():
        m = _block_matrix(block, leaves)
    for leaf, grad in zip(members, torch.autograd.grad(m, members, grad_m)):
        i = next(k for k, lf in enumerate(leaves) if lf is leaf)
        grads[i] = grad if grads[i] is None else grads[i] + grad


def _chain_backward_swept(chain: GateChain, operands, owned, act, g_flat, needs):
    """Reverse sweep over the blocks holding one state at a time (module docstring).

    Before each block the chain's input is recomputed from the cores (``operands()``) into a
    fresh buffer and the earlier blocks are applied to it in place, so besides ``g_flat`` (the
    gradient of the chain's activated output, turned in place into that of its input) only
    that buffer is alive."""
    ops = operands()
    gates = {index for block in chain.blocks for index, _ in block.gates}
    # leaves for the gates only: a leaf of the state would keep its buffer alive
    leaves = [op.detach().requires_grad_(needs[i]) if i in gates else None
              for i, op in enumerate(ops)]
    grads = [None] * len(ops)
    with torch.no_grad():
        matrices = [_block_matrix(block, ops) for block in chain.blocks]
        work = _chain_input(chain, ops, owned)
        del ops
        for block, matrix in zip(chain.blocks, matrices):  # the pre-activation output
            _apply_block_(matrix, work, *_block_dims(chain, block))
        _activation_backward_(act, work, g_flat)
        del work
    for b in range(len(chain.blocks) - 1, -1, -1):
        block = chain.blocks[b]
        dims = _block_dims(chain, block)
        with torch.no_grad():
            work = _chain_input(chain, operands(), owned)
            for prev in range(b):
                _apply_block_(matrices[prev], work, *_block_dims(chain, chain.blocks[prev]))
            grad_m = _block_grad(g_flat, work, *dims)
            del work
            release_free_memory()  # the tuned heap would otherwise keep the buffer's pages
            _apply_block_(matrices[b].transpose(0, 1).contiguous(), g_flat, *dims)
        _block_gate_grads(block, leaves, grads, grad_m)
    if needs[chain.state]:
        grads[chain.state] = g_flat.view(chain.line_dims)
    return grads


def _chain_input(chain: GateChain, ops, owned: bool):
    """The chain's state as a flat buffer the sweep may overwrite: the recomputed front
    tensor itself when it is ``owned``, a copy when the state is a core."""
    state = ops[chain.state]
    del ops
    if owned:
        return state.reshape(-1)
    return state.detach().clone(memory_format=torch.contiguous_format).reshape(-1)
