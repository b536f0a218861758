"""The CPU gate kernels as torch custom operators, so that ``torch.compile`` runs them too.

Eagerly, a qubit chain runs through :mod:`adntn_lab.engine.gate_kernels` inside an autograd
Function; a compiled graph cannot trace into numba, so there the chain would fall back to
merged blocks of gates, several times slower on CPU. Registered as the operators
``adntn_lab::gate_chain`` (forward: the chain's output and the inputs of its phases after the
first) and ``adntn_lab::gate_chain_backward`` (the phases' backward kernels), with fake
implementations for tracing and an autograd formula, the kernels stay opaque nodes of the
compiled graph. ``torch.export`` (and ONNX through it) keeps the blocks: an exported program
must consist of standard operators.

The operators are registered on first use (:func:`operators`), not on import.
"""

from __future__ import annotations

import functools

import numpy as np

from . import gate_kernels
from .arrays import trace_constant

__all__ = ["kernel_lines", "operators", "apply"]


@trace_constant
def kernel_lines(line_dims: tuple, lines: tuple) -> tuple | None:
    """``(n_lines, lines)`` for the operators when the kernels can run a chain on lines of
    dimensions ``line_dims`` with gates on ``(p, p + 1)`` for each ``p`` of ``lines`` (numba
    available, qubit lines), else None; a constant while tracing (plain tuples, so that
    ``torch.compile`` can key it)."""
    if not gate_kernels.available() or any(d != 2 for d in line_dims):
        return None
    operators()  # registered here, outside the traced code that calls them
    return len(line_dims), tuple(lines)


def _phases(n_lines: int, lines) -> gate_kernels.ChainPhases:
    return gate_kernels.plan_phases(n_lines, tuple(lines))


@functools.cache
def operators():
    """Register the two operators (once per process) and return the forward one."""
    import torch

    # explicit schemas: this module's annotations are strings (postponed evaluation)
    @torch.library.custom_op("adntn_lab::gate_chain", mutates_args=(), schema=(
        "(Tensor state, Tensor gates, int n_lines, int[] lines) -> (Tensor, Tensor)"))
    def gate_chain(state: torch.Tensor, gates: torch.Tensor, n_lines: int,
                   lines: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        plan = _phases(n_lines, lines)
        x = state.detach().reshape(-1).contiguous()
        matrix = np.ascontiguousarray(gates.detach().to(x.dtype).numpy())
        n = len(plan.phases)
        saved = x.new_empty((max(n - 1, 0), x.numel()))
        out = x.new_empty(x.numel())
        src = x
        for k in range(n):
            dst = out if k == n - 1 else saved[k]
            gate_kernels.apply_phases_(src.numpy(), matrix, plan, range(k, k + 1),
                                       out=dst.numpy())
            src = dst
        if n == 0:
            out.copy_(x)
        return out.view(state.shape), saved

    @gate_chain.register_fake
    def _(state, gates, n_lines, lines):
        n = len(_phases(n_lines, lines).phases)
        return state.new_empty(state.shape), state.new_empty((max(n - 1, 0), state.numel()))

    @torch.library.custom_op("adntn_lab::gate_chain_backward", mutates_args=(), schema=(
        "(Tensor state, Tensor saved, Tensor gates, Tensor grad, int n_lines, int[] lines)"
        " -> (Tensor, Tensor)"))
    def gate_chain_backward(state: torch.Tensor, saved: torch.Tensor, gates: torch.Tensor,
                            grad: torch.Tensor, n_lines: int,
                            lines: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        plan = _phases(n_lines, lines)
        x = state.detach().reshape(-1).contiguous()
        inputs = [x, *saved.unbind(0)]
        matrix = np.ascontiguousarray(gates.detach().to(x.dtype).numpy())
        grad_gates = np.zeros(matrix.shape, dtype=matrix.dtype)
        g = grad.detach().reshape(-1).to(x.dtype).contiguous()
        out = torch.empty_like(g)  # the first phase back writes a new tensor: `grad` is read-only
        if not plan.phases:
            out.copy_(g)
        for k in range(len(plan.phases) - 1, -1, -1):
            gate_kernels.phase_backward_(inputs[k].numpy(), g.numpy(), matrix, plan, k,
                                         grad_gates, out=out.numpy())
            g = out
        return out.view(state.shape), torch.from_numpy(grad_gates).to(gates.dtype)

    @gate_chain_backward.register_fake
    def _(state, saved, gates, grad, n_lines, lines):
        return state.new_empty(state.shape), gates.new_empty(gates.shape)

    def setup_context(ctx, inputs, output):
        state, gates, n_lines, lines = inputs
        ctx.save_for_backward(state, output[1], gates)
        ctx.signature = (n_lines, lines)

    def backward(ctx, grad, _grad_saved):
        state, saved, gates = ctx.saved_tensors
        grad_state, grad_gates = gate_chain_backward(state, saved, gates, grad.contiguous(),
                                                     *ctx.signature)
        return grad_state, grad_gates, None, None

    gate_chain.register_autograd(backward, setup_context=setup_context)
    return gate_chain


def apply(signature: tuple, state, gates: list):
    """The chain on ``state`` (a flat or line-shaped float32/float64 CPU tensor) through the
    operator; ``gates`` are the chain's (2, 2, 2, 2) gates in order, ``signature`` is
    :func:`kernel_lines`'s."""
    import torch

    n_lines, lines = signature
    stacked = torch.stack([g.reshape(16) for g in gates])
    out, _ = torch.ops.adntn_lab.gate_chain(state, stacked, n_lines, list(lines))
    return out
