"""Array backends: numpy (reference), torch (training, CPU or CUDA), CuPy (GPU contraction).

Every choice of backend and device is explicit. ``backend="auto"`` picks what the machine has
(CuPy on a CUDA device, else torch on CUDA, else numpy) and logs its choice; a backend or device
that is asked for but missing raises an error that says what was asked, what this machine has
and what to do. Nothing falls back silently to another backend or device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .arrays import is_torch

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "backend_of",
    "check_arrays",
    "cuda_index",
    "machine_summary",
    "placement",
    "require_cupy",
    "resolve_backend",
    "to_backend",
]

BACKENDS = ("numpy", "torch", "cupy")

_log = logging.getLogger(__name__)


class BackendUnavailableError(RuntimeError):
    """A backend or device was asked for that this machine does not have."""


# ---------------------------------------------------------------------- what the machine has
def _torch_summary() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(n))
        return f"torch {torch.__version__} with {n} CUDA device(s) ({names})"
    build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    return f"torch {torch.__version__} ({build}) with no usable CUDA device"


def _cupy_summary() -> str:
    try:
        import cupy
    except ImportError:
        return "CuPy not installed"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        return f"CuPy {cupy.__version__} without a usable CUDA driver ({err})"
    return f"CuPy {cupy.__version__} with {n} CUDA device(s)"


def machine_summary() -> str:
    """One line saying which backends and devices this machine offers."""
    return f"numpy {np.__version__} (CPU); {_torch_summary()}; {_cupy_summary()}"


def require_cupy():
    """Import CuPy and check that it has a CUDA device.

    Returns
    -------
    module
        The ``cupy`` module.

    Raises
    ------
    ImportError
        CuPy is not installed.
    BackendUnavailableError
        CuPy is installed but finds no usable CUDA device.
    """
    try:
        import cupy
    except ImportError:
        raise ImportError(
            "backend='cupy' needs CuPy, which is not installed; install it with "
            "`pip install adntn_lab[gpu]` (or the cupy-cudaXXx wheel that matches your CUDA "
            "toolkit, e.g. cupy-cuda12x) on a machine with an NVIDIA GPU, or use "
            f"backend='numpy' or 'torch'. This machine has: {machine_summary()}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise BackendUnavailableError(
            f"backend='cupy' found no usable CUDA device ({err}); this machine has: "
            f"{machine_summary()}. Use backend='numpy' or 'torch' on the CPU, or run on a "
            "machine with an NVIDIA GPU and driver"
        ) from None
    if count == 0:
        raise BackendUnavailableError(
            f"backend='cupy' found no CUDA device; this machine has: {machine_summary()}. "
            "Use backend='numpy' or 'torch' on the CPU"
        )
    return cupy


def _cupy_usable() -> bool:
    try:
        require_cupy()
    except (ImportError, BackendUnavailableError):
        return False
    return True


def _torch_cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_backends() -> list[str]:
    """Backends that can run on this machine (``"cupy"`` only with a CUDA device)."""
    out = ["numpy", "torch"]
    if _cupy_usable():
        out.append("cupy")
    return out


# ---------------------------------------------------------------------- devices
def cuda_index(device) -> int | None:
    """The CUDA device index a device specification names, or ``None`` for the CPU.

    Parameters
    ----------
    device : None, int, str, torch.device or cupy.cuda.Device
        ``None`` and ``"cpu"`` mean the CPU; ``"cuda"`` means CUDA device 0 (torch's current
        device); ``"cuda:N"`` and ``N`` mean CUDA device ``N``.

    Raises
    ------
    ValueError
        For anything else (e.g. ``"gpu"`` or ``"mps"``).
    """
    if device is None:
        return None
    if isinstance(device, bool):
        raise ValueError(f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'")
    if isinstance(device, (int, np.integer)):
        if device < 0:
            raise ValueError(f"device={device} is negative; CUDA devices count from 0")
        return int(device)
    if type(device).__module__.startswith("cupy"):  # cupy.cuda.Device
        return int(device.id)
    text = str(device).strip().lower()
    if text == "cpu":
        return None
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(
        f"unknown device {device!r}; use None or 'cpu' for the CPU, 'cuda' or 'cuda:N' (or an "
        "integer N) for CUDA device N"
    )


def _check_torch_device(device) -> None:
    index = cuda_index(device)
    if index is None:
        return
    count = _torch_cuda_count()
    if count == 0:
        raise BackendUnavailableError(
            f"device={str(device)!r} was asked for with torch, but torch sees no CUDA device; "
            f"this machine has: {machine_summary()}. Use device='cpu' (or leave it unset), or "
            "run on a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    if index >= count:
        raise BackendUnavailableError(
            f"device={str(device)!r} was asked for, but torch sees only {count} CUDA "
            f"device(s) (cuda:0 to cuda:{count - 1}); this machine has: {machine_summary()}. "
            "Use one of those"
        )


def _check_cupy_device(device) -> int:
    index = cuda_index(device)
    if index is None:
        if device is not None:
            raise ValueError(
                f"backend='cupy' runs on a CUDA device, but device={device!r} names the CPU; "
                "use backend='numpy' or 'torch' for the CPU, or device='cuda:N' for CuPy"
            )
        cupy = require_cupy()
        return int(cupy.cuda.Device().id)
    cupy = require_cupy()
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise BackendUnavailableError(
            f"device={device!r} was asked for with CuPy, but CuPy sees only {count} CUDA "
            f"device(s) (0 to {count - 1}); this machine has: {machine_summary()}. Use one of "
            "those"
        )
    return index


def resolve_backend(backend: str = "auto", device=None) -> tuple[str, object]:
    """Turn a backend request into a concrete ``(backend, device)`` that this machine has.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch", "cupy"}
        ``"auto"`` picks CuPy when it has a CUDA device, else torch on CUDA when torch sees
        one, else numpy; with ``device="cpu"`` it picks numpy. The choice is logged at INFO
        level on the ``adntn_lab.engine.backends`` logger.
    device : None, int, str or torch.device
        ``None``/``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``N``.

    Returns
    -------
    backend : str
    device : None, str or int
        What :func:`to_backend` should use: ``None`` for numpy, the torch device for torch,
        the CUDA index for CuPy.

    Raises
    ------
    ValueError
        Unknown backend or device, or a device the backend cannot use (numpy on CUDA, CuPy on
        the CPU).
    ImportError
        CuPy asked for but not installed.
    BackendUnavailableError
        A CUDA device asked for that this machine does not have.
    """
    if not isinstance(backend, str) or backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}; use one of 'auto', "
                         f"{', '.join(repr(b) for b in BACKENDS)}")
    index = cuda_index(device)  # validates the spelling first
    if backend == "auto":
        if device is not None and index is None:
            chosen = ("numpy", None)
        elif _cupy_usable():
            chosen = ("cupy", _check_cupy_device(device))
        elif _torch_cuda_count() > 0:
            _check_torch_device(device if device is not None else "cuda")
            chosen = ("torch", device if device is not None else "cuda")
        elif index is not None:
            raise BackendUnavailableError(
                f"backend='auto' with device={str(device)!r} needs a CUDA device, but neither "
                f"CuPy nor torch sees one; this machine has: {machine_summary()}. Use "
                "device='cpu' (or leave it unset)"
            )
        else:
            chosen = ("numpy", None)
        _log.info("backend='auto' chose %s (device %s)", chosen[0], chosen[1])
        return chosen
    if backend == "numpy":
        if index is not None:
            raise ValueError(
                f"backend='numpy' runs on the CPU only, but device={device!r} was asked for; "
                "use backend='torch' or 'cupy' for a CUDA device, or leave device unset"
            )
        return ("numpy", None)
    if backend == "torch":
        _check_torch_device(device)
        return ("torch", device)
    return ("cupy", _check_cupy_device(device))


def to_backend(params: Mapping, backend: str, *, device=None, dtype=None) -> dict:
    """Convert a dict of numpy arrays to the requested backend.

    Parameters
    ----------
    params : dict of str -> numpy array
    backend : {"auto", "numpy", "torch", "cupy"}
        See :func:`resolve_backend`.
    device : optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a torch device or a CUDA index.
    dtype : optional
        Target dtype (numpy dtype or torch dtype); float64 for numpy and CuPy, float32 for
        torch by default.

    Returns
    -------
    dict of str -> array
        Same keys and shapes, on the chosen backend and device.
    """
    backend, device = resolve_backend(backend, device)
    if backend == "numpy":
        return {k: np.asarray(v, dtype=dtype or np.float64) for k, v in params.items()}
    if backend == "torch":
        import torch

        dt = dtype or torch.float32
        return {k: torch.as_tensor(np.asarray(v), dtype=dt, device=device)
                for k, v in params.items()}
    cupy = require_cupy()
    with cupy.cuda.Device(device):
        return {k: cupy.asarray(v, dtype=dtype or cupy.float64) for k, v in params.items()}


# ---------------------------------------------------------------------- what arrays are
def array_namespace(array):
    """The array module (numpy or cupy) of a numpy or CuPy array."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def backend_of(array) -> str:
    """Name of the backend an array belongs to (``"numpy"``, ``"torch"`` or ``"cupy"``)."""
    mod = type(array).__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    if isinstance(array, np.ndarray) or mod.startswith("numpy"):
        return "numpy"
    raise TypeError(f"unsupported array type {type(array).__name__}; use numpy, torch or cupy")


def placement(array) -> tuple[str, str]:
    """``(backend, device)`` of an array, e.g. ``("torch", "cuda:0")`` or ``("numpy", "cpu")``."""
    backend = backend_of(array)
    if backend == "torch":
        dev = array.device
        return ("torch", dev.type if dev.index is None else f"{dev.type}:{dev.index}")
    if backend == "cupy":
        return ("cupy", f"cuda:{array.device.id}")
    return ("numpy", "cpu")


def check_arrays(arrays: Mapping, where: str = "Program.run") -> tuple[str, str]:
    """Check that all arrays come from one backend on one device.

    Parameters
    ----------
    arrays : dict of str -> array
    where : str
        Name of the caller, for the message.

    Returns
    -------
    (backend, device) : tuple of str
        The common placement.

    Raises
    ------
    TypeError
        When the arrays mix backends (e.g. numpy and torch) or devices (e.g. CPU and CUDA);
        the message lists which arrays are where and how to convert them.
    """
    if not arrays:
        raise ValueError(f"{where} got no arrays; pass one array per core")
    first = next(iter(arrays.values()))
    if is_torch(first):  # the common case, in terms torch.compile can trace
        device = first.device
        if all(is_torch(a) and a.device == device for a in arrays.values()):
            name = device.type if device.index is None else f"{device.type}:{device.index}"
            return ("torch", name)
    seen: dict[tuple[str, str], list[str]] = {}
    for name, arr in arrays.items():
        try:
            key = placement(arr)
        except TypeError:
            raise TypeError(
                f"{where}: array {name!r} is a {type(arr).__name__}; every core must be a "
                "numpy array, a torch tensor or a CuPy array"
            ) from None
        seen.setdefault(key, []).append(str(name))
    if len(seen) == 1:
        return next(iter(seen))
    parts = []
    for (backend, dev), names in seen.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{backend} on {dev} ({shown})")
    backends = {b for b, _ in seen}
    if len(backends) > 1:
        advice = ("convert them all to one backend, e.g. "
                  "adntn_lab.engine.backends.to_backend(gen.params, 'torch', device=...) or "
                  "gen.weight(backend=...)")
    else:
        advice = "move them to one device, e.g. with tensor.to(device) or cupy.asarray"
    raise TypeError(f"{where} got arrays from more than one backend or device: "
                    f"{'; '.join(parts)}; nothing is converted silently, so {advice}")
