"""How gate chains are split into blocks: forward+backward time of a brick-wall generator
for each value of the per-pass cost that the split's dynamic programme weighs against block
width (``adntn_lab.engine.gate_chains._PASS_COST``), at one and two torch threads.

Each (threads, cost) pair runs in its own process, tuned allocator, best of 5 after a warm-up.
Run it on a quiet machine (``uptime``):

    python benchmarks/bench_block_partition.py [--qubits 24] [--costs 9 18 36 72 144 288]

Writes benchmarks/results/block_partition.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

CHILD = r"""
import json, math, time, torch
import adntn_lab as al
from adntn_lab.engine import gate_chains
al.tune_allocator()
torch.set_num_threads({threads})
gate_chains._PASS_COST = {cost}
side = 2 ** ({qubits} // 2)
gen = al.build("brickwall", side, side, depth=3, seed=3)
prog = gen.program
arrays = {{k: torch.tensor(v, dtype=torch.float32, requires_grad=not gen.cores[k].constant)
          for k, v in gen.params.items()}}
def once():
    prog.run(arrays).sum().backward()
once()
times = []
for _ in range(5):
    t = time.perf_counter(); once(); times.append(time.perf_counter() - t)
widths = [[math.prod(b.dims) for b in c.blocks] for c in prog.chains if c is not None]
print(json.dumps({{"seconds": min(times), "block_widths": widths}}))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qubits", type=int, default=24)
    p.add_argument("--costs", type=float, nargs="+", default=[9, 18, 36, 72, 144, 288])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    rows = []
    for threads in args.threads:
        for cost in args.costs:
            out = subprocess.run(
                [sys.executable, "-c", CHILD.format(threads=threads, cost=cost,
                                                    qubits=args.qubits)],
                capture_output=True, text=True, check=True)
            row = {"qubits": args.qubits, "threads": threads, "pass_cost": cost,
                   **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"threads {threads}  pass cost {cost:6g}  forward+backward "
                  f"{row['seconds'] * 1e3:7.1f} ms  blocks {row['block_widths'][0]}", flush=True)
    path = write("block_partition", {"load": os.getloadavg(), "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
