"""The physical tensor and the weight matrix, one read and one write apart (CPU, numba).

Entry ``(o, i)`` of ``W`` sits at offset ``F[o] + G[i]`` of the physical tensor, whatever the
order of its site axes in memory: with ``o = (o_k)`` and ``i = (i_k)`` the per-site digits,
site ``k``'s value is ``o_k * in_modes[k] + i_k`` and its axis has stride ``S_k``, so
``F[o] = sum_k o_k in_modes[k] S_k`` and ``G[i] = sum_k i_k S_k``. :func:`to_matrix` gathers
``W`` through those two tables (tiles of rows and columns, so that neighbouring entries of the
tensor are read together), :func:`from_matrix` scatters a gradient of ``W`` back. Both replace
the reshapes, gathers and transposes of :meth:`adntn_lab.tensorize.Tensorization.to_matrix`
(four passes over the tensor, each into a new array) where the kernels can run.
"""

from __future__ import annotations

import functools

import numpy as np

from . import gate_kernels

__all__ = ["usable", "to_matrix", "from_matrix", "to_matrix_autograd"]

# arrays smaller than this go through the general reshapes (the kernel's setup then dominates)
_MIN_ELEMENTS = 1 << 20


def usable(x) -> bool:
    """Whether the kernels can lay out the torch tensor ``x``: numba is there, ``x`` is a
    float32 or float64 CPU tensor of at least ``_MIN_ELEMENTS`` entries, and no
    ``torch.compile`` is tracing."""
    from .arrays import compiling

    return (x.device.type == "cpu" and str(x.dtype) in ("torch.float32", "torch.float64")
            and x.numel() >= _MIN_ELEMENTS and not compiling() and gate_kernels.available())


@functools.lru_cache(maxsize=32)
def _tables(tz, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """``F`` (out_features,), the starts of ``G``'s runs, and the run length, for site axes
    with ``strides``: ``G[r * run + j] = starts[r] + j``."""
    f = np.zeros(1, dtype=np.int64)
    g = np.zeros(1, dtype=np.int64)
    for o_k, i_k, s_k in zip(tz.out_modes, tz.in_modes, strides):  # slowest digit first
        f = (f[:, None] + (np.arange(o_k) * i_k * s_k)[None, :]).reshape(-1)
        g = (g[:, None] + (np.arange(i_k) * s_k)[None, :]).reshape(-1)
    f, g = f[:tz.out_features], g[:tz.in_features]
    run = 1
    while g.size % (2 * run) == 0:
        rows = g.reshape(-1, 2 * run)
        if not np.array_equal(rows - rows[:, :1], np.broadcast_to(np.arange(2 * run),
                                                                    rows.shape)):
            break
        run *= 2
    return np.ascontiguousarray(f), np.ascontiguousarray(g[::run]), run


def to_matrix(wp, tz):
    """``W`` (out_features, in_features) from the physical tensor ``wp`` (site axes in order,
    any strides over one contiguous buffer), no autograd.

    Parameters
    ----------
    wp : torch.Tensor, shape ``tz.site_dims``
    tz : Tensorization

    Returns
    -------
    torch.Tensor, shape (out_features, in_features), contiguous
    """
    import torch

    wp, flat = _over_one_buffer(wp)
    f, starts, run = _tables(tz, tuple(wp.stride()))
    out = torch.empty(tz.out_features, tz.in_features, dtype=wp.dtype)
    src, dst = flat.numpy(), out.numpy()
    kernels = _kernels()
    gate_kernels._run_ranges(
        lambda lo, hi: kernels.gather(src, f, starts, run, dst, lo, hi), tz.out_features)
    return out


def from_matrix(grad_w, tz, order: tuple[int, ...] | None = None):
    """The physical tensor of which ``grad_w`` is the matrix: the adjoint of
    :func:`to_matrix`, zero at the padding.

    Parameters
    ----------
    grad_w : torch.Tensor, shape (out_features, in_features)
    tz : Tensorization
    order : tuple of int, optional
        Sites in the order of the result's axes (default: site order).

    Returns
    -------
    torch.Tensor, shape ``[tz.site_dims[k] for k in order]``, contiguous
    """
    import torch

    order = tuple(range(tz.n_sites)) if order is None else tuple(order)
    grad_w = grad_w.detach().contiguous()
    padded = tz.padded_out * tz.padded_in != tz.out_features * tz.in_features
    make = torch.zeros if padded else torch.empty
    out = make([tz.site_dims[k] for k in order], dtype=grad_w.dtype)
    sites = out.permute(*(order.index(k) for k in range(tz.n_sites)))  # site-order view
    f, starts, run = _tables(tz, tuple(sites.stride()))
    src, dst = grad_w.numpy(), out.reshape(-1).numpy()
    kernels = _kernels()
    gate_kernels._run_ranges(
        lambda lo, hi: kernels.scatter(src, f, starts, run, dst, lo, hi), tz.out_features)
    return out


def to_matrix_autograd(wp, tz):
    """:func:`to_matrix` recorded by torch autograd (its backward is :func:`from_matrix`)."""
    return _layout_function().apply(wp, tz)


@functools.cache
def _layout_function():
    import torch

    class MatrixLayout(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type="cpu")
        def forward(ctx, wp, tz):
            ctx.tz = tz
            return to_matrix(wp, tz)

        @staticmethod
        @torch.amp.custom_bwd(device_type="cpu")
        def backward(ctx, grad):
            return from_matrix(grad, ctx.tz), None

    return MatrixLayout


def _over_one_buffer(wp):
    """``wp`` and the flat contiguous buffer it views: itself when it is a permutation of a
    contiguous tensor, else a contiguous copy."""
    order = sorted(range(wp.dim()), key=lambda a: -wp.stride()[a])
    base = wp.detach().permute(*order)
    if not base.is_contiguous():
        wp = wp.detach().contiguous()
        base = wp
    return wp, base.reshape(-1)


@functools.cache
def _kernels():
    from . import _layout_kernels_numba

    return _layout_kernels_numba
