"""The autograd Function behind :func:`adntn_lab.engine.step_products.product` (torch only).

Defined at import of this module, not on first call, so that ``torch.compile`` finds a class
rather than tracing a class definition.
"""

from __future__ import annotations

import torch

from .step_products import _repeated, _summed_product

__all__ = ["StepProduct"]


class StepProduct(torch.autograd.Function):
    """``a @ b`` (``a`` repeated over ``b``'s batch when it has one matrix), with the
    backward of :func:`~adntn_lab.engine.step_products._summed_product`."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return torch.matmul(_repeated(a, b.shape[0]), b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            if a.shape[0] == 1:  # one matrix used for every batch: its gradients summed
                grad_a = _summed_product(grad, b.transpose(1, 2)).unsqueeze(0)
            else:
                grad_a = torch.matmul(grad, b.transpose(1, 2))
        if ctx.needs_input_grad[1]:
            if b.shape[0] == 1:
                grad_b = _summed_product(a.transpose(1, 2), grad).unsqueeze(0)
            else:
                grad_b = torch.matmul(_repeated(a.transpose(1, 2), grad.shape[0]), grad)
        return grad_a, grad_b
