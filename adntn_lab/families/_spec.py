"""What a generator family declares: its builder, options, sweep knob and parameter count.

A :class:`Family` is the one place that knows a family. :func:`adntn_lab.build`, the run
configuration of the training runs, the command line, the widgets and the demo all read it, so
adding a family means adding one module to :mod:`adntn_lab.families` that defines ``FAMILY``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tensorize import Tensorization, default_n_sites, tensorize
from ..topologies import Blueprint
from ..utils import positive_int as strict_int

__all__ = ["Family", "Option", "strict_int", "tree_tensorization"]


@dataclass(frozen=True)
class Option:
    """One family option.

    Attributes
    ----------
    name : str
        Keyword of :func:`adntn_lab.build` (and ``--name`` on the command line).
    kind : {"int", "bool", "choice", "int_or_ints"}
        ``int_or_ints`` takes one positive int or a sequence of them (MPO bond dimensions left
        by rank-adapting sweeps).
    default : Any
        Value when the option is not given (None: decided by the family, e.g. the rank of
        ``lowrank`` follows ``bond_dim``).
    help : str
        One line for the command line and the designer.
    choices : tuple of str
        Allowed values of a ``choice`` option.
    minimum : int
        Smallest allowed value of an integer option.
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int = 1

    def parse(self, value, family: str):
        """The validated value of this option for ``family`` (raises ValueError/TypeError)."""
        what = f"{family} option {self.name}"
        if value is None:
            return self.default
        if self.kind == "int":
            return strict_int(what, value, minimum=self.minimum)
        if self.kind == "int_or_ints":
            if isinstance(value, Sequence) and not isinstance(value, str):
                return tuple(strict_int(f"{what}[{k}]", v, minimum=self.minimum)
                             for k, v in enumerate(value))
            return strict_int(what, value, minimum=self.minimum)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{what} must be True or False, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{what} must be one of {', '.join(self.choices)}, "
                                 f"got {value!r}")
            return value
        raise AssertionError(f"unknown option kind {self.kind!r}")  # a family definition bug


def tree_tensorization(out_features: int, in_features: int, *, n_sites=None, out_modes=None,
                       in_modes=None, leg_dim: float = 16.0, min_sites: int = 3) -> Tensorization:
    """Site factors for a family with physical legs of about ``leg_dim`` (at least
    ``min_sites`` sites unless modes or ``n_sites`` are given)."""
    if n_sites is None and out_modes is None and in_modes is None:
        n_sites = max(min_sites, default_n_sites(out_features, in_features, leg_dim))
    return tensorize(out_features, in_features, n_sites=n_sites, out_modes=out_modes,
                     in_modes=in_modes, leg_dim=leg_dim)


def _blueprint_params(family: Family, tz: Tensorization, options: Mapping[str, Any]) -> int:
    """Trainable parameters counted from the blueprint (structure only, no arrays)."""
    bp = family.blueprint(tz, options)
    return sum(c.size for c in bp.cores if not c.constant)


@dataclass(frozen=True)
class Family:
    """A generator family.

    Attributes
    ----------
    name : str
        The name users pass to :func:`adntn_lab.build`.
    summary : str
        One line: what the family is.
    builder : callable
        ``builder(tz, **options) -> Blueprint``.
    options : tuple of Option
        The family's own options (``bond_dim`` among them where it has one).
    knob : str
        The option a budget sweep varies (``bond_dim``, ``rank`` or ``depth``); a sweep or run
        configuration's budget value sets it.
    nonlinear : bool
        Whether it has activations between stages (``relu`` by default).
    role : {"generator", "baseline"}
        Baselines (MPO, low-rank) are drawn as such in the explorer.
    takes_modes : bool
        Whether ``in_modes``/``out_modes``/``n_sites`` apply.
    tensorizer : callable
        ``tensorizer(out_features, in_features, n_sites=, out_modes=, in_modes=) ->
        Tensorization``.
    param_formula : callable, optional
        ``param_formula(tz, options) -> int`` in closed form; without it parameters are counted
        from the blueprint (also structure only).
    designer_fields : tuple of str
        Form fields the topology designer shows for it.
    aliases : dict
        Alternative keywords (``lowrank`` reads ``bond_dim`` as its ``rank``).
    site_option : str, optional
        A family option that is another name for ``n_sites`` (``n_cores`` for ``mpo``).
    legs : str
        What its physical legs are, for messages (``"qubit legs"`` for the brick-wall).
    order : int
        Position in :data:`adntn_lab.FAMILIES`.
    """

    name: str
    summary: str
    builder: Callable[..., Blueprint]
    options: tuple[Option, ...]
    knob: str
    nonlinear: bool
    tensorizer: Callable[..., Tensorization]
    role: str = "generator"
    takes_modes: bool = True
    param_formula: Callable[[Tensorization, Mapping[str, Any]], int] | None = None
    designer_fields: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    site_option: str | None = None
    legs: str = "legs"
    order: int = 100

    # ------------------------------------------------------------------ options
    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in.

        ``bond_dim`` is a common option of :func:`adntn_lab.build`: a family without one
        (brick-wall, whose gates are 2x2x2x2) does not use it, and its size is set by its own
        knob (:attr:`knob`).
        """
        given = {k: v for k, v in options.items() if v is not None}
        for alias, target in self.aliases.items():
            if alias in given:
                value = given.pop(alias)
                given.setdefault(target, value)
        if "bond_dim" not in self.option_names:
            given.pop("bond_dim", None)
        unknown = sorted(set(given) - set(self.option_names))
        if unknown:
            allowed = ", ".join(self.option_names) or "none"
            raise TypeError(f"{self.name} got unexpected option(s) {unknown}; its options are "
                            f"{allowed} (plus bond_dim, activation, in_modes, out_modes, "
                            "n_sites, seed)")
        return {o.name: o.parse(given.get(o.name), self.name) for o in self.options}

    def budget_options(self, value: int) -> dict[str, Any]:
        """The options a sweep's budget value stands for: ``{knob: value}``."""
        return {self.knob: strict_int(f"{self.name} {self.knob}", value)}

    @property
    def knob_label(self) -> str:
        """``chi`` for the bond dimension, else the knob's own name (``rank``, ``depth``)."""
        return "chi" if self.knob == "bond_dim" else self.knob

    # ------------------------------------------------------------------ structure
    def tensorize(self, out_features: int, in_features: int, *, n_sites=None, out_modes=None,
                  in_modes=None, options: Mapping[str, Any] | None = None) -> Tensorization:
        """The tensorisation of a ``(out_features, in_features)`` weight for this family."""
        options = options or {}
        if self.site_option is not None and options.get(self.site_option) is not None:
            k = options[self.site_option]
            if n_sites is not None and n_sites != k:
                raise ValueError(f"give either {self.site_option} or n_sites for {self.name}, "
                                 "not both")
            n_sites = k
        if not self.takes_modes and (out_modes is not None or in_modes is not None
                                     or n_sites is not None):
            raise ValueError(f"{self.name} chooses its own {self.legs}; leave out_modes, "
                             "in_modes and n_sites unset")
        if n_sites is not None:
            n_sites = strict_int("n_sites", n_sites)
        return self.tensorizer(out_features, in_features, n_sites=n_sites,
                               out_modes=out_modes, in_modes=in_modes)

    def builder_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved options the builder takes (the site option goes to tensorize)."""
        return {k: v for k, v in options.items() if k != self.site_option}

    def blueprint(self, tz: Tensorization, options: Mapping[str, Any]) -> Blueprint:
        return self.builder(tz, **self.builder_options(options))

    def num_params(self, tz: Tensorization, options: Mapping[str, Any]) -> int:
        """Trainable parameters of this family on ``tz`` with resolved ``options``."""
        count = self.param_formula(tz, options) if self.param_formula is not None else None
        if count is None:  # no closed form for these options
            count = _blueprint_params(self, tz, options)
        return int(count)


def uniform_tree_params(site_dims: Sequence[int], chi: int) -> int:
    """Parameters of a binary TTN with uniform bond ``chi``: leaves, internal nodes, root."""
    n = len(site_dims)
    return sum(d * chi for d in site_dims) + max(n - 2, 0) * chi**3 + chi**2


def mpo_params(site_dims: Sequence[int], bonds) -> int:
    n = len(site_dims)
    dims = list(bonds) if isinstance(bonds, Sequence) else [bonds] * (n - 1)
    left = [1, *dims]
    right = [*dims, 1]
    return sum(left[k] * site_dims[k] * right[k] for k in range(n))


def padded_size(tz: Tensorization) -> int:
    """Elements of the generated tensor before cropping (``O' * I'``)."""
    return math.prod(tz.site_dims)
