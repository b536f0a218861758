"""Training-step ratios to ``nn.Linear`` at 2 torch threads (the performance targets' setting).

Runs :func:`bench_engine.bench_training` for every case of ``bench_engine.TRAINING`` with two
threads and the tuned allocator, plus the 4096-wide TTN as a hidden layer (its input needs a
gradient too, as every layer but the first does), each side by side with the dense layer in
one process. Run it on a quiet machine (``uptime``):

    python benchmarks/bench_training_2threads.py

Writes benchmarks/results/training_2threads.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_engine  # noqa: E402
from common import timeit, write  # noqa: E402

import adntn_lab as al  # noqa: E402
from adntn_lab.nn import ADNTNLinear  # noqa: E402


def hidden_layer_row(repeat: int) -> dict:
    """TTN chi=8 4096x4096, batch 256, with an input that needs its gradient."""
    family, n, batch, kw = bench_engine.TRAINING["ttn-4096-b256"]
    x = torch.randn(batch, n, requires_grad=True)
    dense = timeit(bench_engine._train_step(torch.nn.Linear(n, n), x), repeat=repeat)
    layer = ADNTNLinear(n, n, topology=family, **kw)
    ours = timeit(bench_engine._train_step(layer, x), repeat=repeat)
    return {"case": "ttn-4096-b256, input with gradient", "dense_s": dense, "ours_s": ours,
            "ratio_to_dense": ours / dense, "schedule": layer.schedule_for(batch)}


def main() -> None:
    al.tune_allocator()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = bench_engine.bench_training(list(bench_engine.TRAINING), repeat=5)
    row = hidden_layer_row(repeat=5)
    print(json.dumps(row), flush=True)
    rows.append(row)
    path = write("training_2threads", {"threads": 2, "allocator": "tuned",
                                       "load": os.getloadavg(), "training": rows})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
