"""Brick-wall gate chains on CPU: the numba kernels (gates one by one on cached chunks) beside
merged blocks of gates (batched matrix products), and the kernels' chunk size.

For each qubit count, one process, two torch threads, tuned allocator, best of 5 after a
warm-up, both ways side by side (``ADNTN_LAB_GATE_KERNELS=0`` switches the kernels off):

- ``generator``: forward+backward of a depth-3 brick-wall generator (``program.run(...)
  .sum().backward()``), the ordinary backward pass;
- ``chunks``: forward and backward of one 26-gate staircase layer on ``2**Q`` elements for
  each (chunk bits, spectator bits) pair (the defaults are
  ``gate_kernels.CHUNK_BITS``/``SPECTATOR_BITS``).

Run it on a quiet machine (``uptime``):

    python benchmarks/bench_gate_kernels.py [--qubits 20 24 27]

Writes benchmarks/results/gate_kernels.json.
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
import json, os, time
import numpy as np, torch
import adntn_lab as al
from adntn_lab.engine import gate_kernels as gk
al.tune_allocator()
torch.set_num_threads(2)
q = {qubits}
def best(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)
side_out = 2 ** (q // 2)
gen = al.build("brickwall", 2 ** (q - q // 2), side_out, depth=3, seed=3)
arrays = {{k: torch.tensor(v, dtype=torch.float32, requires_grad=not gen.cores[k].constant)
          for k, v in gen.params.items()}}
def step():
    gen.program.run(arrays).sum().backward()
row = {{"qubits": q}}
row["kernels_s"] = best(step)
os.environ["ADNTN_LAB_GATE_KERNELS"] = "0"
row["blocks_s"] = best(step)
del os.environ["ADNTN_LAB_GATE_KERNELS"]
row["blocks_over_kernels"] = row["blocks_s"] / row["kernels_s"]
lines = tuple(range(q - 1))
x = torch.randn(2 ** q)
gates = (torch.randn(q - 1, 16) / 2).numpy()
chunks = []
for chunk, spect in {pairs}:
    plan = gk.plan_phases(q, lines, chunk, spect)
    y = torch.empty_like(x)
    def fwd():
        gk.apply_phases_(x.numpy(), gates, plan, out=y.numpy())
    states = [x]
    for k in range(len(plan.phases)):
        s = torch.empty_like(x)
        gk.apply_phases_(states[-1].numpy(), gates, plan, range(k, k + 1), out=s.numpy())
        states.append(s)
    g = torch.randn(2 ** q)
    def bwd():
        gg = np.zeros_like(gates); work = g.clone()
        for k in range(len(plan.phases) - 1, -1, -1):
            gk.phase_backward_(states[k].numpy(), work.numpy(), gates, plan, k, gg)
    chunks.append({{"chunk_bits": chunk, "spectator_bits": spect, "phases": len(plan.phases),
                    "forward_s": best(fwd, 3), "backward_s": best(bwd, 3)}})
row["chunks"] = chunks
print(json.dumps(row))
"""

PAIRS = [(12, 6), (13, 6), (14, 6), (14, 4), (15, 6), (16, 6), (16, 8)]


def run(qubits: int, timeout: float) -> dict:
    code = CHILD.format(qubits=qubits, pairs=PAIRS)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if res.returncode != 0:
        return {"qubits": qubits, "error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qubits", type=int, nargs="+", default=[20, 24, 27])
    p.add_argument("--timeout", type=float, default=1200)
    args = p.parse_args(argv)
    rows = []
    for q in args.qubits:
        row = run(q, args.timeout)
        print(json.dumps(row), flush=True)
        rows.append(row)
    path = write("gate_kernels", {"threads": 2, "allocator": "tuned", "load": os.getloadavg(),
                                  "rows": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
