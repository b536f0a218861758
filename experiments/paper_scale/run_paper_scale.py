"""Paper-scale frontier and ablations on MNIST-5k: where do nonlinear generators beat linear ones?

Stages (run in the order given; every stage is resumable because every grid goes through
:func:`adntn_lab.train.sweep.run_sweep`, which skips the points already in its
``results.jsonl``):

- ``tune``   — the learning rate of the wide-MLP recipe, on a validation split of the training
  set (800 of the 4,000 images), for TTN chi=4 and MPO chi=3; the best mean is frozen.
- ``wide``   — the frontier on the wide MLP 784 -> 4096 -> 4096 -> 10, ``fc1`` and ``fc2``
  compressed (3.2 M + 16.8 M weights), every family, dense baseline.
- ``fc2-ablate`` / ``wide-ablate`` — activation (identity / relu / tanh), brick-wall depth and
  training length at equal parameters, on FC-2's 784 -> 256 layer and on the wide MLP.
- ``init``   — brick-wall gates started near the identity on the product state instead of the
  calibrated random init.
- ``report`` — merges every sweep into ``results.jsonl`` / ``results.csv`` and writes
  ``table.md`` and ``frontier.png`` (also done after every other stage).

Usage (from the repository root)::

    nice -n 19 python experiments/paper_scale/run_paper_scale.py --stages tune wide --seeds 0 1

Run folders (with checkpoints, up to 250 MB each for the dense wide MLP) go to
``experiments/paper_scale/runs/``, which git ignores; only the merged tables are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
N_TEST = 1000
CHANCE = 0.11  # a run at or below this (10 classes) has collapsed: reported as such

# FC-2: the frontier's frozen recipe (experiments/frontier), so the two studies compare
FC2_RECIPE = dict(model="fc2", dataset="mnist-5k", optimizer="adam", lr_schedule="cosine",
                  lr=1e-2, batch_size=64, epochs=20)
# wide MLP: batch and epochs fixed by the compute budget, lr tuned by the ``tune`` stage
WIDE_RECIPE = dict(model="wide-mlp", dataset="mnist-5k", optimizer="adam",
                   lr_schedule="cosine", batch_size=128, epochs=8)
# LeNet-5 with its convolutions compressed: the frontier's frozen LeNet-5 recipe (the same as
# its FC-2 recipe: tuned there once, on a validation split, and frozen)
LENET_RECIPE = dict(FC2_RECIPE, model="lenet5")
TUNE_LRS = (1e-3, 3e-3, 1e-2)
TUNE_POINTS = (("ttn", 4), ("mpo", 3))


def _base(recipe: dict, **changes):
    from adntn_lab.train.config import RunConfig

    return RunConfig(**{**recipe, **changes})


# ----------------------------------------------------------------------------- tuning


def validation_data(seed: int = 0):
    """The training set split into 3,200 images to train on and 800 to validate on."""
    import dataclasses

    from torch.utils.data import TensorDataset

    from adntn_lab.data import load_dataset

    data = load_dataset("mnist-5k")
    x, y = data.train.tensors
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    val, tr = perm[:800], perm[800:]
    return dataclasses.replace(data, train=TensorDataset(x[tr], y[tr]),
                               test=TensorDataset(x[val], y[val]))


def stage_tune(args) -> None:
    from adntn_lab.train.runs import run_training

    path = HERE / "tune.jsonl"
    done = {json.loads(line)["key"] for line in path.read_text().splitlines()} \
        if path.exists() else set()
    data = validation_data()
    for family, bd in TUNE_POINTS:
        for lr in TUNE_LRS:
            key = f"{family}-{bd}-lr{lr:g}"
            if key in done:
                continue
            cfg = _base(WIDE_RECIPE, family=family, bond_dim=bd, lr=lr, seed=0)
            res = run_training(cfg, None, data=data, progress=False, log=print)
            row = {"key": key, "family": family, "bond_dim": bd, "lr": lr,
                   "val_acc": res.metrics["final"]["test_acc"],
                   "wall_time": res.metrics["wall_time"], "recipe": WIDE_RECIPE}
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")


def frozen_lr() -> float:
    """The wide-MLP learning rate: best mean validation accuracy over the tuning points."""
    path = HERE / "tune.jsonl"
    if not path.exists():
        raise SystemExit("run the 'tune' stage first (it writes tune.jsonl)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_lr: dict[float, list[float]] = {}
    for r in rows:
        by_lr.setdefault(r["lr"], []).append(r["val_acc"])
    complete = {lr: v for lr, v in by_lr.items() if len(v) == len(TUNE_POINTS)}
    if len(complete) < len(TUNE_LRS):
        raise SystemExit("the tuning grid is incomplete; run the 'tune' stage again")
    return max(complete, key=lambda lr: (np.mean(complete[lr]), -lr))


# ----------------------------------------------------------------------------- sweeps


def sweep(group: str, base, families, bond_dims, seeds) -> None:
    from adntn_lab.train.sweep import run_sweep

    t0 = time.perf_counter()
    run_sweep(base, RUNS / group, families=families, bond_dims=bond_dims, seeds=seeds,
              progress=False, log=print)
    print(f"[{group}] {families} {list(bond_dims)} seeds {list(seeds)}: "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


def wide_base(**changes):
    return _base(WIDE_RECIPE, lr=frozen_lr(), **changes)


# budgets of the wide MLP (fc1 + fc2 parameters): ~200, ~500-700, ~1,300, ~5,000, ~15,000
# brick-wall depth 2 (the first depth with an activation) took ~6-9 s a step here on one thread
# in the first round and was not run; since the engine's faster gate chains it is ~1.2 s a step,
# run by the wide-brickwall2 stages
WIDE_GRID = {"ttn": (1, 2, 4, 8), "mpo": (1, 2, 3, 6), "brickwall": (1,), "lowrank": (1,)}
WIDE_N16_GRID = {"mera": (2,), "attn": (2,)}  # 16 sites: their default 8 are ~10^4 params
WIDE_BIG = {"ttn": (12,), "mpo": (12,)}  # the ~1,000x end, where low-rank rank 1 sits


def stage_wide(args) -> None:
    for seed in args.seeds:
        for fam, bds in WIDE_GRID.items():
            sweep("wide", wide_base(), [fam], bds, [seed])
        sweep("wide", wide_base(), ["dense"], [1], [seed])
        for fam, bds in WIDE_N16_GRID.items():
            sweep("wide-n16", wide_base(options={"n_sites": 16}), [fam], bds, [seed])


def stage_wide_brickwall2(args) -> None:
    """Brick-wall depth 2 (the first depth with an activation) on the wide MLP, which the
    engine's faster gate chains now train at about 1.2 s a step on one thread."""
    for seed in args.seeds:
        sweep("wide", wide_base(), ["brickwall"], [2], [seed])


def stage_wide_brickwall2_identity(args) -> None:
    """The same brick-wall with identity activations: the activation ablation at depth 2."""
    for seed in args.seeds:
        sweep("wide-identity", wide_base(activation="identity"), ["brickwall"], [2], [seed])


def stage_wide_big(args) -> None:
    for seed in args.seeds:
        for fam, bds in WIDE_BIG.items():
            sweep("wide", wide_base(), [fam], bds, [seed])


# LeNet-5: conv2 (16x6x5x5 = 2,400 weights, generated as a 16 x 150 matrix), fc1 (400 -> 120)
# and fc2 (120 -> 84) compressed with the same options, 60,480 weights together; each family
# from its smallest knob up (totals: TTN 180 / 390 / 996 / 2,010, MPO 173 / 468 / 885 / 1,424,
# low-rank 890 / 1,780, brick-wall 624 / 1,248 / 1,872, aTTN (16 sites) 515 / 917 / 1,829,
# MERA (16 sites) 492 / 895 / 2,120 parameters)
LENET_CONV_LAYERS = ["conv2", "fc1", "fc2"]
LENET_CONV_GRID = {"ttn": (1, 2, 4, 6), "mpo": (1, 2, 3, 4), "lowrank": (1, 2),
                   "brickwall": (1, 2, 3)}
LENET_CONV_N16 = {"attn": (1, 2, 3), "mera": (1, 2, 3)}
# conv1 (6x1x5x5 = 150 weights) as well, where a family's generator is smaller than 150
LENET_CONV1_GRID = {"ttn": (1, 2), "mpo": (1, 2)}


def stage_lenet5_conv(args) -> None:
    """LeNet-5 with conv2 + fc1 + fc2 generated (and, in ``lenet5-conv1``, conv1 too)."""
    base = _base(LENET_RECIPE, compress=LENET_CONV_LAYERS)
    for seed in args.seeds:
        sweep("lenet5-conv", base, ["dense"], [1], [seed])  # compress is unused when dense
        for fam, bds in LENET_CONV_GRID.items():
            sweep("lenet5-conv", base, [fam], bds, [seed])
        for fam, bds in LENET_CONV_N16.items():
            sweep("lenet5-conv-n16", _base(LENET_RECIPE, compress=LENET_CONV_LAYERS,
                                           options={"n_sites": 16}), [fam], bds, [seed])
    for seed in args.seeds:
        for fam, bds in LENET_CONV1_GRID.items():
            sweep("lenet5-conv1", _base(LENET_RECIPE, compress=["conv1", *LENET_CONV_LAYERS]),
                  [fam], bds, [seed])


def stage_fc2_ablate(args) -> None:
    seeds = args.seeds
    # equal-parameter baselines and the relu points: TTN chi=4 (496), MPO chi=3 (528),
    # MPO chi=2 (264), brick-wall depth 1 (272); the frontier (experiments/frontier) has
    # brick-wall depths 1, 2, 4 and TTN/MPO at 20, 60 and 120 epochs on this layer already
    sweep("fc2", _base(FC2_RECIPE), ["ttn"], [4], seeds)
    sweep("fc2", _base(FC2_RECIPE), ["mpo"], [2, 3], seeds)
    sweep("fc2", _base(FC2_RECIPE), ["dense"], [1], seeds)
    for act in ("identity", "tanh"):
        sweep(f"fc2-{act}", _base(FC2_RECIPE, activation=act), ["ttn"], [4], seeds)
    sweep("fc2", _base(FC2_RECIPE), ["brickwall"], [1], seeds)
    # depth 1 has no activation at all (sigma follows every layer but the last): a linear
    # network whichever activation is named; identity there is a check that equals relu
    sweep("fc2-identity", _base(FC2_RECIPE, activation="identity"), ["brickwall"], [1], seeds)
    stage_fc2_more(args)


def stage_fc2_more(args) -> None:
    """Brick-wall depth 2 with each activation, then 3x the epochs."""
    seeds = args.seeds
    sweep("fc2", _base(FC2_RECIPE), ["brickwall"], [2], seeds)
    for act in ("identity", "tanh"):
        sweep(f"fc2-{act}", _base(FC2_RECIPE, activation=act), ["brickwall"], [2], seeds)


def stage_long(args) -> None:
    """Training length, last in priority: 3x the epochs at equal parameters (the wide MLP on
    the first seed given only, FC-2 on all)."""
    for fam, bd in (("ttn", 4), ("mpo", 3)):
        sweep("wide-long", wide_base(epochs=24), [fam], [bd], args.seeds[:1])
    for fam, bd in (("ttn", 4), ("mpo", 3)):
        sweep("fc2-long", _base(FC2_RECIPE, epochs=60), [fam], [bd], args.seeds)


def stage_wide_ablate(args) -> None:
    seeds = args.seeds
    for act in ("identity", "tanh"):
        sweep(f"wide-{act}", wide_base(activation=act), ["ttn"], [4], seeds)
    # the linear tree at the other budgets, to see whether dropping ReLU closes the gap to MPO
    sweep("wide-identity", wide_base(activation="identity"), ["ttn"], [2, 8], seeds)
    # brick-wall: depth 1 has no nonlinear stage, and depth 2 (any activation, identity too)
    # takes several s a step here (see WIDE_GRID): its activation ablation is on FC-2 only


# ----------------------------------------------------------------------------- init ablation


def near_identity_gates(noise: float = 0.05):
    """A training callback that, at the start of a fresh run, sets every brick-wall gate to the
    identity plus Gaussian noise of std ``noise`` (seeded by the run), in place of the
    calibrated random init. On the product state [1, 0]^Q this starts W near a one-hot."""
    eye = torch.eye(4).reshape(2, 2, 2, 2)  # (in_a, in_b, out_a, out_b)

    def callback(ev):
        if ev["event"] != "start" or ev["step"] != 0:
            return None
        g = torch.Generator().manual_seed(int(ev["state"].seed))
        with torch.no_grad():
            for mod in ev["model"].modules():
                gen = getattr(mod, "generator", None)
                if gen is None or gen.family != "brickwall":
                    continue
                for p in mod.cores.values():
                    p.copy_(eye.to(p) + noise * torch.randn(p.shape, generator=g).to(p))
        return None

    return callback


def train_points(group: str, base, points, seeds, callback, note: dict, *,
                 resume: bool = True) -> bool:
    """Train ``points`` ((family, knob) pairs) x ``seeds`` through run_training with a training
    callback (``callback()`` makes a fresh one per run), in run_sweep's row format and folder
    layout; finished points are skipped. ``note`` is stored beside the base settings in
    ``sweep.json`` (what the callback changes). Returns False if a run stopped early."""
    from adntn_lab.data import load_dataset
    from adntn_lab.train.config import copy_config
    from adntn_lab.train.runs import run_training
    from adntn_lab.train.sweep import _row, _write_csv, point_key, read_results

    data = load_dataset(base.dataset)
    out = RUNS / group
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"base": {**base.to_dict(), **note}}, indent=2))
    rows = read_results(out / "results.jsonl")
    done = {r["key"] for r in rows}
    t_all = time.perf_counter()
    for seed in seeds:
        for fam, knob in points:
            key = point_key(fam, knob, seed)
            if key in done:
                continue
            cfg = copy_config(base, family=fam, bond_dim=knob, seed=seed)
            t0 = time.perf_counter()
            res = run_training(cfg, out / key, resume=resume, data=data, progress=False,
                               callbacks=[callback()], log=print)
            if not res.metrics.get("complete"):
                return False
            row = _row(key, cfg, res.metrics, out / key)
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            _write_csv(out / "results.csv", rows)
            print(f"[{group}] {key}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[{group}] {list(points)} seeds {list(seeds)}: {time.perf_counter() - t_all:.0f} s",
          flush=True)
    return True


def stage_init(args) -> None:
    """Brick-wall with near-identity gates (run through run_training with a start callback, in
    the same row format as run_sweep; already finished points are skipped)."""
    plan = [("fc2-init-identity", _base(FC2_RECIPE), (1, 2)),
            ("wide-init-identity", wide_base(), (1,))]
    for group, base, depths in plan:
        if not train_points(group, base, [("brickwall", d) for d in depths], args.seeds,
                            near_identity_gates, {"init": "near-identity gates, noise 0.05"}):
            return


# ----------------------------------------------------------------------------- optimiser ablations


def optimizer_hook(upper: float = 1.0, leaves: float = 1.0, clip: float | None = None):
    """A training callback factory. At the start of a fresh run the callback splits the
    optimiser's parameters into three groups: the generator cores of stage 0 (a tree's leaves,
    which carry the physical legs), the cores of every later stage (internal nodes and root),
    and everything else (biases, dense layers). The groups' learning rates are the scheduled
    rate times ``leaves``, ``upper`` and 1; with ``clip`` the global gradient norm is clipped
    to it before every step. (Adam is invariant to a gradient's scale, so a scaled learning
    rate is the only way to slow a group down.) Runs with it restart rather than resume."""

    def make():
        def callback(ev):
            if ev["event"] != "start":
                return None
            if ev["step"] != 0:
                raise RuntimeError("optimizer_hook runs restart; delete the run folder")
            model, opt = ev["model"], ev["state"].optimizer
            stage_of = {}
            for mod in model.modules():
                gen, cores = getattr(mod, "generator", None), getattr(mod, "cores", None)
                if gen is None or not isinstance(cores, torch.nn.ParameterDict):
                    continue
                for name, par in cores.items():
                    stage_of[id(par)] = gen.cores[name].stage
            params = [q for g in opt.param_groups for q in g["params"]]
            groups = {"leaves": [], "upper": [], "rest": []}
            for q in params:
                st = stage_of.get(id(q))
                groups["rest" if st is None else "leaves" if st == 0 else "upper"].append(q)
            opt.param_groups.clear()
            for name, scale in (("leaves", leaves), ("upper", upper), ("rest", 1.0)):
                if groups[name]:
                    opt.add_param_group({"params": groups[name], "lr_scale": float(scale),
                                         "group": name})
            base_step = opt.step

            def step(closure=None):
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                saved = [g["lr"] for g in opt.param_groups]
                for g in opt.param_groups:
                    g["lr"] = g["lr"] * g["lr_scale"]
                try:
                    return base_step(closure)
                finally:
                    for g, lr_ in zip(opt.param_groups, saved, strict=True):
                        g["lr"] = lr_

            opt.step = step
            return None

        return callback

    return make


def _hook_note(upper=1.0, leaves=1.0, clip=None) -> dict:
    parts = []
    if upper != 1.0:
        parts.append(f"upper-level cores lr x{upper:g}")
    if leaves != 1.0:
        parts.append(f"leaf cores lr x{leaves:g}")
    if clip is not None:
        parts.append(f"grad-norm clip {clip:g}")
    return {"variant": ", ".join(parts)}


def hooked(group, base, points, seeds, **hook) -> bool:
    return train_points(group, base, points, seeds, optimizer_hook(**hook), _hook_note(**hook),
                        resume=False)


# TTN stages on these layers: 0 = leaves (linear), 1 .. S-2 = internal levels (sigma after
# each), S-1 = root (linear). FC-2 with n_sites=8 and the wide MLP at its default 5/6 sites
# both have S = 4, i.e. two activated levels, 1 (bottom) and 2 (top).
BOTTOM_ONLY = ["identity", "relu", "identity", "identity"]
TOP_ONLY = ["identity", "identity", "relu", "identity"]


def stage_fc2_ablate2(args) -> None:
    """FC-2, TTN: learning rate per core group, activation placement, gelu, tree depth."""
    seeds = args.seeds
    # (c) gelu at chi=4 (496), beside relu / identity / tanh of fc2-ablate
    sweep("fc2-gelu", _base(FC2_RECIPE, activation="gelu"), ["ttn"], [4], seeds)
    # (d) tree depth at ~500 parameters: 4 sites (the default, chi=4: 496) vs 8 (chi=4: 552)
    # vs 16 (chi=3: 492)
    sweep("fc2-n8", _base(FC2_RECIPE, options={"n_sites": 8}), ["ttn"], [4], seeds)
    sweep("fc2-n16", _base(FC2_RECIPE, options={"n_sites": 16}), ["ttn"], [3], seeds)
    # (b) activation placement on the 8-site tree (two activated levels): bottom / top only,
    # and none; fc2-n8 above has both
    for group, act in (("fc2-n8-bottom", BOTTOM_ONLY), ("fc2-n8-top", TOP_ONLY),
                       ("fc2-n8-identity", "identity")):
        sweep(group, _base(FC2_RECIPE, options={"n_sites": 8}, activation=act), ["ttn"], [4],
              seeds)
    # (a) learning rate per core group, relu TTN chi=4 (4 sites: leaves, one level, root)
    for group, hook in (("fc2-lr-upper0.3", {"upper": 0.3}), ("fc2-lr-upper0.1", {"upper": 0.1}),
                        ("fc2-lr-leaves0.3", {"leaves": 0.3})):
        hooked(group, _base(FC2_RECIPE), [("ttn", 4)], seeds, **hook)


def stage_wide_ablate2(args) -> None:
    """Wide MLP, TTN chi=4 (relu unless said): gelu, activation placement, lr per core group;
    then aTTN / MERA (16 sites) at two more budgets, and MPO chi=4 beside them."""
    seeds = args.seeds
    sweep("wide-gelu", wide_base(activation="gelu"), ["ttn"], [4], seeds)
    sweep("wide-bottom", wide_base(activation=BOTTOM_ONLY), ["ttn"], [4], seeds)
    sweep("wide-top", wide_base(activation=TOP_ONLY), ["ttn"], [4], seeds)
    hooked("wide-lr-upper0.3", wide_base(), [("ttn", 4)], seeds, upper=0.3)
    for seed in seeds:
        for fam in ("attn", "mera"):
            sweep("wide-n16", wide_base(options={"n_sites": 16}), [fam], [1, 3], [seed])
        sweep("wide", wide_base(), ["mpo"], [4], [seed])


def package_hash() -> str:
    """The README's identity of the imported adntn_lab: ``find adntn_lab -name "*.py" | sort |
    xargs sha256sum | sha256sum``, first 16 hex digits (run in the package's parent folder)."""
    import subprocess

    import adntn_lab

    out = subprocess.run('find adntn_lab -name "*.py" | sort | xargs sha256sum | sha256sum',
                         shell=True, capture_output=True, text=True, check=True,
                         cwd=Path(adntn_lab.__file__).parent.parent)
    return out.stdout[:16]


def stage_wide_rowinit(args) -> None:
    """The ReLU TTN on the wide MLP again, with the package's row-mean centring at calibration
    (problem 1's fix); same recipe and seeds, so each cell compares with its ``wide`` twin."""
    from adntn_lab.numerics import MAX_ROW_MEAN_RATIO

    note = {"init": f"calibrated, row means centred (ratio <= {MAX_ROW_MEAN_RATIO:g})",
            "package": package_hash()}
    train_points("wide-rowinit", wide_base(), [("ttn", k) for k in (8, 12, 4, 2, 1)],
                 args.seeds, lambda: (lambda ev: None), note)


def stage_rowinit_more(args) -> None:
    """The other nonlinear cells again with the row-mean centring: LeNet-5 (whose fc1 and fc2
    also take ReLU outputs), FC-2, and aTTN / MERA chi=2 on the wide MLP."""
    from adntn_lab.numerics import MAX_ROW_MEAN_RATIO

    note = {"init": f"calibrated, row means centred (ratio <= {MAX_ROW_MEAN_RATIO:g})",
            "package": package_hash()}
    none = lambda: (lambda ev: None)  # noqa: E731
    plan = [
        ("lenet5-conv-rowinit", _base(LENET_RECIPE, compress=LENET_CONV_LAYERS),
         [("ttn", 1), ("ttn", 2), ("ttn", 4), ("ttn", 6), ("brickwall", 2), ("brickwall", 3)]),
        ("lenet5-conv-n16-rowinit", _base(LENET_RECIPE, compress=LENET_CONV_LAYERS,
                                          options={"n_sites": 16}),
         [(f, k) for f in ("attn", "mera") for k in (1, 2, 3)]),
        ("fc2-rowinit", _base(FC2_RECIPE), [("ttn", 4)]),
        ("fc2-n16-rowinit", _base(FC2_RECIPE, options={"n_sites": 16}), [("ttn", 3)]),
        ("wide-n16-rowinit", wide_base(options={"n_sites": 16}), [("attn", 2), ("mera", 2)]),
    ]
    for group, base, points in plan:
        train_points(group, base, points, args.seeds, none, note)


# remedies tried against the collapse (diagnose_collapse.py): name, RunConfig changes, hook
COLLAPSE_VARIANTS = [
    ("recipe", {}, None),
    ("upper lr x0.1", {}, optimizer_hook(upper=0.1)),
    ("upper lr x0.3", {}, optimizer_hook(upper=0.3)),
    ("clip 1", {}, optimizer_hook(clip=1.0)),
    ("lr 1e-3", {"lr": 1e-3}, None),
]


# ----------------------------------------------------------------------------- report


def collect() -> list[dict]:
    """Every finished point of every sweep under runs/, with its group's settings."""
    from adntn_lab.train.sweep import read_results

    rows = []
    # the committed record first: run folders are not kept, so a fresh checkout (or another
    # machine) has only the rows of results.jsonl; a point trained here again replaces its row
    record = HERE / "results.jsonl"
    if record.exists():
        rows = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    index = {(r["group"], r["key"]): i for i, r in enumerate(rows)}
    for spec in sorted(RUNS.glob("*/sweep.json")):
        base = json.loads(spec.read_text())["base"]
        for r in read_results(spec.parent / "results.jsonl"):
            r = dict(r)
            r["group"] = spec.parent.name
            r["run_dir"] = str(Path(r["run_dir"]).relative_to(HERE)) \
                if Path(r["run_dir"]).is_absolute() else r["run_dir"]
            for k in ("model", "activation", "options", "epochs", "lr", "batch_size",
                      "lr_schedule", "optimizer"):
                r[f"cfg_{k}"] = base.get(k)
            r["init"] = base.get("init", "calibrated")
            r["cfg_compress"] = base.get("compress")
            r["variant"] = base.get("variant", "")
            at = index.get((r["group"], r["key"]))
            if at is None:
                index[(r["group"], r["key"])] = len(rows)
                rows.append(r)
            else:
                rows[at] = r
    return rows


def se_mean(accs) -> float:
    """Standard error of a mean accuracy (fraction): seed spread plus the binomial term of
    the 1,000 test images (not divided by the seed count: every seed sees the same images)."""
    a = np.asarray(accs, dtype=float)
    p = float(a.mean())
    seed_var = float(a.var(ddof=1)) / len(a) if len(a) > 1 else 0.0
    return math.sqrt(seed_var + p * (1 - p) / N_TEST)


def summarise(rows) -> list[dict]:
    """One line per (group, family, knob): mean, sd, SE, params."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["group"], r["family"], r["bond_dim"]), []).append(r)
    out = []
    for (group, fam, bd), rs in cells.items():
        accs = [r["test_acc"] for r in rs]
        out.append({
            "group": group, "family": fam, "knob": bd, "n": len(rs),
            "seeds": sorted(r["seed"] for r in rs),
            "params": rs[0]["compressed_params"] or rs[0]["params"],
            "compression": rs[0]["compression"],
            "mean": float(np.mean(accs)),
            "sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan"),
            "se": se_mean(accs),
            "activation": rs[0]["cfg_activation"], "epochs": rs[0]["cfg_epochs"],
            "init": rs[0]["init"], "options": rs[0]["cfg_options"],
            "variant": rs[0].get("variant", ""),
            "layers": [(lay["name"], int(lay["params_before"]), int(lay["params_after"]))
                       for lay in rs[0].get("compressed_layers") or []],
            "wall": float(np.mean([r["wall_time"] for r in rs])),
            "at_chance": sum(r["test_acc"] <= CHANCE for r in rs),
        })
    return sorted(out, key=lambda c: (c["group"], c["params"]))


# (question, cell a, cell b): a cell is (group, family, knob); "a beats b" is tested
COMPARISONS = [
    # wide MLP, nonlinear vs linear at (nearly) equal parameters
    ("wide ~200: TTN chi=1 vs MPO chi=1", ("wide", "ttn", 1), ("wide", "mpo", 1)),
    ("wide ~500: TTN chi=2 vs MPO chi=2", ("wide", "ttn", 2), ("wide", "mpo", 2)),
    ("wide ~700: brick-wall M=1 (linear) vs MPO chi=2", ("wide", "brickwall", 1),
     ("wide", "mpo", 2)),
    ("wide ~1,300: TTN chi=4 vs MPO chi=3", ("wide", "ttn", 4), ("wide", "mpo", 3)),
    ("wide ~1,300: brick-wall M=2 vs MPO chi=3", ("wide", "brickwall", 2), ("wide", "mpo", 3)),
    ("wide ~1,300: MERA chi=2 (16 sites) vs MPO chi=3", ("wide-n16", "mera", 2),
     ("wide", "mpo", 3)),
    ("wide ~1,300: aTTN chi=2 (16 sites) vs MPO chi=3", ("wide-n16", "attn", 2),
     ("wide", "mpo", 3)),
    ("wide ~5,000: TTN chi=8 vs MPO chi=6", ("wide", "ttn", 8), ("wide", "mpo", 6)),
    ("wide ~15,000: TTN chi=12 vs MPO chi=12", ("wide", "ttn", 12), ("wide", "mpo", 12)),
    ("wide ~15,000: TTN chi=12 vs low-rank r=1", ("wide", "ttn", 12), ("wide", "lowrank", 1)),
    ("wide ~15,000: MPO chi=12 vs low-rank r=1", ("wide", "mpo", 12), ("wide", "lowrank", 1)),
    # FC-2
    ("fc2 ~500: TTN chi=4 vs MPO chi=3", ("fc2", "ttn", 4), ("fc2", "mpo", 3)),
    ("fc2 ~270: brick-wall M=1 (linear) vs MPO chi=2", ("fc2", "brickwall", 1), ("fc2", "mpo", 2)),
    ("fc2 ~540: brick-wall M=2 vs MPO chi=3", ("fc2", "brickwall", 2), ("fc2", "mpo", 3)),
    # activation ablations (same structure, same parameters)
    ("fc2 TTN chi=4: relu vs identity", ("fc2", "ttn", 4), ("fc2-identity", "ttn", 4)),
    ("fc2 TTN chi=4: tanh vs identity", ("fc2-tanh", "ttn", 4), ("fc2-identity", "ttn", 4)),
    ("fc2 brick-wall M=1 (linear): relu vs identity (a check: must be equal)",
     ("fc2", "brickwall", 1), ("fc2-identity", "brickwall", 1)),
    ("fc2 brick-wall M=2: relu vs identity", ("fc2", "brickwall", 2),
     ("fc2-identity", "brickwall", 2)),
    ("fc2 brick-wall M=2: tanh vs identity", ("fc2-tanh", "brickwall", 2),
     ("fc2-identity", "brickwall", 2)),
    ("wide TTN chi=4: relu vs identity", ("wide", "ttn", 4), ("wide-identity", "ttn", 4)),
    ("wide TTN chi=4: tanh vs identity", ("wide-tanh", "ttn", 4), ("wide-identity", "ttn", 4)),
    ("wide TTN chi=2: relu vs identity", ("wide", "ttn", 2), ("wide-identity", "ttn", 2)),
    ("wide TTN chi=8: relu vs identity", ("wide", "ttn", 8), ("wide-identity", "ttn", 8)),
    ("wide ~500: linear TTN chi=2 vs MPO chi=2", ("wide-identity", "ttn", 2),
     ("wide", "mpo", 2)),
    ("wide ~1,300: linear TTN chi=4 vs MPO chi=3", ("wide-identity", "ttn", 4),
     ("wide", "mpo", 3)),
    ("wide ~1,300: tanh TTN chi=4 vs MPO chi=3", ("wide-tanh", "ttn", 4), ("wide", "mpo", 3)),
    ("wide ~5,000: linear TTN chi=8 vs MPO chi=6", ("wide-identity", "ttn", 8),
     ("wide", "mpo", 6)),
    ("wide brick-wall M=2: relu vs identity", ("wide", "brickwall", 2),
     ("wide-identity", "brickwall", 2)),
    ("wide brick-wall M=2: tanh vs identity", ("wide-tanh", "brickwall", 2),
     ("wide-identity", "brickwall", 2)),
    # depth, initialisation, training length
    ("fc2 brick-wall: M=2 vs M=1", ("fc2", "brickwall", 2), ("fc2", "brickwall", 1)),
    ("wide brick-wall: M=2 vs M=1", ("wide", "brickwall", 2), ("wide", "brickwall", 1)),
    ("fc2 brick-wall M=1: calibrated vs near-identity init", ("fc2", "brickwall", 1),
     ("fc2-init-identity", "brickwall", 1)),
    ("fc2 brick-wall M=2: calibrated vs near-identity init", ("fc2", "brickwall", 2),
     ("fc2-init-identity", "brickwall", 2)),
    ("wide brick-wall M=1: calibrated vs near-identity init", ("wide", "brickwall", 1),
     ("wide-init-identity", "brickwall", 1)),
    ("fc2 TTN chi=4: 60 vs 20 epochs", ("fc2-long", "ttn", 4), ("fc2", "ttn", 4)),
    ("fc2 MPO chi=3: 60 vs 20 epochs", ("fc2-long", "mpo", 3), ("fc2", "mpo", 3)),
    ("wide TTN chi=4: 24 vs 8 epochs", ("wide-long", "ttn", 4), ("wide", "ttn", 4)),
    ("wide MPO chi=3: 24 vs 8 epochs", ("wide-long", "mpo", 3), ("wide", "mpo", 3)),
    ("wide-long ~1,300: TTN chi=4 vs MPO chi=3 (24 epochs)", ("wide-long", "ttn", 4),
     ("wide-long", "mpo", 3)),
    # LeNet-5 with conv2 + fc1 + fc2 generated (60,480 weights)
    ("lenet5-conv ~180: TTN chi=1 vs MPO chi=1", ("lenet5-conv", "ttn", 1),
     ("lenet5-conv", "mpo", 1)),
    ("lenet5-conv ~400: TTN chi=2 vs MPO chi=2", ("lenet5-conv", "ttn", 2),
     ("lenet5-conv", "mpo", 2)),
    ("lenet5-conv ~500: aTTN chi=1 (16 sites) vs MPO chi=2", ("lenet5-conv-n16", "attn", 1),
     ("lenet5-conv", "mpo", 2)),
    ("lenet5-conv ~500: MERA chi=1 (16 sites) vs MPO chi=2", ("lenet5-conv-n16", "mera", 1),
     ("lenet5-conv", "mpo", 2)),
    ("lenet5-conv ~600: brick-wall M=1 (linear) vs MPO chi=2", ("lenet5-conv", "brickwall", 1),
     ("lenet5-conv", "mpo", 2)),
    ("lenet5-conv ~900: TTN chi=4 vs MPO chi=3", ("lenet5-conv", "ttn", 4),
     ("lenet5-conv", "mpo", 3)),
    ("lenet5-conv ~900: aTTN chi=2 (16 sites) vs MPO chi=3", ("lenet5-conv-n16", "attn", 2),
     ("lenet5-conv", "mpo", 3)),
    ("lenet5-conv ~900: MERA chi=2 (16 sites) vs MPO chi=3", ("lenet5-conv-n16", "mera", 2),
     ("lenet5-conv", "mpo", 3)),
    ("lenet5-conv ~900: low-rank r=1 vs MPO chi=3", ("lenet5-conv", "lowrank", 1),
     ("lenet5-conv", "mpo", 3)),
    ("lenet5-conv ~1,300: brick-wall M=2 vs MPO chi=4", ("lenet5-conv", "brickwall", 2),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5-conv ~1,900: brick-wall M=3 vs MPO chi=4", ("lenet5-conv", "brickwall", 3),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5-conv ~1,900: aTTN chi=3 (16 sites) vs MPO chi=4", ("lenet5-conv-n16", "attn", 3),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5-conv ~2,000: MERA chi=3 (16 sites) vs MPO chi=4", ("lenet5-conv-n16", "mera", 3),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5-conv ~2,000: TTN chi=6 vs MPO chi=4", ("lenet5-conv", "ttn", 6),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5-conv ~1,800: low-rank r=2 vs MPO chi=4", ("lenet5-conv", "lowrank", 2),
     ("lenet5-conv", "mpo", 4)),
    ("lenet5 TTN chi=1: conv1 generated too vs not", ("lenet5-conv1", "ttn", 1),
     ("lenet5-conv", "ttn", 1)),
    ("lenet5 TTN chi=2: conv1 generated too vs not", ("lenet5-conv1", "ttn", 2),
     ("lenet5-conv", "ttn", 2)),
    ("lenet5 MPO chi=1: conv1 generated too vs not", ("lenet5-conv1", "mpo", 1),
     ("lenet5-conv", "mpo", 1)),
    ("lenet5 MPO chi=2: conv1 generated too vs not", ("lenet5-conv1", "mpo", 2),
     ("lenet5-conv", "mpo", 2)),
    # FC-2: gelu, tree depth, activation placement, lr per core group (TTN)
    ("fc2 TTN chi=4: gelu vs identity", ("fc2-gelu", "ttn", 4), ("fc2-identity", "ttn", 4)),
    ("fc2 TTN chi=4: gelu vs relu", ("fc2-gelu", "ttn", 4), ("fc2", "ttn", 4)),
    ("fc2 ~500: TTN 8 sites chi=4 vs 4 sites chi=4", ("fc2-n8", "ttn", 4), ("fc2", "ttn", 4)),
    ("fc2 ~500: TTN 16 sites chi=3 vs 4 sites chi=4", ("fc2-n16", "ttn", 3), ("fc2", "ttn", 4)),
    ("fc2 ~500: TTN 16 sites chi=3 vs 8 sites chi=4", ("fc2-n16", "ttn", 3), ("fc2-n8", "ttn", 4)),
    ("fc2 ~500: TTN 8 sites chi=4 vs MPO chi=3", ("fc2-n8", "ttn", 4), ("fc2", "mpo", 3)),
    ("fc2 ~500: TTN 16 sites chi=3 vs MPO chi=3", ("fc2-n16", "ttn", 3), ("fc2", "mpo", 3)),
    ("fc2 TTN 8 sites chi=4: relu bottom level only vs both", ("fc2-n8-bottom", "ttn", 4),
     ("fc2-n8", "ttn", 4)),
    ("fc2 TTN 8 sites chi=4: relu top level only vs both", ("fc2-n8-top", "ttn", 4),
     ("fc2-n8", "ttn", 4)),
    ("fc2 TTN 8 sites chi=4: relu top only vs bottom only", ("fc2-n8-top", "ttn", 4),
     ("fc2-n8-bottom", "ttn", 4)),
    ("fc2 TTN 8 sites chi=4: relu both levels vs identity", ("fc2-n8", "ttn", 4),
     ("fc2-n8-identity", "ttn", 4)),
    ("fc2 TTN chi=4: upper-level lr x0.3 vs one lr", ("fc2-lr-upper0.3", "ttn", 4),
     ("fc2", "ttn", 4)),
    ("fc2 TTN chi=4: upper-level lr x0.1 vs one lr", ("fc2-lr-upper0.1", "ttn", 4),
     ("fc2", "ttn", 4)),
    ("fc2 TTN chi=4: leaf lr x0.3 vs one lr", ("fc2-lr-leaves0.3", "ttn", 4), ("fc2", "ttn", 4)),
    # wide MLP: gelu, activation placement, lr per core group, aTTN / MERA budgets
    ("wide TTN chi=4: gelu vs identity", ("wide-gelu", "ttn", 4), ("wide-identity", "ttn", 4)),
    ("wide TTN chi=4: gelu vs relu", ("wide-gelu", "ttn", 4), ("wide", "ttn", 4)),
    ("wide TTN chi=4: relu bottom level only vs both", ("wide-bottom", "ttn", 4),
     ("wide", "ttn", 4)),
    ("wide TTN chi=4: relu top level only vs both", ("wide-top", "ttn", 4), ("wide", "ttn", 4)),
    ("wide TTN chi=4: relu top only vs bottom only", ("wide-top", "ttn", 4),
     ("wide-bottom", "ttn", 4)),
    ("wide TTN chi=4: relu bottom only vs identity", ("wide-bottom", "ttn", 4),
     ("wide-identity", "ttn", 4)),
    ("wide TTN chi=4: relu top only vs identity", ("wide-top", "ttn", 4),
     ("wide-identity", "ttn", 4)),
    ("wide TTN chi=4: upper-level lr x0.3 vs one lr", ("wide-lr-upper0.3", "ttn", 4),
     ("wide", "ttn", 4)),
    ("wide ~1,000: aTTN chi=1 (16 sites) vs MPO chi=3", ("wide-n16", "attn", 1),
     ("wide", "mpo", 3)),
    ("wide ~1,000: MERA chi=1 (16 sites) vs MPO chi=3", ("wide-n16", "mera", 1),
     ("wide", "mpo", 3)),
    ("wide ~2,000: aTTN chi=3 (16 sites) vs MPO chi=4", ("wide-n16", "attn", 3),
     ("wide", "mpo", 4)),
    ("wide ~2,000: MERA chi=3 (16 sites) vs MPO chi=4", ("wide-n16", "mera", 3),
     ("wide", "mpo", 4)),
    # row-mean centring at calibration (problem 1's fix) against the old init and against MPO
    # (chi=1 and 2 are in wide-rowinit too, but the fix leaves their W as it was: a root of 1
    # or 4 numbers cannot remove the row means without cancelling W, and the guard keeps it)
    *[(f"wide TTN chi={k}: row-centred vs old init", ("wide-rowinit", "ttn", k),
       ("wide", "ttn", k)) for k in (4, 8, 12)],
    *[(f"wide ~{b}: row-centred TTN chi={k} vs MPO chi={m}", ("wide-rowinit", "ttn", k),
       ("wide", "mpo", m)) for b, k, m in (("1,300", 4, 3), ("5,000", 8, 6),
                                          ("15,000", 12, 12))],
    ("wide TTN chi=4: row-centred relu vs identity", ("wide-rowinit", "ttn", 4),
     ("wide-identity", "ttn", 4)),
    ("wide TTN chi=8: row-centred relu vs identity", ("wide-rowinit", "ttn", 8),
     ("wide-identity", "ttn", 8)),
    *[(f"wide {f} chi=2 (16 sites): row-centred vs old init", ("wide-n16-rowinit", f, 2),
       ("wide-n16", f, 2)) for f in ("attn", "mera")],
    *[(f"wide ~1,300: row-centred {f} chi=2 (16 sites) vs MPO chi=3", ("wide-n16-rowinit", f, 2),
       ("wide", "mpo", 3)) for f in ("attn", "mera")],
    *[(f"lenet5-conv {f} {k}: row-centred vs old init", (g + "-rowinit", f, k), (g, f, k))
      for g, f, k in (("lenet5-conv", "ttn", 1), ("lenet5-conv", "ttn", 2),
                      ("lenet5-conv", "ttn", 4), ("lenet5-conv", "ttn", 6),
                      ("lenet5-conv", "brickwall", 2), ("lenet5-conv", "brickwall", 3),
                      ("lenet5-conv-n16", "attn", 1), ("lenet5-conv-n16", "attn", 2),
                      ("lenet5-conv-n16", "attn", 3), ("lenet5-conv-n16", "mera", 1),
                      ("lenet5-conv-n16", "mera", 2), ("lenet5-conv-n16", "mera", 3))],
    *[(f"lenet5-conv ~{b}: row-centred {f} {k} vs MPO chi={m}", (g, f, k),
       ("lenet5-conv", "mpo", m))
      for b, g, f, k, m in (("180", "lenet5-conv-rowinit", "ttn", 1, 1),
                            ("400", "lenet5-conv-rowinit", "ttn", 2, 2),
                            ("900", "lenet5-conv-rowinit", "ttn", 4, 3),
                            ("2,000", "lenet5-conv-rowinit", "ttn", 6, 4),
                            ("1,300", "lenet5-conv-rowinit", "brickwall", 2, 4),
                            ("1,900", "lenet5-conv-rowinit", "brickwall", 3, 4),
                            ("500", "lenet5-conv-n16-rowinit", "attn", 1, 2),
                            ("900", "lenet5-conv-n16-rowinit", "attn", 2, 3),
                            ("1,900", "lenet5-conv-n16-rowinit", "attn", 3, 4),
                            ("500", "lenet5-conv-n16-rowinit", "mera", 1, 2),
                            ("900", "lenet5-conv-n16-rowinit", "mera", 2, 3),
                            ("2,000", "lenet5-conv-n16-rowinit", "mera", 3, 4))],
    ("fc2 TTN chi=4: row-centred vs old init", ("fc2-rowinit", "ttn", 4), ("fc2", "ttn", 4)),
    ("fc2 TTN 16 sites chi=3: row-centred vs old init", ("fc2-n16-rowinit", "ttn", 3),
     ("fc2-n16", "ttn", 3)),
    ("fc2 ~500: row-centred TTN chi=4 vs MPO chi=3", ("fc2-rowinit", "ttn", 4),
     ("fc2", "mpo", 3)),
]


def compare(cells) -> list[dict]:
    """Every comparison whose two cells exist: difference of means, its SE, the verdict."""
    index = {(c["group"], c["family"], c["knob"]): c for c in cells}
    out = []
    for label, ka, kb in COMPARISONS:
        a, b = index.get(ka), index.get(kb)
        if a is None or b is None:
            continue
        diff = a["mean"] - b["mean"]
        se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
        verdict = ("a > b" if diff > 2 * se else "a < b" if diff < -2 * se
                   else "within noise")
        notes = [f"{w}: {c['at_chance']} of {c['n']} seeds at chance"
                 for w, c in (("a", a), ("b", b)) if c["at_chance"]]
        if notes:
            verdict += " (" + "; ".join(notes) + ")"
        out.append({"label": label, "a": a, "b": b, "diff": diff, "se": se,
                    "verdict": verdict})
    return out


def _fmt(c) -> str:
    sd = "" if math.isnan(c["sd"]) else f" ± {100 * c['sd']:.2f}"
    return f"{100 * c['mean']:.2f}{sd}"


def _knob(fam) -> str:
    from adntn_lab.families import get_family

    return "-" if fam == "dense" else get_family(fam).knob_label


def write_report(rows) -> None:
    import csv
    import io

    with open(HERE / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    fields = ["group", "key", "family", "bond_dim", "seed", "compressed_params",
              "dense_layer_params", "compression", "test_acc", "best_test_acc", "train_loss",
              "epochs", "wall_time", "cfg_activation", "cfg_options", "cfg_lr", "init"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    (HERE / "results.csv").write_text(buf.getvalue())
    cells = summarise(rows)
    lines = ["# Paper-scale frontier and ablations — tables", "",
             "Generated by `run_paper_scale.py --stages report` from `results.jsonl`. Test "
             "accuracy after the last epoch (1,000 test images), mean ± sample sd over seeds; "
             "SE = sqrt(sd²/n + p(1-p)/1000). Parameters count the compressed layers' "
             "generators only.", ""]
    tune = HERE / "tune.jsonl"
    if tune.exists():
        lines += ["## Tuning (wide MLP, validation split: 800 of the 4,000 training images)",
                  "", "| family | knob | lr | validation acc % |", "|---|---:|---:|---:|"]
        for line in tune.read_text().splitlines():
            t = json.loads(line)
            lines.append(f"| {t['family']} | {t['bond_dim']} | {t['lr']:g} | "
                         f"{100 * t['val_acc']:.2f} |")
        try:
            lines += ["", f"Frozen lr: {frozen_lr():g}.", ""]
        except SystemExit:
            lines += ["", "Tuning incomplete.", ""]
    groups = sorted({c["group"] for c in cells})
    for g in groups:
        gc = [c for c in cells if c["group"] == g]
        lines += [f"## {g}", "",
                  "| family | knob | params | compression | activation | epochs | "
                  "init; optimiser | "
                  "test acc % | SE | n | at chance | s / run |",
                  "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"]
        for c in gc:
            comp = "-" if not c["compression"] else f"{c['compression']:,.0f}×"
            knob = "-" if c["family"] == "dense" else f"{_knob(c['family'])}={c['knob']}"
            act = c["activation"] or ("relu" if c["family"] in
                                      ("ttn", "attn", "mera", "brickwall") else "-")
            if isinstance(act, list):
                act = "per stage: " + "/".join(act)
            init = c["init"] + (f"; {c['variant']}" if c["variant"] else "")
            if c["family"] == "brickwall" and c["knob"] == 1:
                act = f"none ({act} named; M=1 has no inner stage)"
            lines.append(f"| {c['family']} | {knob} | {c['params']:,} | {comp} | {act} | "
                         f"{c['epochs']} | {init} | {_fmt(c)} | {100 * c['se']:.2f} | "
                         f"{c['n']} | {c['at_chance']} | {c['wall']:.0f} |")
        lines.append("")
    lenet = [c for c in cells if c["group"].startswith("lenet5") and c["layers"]]
    if lenet:
        names = ["conv1", "conv2", "fc1", "fc2"]
        lines += ["## LeNet-5: generator parameters per layer (dense weights: conv1 150, conv2 "
                  "2,400, fc1 48,000, fc2 10,080)", "",
                  "| group | family | knob | " + " | ".join(names) + " | total |",
                  "|---|---|---|" + "---:|" * (len(names) + 1)]
        for c in lenet:
            per = {n: (b, a) for n, b, a in c["layers"]}
            cols = [f"{per[n][1]:,} ({per[n][0] / per[n][1]:,.1f}×)" if n in per else "dense"
                    for n in names]
            lines.append(f"| {c['group']} | {c['family']} | {_knob(c['family'])}={c['knob']} | "
                         + " | ".join(cols) + f" | {c['params']:,} |")
        lines.append("")
    comps = compare(cells)
    if comps:
        lines += ["## Comparisons at equal parameters (significant: |Δ| > 2 SE of the difference)",
                  "", "| question (a vs b) | a: params, acc % | b: params, acc % | Δ (pts) | "
                  "2 SE | verdict |", "|---|---:|---:|---:|---:|---|"]
        for c in comps:
            lines.append(f"| {c['label']} | {c['a']['params']:,}, {_fmt(c['a'])} (n={c['a']['n']})"
                         f" | {c['b']['params']:,}, {_fmt(c['b'])} (n={c['b']['n']}) | "
                         f"{100 * c['diff']:+.2f} | {200 * c['se']:.2f} | {c['verdict']} |")
        lines.append("")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    plot(cells)


def plot(cells) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ttn": "C0", "attn": "C1", "mera": "C2", "brickwall": "C3", "mpo": "C4",
               "lowrank": "C5"}
    panels = [("wide MLP 784→4096→4096→10 (fc1 + fc2: 20.0 M weights)", ("wide", "wide-n16"),
               "wide-identity"),
              ("FC-2 784→256→10 (fc1: 200,704 weights)", ("fc2",), "fc2-identity"),
              ("LeNet-5, conv2 + fc1 + fc2 generated (60,480 weights)",
               ("lenet5-conv", "lenet5-conv-n16"), None)]
    fig, axes = plt.subplots(1, 3, figsize=(19, 5))
    for ax, (title, groups, linear) in zip(axes, panels, strict=True):
        gc = [c for c in cells if c["group"] in groups]
        for c in gc:
            if c["family"] == "dense":
                ax.axhline(100 * c["mean"], color="k", lw=1)
                ax.axhspan(100 * (c["mean"] - c["se"]), 100 * (c["mean"] + c["se"]),
                           color="k", alpha=0.1)
        for fam, col in colours.items():
            fc = sorted((c for c in gc if c["family"] == fam), key=lambda c: c["params"])
            if not fc:
                continue
            ax.errorbar([c["params"] for c in fc], [100 * c["mean"] for c in fc],
                        yerr=[100 * c["se"] for c in fc], color=col, marker="o", capsize=3,
                        ls="--" if fam in ("mpo", "lowrank") else "-", label=fam)
        fixed = [g + "-rowinit" for g in groups]
        for fam, col in colours.items():  # the same generators with row-centred W at init
            fc = sorted((c for c in cells if c["group"] in fixed and c["family"] == fam),
                        key=lambda c: c["params"])
            if fc:
                ax.errorbar([c["params"] for c in fc], [100 * c["mean"] for c in fc],
                            yerr=[100 * c["se"] for c in fc], color=col, marker="^",
                            capsize=3, ls="-.", label=f"{fam}, row-centred init")
        for fam, col in colours.items():  # the same generators without activations
            fc = sorted((c for c in cells if c["group"] == linear and c["family"] == fam
                         and not (fam == "brickwall" and c["knob"] == 1)),
                        key=lambda c: c["params"])
            if fc:
                ax.errorbar([c["params"] for c in fc], [100 * c["mean"] for c in fc],
                            yerr=[100 * c["se"] for c in fc], color=col, marker="s",
                            mfc="white", capsize=3, ls=":", label=f"{fam}, identity")
        ax.set_xscale("log")
        ax.set_xlabel("generator parameters (compressed layers)")
        ax.set_ylabel("test accuracy % (last epoch, error bar = SE)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if gc:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(HERE / "frontier.png", dpi=110)


STAGES = {"lenet5-conv": stage_lenet5_conv, "fc2-ablate2": stage_fc2_ablate2,
          "wide-ablate2": stage_wide_ablate2, "wide-rowinit": stage_wide_rowinit,
          "rowinit-more": stage_rowinit_more,
          "tune": stage_tune, "wide": stage_wide,
          "wide-big": stage_wide_big, "wide-brickwall2": stage_wide_brickwall2,
          "wide-brickwall2-identity": stage_wide_brickwall2_identity,
          "fc2-ablate": stage_fc2_ablate, "fc2-more": stage_fc2_more, "long": stage_long,
          "wide-ablate": stage_wide_ablate, "init": stage_init}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", default=["report"],
                   choices=[*STAGES, "report"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import adntn_lab

    print(f"adntn_lab from {Path(adntn_lab.__file__).parent}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    for st in args.stages:
        t0 = time.perf_counter()
        if st in STAGES:
            STAGES[st](args)
        write_report(collect())
        print(f"stage {st}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
