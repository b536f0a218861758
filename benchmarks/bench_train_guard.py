"""Cost of the per-step divergence guard in ``fit``, side by side with the loop without it.

Every step, ``fit`` copies the parameters, buffers and optimiser state (for an exact rollback),
checks the loss and the parameters for NaN/inf, and captures the random state (so that a
checkpoint written after any step resumes exactly). This benchmark times one training epoch
with and without those three pieces (switched off by patching them out) in the same run, and
the write of one checkpoint, for models of the sizes the workshops train.

Run:  python benchmarks/bench_train_guard.py [--quick]
Writes benchmarks/results/train_guard.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import timeit, write  # noqa: E402

from adntn_lab.data import load_dataset  # noqa: E402
from adntn_lab.train import TrainState, fit, loop, save_checkpoint  # noqa: E402
from adntn_lab.train.runs import RunConfig, build_run_model  # noqa: E402

CASES = [
    ("fc2 dense (hidden 256)", dict(model="fc2", dataset="mnist-5k", family=None)),
    ("fc2, fc1 as TTN chi=4", dict(model="fc2", dataset="mnist-5k", family="ttn", bond_dim=4)),
    ("fc2, fc1 as brick-wall depth 4",
     dict(model="fc2", dataset="mnist-5k", family="brickwall", bond_dim=4)),
]


class _NoSnapshot:
    def __init__(self, model, optimizer):
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def take(self):
        pass

    def restore(self):
        pass


def _epoch(config, data, batch_size, guarded: bool):
    model = build_run_model(config, data)
    state = TrainState.create(model, lr=1e-3, seed=0)

    def run():
        state.epoch, state.batch = 0, 0
        fit(model, data, epochs=1, batch_size=batch_size, seed=0, state=state, progress=False)

    if guarded:
        return timeit(run, repeat=3)
    with mock.patch.object(loop, "_StepSnapshot", _NoSnapshot), \
            mock.patch.object(loop, "_first_nonfinite", lambda named: None), \
            mock.patch.object(loop, "_rng_capture", lambda device: None):
        return timeit(run, repeat=3)


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
        # alternate the two variants so that drifting machine load hits both alike
        plain = _epoch(config, data, 64, guarded=False)
        guarded = _epoch(config, data, 64, guarded=True)
        plain = min(plain, _epoch(config, data, 64, guarded=False))
        guarded = min(guarded, _epoch(config, data, 64, guarded=True))
        model = build_run_model(config, data)
        state = TrainState.create(model, lr=1e-3, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.safetensors"
            save_s = timeit(lambda p=path, m=model, s=state: save_checkpoint(p, m, s), repeat=5)
            size = path.stat().st_size
        steps = -(-len(data.train) // 64)
        rows.append({"case": label, "dataset": config.dataset, "steps": steps,
                     "epoch_s_plain": plain, "epoch_s_guarded": guarded,
                     "overhead": guarded / plain - 1.0,
                     "guard_ms_per_step": 1e3 * (guarded - plain) / steps,
                     "checkpoint_write_s": save_s, "checkpoint_bytes": size,
                     "params": sum(p.numel() for p in model.parameters())})
    print("| model | params | epoch, no guard | epoch, guarded | overhead | one checkpoint |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} ({r['dataset']}, {r['steps']} steps) | {r['params']:,} | "
              f"{r['epoch_s_plain']:.3f} s | {r['epoch_s_guarded']:.3f} s | "
              f"{100 * r['overhead']:+.1f}% | {1e3 * r['checkpoint_write_s']:.1f} ms "
              f"({r['checkpoint_bytes'] / 1e6:.2f} MB) |")
    name = "train_guard_quick" if args.quick else "train_guard"
    print(f"written: {write(name, {'rows': rows})}")


if __name__ == "__main__":
    main()
