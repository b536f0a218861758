"""A deterministic, resumable training loop for any ``nn.Module`` classifier.

Determinism: the order of the training examples in epoch ``e`` is a permutation drawn from a
``torch.Generator`` seeded from ``(seed, e)``, and the global torch random state (dropout and the
like) is forked and reseeded from ``(seed, e)`` at the start of every epoch. The loop therefore
depends on no hidden state: stopping after any step, saving a :class:`TrainState` and the model,
and calling :func:`fit` again with the restored objects reproduces an uninterrupted run bit for
bit (on the same device and thread count).

Callbacks receive one dict per event and may stop training by returning ``False``; a
``threading.Event`` passed as ``stop_event`` is checked after every step, so a widget running
:func:`fit` in a background thread can stop it.

Divergence: the loss of every step and the parameters after every optimiser step are checked
for NaN and inf. On the first non-finite value the model (parameters and buffers), the
optimiser state and the random state are rolled back to just before that step and
:class:`TrainingDiverged` is raised; the state is then resumable from the last good step (with a
lower learning rate, say), and nothing non-finite reaches a checkpoint.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from .records import Evaluation, History, TrainState, _b64, _empty_partial, _unb64

__all__ = [
    "OPTIMIZERS",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "make_optimizer",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")


# ----------------------------------------------------------------------------- records


class TrainingDiverged(FloatingPointError):
    """A step produced a non-finite loss or parameter; training was rolled back before it.

    Attributes
    ----------
    epoch : int
        1-based epoch of the failed step.
    step : int
        1-based number of the failed step (the state holds ``step - 1`` completed steps).
    batch : int
        1-based batch of the failed step within its epoch.
    what : str
        ``"loss"`` or ``"parameter '<name>'"``.
    lr : float
        Learning rate of the failed step.
    summary : str
        What happened, without advice on how to continue.
    """

    def __init__(self, message: str, *, summary: str, epoch: int, step: int, batch: int,
                 what: str, lr: float):
        super().__init__(message)
        self.summary = summary
        self.epoch, self.step, self.batch, self.what, self.lr = epoch, step, batch, what, lr


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``d.copy_(s)`` for every pair, in one fused call where torch offers it."""
    foreach_copy = getattr(torch, "_foreach_copy_", None)
    groups: dict[tuple, tuple[list, list]] = {}
    for d, s in zip(dst, src):
        groups.setdefault((d.device, d.dtype, s.dtype), ([], []))
        groups[(d.device, d.dtype, s.dtype)][0].append(d)
        groups[(d.device, d.dtype, s.dtype)][1].append(s)
    for ds, ss in groups.values():
        if foreach_copy is not None:
            foreach_copy(ds, ss)
        else:  # pragma: no cover - older torch
            for d, s in zip(ds, ss):
                d.copy_(s)


class _StepSnapshot:
    """Copies of the parameters, buffers and optimiser state taken before each step.

    Buffers are allocated once and refilled in place, so a snapshot costs one copy of the
    training state per step and no allocation.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.tensors = [t for t in (*model.parameters(), *model.buffers())]
        self.copies = [t.detach().clone() for t in self.tensors]
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.opt_copies: dict[int, dict[str, Any] | None] = {}

    def take(self) -> None:
        dst, src = list(self.copies), list(self.tensors)
        for i, p in enumerate(self.params):
            st = self.optimizer.state.get(p)
            if not st:
                self.opt_copies[i] = None
                continue
            saved = self.opt_copies.get(i) or {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    buf = saved.get(k)
                    if isinstance(buf, torch.Tensor) and buf.shape == v.shape and \
                            buf.dtype == v.dtype and buf.device == v.device:
                        dst.append(buf)
                        src.append(v)
                    else:
                        saved[k] = v.detach().clone()
                else:
                    saved[k] = v
            self.opt_copies[i] = saved
        with torch.no_grad():
            _copy_all(dst, src)

    def restore(self) -> None:
        with torch.no_grad():
            for t, c in zip(self.tensors, self.copies):
                t.copy_(c)
            for i, p in enumerate(self.params):
                saved = self.opt_copies.get(i)
                if saved is None:
                    self.optimizer.state.pop(p, None)
                    continue
                st = self.optimizer.state[p]
                for k in list(st):
                    if k not in saved:
                        del st[k]
                for k, v in saved.items():
                    if isinstance(v, torch.Tensor) and isinstance(st.get(k), torch.Tensor):
                        st[k].copy_(v)
                    else:
                        st[k] = v.clone() if isinstance(v, torch.Tensor) else v


def _first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first tensor holding NaN or inf, or None (one device sync).

    A sum is finite only if every term is, so one sum per tensor screens them all without a
    boolean copy of each; only when a sum is not finite (which a sum of huge finite values can
    also be) is every tensor checked exactly.
    """
    if not named:
        return None
    with torch.no_grad():
        sums = torch.stack([t.detach().sum() for _, t in named])
        if bool(torch.isfinite(sums).all()):
            return None
        flags = torch.stack([torch.isfinite(t).all() for _, t in named])
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0, 0])][0]


def make_optimizer(
    model: nn.Module,
    name: str = "adam",
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``) over trainable parameters."""
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- helpers


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` (stable across platforms)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *[int(k) for k in keys]])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Permutation of ``range(n)`` used as the data order of 0-based ``epoch``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, epoch, 0))
    return torch.randperm(n, generator=g)


def _split_data(data) -> tuple[TensorDataset, TensorDataset | None]:
    if hasattr(data, "train"):
        return data.train, getattr(data, "test", None)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if isinstance(data, TensorDataset):
        return data, None
    raise TypeError(
        "data must be a Dataset from load_dataset, a (train, test) pair of TensorDatasets or "
        f"one TensorDataset, got {type(data).__name__}"
    )


def _tensors(ds, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = getattr(ds, "tensors", None)
    if tensors is None or len(tensors) != 2:
        raise TypeError(f"the {what} split must be a TensorDataset of (inputs, labels)")
    x, y = tensors
    if len(x) != len(y):
        raise ValueError(f"{what} split has {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"the {what} split is empty")
    return x, y


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> Evaluation:
    """Mean cross-entropy and accuracy of ``model`` on a labelled dataset, in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps inputs ``(batch, *input_shape)`` to logits ``(batch, num_classes)``.
    dataset : TensorDataset
        ``(inputs, int64 labels)``.
    batch_size : int, default 1024
    device : optional
        Where to run; defaults to the device of the model's first parameter.

    Returns
    -------
    Evaluation
    """
    x, y = _tensors(dataset, "evaluation")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            yb = y[i : i + batch_size].to(device)
            logits = model(xb)
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    n = len(x)
    return Evaluation(loss=loss_sum / n, accuracy=correct / n, n=n)


def _lr_at(schedule: str, base: float, step: int, total: int) -> float:
    if schedule == "constant":
        return base
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _rng_capture(device: torch.device) -> dict:
    out = {"cpu": _b64(torch.get_rng_state())}
    if device.type == "cuda":
        out["cuda"] = _b64(torch.cuda.get_rng_state(device))
    return out


def _rng_restore(rng: Mapping[str, str], device: torch.device) -> None:
    torch.set_rng_state(_unb64(rng["cpu"]))
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(_unb64(rng["cuda"]), device)


def _rng_seed(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


# ----------------------------------------------------------------------------- fit

Callback = Callable[[dict], Any]


def fit(
    model: nn.Module,
    data,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    optimizer: str = "adam",
    device: str | torch.device = "cpu",
    callbacks: Iterable[Callback] | Callback | None = None,
    progress: bool = True,
    state: TrainState | None = None,
    stop_event: threading.Event | None = None,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    grad_clip: float | None = None,
    eval_batch_size: int = 1024,
    desc: str | None = None,
    rollback: bool = True,
    distributed: bool = False,
) -> History:
    """Train a classifier with cross-entropy, deterministically and resumably.

    Parameters
    ----------
    model : nn.Module
        Maps inputs ``(batch, *input_shape)`` to logits ``(batch, num_classes)``. Moved to
        ``device``.
    data : Dataset or (TensorDataset, TensorDataset or None) or TensorDataset
        Training split and optional test split (evaluated after every epoch).
    epochs : int
        Total number of epochs; with a resumed ``state`` training continues from
        ``state.epoch`` up to ``epochs``.
    lr : float, default 1e-3
        Base learning rate.
    batch_size : int, default 64
        The last batch of an epoch may be smaller.
    seed : int, default 0
        Seeds the per-epoch data order and random state; must equal ``state.seed``.
    optimizer : {"adam", "adamw", "sgd"}
        Used when ``state`` is None.
    device : str or torch.device, default "cpu"
    callbacks : callable or list of callables, optional
        Each is called with a dict for every event: ``{"event": "start" | "step" | "epoch" |
        "end", "epoch", "step", "batch", "num_batches", "state", "model", "history", ...}``;
        ``"step"`` adds ``loss``, ``acc`` (of the batch) and ``lr``; ``"epoch"`` adds
        ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``epoch_time``. Returning
        ``False`` from a ``"step"`` or ``"epoch"`` call stops training after that step.
    progress : bool, default True
        Show a tqdm progress bar over all remaining steps.
    state : TrainState, optional
        Continue from this state (optimiser, position, history, random state). Build it with
        :meth:`TrainState.create` after moving the model to ``device``, or load it from a
        checkpoint. It is updated in place.
    stop_event : threading.Event, optional
        Checked after every step; when set, training stops (the state stays resumable).
    weight_decay : float, default 0.0
    lr_schedule : {"constant", "cosine"}, default "constant"
        Cosine decays to 0 over ``epochs`` epochs (a function of the step number only).
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    eval_batch_size : int, default 1024
    desc : str, optional
        Label of the progress bar.
    rollback : bool, default True
        Keep a copy of the parameters, buffers and optimiser state from before every step, so
        that a diverged step is undone exactly (one extra copy of the training state in
        memory, refreshed in place). With False a divergence is still detected and raised,
        but the model keeps its non-finite values; the last checkpoint is then the last good
        state.
    distributed : bool, default False
        Data-parallel over the running torch.distributed process group (see
        :mod:`adntn_lab.train.distributed`): every rank calls ``fit`` with the same arguments,
        takes its share of each global batch of ``batch_size`` examples and DDP averages the
        gradients, so the steps, the history and the final weights equal a one-process run
        up to float rounding. Only rank 0 shows the progress bar; callbacks run on every rank
        and a stop request on any rank stops all of them.

    Returns
    -------
    History
        ``state.history``: all epochs so far, including those before a resume.

    Raises
    ------
    TrainingDiverged
        A step gave a non-finite loss or parameters. Model, optimiser and ``state`` are rolled
        back to just before that step (``state.rng`` included), so ``state`` can be saved and
        training resumed, e.g. with a lower learning rate (:meth:`TrainState.change_lr`).
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if callbacks is None:
        callbacks = []
    elif callable(callbacks):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)

    device = torch.device(device)
    train_ds, test_ds = _split_data(data)
    x_train, y_train = _tensors(train_ds, "training")
    n = len(x_train)
    num_batches = math.ceil(n / batch_size)
    total_steps = epochs * num_batches

    model.to(device)
    par = None
    if distributed:
        from .distributed import DataParallel

        par = DataParallel(model, train_ds, batch_size=batch_size, seed=seed, device=device)
    net = model if par is None else par.net
    if state is None:
        state = TrainState.create(
            model, lr=lr, seed=seed, optimizer=optimizer, weight_decay=weight_decay
        )
    elif int(state.seed) != int(seed):
        raise ValueError(
            f"resuming with seed {seed} but the state was trained with seed {state.seed}; "
            "pass the same seed to continue the same data order"
        )
    history = state.history
    history.stopped = False
    if state.batch >= num_batches:
        raise ValueError(
            f"the state is at batch {state.batch} of an epoch but this data gives only "
            f"{num_batches} batches of {batch_size}; resume with the same data and batch_size"
        )

    def emit(event: dict) -> bool:
        keep = True
        for cb in callbacks:
            if cb(event) is False:
                keep = False
        return keep

    base = {"model": model, "state": state, "history": history, "num_batches": num_batches}
    emit({**base, "event": "start", "epoch": state.epoch, "step": state.step,
          "batch": state.batch, "epochs": epochs})

    bar = None
    remaining = max(total_steps - state.step, 0) if state.epoch < epochs else 0
    if progress and remaining > 0 and (par is None or par.is_main):
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=min(state.step, total_steps), desc=desc or "train",
                   unit="step", dynamic_ncols=True, leave=True)

    cuda_devices = [device] if device.type == "cuda" else []
    stopped = False
    model.train()
    snapshot = _StepSnapshot(model, state.optimizer) if rollback else None
    param_names = {id(p): name for name, p in model.named_parameters()}
    opt_params = [p for g in state.optimizer.param_groups for p in g["params"]]
    watched = [(param_names.get(id(p), f"#{i}"), p) for i, p in enumerate(opt_params)]

    def diverged(what: str, value: str, epoch: int, cur_lr: float) -> TrainingDiverged:
        step, batch = state.step + 1, state.batch + 1
        if snapshot is not None:
            snapshot.restore()
            undone = f"model and optimiser are rolled back to the end of step {step - 1}"
        else:
            undone = "the model keeps the non-finite values (rollback=False)"
        history.events.append({"event": "diverged", "epoch": epoch + 1, "step": step,
                               "what": what, "lr": cur_lr})
        summary = (f"training diverged at step {step} (epoch {epoch + 1}, batch {batch} of "
                   f"{num_batches}): the {what} became {value} at learning rate {cur_lr:g}; "
                   f"{undone}")
        return TrainingDiverged(
            f"{summary}. Continue from there with a lower learning rate "
            "(state.change_lr(...), then fit(..., state=state)), or check the data and the "
            "model's initial scale",
            summary=summary, epoch=epoch + 1, step=step, batch=batch, what=what, lr=cur_lr,
        )
    try:
        while state.epoch < epochs and not stopped:
            epoch = state.epoch
            order = epoch_order(n, state.seed, epoch)
            if par is not None:
                par.set_epoch(epoch)
            with torch.random.fork_rng(devices=cuda_devices):
                if state.batch == 0:
                    _rng_seed(derive_seed(state.seed, epoch, 1), device)
                    state.partial = _empty_partial()
                    state.rng = _rng_capture(device)
                else:
                    if state.rng is None:
                        raise ValueError("the state stops mid-epoch but holds no random state")
                    _rng_restore(state.rng, device)
                t0 = time.perf_counter()
                part = state.partial
                while state.batch < num_batches:
                    idx = order[state.batch * batch_size : (state.batch + 1) * batch_size]
                    if par is not None:
                        idx, n_global = par.batch(state.batch)
                    xb = x_train[idx].to(device, non_blocking=True)
                    yb = y_train[idx].to(device, non_blocking=True)
                    cur_lr = _lr_at(lr_schedule, state.lr, state.step, total_steps)
                    for g in state.optimizer.param_groups:
                        g["lr"] = cur_lr
                    if snapshot is not None:
                        snapshot.take()
                    state.optimizer.zero_grad(set_to_none=True)
                    logits = net(xb)
                    if par is None:
                        loss = nn.functional.cross_entropy(logits, yb)
                    else:
                        loss = par.loss(logits, yb, n_global)
                    if not torch.isfinite(loss):
                        raise diverged("loss", str(float(loss.detach())), epoch, cur_lr)
                    loss.backward()
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    state.optimizer.step()
                    bad = _first_nonfinite(watched)
                    if bad is not None:
                        raise diverged(f"parameter {bad!r}", "NaN or infinite", epoch, cur_lr)

                    loss_v = float(loss.detach())
                    correct = int((logits.detach().argmax(dim=1) == yb).sum())
                    bs = len(yb)
                    if par is not None:  # statistics of the whole global batch
                        total, correct, bs = par.batch_metrics(
                            loss_v * n_global / par.world_size, correct, bs)
                        loss_v = total / bs
                    part["loss_sum"] += loss_v * bs
                    part["correct"] += correct
                    part["count"] += bs
                    history.step_loss.append(loss_v)
                    state.batch += 1
                    state.step += 1
                    # the random state at the start of the next step: what a checkpoint
                    # written now (or a rollback of the next step) needs
                    state.rng = _rng_capture(device)
                    if bar is not None:
                        bar.update(1)
                        if state.step % 10 == 0 or state.batch == num_batches:
                            bar.set_postfix_str(
                                f"epoch {epoch + 1}/{epochs} loss {loss_v:.4f}", refresh=False
                            )
                    keep = emit({**base, "event": "step", "epoch": epoch, "step": state.step,
                                 "batch": state.batch, "loss": loss_v, "acc": correct / bs,
                                 "lr": cur_lr})
                    if stop_event is not None and stop_event.is_set():
                        keep = False
                    if par is not None:
                        keep = par.agree(keep)
                    if not keep:
                        stopped = True
                        if state.batch < num_batches:
                            break
                part["time"] += time.perf_counter() - t0
                if state.batch < num_batches:  # stopped mid-epoch: state.rng is current
                    break

            # epoch complete
            t1 = time.perf_counter()
            if test_ds is not None:
                ev = evaluate(model, test_ds, batch_size=eval_batch_size, device=device)
                test_loss, test_acc = ev.loss, ev.accuracy
                model.train()
            else:
                test_loss = test_acc = math.nan
            part["time"] += time.perf_counter() - t1
            history.epoch.append(epoch + 1)
            history.train_loss.append(part["loss_sum"] / part["count"])
            history.train_acc.append(part["correct"] / part["count"])
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            history.epoch_time.append(part["time"])
            state.epoch += 1
            state.batch = 0
            state.partial = _empty_partial()
            state.rng = None
            if bar is not None:
                msg = f"epoch {epoch + 1}/{epochs} loss {history.train_loss[-1]:.4f}"
                if not math.isnan(test_acc):
                    msg += f" test acc {test_acc:.4f}"
                bar.set_postfix_str(msg)
            keep = emit({**base, "event": "epoch", "epoch": epoch + 1, "step": state.step,
                         "batch": 0, "train_loss": history.train_loss[-1],
                         "train_acc": history.train_acc[-1], "test_loss": test_loss,
                         "test_acc": test_acc, "epoch_time": history.epoch_time[-1]})
            if stop_event is not None and stop_event.is_set():
                keep = False
            if par is not None:
                keep = par.agree(keep)
            if not keep:
                stopped = True
    finally:
        if bar is not None:
            bar.close()

    stopped = stopped and (state.epoch < epochs)
    history.stopped = stopped
    emit({**base, "event": "end", "epoch": state.epoch, "step": state.step, "batch": state.batch,
          "stopped": stopped})
    return history
