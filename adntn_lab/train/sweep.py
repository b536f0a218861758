"""Resumable grids of training runs: families x bond dimensions x seeds.

Every grid point trains in its own run folder ``<out>/<key>`` (``key`` such as
``ttn-chi4-seed0`` or ``dense-seed0``) and appends one row to ``<out>/results.jsonl``;
``<out>/results.csv`` is rewritten from it after every point. Running the same sweep again skips
the points already in ``results.jsonl`` and continues an interrupted point from its checkpoint.
The base settings are kept in ``<out>/sweep.json``; a sweep with different base settings is
refused rather than mixed into the same table.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text
from .runs import RunConfig, copy_config, run_training

__all__ = ["RESULT_FIELDS", "point_key", "read_results", "run_sweep"]

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
    }


def _write_csv(path: Path, rows: Iterable[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RESULT_FIELDS), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def run_sweep(
    base: RunConfig,
    out_dir: str | os.PathLike,
    *,
    families: Sequence[str],
    bond_dims: Sequence[int],
    seeds: Sequence[int],
    progress: bool = True,
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
    progress : bool
    log : callable or None

    Returns
    -------
    list of dict
        All rows of ``results.jsonl`` after the sweep (fields :data:`RESULT_FIELDS`).
    """
    say = log or (lambda _m: None)
    if not families or not bond_dims or not seeds:
        raise ValueError("a sweep needs at least one family, one bond dimension and one seed")
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

    points: list[tuple[str | None, int, int]] = []
    for fam in families:
        fam_key = None if str(fam).lower() in ("dense", "none") else str(fam).lower()
        for seed in seeds:
            if fam_key is None:
                points.append((None, base.bond_dim, int(seed)))
            else:
                points.extend((fam_key, int(bd), int(seed)) for bd in bond_dims)
    # validate every point before training any
    configs = []
    seen = set()
    for fam, bd, seed in points:
        key = point_key(fam, bd, seed)
        if key in seen:
            continue
        seen.add(key)
        changes = {"family": fam, "bond_dim": bd, "seed": seed}
        if fam is None:
            changes["strategy"] = "e2e"  # the dense baseline has nothing to fit or sweep
        configs.append((key, copy_config(base, **changes)))

    results_path = out / "results.jsonl"
    rows = read_results(results_path)
    done = {r["key"] for r in rows}
    todo = [(k, c) for k, c in configs if k not in done]
    say(f"sweep {out}: {len(configs)} points, {len(configs) - len(todo)} already done, "
        f"{len(todo)} to run")
    data = None
    for i, (key, config) in enumerate(todo, start=1):
        if data is None:
            from ..data import load_dataset

            data = load_dataset(base.dataset, seed=base.data_seed)
        say(f"[{i}/{len(todo)}] {key}")
        run_dir = out / key
        result = run_training(config, run_dir, resume=True, data=data, progress=progress,
                              log=log)
        if not result.metrics.get("complete"):
            say(f"{key} did not finish; run the sweep again to continue it")
            break
        row = _row(key, config, result.metrics, run_dir)
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        rows.append(row)
        _write_csv(out / "results.csv", rows)
    _write_csv(out / "results.csv", rows)
    return rows
