"""Array backends: numpy (reference), torch (training), CuPy (GPU contraction)."""

from __future__ import annotations

import numpy as np

__all__ = ["BACKENDS", "to_backend", "available_backends", "backend_of", "require_cupy"]

BACKENDS = ("numpy", "torch", "cupy")


def require_cupy():
    """Import CuPy and check for a CUDA device, with an error that says what to do."""
    try:
        import cupy
    except ImportError:
        raise ImportError(
            "backend='cupy' needs CuPy, which is not installed; install it with "
            "`pip install adntn_lab[gpu]` (cupy-cuda12x) on a machine with an NVIDIA GPU, "
            "or use backend='numpy' or 'torch'"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise RuntimeError(
            f"backend='cupy' found no usable CUDA device ({err}); this machine can run "
            "backend='numpy' or 'torch' on the CPU"
        ) from None
    if count == 0:
        raise RuntimeError("backend='cupy' found no CUDA device; use backend='numpy' or 'torch'")
    return cupy


def available_backends() -> list[str]:
    """Backends that can run on this machine."""
    out = ["numpy", "torch"]
    try:
        require_cupy()
        out.append("cupy")
    except (ImportError, RuntimeError):
        pass
    return out


def backend_of(array) -> str:
    """Name of the backend an array belongs to."""
    mod = type(array).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    if isinstance(array, np.ndarray) or mod.startswith("numpy"):
        return "numpy"
    raise TypeError(f"unsupported array type {type(array).__name__}; use numpy, torch or cupy")


def to_backend(params: dict, backend: str, *, device=None, dtype=None) -> dict:
    """Convert a dict of numpy arrays to the requested backend.

    Parameters
    ----------
    params : dict of str -> numpy array
    backend : {"numpy", "torch", "cupy"}
    device : optional
        torch device (``"cpu"``, ``"cuda"``) or CuPy device id.
    dtype : optional
        Target dtype (numpy dtype or torch dtype); float64 numpy, float32 torch by default.
    """
    if backend == "numpy":
        return {k: np.asarray(v, dtype=dtype or np.float64) for k, v in params.items()}
    if backend == "torch":
        import torch

        dt = dtype or torch.float32
        return {k: torch.as_tensor(np.asarray(v), dtype=dt, device=device)
                for k, v in params.items()}
    if backend == "cupy":
        cupy = require_cupy()
        with cupy.cuda.Device(device or 0):
            return {k: cupy.asarray(v, dtype=dtype or cupy.float64) for k, v in params.items()}
    raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
