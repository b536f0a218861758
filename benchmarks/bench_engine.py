"""Side-by-side engine benchmarks (issue: planning, costs and execution).

Every figure is a ratio of two timings taken in the same run on the same machine:

1. generation forward+backward of W: adntn_lab's compiled program against the obvious
   implementation (quimb's ``tensor_contract`` on every stage group, planning each call with its
   default optimiser) and, for brick-wall, a plain sequential gate loop;
2. a training step (forward, backward, SGD) of ``ADNTNLinear`` against ``nn.Linear`` of the same
   shape, with tensorly-torch's ``FactorizedLinear`` (blocktt, rank 8) beside it when installed;
3. peak resident-memory growth of brick-wall forward+backward against the bytes of W;
4. whether the cost model ranks the schedules as the stopwatch does.

Run:  python benchmarks/bench_engine.py [--quick] [--only NAME ...]
Writes benchmarks/results/engine.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, timeit, write  # noqa: E402

import adntn_lab as al  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402


def _arrays(gen, dtype=torch.float32):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=not gen.cores[k].constant)
            for k, v in gen.params.items()}


def ours_step(gen):
    arrays = _arrays(gen)

    def run():
        w = gen.program.run(arrays)
        w.sum().backward()
    return run


def plain_matrix(tz, wp):
    """W from the physical tensor the obvious way: one transpose over all mode axes."""
    n = tz.n_sites
    split = [d for pair in zip(tz.out_modes, tz.in_modes) for d in pair]
    w = wp.reshape(split).permute(*range(0, 2 * n, 2), *range(1, 2 * n, 2))
    return w.reshape(tz.padded_out, tz.padded_in)[: tz.out_features, : tz.in_features]


def quimb_step(gen):
    """The obvious implementation: quimb contracts each stage group, planning every call."""
    import quimb.tensor as qtn

    arrays = _arrays(gen)
    final = gen.program.plan

    def run():
        front = {}
        for g in gen.program.groups:
            tensors = [qtn.Tensor(arrays[k] if k in arrays else front.pop(k), inds=inds)
                       for k, inds in zip(g.operands, g.inputs)]
            out = qtn.tensor_contract(*tensors, output_inds=g.output)
            data = out.data if isinstance(out, qtn.Tensor) else out
            front[g.key] = gen.activations[g.stage](data)
        wp = front[final.final_key]
        perm = [final.final_inds.index(p) for p in gen.tensorization.physical_inds]
        plain_matrix(gen.tensorization, wp.permute(*perm)).sum().backward()
    return run


def gate_loop_weight(gen, arrays):
    """Brick-wall W by applying the gates one by one to the qubit state."""
    q = gen.tensorization.n_sites
    state = torch.zeros((2,) * q, dtype=next(iter(arrays.values())).dtype)
    state[(0,) * q] = 1.0
    depth = gen.options["depth"]
    for m in range(1, depth + 1):
        for name, core in gen.cores.items():
            if core.stage != m:
                continue
            k = int(name.split("_")[1])
            state = torch.tensordot(state, arrays[name], dims=([k, k + 1], [0, 1]))
            state = torch.movedim(state, (q - 2, q - 1), (k, k + 1))
        state = gen.activations[m](state)
    return plain_matrix(gen.tensorization, state)


def loop_step(gen):
    arrays = _arrays(gen)

    def run():
        gate_loop_weight(gen, arrays).sum().backward()
    return run


GENERATION = {
    "ttn-1024": ("ttn", 1024, dict(bond_dim=8)),
    "mera-1024": ("mera", 1024, dict(bond_dim=4)),
    "ttn-4096": ("ttn", 4096, dict(bond_dim=8)),
    "mera-4096": ("mera", 4096, dict(bond_dim=4)),
    "brickwall-Q20": ("brickwall", 1024, dict(depth=3)),
    "brickwall-Q24": ("brickwall", 4096, dict(depth=3)),
}


def bench_generation(names, repeat):
    rows = []
    for name in names:
        family, n, kw = GENERATION[name]
        gen = al.build(family, n, n, **kw)
        ours = timeit(ours_step(gen), repeat=repeat)
        quimb = timeit(quimb_step(gen), repeat=max(1, repeat // 2))
        row = {"case": name, "ours_s": ours, "quimb_s": quimb, "speedup_vs_quimb": quimb / ours}
        if family == "brickwall":
            arrays = {k: torch.tensor(v) for k, v in gen.params.items()}
            assert np.allclose(gate_loop_weight(gen, arrays).numpy(), gen.weight(), atol=1e-6)
            loop = timeit(loop_step(gen), repeat=max(1, repeat // 2))
            row.update(loop_s=loop, speedup_vs_loop=loop / ours)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


TRAINING = {
    "ttn-4096-b256": ("ttn", 4096, 256, dict(bond_dim=8)),
    "ttn-1024-b256": ("ttn", 1024, 256, dict(bond_dim=8)),
    "mera-1024-b256": ("mera", 1024, 256, dict(bond_dim=4)),
    "mera-4096-b256": ("mera", 4096, 256, dict(bond_dim=4)),
    "brickwall-Q24-b512": ("brickwall", 4096, 512, dict(depth=3)),
}


def _train_step(layer, x):
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        opt.step()
    return run


def _tltorch(n, rank=8, implementation="factorized"):
    try:
        import tltorch
    except ImportError:
        return None
    modes = al.tensorize(n, n).out_modes
    return tltorch.FactorizedLinear(modes, modes, factorization="blocktt", rank=rank,
                                    implementation=implementation)


def bench_training(names, repeat):
    rows = []
    for name in names:
        family, n, batch, kw = TRAINING[name]
        x = torch.randn(batch, n)
        dense = timeit(_train_step(torch.nn.Linear(n, n), x), repeat=repeat)
        layer = ADNTNLinear(n, n, topology=family, **kw)
        ours = timeit(_train_step(layer, x), repeat=repeat)
        row = {"case": name, "dense_s": dense, "ours_s": ours, "ratio_to_dense": ours / dense,
               "schedule": layer.schedule_for(batch)}
        for impl in ("factorized", "reconstructed"):
            peer = _tltorch(n, implementation=impl)
            if peer is not None:
                t = timeit(_train_step(peer, x), repeat=repeat)
                row[f"tltorch_{impl}_ratio_to_dense"] = t / dense
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


_MEMORY_CHILD = r"""
import ctypes, gc, time, torch, adntn_lab as al
torch.set_num_threads(1)
def status_kb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
# warm up the code paths (lazy imports, thread pools) on a small generator first
small = al.build('brickwall', 64, 64, depth=3)
sa = {{k: torch.tensor(v, dtype=torch.float32, requires_grad=not small.cores[k].constant)
      for k, v in small.params.items()}}
small.program.run(sa, recompute={mode!r}).sum().backward()
gen = al.build('brickwall', {n}, {n}, depth=3)
arrays = {{k: torch.tensor(v, dtype=torch.float32, requires_grad=not gen.cores[k].constant)
          for k, v in gen.params.items()}}
gc.collect()
ctypes.CDLL('libc.so.6').malloc_trim(0)  # return the heap kept from building to the system
with open('/proc/self/clear_refs', 'w') as f:  # restart the high-water mark here
    f.write('5')
base = status_kb('VmRSS')
start = time.perf_counter()
w = gen.program.run(arrays, recompute={mode!r})
w.sum().backward()
seconds = time.perf_counter() - start
peak = status_kb('VmHWM')
print(base, peak, w.numel() * 4, seconds)
"""


def bench_memory(n):
    """Peak resident-set growth of brick-wall forward+backward, for the ordinary backward
    pass and the lean one, with the tuned allocator and with the system's."""
    rows = []
    for mode in ("auto", "lean"):
        for allocator in ("tuned", "system"):
            env = {**os.environ, "ADNTN_LAB_ALLOCATOR": allocator}
            out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD.format(n=n, mode=mode)],
                                 capture_output=True, text=True, check=True, env=env)
            base, peak, w_bytes, seconds = out.stdout.split()[-4:]
            growth = (int(peak) - int(base)) * 1024
            row = {"case": f"brickwall {n}x{n} M=3 forward+backward", "recompute": mode,
                   "allocator": allocator, "rss_growth_bytes": growth, "w_bytes": int(w_bytes),
                   "ratio_to_w": growth / int(w_bytes), "seconds": float(seconds)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_schedule_ranking(repeat):
    """Does ``schedule="auto"`` (the cost model's choice) pick the schedule that trains faster?"""
    rows = []
    for family, n, batch, kw in (("ttn", 1024, 256, dict(bond_dim=8)),
                                 ("ttn", 1024, 1, dict(bond_dim=8)),
                                 ("ttn", 1024, 64, dict(bond_dim=8)),
                                 ("mera", 1024, 256, dict(bond_dim=4)),
                                 ("mera", 4096, 64, dict(bond_dim=4)),
                                 ("attn", 1024, 64, dict(bond_dim=4)),
                                 ("mpo", 1024, 64, dict(bond_dim=8)),
                                 ("lowrank", 1024, 512, dict(rank=16))):
        x = torch.randn(batch, n)
        measured, flops, estimated = {}, {}, {}
        for sched in ("materialize", "fused"):
            layer = ADNTNLinear(n, n, topology=family, schedule=sched, **kw)
            measured[sched] = timeit(_train_step(layer, x), repeat=repeat)
            report = layer.generator.cost(batch, sched)
            flops[sched], estimated[sched] = report.total_flops, report.estimated_time
        chosen = layer.generator.cost(batch, "auto").schedule
        faster = min(measured, key=measured.get)
        row = {"case": f"{family}-{n}-b{batch}", "measured_s": measured,
               "predicted_flops": flops, "estimated_time": estimated, "auto_picks": chosen,
               "faster": faster, "agree": chosen == faster,
               "loss_if_wrong": measured[chosen] / measured[faster]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_components(repeat):
    """Two reference points for the generation table: the bare last product of a rank-8 tree
    (the floor of any engine that materialises W), and W's reordering into matrix order by
    gathers against one transpose over all mode axes (24-qubit brick-wall)."""
    rows = []
    for n in (1024, 4096):
        left = torch.randn(n, 8, requires_grad=True)
        right = torch.randn(8, n, requires_grad=True)

        def floor(left=left, right=right):
            (left @ right).sum().backward()
        row = {"case": f"rank-8 product {n}x{n} fwd+bwd", "seconds": timeit(floor, repeat=repeat)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    tz = al.build("brickwall", 4096, 4096, depth=3).tensorization
    wp = torch.randn(tz.site_dims, requires_grad=True)
    gathers = timeit(lambda: tz.to_matrix(wp).sum().backward(), repeat=repeat)
    transpose = timeit(lambda: plain_matrix(tz, wp).sum().backward(), repeat=repeat)
    row = {"case": "W reordering, 24 qubits, fwd+bwd", "gathers_s": gathers,
           "transpose_s": transpose, "speedup": transpose / gathers}
    rows.append(row)
    print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small cases only, few repeats")
    p.add_argument("--only", nargs="*", default=None,
                   choices=["generation", "training", "memory", "ranking", "components"])
    p.add_argument("--allocator", choices=["tuned", "system"], default="tuned",
                   help="glibc allocator thresholds for this process (default: tuned, as the "
                        "figures in the README were taken; the memory rows run both)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every side (default 1: on a shared machine a "
                        "second thread mostly waits, which blurs every ratio)")
    args = p.parse_args(argv)
    if args.allocator == "tuned":
        al.tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeat = 2 if args.quick else 5
    parts = args.only or ["generation", "training", "memory", "ranking", "components"]
    result = {}
    if "generation" in parts:
        names = ["ttn-1024", "mera-1024", "brickwall-Q20"] if args.quick else list(GENERATION)
        result["generation"] = bench_generation(names, repeat)
    if "training" in parts:
        names = ["ttn-1024-b256"] if args.quick else list(TRAINING)
        result["training"] = bench_training(names, repeat)
    if "memory" in parts:
        result["memory"] = bench_memory(1024 if args.quick else 4096)
    if "ranking" in parts:
        result["ranking"] = bench_schedule_ranking(repeat)
    if "components" in parts:
        result["components"] = bench_components(repeat)
    path = write("engine" if not args.quick else "engine_quick", result)
    print(f"\nmachine: {json.dumps(machine())}\nwritten to {path}")


if __name__ == "__main__":
    main()
