"""Array operations on numpy, CuPy and torch arrays with one spelling.

The engine's hot loops call :func:`do` instead of autoray's: a torch tensor goes straight to
the torch function (an ``isinstance`` test that ``torch.compile`` resolves while tracing,
where autoray's lookup by module name would break the graph); anything else goes to autoray,
which picks numpy or CuPy. Argument conventions are numpy's (``transpose(x, perm)``,
``tensordot(a, b, axes)``, ``eye(n, like=x)``).

Nothing here imports torch: an array can only be a torch tensor once torch is imported, so
the tests look torch up in ``sys.modules`` (importing the package, e.g. for the widgets,
stays free of torch).
"""

from __future__ import annotations

import sys

import autoray as ar

__all__ = ["compiling", "do", "is_torch", "trace_constant"]


def is_torch(x) -> bool:
    """Whether ``x`` is a torch tensor."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing the caller (False when torch is not imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def trace_constant(fn):
    """Mark ``fn`` as :func:`torch.compiler.assume_constant_result` does, without importing
    torch: ``torch.compile`` then calls it while tracing and keeps its result as a constant
    (``tests/test_compile.py`` checks that the mark is the one torch sets)."""
    fn._dynamo_marked_constant = True
    return fn


_TORCH: dict | None = None


def _torch_table() -> dict:
    global _TORCH
    if _TORCH is None:
        import torch

        def eye(n, *, like, dtype=None):
            return torch.eye(n, dtype=like.dtype if dtype is None else dtype,
                             device=like.device)

        def zeros(shape, *, like, dtype=None):
            return torch.zeros(shape, dtype=like.dtype if dtype is None else dtype,
                               device=like.device)

        _TORCH = {
            "broadcast_to": torch.broadcast_to,
            "einsum": torch.einsum,
            "eye": eye,
            "matmul": torch.matmul,
            "reshape": torch.reshape,
            "swapaxes": torch.swapaxes,
            "tensordot": lambda a, b, axes: torch.tensordot(a, b, dims=axes),
            "transpose": torch.permute,
            "zeros": zeros,
        }
    return _TORCH


_LIKE = ("eye", "zeros")  # functions that make an array like ``like``


def do(name: str, *args, like=None, **kwargs):
    """Call the array function ``name`` of the library of ``like`` (or of the first argument
    that is an array: the second for ``einsum``)."""
    if name in _LIKE:
        if is_torch(like):
            return _torch_table()[name](*args, like=like, **kwargs)
        return ar.do(name, *args, like=like, **kwargs)
    first = args[1] if name == "einsum" else args[0]
    if is_torch(first):
        return _torch_table()[name](*args, **kwargs)
    return ar.do(name, *args, like=like, **kwargs)
