"""Where the fused schedule stops paying: the measurement behind ``cost.FUSED_MARGIN``.

For every family at a few shapes and batch sizes, time a training step (forward, backward,
SGD) of ``ADNTNLinear`` with each schedule and set the measured ratio fused/materialize beside
the cost model's roofline ratio (``CostReport.estimates``). The margin must separate the cases
where fused was faster (measured ratio < 1) from those where it was slower.

Run:  python benchmarks/bench_schedule_margin.py [--threads 1]
Writes benchmarks/results/schedule_margin.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import timeit, write  # noqa: E402

from adntn_lab.engine.cost import FUSED_MARGIN  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402

CASES = [
    ("ttn", 1024, dict(bond_dim=8)), ("ttn", 1024, dict(bond_dim=4)),
    ("mera", 1024, dict(bond_dim=4)), ("attn", 1024, dict(bond_dim=4)),
    ("mpo", 1024, dict(bond_dim=8)), ("lowrank", 1024, dict(rank=16)),
    ("ttn", 784, dict(bond_dim=8)), ("mera", 4096, dict(bond_dim=4)),
]
BATCHES = (16, 64, 256)


def _step(layer, x):
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()
        opt.step()
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for family, n, kw in CASES:
        for batch in BATCHES:
            x = torch.randn(batch, n)
            layer = ADNTNLinear(n, n, topology=family, **kw)
            estimates = layer.generator.cost(batch, "auto").estimates
            measured = {}
            for schedule in ("materialize", "fused"):
                layer.schedule = schedule
                measured[schedule] = timeit(_step(layer, x), repeat=8)
            row = {"case": f"{family}-{n}-{kw}-b{batch}",
                   "roofline_ratio": estimates["fused"] / estimates["materialize"],
                   "measured_ratio": measured["fused"] / measured["materialize"]}
            rows.append(row)
            print(f"{row['case']:<40} roofline {row['roofline_ratio']:.3f}  "
                  f"measured {row['measured_ratio']:.3f}", flush=True)
    faster = [r["roofline_ratio"] for r in rows if r["measured_ratio"] < 1]
    slower = [r["roofline_ratio"] for r in rows if r["measured_ratio"] >= 1]
    summary = {"fused_faster_up_to": max(faster, default=None),
               "fused_slower_from": min(slower, default=None), "margin": FUSED_MARGIN}
    print(json.dumps(summary))
    print(f"written to {write('schedule_margin', {'rows': rows, 'summary': summary})}")


if __name__ == "__main__":
    main()
