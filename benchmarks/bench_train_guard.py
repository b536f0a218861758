"""Cost of the per-step divergence guard in ``fit``, side by side with the step it guards.

Every step, ``fit`` copies the parameters, buffers and optimiser state (for an exact rollback),
checks the parameters for NaN/inf, and captures the random state (so that a checkpoint written
after any step resumes exactly). This benchmark times those three pieces and one ordinary
training step (forward, backward, Adam) on a batch of 64, in the same run, as minima over many
repetitions (the least disturbed figure on a shared machine), plus the write of one checkpoint.

Run:  python benchmarks/bench_train_guard.py [--quick]
Writes benchmarks/results/train_guard.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import timeit, write  # noqa: E402

from adntn_lab.data import load_dataset  # noqa: E402
from adntn_lab.train import TrainState, loop, save_checkpoint  # noqa: E402
from adntn_lab.train.runs import RunConfig, build_run_model  # noqa: E402

CASES = [
    ("fc2 dense (hidden 256)", dict(model="fc2", dataset="mnist-5k", family=None)),
    ("fc2, fc1 as TTN chi=4", dict(model="fc2", dataset="mnist-5k", family="ttn", bond_dim=4)),
    ("fc2, fc1 as brick-wall depth 4",
     dict(model="fc2", dataset="mnist-5k", family="brickwall", bond_dim=4)),
    ("lenet5, fc1 fc2 as TTN chi=4",
     dict(model="lenet5", dataset="mnist-5k", family="ttn", bond_dim=4)),
]


def _measure(config, data, batch_size: int = 64) -> dict:
    model = build_run_model(config, data)
    state = TrainState.create(model, lr=1e-3, seed=0)
    x, y = data.train.tensors
    xb, yb = x[:batch_size], y[:batch_size]
    model.train()

    def step():
        state.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(xb), yb).backward()
        state.optimizer.step()

    step()  # the optimiser state exists from here on, as in every later step
    snapshot = loop._StepSnapshot(model, state.optimizer)
    named = list(model.named_parameters())
    cpu = torch.device("cpu")

    def guard():
        snapshot.take()
        loop._first_nonfinite(named)
        loop._rng_capture(cpu)

    step_s = guard_s = float("inf")
    for _ in range(3):  # alternate, so that drifting machine load hits both alike
        step_s = min(step_s, timeit(step, repeat=20, warmup=2))
        guard_s = min(guard_s, timeit(guard, repeat=50, warmup=2))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.safetensors"
        save_s = timeit(lambda: save_checkpoint(path, model, state), repeat=5)
        size = path.stat().st_size
    return {"params": sum(p.numel() for p in model.parameters()), "step_ms": 1e3 * step_s,
            "guard_ms": 1e3 * guard_s, "overhead": guard_s / step_s,
            "checkpoint_write_ms": 1e3 * save_s, "checkpoint_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits instead of MNIST-5k")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for label, settings in CASES:
        if args.quick:
            settings = {**settings, "dataset": "digits"}
        config = RunConfig(**settings)
        data = load_dataset(config.dataset)
        rows.append({"case": label, "dataset": config.dataset, **_measure(config, data)})
    print("| model (batch 64, 1 thread) | params | training step | guard | guard / step "
          "| one checkpoint |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} ({r['dataset']}) | {r['params']:,} | {r['step_ms']:.2f} ms | "
              f"{r['guard_ms']:.3f} ms | {100 * r['overhead']:.1f}% | "
              f"{r['checkpoint_write_ms']:.1f} ms ({r['checkpoint_bytes'] / 1e6:.2f} MB) |")
    name = "train_guard_quick" if args.quick else "train_guard"
    print(f"written: {write(name, {'rows': rows})}")


if __name__ == "__main__":
    main()
