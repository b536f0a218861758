"""Training: a deterministic resumable loop, safetensors checkpoints, run folders and sweeps.

``fit`` / ``evaluate`` / ``History`` / ``TrainState`` live in :mod:`.loop`; checkpoints in
:mod:`.checkpoint`; compression strategies and run folders (config, metrics, checkpoint, curves)
in :mod:`.runs`; grids of runs, on any ``concurrent.futures`` executor, in :mod:`.sweep`;
data-parallel training over torch.distributed in :mod:`.distributed`.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .loop import Evaluation, History, TrainState, evaluate, fit, make_optimizer

__all__ = [
    "Checkpoint",
    "Evaluation",
    "History",
    "RunConfig",
    "TrainState",
    "evaluate",
    "fit",
    "load_checkpoint",
    "make_optimizer",
    "run_training",
    "run_sweep",
    "save_checkpoint",
]


def __getattr__(name):  # heavier modules load on first use
    if name in ("RunConfig", "run_training"):
        from . import runs

        return getattr(runs, name)
    if name == "run_sweep":
        from . import sweep

        return sweep.run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
