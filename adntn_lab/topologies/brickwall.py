"""Deep brick-wall ADTN (Qing, Li, Zhou, Ran): gates on a product state of qubits.

Stage 0 holds constant vectors ``[1, 0]`` on ``Q`` legs of dimension 2. Each of ``M`` layers
applies ``Q - 1`` gates of shape (2, 2, 2, 2) (inputs first, then outputs) to pairs
``(q, q+1)``: ``pattern="staircase"`` takes ``q = 0..Q-2`` in order, ``"brickwall"`` the even
pairs and then the odd ones. Layer ``m`` is stage ``m``; the activation follows every layer
but the last. Parameters: ``16 * M * (Q - 1)``.

The generator initialises every gate as a Haar-random orthogonal 4x4 matrix, so each linear
layer is an exact isometry (Gaussian gates make deep walls chaotic). Supported depths, with
float32 W within 3e-6 of float64 at initialisation: up to 100 layers with ReLU or leaky ReLU,
up to 20 nonlinear layers with tanh, GELU or SiLU, and fewer than 20 with float16/bfloat16
cores; deeper networks build with an :class:`adntn_lab.ConditioningWarning` (measurements in
:mod:`adntn_lab.numerics`).
"""

from __future__ import annotations

from ..tensorize import Tensorization
from ..utils import positive_int
from ._blueprint import Blueprint, Builder

__all__ = ["build_brickwall", "PATTERNS"]

PATTERNS = ("staircase", "brickwall")


def _pairs(q: int, pattern: str) -> list[int]:
    if pattern == "staircase":
        return list(range(q - 1))
    return list(range(0, q - 1, 2)) + list(range(1, q - 1, 2))


def build_brickwall(tz: Tensorization, *, depth: int = 3, pattern: str = "staircase") -> Blueprint:
    """Blueprint of a brick-wall generator on qubit legs (``tz`` from ``qubit_tensorization``).

    Parameters
    ----------
    tz : Tensorization
        Every site dimension must be 2.
    depth : int
        Number of gate layers ``M`` (see the module docstring for the supported range).
    pattern : {"staircase", "brickwall"}
        Order of the pairs inside one layer.
    """
    depth = positive_int("depth (the number of gate layers)", depth, example=3)
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; use one of {PATTERNS}")
    if any(d != 2 for d in tz.site_dims):
        raise ValueError(
            f"brickwall acts on legs of dimension 2, got site dims {tz.site_dims}; "
            "build it through al.build('brickwall', ...) which chooses qubit modes"
        )
    q = tz.n_sites
    b = Builder(tz)
    legs = []
    for k in range(q):
        leg = b.bond(2)
        b.core(f"v{k}", (leg,), 0, "vector", constant=True, value=[1.0, 0.0], fan_in=1,
               pos=(k, 0))
        legs.append(leg)
    order = _pairs(q, pattern)
    # in the last layer, the last gate that touches a site writes that site's physical leg
    last_touch = {s: g for g, k in enumerate(order) for s in (k, k + 1)}
    for m in range(1, depth + 1):
        for g, k in enumerate(order):
            outs = tuple(
                b.physical(s) if m == depth and last_touch[s] == g else b.bond(2)
                for s in (k, k + 1)
            )
            if pattern == "staircase":
                row = m + 0.8 * g / len(order)
            else:
                row = m + (0.0 if k % 2 == 0 else 0.45)
            b.core(f"g{m}_{k}", (legs[k], legs[k + 1], *outs), m, "gate", fan_in=4,
                   pos=(k + 0.5, row))
            legs[k], legs[k + 1] = outs
    return b.blueprint("brickwall", depth + 1, set(range(1, depth)), depth=depth, pattern=pattern)
