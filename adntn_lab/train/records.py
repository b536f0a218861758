"""Training records: the per-step and per-epoch history, evaluations, and the resumable
state of the loop (:class:`TrainState`), all JSON-serialisable for checkpoints."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Evaluation", "History", "TrainState"]


@dataclass
class History:
    """Per-epoch and per-step training records.

    Attributes
    ----------
    epoch : list of int
        1-based epoch numbers, one entry per completed epoch.
    train_loss, train_acc : list of float
        Mean cross-entropy and accuracy over the epoch's training batches (train mode).
    test_loss, test_acc : list of float
        Loss and accuracy on the test split at the end of the epoch (eval mode); NaN when no
        test split was given.
    epoch_time : list of float
        Wall-clock seconds spent in each epoch (training plus evaluation).
    step_loss : list of float
        Loss of every optimiser step, in order.
    stopped : bool
        True when the last call to :func:`fit` ended early on a stop request.
    events : list of dict
        Things that happened to the run besides steps, in order: ``{"event": "diverged",
        "epoch", "step", "what", "lr"}`` when a step was rolled back, ``{"event":
        "lr_changed", "epoch", "step", "from", "to"}`` when a resume changed the learning
        rate (``step`` = steps done when it happened).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    stopped: bool = False
    events: list[dict] = field(default_factory=list)

    @property
    def wall_time(self) -> float:
        """Total seconds over the recorded epochs."""
        return float(sum(self.epoch_time))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as None)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, list) and k != "events":
                out[k] = [None if isinstance(x, float) and math.isnan(x) else x for x in v]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        kw = {}
        for name in cls.__dataclass_fields__:
            if name not in d:
                continue
            v = d[name]
            if name == "events":
                v = [dict(x) for x in v]
            elif isinstance(v, list) and name != "epoch":
                v = [math.nan if x is None else float(x) for x in v]
            elif name == "epoch":
                v = [int(x) for x in v]
            kw[name] = v
        return cls(**kw)

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        if not self.epoch:
            return f"History(0 epochs, {len(self.step_loss)} steps)"
        last = f"train loss {self.train_loss[-1]:.4f}, test acc {self.test_acc[-1]:.4f}"
        stop = ", stopped" if self.stopped else ""
        return (
            f"History({len(self.epoch)} epochs, {len(self.step_loss)} steps, {last}, "
            f"{self.wall_time:.1f} s{stop})"
        )


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`: mean cross-entropy ``loss``, ``accuracy`` in [0, 1], ``n``."""

    loss: float
    accuracy: float
    n: int


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().contiguous().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


@dataclass
class TrainState:
    """Everything besides the model's own weights that training needs to continue.

    Attributes
    ----------
    optimizer : torch.optim.Optimizer
        Built over the model's parameters after the model was moved to its device.
    optimizer_name : str
        ``"adam"``, ``"adamw"`` or ``"sgd"`` (used to rebuild it from a checkpoint).
    lr : float
        Base learning rate.
    seed : int
        Seed of data order and per-epoch random state.
    epoch : int
        Completed epochs.
    batch : int
        Batches done in the current, incomplete epoch (0 at an epoch boundary).
    step : int
        Optimiser steps done in total.
    history : History
    partial : dict
        Running sums of the incomplete epoch: ``loss_sum``, ``correct``, ``count``, ``time``.
    rng : dict or None
        Global random state inside the incomplete epoch (base64 of torch's byte states), so a
        run stopped mid-epoch continues exactly.
    """

    optimizer: torch.optim.Optimizer
    optimizer_name: str
    lr: float
    seed: int
    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: History = field(default_factory=History)
    partial: dict = field(default_factory=lambda: _empty_partial())
    rng: dict | None = None

    @classmethod
    def create(
        cls,
        model: nn.Module,
        *,
        lr: float,
        seed: int,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
    ) -> TrainState:
        """A fresh state with a new optimiser over ``model``'s trainable parameters."""
        from .loop import make_optimizer  # the loop owns the optimiser choices

        opt = make_optimizer(
            model, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum
        )
        return cls(optimizer=opt, optimizer_name=optimizer.lower(), lr=float(lr), seed=int(seed))

    def change_lr(self, lr: float) -> None:
        """Continue with base learning rate ``lr``; the change is recorded in the history."""
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0
                                        and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if float(lr) == self.lr:
            return
        self.history.events.append({"event": "lr_changed", "epoch": self.epoch,
                                    "step": self.step, "from": self.lr, "to": float(lr)})
        self.lr = float(lr)

    def to_meta(self) -> dict[str, Any]:
        """JSON-ready description of everything but the optimiser's tensors."""
        return {
            "optimizer_name": self.optimizer_name,
            "lr": self.lr,
            "seed": self.seed,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "history": self.history.to_dict(),
            "partial": dict(self.partial),
            "rng": self.rng,
        }


def _empty_partial() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}
