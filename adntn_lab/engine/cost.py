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
from .walk import Front, StepRecord, pairwise_steps, walk

__all__ = [
    "CostReport",
    "SCHEDULES",
    "StageCost",
    "choose_schedule",
    "cost_report",
    "estimate_schedules",
    "format_count",
]

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
    steps : list of StepRecord
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
    steps: list[StepRecord]
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
        for step in d["steps"]:
            del step["array"]  # a report's steps are planned, never captured
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


def _check(program, batch_size, schedule, dtype) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")
    if dtype not in _ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {tuple(_ITEMSIZE)}")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    last = program.activations[-1]
    if schedule == "fused" and not last.is_identity:
        raise ValueError("the fused schedule needs a linear last stage; this generator's last "
                         f"activation is {last.name!r}")
    if schedule == "fused" and batch_size is None:
        raise ValueError("the fused schedule applies W to a batch; pass batch_size")


def _candidates(program, batch_size, schedule) -> list[str]:
    if (batch_size is not None and program.activations[-1].is_identity
            and schedule in ("auto", "fused")):
        return ["fused"] if schedule == "fused" else ["materialize", "fused"]
    return ["materialize"]


def choose_schedule(estimates: dict) -> str:
    """The schedule ``auto`` takes given each candidate's estimated time.

    Fused must win clearly: materializing W ends in one large matrix product that runs at the
    machine's best rate, while the fused pairwise products are smaller and slower per
    multiply-add than the roofline model credits (benchmarks/bench_schedule_margin.py:
    training steps of every family at 784-4096 features and batches 16-256; fused was faster
    exactly when its estimate was at most 0.64 of materialize's, slower from 0.74).
    """
    if "materialize" not in estimates:
        return "fused"
    if "fused" in estimates and estimates["fused"] < FUSED_MARGIN * estimates["materialize"]:
        return "fused"
    return "materialize"


def estimate_schedules(program, batch_size: int | None, *, schedule: str = "auto",
                       memory_limit=None, dtype: str = "float32") -> dict[str, float]:
    """Estimated time of each candidate schedule (roofline model), without a full report.

    This is what a layer needs to choose a schedule for a batch size: the same numbers as
    ``cost_report(...).estimates``, from the trees alone.

    Returns
    -------
    dict of str -> float
        ``{"materialize": t}`` or ``{"materialize": t, "fused": t}`` (``{"fused": t}`` for
        ``schedule="fused"``), in the multiply-add units of
        :func:`adntn_lab.engine.planning.roofline_score`.
    """
    _check(program, batch_size, schedule, dtype)
    trees = program.trees(memory_limit, _ITEMSIZE[dtype])
    head = sum(roofline_score(t) for t in trees[:-1])  # 0 for a group without steps
    out = {}
    for name in _candidates(program, batch_size, schedule):
        last = program.fused_group(batch_size).tree if name == "fused" else trees[-1]
        out[name] = head + roofline_score(last)
        if name == "materialize" and batch_size:
            out[name] += _dense_estimate(program, batch_size)
    return out


def _dense_estimate(program, batch: int) -> float:
    """Roofline time of ``x @ W.T`` after materializing ``W``."""
    o, i = program.tz.out_features, program.tz.in_features
    return batch * o * i + TRAFFIC * (o * i + batch * (o + i))


def _group_costs(group, tree, out_elems, base_elems, operands=None):
    """Steps, FLOPs, peak elements and largest intermediate of one group."""
    steps, flops, peak, largest = [], 0, 0, 0
    alive = 0
    live: dict = {}
    for record, node, left, right in pairwise_steps(group, tree, operands):
        size = tree.get_size(node)
        steps.append(record)
        flops += record.flops
        alive += size
        live[node] = size
        peak = max(peak, base_elems + alive)
        largest = max(largest, size)
        for child in (left, right):
            alive -= live.pop(child, 0)
    peak = max(peak, base_elems + 2 * out_elems)  # the activation makes one more array
    largest = max(largest, out_elems)
    return steps, flops, peak, largest, getattr(tree, "nslices", 1) or 1


def cost_report(program, *, batch_size=None, schedule="auto", memory_limit=None,
                dtype="float32", family: str = "custom") -> CostReport:
    """The :class:`CostReport` of a compiled program, from shapes alone.

    Parameters
    ----------
    program : Program
        Plan, tensorization, activations and size dict are all it reads (no core values).
    batch_size : int, optional
    schedule : {"auto", "materialize", "fused"}
    memory_limit : int, optional
        Bytes; groups over it are costed sliced (or refused with ``MemoryLimitError``).
    dtype : str
        Element type the bytes are counted in.
    family : str
        Label of the report.

    Returns
    -------
    CostReport
        For ``auto``, the schedule :func:`choose_schedule` takes, with every candidate's
        FLOPs in ``alternatives`` and estimated time in ``estimates``.
    """
    _check(program, batch_size, schedule, dtype)
    reports = {c: _report(program, batch_size, c, memory_limit, dtype, family)
               for c in _candidates(program, batch_size, schedule)}
    best = reports[choose_schedule({k: r.estimated_time for k, r in reports.items()})]
    best.alternatives = {k: r.total_flops for k, r in reports.items()}
    best.estimates = {k: r.estimated_time for k, r in reports.items()}
    return best


def _report(program, batch_size, schedule, memory_limit, dtype, family) -> CostReport:
    itemsize = _ITEMSIZE[dtype]
    trees = program.trees(memory_limit, itemsize)
    core_sizes = program.core_sizes()
    params_elems = sum(core_sizes.values())
    tz = program.tz
    o, i = tz.out_features, tz.in_features
    last = len(program.groups) - 1
    steps: list[StepRecord] = []
    per_stage: dict[int, list] = {}
    peaks = [params_elems]
    largests = [0]
    front = Front(core_sizes)  # front values: elements of each carried tensor

    def visit(index, group, operands):
        tree, sizes, output, labels = trees[index], program.size_dict, group.output, None
        carried = sum(n for n, owned in zip(operands, front.owned(group)) if owned)
        base = params_elems + sum(front.carried.values()) + carried
        if index == last and schedule == "fused":
            fused = program.fused_group(batch_size)
            tree, sizes, output = fused.tree, fused.size_dict, fused.output
            labels = (*group.operands, "x")
            base += batch_size * tz.padded_in
        out_elems = math.prod(sizes[ix] for ix in output)
        g_steps, flops, peak, largest, nsl = _group_costs(group, tree, out_elems, base, labels)
        steps.extend(g_steps)
        per_stage.setdefault(group.stage, []).append((flops, peak, largest, nsl))
        peaks.append(peak)
        largests.append(largest)
        return out_elems

    walk(program.groups, front, visit)
    stages = []
    for s in range(program.plan.num_stages):
        rows = per_stage.get(s, [])
        stages.append(StageCost(
            stage=s,
            activation=program.activations[s].name,
            groups=len(rows),
            flops=sum(r[0] for r in rows),
            peak_bytes=max((r[1] for r in rows), default=params_elems) * itemsize,
            largest_intermediate=max((r[2] for r in rows), default=0),
            slices=max((r[3] for r in rows), default=1),
        ))
    total = sum(s.flops for s in stages)
    overall_peak = max(peaks)
    estimate = sum(roofline_score(t) for t in trees[:-1])  # 0 for a group without steps
    estimate += roofline_score(program.fused_group(batch_size).tree if schedule == "fused"
                               else trees[-1])
    dense = 2 * batch_size * o * i if batch_size else None
    if batch_size and schedule == "materialize":
        total += dense
        estimate += _dense_estimate(program, batch_size)
        overall_peak = max(overall_peak, params_elems + o * i + batch_size * (o + i))
    num_params = program.num_params()
    return CostReport(
        family=family,
        shape=(o, i),
        batch_size=batch_size,
        schedule=schedule,
        dtype=dtype,
        stages=stages,
        steps=steps,
        total_flops=int(total),
        peak_bytes=int(overall_peak * itemsize),
        largest_intermediate=int(max(largests)),
        num_params=num_params,
        compression_ratio=o * i / num_params,
        dense_flops=dense,
        memory_limit=memory_limit,
        estimated_time=float(estimate),
    )
