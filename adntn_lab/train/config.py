"""The configuration of a training run (:class:`RunConfig`, stored as ``config.json``) and the
one translation from a run's budget value to a generator's options."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..families import all_families, get_family
from .loop import LR_SCHEDULES, OPTIMIZERS

__all__ = ["DEFAULT_COMPRESS", "FAMILY_OPTIONS", "STRATEGIES", "RunConfig",
           "budget_build_options", "copy_config"]


STRATEGIES = ("e2e", "fit-finetune", "dmrg")


DEFAULT_COMPRESS = {"fc2": ("fc1",), "lenet5": ("fc1", "fc2"), "vgg": ("fc1", "fc2")}


# options a run may set: every family's own (from the registry) and the tensorisation
FAMILY_OPTIONS = (*sorted({o.name for f in all_families() for o in f.options} - {"bond_dim"}),
                  "n_sites", "in_modes", "out_modes")


DENSE = ("dense", "none")


# settings that may change between an interrupted run and its continuation
RESUMABLE_CHANGES = ("epochs", "device", "lr")


def budget_build_options(family: str, budget: int, *, options: Mapping[str, Any] | None = None,
                         activation: str | None = None, seed: int | None = None
                         ) -> dict[str, Any]:
    """Builder keywords of one sweep or run point: ``budget`` sets the family's knob.

    The one translation from a budget value to options, shared by runs, sweeps and the
    explorer, so that a row's ``bond_dim`` always rebuilds the generator it was trained with.
    """
    fam = get_family(family)
    opts: dict[str, Any] = {} if seed is None else {"seed": seed}
    if activation is not None:
        opts["activation"] = activation
    opts.update(options or {})
    if fam.knob not in opts:
        opts.update(fam.budget_options(budget))
    return opts


def check_device(text: str) -> torch.device:
    """The device named by ``text``, or a ValueError that says what would work."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"unknown device {text!r}; use 'cpu', 'cuda' or 'cuda:N' (an NVIDIA GPU), or 'mps' "
            "(Apple)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"device {text!r} is not available: {why} (torch "
                             f"{torch.__version__}); use device 'cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {text!r} does not exist: {count} CUDA device(s), "
                             f"cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {text!r} is not available on this machine; use 'cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {text!r} is not supported for training; use 'cpu', 'cuda' "
                         "or 'mps'")
    return device


@dataclass
class RunConfig:
    """Everything that defines a training run (stored as ``config.json``).

    Attributes
    ----------
    model : {"fc2", "lenet5", "vgg"}
    dataset : str
        See :func:`adntn_lab.data.load_dataset`.
    family : str or None
        Generator family for the compressed layers; None or ``"dense"`` trains the dense model.
    compress : list of str or None
        Layer-name patterns to compress; None means the model's default (``fc1`` for FC-2,
        ``fc1`` and ``fc2`` for LeNet-5 and the VGG).
    bond_dim : int
    activation : str or None
        Activation between stages; None takes the family's default (ReLU for the nonlinear
        families; MPO and low-rank have none).
    options : dict
        Family options: ``depth``, ``pattern`` (brick-wall), ``rank`` (low-rank; defaults to
        ``bond_dim``), ``n_cores`` (MPO), ``lateral`` (TTN, MERA).
    strategy : {"e2e", "fit-finetune", "dmrg"}
    epochs, lr, batch_size, seed : training settings; ``seed`` seeds the model's initialisation,
        the generators and the data order.
    optimizer : {"adam", "adamw", "sgd"}
    weight_decay : float
    lr_schedule : {"constant", "cosine"}
    hidden : int or None
        FC-2 hidden width (None: 256).
    dense_epochs, fit_steps : fit-finetune settings.
    data_seed : int
        Seed of the train/test split of the bundled datasets (0: the project's fixed split).
    device : str
    """

    model: str = "fc2"
    dataset: str = "mnist-5k"
    family: str | None = None
    compress: list[str] | None = None
    bond_dim: int = 4
    activation: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    strategy: str = "e2e"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    hidden: int | None = None
    dense_epochs: int = 2
    fit_steps: int = 500
    data_seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        self.model = str(self.model).lower()
        if self.family is not None:
            self.family = str(self.family).lower()
            if self.family in DENSE:
                self.family = None
            else:
                get_family(self.family)  # an unknown name is refused here, with the known ones
        if self.compress is not None:
            if isinstance(self.compress, str):
                self.compress = [self.compress]
            self.compress = [str(p) for p in self.compress]
        unknown = set(self.options) - set(FAMILY_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown family options {sorted(unknown)}; known: {', '.join(FAMILY_OPTIONS)}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if self.strategy != "e2e" and self.family is None:
            raise ValueError(
                f"strategy {self.strategy!r} compresses layers; give a family (e.g. 'ttn')"
            )
        if self.strategy == "dmrg" and self.family != "mpo":
            raise ValueError("strategy 'dmrg' trains MPO cores by local sweeps; use family 'mpo'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose {LR_SCHEDULES}")
        for name in ("epochs", "batch_size", "bond_dim", "dense_epochs", "fit_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if self.epochs < 0 or self.dense_epochs < 0 or self.fit_steps < 0:
            raise ValueError("epochs, dense_epochs and fit_steps must be >= 0")
        if self.batch_size <= 0 or self.bond_dim <= 0:
            raise ValueError(
                f"batch_size and bond_dim must be positive, got {self.batch_size}, {self.bond_dim}"
            )
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {v!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        for name in ("seed", "data_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu', got {self.device!r}")

    @property
    def compress_patterns(self) -> list[str]:
        """Layer patterns that are compressed (empty for a dense run)."""
        if self.family is None:
            return []
        if self.compress is not None:
            return list(self.compress)
        return list(DEFAULT_COMPRESS.get(self.model, ("fc1",)))

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments for the generator builder (``bond_dim``, ``activation``, ...).

        ``bond_dim`` is the run's budget value: it sets the family's knob (the bond dimension,
        the rank of ``lowrank``, the depth of ``brickwall``) unless ``options`` set the knob.
        """
        return budget_build_options(self.family, self.bond_dim, options=self.options,
                                    activation=self.activation, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        if not isinstance(d, Mapping):
            raise TypeError(f"run settings must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}")
        return cls(**dict(d))

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``fc2/mnist-5k ttn chi=4 seed=0``."""
        if self.family is None:
            kind = "dense"
        else:
            kind = f"{self.family} {get_family(self.family).knob_label}={self.bond_dim}"
        return f"{self.model}/{self.dataset} {kind} seed={self.seed}"


def copy_config(config: RunConfig, **changes) -> RunConfig:
    """A copy of ``config`` with some settings replaced (validated again)."""
    d = copy.deepcopy(config.to_dict())
    d.update(changes)
    return RunConfig.from_dict(d)
