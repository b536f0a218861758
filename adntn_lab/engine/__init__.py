"""The execution engine: from a staged network's structure to ``W``, its gradient and its costs.

One module per concern:

- :mod:`.planning`: the stage groups of a network and one cotengra contraction tree per group,
  found once per structure (memory and optional on-disk cache).
- :mod:`.program`: :class:`Program`, the compiled plan run stage by stage on numpy, torch or CuPy
  arrays; schedules (materialise ``W``, or fuse the input batch into the last stage) and slicing.
- :mod:`.matmul_steps`: each pairwise contraction of a tree laid out in advance as one (batched)
  matrix product, with every intermediate's index order chosen so no transpose is needed.
- :mod:`.step_products`: those products on CPU with a backward laid out for the BLAS (summed
  gradients of a repeated operand accumulated in one ``addbmm``).
- :mod:`.gate_chains`: long chains of small 2-qubit gates (the brick-wall family) merged into
  matmul-sized blocks by a measured cost model.
- :mod:`.lean_backward`: the low-memory backward pass that keeps only the cores and rebuilds
  intermediates block by block (``recompute="lean"``).
- :mod:`.cupy_backend`: contraction on a CUDA GPU with CuPy, with a torch autograd bridge.
- :mod:`.backends`: which array library and device run a contraction (numpy, torch, CuPy).
- :mod:`.cost`: the :class:`CostReport` (FLOPs, bytes, peak memory, every step) of a plan.
- :mod:`.allocator`: opt-in glibc allocator tuning for large tensors.
- :mod:`.walk`: the one stage walk (:class:`Front`, :func:`walk`) every consumer shares, and
  :class:`StepRecord`, the record of one pairwise step (planned or captured).
- :mod:`.arrays`: one spelling for array calls on numpy, CuPy and torch.

The names below are the engine's public surface; everything else is internal. The data flow,
where each concern lives and how to add a schedule are described in ``docs/engine.md``.
"""

from .allocator import allocator_status, tune_allocator
from .backends import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    check_arrays,
    resolve_backend,
    to_backend,
)
from .cost import (
    SCHEDULES,
    CostReport,
    StageCost,
    choose_schedule,
    cost_report,
    estimate_schedules,
)
from .planning import OPTIMIZERS, GroupPlan, Plan, plan_cache_info, plan_structure, set_plan_cache
from .program import RECOMPUTE, MemoryLimitError, Program
from .walk import Front, StepRecord, pairwise_steps, walk

__all__ = [
    "BACKENDS",
    "OPTIMIZERS",
    "RECOMPUTE",
    "SCHEDULES",
    "BackendUnavailableError",
    "CostReport",
    "Front",
    "GroupPlan",
    "MemoryLimitError",
    "Plan",
    "Program",
    "StageCost",
    "StepRecord",
    "allocator_status",
    "available_backends",
    "check_arrays",
    "choose_schedule",
    "cost_report",
    "estimate_schedules",
    "pairwise_steps",
    "plan_cache_info",
    "plan_structure",
    "resolve_backend",
    "set_plan_cache",
    "to_backend",
    "tune_allocator",
    "walk",
]
