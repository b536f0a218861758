"""Elementwise activations applied at stage barriers.

An activation works on numpy, CuPy and torch arrays alike, so that one generator can be
inspected with numpy and trained with torch. Users may pass a name from :data:`ACTIVATIONS`
or any callable that maps an array to an array of the same shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import autoray as ar

from .engine.arrays import is_torch
from .engine.backends import array_namespace

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "resolve_stage_activations"]

_LEAKY_SLOPE = 0.01


def _is_torch(x) -> bool:
    # isinstance, not the module name: torch.compile resolves it while tracing
    return is_torch(x)


def _erf(x):
    if ar.infer_backend(x) == "cupy":
        from cupyx.scipy.special import erf

        return erf(x)
    from scipy.special import erf

    return erf(x)


def _flat(fn, x):
    """Apply a torch kernel to a flat view: some kernels reject tensors with many small legs."""
    return fn(x.reshape(-1)).reshape(x.shape)


def _identity(x):
    return x


def _relu(x):
    if _is_torch(x):
        import torch

        return torch.relu(x)
    return array_namespace(x).maximum(x, 0)


def _leaky_relu(x):
    if _is_torch(x):
        import torch.nn.functional as F

        return _flat(lambda v: F.leaky_relu(v, _LEAKY_SLOPE), x)
    return array_namespace(x).where(x > 0, x, _LEAKY_SLOPE * x)


def _tanh(x):
    if _is_torch(x):
        import torch

        return torch.tanh(x)
    return array_namespace(x).tanh(x)


def _gelu(x):
    if _is_torch(x):
        import torch.nn.functional as F

        return _flat(F.gelu, x)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _silu(x):
    if _is_torch(x):
        import torch.nn.functional as F

        return _flat(F.silu, x)
    return x / (1.0 + array_namespace(x).exp(-x))


_BUILTIN: dict[str, Callable] = {
    "identity": _identity,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "tanh": _tanh,
    "gelu": _gelu,
    "silu": _silu,
}

#: Names of the built-in activations.
ACTIVATIONS: tuple[str, ...] = tuple(_BUILTIN)

# activations with sigma(c x) = c sigma(x) for c > 0: output scale can be set after them
_POSITIVELY_HOMOGENEOUS = {"identity", "relu", "leaky_relu"}


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity with a name.

    Parameters
    ----------
    name : str
        Built-in name, or the callable's ``__name__`` for a user function.
    fn : callable
        Maps an array (numpy, cupy or torch) to an array of the same shape.
    """

    name: str
    fn: Callable

    def __call__(self, x):
        return self.fn(x)

    @property
    def is_identity(self) -> bool:
        return self.fn is _identity

    @property
    def positively_homogeneous(self) -> bool:
        return self.name in _POSITIVELY_HOMOGENEOUS and self.fn is _BUILTIN[self.name]

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def get_activation(spec) -> Activation:
    """Return the :class:`Activation` for a name, a callable or ``None`` (identity).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    TypeError
        For anything that is neither a string nor a callable.
    """
    if isinstance(spec, Activation):
        return spec
    if spec is None:
        return Activation("identity", _identity)
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key in ("linear", "none"):
            key = "identity"
        if key not in _BUILTIN:
            raise ValueError(
                f"unknown activation {spec!r}; use one of {', '.join(ACTIVATIONS)} "
                "or pass a callable that maps an array to an array of the same shape"
            )
        return Activation(key, _BUILTIN[key])
    if callable(spec):
        return Activation(getattr(spec, "__name__", "custom"), spec)
    raise TypeError(
        f"activation must be a name ({', '.join(ACTIVATIONS)}) or a callable, "
        f"not {type(spec).__name__}"
    )


def resolve_stage_activations(spec, num_stages: int, activated: set[int], family: str):
    """Expand a user's activation choice into one :class:`Activation` per stage.

    Parameters
    ----------
    spec : str, callable, None or sequence
        A single activation applies to the family's nonlinear stages (``activated``); the
        other stages stay linear. A sequence gives one activation per stage.
    num_stages : int
        Number of stages of the generator.
    activated : set of int
        Stages that carry the nonlinearity in this family.
    family : str
        Family name, for error messages.
    """
    if isinstance(spec, (list, tuple)):
        if len(spec) != num_stages:
            raise ValueError(
                f"{family}: got {len(spec)} activations but this generator has {num_stages} "
                f"stages; pass one activation per stage or a single name such as 'relu'"
            )
        return [get_activation(s) for s in spec]
    act = get_activation(spec)
    if not activated and not act.is_identity and spec is not None:
        raise ValueError(
            f"this {family} generator has no nonlinear stage, so activation={act.name!r} "
            "cannot apply; leave activation unset (or 'identity'), or give it more levels: "
            "n_sites >= 3 for a tree, n_sites >= 8 for a MERA, depth >= 2 for a brick-wall "
            "(mpo and lowrank are always linear)"
        )
    ident = get_activation(None)
    return [act if s in activated else ident for s in range(num_stages)]
