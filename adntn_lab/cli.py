"""The ``adntn-lab`` command line: ``train``, ``costs``, ``sweep`` and ``demo``.

Examples
--------
::

    adntn-lab demo                                   # offline tour, about a minute on a laptop
    adntn-lab costs --family mera --in-features 784 --out-features 256 --bond-dim 4 --batch-size 64
    adntn-lab train --model fc2 --dataset mnist-5k --family ttn --bond-dim 4 --epochs 10 \\
        --out runs/fc2-ttn
    adntn-lab train --out runs/fc2-ttn --resume --epochs 20     # continue the same run
    adntn-lab train --out runs/fc2-ttn --resume --lr 5e-4       # ... with a lower learning rate
    adntn-lab train --family ttn --epochs 10 --out runs/fc2-ttn-ddp --nproc 2  # data-parallel
    adntn-lab sweep --families ttn mpo lowrank dense --bond-dims 2 4 8 --seeds 0 1 2 \\
        --out runs/frontier --jobs 2                        # two worker processes

Errors are one line on stderr with exit status 2 (130 after Ctrl-C and 143 after SIGTERM, both
of which first write a checkpoint; 1 when a rank of --nproc fails); set ADNTN_LAB_TRACEBACK=1 to
see the full traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .families import FAMILIES, all_families

__all__ = ["build_parser", "main"]

FAMILY_CHOICES = (*FAMILIES, "dense")
TRAIN_DEFAULTS = {
    "model": "fc2",
    "dataset": "mnist-5k",
    "family": "ttn",
    "bond_dim": 4,
    "strategy": "e2e",
    "epochs": 10,
    "lr": 1e-3,
    "batch_size": 64,
    "seed": 0,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "dense_epochs": 2,
    "fit_steps": 500,
    "data_seed": 0,
    "device": "cpu",
}
# every family option but the common bond dimension, plus the number of sites
_OPTION_FLAGS = (*dict.fromkeys(o.name for f in all_families() for o in f.options
                                if o.name != "bond_dim"), "n_sites")


class CLIError(Exception):
    """A usage problem reported as one line on stderr with exit status 2."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _add_family_options(p: argparse.ArgumentParser, *, with_family: bool) -> None:
    g = p.add_argument_group("generator")
    if with_family:
        g.add_argument("--family", choices=FAMILY_CHOICES,
                       help="generator family of the compressed layers; 'dense' trains the "
                       "uncompressed model (default: ttn)")
    g.add_argument("--bond-dim", type=_positive_int,
                   help="bond dimension chi (default: 4); the rank for lowrank, the depth for "
                        "brickwall unless --depth is given")
    g.add_argument("--activation", help="activation between stages: identity, relu, leaky_relu, "
                   "tanh, gelu, silu (default: the family's, relu where it applies)")
    for name in _OPTION_FLAGS:
        _add_option_flag(g, name)


def _add_option_flag(g, name: str) -> None:
    """``--NAME`` for a family option, typed and documented from the family registry."""
    if name == "n_sites":
        users = [f.name for f in all_families() if f.takes_modes]
        g.add_argument("--n-sites", type=_positive_int,
                       help=f"{'/'.join(users)}: number of sites (physical legs)")
        return
    owners = [f for f in all_families() if name in f.option_names]
    opt = owners[0].option(name)
    where = "/".join(f.name for f in owners)
    flag = "--" + name.replace("_", "-")
    if opt.kind == "bool":
        g.add_argument(flag, action="store_true", default=None, help=f"{where}: {opt.help}")
    elif opt.kind == "choice":
        g.add_argument(flag, choices=opt.choices, help=f"{where}: {opt.help}")
    else:
        default = f" (default: {opt.default})" if opt.default is not None else ""
        g.add_argument(flag, type=_positive_int, help=f"{where}: {opt.help}{default}")


def _add_training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", choices=("fc2", "lenet5", "vgg"), help="model (default: fc2)")
    g.add_argument("--dataset", help="digits or mnist-5k (offline), mnist, fashion-mnist, "
                   "cifar10 (torchvision, downloaded) (default: mnist-5k)")
    g.add_argument("--hidden", type=_positive_int, help="fc2 hidden width (default: 256)")
    g.add_argument("--compress", nargs="+", metavar="PATTERN",
                   help="layer-name patterns to compress (default: fc1 for fc2, fc1 fc2 for "
                   "lenet5 and vgg)")
    t = p.add_argument_group("training")
    t.add_argument("--strategy", choices=("e2e", "fit-finetune", "dmrg"),
                   help="e2e: end-to-end autodiff (default); fit-finetune: train dense, fit the "
                   "generators to it, then end to end; dmrg: local sweeps over MPO cores")
    t.add_argument("--epochs", type=_nonneg_int, help="epochs (default: 10)")
    t.add_argument("--lr", type=float, help="learning rate (default: 1e-3)")
    t.add_argument("--batch-size", type=_positive_int, help="batch size (default: 64)")
    t.add_argument("--seed", type=int, help="seed of initialisation and data order (default: 0)")
    t.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="default: adam")
    t.add_argument("--weight-decay", type=float, help="default: 0")
    t.add_argument("--lr-schedule", choices=("constant", "cosine"), help="default: constant")
    t.add_argument("--dense-epochs", type=_nonneg_int,
                   help="fit-finetune: epochs of dense training first (default: 2)")
    t.add_argument("--fit-steps", type=_nonneg_int,
                   help="fit-finetune: optimisation steps fitting each generator (default: 500)")
    t.add_argument("--data-seed", type=int, help="seed of the train/test split (default: 0)")
    t.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    t.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (default: torch's choice)")
    t.add_argument("--tune-allocator", action="store_true",
                   help="keep large freed tensors in the heap (glibc): 2-3x faster brick-wall "
                        "steps at a higher peak memory (see the README's Performance section)")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``adntn-lab`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="adntn-lab",
        description="Nonlinear tensor-network generators: cost reports, training runs, sweeps "
        "and an offline demo.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'adntn-lab COMMAND --help' for the options of a command. Errors are "
        "one line (exit status 2); ADNTN_LAB_TRACEBACK=1 shows the full traceback.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model with compressed layers; writes a run folder",
                       description="Train one model. The run folder gets config.json, "
                       "metrics.json, checkpoint.safetensors and curves.png.")
    _add_training_options(p)
    _add_family_options(p, with_family=True)
    p.add_argument("--out", help="run folder (default: runs/<model>-<dataset>-<family>-...)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in --out (or from CHECKPOINT) exactly where it "
                   "stopped; settings are read from the run, --epochs, --lr and --device may "
                   "change")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="also write the checkpoint every N steps (default: every epoch end)")
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="train data-parallel in N processes on this machine (torch.distributed: "
                   "gloo on CPU, nccl on CUDA; --batch-size stays the global batch; each rank "
                   "gets 1 torch thread unless --threads or OMP_NUM_THREADS says otherwise)")

    p = sub.add_parser("costs", help="print the cost report of a generator",
                       description="FLOPs, memory and contraction steps of generating a "
                       "weight (and applying it to a batch).")
    p.add_argument("--family", required=True, choices=FAMILY_CHOICES[:-1])
    p.add_argument("--in-features", type=_positive_int, default=784)
    p.add_argument("--out-features", type=_positive_int, default=256)
    _add_family_options(p, with_family=False)
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="include applying W to a batch of this size (default: generation only)")
    p.add_argument("--schedule", choices=("auto", "materialize", "fused"), default="auto")
    p.add_argument("--memory-limit", type=_positive_int, default=None,
                   help="bytes; stages above it are sliced")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("sweep", help="train a grid of families x bond dims x seeds (resumable)",
                       description="One run folder per point; results appended to "
                       "results.jsonl and results.csv in --out. Run again to continue: finished "
                       "points are skipped.")
    p.add_argument("--families", nargs="+", required=True, choices=FAMILY_CHOICES,
                   metavar="FAMILY", help=f"from {', '.join(FAMILY_CHOICES)}")
    p.add_argument("--bond-dims", nargs="+", type=_positive_int, required=True, metavar="CHI")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    p.add_argument("--out", required=True, help="sweep folder")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="train N points at a time in a local process pool, each with one "
                   "torch thread unless --threads is given (default: 1, in this process)")
    _add_training_options(p)
    g = p.add_argument_group("generator")
    g.add_argument("--activation")
    g.add_argument("--depth", type=_positive_int)
    g.add_argument("--pattern", choices=("staircase", "brickwall"))
    g.add_argument("--n-cores", type=_positive_int)
    g.add_argument("--n-sites", type=_positive_int)
    g.add_argument("--lateral", action="store_true", default=None)

    p = sub.add_parser("demo", help="offline tour: costs of every family, a compressed FC-2 "
                       "against the dense one on MNIST-5k, a PNG",
                       description="Runs offline on a laptop CPU in about a minute.")
    p.add_argument("--out", default=None,
                   help="PNG to write (default: demo_output/demo.png)")
    p.add_argument("--family", choices=FAMILY_CHOICES[:-1], default="ttn",
                   help="family of the trained compressed layer (default: ttn)")
    p.add_argument("--bond-dim", type=_positive_int, default=None)
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default: 1, fastest for these small layers)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    return parser


# ----------------------------------------------------------------------------- train


def _options_from(args) -> dict:
    opts = {}
    for name in _OPTION_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            opts[name] = v
    return opts


def _given(args) -> dict:
    """Training settings given on the command line (None = not given)."""
    keys = (*TRAIN_DEFAULTS, "hidden", "compress", "activation")
    d = {k: getattr(args, k, None) for k in keys}
    d = {k: v for k, v in d.items() if v is not None}
    opts = _options_from(args)
    if opts:
        d["options"] = opts
    return d


def _default_out(cfg) -> Path:
    kind = "dense" if cfg.family is None else f"{cfg.family}-chi{cfg.bond_dim}"
    return Path("runs") / f"{cfg.model}-{cfg.dataset}-{kind}-seed{cfg.seed}"


def _launch_ranks(args) -> int:
    """Start ``args.nproc`` ranks that each run this same command without ``--nproc``."""
    from .train.distributed import launch

    argv = list(args.argv)
    for i, a in enumerate(argv):
        if a == "--nproc":
            del argv[i:i + 2]
            break
        if a.startswith("--nproc="):
            del argv[i]
            break
    launch(argv, args.nproc, threads=args.threads)
    return 0


def _cmd_train(args) -> int:
    from .train.checkpoint import load_checkpoint
    from .train.distributed import init_distributed, read_env, shutdown_distributed
    from .train.runs import RunConfig, read_run_config, run_training

    env = read_env()
    if args.nproc is not None and args.nproc > 1 and env is not None:
        raise CLIError("--nproc starts its own ranks; under torchrun leave --nproc out")
    given = _given(args)
    resume = args.resume
    saved = None
    if resume:
        source = Path(resume) if not isinstance(resume, bool) else (
            Path(args.out) / "checkpoint.safetensors" if args.out else None)
        if source is None:
            raise CLIError("--resume needs --out RUN_FOLDER (or a checkpoint path)")
        if source.exists():
            saved = load_checkpoint(source).config
        elif not isinstance(resume, bool):
            raise CLIError(f"no checkpoint at {source}")
        else:  # stopped before its first checkpoint: the run is defined by its config.json
            saved = read_run_config(args.out)
    if saved is not None:
        settings = dict(saved)
        # explicitly given settings must agree with the checkpoint (checked by run_training)
        settings.update(given)
    else:
        settings = {**TRAIN_DEFAULTS, **given}
    cfg = RunConfig.from_dict(settings)
    out = Path(args.out) if args.out else _default_out(cfg)
    if not isinstance(resume, bool) and args.out is None:
        out = Path(resume).parent
    if args.nproc is not None and args.nproc > 1:
        # settings are checked here once, not by every rank
        from .train.config import check_device

        device = check_device(cfg.device)
        if device.type not in ("cpu", "cuda") or device.index is not None:
            raise CLIError(f"--nproc trains on device 'cpu' (gloo) or 'cuda' (nccl; rank r "
                           f"uses GPU r), not {cfg.device!r}")
        if cfg.strategy == "dmrg":
            raise CLIError("strategy 'dmrg' runs local sweeps in one process; leave --nproc out")
        if not resume and (out / "checkpoint.safetensors").exists():
            raise CLIError(f"{out} already holds a run (checkpoint.safetensors); pass --resume "
                           "to continue it, or choose another output folder")
        return _launch_ranks(args)
    if env is None or env.world_size == 1:
        run_training(cfg, out, resume=resume, progress=not args.no_progress,
                     checkpoint_every=args.checkpoint_every)
    else:
        init_distributed(cfg.device)
        try:
            run_training(cfg, out, resume=resume, progress=not args.no_progress,
                         checkpoint_every=args.checkpoint_every, distributed=True)
        except BaseException:
            shutdown_distributed(wait=False)  # the peers stop on their own errors or timeout
            raise
        shutdown_distributed()
        if env.rank != 0:
            return 0
    print(f"run folder: {out}")
    return 0


# ----------------------------------------------------------------------------- costs


def _cmd_costs(args) -> int:
    import adntn_lab as al

    opts = _options_from(args)
    kwargs = dict(opts)
    if args.activation is not None:
        kwargs["activation"] = args.activation
    if args.bond_dim is not None:  # the budget value, as in train and sweep
        from .train.config import budget_build_options

        kwargs = budget_build_options(args.family, args.bond_dim, options=kwargs)
    # a cost report needs shapes, not values: the cores are drawn but never calibrated, so W
    # is not formed and only the cores themselves must fit in memory
    from . import resources

    shape_opts = {k: v for k, v in kwargs.items() if k != "activation"}
    est = resources.estimate(args.family, args.in_features, args.out_features, **shape_opts)
    cores = dataclasses.replace(est, largest_bytes=0, peak_bytes=est.params * 12)
    resources.check(cores, what=f"the cores of this {args.family} generator")
    gen = al.build(args.family, args.in_features, args.out_features, calibrate=False,
                   memory_budget="none", **kwargs)
    report = gen.cost(batch_size=args.batch_size, schedule=args.schedule,
                      memory_limit=args.memory_limit)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report)
    return 0


# ----------------------------------------------------------------------------- sweep


def _cmd_sweep(args) -> int:
    from .train.runs import RunConfig
    from .train.sweep import run_sweep

    given = _given(args)
    given.pop("family", None)
    given.pop("bond_dim", None)
    given.pop("seed", None)
    base = RunConfig.from_dict({**TRAIN_DEFAULTS, "family": None, **given})
    if args.jobs > 1:
        from .train.sweep import local_executor

        with local_executor(args.jobs, threads=args.threads) as pool:
            rows = run_sweep(base, args.out, families=args.families, bond_dims=args.bond_dims,
                             seeds=args.seeds, executor=pool, progress=False)
    else:
        rows = run_sweep(base, args.out, families=args.families, bond_dims=args.bond_dims,
                         seeds=args.seeds, progress=not args.no_progress)
    _print_rows(rows)
    print(f"results: {Path(args.out) / 'results.csv'}")
    return 0


def _print_rows(rows) -> None:
    if not rows:
        return
    header = f"{'point':<24} {'params':>10} {'compression':>12} {'test acc':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        comp = f"{r['compression']:.1f}x" if r.get("compression") else "-"
        acc = f"{100 * r['test_acc']:.2f}%" if r.get("test_acc") is not None else "-"
        print(f"{r['key']:<24} {r['params']:>10,} {comp:>12} {acc:>9}")


# ----------------------------------------------------------------------------- main


def _cmd_demo(args) -> int:
    from .demo import run_demo

    quick = args.quick or os.environ.get("ADNTN_LAB_QUICK", "").strip() not in ("", "0")
    run_demo(out=args.out, family=args.family, bond_dim=args.bond_dim, epochs=args.epochs,
             seed=args.seed, quick=quick, progress=not args.no_progress, threads=args.threads)
    return 0


_COMMANDS = {"train": _cmd_train, "costs": _cmd_costs, "sweep": _cmd_sweep, "demo": _cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``adntn-lab``; returns the exit status."""
    from .data import DatasetUnavailableError
    from .train.distributed import LaunchError
    from .train.strategies import StrategyUnavailableError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return 2
    threads = getattr(args, "threads", None)
    if threads is not None and args.command != "demo":
        import torch

        torch.set_num_threads(threads)
    if getattr(args, "tune_allocator", False):
        from .engine.allocator import tune_allocator

        tune_allocator()
    if os.environ.get("ADNTN_LAB_TRACEBACK", "").strip() not in ("", "0"):
        return _COMMANDS[args.command](args)
    try:
        return _COMMANDS[args.command](args)
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError,
            DatasetUnavailableError, StrategyUnavailableError) as exc:
        print(f"adntn-lab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"adntn-lab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        detail = _one_line(exc) if str(exc) else "interrupted"
        if args.command == "sweep":  # a point's checkpoint is kept; the sweep resumes it
            detail = (detail.split("; continue with")[0] + "; run the same sweep command "
                      "again to continue")
        print(f"adntn-lab {args.command}: {detail}", file=sys.stderr)
        # the shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename is not None else "")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
