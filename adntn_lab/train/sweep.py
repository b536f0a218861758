"""Resumable grids of training runs: families x bond dimensions x seeds, on any executor.

Every grid point trains in its own run folder ``<out>/<key>`` (``key`` such as
``ttn-chi4-seed0`` or ``dense-seed0``) and appends one row to ``<out>/results.jsonl``;
``<out>/results.csv`` is rewritten from it after every point. Running the same sweep again skips
the points already in ``results.jsonl`` and continues an interrupted point from its checkpoint.
The base settings are kept in ``<out>/sweep.json``; a sweep with different base settings is
refused rather than mixed into the same table.

Points run one after the other in this process, or on any
:class:`concurrent.futures.Executor` (``executor=``): a local process pool
(:func:`local_executor`, what ``adntn-lab sweep --jobs N`` uses) or Dask's
``Client.get_executor()``. Workers train and return rows; only the calling process appends to
``results.jsonl`` (one line per point, flushed and fsync'd), so a sweep killed at any moment
loses at most the points that were still training. :func:`run_tasks` is the same machinery for
any function that turns a task into a row (the frontier experiment uses it directly).
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from functools import lru_cache
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text
from .config import RunConfig, copy_config
from .runs import run_training

__all__ = [
    "RESULT_FIELDS",
    "append_row",
    "local_executor",
    "point_key",
    "point_model",
    "read_results",
    "run_sweep",
    "run_tasks",
    "train_point",
]

RESULT_FIELDS = (
    "key",
    "family",
    "bond_dim",
    "seed",
    "params",
    "compressed_params",
    "dense_layer_params",
    "compression",
    "test_acc",
    "best_test_acc",
    "train_loss",
    "epochs",
    "wall_time",
    "run_dir",
)
_POINT_KEYS = ("family", "bond_dim", "seed")


def point_key(family: str | None, bond_dim: int, seed: int) -> str:
    """Folder name / identifier of a grid point."""
    if family is None or family == "dense":
        return f"dense-seed{seed}"
    return f"{family}-chi{bond_dim}-seed{seed}"


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``results.jsonl`` (an unfinished last line, from a crash, is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _row(key: str, config: RunConfig, metrics: dict, run_dir: Path) -> dict[str, Any]:
    layers = metrics.get("compressed_layers") or []
    before = sum(int(r.get("params_before", 0)) for r in layers)
    after = sum(int(r.get("params_after", 0)) for r in layers)
    final = metrics.get("final", {})
    return {
        "key": key,
        "family": config.family or "dense",
        "bond_dim": config.bond_dim if config.family else None,
        "seed": config.seed,
        "params": metrics["params"]["trainable"],
        "compressed_params": after if layers else None,
        "dense_layer_params": before if layers else None,
        "compression": (before / after) if layers and after else None,
        "test_acc": final.get("test_acc"),
        "best_test_acc": final.get("best_test_acc"),
        "train_loss": final.get("train_loss"),
        "epochs": metrics.get("epochs_done"),
        "wall_time": metrics.get("wall_time"),
        "run_dir": str(run_dir),
        # not in the CSV: what a reader (the explorer) needs to rebuild the point
        "activation": config.activation,
        "options": dict(config.options),
        "compressed_layers": layers,
    }


def _write_csv(path: Path, rows: Iterable[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_FIELDS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def append_row(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one JSON line to ``path``, flushed and fsync'd before returning.

    A line left unfinished by a crash is closed first, so it cannot swallow the new row.
    """
    path = Path(path)
    line = json.dumps(dict(row)) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- executors


def _init_worker(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(int(threads))


def local_executor(jobs: int, *, threads: int | None = None) -> Executor:
    """A pool of ``jobs`` worker processes for :func:`run_sweep` / :func:`run_tasks`.

    Workers are started with ``spawn`` (a fresh interpreter: no inherited torch thread pools,
    which ``fork`` can deadlock on) and each uses ``threads`` torch CPU threads, by default
    :data:`adntn_lab.train.distributed.THREADS_PER_PROCESS` (1).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from .distributed import THREADS_PER_PROCESS

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if threads is None:
        threads = THREADS_PER_PROCESS
    return ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))


def run_tasks(
    tasks: Sequence[Mapping[str, Any]],
    worker: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    results_path: str | os.PathLike | None,
    *,
    executor: Executor | None = None,
    on_row: Callable[[dict], None] | None = None,
    stop_event: threading.Event | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run ``worker(task)`` for every task whose ``key`` is not yet in ``results_path``.

    Parameters
    ----------
    tasks : sequence of mapping
        Each has a unique ``"key"``; the rest is whatever ``worker`` needs. With an executor
        both must be picklable (a module-level function, plain data).
    worker : callable
        ``task -> row`` (a JSON-ready dict with the task's ``key``), or None when the point
        did not finish (stopped): it is not recorded and no further task starts.
    results_path : path or None
        The ``results.jsonl`` read for finished keys and appended to, by this process only;
        None keeps the rows in memory.
    executor : concurrent.futures.Executor, optional
        Default: run the tasks one by one in this process.
    on_row : callable, optional
        Called here with every new row once it is recorded.
    stop_event : threading.Event, optional
        When set, no further task starts; with an executor, tasks not yet started are
        cancelled and running ones are waited for and recorded.
    log : callable or None

    Returns
    -------
    list of dict
        All rows of ``results_path`` (old and new), or the new rows when it is None.

    Raises
    ------
    Exception
        The first error a task raised, after the tasks already running have finished and
        been recorded (tasks not yet started are cancelled).
    """
    say = log or (lambda _m: None)
    keys = [t["key"] for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique; repeated: {', '.join(map(str, dup))}")
    rows = read_results(results_path) if results_path is not None else []
    done = {r.get("key") for r in rows}
    todo = [t for t in tasks if t["key"] not in done]

    def record(row) -> None:
        row = dict(row)
        if results_path is not None:
            append_row(results_path, row)
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def stopping() -> bool:
        return stop_event is not None and stop_event.is_set()

    if executor is None:
        for task in todo:
            if stopping():
                break
            row = worker(task)
            if row is None:
                say(f"{task['key']} did not finish; run the sweep again to continue it")
                break
            record(row)
        return rows

    pending: dict[Future, Mapping[str, Any]] = {executor.submit(worker, t): t for t in todo}
    error: BaseException | None = None
    try:
        while pending:
            finished, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = pending.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                        say(f"{task['key']} failed ({type(exc).__name__}: {exc}); waiting "
                            "for the points still running")
                    continue
                row = fut.result()
                if row is None:
                    say(f"{task['key']} did not finish; run the sweep again to continue it")
                    continue
                record(row)
            if error is not None or stopping():
                for fut in list(pending):
                    if fut.cancel():
                        pending.pop(fut)
    except BaseException:  # interrupted here: started points are lost, finished ones kept
        for fut in pending:
            fut.cancel()
        raise
    if error is not None:
        raise error
    return rows


# ----------------------------------------------------------------------------- grid points


@lru_cache(maxsize=2)
def _dataset(name: str, seed: int):
    from ..data import load_dataset

    return load_dataset(name, seed=seed)


def train_point(task: Mapping[str, Any], *, stop_event=None,
                log: Callable[[str], None] | None = print) -> dict[str, Any] | None:
    """Train one grid point of :func:`run_sweep` (in whichever process runs it).

    ``task`` holds ``key``, ``config`` (a :class:`RunConfig` dict), ``run_dir``, ``progress``
    and ``threads`` (torch CPU threads for this point, or None to leave them); ``log=False``
    in it silences the point. Returns the result row, or None when training stopped before
    the last epoch.
    """
    import torch

    config = RunConfig.from_dict(task["config"])
    threads = task.get("threads")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        data = _dataset(config.dataset, config.data_seed)
        run_dir = Path(task["run_dir"])
        result = run_training(config, run_dir, resume=True, data=data,
                              progress=bool(task.get("progress", False)),
                              log=log if task.get("log", True) else None,
                              stop_event=stop_event)
    finally:
        if threads is not None:
            torch.set_num_threads(before)
    if not result.metrics.get("complete"):
        return None
    return _row(task["key"], config, result.metrics, run_dir)


def point_model(run_dir: str | os.PathLike):
    """The trained model of a finished point, rebuilt from its run folder's checkpoint."""
    from .checkpoint import load_checkpoint
    from .strategies import build_run_model

    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.safetensors")
    if ckpt.config is None:
        raise ValueError(f"{run_dir}: the checkpoint stores no run configuration")
    config = RunConfig.from_dict(ckpt.config)
    model = build_run_model(config, _dataset(config.dataset, config.data_seed))
    return ckpt.restore_model(model)


def _grid(base: RunConfig, families, bond_dims, seeds) -> list[tuple[str, dict]]:
    if not families or not bond_dims or not seeds:
        raise ValueError("a sweep needs at least one family, one bond dimension and one seed")
    out = []
    for fam in families:
        fam_key = None if str(fam).lower() in ("dense", "none") else str(fam).lower()
        for seed in seeds:
            if fam_key is None:
                out.append((point_key(None, base.bond_dim, int(seed)),
                            {"family": None, "bond_dim": base.bond_dim, "seed": int(seed)}))
            else:
                out.extend((point_key(fam_key, int(bd), int(seed)),
                            {"family": fam_key, "bond_dim": int(bd), "seed": int(seed)})
                           for bd in bond_dims)
    return out


def run_sweep(
    base: RunConfig,
    out_dir: str | os.PathLike,
    *,
    families: Sequence[str] | None = None,
    bond_dims: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    points: Iterable[tuple[str, Mapping[str, Any]]] | None = None,
    executor: Executor | None = None,
    threads: int | None = None,
    progress: bool = True,
    stop_event: threading.Event | None = None,
    on_row: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Train every (family, bond dimension, seed) point not yet in ``out_dir/results.jsonl``.

    Parameters
    ----------
    base : RunConfig
        Settings shared by all points; ``family``, ``bond_dim`` and ``seed`` are replaced per
        point. ``"dense"`` in ``families`` adds the uncompressed baseline (one point per seed).
    out_dir : path
    families : sequence of str
    bond_dims : sequence of int
        For ``"lowrank"`` the bond dimension is the rank, for ``"brickwall"`` the depth.
    seeds : sequence of int
    points : iterable of (key, changes), optional
        Instead of the grid: each point's key and the settings it changes in ``base``.
    executor : concurrent.futures.Executor, optional
        Where the points train: :func:`local_executor`, ``dask.distributed.Client(...)
        .get_executor()``, or any other. Default: one after the other in this process.
        Workers write the points' run folders; this process alone writes ``results.jsonl``,
        ``results.csv`` and ``sweep.json``.
    threads : int, optional
        Torch CPU threads of each point (default: whatever the worker has).
    progress : bool
        Progress bars (in-process only: bars of several workers would garble each other).
    stop_event : threading.Event, optional
        Set it to stop: in-process, the running point stops after its current step (and is
        continued by the next run); with an executor, no further point starts.
    on_row : callable, optional
        Called with every new row as soon as it is recorded.
    log : callable or None

    Returns
    -------
    list of dict
        All rows of ``results.jsonl`` after the sweep (fields :data:`RESULT_FIELDS`).
    """
    say = log or (lambda _m: None)
    if points is None:
        spec = _grid(base, families, bond_dims, seeds)
    elif families or bond_dims or seeds:
        raise ValueError("give either points or families/bond_dims/seeds, not both")
    else:
        spec = [(str(k), dict(ch)) for k, ch in points]
        if not spec:
            raise ValueError("points is empty; a sweep needs at least one point")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "sweep.json"
    shared = {k: v for k, v in base.to_dict().items() if k not in (*_POINT_KEYS, "device")}
    if spec_path.exists():
        old = json.loads(spec_path.read_text()).get("base", {})
        diffs = sorted(k for k in set(old) | set(shared) if old.get(k) != shared.get(k))
        if diffs:
            raise ValueError(
                f"{out} holds a sweep with other base settings ({', '.join(diffs)} differ); "
                "use another output folder for this sweep"
            )
    atomic_write_text(spec_path, json.dumps({"base": shared}, indent=2) + "\n")

    # validate every point before training any
    tasks = []
    seen = set()
    for key, changes in spec:
        if key in seen:
            continue
        seen.add(key)
        changes = dict(changes)
        if changes.get("family") in (None, "dense", "none"):
            changes["strategy"] = "e2e"  # the dense baseline has nothing to fit or sweep
        config = copy_config(base, **changes)
        tasks.append({"key": key, "config": config.to_dict(), "run_dir": str(out / key),
                      "progress": bool(progress and executor is None), "threads": threads,
                      "log": log is not None})

    results_path = out / "results.jsonl"
    current = read_results(results_path)
    done = {r.get("key") for r in current}
    todo = sum(1 for t in tasks if t["key"] not in done)
    where = "" if executor is None else f" on {type(executor).__name__}"
    say(f"sweep {out}: {len(tasks)} points, {len(tasks) - todo} already done, "
        f"{todo} to run{where}")

    def recorded(row: dict) -> None:
        current.append(row)
        _write_csv(out / "results.csv", current)
        if executor is not None:
            say(f"{row['key']} done ({len(current)} of {len(tasks)} points recorded)")
        if on_row is not None:
            on_row(row)

    worker = train_point if executor is not None else _InProcess(stop_event, log)
    rows = run_tasks(tasks, worker, results_path, executor=executor, on_row=recorded,
                     stop_event=stop_event, log=log)
    _write_csv(out / "results.csv", rows)
    return rows


class _InProcess:
    """:func:`train_point` here, with the stop event that cannot travel to other processes."""

    def __init__(self, stop_event, log):
        self.stop_event = stop_event
        self.log = log

    def __call__(self, task):
        return train_point(task, stop_event=self.stop_event, log=self.log)
