"""Training step of ``ADNTNLinear``: ``torch.compile(layer, fullgraph=True)`` beside eager.

Each case times one step (forward, backward, SGD update) of the same layer eagerly and
compiled with the default Inductor backend, in the same run; the figure is the ratio
``compiled / eager`` (below 1: compiled is faster). Compile time is reported apart and left
out of the step time (the first calls, which trace and compile, are warm-up). Gate chains
(brick-wall) unroll into many small operations, which makes their compile slow (minutes on
a small CPU): that case runs only without ``--quick``.

Run:  python benchmarks/bench_compile.py [--quick] [--only NAME ...] [--allocator system]
Writes benchmarks/results/compile.json (compile_quick.json with --quick) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, timeit, write  # noqa: E402

import adntn_lab as al  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402

#: name -> (family, features, batch, schedule, options)
CASES = {
    "ttn-256-b64-materialize": ("ttn", 256, 64, "materialize", dict(bond_dim=4)),
    "ttn-256-b64-fused": ("ttn", 256, 64, "fused", dict(bond_dim=4)),
    "mera-256-b64": ("mera", 256, 64, "auto", dict(bond_dim=2)),
    "brickwall-256-b64": ("brickwall", 256, 64, "auto", dict(depth=3)),
    "mpo-1024-b64": ("mpo", 1024, 64, "auto", dict(bond_dim=4)),
    "ttn-1024-b256": ("ttn", 1024, 256, "auto", dict(bond_dim=4)),
    "ttn-4096-b256": ("ttn", 4096, 256, "auto", dict(bond_dim=8)),
}
QUICK = ["ttn-256-b64-materialize", "ttn-256-b64-fused", "mera-256-b64"]


def _step(module, x, opt):
    def run():
        opt.zero_grad(set_to_none=True)
        module(x).square().mean().backward()
        opt.step()
    return run


def bench(name, repeat):
    family, n, batch, schedule, options = CASES[name]
    torch.manual_seed(0)
    layer = ADNTNLinear(n, n, topology=family, schedule=schedule, **options)
    x = torch.randn(batch, n)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    eager = timeit(_step(layer, x, opt), repeat=repeat, warmup=2)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True)
    start = time.perf_counter()
    _step(compiled, x, opt)()  # traces and compiles forward and backward
    compile_s = time.perf_counter() - start
    step = timeit(_step(compiled, x, opt), repeat=repeat, warmup=2)
    row = {"case": name, "schedule": layer.schedule_for(batch), "eager_s": eager,
           "compiled_s": step, "compiled_over_eager": step / eager, "compile_s": compile_s}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small cases only, few repeats")
    p.add_argument("--only", nargs="*", choices=sorted(CASES), help="run these cases")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--allocator", choices=["tuned", "system"], default="tuned",
                   help="glibc thresholds raised (al.tune_allocator, as the other step "
                        "benchmarks) or left as the system sets them")
    args = p.parse_args(argv)
    if args.allocator == "tuned":
        al.tune_allocator()
    torch.set_num_threads(args.threads)
    names = args.only or (QUICK if args.quick else list(CASES))
    rows = [bench(name, 10 if args.quick else 20) for name in names]
    print("\n| case | schedule | eager step | compiled step | compiled / eager | compile |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['schedule']} | {r['eager_s'] * 1e3:.2f} ms | "
              f"{r['compiled_s'] * 1e3:.2f} ms | {r['compiled_over_eager']:.2f} | "
              f"{r['compile_s']:.1f} s |")
    path = write("compile_quick" if args.quick else "compile",
                 {"threads": args.threads, "allocator": args.allocator, "rows": rows})
    print(f"\nmachine: {json.dumps(machine())}\nwritten to {path}")


if __name__ == "__main__":
    main()
