"""Checkpoints as single safetensors files, written atomically, loaded without unpickling.

Layout of ``<name>.safetensors``:

- tensors ``model/<state_dict key>`` — the model's state dict;
- tensors ``optimizer/<param index>/<key>`` — the optimiser's per-parameter state tensors;
- header metadata ``format`` = ``"adntn-lab-checkpoint/1"`` (the marker checked on load),
  ``digest`` = SHA-256 over every tensor's name, dtype, shape and bytes (detects corrupted
  data), and ``meta`` = a JSON document with the run configuration, the training position
  (epoch, batch, step), the history, random states, the optimiser's non-tensor state and param
  groups, and any extra JSON the caller adds.

The file is first written to a temporary file in the same folder and then moved over the target
with :func:`os.replace`, so a crash leaves either the old checkpoint or the new one, never half
of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .loop import History, TrainState, make_optimizer

__all__ = ["FORMAT", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "adntn-lab-checkpoint"
VERSION = 1
FORMAT_TAG = f"{FORMAT}/{VERSION}"


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


def _json_default(obj):
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"value of type {type(obj).__name__} cannot be stored in checkpoint metadata")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and :func:`os.replace`."""
    _atomic_write_bytes(Path(path), text.encode("utf-8"))


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    state: TrainState | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a model (and optionally its training state) to one safetensors file.

    Parameters
    ----------
    path : path
        Target file, conventionally ``*.safetensors``; parent folders are created.
    model : nn.Module
        Its ``state_dict()`` (parameters and buffers) is stored.
    state : TrainState, optional
        Optimiser state, training position, history and random state.
    config : mapping, optional
        JSON-serialisable run configuration stored alongside.
    extra : mapping, optional
        Further JSON-serialisable metadata.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"state_dict entry {key!r} is a {type(value).__name__}; only tensors can be "
                "stored in a safetensors checkpoint"
            )
        tensors[f"model/{key}"] = value.detach().cpu().contiguous().clone()

    meta: dict[str, Any] = {
        "format_version": VERSION,
        "model_class": type(model).__qualname__,
        "config": dict(config) if config is not None else None,
        "extra": dict(extra) if extra is not None else None,
        "train_state": None,
        "optimizer": None,
    }
    if state is not None:
        sd = state.optimizer.state_dict()
        opt_values: dict[str, dict[str, Any]] = {}
        for pid, pstate in sd["state"].items():
            for k, v in pstate.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optimizer/{pid}/{k}"] = v.detach().cpu().contiguous().clone()
                else:
                    opt_values.setdefault(str(pid), {})[k] = v
        meta["optimizer"] = {
            "class": type(state.optimizer).__name__,
            "param_groups": sd["param_groups"],
            "values": opt_values,
            "state_ids": [int(p) for p in sd["state"]],
        }
        meta["train_state"] = state.to_meta()

    header = {
        "format": FORMAT_TAG,
        "digest": _digest(tensors),
        "meta": json.dumps(meta, default=_json_default, allow_nan=True),
    }
    data = st_save(tensors, metadata=header)
    _atomic_write_bytes(path, data)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    path : pathlib.Path
    model_state : dict of str -> Tensor
        The model's ``state_dict``.
    optimizer_state : dict or None
        A ``torch.optim.Optimizer.state_dict()``-shaped dict, or None without a train state.
    meta : dict
        The JSON metadata (``config``, ``train_state``, ``extra``, ``model_class``, ...).
    """

    path: Path
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None
    meta: dict = field(default_factory=dict)

    @property
    def config(self) -> dict | None:
        """The run configuration stored with the checkpoint."""
        return self.meta.get("config")

    @property
    def extra(self) -> dict | None:
        return self.meta.get("extra")

    @property
    def history(self) -> History | None:
        ts = self.meta.get("train_state")
        return History.from_dict(ts["history"]) if ts else None

    @property
    def epoch(self) -> int | None:
        ts = self.meta.get("train_state")
        return int(ts["epoch"]) if ts else None

    def restore_model(self, model: nn.Module, *, strict: bool = True) -> nn.Module:
        """Load the stored weights into ``model`` (same architecture) and return it."""
        try:
            model.load_state_dict(self.model_state, strict=strict)
        except RuntimeError as exc:
            raise ValueError(
                f"checkpoint {self.path} does not fit this {type(model).__name__} "
                f"(saved from {self.meta.get('model_class')}): {exc}"
            ) from exc
        return model

    def train_state(self, model: nn.Module) -> TrainState:
        """Rebuild the :class:`TrainState` for ``model``.

        Call after :meth:`restore_model` and after moving ``model`` to its training device; the
        optimiser is rebuilt over ``model``'s trainable parameters and its state loaded.
        """
        ts = self.meta.get("train_state")
        if ts is None or self.optimizer_state is None:
            raise ValueError(
                f"checkpoint {self.path} holds model weights only, no training state to resume"
            )
        opt = make_optimizer(model, ts["optimizer_name"], lr=float(ts["lr"]))
        try:
            opt.load_state_dict(self.optimizer_state)
        except (ValueError, KeyError) as exc:
            raise ValueError(
                f"the optimiser state in {self.path} does not fit this model's parameters: {exc}"
            ) from exc
        return TrainState(
            optimizer=opt,
            optimizer_name=ts["optimizer_name"],
            lr=float(ts["lr"]),
            seed=int(ts["seed"]),
            epoch=int(ts["epoch"]),
            batch=int(ts["batch"]),
            step=int(ts["step"]),
            history=History.from_dict(ts["history"]),
            partial=dict(ts["partial"]),
            rng=ts.get("rng"),
        )


def _read_header(path: Path) -> dict[str, str]:
    """Header metadata of a safetensors file, with clear errors for anything else."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not an adntn_lab checkpoint: only {size} bytes long")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100_000_000):
            raise ValueError(
                f"{path} is not an adntn_lab checkpoint: it does not start with a safetensors "
                "header (wrong file, or the file is corrupted or truncated)"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not an adntn_lab checkpoint: its safetensors header is unreadable "
            f"({exc}); the file is corrupted or of another kind"
        ) from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not an adntn_lab checkpoint: malformed safetensors header")
    return header.get("__metadata__") or {}


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors on CPU).

    Only the safetensors format and JSON are parsed; nothing is unpickled.

    Parameters
    ----------
    path : path
    verify : bool, default True
        Recompute the SHA-256 digest of the tensors and compare it with the stored one.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a safetensors file, lacks the adntn_lab format marker (a foreign
        safetensors file), was written by a newer format version, or is corrupted.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    metadata = _read_header(path)
    tag = metadata.get("format")
    if tag is None or not str(tag).startswith(FORMAT + "/"):
        raise ValueError(
            f"{path} is a safetensors file but not an adntn_lab checkpoint: its metadata has no "
            f"format marker {FORMAT_TAG!r} (found keys: {sorted(metadata) or 'none'})"
        )
    try:
        version = int(str(tag).split("/", 1)[1])
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable format marker {tag!r}") from exc
    if version > VERSION:
        raise ValueError(
            f"{path} uses checkpoint format version {version}; this adntn_lab reads up to "
            f"version {VERSION} — upgrade adntn_lab"
        )
    try:
        meta = json.loads(metadata.get("meta", ""))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: checkpoint metadata is not valid JSON ({exc}); the file is corrupted"
        ) from exc
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: the tensor data cannot be read ({exc}); the checkpoint is corrupted or "
            "truncated"
        ) from exc
    if verify and metadata.get("digest") != _digest(tensors):
        raise ValueError(
            f"{path}: the tensor data does not match the checksum stored in the header; the "
            "checkpoint is corrupted"
        )

    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    optimizer_state = None
    opt_meta = meta.get("optimizer")
    if opt_meta is not None:
        per_param: dict[int, dict[str, Any]] = {int(i): {} for i in opt_meta["state_ids"]}
        for k, v in tensors.items():
            if k.startswith("optimizer/"):
                _, pid, key = k.split("/", 2)
                per_param.setdefault(int(pid), {})[key] = v
        for pid, values in opt_meta.get("values", {}).items():
            per_param.setdefault(int(pid), {}).update(values)
        groups = [
            {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
            for g in opt_meta["param_groups"]
        ]  # JSON turned tuples such as Adam's betas into lists
        optimizer_state = {"state": per_param, "param_groups": groups}
    return Checkpoint(
        path=path, model_state=model_state, optimizer_state=optimizer_state, meta=meta
    )
