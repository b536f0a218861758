"""More than one process: sweep wall time on 1 vs 2 workers, DDP step time on 1 vs 2 ranks.

Sweep: 8 points (FC-2 on MNIST-5k, fc1 as TTN / MPO at four bond dimensions, 2 epochs) run by
``run_sweep`` in this process, on a local process pool of 1 worker (all cores, and 1 thread)
and of 2 workers (1 thread each). DDP: the median time of one training step of FC-2
with a TTN fc1 at the same global batch, in one process and in 2 gloo ranks (the launcher of
``adntn-lab train --nproc``), at two batch sizes. Every figure of one run is taken in that run,
side by side; the load average of the machine is recorded beside them.

Run:  python benchmarks/bench_parallel.py [--quick]
Writes benchmarks/results/parallel.json and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STEP_MODEL = dict(model="fc2", dataset="mnist-5k", family="ttn", bond_dim=4, seed=0)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- sweep


def bench_sweep(epochs: int) -> dict:
    from adntn_lab.train.runs import RunConfig
    from adntn_lab.train.sweep import local_executor, run_sweep

    base = RunConfig(model="fc2", dataset="mnist-5k", epochs=epochs, batch_size=64, lr=3e-3)
    grid = dict(families=["ttn", "mpo"], bond_dims=[2, 3, 4, 5], seeds=[0])
    out: dict = {"points": 8, "epochs": epochs}
    cores = len(os.sched_getaffinity(0))
    cases = (("in_process", 0, None), ("workers_1", 1, cores), ("workers_1_one_thread", 1, 1),
             ("workers_2", 2, 1))
    for label, jobs, threads in cases:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as d:
            load = _load()
            t0 = time.perf_counter()
            if jobs == 0:
                run_sweep(base, d, **grid, progress=False, log=None)
            else:
                with local_executor(jobs, threads=threads) as pool:
                    run_sweep(base, d, **grid, executor=pool, log=None)
            out[label] = {"wall_s": round(time.perf_counter() - t0, 2), "load_before": load,
                          "threads_per_worker": threads or torch_threads()}
        print(f"sweep {label}: {out[label]['wall_s']:.1f} s (load {load})", flush=True)
    for ref in ("workers_1", "workers_1_one_thread"):
        out[f"ratio_workers_2_over_{ref}"] = round(
            out["workers_2"]["wall_s"] / out[ref]["wall_s"], 3)
    return out


# ----------------------------------------------------------------------------- DDP step


def _step_times(batch: int, steps: int, distributed: bool) -> list[float]:
    """Seconds per optimiser step after a warm-up of 5 steps (this rank's view)."""
    import torch

    from adntn_lab.data import load_dataset
    from adntn_lab.train.loop import fit
    from adntn_lab.train.runs import RunConfig, build_run_model

    config = RunConfig(**STEP_MODEL, batch_size=batch)
    data = load_dataset(config.dataset)
    x, y = data.train.tensors
    n = min(len(x), batch * (steps + 6))
    train = torch.utils.data.TensorDataset(x[:n], y[:n])
    epochs = -(-(steps + 6) // -(-n // batch))  # enough epochs for the steps asked for
    model = build_run_model(config, data)
    stamps: list[float] = []

    def clock(ev):
        if ev["event"] == "step":
            stamps.append(time.perf_counter())

    fit(model, (train, None), epochs=epochs, lr=1e-3, batch_size=batch, progress=False,
        callbacks=[clock], distributed=distributed)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return gaps[5:5 + steps]


def _rank_main(out_json: str, batch: int, steps: int) -> None:
    import torch.distributed as dist

    from adntn_lab.train.distributed import init_distributed, shutdown_distributed

    init_distributed()
    gaps = _step_times(batch, steps, distributed=True)
    if dist.get_rank() == 0:
        Path(out_json).write_text(json.dumps(gaps))
    shutdown_distributed()


def bench_ddp(batches, steps: int) -> dict:
    import subprocess

    out: dict = {"model": STEP_MODEL, "steps_timed": steps}
    code = ("import sys; sys.path.insert(0, {here!r}); import bench_parallel as b; "
            "b._one_process({batch}, {steps}, {threads}, {path!r})")
    for batch in batches:
        row: dict = {}
        with tempfile.TemporaryDirectory(prefix="bench-ddp-") as d:
            for threads in (1, 2):  # one process: fresh interpreter, as the ranks get
                path = str(Path(d) / f"one{threads}.json")
                load = _load()
                subprocess.run([sys.executable, "-c", code.format(
                    here=str(HERE), batch=batch, steps=steps, threads=threads, path=path)],
                    check=True, timeout=600)
                gaps = json.loads(Path(path).read_text())
                row[f"one_process_{threads}_threads_ms"] = round(1e3 * statistics.median(gaps), 3)
                row[f"load_one_{threads}"] = load
            path = str(Path(d) / "two.json")
            load = _load()
            _launch_two(path, batch, steps)
            gaps = json.loads(Path(path).read_text())
            row["two_ranks_1_thread_each_ms"] = round(1e3 * statistics.median(gaps), 3)
            row["load_two"] = load
        row["ratio_two_ranks_over_one_process_2_threads"] = round(
            row["two_ranks_1_thread_each_ms"] / row["one_process_2_threads_ms"], 3)
        row["ratio_two_ranks_over_one_process_1_thread"] = round(
            row["two_ranks_1_thread_each_ms"] / row["one_process_1_threads_ms"], 3)
        out[f"batch_{batch}"] = row
        print(f"DDP step, global batch {batch}: {row}", flush=True)
    return out


def _one_process(batch: int, steps: int, threads: int, path: str) -> None:
    import torch

    torch.set_num_threads(threads)
    Path(path).write_text(json.dumps(_step_times(batch, steps, distributed=False)))


def _launch_two(path: str, batch: int, steps: int) -> None:
    from adntn_lab.train.distributed import launch

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), old) if p)
    try:
        launch(["--rank", path, str(batch), str(steps)], 2, threads=1, module="bench_parallel")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 epoch per point, fewer steps")
    p.add_argument("--rank", nargs=3, metavar=("OUT", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank:
        _rank_main(args.rank[0], int(args.rank[1]), int(args.rank[2]))
        return 0
    from common import write

    payload = {"load_average_at_start": _load(), "cores": len(os.sched_getaffinity(0))}
    payload["sweep"] = bench_sweep(epochs=1 if args.quick else 2)
    payload["ddp_step"] = bench_ddp((64, 512), steps=20 if args.quick else 40)
    payload["load_average_at_end"] = _load()
    path = write("parallel", payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
