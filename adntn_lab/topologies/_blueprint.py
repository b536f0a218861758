"""The structural description every family produces: cores, bonds, stages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..tensorize import Tensorization

__all__ = ["CoreSpec", "Blueprint", "Builder"]


@dataclass(frozen=True)
class CoreSpec:
    """One core of a generator.

    Attributes
    ----------
    name : str
        Unique name, also its quimb tag and its parameter name.
    inds : tuple of str
        Index names, one per axis. Physical legs are ``p0, p1, ...``.
    shape : tuple of int
        Dimension of each axis.
    stage : int
        Stage the core is contracted in.
    kind : str
        Role in the family (``"leaf"``, ``"node"``, ``"root"``, ``"gate"``, ...).
    constant : bool
        Constants (boundary vectors) are not trainable.
    fan_in : int
        Product of the dimensions this core sums over when it is applied; sets its initial scale.
    sites : tuple of int
        Sites whose physical legs this core carries.
    """

    name: str
    inds: tuple[str, ...]
    shape: tuple[int, ...]
    stage: int
    kind: str
    constant: bool = False
    fan_in: int = 1
    sites: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Blueprint:
    """What a family builder returns; :class:`adntn_lab.Generator` compiles it."""

    family: str
    tensorization: Tensorization
    cores: list[CoreSpec]
    num_stages: int
    activated: set[int]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)


class Builder:
    """Small helper that hands out bond names and records cores.

    Parameters
    ----------
    tensorization : Tensorization
        Defines the physical legs ``p_k`` and their dimensions.
    """

    def __init__(self, tensorization: Tensorization):
        self.tz = tensorization
        self.dims: dict[str, int] = {
            ind: d for ind, d in zip(tensorization.physical_inds, tensorization.site_dims)
        }
        self.cores: list[CoreSpec] = []
        self.constants: dict[str, np.ndarray] = {}
        self.positions: dict[str, tuple[float, float]] = {}
        self._n = 0

    def bond(self, dim: int) -> str:
        """A fresh internal index of dimension ``dim``."""
        name = f"b{self._n}"
        self._n += 1
        self.dims[name] = int(dim)
        return name

    def physical(self, site: int) -> str:
        return f"p{site}"

    def core(self, name, inds, stage, kind, *, fan_in=None, constant=False, value=None,
             pos=None) -> CoreSpec:
        inds = tuple(inds)
        shape = tuple(self.dims[i] for i in inds)
        sites = tuple(int(i[1:]) for i in inds if i.startswith("p"))
        if fan_in is None:
            fan_in = max(1, round(math.sqrt(math.prod(shape))))
        spec = CoreSpec(name, inds, shape, int(stage), kind, constant, int(fan_in), sites)
        self.cores.append(spec)
        if constant:
            self.constants[name] = np.asarray(value, dtype=np.float64).reshape(shape)
        if pos is not None:
            self.positions[name] = (float(pos[0]), float(pos[1]))
        return spec

    def blueprint(self, family, num_stages, activated, **options) -> Blueprint:
        return Blueprint(
            family=family,
            tensorization=self.tz,
            cores=self.cores,
            num_stages=num_stages,
            activated=set(activated),
            constants=self.constants,
            positions=self.positions,
            options=options,
        )
