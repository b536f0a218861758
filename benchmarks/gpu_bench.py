"""GPU benchmark: weight generation and a training step, CuPy and torch CUDA against dense.

For TTN (4096x4096, chi 8), MERA (4096x4096) and brick-wall (Q=24 qubits, M=3 layers) it times

- weight generation ``W = G(cores)``: CuPy (``program.run`` on CuPy arrays) and torch CUDA
  (``program.run`` on tensors, no autograd);
- one training step (forward, backward, SGD) at batch 256 and 512, for
  ``torch`` (autograd through the contraction, materialised ``W``), ``layer``
  (``ADNTNLinear`` with ``schedule="auto"``: fused or materialised by the cost model),
  ``cupy-adjoint`` and ``cupy-recompute``
  (:func:`adntn_lab.engine.cupy_backend.contract_weight`) and the
  dense ``nn.Linear`` of the same shape.

Times come from CUDA events on torch's current stream (CuPy runs on the same stream), after
warm-up, as the median over three timed chunks. Achieved bandwidth is the minimum traffic on
``W`` divided by the time, against the device-to-device copy bandwidth measured here with a
large torch copy (both count bytes read plus bytes written):

- generation writes ``W`` once (1 x |W|);
- a generated layer's step writes ``W``, reads it in the matmul, writes ``dL/dW`` and reads
  it in the generator's backward (4 x |W|);
- the dense step reads ``W`` twice (forward, input gradient), writes ``dL/dW`` and the SGD
  update reads ``W`` and ``dL/dW`` and writes ``W`` (6 x |W|).

Usage::

    python benchmarks/gpu_bench.py              # on a CUDA machine
    python benchmarks/gpu_bench.py --dry-run    # small sizes on the CPU, checks the pipeline

Results go to ``$OUT/gpu_results.json`` when ``OUT`` is set, else
``benchmarks/results/gpu_results.json`` (``--out`` overrides; a dry run writes to the
temporary directory unless ``--out`` is given), and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adntn_lab as al  # noqa: E402
from adntn_lab.engine.cupy_backend import contract_weight, to_cupy, torch_stream  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402

FULL = [
    ("ttn", "TTN 4096x4096 chi=8", dict(in_features=4096, out_features=4096, bond_dim=8)),
    ("mera", "MERA 4096x4096", dict(in_features=4096, out_features=4096)),
    ("brickwall", "brick-wall Q=24 M=3", dict(in_features=4096, out_features=4096, depth=3)),
]
DRY = [
    ("ttn", "TTN 256x256 chi=4", dict(in_features=256, out_features=256, bond_dim=4)),
    ("mera", "MERA 256x256", dict(in_features=256, out_features=256)),
    ("brickwall", "brick-wall Q=12 M=3", dict(in_features=64, out_features=64, depth=3)),
]


# ---------------------------------------------------------------------- timing
class Timer:
    """Times a callable with CUDA events (CUDA) or ``perf_counter`` (CPU)."""

    def __init__(self, device: torch.device, target_s: float, max_reps: int):
        self.device = device
        self.cuda = device.type == "cuda"
        self.target_s = target_s
        self.max_reps = max_reps

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _span(self, fn, reps: int) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return time.perf_counter() - t0

    def __call__(self, fn, warmup: int = 3) -> dict:
        for _ in range(warmup):
            fn()
        self.sync()
        once = max(self._span(fn, 1), 1e-6)
        reps = int(min(self.max_reps, max(3, self.target_s / 3 / once)))
        chunks = sorted(self._span(fn, reps) / reps for _ in range(3))
        return {"seconds": chunks[1], "min_seconds": chunks[0], "reps": 3 * reps}


def copy_bandwidth(device: torch.device, timer: Timer, nbytes: int) -> dict:
    """Device-to-device copy bandwidth (bytes read + written per second) of a large copy."""
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)

    t = timer(copy, warmup=2)
    return {"bytes_copied": 4 * n, "seconds": t["seconds"],
            "bandwidth_Bps": 2 * 4 * n / t["seconds"]}


# ---------------------------------------------------------------------- benchmark pieces
def _attempt(record: dict, key: str, fn):
    """Run one measurement; on failure keep the error and go on with the others."""
    try:
        record[key] = fn()
    except Exception as err:  # a failed variant must not lose the rest of the run
        record[key] = {"error": f"{type(err).__name__}: {err}"}
        traceback.print_exc()
        print(f"  {key}: FAILED ({type(err).__name__}: {err})", flush=True)
    return record[key]


def _cupy_or_none(device):
    if device.type != "cuda":
        return None
    try:
        import cupy

        return cupy
    except ImportError:
        return None


def bench_family(family, label, opts, *, device, dtype, batches, timer, copy_bps, cupy, lr):
    t0 = time.perf_counter()
    gen = al.build(family, calibrate=False, seed=0, **opts)
    build_s = time.perf_counter() - t0
    O, I = gen.shape
    itemsize = torch.tensor([], dtype=dtype).element_size()
    w_bytes = O * I * itemsize
    res = {"family": family, "label": label, "shape": [O, I], "params": gen.num_params,
           "compression": gen.compression_ratio, "site_dims": list(gen.tensorization.site_dims),
           "num_stages": gen.num_stages, "build_seconds": build_s, "W_bytes": w_bytes,
           "generation": {}, "train": {}}
    print(f"\n{label}: {gen}  (built in {build_s:.1f}s)", flush=True)

    def bw(seconds, factor):
        rate = factor * w_bytes / seconds
        return {"W_traffic_bytes": factor * w_bytes, "bandwidth_Bps": rate,
                "fraction_of_copy": rate / copy_bps}

    params = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in gen.params.items()}
    arrays = {k: v.clone() for k, v in params.items()}

    # ---- weight generation
    def gen_torch():
        with torch.no_grad():
            return gen.program.run(arrays)

    def torch_gen():
        t = timer(gen_torch)
        return {**t, **bw(t["seconds"], 1)}

    _attempt(res["generation"], "torch", torch_gen)
    if cupy is not None:
        with torch_stream(device):
            carrays = {k: to_cupy(v).copy() for k, v in params.items()}

        def gen_cupy():
            with torch_stream(device):
                return gen.program.run(carrays)

        def cupy_gen():
            t = timer(gen_cupy)
            with torch_stream(device):
                w = cupy.asnumpy(gen.program.run(carrays)).astype(np.float64)
            ref = gen_torch().double().cpu().numpy()
            err = float(np.abs(w - ref).max() / max(np.abs(ref).max(), 1e-30))
            return {**t, **bw(t["seconds"], 1), "max_rel_diff_vs_torch": err}

        _attempt(res["generation"], "cupy", cupy_gen)
    for k, v in res["generation"].items():
        if "seconds" in v:
            print(f"  generate [{k}]: {v['seconds'] * 1e3:.3f} ms, "
                  f"{v['fraction_of_copy'] * 100:.1f}% of copy bandwidth", flush=True)

    # ---- training steps
    for batch in batches:
        res["train"][str(batch)] = bench_batch(gen, params, batch, device=device, dtype=dtype,
                                               timer=timer, bw=bw, cupy=cupy, lr=lr)
    return res


def bench_batch(gen, params, batch, *, device, dtype, timer, bw, cupy, lr) -> dict:
    """Training-step timings of every variant at one batch size."""
    O, I = gen.shape
    g = torch.Generator(device="cpu").manual_seed(batch)
    x = torch.randn(batch, I, generator=g).to(device, dtype)
    y = torch.randn(batch, O, generator=g).to(device, dtype)
    row: dict = {}

    def make_step(model_params, forward):
        opt = torch.optim.SGD(model_params, lr=lr)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(forward(x), y)
            loss.backward()
            opt.step()
            return loss

        return step

    def run_variant(name, step, factor):
        t = timer(step)
        print(f"  train B={batch} [{name}]: {t['seconds'] * 1e3:.3f} ms", flush=True)
        return {**t, **bw(t["seconds"], factor)}

    def dense():
        lin = torch.nn.Linear(I, O, device=device, dtype=dtype)
        return run_variant("dense", make_step(lin.parameters(), lin), 6)

    def generated(engine):
        cores = {k: torch.nn.Parameter(v.clone(), requires_grad=k in gen.trainable_names)
                 for k, v in params.items()}
        bias = torch.nn.Parameter(torch.zeros(O, device=device, dtype=dtype))
        trainable = [cores[k] for k in gen.trainable_names] + [bias]

        def forward(inp):
            if engine == "torch":
                w = gen.program.run(cores)
            else:
                w = contract_weight(gen.program, cores, mode=engine.split("-", 1)[1])
            return torch.nn.functional.linear(inp, w, bias)

        return run_variant(engine, make_step(trainable, forward), 4)

    def layer():
        lay = ADNTNLinear(I, O, generator=gen, schedule="auto", device=device, dtype=dtype)
        out = run_variant("layer", make_step(lay.parameters(), lay), 4)
        out["schedule"] = lay.schedule_for(batch)
        return out

    _attempt(row, "dense", dense)
    _attempt(row, "torch", lambda: generated("torch"))
    _attempt(row, "layer", layer)
    if cupy is not None:
        engines = ["cupy-adjoint", "cupy-recompute"]
    elif device.type == "cpu":
        engines = ["numpy-adjoint", "numpy-recompute"]
    else:
        engines = []
    for engine in engines:
        _attempt(row, engine, lambda e=engine: generated(e))
    return row


# ---------------------------------------------------------------------- reporting
def _ms(entry):
    return f"{entry['seconds'] * 1e3:.3f}" if "seconds" in entry else "failed"


def markdown(results: dict) -> str:
    copy = results["copy_bandwidth"]["bandwidth_Bps"]
    lines = [f"Device: {results['device_name']}; copy bandwidth {copy / 1e9:.0f} GB/s "
             f"(read+write); dtype {results['dtype']}.", "",
             "Weight generation", "",
             "| generator | params | engine | ms | W GB/s | % of copy |",
             "|---|---:|---|---:|---:|---:|"]
    for fam in results["families"]:
        for eng, e in fam["generation"].items():
            gbs = f"{e['bandwidth_Bps'] / 1e9:.1f}" if "seconds" in e else "-"
            pct = f"{e['fraction_of_copy'] * 100:.1f}" if "seconds" in e else "-"
            lines.append(f"| {fam['label']} | {fam['params']:,} | {eng} | {_ms(e)} | {gbs} | "
                         f"{pct} |")
    lines += ["", "Training step (forward + backward + SGD)", "",
              "| generator | batch | variant | ms | x dense | W-traffic GB/s | % of copy |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for fam in results["families"]:
        for batch, row in fam["train"].items():
            dense = row.get("dense", {}).get("seconds")
            for name, e in row.items():
                if "seconds" not in e:
                    lines.append(f"| {fam['label']} | {batch} | {name} | failed | | | |")
                    continue
                ratio = f"{e['seconds'] / dense:.2f}" if dense else "-"
                sched = f" ({e['schedule']})" if "schedule" in e else ""
                lines.append(f"| {fam['label']} | {batch} | {name}{sched} | {_ms(e)} | {ratio} "
                             f"| {e['bandwidth_Bps'] / 1e9:.1f} | "
                             f"{e['fraction_of_copy'] * 100:.1f} |")
    return "\n".join(lines)


def _cupy_info(cupy) -> dict:
    if cupy is None:
        return {"cupy": None}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            cupy.show_config()
        except Exception as err:  # informational only
            print(f"show_config failed: {err}")
    wanted = ("CuPy Version", "CUDA Runtime Version", "cuTENSOR", "cuBLAS", "NVRTC")
    lines = [ln.strip() for ln in buf.getvalue().splitlines() if ln.strip().startswith(wanted)]
    return {"cupy": cupy.__version__, "config": lines,
            "CUPY_ACCELERATORS": os.environ.get("CUPY_ACCELERATORS", "")}


def default_out(dry_run: bool) -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_results.json"
    if dry_run:
        return Path(tempfile.gettempdir()) / "gpu_results_dry_run.json"
    return Path(__file__).resolve().parent / "results" / "gpu_results.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="small sizes on the CPU (torch and the numpy engine), to check the "
                         "pipeline end to end without a GPU")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    ap.add_argument("--families", default="ttn,mera,brickwall",
                    help="comma-separated subset of ttn,mera,brickwall")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--target-seconds", type=float, default=None,
                    help="time spent per measurement after warm-up")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args(argv)

    if args.dry_run:
        device = torch.device("cpu")
        configs, batches = DRY, [16, 32]
        target, max_reps, copy_bytes = args.target_seconds or 0.05, 20, 64 << 20
    else:
        if not torch.cuda.is_available():
            print("gpu_bench: torch sees no CUDA device; this benchmark needs one (use "
                  "--dry-run to check the pipeline on the CPU)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        configs, batches = FULL, [256, 512]
        target, max_reps, copy_bytes = args.target_seconds or 0.3, 500, 2 << 30
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    wanted = set(args.families.split(","))
    configs = [c for c in configs if c[0] in wanted]
    dtype = getattr(torch, args.dtype)
    cupy = _cupy_or_none(device)
    timer = Timer(device, target, max_reps)
    t_start = time.perf_counter()
    copy = copy_bandwidth(device, timer, copy_bytes)
    print(f"copy bandwidth: {copy['bandwidth_Bps'] / 1e9:.1f} GB/s (read+write, "
          f"{copy['bytes_copied'] >> 20} MiB)", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    results = {
        "format": "adntn-gpu-bench/1",
        "dry_run": args.dry_run,
        "device": str(device),
        "device_name": name,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "python": platform.python_version(),
        **_cupy_info(cupy),
        "copy_bandwidth": copy,
        "traffic_factors": {"generation": 1, "generated_train_step": 4, "dense_train_step": 6},
        "timing": "CUDA events, median of 3 chunks after warm-up" if device.type == "cuda"
        else "perf_counter, median of 3 chunks after warm-up",
        "families": [],
    }
    out = args.out or default_out(args.dry_run)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        results["total_seconds"] = time.perf_counter() - t_start
        out.write_text(json.dumps(results, indent=2, default=float))

    try:
        for family, label, opts in configs:
            try:
                results["families"].append(bench_family(
                    family, label, opts, device=device, dtype=dtype, batches=batches,
                    timer=timer, copy_bps=copy["bandwidth_Bps"], cupy=cupy, lr=1e-3))
            except Exception as err:  # keep the other families
                traceback.print_exc()
                results["families"].append({"family": family, "label": label,
                                            "error": f"{type(err).__name__}: {err}",
                                            "params": 0, "generation": {}, "train": {}})
            save()  # after each family, so that a time limit keeps what was measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
                if cupy is not None:
                    cupy.get_default_memory_pool().free_all_blocks()
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("\ninterrupted: keeping the families measured so far", file=sys.stderr)
    save()
    print("\n" + markdown(results))
    print(f"\nwrote {out} ({results['total_seconds']:.0f}s)")
    failed = ["interrupted"] * bool(results.get("interrupted")) + [
        f"{fam['label']}" for fam in results["families"] if "error" in fam] + [
        f"{fam['label']} {k}" for fam in results["families"]
        for k, v in fam["generation"].items() if "error" in v] + [
        f"{fam['label']} B={b} {k}" for fam in results["families"]
        for b, row in fam["train"].items() for k, v in row.items() if "error" in v]
    if failed:
        print("failed measurements: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
