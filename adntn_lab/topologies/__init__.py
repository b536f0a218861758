"""Generator families: each builder turns a tensorisation and options into a Blueprint."""

from ._blueprint import Blueprint, Builder, CoreSpec
from .brickwall import PATTERNS, build_brickwall
from .linear import build_lowrank, build_mpo
from .mera import build_mera
from .ttn import build_attn, build_ttn

__all__ = [
    "Blueprint",
    "Builder",
    "CoreSpec",
    "PATTERNS",
    "build_attn",
    "build_brickwall",
    "build_lowrank",
    "build_mera",
    "build_mpo",
    "build_ttn",
]
