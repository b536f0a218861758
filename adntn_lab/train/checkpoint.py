"""Checkpoints as single safetensors files, written atomically, loaded without unpickling.

Layout of ``<name>.safetensors``:

- tensors ``model/<state_dict key>`` — the model's state dict;
- tensors ``optimizer/<param index>/<key>`` — the optimiser's per-parameter state tensors;
- header metadata ``format`` = ``"adntn-lab-checkpoint/2"`` (the marker checked on load),
  ``meta`` = a JSON document with the run configuration, the training position (epoch, batch,
  step), the history, random states, the optimiser's non-tensor state and param groups, and any
  extra JSON the caller adds, and ``digest`` = SHA-256 over the format marker, the ``meta`` text
  and every tensor's name, dtype, shape and bytes. One digest over header and data means a
  flipped bit anywhere is refused, not only in the tensors (version 1 files, whose digest
  covered the tensors only, are still read).

On load the metadata is validated field by field, so a hand-edited file is refused with the
name of the offending field rather than failing later inside the optimiser or the loop.

The file is first written to a temporary file in the same folder and then moved over the target
with :func:`os.replace`, so a crash leaves either the old checkpoint or the new one, never half
of one. Temporary files carry the writer's host and process id; those of dead processes on this
machine (a save killed by SIGKILL or a power cut) are removed by the next save into the same
folder and by :func:`remove_stale_temporaries`. Non-finite model weights are never written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..utils import write_and_replace
from .loop import OPTIMIZERS, make_optimizer
from .records import History, TrainState

__all__ = [
    "FORMAT",
    "Checkpoint",
    "NonFiniteCheckpointError",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

FORMAT = "adntn-lab-checkpoint"
VERSION = 2
FORMAT_TAG = f"{FORMAT}/{VERSION}"
_HEADER_KEYS = {"format", "digest", "meta"}


class NonFiniteCheckpointError(ValueError):
    """A checkpoint would hold NaN or infinite model weights; nothing was written."""


def _digest(tensors: Mapping[str, torch.Tensor], header: tuple[str, str] | None = None) -> str:
    """SHA-256 over ``header`` = (format tag, meta text), when given, and every tensor."""
    h = hashlib.sha256()
    if header is not None:
        for text in header:
            h.update(text.encode("utf-8"))
            h.update(b"\0")
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


# ".<target>.<host>-<pid>-<random>.tmp": the writer is known, so only its own machine's
# dead processes' files are removed (a shared folder may hold other hosts' writes in flight)
_TEMP_RE = re.compile(
    r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$")
# ".<target>.<random>.tmp", as written before the writer was named
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"


def _temp_prefix(target: str, pid: int | None = None) -> str:
    """Start of the temporary file name a write of ``target`` by process ``pid`` uses."""
    return f".{target}.{_host()}-{os.getpid() if pid is None else pid}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or the platform cannot tell
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that interrupted atomic writes left in ``folder``.

    A temporary file is stale when the process on this machine that created it is gone (a
    save killed by SIGKILL or a power cut). Files of live processes (this one's writes in
    progress included) and of other machines are kept; files named the way older adntn_lab
    named them are removed when the file they were to replace exists.

    Parameters
    ----------
    folder : path

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    with _in_flight_lock:
        busy = set(_in_flight)
    host, me = _host(), os.getpid()
    for entry in folder.iterdir():
        if str(entry) in busy or not entry.name.endswith(".tmp"):
            continue
        m = _TEMP_RE.match(entry.name)
        if m is not None:
            pid = int(m.group("pid"))
            if m.group("host") != host or (pid != me and _process_alive(pid)):
                continue
        else:
            m = _LEGACY_TEMP_RE.match(entry.name)
            if m is None or not (folder / m.group("target")).is_file():
                continue
        if not entry.is_file():
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    with _in_flight_lock:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp",
                                   dir=path.parent)
        _in_flight.add(tmp)
    try:
        write_and_replace(fd, tmp, path, data)
    finally:
        with _in_flight_lock:
            _in_flight.discard(tmp)


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
    allow_nonfinite: bool = False,
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
    allow_nonfinite : bool, default False
        Write NaN or infinite weights anyway (for inspecting a diverged model); by default
        such a checkpoint is refused so that it can never replace a good one.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    NonFiniteCheckpointError
        A floating-point model or optimiser tensor holds NaN or inf (nothing is written).
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
        if not allow_nonfinite and value.is_floating_point() and not bool(
            torch.isfinite(tensors[f"model/{key}"]).all()
        ):
            raise NonFiniteCheckpointError(
                f"refusing to write {path}: model tensor {key!r} holds NaN or infinite values "
                "(the training diverged); the previous checkpoint, if any, is kept"
            )

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

    meta_text = json.dumps(meta, default=_json_default, allow_nan=True)
    header = {
        "format": FORMAT_TAG,
        "digest": _digest(tensors, (FORMAT_TAG, meta_text)),
        "meta": meta_text,
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
        The JSON metadata (``config``, ``train_state``, ``extra``, ``model_class``, ...),
        validated field by field on load.
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
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            raise ValueError(
                f"the optimiser state in {self.path} does not fit this model's parameters: {exc}"
            ) from exc
        # per-parameter buffers (Adam's moments, SGD's momentum) must match their parameter,
        # or the first step would fail deep inside the optimiser
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            for key, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise ValueError(
                        f"the optimiser state in {self.path} does not fit this model's "
                        f"parameters: tensor 'optimizer/{i}/{key}' has shape {tuple(v.shape)}, "
                        f"parameter {i} has shape {tuple(p.shape)}"
                    )
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
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) for v in metadata.values()
    ):
        raise ValueError(f"{path} is not an adntn_lab checkpoint: malformed header metadata")
    return metadata


# ----------------------------------------------------------------------------- validation


class _Refusal(ValueError):
    """A metadata field with the wrong type or value (the path names the field)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, expected: str, value: Any) -> None:
    raise _Refusal(f"field {where!r} must be {expected}, got {_show(value)}")


def _int(where: str, value: Any, *, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, "an integer", value)
    if minimum is not None and value < minimum:
        _fail(where, f"an integer >= {minimum}", value)
    return value


def _number(where: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(where, "a number" + (" or null" if allow_none else ""), value)


def _dict(where: str, value: Any, *, allow_none: bool = False) -> dict | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, dict):
        _fail(where, "an object" + (" or null" if allow_none else ""), value)
    return value


def _list(where: str, value: Any) -> list:
    if not isinstance(value, list):
        _fail(where, "a list", value)
    return value


def _keys(where: str, d: dict, required: tuple[str, ...]) -> None:
    for key in required:
        if key not in d:
            name = key if where == "meta" else f"{where}.{key}"
            raise _Refusal(f"field {name!r} is missing")


def _validate_history(where: str, h: Any) -> None:
    h = _dict(where, h)
    _keys(where, h, ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time",
                     "step_loss"))
    epochs = _list(f"{where}.epoch", h["epoch"])
    for i, e in enumerate(epochs):
        _int(f"{where}.epoch[{i}]", e, minimum=1)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time"):
        values = _list(f"{where}.{name}", h[name])
        if len(values) != len(epochs):
            _fail(f"{where}.{name}", f"a list of {len(epochs)} entries (one per epoch)",
                  f"{len(values)} entries")
        for i, v in enumerate(values):
            _number(f"{where}.{name}[{i}]", v, allow_none=True)
    for i, v in enumerate(_list(f"{where}.step_loss", h["step_loss"])):
        _number(f"{where}.step_loss[{i}]", v, allow_none=True)
    if "stopped" in h and not isinstance(h["stopped"], bool):
        _fail(f"{where}.stopped", "true or false", h["stopped"])
    for i, ev in enumerate(_list(f"{where}.events", h.get("events", []))):
        ev = _dict(f"{where}.events[{i}]", ev)
        if not isinstance(ev.get("event"), str):
            _fail(f"{where}.events[{i}].event", "a string", ev.get("event"))
        for key in ("step", "epoch"):
            if key in ev:
                _int(f"{where}.events[{i}].{key}", ev[key])


def _validate_rng(where: str, rng: Any) -> None:
    rng = _dict(where, rng, allow_none=True)
    if rng is None:
        return
    if "cpu" not in rng:
        raise _Refusal(f"field {where + '.cpu'!r} is missing")
    for key, text in rng.items():
        if not isinstance(text, str):
            _fail(f"{where}.{key}", "a base64 string", text)
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            _fail(f"{where}.{key}", "a base64 string", text)
        if key == "cpu" and len(raw) != torch.get_rng_state().numel():
            _fail(f"{where}.cpu", f"torch's CPU random state ({torch.get_rng_state().numel()} "
                  "bytes)", f"{len(raw)} bytes")


def _validate_train_state(ts: Any) -> None:
    ts = _dict("train_state", ts)
    _keys("train_state", ts, ("optimizer_name", "lr", "seed", "epoch", "batch", "step",
                              "history", "partial"))
    if ts["optimizer_name"] not in OPTIMIZERS:
        _fail("train_state.optimizer_name", f"one of {', '.join(OPTIMIZERS)}",
              ts["optimizer_name"])
    lr = ts["lr"]
    _number("train_state.lr", lr)
    if not (lr > 0 and math.isfinite(lr)):
        _fail("train_state.lr", "a positive finite number", lr)
    _int("train_state.seed", ts["seed"], minimum=None)
    for key in ("epoch", "batch", "step"):
        _int(f"train_state.{key}", ts[key])
    _validate_history("train_state.history", ts["history"])
    part = _dict("train_state.partial", ts["partial"])
    _keys("train_state.partial", part, ("loss_sum", "correct", "count", "time"))
    _number("train_state.partial.loss_sum", part["loss_sum"])
    _number("train_state.partial.time", part["time"])
    _int("train_state.partial.correct", part["correct"])
    _int("train_state.partial.count", part["count"])
    _validate_rng("train_state.rng", ts.get("rng"))
    if ts["batch"] > 0 and ts.get("rng") is None:
        raise _Refusal("field 'train_state.rng' is missing: the state stops mid-epoch "
                       f"(batch {ts['batch']}) and needs its random state")


def _validate_optimizer(opt: Any) -> None:
    opt = _dict("optimizer", opt)
    _keys("optimizer", opt, ("class", "param_groups", "values", "state_ids"))
    if not isinstance(opt["class"], str):
        _fail("optimizer.class", "a string", opt["class"])
    groups = _list("optimizer.param_groups", opt["param_groups"])
    if not groups:
        _fail("optimizer.param_groups", "a non-empty list", groups)
    for g, group in enumerate(groups):
        group = _dict(f"optimizer.param_groups[{g}]", group)
        _keys(f"optimizer.param_groups[{g}]", group, ("params", "lr"))
        for i, pid in enumerate(_list(f"optimizer.param_groups[{g}].params", group["params"])):
            _int(f"optimizer.param_groups[{g}].params[{i}]", pid)
        _number(f"optimizer.param_groups[{g}].lr", group["lr"])
    values = _dict("optimizer.values", opt["values"])
    for pid, entry in values.items():
        if not pid.isdigit():
            _fail("optimizer.values", "an object keyed by parameter indices", pid)
        _dict(f"optimizer.values.{pid}", entry)
    for i, pid in enumerate(_list("optimizer.state_ids", opt["state_ids"])):
        _int(f"optimizer.state_ids[{i}]", pid)


def _validate_meta(meta: Any) -> None:
    """Raise :class:`_Refusal` naming the first field of ``meta`` that is not as written."""
    meta = _dict("meta", meta)
    _keys("meta", meta, ("format_version", "model_class", "config", "extra", "train_state",
                         "optimizer"))
    _int("format_version", meta["format_version"], minimum=1)
    if not isinstance(meta["model_class"], str):
        _fail("model_class", "a string", meta["model_class"])
    _dict("config", meta["config"], allow_none=True)
    _dict("extra", meta["extra"], allow_none=True)
    if (meta["train_state"] is None) != (meta["optimizer"] is None):
        raise _Refusal("fields 'train_state' and 'optimizer' must be both present or both null")
    if meta["train_state"] is not None:
        _validate_train_state(meta["train_state"])
        _validate_optimizer(meta["optimizer"])


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors on CPU).

    Only the safetensors format and JSON are parsed; nothing is unpickled.

    Parameters
    ----------
    path : path
    verify : bool, default True
        Recompute the SHA-256 digest over the header metadata and the tensors and compare it
        with the stored one. The metadata is validated field by field either way.

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a safetensors file, lacks the adntn_lab format marker (a foreign
        safetensors file), was written by a newer format version, is corrupted, or holds
        metadata that is not as :func:`save_checkpoint` writes it (the message names the
        field).
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
    version_text = str(tag).split("/", 1)[1]
    if not (version_text.isascii() and version_text.isdigit()):
        raise ValueError(f"{path}: unreadable format marker {tag!r}; the file is corrupted")
    version = int(version_text)
    if version > VERSION:
        raise ValueError(
            f"{path} uses checkpoint format version {version}; this adntn_lab reads up to "
            f"version {VERSION} — upgrade adntn_lab"
        )
    if version < 1 or str(version) != version_text:
        raise ValueError(f"{path}: unreadable format marker {tag!r}; the file is corrupted")
    if set(metadata) != _HEADER_KEYS:
        missing = sorted(_HEADER_KEYS - set(metadata))
        unknown = sorted(set(metadata) - _HEADER_KEYS)
        raise ValueError(
            f"{path}: the checkpoint header has "
            + (f"no {', '.join(missing)}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unexpected keys {unknown}" if unknown else "")
            + "; the file is corrupted or was edited"
        )
    meta_text = metadata["meta"]
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: the tensor data cannot be read ({exc}); the checkpoint is corrupted or "
            "truncated"
        ) from exc
    if verify:
        expected = _digest(tensors, (tag, meta_text) if version >= 2 else None)
        if metadata["digest"] != expected:
            raise ValueError(
                f"{path}: the checkpoint does not match the checksum stored in its header; "
                "the file is corrupted (or was edited)"
            )
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: checkpoint metadata is not valid JSON ({exc}); the file is corrupted"
        ) from exc
    try:
        _validate_meta(meta)
    except _Refusal as exc:
        raise ValueError(
            f"{path}: checkpoint metadata {exc}; the file was edited or is corrupted"
        ) from None

    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    unknown = sorted(k for k in tensors if not k.startswith(("model/", "optimizer/")))
    if unknown:
        raise ValueError(f"{path}: unexpected tensors {unknown[:3]} in the checkpoint; only "
                         "model/... and optimizer/... are written")
    optimizer_state = None
    opt_meta = meta["optimizer"]
    if opt_meta is not None:
        per_param: dict[int, dict[str, Any]] = {int(i): {} for i in opt_meta["state_ids"]}
        for k, v in tensors.items():
            if k.startswith("optimizer/"):
                parts = k.split("/", 2)
                if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
                    raise ValueError(f"{path}: optimiser tensor {k!r} is not named "
                                     "'optimizer/<parameter index>/<state name>'")
                per_param.setdefault(int(parts[1]), {})[parts[2]] = v
        for pid, values in opt_meta["values"].items():
            per_param.setdefault(int(pid), {}).update(values)
        groups = [
            {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
            for g in opt_meta["param_groups"]
        ]  # JSON turned tuples such as Adam's betas into lists
        optimizer_state = {"state": per_param, "param_groups": groups}
    return Checkpoint(
        path=path, model_state=model_state, optimizer_state=optimizer_state, meta=meta
    )
