"""adntn_lab: nonlinear tensor-network generators for compressing neural-network layers.

>>> import adntn_lab as al
>>> gen = al.build("ttn", in_features=256, out_features=256, bond_dim=4, activation="relu")
>>> W = gen.weight()              # numpy array of shape (256, 256)
>>> report = gen.cost(batch_size=64)
"""

from .activations import ACTIVATIONS, Activation, get_activation
from .engine import (
    CostReport,
    MemoryLimitError,
    Program,
    StepRecord,
    allocator_status,
    plan_cache_info,
    set_plan_cache,
    tune_allocator,
)
from .engine.allocator import tune_from_environment
from .families import FAMILIES, get_family
from .generator import Generator, Stage, build, default_init_std, from_graph
from .numerics import ConditioningWarning
from .resources import ResourceLimitError, set_memory_budget
from .tensorize import Tensorization, qubit_tensorization, tensorize

tune_from_environment()  # opt-in only: a no-op unless ADNTN_LAB_ALLOCATOR=tuned

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "allocator_status",
    "ConditioningWarning",
    "CostReport",
    "FAMILIES",
    "Generator",
    "MemoryLimitError",
    "Program",
    "Stage",
    "StepRecord",
    "Tensorization",
    "build",
    "default_init_std",
    "from_graph",
    "get_family",
    "ResourceLimitError",
    "set_memory_budget",
    "get_activation",
    "plan_cache_info",
    "qubit_tensorization",
    "set_plan_cache",
    "tensorize",
    "tune_allocator",
]
