"""How a run builds its model: the dense base, the compressed layers (end to end, fitted then
fine-tuned, or by DMRG-style sweeps), and the summaries of what was compressed."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from .config import RunConfig

__all__ = ["StrategyUnavailableError", "build_run_model", "param_counts"]


class StrategyUnavailableError(RuntimeError):
    """The chosen training strategy is not available in this installation."""


def compress_for_run(model: nn.Module, config: RunConfig, fit_steps: int) -> nn.Module:
    from ..nn import compress_model

    return compress_model(
        model,
        topology=config.family,
        include=config.compress_patterns,
        min_params=0,
        fit_steps=fit_steps,
        **config.build_options(),
    )


def base_model(config: RunConfig, data) -> nn.Module:
    from ..models import build_model

    kwargs = {}
    if config.hidden is not None:
        if config.model != "fc2":
            raise ValueError("hidden sets the FC-2 hidden width; it applies to model 'fc2' only")
        kwargs["hidden"] = config.hidden
    torch.manual_seed(config.seed)
    return build_model(config.model, data, **kwargs)


def build_run_model(config: RunConfig, data) -> nn.Module:
    """The model a run trains, freshly initialised from ``config.seed`` (compressed if asked).

    For ``fit-finetune`` this is the structure only (generators not yet fitted); it is what a
    checkpoint of that run is loaded into.
    """
    model = base_model(config, data)
    if config.family is not None:
        model = compress_for_run(model, config, fit_steps=0)
    return model


def param_counts(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


def summary_rows(model: nn.Module) -> list[dict]:
    rows = getattr(model, "adntn_summary", None) or []
    out = []
    for row in rows:
        out.append({k: (v if isinstance(v, (int, float, str, bool, type(None))) else
                        list(v) if isinstance(v, (tuple, list)) else str(v))
                    for k, v in dict(row).items()})
    return out


def refresh_summary(model: nn.Module, layers: list[dict]) -> None:
    """Update ``params_after`` / ``ratio`` of compressed layers from their current generators."""
    modules = dict(model.named_modules())
    for row in layers:
        gen = getattr(modules.get(row.get("name")), "generator", None)
        if gen is not None and row.get("params_before"):
            row["params_after"] = int(gen.num_params)
            row["ratio"] = row["params_before"] / max(int(gen.num_params), 1)


def fit_errors(model: nn.Module) -> dict[str, float]:
    errs = {}
    for name, mod in model.named_modules():
        e = getattr(mod, "fit_error", None)
        if isinstance(e, (int, float)):
            errs[name] = float(e)
    return errs


def load_dmrg() -> Callable:
    try:
        mod = importlib.import_module("adntn_lab.train.dmrg")
    except ImportError as exc:
        raise StrategyUnavailableError(
            "strategy 'dmrg' needs adntn_lab.train.dmrg, which is not available in this "
            f"installation ({exc}); use strategy 'e2e' or 'fit-finetune'"
        ) from exc
    fn = getattr(mod, "dmrg_sweep", None)
    if fn is None:
        raise StrategyUnavailableError(
            "adntn_lab.train.dmrg has no dmrg_sweep function; use strategy 'e2e' or "
            "'fit-finetune'"
        )
    return fn
