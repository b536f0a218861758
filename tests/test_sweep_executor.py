"""Sweeps on executors: Dask and local process pools, parent-only crash-safe results, and the
on-disk plan cache shared by parallel workers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from adntn_lab.train import sweep as sweep_mod
from adntn_lab.train.runs import RunConfig

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(model="fc2", dataset="digits", hidden=16, epochs=1, batch_size=128, lr=1e-2)
# fields that differ between two sweeps of the same points for reasons other than training
_CIRCUMSTANCE = ("wall_time", "run_dir")


def _comparable(rows):
    return {r["key"]: {k: v for k, v in r.items() if k not in _CIRCUMSTANCE} for r in rows}


def _serial(out):
    return sweep_mod.run_sweep(RunConfig(**BASE), out, families=["ttn", "mpo"],
                               bond_dims=[2, 3], seeds=[0], threads=1, progress=False, log=None)


@pytest.fixture(scope="module")
def serial_rows(tmp_path_factory):
    return _serial(tmp_path_factory.mktemp("serial"))


def test_dask_local_cluster_gives_the_serial_rows(tmp_path, serial_rows):
    distributed = pytest.importorskip("distributed")
    # processes, not threads: a point seeds torch's global random state, which threads share
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        rows = sweep_mod.run_sweep(RunConfig(**BASE), tmp_path, families=["ttn", "mpo"],
                                   bond_dims=[2, 3], seeds=[0], threads=1, log=None,
                                   executor=client.get_executor())
        workers = client.scheduler_info()["workers"]
    assert len(workers) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert len(serial_rows) == 4
    assert _comparable(rows) == _comparable(serial_rows)
    # the parent wrote one line per point; each worker wrote its point's run folder
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == sorted(r["key"] for r in serial_rows)
    for r in rows:
        assert (Path(r["run_dir"]) / "checkpoint.safetensors").is_file()


def test_point_model_rebuilds_a_finished_point(serial_rows):
    from adntn_lab.data import load_dataset
    from adntn_lab.train.loop import evaluate

    row = next(r for r in serial_rows if r["key"] == "ttn-chi3-seed0")
    model = sweep_mod.point_model(row["run_dir"])
    acc = evaluate(model, load_dataset("digits").test).accuracy
    assert acc == row["test_acc"]
    assert sum(p.numel() for p in model.parameters()) == row["params"]


def _sweep_cmd(out):
    return [sys.executable, "-m", "adntn_lab", "sweep", "--families", "ttn", "mpo",
            "--bond-dims", "2", "3", "--seeds", "0", "--dataset", "digits", "--hidden", "16",
            "--epochs", "1", "--batch-size", "128", "--lr", "1e-2", "--out", str(out),
            "--jobs", "2", "--threads", "1", "--no-progress"]


def test_killed_sweep_reruns_only_the_missing_points(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = tmp_path / "results.jsonl"
    proc = subprocess.Popen(_sweep_cmd(tmp_path), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (results.exists() and results.read_text().count("\n") >= 1):
            assert proc.poll() is None, "the sweep ended before recording a point"
            assert time.monotonic() < deadline, "no point finished in time"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its pool workers, mid-sweep
        proc.wait()
    first = sweep_mod.read_results(results)
    assert 1 <= len(first) < 4
    out = subprocess.run(_sweep_cmd(tmp_path), env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{len(first)} already done, {4 - len(first)} to run" in out.stdout
    rows = sweep_mod.read_results(results)
    assert sorted(r["key"] for r in rows) == sorted(
        ["ttn-chi2-seed0", "ttn-chi3-seed0", "mpo-chi2-seed0", "mpo-chi3-seed0"])
    assert rows[: len(first)] == first  # the recorded points were not trained again


def test_run_tasks_keeps_finished_rows_when_a_task_fails(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"')  # a line cut off by a crash

    def worker(task):
        if task["key"] == "c":
            raise ArithmeticError("point c diverged")
        return {"key": task["key"], "v": task["v"]}

    tasks = [{"key": k, "v": i} for i, k in enumerate("abcd")]
    with ThreadPoolExecutor(1) as pool, pytest.raises(ArithmeticError, match="diverged"):
        sweep_mod.run_tasks(tasks, worker, path, executor=pool, log=None)
    rows = sweep_mod.read_results(path)
    assert [r["key"] for r in rows][:2] == ["a", "b"]  # "a" skipped, "b" recorded intact
    assert "c" not in {r["key"] for r in rows}
    rows = sweep_mod.run_tasks([t for t in tasks if t["key"] != "c"], worker, path, log=None)
    assert sorted(r["key"] for r in rows) == ["a", "b", "d"]
    with pytest.raises(ValueError, match="unique"):
        sweep_mod.run_tasks([{"key": "x"}, {"key": "x"}], worker, None)


def test_run_tasks_stop_event_cancels_points_not_started(tmp_path):
    stop = threading.Event()
    started = []

    def worker(task):
        started.append(task["key"])
        stop.set()
        time.sleep(0.2)  # a point takes a while; the parent notices the stop meanwhile
        return {"key": task["key"]}

    with ThreadPoolExecutor(1) as pool:
        rows = sweep_mod.run_tasks([{"key": str(i)} for i in range(50)], worker,
                                   tmp_path / "r.jsonl", executor=pool, stop_event=stop,
                                   log=None)
    assert 1 <= len(started) < 5 and [r["key"] for r in rows] == started


# ----------------------------------------------------------------------------- plan cache


def _write_many(directory, key, n, seed):
    from adntn_lab.engine.planning import AtomicDiskDict

    d = AtomicDiskDict(directory)
    for i in range(n):
        d[key] = {"writer": seed, "i": i, "blob": bytes([seed]) * 4_000_000}


def _read_many(directory, key, seconds):
    torn = reads = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        fname = Path(directory, *key)
        if not fname.exists():
            continue
        try:
            with open(fname, "rb") as f:
                v = pickle.load(f)
            assert len(v["blob"]) == 4_000_000
            reads += 1
        except (EOFError, pickle.UnpicklingError):
            torn += 1
    return torn, reads


def test_plan_cache_entries_are_never_read_half_written(tmp_path):
    ctx = mp.get_context("spawn")
    key = ("ab", "cdef")
    with ctx.Pool(3) as pool:
        writers = [pool.apply_async(_write_many, (str(tmp_path), key, 25, s)) for s in (1, 2)]
        reader = pool.apply_async(_read_many, (str(tmp_path), key, 4.0))
        for w in writers:
            w.get(timeout=120)
        torn, reads = reader.get(timeout=120)
    assert torn == 0 and reads > 0
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_plan_cache_directory_uses_atomic_entries(tmp_path):
    import adntn_lab as al
    from adntn_lab.engine import planning

    al.set_plan_cache(str(tmp_path))
    try:
        opt = planning._optimizer("hyper")
        assert isinstance(opt._cache, planning.AtomicDiskDict)
        inputs = (("a", "b"), ("b", "c"), ("c", "d"))
        sizes = {"a": 2, "b": 3, "c": 4, "d": 5}
        tree = planning._best_tree(inputs, ("a", "d"), sizes, "hyper")
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert len(files) == 1 and not files[0].name.endswith(".tmp")
        fresh = planning._optimizer("hyper")  # another process would start like this
        again = planning._best_tree(inputs, ("a", "d"), sizes, "hyper")
        assert fresh._cache.get(fresh.hash_query(inputs, ("a", "d"), sizes)[0]) is not None
        assert again.get_path() == tree.get_path()
    finally:
        al.set_plan_cache(None)
