"""``LiveTrainer``: train a model in a background thread and watch it learn.

Training runs :func:`adntn_lab.train.fit` in a daemon thread with a ``threading.Event`` that
``fit`` checks after every optimiser step, so Stop takes effect within one step. The model and
the :class:`~adntn_lab.train.TrainState` (optimiser, position in the data, random state) stay
on the widget, so Resume continues exactly where Stop left off.

One trainer per model at a time: a new ``LiveTrainer`` of a model that another one is
training stops that one first (within one step) and marks it replaced, so running the cell
twice never has two threads updating the same parameters.
"""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np
import torch
import traitlets
from torch import nn

from ..nn.compress import adntn_layers
from ..train.loop import OPTIMIZERS, fit
from ..train.records import TrainState
from ._common import (
    STATIC,
    ActionWidget,
    array_to_png,
    describe_error,
    json_safe,
    register_cache,
)

__all__ = ["LiveTrainer", "compression_info"]

_MAX_CURVE_POINTS = 400
_MAX_GRAD_BARS = 48
_TAKEOVER_TIMEOUT_S = 30.0

# model -> the LiveTrainer that owns it; written by the notebook thread (a new trainer) and
# read by the training threads' owners, hence the lock
_OWNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_OWNERS_LOCK = threading.Lock()


def _claim(model: nn.Module, trainer: LiveTrainer) -> None:
    """Make ``trainer`` the owner of ``model``, stopping the previous owner's thread."""
    with _OWNERS_LOCK:
        previous = _OWNERS.get(model)
        _OWNERS[model] = trainer
    if previous is not None and previous is not trainer:
        previous._replace()


def clear_trainer_registry() -> None:
    """Stop every registered trainer's thread (without waiting) and forget the owners."""
    with _OWNERS_LOCK:
        owners = list(_OWNERS.values())
        _OWNERS.clear()
    for trainer in owners:
        trainer._stop_event.set()


register_cache(clear_trainer_registry)


def compression_info(model: nn.Module) -> dict:
    """Parameter counts of a model and of its generated layers.

    Returns
    -------
    dict
        ``params`` (trainable), ``dense_params`` (the same model with every generated layer
        dense), ``compression`` (their ratio), ``layers`` (one entry per generated layer:
        ``name``, ``family``, ``shape``, ``params``, ``dense``, ``ratio``).
    """
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = []
    gen_params = dense_w = 0
    for name, layer in adntn_layers(model).items():
        gen = layer.generator
        o, i = gen.shape
        layers.append({"name": name, "family": gen.family, "shape": [o, i],
                       "params": gen.num_params, "dense": o * i,
                       "ratio": o * i / gen.num_params})
        gen_params += gen.num_params
        dense_w += o * i
    dense_total = total - gen_params + dense_w
    return {"params": int(total), "dense_params": int(dense_total),
            "compression": dense_total / total if total else 1.0, "layers": layers}


def _downsample(values: list[float], n: int) -> tuple[list[float], list[float]]:
    """Bucket means of ``values`` at most ``n`` long, with the bucket centres (1-based steps)."""
    if len(values) <= n:
        return [float(k + 1) for k in range(len(values))], [float(v) for v in values]
    edges = np.linspace(0, len(values), n + 1).astype(int)
    arr = np.asarray(values, dtype=np.float64)
    xs = [float((a + b + 1) / 2) for a, b in zip(edges[:-1], edges[1:])]
    ys = [float(arr[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]
    return xs, ys


def _resolve_data(data):
    if isinstance(data, str):
        from ..data import load_dataset

        return load_dataset(data)
    train = getattr(data, "train", None)
    if train is None and isinstance(data, (tuple, list)) and len(data) == 2:
        train = data[0]
    if train is None and isinstance(data, torch.utils.data.TensorDataset):
        train = data
    if train is None or getattr(train, "tensors", None) is None:
        raise TypeError("data must be a dataset name such as 'digits', a Dataset from "
                        "load_dataset, a (train, test) pair of TensorDatasets or one "
                        f"TensorDataset; got {type(data).__name__}")
    return data


class LiveTrainer(ActionWidget):
    """Start, stop and resume training of a classifier, with live curves.

    Parameters
    ----------
    model : nn.Module
        Maps inputs to logits; its generated layers (``ADNTNLinear``, ``ADNTNConv2d``) are
        summarised (parameters, compression, gradient norms per core).
    data : str, Dataset, (TensorDataset, TensorDataset) or TensorDataset
        A dataset name (``"digits"``, ``"mnist-5k"``) is loaded with
        :func:`adntn_lab.data.load_dataset`.
    epochs : int
        Epochs per press of Start (Resume finishes the interrupted run).
    lr, batch_size, optimizer, seed, device, weight_decay
        Passed to :func:`adntn_lab.train.fit`.
    show_weight : bool
        Show the weight of ``weight_layer`` (the first generated layer by default) as a
        heatmap, refreshed during training.
    show_grads : bool
        Show the gradient norm of every core (every parameter if the model has no generated
        layer).
    update_interval : float
        Seconds between refreshes of the curves while training.

    Attributes
    ----------
    status : {"idle", "running", "stopping", "stopped", "finished", "error", "replaced"}
        ``"replaced"``: a newer ``LiveTrainer`` of the same model took over; this one
        refuses Start and Resume.
    history : History
        Everything recorded so far (``state.history``).
    state : TrainState
        Optimiser, position in the data and random state; Resume continues from it.
    """

    _esm = STATIC / "trainer.js"
    _css = STATIC / "trainer.css"

    status = traitlets.Unicode("idle").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Float(0.0).tag(sync=True)
    epoch = traitlets.Int(0).tag(sync=True)
    target_epochs = traitlets.Int(0).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    total_steps = traitlets.Int(0).tag(sync=True)
    curves = traitlets.Dict().tag(sync=True)
    info = traitlets.Dict().tag(sync=True)
    weight_image = traitlets.Unicode("").tag(sync=True)
    grad_norms = traitlets.Dict().tag(sync=True)

    _actions = {"start": "start", "stop": "stop", "resume": "resume"}

    def __init__(self, model: nn.Module, data, *, epochs: int = 5, lr: float = 1e-3,
                 batch_size: int = 64, optimizer: str = "adam", seed: int = 0,
                 device: str = "cpu", weight_decay: float = 0.0, show_weight: bool = True,
                 show_grads: bool = True, weight_layer: str | None = None,
                 update_interval: float = 0.25):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        super().__init__()
        self.model = model
        self.data = _resolve_data(data)
        train = getattr(self.data, "train", None)
        if train is None:
            train = self.data[0] if isinstance(self.data, (tuple, list)) else self.data
        self._num_batches = -(-len(train) // batch_size)
        self.epochs = epochs
        self.lr = float(lr)
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.seed = seed
        self.device = torch.device(device)
        self.weight_decay = weight_decay
        self.show_weight = show_weight
        self.show_grads = show_grads
        self.update_interval = float(update_interval)
        self._weight_module, self._weight_name = self._find_weight_layer(weight_layer)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._replaced = False
        _claim(model, self)  # before touching the model: the previous owner's thread stops
        # the optimiser is built here, not in the thread: its first construction imports a
        # lot of torch, which would otherwise delay the first step (and a Stop) by seconds
        model.to(self.device)
        self.state: TrainState = TrainState.create(model, lr=self.lr, seed=seed,
                                                   optimizer=optimizer,
                                                   weight_decay=weight_decay)
        self._lock = threading.Lock()
        self._last_push = 0.0
        self._last_image = 0.0
        self._target = 0
        self.info = json_safe({**compression_info(model), "weight_layer": self._weight_name,
                               "device": str(self.device), "batches_per_epoch":
                               self._num_batches})
        self._push(force_images=True)

    # ------------------------------------------------------------------ public
    @property
    def history(self):
        """Everything recorded so far (losses per step, metrics per epoch)."""
        return self.state.history

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Train for ``epochs`` more epochs (Resume instead continues a stopped run)."""
        self._check_owner()
        if self.running:
            raise ValueError("training is already running; press Stop first")
        done = self.state.epoch
        if self.state.batch > 0:
            raise ValueError("a run was stopped mid-epoch; press Resume to finish it")
        self._launch(done + self.epochs)

    def resume(self) -> None:
        """Continue the stopped run up to its target number of epochs."""
        self._check_owner()
        if self.running:
            raise ValueError("training is already running")
        if self._target == 0:
            self.start()
            return
        if self.state.epoch >= self._target and self.state.batch == 0:
            raise ValueError("the run has finished; press Start to train further")
        self._launch(self._target)

    def stop(self) -> None:
        """Ask the training thread to stop after its current step."""
        self._stop_event.set()
        if self.running:
            self.status = "stopping"
            self.message = "stopping after the current step…"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the training thread ends; True if it has ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------------ ownership
    def _check_owner(self) -> None:
        if self._replaced:
            raise ValueError("a newer LiveTrainer of this model took over; use that one "
                             "(one trainer per model at a time)")

    def _replace(self) -> None:
        """Stop this trainer for good: a newer one of the same model took over."""
        self._replaced = True
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(_TAKEOVER_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"the previous LiveTrainer of this model did not stop "
                                   f"within {_TAKEOVER_TIMEOUT_S:.0f} s; stop it first")
        with self.hold_sync():
            self.status = "replaced"
            self.message = (f"a newer LiveTrainer of this model took over at step "
                            f"{self.state.step}; use that one")

    # ------------------------------------------------------------------ thread
    def _launch(self, target: int) -> None:
        self._target = int(target)
        self._stop_event = threading.Event()
        self.error = ""
        with self.hold_sync():
            self.status = "running"
            self.target_epochs = self._target
            self.total_steps = self._target * self._num_batches
            self.message = f"training to epoch {self._target}"
        self._thread = threading.Thread(target=self._run, args=(self._stop_event,),
                                        name="adntn-live-trainer", daemon=True)
        self._thread.start()

    def _run(self, stop_event: threading.Event) -> None:
        t0 = time.perf_counter()
        try:
            history = fit(self.model, self.data, epochs=self._target, lr=self.lr,
                          batch_size=self.batch_size, seed=self.seed,
                          optimizer=self.optimizer, device=self.device,
                          callbacks=[self._on_event], progress=False, state=self.state,
                          stop_event=stop_event, weight_decay=self.weight_decay)
            status = "stopped" if history.stopped else "finished"
            message = (f"stopped at epoch {self.state.epoch}, step {self.state.step} — press "
                       "Resume to continue" if history.stopped else
                       f"finished {len(history.epoch)} epochs in "
                       f"{time.perf_counter() - t0:.1f} s")
        except Exception as exc:  # shown in the widget; the model keeps its last state
            status, message = "error", "training failed"
            self.error = describe_error("training", exc)
        self._push(force_images=True)
        if self._replaced:
            return  # _replace() shows the final state
        with self.hold_sync():
            self.status = status
            self.message = message

    def _on_event(self, ev: dict):
        now = time.perf_counter()
        if ev["event"] == "step":
            if now - self._last_push >= self.update_interval:
                images = now - self._last_image >= max(1.0, 4 * self.update_interval)
                self._push(force_images=images)
        elif ev["event"] == "epoch":
            self._push(force_images=True)
        return None

    # ------------------------------------------------------------------ display
    def _push(self, force_images: bool = False) -> None:
        with self._lock:
            now = time.perf_counter()
            self._last_push = now
            state = self.state
            hist = state.history
            xs, ys = _downsample(hist.step_loss, _MAX_CURVE_POINTS)
            curves = {"step": xs, "step_loss": ys, "epoch": list(hist.epoch),
                      "train_loss": list(hist.train_loss), "train_acc": list(hist.train_acc),
                      "test_loss": list(hist.test_loss), "test_acc": list(hist.test_acc),
                      "batches_per_epoch": self._num_batches}
            total = max(self._target * self._num_batches, 1)
            updates = {"curves": json_safe(curves), "step": state.step, "epoch": state.epoch,
                       "progress": min(state.step / total, 1.0) if self._target else 0.0}
            if force_images:
                self._last_image = now
                if self.show_weight and self._weight_module is not None:
                    updates["weight_image"] = self._weight_png()
                if self.show_grads:
                    updates["grad_norms"] = self._grad_norms()
            with self.hold_sync():
                for k, v in updates.items():
                    setattr(self, k, v)

    def _find_weight_layer(self, name):
        modules = dict(self.model.named_modules())
        if name is not None:
            if name not in modules:
                raise ValueError(f"weight_layer {name!r} is not a module of the model; "
                                 f"choose one of {[n for n in modules if n]}")
            return modules[name], name
        generated = adntn_layers(self.model)
        if generated:
            first = next(iter(generated))
            return generated[first], first
        for n, m in modules.items():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                return m, n
        return None, None

    def _weight_png(self) -> str:
        with torch.no_grad():
            w = self._weight_module.weight.detach().float().cpu()
        w = w.reshape(w.shape[0], -1).numpy()
        return array_to_png(w, max_side=256)

    def _grad_norms(self) -> dict:
        named = []
        generated = adntn_layers(self.model)
        if generated:
            for lname, layer in generated.items():
                named += [(f"{lname}.{c}", p) for c, p in layer.cores.items()]
        else:
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        names, values = [], []
        for n, p in named[:_MAX_GRAD_BARS]:
            names.append(n)
            values.append(float(p.grad.norm()) if p.grad is not None else None)
        return json_safe({"names": names, "values": values,
                          "step": self.state.step,
                          "omitted": max(len(named) - _MAX_GRAD_BARS, 0)})
