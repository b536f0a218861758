"""``CompressionExplorer``: accuracy against parameters over a sweep of generators.

The widget runs a small sweep (families x budgets x seeds on one model, layer and dataset,
plus the dense model and the MPO and low-rank baselines) in a background thread, or loads the
rows of an earlier sweep (a list of dicts or a ``results.jsonl`` written by
:func:`adntn_lab.train.run_sweep`). It plots test accuracy against the number of trainable
parameters on a log axis, marks the Pareto front (no other point has at most as many
parameters and at least the accuracy, one of them strictly), and shows the configuration of the
point the user clicks; :attr:`CompressionExplorer.selected_generator` returns its generator.

Every point records what it was trained on (dataset, model, compressed layer, hidden width):
rows that do not say are read from their run folder's ``config.json``. One plot shows one such
experiment only, with its own Pareto front; the ``view`` menu switches between them, so a
sweep on another dataset never lands on (or takes over the front of) an earlier one.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import traitlets

from ..families import FAMILIES, all_families, get_family
from ..generator import Generator, build
from ._common import STATIC, ActionWidget, describe_error, json_safe

__all__ = ["CompressionExplorer", "budget_label", "group_of", "normalise_point", "pareto_front",
           "sweep_jobs", "train_point"]

BASELINES = ("dense", "mpo", "lowrank")
_DEFAULT_SETTINGS = {
    "dataset": "digits",
    "model": "fc2",
    "layer": "fc1",
    "hidden": 64,
    "families": ["ttn", "mera", "brickwall"],
    "budgets": [2, 4],
    "baselines": list(BASELINES),
    "seeds": [0],
    "epochs": 3,
    "lr": 3e-3,
    "batch_size": 64,
}
_SETTING_ALIASES = {"bond_dims": "budgets"}  # older name of the budgets
_UNKNOWN = "?"


def _settings_in(settings: dict) -> dict:
    """Settings with aliases resolved (``bond_dims`` -> ``budgets``, ``seed`` -> ``seeds``)."""
    s = dict(settings)
    for old, new in _SETTING_ALIASES.items():
        if old in s:
            s.setdefault(new, s.pop(old))
    if "seed" in s:
        s.setdefault("seeds", [s.pop("seed")])
    return s


def group_of(point: dict) -> str:
    """The experiment a point belongs to: dataset, model, compressed layer and hidden width.

    Points of one group share a plot and a Pareto front; others never do.
    """
    hidden = point.get("hidden")
    parts = [point.get("dataset") or _UNKNOWN, point.get("model") or _UNKNOWN,
             point.get("layer") or _UNKNOWN]
    if hidden:
        parts.append(f"hidden {hidden}")
    return " · ".join(str(x) for x in parts)


def budget_label(family: str | None, value) -> str:
    """``ttn χ=4``, ``brickwall depth=3``, ``lowrank rank=8``; ``dense`` for the dense model."""
    if family in (None, "dense"):
        return "dense"
    try:
        knob = get_family(family).knob_label
    except ValueError:
        knob = "chi"
    knob = "χ" if knob == "chi" else knob
    return f"{family} {knob}={value}" if value is not None else family


def pareto_front(params, accuracy) -> list[int]:
    """Indices of the points on the Pareto front (fewest parameters, highest accuracy).

    A point is on the front when no other point has ``params <= p`` and ``accuracy >= a`` with
    at least one inequality strict. Points with a missing or non-finite value are never on it.

    Parameters
    ----------
    params, accuracy : sequence of float, same length

    Returns
    -------
    list of int
        Front indices ordered by increasing parameters (ties in input order).
    """
    if len(params) != len(accuracy):
        raise ValueError(f"params and accuracy differ in length ({len(params)} vs "
                         f"{len(accuracy)})")

    def ok(v):
        return v is not None and isinstance(v, (int, float)) and math.isfinite(v)

    valid = [i for i in range(len(params)) if ok(params[i]) and ok(accuracy[i])]
    order = sorted(valid, key=lambda i: (params[i], -accuracy[i], i))
    front: list[int] = []
    best = -math.inf
    k = 0
    while k < len(order):
        j = k
        while j < len(order) and params[order[j]] == params[order[k]]:
            j += 1
        group = order[k:j]
        top = accuracy[group[0]]
        if top > best:
            front += [i for i in group if accuracy[i] == top]
            best = top
        k = j
    return front


def _kind(family) -> str:
    if family in (None, "dense", "none"):
        return "dense"
    return get_family(family).role


def normalise_point(row: dict) -> dict:
    """One result row in the explorer's form.

    Needs ``params`` and ``test_acc``; reads ``family`` (None or ``"dense"`` for the dense
    model), ``bond_dim``, ``compression``, ``in_features``/``out_features`` (or a
    ``compressed_layers`` list with ``shape``), ``options``, ``activation``, ``key`` and
    ``run_dir`` when present, and what the point was trained on: ``dataset``, ``model``,
    ``layer`` (or ``compress``, a list of layer patterns) and ``hidden`` (read from
    ``run_dir/config.json`` when the row does not say).
    """
    if not isinstance(row, dict):
        raise TypeError(f"a result row is a dict, got {type(row).__name__}")
    missing = [k for k in ("params", "test_acc") if k not in row]
    if missing:
        raise ValueError(f"result row {row.get('key', row)!r} lacks {missing}; each row needs "
                         "'params' and 'test_acc' (and usually 'family' and 'bond_dim')")
    family = row.get("family")
    family = None if family in (None, "dense", "none") else str(family).lower()
    point = {
        "key": row.get("key") or (f"{family}-chi{row.get('bond_dim')}" if family else "dense"),
        "family": family or "dense",
        "kind": _kind(family),
        "bond_dim": row.get("bond_dim") if family else None,
        "params": float(row["params"]),
        "test_acc": None if row["test_acc"] is None else float(row["test_acc"]),
        "compression": row.get("compression"),
        "options": dict(row.get("options") or {}),
        "activation": row.get("activation"),
        "seed": row.get("seed", 0),
        "run_dir": row.get("run_dir"),
    }
    config = _config_from_run_dir(Path(row["run_dir"])) if row.get("run_dir") else {}
    layer = row.get("layer") or row.get("compress") or config.get("compress")
    if isinstance(layer, (list, tuple)):
        layer = ",".join(str(x) for x in layer)
    model = row.get("model") or config.get("model")
    if layer is None and model is not None:
        from ..train.config import DEFAULT_COMPRESS

        layer = ",".join(DEFAULT_COMPRESS.get(model, ())) or None
    point.update(dataset=row.get("dataset") or config.get("dataset"), model=model,
                 layer=layer, hidden=row.get("hidden") or config.get("hidden"))
    point["group"] = group_of(point)
    point["label"] = budget_label(family, point["bond_dim"])
    shape = None
    if row.get("in_features") and row.get("out_features"):
        shape = [int(row["out_features"]), int(row["in_features"])]
    else:
        for layer in row.get("compressed_layers") or []:
            if layer.get("shape"):
                s = list(layer["shape"])
                shape = [int(s[0]), int(math.prod(s[1:]))]
                break
    if shape is None and row.get("run_dir"):
        shape = _shape_from_run_dir(Path(row["run_dir"]))
    point["shape"] = shape
    return point


def _config_from_run_dir(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


def _shape_from_run_dir(run_dir: Path):
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        layers = json.loads(metrics.read_text()).get("compressed_layers") or []
    except (OSError, json.JSONDecodeError):
        return None
    for layer in layers:
        if layer.get("shape"):
            s = list(layer["shape"])
            return [int(s[0]), int(math.prod(s[1:]))]
    return None


def _read_rows(results) -> list[dict]:
    if isinstance(results, (str, Path)):
        path = Path(results)
        if not path.is_file():
            raise ValueError(f"no results file at {path}; pass a results.jsonl written by "
                             "run_sweep or a list of dicts")
        from ..train.sweep import read_results

        return read_results(path)
    if isinstance(results, dict):
        return [results]
    return list(results)


class CompressionExplorer(ActionWidget):
    """Sweep generators and plot test accuracy against parameters, Pareto front marked.

    Parameters
    ----------
    results : list of dict or path, optional
        Rows of an earlier sweep (each with ``family``, ``bond_dim``, ``params``,
        ``test_acc``; see :func:`normalise_point`) or a ``results.jsonl`` path.
    layer_shape : (out_features, in_features), optional
        Shape of the compressed layer, for ``selected_generator`` of loaded rows that do not
        record it.
    **settings
        The sweep that Run performs: ``dataset`` ("digits"), ``model`` ("fc2"), ``layer``
        (layer patterns to compress, comma-separated: "fc1"), ``hidden`` (FC-2 width),
        ``families``, ``budgets`` (values of each family's knob: the bond dimension, the rank
        of ``lowrank``, the depth of ``brickwall``; ``bond_dims`` is an older name),
        ``baselines`` (any of "dense", "mpo", "lowrank"), ``seeds``, ``epochs``, ``lr``,
        ``batch_size``. When loaded rows all come from one experiment, its dataset, model,
        layer and width are the defaults, so that Run adds to the same plot.

    Attributes
    ----------
    points : list of dict
        One per result, in the order they came; ``group`` names the experiment.
    view : str
        The experiment the plot shows (a ``group`` of ``points``).
    groups : list of dict
        Every experiment: ``key``, ``count``.
    front : list of int
        Indices of ``points`` on the Pareto front of the viewed experiment, by increasing
        parameters (``pareto`` on each point: on the front of its own experiment).
    selected : int
        Index of the selected point (-1 for none); the browser sets it on a click.
    selected_generator : Generator or None
    """

    _esm = STATIC / "explorer.js"
    _css = STATIC / "explorer.css"

    points = traitlets.List().tag(sync=True)
    view = traitlets.Unicode("").tag(sync=True)
    groups = traitlets.List().tag(sync=True)
    front = traitlets.List().tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)
    settings = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    choices = traitlets.Dict().tag(sync=True)

    _actions = {"run": "run", "stop": "stop"}

    def __init__(self, results=None, *, layer_shape=None, **settings):
        settings = _settings_in(settings)
        unknown = set(settings) - set(_DEFAULT_SETTINGS)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; known: "
                            f"{', '.join(_DEFAULT_SETTINGS)}")
        super().__init__()
        from ..data import DATASETS
        from ..models import MODELS

        self._generators: dict[int, Generator] = {}
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.layer_shape = list(layer_shape) if layer_shape is not None else None
        self.choices = {"families": [f.name for f in all_families() if f.role == "generator"],
                        "baselines": list(BASELINES), "datasets": list(DATASETS),
                        "models": list(MODELS),
                        "knobs": {f: get_family(f).knob_label for f in FAMILIES}}
        rows = [normalise_point(r) for r in _read_rows(results)] if results is not None else []
        self.settings = json_safe({**_DEFAULT_SETTINGS, **_experiment_of(rows), **settings})
        self._check_settings(self.settings)
        if rows:
            self._add_points(rows)

    # ------------------------------------------------------------------ public
    def add_results(self, results) -> None:
        """Add result rows (list of dicts, one dict or a ``results.jsonl`` path)."""
        new = [normalise_point(r) for r in _read_rows(results)]
        self._add_points(new)

    @property
    def selected_point(self) -> dict | None:
        return self.points[self.selected] if 0 <= self.selected < len(self.points) else None

    @property
    def selected_generator(self) -> Generator | None:
        """The generator of the selected point: the trained one for points of a sweep run
        here, a freshly built one of the same structure for loaded rows; None for the dense
        model or when nothing is selected."""
        point = self.selected_point
        if point is None or point["kind"] == "dense":
            return None
        if self.selected in self._generators:
            return self._generators[self.selected]
        shape = point.get("shape") or self.layer_shape
        if shape is None:
            raise ValueError(f"point {point['key']!r} does not record the layer shape; pass "
                             "layer_shape=(out_features, in_features) to the explorer")
        gen = build(point["family"], int(shape[1]), int(shape[0]),
                    **_build_options(point))
        self._generators[self.selected] = gen
        return gen

    def run(self, **settings) -> None:
        """Run the sweep in a background thread; points appear as they finish (in their
        own experiment's plot, which the view switches to)."""
        if self._thread is not None and self._thread.is_alive():
            raise ValueError("a sweep is already running; press Stop first")
        settings = _settings_in(settings)
        unknown = set(settings) - set(_DEFAULT_SETTINGS)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; known: "
                            f"{', '.join(_DEFAULT_SETTINGS)}")
        merged = {**self.settings, **settings}
        self._check_settings(merged)
        self.settings = json_safe(merged)
        self._stop_event = threading.Event()
        self.error = ""
        self.status = "running"
        self._thread = threading.Thread(target=self._sweep, args=(dict(merged),
                                                                   self._stop_event),
                                        name="adntn-explorer-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sweep after the current training step."""
        self._stop_event.set()
        if self._thread is not None and self._thread.is_alive():
            self.status = "stopping"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep thread ends; True if it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    # ------------------------------------------------------------------ traits
    @traitlets.observe("view")
    def _on_view(self, change):
        with self._guard("view"):
            known = [g["key"] for g in self.groups]
            if change["new"] not in known and known:
                self.view = change["old"] if change["old"] in known else known[0]
                raise ValueError(f"no experiment {change['new']!r}; choose one of {known}")
            self._refresh_front()

    @traitlets.observe("selected")
    def _on_selected(self, change):
        with self._guard("select"):
            k = change["new"]
            if k != -1 and not 0 <= k < len(self.points):
                self.selected = change["old"] if -1 <= change["old"] < len(self.points) else -1
                raise ValueError(f"no point {k}; there are {len(self.points)} points")
            self._describe_selection()
            self.error = ""

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_settings(s: dict) -> None:
        fams = s.get("families") or []
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown families {bad}; choose from {', '.join(FAMILIES)}")
        bad = [b for b in s.get("baselines") or [] if b not in BASELINES]
        if bad:
            raise ValueError(f"unknown baselines {bad}; choose from {', '.join(BASELINES)}")
        for key, minimum in (("budgets", 1), ("seeds", 0)):
            vals = s.get(key)
            if (not isinstance(vals, (list, tuple)) or not vals
                    or any(isinstance(d, bool) or not isinstance(d, int) or d < minimum
                           for d in vals)):
                what = "positive" if minimum else "non-negative"
                raise ValueError(f"{key} must be a non-empty list of {what} integers, got "
                                 f"{vals!r}")
        from ..data import DATASETS
        from ..models import MODELS

        if s.get("dataset") not in DATASETS:
            raise ValueError(f"unknown dataset {s.get('dataset')!r}; choose one of "
                             f"{', '.join(DATASETS)}")
        if s.get("model") not in MODELS:
            raise ValueError(f"unknown model {s.get('model')!r}; choose one of "
                             f"{', '.join(MODELS)}")
        if not isinstance(s.get("layer"), str) or not s["layer"].strip():
            raise ValueError(f"layer must name the layers to compress, e.g. 'fc1', got "
                             f"{s.get('layer')!r}")
        for k in ("epochs", "batch_size"):
            v = s.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")

    def _add_points(self, new: list[dict], generators=None, *, show: bool = False) -> None:
        """Append points; ``show`` switches the view to the last one's experiment."""
        with self._lock:
            start = len(self.points)
            for k, gen in enumerate(generators or []):
                if gen is not None:
                    self._generators[start + k] = gen
            points = list(self.points) + new
            counts: dict[str, int] = {}
            for i, p in enumerate(points):
                p["index"] = i
                counts[p["group"]] = counts.get(p["group"], 0) + 1
            on: set[int] = set()
            for group in counts:  # each experiment has its own front
                idx = [i for i, p in enumerate(points) if p["group"] == group]
                on |= {idx[j] for j in pareto_front([points[i]["params"] for i in idx],
                                                    [points[i]["test_acc"] for i in idx])}
            for i, p in enumerate(points):
                p["pareto"] = i in on
            view = self.view
            if show and new:
                view = new[-1]["group"]
            elif view not in counts:
                view = points[0]["group"] if points else ""
            with self.hold_sync():
                self.points = json_safe(points)
                self.groups = [{"key": g, "count": n} for g, n in counts.items()]
                self.view = view
                self._refresh_front()
            if self.selected >= 0:
                self._describe_selection()

    def _refresh_front(self) -> None:
        idx = [i for i, p in enumerate(self.points) if p["group"] == self.view]
        front = pareto_front([self.points[i]["params"] for i in idx],
                             [self.points[i]["test_acc"] for i in idx])
        self.front = [idx[j] for j in front]

    def _describe_selection(self) -> None:
        p = self.selected_point
        if p is None:
            self.selection = {}
            return
        others = [q for q in self.points if q is not p and q["group"] == p["group"]]
        dominated_by = [q["key"] for q in others
                        if _dominates(q, p)]
        self.selection = json_safe({
            **{k: p.get(k) for k in ("key", "label", "family", "kind", "bond_dim", "params",
                                     "test_acc", "compression", "options", "activation", "seed",
                                     "run_dir", "pareto", "dataset", "model", "layer", "hidden",
                                     "group")},
            "shape": p.get("shape") or (self.layer_shape if p["kind"] != "dense" else None),
            "dominated_by": dominated_by,
            "has_generator": p["kind"] != "dense",
        })

    def _sweep(self, s: dict, stop_event: threading.Event) -> None:
        from ..data import load_dataset
        from ..train.sweep import run_tasks

        try:
            data = load_dataset(s["dataset"])
            jobs = sweep_jobs(s)
            tasks = {}
            for n, (fam, value, seed) in enumerate(jobs, start=1):
                key = ("dense" if fam is None else f"{fam}-{value}") + f"-seed{seed}"
                tasks.setdefault(key, {"key": key, "n": n, "family": fam, "value": value,
                                       "seed": seed})
            tasks = list(tasks.values())

            def run_one(task):  # in this thread: the points and generators stay in memory
                fam, value, seed = task["family"], task["value"], task["seed"]
                self.message = (f"[{task['n']}/{len(jobs)}] training "
                                f"{budget_label(fam, value)}"
                                + (f", seed {seed}" if len(s["seeds"]) > 1 else "") + "…")
                trained = train_point(s, fam, value, seed, data, stop_event)
                if trained is None:  # stopped mid-run: the point is incomplete
                    return None
                point, gen = trained
                if len(s["seeds"]) > 1:
                    point["key"] += f"-seed{seed}"
                return {"key": task["key"], "point": point, "generator": gen}

            # the sweep machinery of run_sweep, with the rows kept here instead of a file
            run_tasks(tasks, run_one, None, stop_event=stop_event, log=None,
                      on_row=lambda r: self._add_points([r["point"]], [r["generator"]],
                                                        show=True))
            stopped = stop_event.is_set()
            self.status = "stopped" if stopped else "finished"
            self.message = (f"stopped after {len(self.points)} points" if stopped else
                            f"sweep finished: {len(self.points)} points")
        except Exception as exc:  # shown in the widget; the points so far stay
            self.status = "error"
            self.error = describe_error("sweep", exc)


def sweep_jobs(s: dict) -> list[tuple[str | None, int | None, int]]:
    """The (family, budget, seed) points of a sweep: dense once per seed, every other family
    at every budget (its knob's value: bond dimension, rank or depth)."""
    fams = list(s.get("families") or []) + [b for b in (s.get("baselines") or [])
                                            if b != "dense"]
    jobs: list[tuple[str | None, int | None, int]] = []
    for seed in s["seeds"]:
        if "dense" in (s.get("baselines") or []):
            jobs.append((None, None, int(seed)))
        jobs += [(fam, int(v), int(seed)) for fam in dict.fromkeys(fams) for v in s["budgets"]]
    return jobs


def train_point(s: dict, family: str | None, value: int | None, seed: int, data,
                stop_event: threading.Event):
    """Train one point of the explorer's sweep; returns ``(point, generator)``, or None when
    ``stop_event`` stopped it before it finished.

    The one place the explorer trains: a sweep executor can take over from here.
    """
    from ..nn.compress import adntn_layers
    from ..train.runs import RunConfig, run_training

    # RunConfig turns the budget into the family's knob (chi, the rank, the brick-wall depth)
    # the same way the explorer rebuilds a point's generator (budget_build_options)
    options: dict = {}
    layers = [x.strip() for x in s["layer"].split(",") if x.strip()]
    config = RunConfig(model=s["model"], dataset=s["dataset"], family=family,
                       bond_dim=value or 4, options=options, compress=layers,
                       epochs=s["epochs"], lr=float(s["lr"]), batch_size=s["batch_size"],
                       seed=int(seed), hidden=s.get("hidden") if s["model"] == "fc2" else None)
    result = run_training(config, None, data=data, progress=False, log=None,
                          stop_event=stop_event)
    if stop_event.is_set() and not result.metrics.get("complete"):
        return None
    compressed = result.metrics.get("compressed_layers") or []
    label = get_family(family).knob_label if family else ""
    row = {"key": "dense" if family is None else f"{family}-{label}{value}",
           "family": family, "bond_dim": value,
           "params": result.metrics["params"]["trainable"],
           "test_acc": result.metrics.get("final", {}).get("test_acc"),
           "compressed_layers": compressed, "seed": config.seed,
           "activation": config.activation, "options": options,
           "dataset": s["dataset"], "model": s["model"], "layer": ",".join(layers),
           "hidden": config.hidden}
    before = sum(int(r.get("params_before", 0)) for r in compressed)
    after = sum(int(r.get("params_after", 0)) for r in compressed)
    row["compression"] = before / after if after else None
    generated = adntn_layers(result.model)
    gen = next(iter(generated.values())).export_generator() if generated else None
    return normalise_point(row), gen


def _experiment_of(points: list[dict]) -> dict:
    """Settings of the one experiment all loaded points share (empty if they differ)."""
    keys = {(p.get("dataset"), p.get("model"), p.get("layer"), p.get("hidden"))
            for p in points}
    if len(keys) != 1:
        return {}
    dataset, model, layer, hidden = keys.pop()
    found = {"dataset": dataset, "model": model, "layer": layer, "hidden": hidden}
    return {k: v for k, v in found.items() if v is not None}


def _dominates(q: dict, p: dict) -> bool:
    if q["params"] is None or q["test_acc"] is None or p["test_acc"] is None:
        return False
    return (q["params"] <= p["params"] and q["test_acc"] >= p["test_acc"]
            and (q["params"] < p["params"] or q["test_acc"] > p["test_acc"]))


def _build_options(point: dict) -> dict:
    """Builder keywords of a row: the same translation of its budget the run used."""
    from ..train.config import budget_build_options

    fam = get_family(point["family"])
    opts = dict(point.get("options") or {})
    activation = point.get("activation") if fam.nonlinear else None
    if point.get("bond_dim"):
        return budget_build_options(fam.name, point["bond_dim"], options=opts,
                                    activation=activation, seed=point.get("seed") or 0)
    if activation:
        opts["activation"] = activation
    opts["seed"] = point.get("seed") or 0
    return opts
