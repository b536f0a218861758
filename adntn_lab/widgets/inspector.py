"""``ContractionInspector``: step through a generator's contraction, stage by stage.

For the selected stage group the widget shows the contraction tree and the table of pairwise
steps from :meth:`Generator.cost`; a slider walks through the steps, highlighting the cores
merged at each step on the drawing and describing the intermediate that
``Program.run(capture=True)`` produced there (shape, size, norm, histogram and heatmap). A
comparison table sets the schedules (materialize, fused, sliced under a memory limit) and the
contraction optimisers side by side, with measured wall time on the chosen backend beside the
predicted FLOPs.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import traitlets

from ..engine.backends import available_backends, to_backend
from ..engine.walk import Front, pairwise_steps, walk
from ..generator import Generator
from ._common import (
    STATIC,
    ActionWidget,
    array_to_png,
    figure_to_data_url,
    format_bytes,
    format_count,
    json_safe,
    new_figure,
)

__all__ = ["ContractionInspector", "merged_cores", "compare_schedules"]

COMPARE_OPTIMIZERS = ("auto", "greedy", "optimal")
_OPTIMAL_MAX_OPERANDS = 10


def merged_cores(generator: Generator) -> list[list[str]]:
    """For every pairwise step (in ``cost().steps`` order), the cores merged at that step.

    A step joins two operands; each is a core, the result of an earlier step of the same group
    (``#k``) or a tensor carried over from an earlier stage (``X{s}.{g}``). The cores of a step
    are all cores that went into either operand.

    Returns
    -------
    list of list of str
        One sorted list of core names per step (in the generator's core order).
    """
    order = {name: k for k, name in enumerate(generator.cores)}
    program = generator.program
    out: list[list[str]] = []

    def visit(index, group, operands):  # front values: the cores inside each tensor
        cores = dict(zip(group.operands, operands))
        for record, *_ in pairwise_steps(group, program.tree(index)):
            cores[record.label] = cores[record.left] | cores[record.right]
            out.append(sorted(cores[record.label], key=order.__getitem__))
        return set().union(*operands)

    walk(program.groups, Front({name: {name} for name in generator.cores}), visit)
    return out


def _tree_data(group, tree, steps, size_dict) -> dict:
    """Nodes and edges of one group's contraction tree, laid out for drawing.

    Leaves sit at height 0 in depth-first order; the node of step ``k`` sits at height
    ``k + 1``, so the drawing reads bottom-up in execution order.
    """
    labels = {tree.input_to_node(i): name for i, name in enumerate(group.operands)}
    shapes = {tree.input_to_node(i): [size_dict[ix] for ix in inds]
              for i, inds in enumerate(group.inputs)}
    step_of = {}
    children = {}
    for k, (node, left, right) in enumerate(tree.traverse()):
        step_of[node] = k
        children[node] = (left, right)
    root = tree.root
    leaves: list = []

    def visit(node):
        if node in children:
            for child in children[node]:
                visit(child)
        else:
            leaves.append(node)

    visit(root)
    xpos = {node: float(i) for i, node in enumerate(leaves)}
    for node in sorted(step_of, key=step_of.get):
        left, right = children[node]
        xpos[node] = (xpos[left] + xpos[right]) / 2.0
    ids = {node: i for i, node in enumerate([*leaves, *sorted(step_of, key=step_of.get)])}
    nodes = []
    for node in leaves:
        nodes.append({"id": ids[node], "label": labels[node], "leaf": True, "step": None,
                      "x": xpos[node], "y": 0, "shape": shapes[node]})
    for node, k in sorted(step_of.items(), key=lambda kv: kv[1]):
        nodes.append({"id": ids[node], "label": f"#{k}", "leaf": False, "step": k,
                      "x": xpos[node], "y": k + 1, "shape": list(steps[k].output_shape),
                      "flops": steps[k].flops})
    edges = [[ids[node], ids[child]] for node, pair in children.items() for child in pair]
    return {"nodes": nodes, "edges": edges, "width": max(len(leaves), 1)}


def _with_optimizer(generator: Generator, optimize) -> Generator:
    """A shallow copy of ``generator`` whose program plans with another optimiser."""
    if optimize == generator.program.optimize:
        return generator
    return generator.with_optimizer(optimize)


def _time_call(fn, *, min_repeats: int = 3, budget_s: float = 0.1) -> float:
    """Median wall time of ``fn()`` in milliseconds (one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _synchronize(backend: str) -> None:
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def compare_schedules(generator: Generator, *, batch_size: int | None = None,
                      memory_limit: int | None = None, backend: str = "numpy", device=None,
                      optimizers=COMPARE_OPTIMIZERS, measure: bool = True, progress=None,
                      stop_event: threading.Event | None = None) -> list[dict]:
    """Predicted cost and measured time of every schedule under every optimiser.

    Parameters
    ----------
    generator : Generator
    batch_size : int, optional
        With a batch, ``materialize`` includes ``x @ W.T`` and ``fused`` becomes possible.
    memory_limit : int, optional
        Bytes for the ``sliced`` schedule (``materialize`` run sliced to fit).
    backend : {"numpy", "torch", "cupy"}
        Where the measured time is taken (float32 arrays).
    device : optional
        torch device (e.g. ``"cuda"``) or CuPy device id for the measurement.
    optimizers : sequence of str
    measure : bool
        Time each schedule (otherwise only the predicted costs).
    progress : callable, optional
        ``progress(done, total, optimizer, schedule)`` before each measurement.
    stop_event : threading.Event, optional
        Set it to skip the remaining measurements (their rows keep the predicted costs,
        with the note ``"stopped"``).

    Returns
    -------
    list of dict
        One row per (optimiser, schedule): ``optimizer``, ``schedule``, ``flops``,
        ``peak_bytes``, ``largest``, ``slices``, ``time_ms`` (None when not measured) and
        ``note`` (why a row is not available).
    """
    rows = []
    arrays = None
    x = None
    if measure:
        arrays = to_backend(generator.params, backend, device=device,
                            dtype=np.float32 if backend != "torch" else None)
        if batch_size:
            rng = np.random.default_rng(0)
            x_np = rng.standard_normal((batch_size, generator.in_features)).astype(np.float32)
            x = to_backend({"x": x_np}, backend, device=device,
                           dtype=np.float32 if backend != "torch" else None)["x"]
    biggest = max(len(g.operands) for g in generator.program.groups)
    schedules = [("materialize", None), ("fused", None), ("sliced", memory_limit)]
    total = len(optimizers) * len(schedules)
    done = 0
    for opt in optimizers:
        if opt == "optimal" and biggest > _OPTIMAL_MAX_OPERANDS:
            for name, _ in schedules:
                rows.append(_row(opt, name, note=f"skipped: a group holds {biggest} tensors "
                                                 f"(optimal search is limited to "
                                                 f"{_OPTIMAL_MAX_OPERANDS})"))
            continue
        gen = _with_optimizer(generator, opt)
        for name, limit in schedules:
            if name == "fused" and not batch_size:
                rows.append(_row(opt, name, note="needs a batch size"))
                continue
            if name == "sliced" and not limit:
                rows.append(_row(opt, name, note="set a memory limit"))
                continue
            try:
                report = gen.cost(batch_size, "fused" if name == "fused" else "materialize",
                                  memory_limit=limit)
            except Exception as exc:  # MemoryLimitError, or slicing that found no index
                note = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                rows.append(_row(opt, name, note=note))
                continue
            row = _row(opt, name, report=report)
            if measure and stop_event is not None and stop_event.is_set():
                row["note"] = "stopped"
            elif measure:
                if progress is not None:
                    progress(done, total, opt, name)
                row["time_ms"] = _measure(gen, name, arrays, x, limit, backend)
            done += 1
            rows.append(row)
    return rows


def _measure(gen, schedule, arrays, x, memory_limit, backend) -> float:
    program = gen.program
    if schedule == "fused":
        def fn():
            program.fused(arrays, x)
            _synchronize(backend)
    else:
        def fn():
            w = program.run(arrays, memory_limit=memory_limit)
            if x is not None:
                _ = x @ w.T
            _synchronize(backend)
    return _time_call(fn)


def _row(optimizer, schedule, *, report=None, note=""):
    row = {"optimizer": optimizer, "schedule": schedule, "flops": None, "peak_bytes": None,
           "largest": None, "slices": None, "time_ms": None, "note": note}
    if report is not None:
        row.update(flops=report.total_flops, peak_bytes=report.peak_bytes,
                   largest=report.largest_intermediate,
                   slices=max(s.slices for s in report.stages))
    return row


class ContractionInspector(ActionWidget):
    """Walk through a generator's contraction: tree, steps, intermediates, schedules.

    Parameters
    ----------
    generator : Generator
    batch_size : int, optional
        Batch for the schedule comparison (``fused`` needs one).
    backend : {"numpy", "torch", "cupy"}
        Where the comparison's wall time is measured.
    memory_limit : int, optional
        Bytes for the ``sliced`` schedule; by default 10 % above what the largest group needs
        for its inputs and output.
    device : optional
        torch device (``"cuda"``) or CuPy device id for the measured time.

    Attributes
    ----------
    group : int
        Index of the selected group among ``groups`` (groups with at least one step).
    step : int
        Step within the selected group.
    highlight : list of str
        Cores merged at the current step.
    intermediate : dict
        Shape, size, norm, min/max/mean/std of the current step's intermediate.
    comparison : list of dict
        Rows of the schedule/optimiser comparison: predicted costs, refreshed whenever batch,
        memory limit or backend change; measured times after Measure (``compare()``).
    measuring : bool
        True while Measure runs in the background (Stop ends it after the current row).
    """

    _esm = STATIC / "inspector.js"
    _css = STATIC / "inspector.css"

    summary = traitlets.Dict().tag(sync=True)
    groups = traitlets.List().tag(sync=True)
    group = traitlets.Int(0).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    steps = traitlets.List().tag(sync=True)
    tree = traitlets.Dict().tag(sync=True)
    highlight = traitlets.List().tag(sync=True)
    intermediate = traitlets.Dict().tag(sync=True)
    drawing = traitlets.Unicode("").tag(sync=True)
    intermediate_image = traitlets.Unicode("").tag(sync=True)
    heatmap = traitlets.Unicode("").tag(sync=True)
    comparison = traitlets.List().tag(sync=True)
    backend = traitlets.Unicode("numpy").tag(sync=True)
    backends = traitlets.List().tag(sync=True)
    batch_size = traitlets.Int(0).tag(sync=True)
    memory_limit = traitlets.Int(0).tag(sync=True)
    measuring = traitlets.Bool(False).tag(sync=True)

    _actions = {"compare": "measure_in_background", "stop": "stop"}

    def __init__(self, generator: Generator, batch_size: int | None = None,
                 backend: str = "numpy", memory_limit: int | None = None, device=None):
        if not isinstance(generator, Generator):
            raise TypeError(f"ContractionInspector needs a Generator (from al.build or "
                            f"al.from_graph), got {type(generator).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self._internal = False
        super().__init__()
        self._gen = generator
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self.device = device
        self.backends = available_backends()
        if backend not in self.backends:
            raise ValueError(f"backend {backend!r} is not available here; use one of "
                             f"{self.backends}")
        self._report = generator.cost()
        _, captures = generator.program.run(generator.params, capture=True)
        if len(captures) != len(self._report.steps):
            raise RuntimeError("captured steps and cost-report steps disagree "
                               f"({len(captures)} vs {len(self._report.steps)})")
        self._captures = captures
        self._merged = merged_cores(generator)
        self._image_cache: dict = {}
        self._group_index = []  # per listed group: (program group, first global step, n)
        offset = 0
        listed = []
        for gi, g in enumerate(generator.program.groups):
            n = max(len(g.operands) - 1, 0)
            if n:
                self._group_index.append((gi, offset, n))
                act = generator.activations[g.stage].name
                listed.append({"index": len(listed), "stage": g.stage, "group": g.group,
                               "steps": n, "operands": list(g.operands), "activation": act,
                               "label": f"stage {g.stage} · group {g.group} — {n} step"
                                        f"{'s' if n > 1 else ''}, then {act}"})
            offset += n
        if not listed:
            raise ValueError("this generator has no pairwise contraction step to inspect "
                             "(every group holds a single tensor)")
        default_limit = memory_limit if memory_limit is not None else _default_limit(generator)
        with self.hold_sync():
            self.groups = listed
            self.summary = self._summary()
            self.batch_size = int(batch_size or 0)
            self.memory_limit = int(default_limit)
            self.backend = backend
        self._select(0, 0)
        with self._guard("compare"):
            self.compare(measure=False)

    # ------------------------------------------------------------------ public
    @property
    def generator(self) -> Generator:
        return self._gen

    @property
    def report(self):
        """The generation cost report whose steps the slider walks through."""
        return self._report

    @property
    def global_step(self) -> int:
        """Index of the current step in ``report.steps``."""
        _, offset, _ = self._group_index[self.group]
        return offset + self.step

    def compare(self, measure: bool = True, stop_event: threading.Event | None = None
                ) -> list[dict]:
        """Fill ``comparison`` with every schedule under every optimiser (see
        :func:`compare_schedules`); blocks until done (Measure in the page runs it in the
        background instead)."""
        def progress(done, total, opt, schedule):
            self.busy = f"measuring {done + 1}/{total}: {opt} · {schedule}…"

        with self._busy("measuring…" if measure else "predicting costs…"):
            rows = compare_schedules(self._gen, batch_size=self.batch_size or None,
                                     memory_limit=self.memory_limit or None,
                                     backend=self.backend, device=self.device,
                                     measure=measure, progress=progress,
                                     stop_event=stop_event)
        for r in rows:
            r["text"] = {"flops": format_count(r["flops"]) if r["flops"] is not None else "–",
                         "peak": format_bytes(r["peak_bytes"]) if r["peak_bytes"] else "–",
                         "time": (f"{r['time_ms']:.3g} ms" if r["time_ms"] is not None else
                                  "press Measure" if not measure and r["flops"] is not None
                                  else "–")}
        self.comparison = json_safe(rows)
        self.error = ""
        return rows

    def measure_in_background(self) -> None:
        """Measure in a thread, with progress in ``busy``; :meth:`stop` ends it early."""
        if self.running:
            raise ValueError("a measurement is already running; press Stop first")
        self._stop_event = threading.Event()
        self.measuring = True
        self._thread = threading.Thread(target=self._measure_thread, args=(self._stop_event,),
                                        name="adntn-inspector-measure", daemon=True)
        self._thread.start()

    def _measure_thread(self, stop_event: threading.Event) -> None:
        try:
            with self._guard("measure"):
                self.compare(measure=True, stop_event=stop_event)
        finally:
            self.measuring = False

    def stop(self) -> None:
        """Skip the remaining measurements (the current one finishes)."""
        self._stop_event.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background measurement ends; True if none is running."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    # ------------------------------------------------------------------ trait handlers
    @traitlets.observe("group")
    def _on_group(self, change):
        if self._internal:
            return
        with self._guard("group"):
            if not 0 <= change["new"] < len(self._group_index):
                self._set_quietly(group=change["old"])
                raise ValueError(f"group must lie in 0..{len(self._group_index) - 1}, got "
                                 f"{change['new']}")
            self._select(change["new"], 0)
            self.error = ""

    @traitlets.observe("step")
    def _on_step(self, change):
        if self._internal:
            return
        with self._guard("step"):
            n = self._group_index[self.group][2]
            if not 0 <= change["new"] < n:
                self._set_quietly(step=change["old"] if 0 <= change["old"] < n else 0)
                raise ValueError(f"step must lie in 0..{n - 1} for this group, got "
                                 f"{change['new']}")
            self._show_step()
            self.error = ""

    @traitlets.observe("backend")
    def _on_backend(self, change):
        if self._internal:
            return
        if change["new"] in self.backends:
            self._refresh_comparison()
            return
        self._set_quietly(backend=change["old"])
        self.error = (f"backend {change['new']!r} is not available here; use one of "
                      f"{self.backends}")

    @traitlets.observe("batch_size", "memory_limit")
    def _on_sizes(self, change):
        if self._internal:
            return
        if change["new"] >= 0:
            self._refresh_comparison()
            return
        self._set_quietly(**{change["name"]: change["old"]})
        self.error = f"{change['name']} must be 0 (none) or a positive number"

    def _refresh_comparison(self) -> None:
        """Predicted costs for the new settings at once (times wait for Measure)."""
        if self.running:
            self.stop()  # its rows belong to the old settings
            self.wait(30.0)
        with self._guard("compare"):
            self.compare(measure=False)

    # ------------------------------------------------------------------ internals
    def _summary(self) -> dict:
        g, r = self._gen, self._report
        return json_safe({
            "title": repr(g),
            "family": g.family,
            "shape": list(g.shape),
            "num_params": g.num_params,
            "flops": r.total_flops,
            "peak_bytes": r.peak_bytes,
            "num_steps": len(r.steps),
            "text": {"flops": format_count(r.total_flops, "FLOP"),
                     "peak": format_bytes(r.peak_bytes),
                     "params": f"{g.num_params:,}"},
        })

    def _select(self, group: int, step: int) -> None:
        gi, offset, n = self._group_index[group]
        pg = self._gen.program.groups[gi]
        tree = self._gen.program.trees()[gi]
        steps = self._report.steps[offset: offset + n]
        with self.hold_sync():
            self.steps = json_safe([
                {"step": s.step, "left": s.left, "right": s.right,
                 "shape": list(s.output_shape), "size": s.size, "flops": s.flops,
                 "flops_text": format_count(s.flops)} for s in steps])
            self.tree = json_safe(_tree_data(pg, tree, steps, self._gen.size_dict))
            self._set_quietly(group=group, step=step)
        self._show_step()

    def _set_quietly(self, **traits) -> None:
        self._internal = True
        try:
            for k, v in traits.items():
                setattr(self, k, v)
        finally:
            self._internal = False

    def _show_step(self) -> None:
        k = self.global_step
        step = self._report.steps[k]
        cap = self._captures[k]
        arr = np.asarray(cap.array, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        info = {
            "index": k,
            "stage": step.stage,
            "group": step.group,
            "step": step.step,
            "left": step.left,
            "right": step.right,
            "label": cap.label,
            "shape": list(arr.shape),
            "predicted_shape": list(step.output_shape),
            "size": int(arr.size),
            "bytes": int(arr.size * 4),
            "flops": int(step.flops),
            "norm": float(np.linalg.norm(arr)),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "text": {"flops": format_count(step.flops), "bytes": format_bytes(arr.size * 4)},
        }
        cores = self._merged[k]
        with self.hold_sync():
            self.highlight = cores
            self.intermediate = json_safe(info)
            self.drawing, self.intermediate_image, self.heatmap = self._images(k, arr, cores)

    def _images(self, k, arr, cores):
        if k not in self._image_cache:
            drawing = self._draw(cores)
            hist = self._histogram(arr, k)
            heat = array_to_png(_as_matrix(arr), max_side=160)
            if len(self._image_cache) > 64:
                self._image_cache.pop(next(iter(self._image_cache)))
            self._image_cache[k] = (drawing, hist, heat)
        return self._image_cache[k]

    def _draw(self, cores) -> str:
        n = len(self._gen.cores)
        fig = new_figure(7.0 if n < 30 else 10.0, 3.6 if n < 60 else 5.0, dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        self._gen.draw(ax=ax, highlight=cores, title=f"merged at this step: {', '.join(cores)}"
                       if len(cores) <= 8 else f"merged at this step: {len(cores)} cores")
        ax.margins(0.08, 0.2)  # room for the labels of the top row below the title
        return figure_to_data_url(fig, dpi=80)

    def _histogram(self, arr, k) -> str:
        fig = new_figure(3.4, 2.2, dpi=80)
        ax = fig.add_subplot(1, 1, 1)
        flat = arr.ravel()
        flat = flat[np.isfinite(flat)]
        ax.hist(flat, bins=min(40, max(5, int(math.sqrt(flat.size)))), color="#1f77b4")
        ax.set_title(f"step {k}: values", fontsize=9)
        ax.tick_params(labelsize=7)
        fig.tight_layout()
        return figure_to_data_url(fig, dpi=80)


def _default_limit(generator: Generator, itemsize: int = 4) -> int:
    """A memory limit (bytes) every group can meet: 10 % above the smallest one the plan
    allows, so that groups whose intermediates exceed it get sliced."""
    return int(math.ceil(generator.program.minimum_memory(itemsize) * 1.1))


def _as_matrix(arr: np.ndarray) -> np.ndarray:
    """Fold an n-d array into the most square 2-D matrix (leading axes as rows)."""
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.ndim == 1:
        return arr.reshape(1, -1)
    best, rows = None, 1
    for cut in range(1, arr.ndim):
        rows = math.prod(arr.shape[:cut])
        cols = arr.size // rows
        score = abs(math.log(rows / cols))
        if best is None or score < best[0]:
            best = (score, rows)
    return arr.reshape(best[1], -1)
