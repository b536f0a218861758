"""Training: a deterministic resumable loop, safetensors checkpoints, run folders and sweeps.

``fit`` / ``evaluate`` live in :mod:`.loop` and its records (``History``, ``TrainState``,
``Evaluation``) in :mod:`.records`; checkpoints in :mod:`.checkpoint`; a run's settings
(``RunConfig``) in :mod:`.config`, how it builds its model (end to end, fit then fine-tune,
DMRG sweeps) in :mod:`.strategies`, and its folder (config, metrics, checkpoint, curves) in
:mod:`.runs`; grids of runs, on any ``concurrent.futures`` executor, in :mod:`.sweep`;
data-parallel training over torch.distributed in :mod:`.distributed`.
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .loop import evaluate, fit, make_optimizer
from .records import Evaluation, History, TrainState

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
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    if name == "run_training":
        from .runs import run_training

        return run_training
    if name == "run_sweep":
        from . import sweep

        return sweep.run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
