"""The matrix products of :mod:`.matmul_steps` with gradients laid out for the BLAS.

A step's product ``c = a @ b`` takes ``a`` of shape (nb or 1, m, k) and ``b`` of shape
(nb, k, n). autograd's own backward of a batched product with a repeated ``a`` (the
broadcast steps that spare a transpose of the output) forms one (m, k) gradient per batch
and then sums them, an array ``nb`` times the gradient's size, where one accumulating product
(``addbmm``) is enough; and it forms a small weight-shaped gradient such as (64, 512) from a
long contraction in whichever orientation the chain rule spells, where the transposed
product, (512, 64) then viewed back, runs faster on CPU BLAS (their kernels favour a tall
output). :func:`product` runs large products on CPU through an autograd Function that does
both; everything else (small products, other devices, ``torch.compile``, autocast, numpy)
goes through the plain product.
"""

from __future__ import annotations

import sys

from .arrays import compiling, do, is_torch

__all__ = ["product"]

# below this many multiply-adds the Function's own overhead outweighs what it saves
_MIN_MADDS = 1 << 24
# a gradient up to this many elements may come back as a transposed view (larger ones feed
# further products, which would copy it), and only one with both sides this long (a
# product with a very narrow output, such as (256, 2), runs far slower than (2, 256))
_MAX_TRANSPOSED = 1 << 20
_MIN_TRANSPOSED_SIDE = 32
# summed gradients accumulate a block of at most this many batches of products at a time,
# and a block of at most this many elements (which stays in cache)
_MAX_BLOCK_BATCHES = 64
_MAX_BLOCK_ELEMENTS = 1 << 20


def product(a, b, broadcast: bool):
    """``a @ b`` for one step's operands.

    Parameters
    ----------
    a : array, shape (nb, m, k), or (1, m, k) when ``broadcast``
    b : array, shape (nb, k, n)
    broadcast : bool
        ``a`` is one matrix used for every batch of ``b``.

    Returns
    -------
    array, shape (nb, m, n)
    """
    if _own_backward(a, b):
        from ._step_product_function import StepProduct  # imports torch

        return StepProduct.apply(a, b)
    if broadcast:  # a stride-0 view: the product reads one copy for every batch
        a = do("broadcast_to", a, (b.shape[0], *a.shape[1:]))
    return do("matmul", a, b)


def _own_backward(a, b) -> bool:
    if not is_torch(a):
        return False
    torch = sys.modules["torch"]
    if torch.compiler.is_exporting():  # an exported program holds standard operators only
        return False
    return (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
            and a.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and b.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] >= _MIN_MADDS)


def _summed_product(x, y):
    """``sum_i x[i] @ y[i]`` for x (nb, p, r) and y (nb, r, q), shape (p, q), accumulated
    block by block (in a compiled graph: one ``addbmm``), computed as the transposed product
    and viewed back when that gives the BLAS a taller output."""
    import torch

    p, q = x.shape[1], y.shape[2]
    if _MIN_TRANSPOSED_SIDE <= p < q and p * q <= _MAX_TRANSPOSED:
        return _summed_product(y.transpose(1, 2), x.transpose(1, 2)).transpose(0, 1)
    nb = x.shape[0]
    if nb == 1:
        return torch.mm(x[0], y[0])
    if compiling():  # a compiled graph would copy the block after every in-place step
        return torch.addbmm(x.new_zeros((p, q)), x, y)
    # a block of products per call, each thread on whole matrices, summed in place: no
    # (nb, p, q) array as one bmm makes, no (p, q) product split across threads per batch
    # as addbmm's loop does
    block = max(1, min(_MAX_BLOCK_BATCHES, _MAX_BLOCK_ELEMENTS // (p * q), nb))
    acc = torch.bmm(x[:block], y[:block])
    for start in range(block, nb, block):
        stop = min(start + block, nb)
        acc[: stop - start].baddbmm_(x[start:stop], y[start:stop])
    return acc.sum(0)


def _repeated(x, nb: int):
    """``x`` as (nb, ., .): a stride-0 view of one row-major matrix when it holds one
    (matmul's own broadcasting would copy it nb times; the BLAS reads a transposed view of
    the repeated matrix more slowly than the small copy costs)."""
    return x.contiguous().expand(nb, *x.shape[1:]) if x.shape[0] != nb else x
