"""Tensorisation: viewing a weight matrix of shape (O, I) as a tensor with N physical legs.

Site ``k`` carries the physical leg ``p_k`` of dimension ``d_k = o_k * i_k``. Row and column
indices are mixed-radix numbers over ``(o_1..o_N)`` and ``(i_1..i_N)`` (first mode most
significant). ``O' = prod(o_k) >= O`` and ``I' = prod(i_k) >= I``; the generated ``W'`` of shape
``(O', I')`` is cropped to ``W = W'[:O, :I]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import autoray as ar
import numpy as np

__all__ = [
    "Tensorization",
    "tensorize",
    "qubit_tensorization",
    "balanced_factors",
    "default_n_sites",
    "check_features",
]

# how much one unit of log-imbalance (max/min factor) weighs against one unit of log-padding
_IMBALANCE_WEIGHT = 0.25


def check_features(name: str, value) -> int:
    """Validate a feature count and return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer (for example 784), got {value}")
    return int(value)


# loop steps one exact factorisation may take before the greedy one is used instead: the
# exact search is exponential in the number of factors, and a layer of 10^9 features would
# otherwise hang here (every size the exact search finishes keeps its exact result)
_EXACT_BUDGET = 200_000
# and all of them together, over the padded sizes one call of balanced_factors tries
_TOTAL_BUDGET = 3_000_000


@lru_cache(maxsize=4096)
def _most_balanced(n: int, k: int, smallest: int = 1) -> tuple[tuple[int, ...] | None, int]:
    """Most balanced factorisation of ``n`` into ``k`` non-decreasing factors >= ``smallest``
    (None when there is none, ``_OVER_BUDGET`` when the search ran out of steps), and the
    number of steps the search took."""
    steps = [0]
    memo: dict[tuple[int, int, int], tuple[int, ...] | None] = {}

    def search(n: int, k: int, smallest: int):
        key = (n, k, smallest)
        if key in memo:
            return memo[key]
        if k == 1:
            return (n,) if n >= smallest else None
        best, best_ratio = None, math.inf
        target = n ** (1.0 / k)
        f = smallest
        while f <= target + 1e-9:
            steps[0] += 1
            if steps[0] > _EXACT_BUDGET:
                raise _OverBudget
            if n % f == 0:
                rest = search(n // f, k - 1, f)
                if rest is not None:
                    ratio = rest[-1] / f
                    if ratio < best_ratio:
                        best, best_ratio = (f, *rest), ratio
            f += 1
        memo[key] = best
        return best

    try:
        return search(n, k, smallest), steps[0]
    except _OverBudget:
        return _OVER_BUDGET, steps[0]


class _OverBudget(Exception):
    pass


_OVER_BUDGET = ()  # what _most_balanced returns when its search ran out of steps


def _prime_factors(n: int) -> list[int]:
    out, f = [], 2
    while f * f <= n:
        while n % f == 0:
            out.append(f)
            n //= f
        f += 1 if f == 2 else 2
    if n > 1:
        out.append(n)
    return out


def _greedy_padded(n: int, k: int, best, best_score) -> tuple[int, ...]:
    """:func:`balanced_factors` for numbers too large for the exact search."""
    for m in range(n, min(2 * n, n + 512) + 1):
        pad = math.log(m / n)
        if pad >= best_score:
            break
        fac = _greedy_balanced(m, k)
        score = pad + _IMBALANCE_WEIGHT * math.log(fac[-1] / fac[0])
        if score < best_score:
            best, best_score = fac, score
    return tuple(sorted(best, reverse=True))


def _greedy_balanced(n: int, k: int) -> tuple[int, ...]:
    """Balanced factors of ``n`` by placing each prime, largest first, on the smallest factor."""
    factors = [1] * k
    for p in sorted(_prime_factors(n), reverse=True):
        i = min(range(k), key=factors.__getitem__)
        factors[i] *= p
    return tuple(sorted(factors))


def balanced_factors(n: int, k: int) -> tuple[int, ...]:
    """Balanced factors of some ``n' >= n`` with minimal padding, largest first.

    Searches ``n' = n .. 2n`` and scores ``log(n'/n) + 0.25 * log(max/min)``, so an exact but
    lopsided factorisation loses to a slightly padded balanced one.

    Parameters
    ----------
    n : int
        Number to cover (a feature count).
    k : int
        Number of factors (sites).

    Returns
    -------
    tuple of int, length ``k``
        Factors in non-increasing order; their product is at least ``n``.
    """
    if k == 1:
        return (n,)
    lo = max(1, math.floor(n ** (1.0 / k)))
    # always-available fallback: floor/ceil mixture
    best, best_score = None, math.inf
    for j in range(k + 1):
        cand = (lo + 1,) * j + (lo,) * (k - j)
        if math.prod(cand) >= n:
            best = cand
            best_score = math.log(math.prod(cand) / n) + _IMBALANCE_WEIGHT * math.log(
                max(cand) / min(cand)
            )
            break
    limit = min(2 * n, n + 4096)
    spent = 0
    for m in range(n, limit + 1):
        pad = math.log(m / n)
        if pad >= best_score:
            break
        fac, steps = _most_balanced(m, k)
        spent += steps
        if fac == _OVER_BUDGET or spent > _TOTAL_BUDGET:
            # too large for the exact search: place primes greedily over a short padding range
            return _greedy_padded(n, k, best, best_score)
        if fac is None:
            continue
        score = pad + _IMBALANCE_WEIGHT * math.log(fac[-1] / fac[0])
        if score < best_score:
            best, best_score = fac, score
    return tuple(sorted(best, reverse=True))


# below this many elements the plain many-axis transpose is as fast
_FAST_UNSHUFFLE_MIN = 1 << 14


@lru_cache(maxsize=256)
def _unshuffle_plan(tz: Tensorization):
    """Split the sites into a head and a tail of similar size, and the index permutations
    that separate each part's row and column digits.

    A transpose over ``2N`` small axes (one per mode) is slow: it moves one element at a time
    through a ``2N``-deep index loop. The same permutation is done here as two gathers of whole
    rows and columns (``(Dh, Dt)`` view, each gather a permutation of one axis) and one
    transpose of four large axes ``(Oh, Ih, Ot, It) -> (Oh, Ot, Ih, It)``.
    """
    dims = tz.site_dims
    logs = np.cumsum(np.log(dims))
    head = int(np.argmin(np.abs(logs[:-1] - logs[-1] / 2))) + 1

    def digits_apart(sites):
        o = [tz.out_modes[k] for k in sites]
        i = [tz.in_modes[k] for k in sites]
        split = [d for pair in zip(o, i) for d in pair]
        n = len(sites)
        perm = tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2))
        order = np.arange(math.prod(split)).reshape(split).transpose(perm).reshape(-1)
        return order, math.prod(o), math.prod(i)

    h_order, oh, ih = digits_apart(range(head))
    t_order, ot, it = digits_apart(range(head, tz.n_sites))
    return h_order, t_order, (oh, ih, ot, it)


def _torch_grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _take(x, order, axis: int):
    """``x`` with its ``axis`` permuted by ``order`` (numpy, CuPy or torch)."""
    if ar.infer_backend(x) == "torch":
        import torch

        index = torch.as_tensor(order, device=x.device)
        return torch.index_select(x, axis, index)
    return ar.do("take", x, ar.do("asarray", order, like=x), axis=axis)


def _unshuffle(wp, tz: Tensorization):
    """``wp`` (site order, modes interleaved) as ``(O', I')`` digits (rows first)."""
    if ar.infer_backend(wp) == "torch" and wp.requires_grad:
        return _torch_unshuffle().apply(wp, tz)
    return _unshuffle_forward(wp, tz)


def _unshuffle_forward(wp, tz):
    h_order, t_order, _ = _unshuffle_plan(tz)
    return unshuffle_rows_columns(ar.do("reshape", wp, (len(h_order), len(t_order))), tz)


def unshuffle_rows_columns(w, tz: Tensorization):
    """The gathers and transpose of :func:`_unshuffle_forward` on ``wp`` already viewed as
    (head, tail) rows and columns; each intermediate is dropped once the next exists.

    Returns
    -------
    array, shape (Oh, Ot, Ih, It): reshape to (O', I') for the padded weight
    """
    h_order, t_order, (oh, ih, ot, it) = _unshuffle_plan(tz)
    w = _take(w, t_order, 1)
    w = _take(w, h_order, 0)
    w = ar.do("reshape", w, (oh, ih, ot, it))
    return ar.do("transpose", w, (0, 2, 1, 3))


def _unshuffle_backward(w, tz):
    """Inverse of :func:`_unshuffle_forward`: ``(O', I')`` back to ``site_dims``."""
    h_order, t_order, (oh, ih, ot, it) = _unshuffle_plan(tz)
    w = ar.do("reshape", w, (oh, ot, ih, it))
    w = ar.do("transpose", w, (0, 2, 1, 3))
    w = ar.do("reshape", w, (len(h_order), len(t_order)))
    w = _take(w, np.argsort(h_order), 0)
    w = _take(w, np.argsort(t_order), 1)
    return ar.do("reshape", w, tz.site_dims)


@lru_cache(maxsize=1)
def _torch_unshuffle():
    """A torch autograd function whose backward is the inverse gather, not a scatter."""
    import torch

    class Unshuffle(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type="cpu")
        def forward(ctx, wp, tz):
            ctx.tz = tz
            return _unshuffle_forward(wp, tz)

        @staticmethod
        @torch.amp.custom_bwd(device_type="cpu")
        def backward(ctx, grad):
            return _unshuffle_backward(grad, ctx.tz), None

    return Unshuffle


def default_n_sites(out_features: int, in_features: int, leg_dim: float = 16.0) -> int:
    """Number of sites so that each physical leg has dimension about ``leg_dim``."""
    return max(2, round(math.log(out_features * in_features) / math.log(leg_dim)))


def _check_modes(name: str, modes, features: int, feature_name: str) -> tuple[int, ...]:
    try:
        modes = tuple(int(m) for m in modes)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {modes!r}") from None
    if not modes or any(m <= 0 for m in modes):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {modes}")
    if math.prod(modes) < features:
        suggestion = balanced_factors(features, len(modes))
        raise ValueError(
            f"{name} {modes} multiply to {math.prod(modes)}, fewer than {feature_name}="
            f"{features}; use modes whose product is at least {features}, e.g. {suggestion}"
        )
    return modes


@dataclass(frozen=True)
class Tensorization:
    """How a weight of shape ``(out_features, in_features)`` maps onto physical legs.

    Attributes
    ----------
    out_features, in_features : int
        Shape ``(O, I)`` of the weight.
    out_modes, in_modes : tuple of int, length N
        Per-site factors ``o_k`` and ``i_k``.
    """

    out_features: int
    in_features: int
    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]

    @property
    def n_sites(self) -> int:
        return len(self.out_modes)

    @property
    def site_dims(self) -> tuple[int, ...]:
        """Dimension ``d_k = o_k * i_k`` of each physical leg."""
        return tuple(o * i for o, i in zip(self.out_modes, self.in_modes))

    @property
    def padded_out(self) -> int:
        return math.prod(self.out_modes)

    @property
    def padded_in(self) -> int:
        return math.prod(self.in_modes)

    @property
    def physical_inds(self) -> tuple[str, ...]:
        """Index names ``p0, p1, ...`` of the physical legs."""
        return tuple(f"p{k}" for k in range(self.n_sites))

    def to_matrix(self, wp):
        """Map the physical tensor to the cropped weight.

        Parameters
        ----------
        wp : array, shape ``site_dims``
            Tensor with one axis per physical leg, in site order.

        Returns
        -------
        array, shape (out_features, in_features)
        """
        if ar.infer_backend(wp) == "torch":
            from .engine import matrix_layout

            if matrix_layout.usable(wp):  # one gather through two offset tables (CPU)
                if wp.requires_grad and _torch_grad_enabled():
                    return matrix_layout.to_matrix_autograd(wp, self)
                return matrix_layout.to_matrix(wp, self)
        if self.n_sites < 3 or math.prod(self.site_dims) < _FAST_UNSHUFFLE_MIN:
            n = self.n_sites
            split = [d for pair in zip(self.out_modes, self.in_modes) for d in pair]
            w = ar.do("reshape", wp, tuple(split))
            perm = tuple(range(0, 2 * n, 2)) + tuple(range(1, 2 * n, 2))
            w = ar.do("transpose", w, perm)
        else:
            w = _unshuffle(wp, self)
        w = ar.do("reshape", w, (self.padded_out, self.padded_in))
        return w[: self.out_features, : self.in_features]

    def from_matrix(self, w):
        """Inverse of :meth:`to_matrix`: zero-pad ``w`` to ``(O', I')`` and split its legs.

        Also the adjoint of :meth:`to_matrix` (cropping and reordering are orthogonal maps),
        which is how the lean backward pass turns the gradient of ``W`` into that of the
        physical tensor.

        Parameters
        ----------
        w : numpy or torch array, shape (out_features, in_features)

        Returns
        -------
        array of the same library, shape ``site_dims``
        """
        if ar.infer_backend(w) == "torch" and tuple(w.shape) == (self.out_features,
                                                                 self.in_features):
            from .engine import matrix_layout

            if matrix_layout.usable(w) and not (w.requires_grad and _torch_grad_enabled()):
                return matrix_layout.from_matrix(w, self)
        padded = (self.padded_out, self.padded_in)
        if ar.infer_backend(w) in ("torch", "cupy") and tuple(w.shape) == padded:
            full = w
        else:
            w = w if ar.infer_backend(w) in ("torch", "cupy") else np.asarray(w)
            full = ar.do("zeros", padded, like=w, dtype=w.dtype)
            full[: self.out_features, : self.in_features] = w
        if self.n_sites >= 3 and math.prod(self.site_dims) >= _FAST_UNSHUFFLE_MIN:
            return _unshuffle_backward(full, self)
        n = self.n_sites
        full = ar.do("reshape", full, self.out_modes + self.in_modes)
        perm = tuple(ax for k in range(n) for ax in (k, n + k))
        return ar.do("reshape", ar.do("transpose", full, perm), self.site_dims)

    def to_dict(self) -> dict:
        return {
            "out_features": self.out_features,
            "in_features": self.in_features,
            "out_modes": list(self.out_modes),
            "in_modes": list(self.in_modes),
        }


def tensorize(out_features, in_features, *, n_sites=None, out_modes=None, in_modes=None,
              leg_dim: float = 16.0) -> Tensorization:
    """Choose per-site modes for a weight of shape ``(out_features, in_features)``.

    Parameters
    ----------
    out_features, in_features : int
        Shape of the weight.
    n_sites : int, optional
        Number of sites ``N``; by default each leg gets a dimension near ``leg_dim``.
    out_modes, in_modes : sequence of int, optional
        Explicit factors; their products must cover the features.
    leg_dim : float
        Target physical-leg dimension when ``n_sites`` is not given.

    Returns
    -------
    Tensorization
    """
    out_features = check_features("out_features", out_features)
    in_features = check_features("in_features", in_features)
    if out_modes is not None:
        out_modes = _check_modes("out_modes", out_modes, out_features, "out_features")
    if in_modes is not None:
        in_modes = _check_modes("in_modes", in_modes, in_features, "in_features")
    given = [len(m) for m in (out_modes, in_modes) if m is not None]
    if n_sites is None:
        n_sites = given[0] if given else default_n_sites(out_features, in_features, leg_dim)
    if isinstance(n_sites, bool) or not isinstance(n_sites, (int, np.integer)) or n_sites < 1:
        raise ValueError(f"n_sites must be a positive integer, got {n_sites!r}")
    n_sites = int(n_sites)
    if any(g != n_sites for g in given):
        raise ValueError(
            f"out_modes and in_modes must have one entry per site: got lengths {given} "
            f"for n_sites={n_sites}"
        )
    if out_modes is None:
        out_modes = _spread(balanced_factors(out_features, n_sites), offset=0.0)
    if in_modes is None:
        # pair large output factors with small input factors so that site dims stay even
        in_modes = _spread(tuple(reversed(balanced_factors(in_features, n_sites))), offset=0.5)
    return Tensorization(out_features, in_features, tuple(out_modes), tuple(in_modes))


def _spread(factors: tuple[int, ...], offset: float) -> tuple[int, ...]:
    """Spread the non-trivial factors evenly over the sites.

    With more sites than a feature count has factors, the rest are 1; left together they
    would put every output factor on one end of the network and every input factor on the
    other, and a tree or chain would then couple rows and columns through a single bond.
    """
    n = len(factors)
    real = [f for f in factors if f > 1]
    if len(real) in (0, n):
        return factors
    out = [1] * n
    step = n / len(real)
    for j, f in enumerate(real):
        out[min(n - 1, int((j + offset) * step))] = f
    return tuple(out)


def qubit_tensorization(out_features, in_features) -> Tensorization:
    """Qubit-style tensorisation: every physical leg has dimension 2.

    ``O' = 2**a`` and ``I' = 2**b`` are the next powers of two; the ``a + b`` one-bit sites
    alternate between output bits and input bits (most significant first) while both last, so
    that coarse row and column scales sit next to each other.
    """
    out_features = check_features("out_features", out_features)
    in_features = check_features("in_features", in_features)
    a = max(0, math.ceil(math.log2(out_features)))
    b = max(0, math.ceil(math.log2(in_features)))
    if a + b < 2:
        raise ValueError(
            f"a {out_features}x{in_features} weight has fewer than 2 bits; the brick-wall "
            "family needs out_features * in_features >= 3"
        )
    out_modes, in_modes = [], []
    ia = ib = 0
    while ia < a or ib < b:
        if ia < a and (ia <= ib or ib >= b):
            out_modes.append(2)
            in_modes.append(1)
            ia += 1
        else:
            out_modes.append(1)
            in_modes.append(2)
            ib += 1
    return Tensorization(out_features, in_features, tuple(out_modes), tuple(in_modes))
