"""Why do ReLU TTN generators collapse on the wide MLP's 4096-wide layers?  Short diagnostics.

Part 1 (``--init``): statistics of the initial ``W`` of ``fc2`` (4096 x 4096) for several
generators: mean and std, the spread of the row means relative to what i.i.d. entries of the
same std would give (``row-mean ratio`` = std(row means) * sqrt(4096) / std(W); 1 for a dense
init), max|W| / std, and the fraction of the network's ``fc2`` units that are active (ReLU > 0)
on any of 512 training images.

Part 2 (``--train``): the first epoch (32 steps of the wide recipe) of the cells that collapsed
(TTN chi=8 seed 0, chi=12 seeds 0 and 2), with the recipe and with candidate remedies; prints
the active fraction of ``fc2`` units along the way and the test accuracy after the epoch.

    nice -n 19 python experiments/paper_scale/diagnose_collapse.py --init --train
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_paper_scale as ps  # noqa: E402


def active_fraction(model, x) -> float:
    with torch.no_grad():
        h = torch.relu(model.fc1(model.flatten(x)))
        z = model.fc2(h)
    return float((z > 0).any(dim=0).float().mean())


def w_stats(layer) -> dict:
    with torch.no_grad():
        w = layer.weight.detach().double()
    std = float(w.std())
    row = w.mean(dim=1)
    return {"mean/std": float(w.mean()) / std,
            "row-mean ratio": float(row.std()) * w.shape[1] ** 0.5 / std,
            "max/std": float(w.abs().max()) / std,
            "std": std}


def build(cfg, data):
    from adntn_lab.train.strategies import build_run_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_run_model(cfg, data)


def part_init(data, seeds) -> list[dict]:
    x = data.train.tensors[0][:512]
    out = []
    cells = [("ttn", 8, None), ("ttn", 12, None), ("ttn", 4, None), ("ttn", 8, "identity"),
             ("ttn", 8, "tanh"), ("mpo", 6, None), (None, 1, None)]
    for fam, bd, act in cells:
        for seed in seeds:
            cfg = ps.wide_base(family=fam, bond_dim=bd, activation=act, seed=seed)
            m = build(cfg, data)
            row = {"family": fam or "dense", "knob": bd, "activation": act, "seed": seed,
                   "active": active_fraction(m, x), **w_stats(m.fc2)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def part_train(data, variants, cells) -> list[dict]:
    from adntn_lab.train.runs import run_training

    x = data.train.tensors[0][:512]
    out = []
    for fam, bd, seed in cells:
        for name, changes, hook in variants:
            track = []

            def cb(ev, track=track):
                if ev["event"] == "step" and ev["step"] in (1, 2, 3, 5, 10, 20, 32):
                    ev["model"].eval()
                    track.append((ev["step"], round(active_fraction(ev["model"], x), 3)))
                    ev["model"].train()
                if ev["event"] == "start":
                    track.append((0, round(active_fraction(ev["model"], x), 3)))
                return None

            cfg = ps._base(ps.WIDE_RECIPE, **{"lr": ps.frozen_lr(), **changes},
                           family=fam, bond_dim=bd, seed=seed)
            t0 = time.perf_counter()
            cbs = ([hook()] if hook else []) + [cb]
            stop = []

            def one_epoch(ev, stop=stop):
                if ev["event"] == "epoch":
                    stop.append(ev["test_acc"])
                    return False  # stop after the first epoch (of the 8-epoch schedule)
                return None

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_training(cfg, None, data=data, progress=False, log=None,
                             callbacks=[*cbs, one_epoch])
            row = {"family": fam, "knob": bd, "seed": seed, "variant": name,
                   "active": track, "test_acc_epoch1": stop[0] if stop else None,
                   "s": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--init", action="store_true")
    p.add_argument("--train", action="store_true")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--cells", default="ttn:8:0,ttn:12:0,ttn:12:2")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from adntn_lab.data import load_dataset

    data = load_dataset("mnist-5k")
    rows = []
    if args.init:
        rows += part_init(data, args.seeds)
    if args.train:
        variants = [v for v in ps.COLLAPSE_VARIANTS
                    if args.variants is None or v[0] in args.variants]
        cells = [(f, int(b), int(s)) for f, b, s in
                 (c.split(":") for c in args.cells.split(","))]
        rows += part_train(data, variants, cells)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
