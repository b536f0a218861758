"""Training runs: a configuration, a compression strategy and a run folder.

A run folder holds

- ``config.json`` — the :class:`RunConfig`;
- ``metrics.json`` — history, final accuracies, parameter counts, compressed-layer summary;
- ``checkpoint.safetensors`` — model, optimiser and training position after the last epoch
  (or the step at which training was stopped, interrupted, rolled back after a divergence, or
  every ``checkpoint_every`` steps), see :mod:`.checkpoint`;
- ``curves.png`` — loss and accuracy curves.

Strategies:

- ``"e2e"`` — compress the chosen layers of a freshly initialised model and train everything end
  to end with autodiff;
- ``"fit-finetune"`` — train the dense model for ``dense_epochs`` epochs, fit each generator to
  its trained dense layer (``ADNTNLinear.from_linear`` through ``compress_model`` with
  ``fit_steps``), then train end to end;
- ``"dmrg"`` — local sweeps over MPO cores, delegated to
  :func:`adntn_lab.train.dmrg.dmrg_sweep`.

Resuming (``resume=True``) rebuilds the model's structure from the stored configuration, loads the
checkpoint and continues as if never interrupted. A run killed before its first checkpoint
resumes from the start with the settings in its ``config.json``, never with other ones. Only
``epochs``, ``device`` and ``lr`` may change on resume; a changed learning rate is recorded in the
history's ``events`` (and so in ``metrics.json``).

Nothing is lost on the way: a diverged step (NaN or inf) is rolled back and the last good state
checkpointed (:class:`~adntn_lab.train.loop.TrainingDiverged` says how to continue); Ctrl-C
(SIGINT) or SIGTERM stops after the current step, writes a checkpoint and raises
:class:`RunInterrupted`;
a failed write (a full disk) keeps the previous checkpoint and raises :class:`RunStorageError`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import (
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import RESUMABLE_CHANGES, RunConfig, check_device
from .loop import TrainingDiverged, evaluate, fit
from .records import History
from .strategies import (
    base_model,
    build_run_model,
    compress_for_run,
    fit_errors,
    load_dmrg,
    param_counts,
    refresh_summary,
    summary_rows,
)

__all__ = [
    "RunInterrupted",
    "RunResult",
    "RunStorageError",
    "read_run_config",
    "run_training",
]


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) after writing a checkpoint.

    Attributes
    ----------
    checkpoint : pathlib.Path or None
        The checkpoint written (None without a run folder).
    epoch, step : int
        Completed epochs and steps at the stop.
    signum : int
        The signal: ``signal.SIGINT`` or ``signal.SIGTERM``.
    """

    def __init__(self, message: str, *, checkpoint: Path | None, epoch: int, step: int,
                 signum: int = signal.SIGINT):
        super().__init__(message)
        self.checkpoint, self.epoch, self.step, self.signum = checkpoint, epoch, step, signum

    def __str__(self) -> str:
        return str(self.args[0])


class RunStorageError(OSError):
    """A file of the run folder could not be written; the previous checkpoint is intact."""


@dataclass
class RunResult:
    """What :func:`run_training` returns."""

    config: RunConfig
    model: nn.Module
    history: History
    metrics: dict
    out_dir: Path | None


# ----------------------------------------------------------------------------- building


# ----------------------------------------------------------------------------- run folder


def _json_ready(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(_json_ready(obj), indent=2) + "\n")


def _check_resume_config(saved: Mapping[str, Any], config: RunConfig, path: Path) -> None:
    diffs = []
    now = config.to_dict()
    try:
        saved = RunConfig.from_dict(saved).to_dict()  # the same normal form as ``now``
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot resume {path}: its stored settings are invalid ({exc})") from None
    for key, old in saved.items():
        if key in RESUMABLE_CHANGES:
            continue
        if now.get(key) != old:
            diffs.append(f"{key}: saved {old!r}, now {now.get(key)!r}")
    if diffs:
        raise ValueError(
            f"cannot resume {path}: the run was made with different settings ("
            + "; ".join(diffs)
            + "). Only epochs, device and lr may change on resume; use another output folder "
            "for a new run"
        )


def read_run_config(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The settings stored in ``out_dir/config.json`` (None when the file does not exist).

    Raises
    ------
    ValueError
        The file is not a JSON object of run settings.
    """
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it or start a new run in "
                         "another folder") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} must hold a JSON object of run settings, got "
                         f"{type(saved).__name__}")
    try:
        RunConfig.from_dict(saved)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds invalid run settings: {exc}") from None
    return saved


class _EitherEvent:
    """Set when either of two events is set (the caller's stop request or Ctrl-C)."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class _SignalsToStop:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM sets ``event`` instead of ending the
    process, and remembers which arrived in ``signum``.

    Training then stops after the current step and writes a checkpoint; a second signal acts
    at once (the previous handlers are back). Only installed in the main thread (signals are
    delivered there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool):
        self.event = threading.Event()
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, Any] = {}
        self.signum: int | None = None

    def _handle(self, signum, frame):
        self.signum = signum
        self.event.set()
        self._restore()

    def _restore(self):
        for sig, handler in self.previous.items():
            # getsignal gives None for a handler installed outside Python
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL
                          if sig != signal.SIGINT else signal.default_int_handler)

    def __enter__(self):
        if self.enabled:
            for sig in self.SIGNALS:
                self.previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._restore()
        return False


def run_training(
    config: RunConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool | str | os.PathLike = False,
    data=None,
    progress: bool = True,
    callbacks: Sequence[Callable] | None = None,
    stop_event=None,
    log: Callable[[str], None] | None = print,
    checkpoint_every: int | None = None,
    catch_signals: bool = True,
    distributed: bool = False,
) -> RunResult:
    """Train one configuration and write its run folder.

    Parameters
    ----------
    config : RunConfig
    out_dir : path, optional
        Run folder; nothing is written when None.
    resume : bool or path, default False
        True: continue from ``out_dir/checkpoint.safetensors`` if it exists, or from the start
        of the run described by ``out_dir/config.json`` when it was stopped before its first
        checkpoint (a fresh start when the folder holds neither); a path: continue from that
        checkpoint. The stored settings must equal ``config`` except ``epochs``, ``device`` and
        ``lr``; a changed ``lr`` is recorded in the history's events.
    data : Dataset, optional
        Preloaded dataset (must match ``config.dataset``); loaded otherwise.
    progress : bool, default True
        tqdm progress bars.
    callbacks, stop_event
        Passed to :func:`~adntn_lab.train.loop.fit`.
    log : callable or None, default print
        Receives one-line status messages.
    checkpoint_every : int, optional
        Also write the checkpoint every this many optimiser steps (besides every epoch end),
        so that a killed run loses at most that many steps.
    catch_signals : bool, default True
        In the main thread, the first Ctrl-C (SIGINT) or SIGTERM stops training after the
        current step, writes the checkpoint and raises :class:`RunInterrupted`; a second one
        acts at once.
    distributed : bool, default False
        Train data-parallel over the running torch.distributed process group (every rank
        calls ``run_training`` with the same arguments; see
        :mod:`adntn_lab.train.distributed`). Only rank 0 writes the run folder and logs; a
        checkpoint written by any number of ranks resumes with any other number.

    Returns
    -------
    RunResult

    Raises
    ------
    TrainingDiverged
        A step went non-finite; the last good step is checkpointed and the message says how
        to continue.
    RunInterrupted
        Ctrl-C; the checkpoint holds the last completed step.
    RunStorageError
        A run file could not be written (e.g. a full disk); the previous checkpoint is kept.
    """
    from ..data import load_dataset

    rank, world_size = 0, 1
    if distributed:
        from .distributed import world

        if config.strategy == "dmrg":
            raise ValueError("strategy 'dmrg' runs local sweeps in one process; train it "
                             "without --nproc / distributed")
        rank, world_size = world()
    main = rank == 0  # rank 0 alone logs and writes the run folder
    say = (log or (lambda _msg: None)) if main else (lambda _msg: None)
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
        or checkpoint_every <= 0
    ):
        raise ValueError(f"checkpoint_every must be a positive number of steps, got "
                         f"{checkpoint_every!r}")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is an existing file; give a folder path "
                         "(new or a run folder)")
    ckpt_path = out / "checkpoint.safetensors" if out is not None else None
    device = check_device(config.device)

    source = None
    if resume:
        source = Path(resume) if not isinstance(resume, bool) else ckpt_path
        if source is None:
            raise ValueError("resume=True needs out_dir (or pass the checkpoint path as resume)")
        if not source.exists():
            if not isinstance(resume, bool):
                raise FileNotFoundError(f"no checkpoint to resume from at {source}")
            source = None  # no checkpoint yet: start afresh, with the run's own settings
            saved = read_run_config(out)
            if saved is not None:
                _check_resume_config(saved, config, out / "config.json")
                say(f"{out} has no checkpoint yet; training {config.label} from the start "
                    "with its saved settings")
    elif ckpt_path is not None and ckpt_path.exists():
        raise ValueError(
            f"{out} already holds a run (checkpoint.safetensors); pass resume=True (--resume) "
            "to continue it, or choose another output folder"
        )
    if out is not None and main:
        stale = remove_stale_temporaries(out)
        if stale:
            say(f"removed {len(stale)} temporary file(s) left in {out} by interrupted saves")

    if data is None:
        data = load_dataset(config.dataset, seed=config.data_seed)
    elif getattr(data, "name", config.dataset) != config.dataset:
        raise ValueError(f"data is {data.name!r} but the config says {config.dataset!r}")

    if source is not None and config.strategy == "dmrg":
        # local sweeps change bond dimensions and keep no resumable position: start again
        say(f"strategy 'dmrg' cannot continue a run part-way; training {config.label} again "
            "from the start")
        source = None

    extra_metrics: dict[str, Any] = {"strategy": config.strategy}
    state = None
    if source is not None:
        ckpt = load_checkpoint(source)
        if ckpt.config is not None:
            _check_resume_config(ckpt.config, config, source)
        model = build_run_model(config, data)
        ckpt.restore_model(model)
        model.to(device)
        state = ckpt.train_state(model)
        state.change_lr(config.lr)
        stored = (ckpt.extra or {}).get("metrics", {})
        if not isinstance(stored, dict):
            raise ValueError(f"{source}: checkpoint metadata field 'extra.metrics' must be an "
                             f"object, got {type(stored).__name__}; the file was edited")
        extra_metrics.update(stored)
        say(f"resuming {config.label} from {source} at epoch {state.epoch}, step {state.step}"
            + (f" with lr {config.lr:g}" if state.history.events
               and state.history.events[-1].get("event") == "lr_changed"
               and state.history.events[-1].get("step") == state.step else ""))
    else:
        # the structure first, so that a bad setting fails before anything is written
        model = build_run_model(config, data)
    if out is not None and main:
        _write_run_file(out / "config.json", config.to_dict())

    if source is None and config.strategy == "fit-finetune":
        dense = base_model(config, data)
        if config.dense_epochs > 0:
            say(f"fit-finetune: training the dense {config.model} for {config.dense_epochs} "
                "epoch(s)")
            dense_hist = fit(dense, data, epochs=config.dense_epochs, lr=config.lr,
                             batch_size=config.batch_size, seed=config.seed,
                             optimizer=config.optimizer, device=device, progress=progress,
                             weight_decay=config.weight_decay, desc="dense",
                             distributed=distributed)
            extra_metrics["dense_pretraining"] = dense_hist.to_dict()
        say(f"fit-finetune: fitting {config.family} generators to "
            f"{', '.join(config.compress_patterns)} ({config.fit_steps} steps)")
        dense.cpu()
        model = compress_for_run(dense, config, fit_steps=config.fit_steps)
        extra_metrics["fit_errors"] = fit_errors(model)

    layers = summary_rows(model)
    counts = param_counts(model)

    def metrics_now(history: History, complete: bool) -> dict:
        m: dict[str, Any] = {
            "label": config.label,
            "complete": complete,
            "epochs_done": len(history.epoch),
            "params": counts,
            "compressed_layers": layers,
            "history": history.to_dict(),
            "wall_time": history.wall_time,
            "world_size": world_size,
            "events": list(history.events),
        }
        if history.epoch:
            m["final"] = {
                "train_loss": history.train_loss[-1],
                "train_acc": history.train_acc[-1],
                "test_loss": history.test_loss[-1],
                "test_acc": history.test_acc[-1],
                "best_test_acc": max(history.test_acc),
            }
        m.update(extra_metrics)
        return m

    def save(state_, complete: bool) -> None:
        if out is None or not main:  # rank 0 alone writes the run folder
            return
        m = metrics_now(state_.history, complete)
        try:
            save_checkpoint(ckpt_path, model, state_, config=config.to_dict(),
                            extra={"metrics": extra_metrics})
        except OSError as exc:
            raise _storage_error(ckpt_path, exc) from exc
        _write_run_file(out / "metrics.json", m)

    def on_event(ev: dict):
        if ev["event"] in ("epoch", "end"):
            save(ev["state"], complete=ev["state"].epoch >= config.epochs)
        elif (ev["event"] == "step" and checkpoint_every is not None
              and ev["step"] % checkpoint_every == 0 and ev["batch"] < ev["num_batches"]):
            save(ev["state"], complete=False)  # the epoch's last step is saved at its end

    t0 = time.perf_counter()
    if config.strategy == "dmrg":
        dmrg_sweep = load_dmrg()
        model.to(device)
        history = dmrg_sweep(
            model,
            data,
            layers=config.compress_patterns,
            sweeps=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            seed=config.seed,
            device=config.device,
            bond_dim=config.bond_dim,
            progress=progress,
        )
        if not isinstance(history, History):
            raise TypeError("dmrg_sweep must return a History")
        state = None
        # local sweeps adapt the bond dimensions: count the parameters again
        counts.update(param_counts(model))
        refresh_summary(model, layers)
        if out is not None:
            try:
                save_checkpoint(ckpt_path, model, None, config=config.to_dict())
            except OSError as exc:
                raise _storage_error(ckpt_path, exc) from exc
            _write_run_file(out / "metrics.json", metrics_now(history, True))
    else:
        if state is None:
            from .loop import TrainState

            model.to(device)
            state = TrainState.create(model, lr=config.lr, seed=config.seed,
                                      optimizer=config.optimizer,
                                      weight_decay=config.weight_decay)
        with _SignalsToStop(catch_signals) as sigint:
            try:
                history = fit(
                    model, data, epochs=config.epochs, lr=config.lr,
                    batch_size=config.batch_size, seed=config.seed,
                    optimizer=config.optimizer, device=device,
                    callbacks=[on_event, *(callbacks or [])], progress=progress, state=state,
                    stop_event=_EitherEvent(stop_event, sigint.event),
                    weight_decay=config.weight_decay, lr_schedule=config.lr_schedule,
                    desc=config.label, distributed=distributed,
                )
            except TrainingDiverged as exc:
                raise _diverged(exc, config, out, state, save) from None
        if sigint.event.is_set() and history.stopped:
            where = f"; checkpoint {ckpt_path}" if out is not None else ""
            how = (f"; continue with: adntn-lab train --out {out} --resume"
                   if out is not None else "")
            name = "SIGTERM" if sigint.signum == signal.SIGTERM else "Ctrl-C"
            raise RunInterrupted(
                f"interrupted ({name}) at epoch {state.epoch + 1}, step {state.step}{where}{how}",
                checkpoint=ckpt_path, epoch=state.epoch, step=state.step, signum=sigint.signum,
            )
    elapsed = time.perf_counter() - t0

    complete = len(history.epoch) >= config.epochs and not history.stopped
    metrics = metrics_now(history, complete)
    if not history.epoch and data.test is not None:
        ev = evaluate(model, data.test, device=device)
        metrics["final"] = {"test_loss": ev.loss, "test_acc": ev.accuracy}
    if out is not None and main:
        _write_run_file(out / "metrics.json", metrics)
        try:
            _write_curves(out / "curves.png", history, config)
        except OSError as exc:
            raise _storage_error(out / "curves.png", exc) from exc
    acc = metrics.get("final", {}).get("test_acc")
    say(f"{config.label}: {len(history.epoch)} epoch(s) in {elapsed:.1f} s"
        + (f", test accuracy {100 * acc:.2f}%" if acc is not None else "")
        + (f" -> {out}" if out is not None else ""))
    return RunResult(config=config, model=model, history=history, metrics=metrics, out_dir=out)


def _storage_error(path: Path, exc: OSError) -> RunStorageError:
    reason = exc.strerror or str(exc)
    err = RunStorageError(
        exc.errno,
        f"could not write {path}: {reason}; the previous checkpoint is kept. Free disk space "
        "(or choose another output folder) and continue with resume (--resume)",
    )
    err.filename = None
    return err


def _write_run_file(path: Path, obj) -> None:
    try:
        write_json(path, obj)
    except OSError as exc:
        raise _storage_error(path, exc) from exc


def _diverged(exc: TrainingDiverged, config: RunConfig, out: Path | None, state,
              save: Callable) -> TrainingDiverged:
    """Checkpoint the rolled-back state and say how to continue from it."""
    lower = exc.lr / 10
    if out is None:
        how = (f"train again with a lower learning rate, e.g. lr={lower:g} (with an out_dir "
               "the last good step is checkpointed and can be resumed)")
    else:
        save(state, complete=False)
        how = (f"the checkpoint in {out} holds step {exc.step - 1}; continue with a lower "
               f"learning rate: adntn-lab train --out {out} --resume --lr {lower:g}")
    return TrainingDiverged(
        f"{exc.summary}; {how}", summary=exc.summary, epoch=exc.epoch, step=exc.step,
        batch=exc.batch, what=exc.what, lr=exc.lr,
    )


def _write_curves(path: Path, history: History, config: RunConfig) -> None:
    from .plots import plot_curves

    label = "dense" if config.family is None else f"{config.family} (chi={config.bond_dim})"
    fig = plot_curves({label: history}, title=config.label)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


