"""Cost reports: FLOPs, memory and every pairwise step, per stage and in total.

FLOPs count a multiply and an add as two operations, so the dense yardstick ``x @ W.T`` for a
batch ``B`` costs ``2 * B * O * I``. Memory counts every core, every tensor carried between
stages and every live intermediate, at the report's dtype.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field

from .planning import TRAFFIC, roofline_score

__all__ = ["CostReport", "StageCost", "StepCost", "cost_report", "SCHEDULES", "format_count"]

SCHEDULES = ("auto", "materialize", "fused")
#: ``auto`` takes the fused schedule when its estimated time is below this share of
#: materialize's (see :func:`cost_report`)
FUSED_MARGIN = 0.7
_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def format_count(n: float, unit: str = "") -> str:
    """``1234567 -> '1.23 M'`` style formatting."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {suffix}{unit}"
    return f"{n:.4g} {unit}".rstrip()


def _format_bytes(n: float) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.3g} {suffix}"
    return f"{int(n)} B"


@dataclass
class StepCost:
    """One pairwise contraction: inputs, output shape and FLOPs."""

    stage: int
    group: int
    step: int
    left: str
    right: str
    output_shape: tuple
    flops: int

    @property
    def size(self) -> int:
        return math.prod(self.output_shape)


@dataclass
class StageCost:
    """Totals of one stage."""

    stage: int
    activation: str
    groups: int
    flops: int
    peak_bytes: int
    largest_intermediate: int
    slices: int = 1


@dataclass
class CostReport:
    """What generating ``W`` (and applying it to a batch) costs.

    Attributes
    ----------
    family : str
    shape : (out_features, in_features)
    batch_size : int or None
    schedule : str
        The schedule the numbers describe (``auto`` resolved).
    stages : list of StageCost
    steps : list of StepCost
        Every pairwise contraction in execution order (the order of ``Program.run`` captures).
    total_flops, peak_bytes, largest_intermediate : int
    num_params : int
    compression_ratio : float
    dense_flops : int or None
        ``2 * B * O * I``, the dense layer's matmul for the same batch.
    alternatives : dict
        Total FLOPs of each schedule that was considered.
    estimated_time : float
        Run time of the forward pass estimated by the roofline model of
        :func:`adntn_lab.engine.planning.roofline_score`, in multiply-add units (comparable between
        schedules and generators on one machine, not seconds).
    estimates : dict
        ``estimated_time`` of each schedule that was considered.
    """

    family: str
    shape: tuple
    batch_size: int | None
    schedule: str
    dtype: str
    stages: list[StageCost]
    steps: list[StepCost]
    total_flops: int
    peak_bytes: int
    largest_intermediate: int
    num_params: int
    compression_ratio: float
    dense_flops: int | None
    memory_limit: int | None = None
    alternatives: dict = field(default_factory=dict)
    estimated_time: float = 0.0
    estimates: dict = field(default_factory=dict)

    @property
    def generation_flops(self) -> int:
        """FLOPs of the stages alone (no batch)."""
        return sum(s.flops for s in self.stages)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["generation_flops"] = self.generation_flops
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def _summary_lines(self) -> list[str]:
        o, i = self.shape
        head = f"{self.family} {o}×{i}"
        if self.batch_size:
            head += f", batch {self.batch_size}, schedule {self.schedule}"
            if len(self.alternatives) > 1:
                alt = ", ".join(
                    f"{k} {format_count(v, 'FLOP')}, roofline {format_count(self.estimates[k])}"
                    if k in self.estimates else f"{k} {format_count(v, 'FLOP')}"
                    for k, v in self.alternatives.items())
                head += (f" (considered: {alt}; fused is taken below {FUSED_MARGIN}× of "
                         "materialize's roofline)")
        lines = [head,
                 f"params {self.num_params:,}  compression {self.compression_ratio:,.1f}×  "
                 f"dtype {self.dtype}"]
        tot = (f"total {format_count(self.total_flops, 'FLOP')}  peak memory "
               f"{_format_bytes(self.peak_bytes)}  largest intermediate "
               f"{self.largest_intermediate:,} elements")
        if self.dense_flops:
            tot += (f"  | dense matmul {format_count(self.dense_flops, 'FLOP')} "
                    f"({self.total_flops / self.dense_flops:.3g}× of dense)")
        lines.append(tot)
        return lines

    def __str__(self) -> str:
        lines = self._summary_lines()
        lines.append("")
        lines.append(f"{'stage':>5}  {'activation':<11}{'groups':>6}  {'FLOPs':>11}  "
                     f"{'peak':>10}  {'largest':>12}  {'slices':>6}")
        for s in self.stages:
            lines.append(f"{s.stage:>5}  {s.activation:<11}{s.groups:>6}  "
                         f"{format_count(s.flops):>11}  {_format_bytes(s.peak_bytes):>10}  "
                         f"{s.largest_intermediate:>12,}  {s.slices:>6}")
        lines.append("")
        lines.append(f"{'stage':>5} {'group':>5} {'step':>4}  {'left':<10} {'right':<10} "
                     f"{'output shape':<28} {'FLOPs':>10}")
        shown = self.steps if len(self.steps) <= 60 else self.steps[:30] + self.steps[-30:]
        for k, st in enumerate(shown):
            if len(self.steps) > 60 and k == 30:
                lines.append(f"{'...':>5} ({len(self.steps) - 60} steps not shown)")
            lines.append(f"{st.stage:>5} {st.group:>5} {st.step:>4}  {st.left:<10} "
                         f"{st.right:<10} {str(st.output_shape):<28} "
                         f"{format_count(st.flops):>10}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "\n".join(self._summary_lines())

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{s.stage}</td><td>{esc(s.activation)}</td><td>{s.groups}</td>"
            f"<td>{format_count(s.flops)}</td><td>{_format_bytes(s.peak_bytes)}</td>"
            f"<td>{s.largest_intermediate:,}</td><td>{s.slices}</td></tr>" for s in self.stages)
        steps = "".join(
            f"<tr><td>{st.stage}</td><td>{st.group}</td><td>{st.step}</td>"
            f"<td>{esc(st.left)}</td><td>{esc(st.right)}</td><td>{st.output_shape}</td>"
            f"<td>{format_count(st.flops)}</td></tr>" for st in self.steps[:200])
        summary = "<br>".join(esc(x) for x in self._summary_lines())
        return (
            f"<div class='adntn-cost'><p>{summary}</p>"
            "<table><thead><tr><th>stage</th><th>activation</th><th>groups</th><th>FLOPs</th>"
            f"<th>peak</th><th>largest</th><th>slices</th></tr></thead><tbody>{rows}</tbody>"
            "</table><details><summary>pairwise steps</summary><table><thead><tr><th>stage"
            "</th><th>group</th><th>step</th><th>left</th><th>right</th><th>output shape</th>"
            f"<th>FLOPs</th></tr></thead><tbody>{steps}</tbody></table></details></div>"
        )

    def plot_steps(self, ax=None):
        """Bar chart of FLOPs per pairwise step, coloured by stage (log scale)."""
        import matplotlib.pyplot as plt

        from ..draw import stage_colors

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3))
        colors = stage_colors(max((s.stage for s in self.stages), default=0) + 1)
        ax.bar(range(len(self.steps)), [max(st.flops, 1) for st in self.steps],
               color=[colors[st.stage] for st in self.steps])
        ax.set_yscale("log")
        ax.set_xlabel("contraction step")
        ax.set_ylabel("FLOPs")
        ax.set_title(f"{self.family}: FLOPs per step ({self.schedule})")
        return ax.figure


def _group_costs(group, tree, size_dict, base_elems, itemsize):
    """Steps, FLOPs, peak elements and largest intermediate of one group."""
    steps, flops, peak, largest = [], 0, 0, 0
    nslices = getattr(tree, "nslices", 1) or 1
    labels = {tree.input_to_node(i): name for i, name in enumerate(group_operands(group))}
    alive = 0
    live: dict = {}
    for k, (node, left, right) in enumerate(tree.traverse()):
        size = tree.get_size(node)
        f = 2 * int(tree.get_flops(node)) * nslices
        shape = tuple(tree.size_dict[ix] for ix in tree.get_inds(node))
        steps.append(StepCost(group.stage, group.group, k, labels[left], labels[right],
                              shape, f))
        labels[node] = f"#{k}"
        flops += f
        alive += size
        live[node] = size
        peak = max(peak, base_elems + alive)
        largest = max(largest, size)
        for child in (left, right):
            alive -= live.pop(child, 0)
    out = math.prod(size_dict[ix] for ix in group_output(group))
    peak = max(peak, base_elems + 2 * out)  # the activation makes one more array
    largest = max(largest, out)
    return steps, flops, peak, largest, nslices


def group_operands(group):
    return getattr(group, "operands_for_cost", group.operands)


def group_output(group):
    return getattr(group, "output_for_cost", group.output)


class _FusedView:
    """The final group seen with the input batch attached (for cost accounting)."""

    def __init__(self, group, fused):
        self.stage, self.group, self.key = group.stage, group.group, group.key
        self.operands_for_cost = (*group.operands, "x")
        self.output_for_cost = fused.output
        self.operands = self.operands_for_cost
        self.output = fused.output
        self.inputs = (*fused.inputs, fused.x_inds)


def cost_report(gen, *, batch_size=None, schedule="auto", memory_limit=None,
                dtype="float32", optimize=None) -> CostReport:
    """Build the :class:`CostReport` of a generator (see :meth:`Generator.cost`)."""
    if optimize is not None:
        gen = gen.with_optimizer(optimize)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")
    if dtype not in _ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {tuple(_ITEMSIZE)}")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    itemsize = _ITEMSIZE[dtype]
    prog = gen.program
    fused_ok = prog.activations[-1].is_identity
    if schedule == "fused" and not fused_ok:
        raise ValueError("the fused schedule needs a linear last stage; this generator's last "
                         f"activation is {prog.activations[-1].name!r}")
    if schedule == "fused" and batch_size is None:
        raise ValueError("the fused schedule applies W to a batch; pass batch_size")
    candidates = ["materialize"]
    if batch_size is not None and fused_ok and schedule in ("auto", "fused"):
        candidates = ["fused"] if schedule == "fused" else ["materialize", "fused"]
    reports = {c: _report(gen, batch_size, c, memory_limit, itemsize, dtype) for c in candidates}
    # fused must win clearly: materializing W ends in one large matrix product that runs at
    # the machine's best rate, while the fused pairwise products are smaller and slower per
    # multiply-add than the roofline model credits (benchmarks/bench_schedule_margin.py:
    # training steps of every family at 784-4096 features and batches 16-256; fused was
    # faster exactly when its estimate was at most 0.64 of materialize's, slower from 0.74)
    best = reports.get("materialize") or reports["fused"]
    if ("fused" in reports and "materialize" in reports
            and reports["fused"].estimated_time < FUSED_MARGIN * best.estimated_time):
        best = reports["fused"]
    elif "fused" in reports and "materialize" not in reports:
        best = reports["fused"]
    best.alternatives = {k: r.total_flops for k, r in reports.items()}
    best.estimates = {k: r.estimated_time for k, r in reports.items()}
    return best


def _report(gen, batch_size, schedule, memory_limit, itemsize, dtype) -> CostReport:
    prog = gen.program
    trees = prog.trees(memory_limit, itemsize)
    size_dict = prog.size_dict
    params_elems = sum(c.size for c in gen.cores.values())
    front: dict[str, int] = {}
    steps: list[StepCost] = []
    per_stage: dict[int, list] = {}
    o, i = gen.shape
    overall_peak, overall_largest = params_elems, 0
    estimate = 0.0
    for idx, (group, tree) in enumerate(zip(prog.groups, trees)):
        sd = size_dict
        is_last = idx == len(prog.groups) - 1
        if is_last and schedule == "fused":
            fused = prog.fused_group(batch_size)
            tree, sd = fused.tree, fused.size_dict
            group = _FusedView(group, fused)
        consumed = [k for k in group.operands if k in front]
        base = params_elems + sum(front.values())
        if is_last and schedule == "fused":
            base += batch_size * gen.tensorization.padded_in
        g_steps, flops, peak, largest, nsl = _group_costs(group, tree, sd, base, itemsize)
        if g_steps:
            estimate += roofline_score(tree)
        steps += g_steps
        for k in consumed:
            front.pop(k)
        front[group.key] = math.prod(sd[ix] for ix in group.output)
        per_stage.setdefault(group.stage, []).append((flops, peak, largest, nsl))
        overall_peak = max(overall_peak, peak)
        overall_largest = max(overall_largest, largest)
    stages = []
    for s in range(gen.num_stages):
        rows = per_stage.get(s, [])
        stages.append(StageCost(
            stage=s,
            activation=prog.activations[s].name,
            groups=len(rows),
            flops=sum(r[0] for r in rows),
            peak_bytes=max((r[1] for r in rows), default=params_elems) * itemsize,
            largest_intermediate=max((r[2] for r in rows), default=0),
            slices=max((r[3] for r in rows), default=1),
        ))
    total = sum(s.flops for s in stages)
    dense = 2 * batch_size * o * i if batch_size else None
    if batch_size and schedule == "materialize":
        total += dense
        estimate += batch_size * o * i + TRAFFIC * (o * i + batch_size * (o + i))
        overall_peak = max(overall_peak, params_elems + o * i + batch_size * (o + i))
    return CostReport(
        family=gen.family,
        shape=(o, i),
        batch_size=batch_size,
        schedule=schedule,
        dtype=dtype,
        stages=stages,
        steps=steps,
        total_flops=int(total),
        peak_bytes=int(overall_peak * itemsize),
        largest_intermediate=int(overall_largest),
        num_params=gen.num_params,
        compression_ratio=gen.compression_ratio,
        dense_flops=dense,
        memory_limit=memory_limit,
        estimated_time=float(estimate),
    )
