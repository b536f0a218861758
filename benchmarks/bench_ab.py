"""Engine speed of two revisions side by side: did a change make anything slower?

Checks out the revision ``--base`` into a temporary git worktree, then runs the same timing
child against it and against the working tree, alternating ``--rounds`` times, and reports per
case the ratio of the best times (working tree / base; below 1 is faster). One torch thread,
the tuned allocator on both sides (``--allocator system`` to compare the default).

    python benchmarks/bench_ab.py --base a4038db
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, time
import torch
import adntn_lab as al
if {tune} and hasattr(al, "tune_allocator") and not al.allocator_status()["tuned"]:
    al.tune_allocator()
from adntn_lab.nn import ADNTNLinear
torch.set_num_threads(1)
torch.manual_seed(0)

def best(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)

out = {{}}
for name, fam, n, kw in [("ttn-1024", "ttn", 1024, dict(bond_dim=8)),
                         ("mera-1024", "mera", 1024, dict(bond_dim=4)),
                         ("attn-1024", "attn", 1024, dict(bond_dim=4)),
                         ("brickwall-Q20", "brickwall", 1024, dict(depth=3)),
                         ("mpo-1024", "mpo", 1024, dict(bond_dim=8))]:
    gen = al.build(fam, n, n, **kw)
    arrays = {{k: torch.tensor(v, dtype=torch.float32, requires_grad=not gen.cores[k].constant)
              for k, v in gen.params.items()}}
    def step():
        gen.program.run(arrays).sum().backward()
    out["generate+backward " + name] = best(step)
for name, fam, n, b, kw in [("ttn-1024-b256", "ttn", 1024, 256, dict(bond_dim=8)),
                            ("mera-1024-b256", "mera", 1024, 256, dict(bond_dim=4)),
                            ("ttn-4096-b256", "ttn", 4096, 256, dict(bond_dim=8))]:
    layer = ADNTNLinear(n, n, topology=fam, **kw)
    x = torch.randn(b, n)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)
    def step():
        opt.zero_grad(); layer(x).square().mean().backward(); opt.step()
    out["training step " + name] = best(step)
out["package"] = al.__file__
print(json.dumps(out))
'''


def _time(tree: Path, tune: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # run in the tree: ``python -c`` puts the working directory first on sys.path, which
    # would otherwise import this checkout's package for both sides
    out = subprocess.run([sys.executable, "-c", CHILD.format(tune=tune)], env=env, check=True,
                         capture_output=True, text=True, cwd=tree)
    times = json.loads(out.stdout.strip().splitlines()[-1])
    package = Path(times.pop("package")).resolve()
    if not package.is_relative_to(tree.resolve()):
        raise RuntimeError(f"the timing child imported {package}, not the package in {tree}")
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--allocator", choices=["tuned", "system"], default="tuned")
    args = p.parse_args(argv)
    tune = args.allocator == "tuned"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
        try:
            runs = {"base": [], "new": []}
            for _ in range(args.rounds):
                runs["base"].append(_time(base, tune))
                runs["new"].append(_time(ROOT, tune))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base)], check=False, capture_output=True)
    rows = []
    for case in runs["base"][0]:
        b = min(r[case] for r in runs["base"])
        n = min(r[case] for r in runs["new"])
        rows.append({"case": case, "base_s": b, "new_s": n, "new_over_base": n / b})
        print(f"{case:<32} base {b * 1e3:8.2f} ms  new {n * 1e3:8.2f} ms  new/base {n / b:5.2f}")
    path = write("ab", {"base": args.base, "rounds": args.rounds,
                        "allocator": args.allocator, "load": os.getloadavg(), "rows": rows})
    print(f"\nmachine: {json.dumps(machine())}\nwritten to {path}")


if __name__ == "__main__":
    main()
