"""What precision and depth a generator's initial weight is reliable in, and the warnings for
networks outside that range.

Measured on brick-walls with Haar-orthogonal gates and calibrated scales (see
``tests/test_scale.py``; ``rel. error`` is ``max|W32 - W64| / max|W64|``, ``gain`` the largest
relative change of ``W`` per relative change of the cores):

==============================  ==============  =======================  =========
network                         float32 error   bfloat16/float16 error    gain
==============================  ==============  =======================  =========
ReLU, depth 3-100               <= 3e-6         1e-2 - 6e-2              <= 30
tanh, depth <= 20               <= 3e-6         <= 1e-1                  <= 50
tanh, depth 50                  ~ 3e-5          ~ 70 %                   ~ 400
tanh, depth 100                 ~ 2e-3          > 100 %                  ~ 3e4
==============================  ==============  =======================  =========

ReLU and leaky ReLU are positively homogeneous, so the calibrated network sits at the edge
of chaos and perturbations grow only polynomially with depth. Calibrated tanh (and other
saturating activations) amplifies them by about 8 % per layer.
"""

from __future__ import annotations

import math
import warnings

__all__ = [
    "ConditioningWarning",
    "MAX_CENTERING_GAIN",
    "MAX_ROW_MEAN_RATIO",
    "ROW_CENTERING_STEPS",
    "ROW_CENTERING_TRIGGER",
    "MAX_HALF_PRECISION_DEPTH",
    "MAX_HOMOGENEOUS_DEPTH",
    "MAX_SATURATING_DEPTH",
    "check_depth",
    "check_precision",
    "frobenius_norm",
    "nonlinear_depth",
]

#: nonlinear stages supported with positively homogeneous activations (ReLU, leaky ReLU)
MAX_HOMOGENEOUS_DEPTH = 100
#: nonlinear stages supported with other activations (tanh, GELU, SiLU, callables)
MAX_SATURATING_DEPTH = 20
#: nonlinear stages below which float16/bfloat16 cores are supported
MAX_HALF_PRECISION_DEPTH = 20
#: calibration leaves W uncentred rather than amplify rounding errors more than this
MAX_CENTERING_GAIN = 100.0
#: calibration shrinks the spread of W's row means until rms(row means) * sqrt(in_features) /
#: std(W) is at most this: i.i.d. entries (a dense init) give about 1, a ReLU TTN 3-13 without it
MAX_ROW_MEAN_RATIO = 1.0
#: ... but only starts when that ratio is above this, well beyond the chance spread of the
#: linear families around 1 (MPO and low-rank W's are never touched in practice)
ROW_CENTERING_TRIGGER = 2.0
#: at most this many line-search steps on one last-stage core to get there
ROW_CENTERING_STEPS = 12

_HALF = {"float16", "bfloat16", "half"}


class ConditioningWarning(UserWarning):
    """A generator whose initial weight is numerically unreliable (too deep, too low a
    precision, or not centred because centring would be ill-conditioned)."""


def nonlinear_depth(generator) -> int:
    """Number of stages with a non-identity activation."""
    return sum(not a.is_identity for a in generator.activations)


def check_depth(generator, stacklevel: int = 3) -> None:
    """Warn with :class:`ConditioningWarning` when the generator is deeper than its
    activations support (``MAX_HOMOGENEOUS_DEPTH``, ``MAX_SATURATING_DEPTH``)."""
    depth = nonlinear_depth(generator)
    saturating = [a.name for a in generator.activations
                  if not a.is_identity and not a.positively_homogeneous]
    if saturating and depth > MAX_SATURATING_DEPTH:
        warnings.warn(
            f"this {generator.family} generator has {depth} nonlinear stages with "
            f"{sorted(set(saturating))}; beyond {MAX_SATURATING_DEPTH} such stages the initial "
            "network is chaotic (float32 W drifts from float64, and small changes of the cores "
            "change W a lot); use relu or leaky_relu, or fewer layers",
            ConditioningWarning, stacklevel=stacklevel)
    elif not saturating and depth > MAX_HOMOGENEOUS_DEPTH:
        warnings.warn(
            f"this {generator.family} generator has {depth} nonlinear stages; W is tested to "
            f"agree between float32 and float64 up to {MAX_HOMOGENEOUS_DEPTH}; check "
            "gen.weight() against gen.weight('torch') before training",
            ConditioningWarning, stacklevel=stacklevel)


def check_precision(generator, dtype, stacklevel: int = 3) -> None:
    """Warn with :class:`ConditioningWarning` when ``dtype`` is a half precision and the
    generator has ``MAX_HALF_PRECISION_DEPTH`` or more nonlinear stages."""
    name = str(dtype).rsplit(".", 1)[-1]
    depth = nonlinear_depth(generator)
    if name in _HALF and depth >= MAX_HALF_PRECISION_DEPTH:
        warnings.warn(
            f"{name} cores with {depth} nonlinear stages: from {MAX_HALF_PRECISION_DEPTH} "
            "stages on, half-precision W differs from float64 by several percent or more; "
            "keep the cores in float32 (autocast the rest of the model if needed)",
            ConditioningWarning, stacklevel=stacklevel)


# entries per block of frobenius_norm's norms
_NORM_BLOCK = 1 << 16


def frobenius_norm(x) -> float:
    """The 2-norm of all entries of a torch tensor, accurate for any size.

    torch's norm of a whole float32 tensor drifts with its size (2% low on 10^8 entries);
    norms of blocks of ``_NORM_BLOCK`` entries, combined in float64, stay within ~1e-6.
    Falls back to float64 throughout when the squares overflow or underflow.
    """
    import torch

    flat = x.detach().reshape(-1)
    n = flat.numel()
    head = n - n % _NORM_BLOCK
    square = 0.0
    if head:
        blocks = torch.linalg.vector_norm(flat[:head].view(-1, _NORM_BLOCK), dim=1)
        square += float(blocks.double().square().sum())
    if head < n:
        square += float(torch.linalg.vector_norm(flat[head:]).double()) ** 2
    if not math.isfinite(square) or square == 0.0:  # overflow or underflow of the squares
        square = float(torch.linalg.vector_norm(flat, dtype=torch.float64)) ** 2
    return math.sqrt(square)
