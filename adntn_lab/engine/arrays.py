"""Array operations on numpy, CuPy and torch arrays with one spelling.

The engine's hot loops call :func:`do` instead of autoray's: a torch tensor goes straight to
the torch function (an ``isinstance`` test that ``torch.compile`` resolves while tracing,
where autoray's lookup by module name would break the graph); anything else goes to autoray,
which picks numpy or CuPy. Argument conventions are numpy's (``transpose(x, perm)``,
``tensordot(a, b, axes)``, ``eye(n, like=x)``).
"""

from __future__ import annotations

import autoray as ar
import torch

__all__ = ["do", "is_torch"]


def is_torch(x) -> bool:
    """Whether ``x`` is a torch tensor."""
    return isinstance(x, torch.Tensor)


def _eye(n, *, like, dtype=None):
    return torch.eye(n, dtype=like.dtype if dtype is None else dtype, device=like.device)


def _zeros(shape, *, like, dtype=None):
    return torch.zeros(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)


_TORCH = {
    "einsum": torch.einsum,
    "matmul": torch.matmul,
    "reshape": torch.reshape,
    "swapaxes": torch.swapaxes,
    "tensordot": lambda a, b, axes: torch.tensordot(a, b, dims=axes),
    "transpose": torch.permute,
}
_TORCH_LIKE = {"eye": _eye, "zeros": _zeros}


def do(name: str, *args, like=None, **kwargs):
    """Call the array function ``name`` of the library of ``like`` (or of the first argument
    that is an array: the second for ``einsum``)."""
    if name in _TORCH_LIKE:
        if is_torch(like):
            return _TORCH_LIKE[name](*args, like=like, **kwargs)
        return ar.do(name, *args, like=like, **kwargs)
    first = args[1] if name == "einsum" else args[0]
    if is_torch(first):
        return _TORCH[name](*args, **kwargs)
    return ar.do(name, *args, like=like, **kwargs)
