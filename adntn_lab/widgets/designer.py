"""``TopologyDesigner``: pick a family preset or draw a custom generator, and see its cost live.

The drawing is synced as the ``design`` trait, a dict in the ``adntn-graph/1`` format that
:func:`adntn_lab.from_graph` reads and :meth:`Generator.to_dict` writes. In preset mode the
widget fills ``design`` from the chosen family; in custom mode the browser edits it (add, move,
connect, assign stages and sites) and Python validates every edit. An invalid design leaves
``generator`` at the last valid one and shows the validation message in ``error``.

Before anything is built, the design's parameters and peak memory are estimated from its
shapes (:mod:`adntn_lab.widgets._limits`); a design over ``memory_limit`` is refused the same
way, with what it would need and a smaller setting that fits, so a typo cannot fill the
machine's memory.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import traitlets

from ..activations import ACTIVATIONS
from ..families import FAMILIES, all_families
from ..generator import Generator, build, from_graph
from ..tensorize import tensorize
from ..topologies import PATTERNS
from ..topologies.custom import FORMAT
from ._common import (
    STATIC,
    ActionWidget,
    describe_error,
    format_bytes,
    format_count,
    format_ratio,
    json_safe,
)
from ._limits import check_graph, check_preset

__all__ = ["TopologyDesigner"]

# which preset fields each family uses (the front end shows only these), from the registry
FAMILY_FIELDS = {f.name: list(f.designer_fields) for f in all_families()}
_PRESET_DEFAULTS = {
    "family": "ttn",
    "in_features": 256,
    "out_features": 256,
    "bond_dim": 4,
    "n_sites": None,
    "depth": 3,
    "pattern": "staircase",
    "activation": "relu",
    "lateral": False,
    "seed": 0,
}
_LAYOUT_KEYS = ("x", "y")


def _int_or_none(name, value):
    if value is None or value == "" or value == 0:
        return None
    return _positive_int(name, value)


def _positive_int(name, value):
    """An int from an int, a whole float or a string of digits (as form fields send them)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _parse_activation(value):
    """``"relu"`` -> ``"relu"``; ``"relu, tanh"`` -> ``["relu", "tanh"]``; ``""`` -> None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    text = str(value).strip()
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    return parts if len(parts) > 1 else parts[0]


def preset_kwargs(preset: dict) -> tuple[str, int, int, dict]:
    """Turn a preset dict (as the front end sends it) into ``build`` arguments.

    Returns
    -------
    family, in_features, out_features, kwargs
    """
    p = {**_PRESET_DEFAULTS, **(preset or {})}
    family = str(p["family"]).lower()
    if family not in FAMILY_FIELDS:
        raise ValueError(f"unknown family {p['family']!r}; choose one of {', '.join(FAMILIES)}")
    in_f = _positive_int("in_features", p["in_features"])
    out_f = _positive_int("out_features", p["out_features"])
    fields = FAMILY_FIELDS[family]
    kw: dict = {"seed": int(p.get("seed") or 0)}
    if "bond_dim" in fields:
        # the rank for lowrank (the registry reads bond_dim as its alias)
        kw["bond_dim"] = _positive_int("bond dimension", p["bond_dim"])
    if "n_sites" in fields:
        kw["n_sites"] = _int_or_none("n_sites", p.get("n_sites"))
    if "depth" in fields:
        kw["depth"] = _positive_int("depth", p["depth"])
    if "pattern" in fields:
        if p["pattern"] not in PATTERNS:
            raise ValueError(f"unknown pattern {p['pattern']!r}; choose one of {PATTERNS}")
        kw["pattern"] = p["pattern"]
    if "lateral" in fields:
        kw["lateral"] = bool(p.get("lateral"))
    if "activation" in fields:
        kw["activation"] = _parse_activation(p.get("activation"))
    return family, in_f, out_f, kw


def structure_key(design: dict) -> str:
    """The design without drawing positions, as canonical JSON (equal key: same generator)."""
    d = {k: v for k, v in design.items() if k != "cores"}
    d["cores"] = [{k: v for k, v in c.items() if k not in _LAYOUT_KEYS}
                  for c in design.get("cores", [])]
    return json.dumps(json_safe(d), sort_keys=True)


def design_activation(design: dict):
    """The activation ``from_graph`` is given for a drawn design.

    The design's own ``activation`` entry when it has one; otherwise ReLU between stages, and
    none at all for a single-stage design (which has no barrier to put it on).
    """
    act = design.get("activation")
    if act not in (None, "", []):
        return act
    stages = {int(c.get("stage", 0)) for c in design.get("cores", [])
              if isinstance(c.get("stage", 0), int)}
    return "relu" if len(stages) > 1 else "identity"


class TopologyDesigner(ActionWidget):
    """Design a generator: family presets or a network drawn by hand, with live costs.

    Parameters
    ----------
    family : str
        Preset family to start with (``"ttn"``, ``"attn"``, ``"mera"``, ``"brickwall"``,
        ``"mpo"``, ``"lowrank"``).
    in_features, out_features : int
        Shape of the weight, ``(out_features, in_features)``.
    design : dict, str, path or Generator, optional
        Start in custom mode with this ``adntn-graph/1`` design (JSON text, a file, a dict or a
        generator to copy).
    memory_budget : int or str, optional
        Bytes (or ``"2GiB"``) a design may need at its peak (cores, ``W`` and the
        intermediates of generating it); larger designs are refused before anything is
        allocated. By default the budget of :mod:`adntn_lab.resources` (half the available
        memory unless set).
    **preset
        Preset options: ``bond_dim``, ``n_sites``, ``depth``, ``pattern``, ``activation``
        (a name, or names separated by commas, one per stage), ``lateral``, ``seed``.

    Attributes
    ----------
    generator : Generator
        The current design (the last valid one while the drawing is invalid).
    mode : {"preset", "custom"}
    preset : dict
        The preset form's values.
    design : dict
        The drawing, format ``adntn-graph/1``.
    stats : dict
        Parameters, compression, FLOPs and peak memory of generating ``W``.
    error : str
        Why the last edit was refused ("" when the design is valid).

    Examples
    --------
    >>> d = TopologyDesigner("ttn", 1024, 1024, bond_dim=4)
    >>> d.generator.num_params
    528
    """

    _esm = STATIC / "designer.js"
    _css = STATIC / "designer.css"

    mode = traitlets.Unicode("preset").tag(sync=True)
    preset = traitlets.Dict().tag(sync=True)
    design = traitlets.Dict().tag(sync=True)
    design_rev = traitlets.Int(0).tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)
    choices = traitlets.Dict().tag(sync=True)

    _actions = {
        "load_json": "load_json",
        "new_custom": "new_custom",
        "edit_as_custom": "edit_as_custom",
        "reshape": "reshape",
    }

    def __init__(self, family: str = "ttn", in_features: int = 256, out_features: int = 256,
                 *, design=None, memory_budget=None, **preset):
        super().__init__()
        from ..resources import memory_budget as resolve_budget

        if memory_budget is not None:
            if isinstance(memory_budget, bool) or (isinstance(memory_budget, int)
                                                   and memory_budget <= 0):
                raise ValueError(f"memory_budget must be a positive number of bytes or a size "
                                 f"such as '2GiB', got {memory_budget!r}")
            resolve_budget(memory_budget)  # a size string that cannot be read fails here
        self.memory_budget = memory_budget
        unknown = set(preset) - set(_PRESET_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown preset option(s) {sorted(unknown)}; known: "
                            f"{', '.join(k for k in _PRESET_DEFAULTS if k != 'family')}")
        self._gen: Generator | None = None
        self._needs_calibration = False
        self._key: str | None = None
        self._bad_key: str | None = None
        self._internal = False
        self.choices = {
            "families": list(FAMILIES),
            "fields": FAMILY_FIELDS,
            "patterns": list(PATTERNS),
            "activations": list(ACTIVATIONS),
            "format": FORMAT,
        }
        start = {**_PRESET_DEFAULTS, **preset, "family": family, "in_features": in_features,
                 "out_features": out_features}
        self.preset = json_safe(start)
        if self._gen is None:
            raise ValueError(self.error or "could not build the preset")
        if design is not None and not self.load_json(design):
            raise ValueError(self.error)

    # ------------------------------------------------------------------ public
    @property
    def generator(self) -> Generator:
        """The current generator (calibrated on first access)."""
        if self._needs_calibration:
            self._gen.calibrate()
            self._needs_calibration = False
        return self._gen

    def to_json(self, indent: int | None = 2) -> str:
        """The current generator in the ``adntn-graph/1`` JSON format."""
        return json.dumps(self.generator.to_dict(), indent=indent)

    def load_json(self, source) -> bool:
        """Load a design (JSON text, file path, dict or Generator) into custom mode.

        Returns
        -------
        bool
            True when loaded; False when the design was refused, with the reason in ``error``
            and the previous design kept.
        """
        with self._guard("load"):
            t0 = time.perf_counter()
            spec = _read_design(source)
            gen = self._build_custom(spec)
            if not all(k in c for c in spec["cores"] for k in _LAYOUT_KEYS):
                pos = gen.layout()
                for c in spec["cores"]:
                    c.setdefault("x", float(pos[c["name"]][0]))
                    c.setdefault("y", float(pos[c["name"]][1]))
            self._commit(gen, spec, mode="custom", t0=t0)
            return True
        return False

    def new_custom(self, in_features=None, out_features=None, n_sites=None) -> None:
        """Start an empty drawing (custom mode) for a weight of the given shape."""
        fam, in_f, out_f, kw = preset_kwargs(self.preset)
        in_f = _positive_int("in_features", in_features) if in_features else in_f
        out_f = _positive_int("out_features", out_features) if out_features else out_f
        n = _int_or_none("n_sites", n_sites) or 2
        tz = tensorize(out_f, in_f, n_sites=n)
        spec = {"format": FORMAT, "in_features": in_f, "out_features": out_f,
                "out_modes": list(tz.out_modes), "in_modes": list(tz.in_modes),
                "activation": "relu", "cores": [], "bonds": []}
        self._set_design(spec, mode="custom")
        self.error = "the drawing is empty: click on the canvas to add a core"

    def edit_as_custom(self) -> None:
        """Copy the current design into custom mode to edit it by hand."""
        spec = copy.deepcopy(self._gen.to_dict())
        spec.pop("family", None)
        self.load_json(spec)

    def reshape(self, in_features=None, out_features=None, n_sites=None) -> None:
        """Change the weight shape or number of sites of the drawing (balanced modes)."""
        spec = copy.deepcopy(self.design)
        in_f = _positive_int("in_features", in_features or spec.get("in_features"))
        out_f = _positive_int("out_features", out_features or spec.get("out_features"))
        n = _int_or_none("n_sites", n_sites) or len(spec.get("out_modes") or []) or 2
        tz = tensorize(out_f, in_f, n_sites=n)
        spec.update(in_features=in_f, out_features=out_f, out_modes=list(tz.out_modes),
                    in_modes=list(tz.in_modes))
        self._set_design(spec, mode="custom")

    # ------------------------------------------------------------------ trait handlers
    @traitlets.observe("preset")
    def _on_preset(self, change):
        if self._internal:
            return
        with self._guard("preset"), self._busy("building the preset…"):
            t0 = time.perf_counter()
            family, in_f, out_f, kw = preset_kwargs(change["new"])
            check_preset(family, in_f, out_f, budget=self.memory_budget, **kw)
            gen = build(family, in_f, out_f, calibrate=False, memory_budget=self.memory_budget,
                        **kw)
            spec = gen.to_dict()
            self._commit(gen, spec, mode="preset", t0=t0)

    @traitlets.observe("design")
    def _on_design(self, change):
        if self._internal or self.mode != "custom":
            return
        self._apply_design(change["new"])

    @traitlets.observe("mode")
    def _on_mode(self, change):
        if self._internal:
            return
        if change["new"] not in ("preset", "custom"):
            self.error = f"unknown mode {change['new']!r}; use 'preset' or 'custom'"
            self._set_quietly(mode=change["old"])
            return
        if change["new"] == "preset":
            self._on_preset({"new": self.preset})
        else:
            self._apply_design(self.design)

    # ------------------------------------------------------------------ internals
    def _apply_design(self, spec) -> None:
        key = structure_key(spec)
        if key == self._key and self._gen is not None:
            self.error = ""
            return  # only drawing positions changed
        if key == self._bad_key:
            return
        t0 = time.perf_counter()
        try:
            with self._busy("checking the drawing…"):
                gen = self._build_custom(spec)
        except Exception as exc:  # shown in the widget; the last valid generator stays
            self._bad_key = key
            self.error = describe_error("design", exc)
            return
        self._commit(gen, None, mode="custom", t0=t0, key=key)

    def _build_custom(self, spec) -> Generator:
        if not isinstance(spec, dict):
            raise TypeError(f"a design is a dict in the {FORMAT} format, got "
                            f"{type(spec).__name__}")
        if not spec.get("cores"):
            raise ValueError("the drawing has no cores: click on the canvas to add one")
        check_graph(spec, budget=self.memory_budget)
        return from_graph(spec, activation=design_activation(spec), calibrate=False)

    def _commit(self, gen: Generator, spec: dict | None, *, mode: str, t0=None,
                key: str | None = None) -> None:
        """Make ``gen`` current; ``spec`` (if given) replaces the drawing."""
        t0 = time.perf_counter() if t0 is None else t0
        report = gen.cost()
        elapsed = (time.perf_counter() - t0) * 1e3
        self._gen = gen
        self._needs_calibration = not any("params" in c for c in (spec or self.design or {})
                                          .get("cores", []))
        self._bad_key = None
        if spec is not None:
            self._set_design(spec, mode=mode)
        self._key = structure_key(self.design)
        self.stats = _stats(gen, report, elapsed)
        self.error = ""

    def _set_design(self, spec: dict, *, mode: str) -> None:
        self._set_quietly(mode=mode, design=json_safe(spec))
        self.design_rev += 1

    def _set_quietly(self, **traits) -> None:
        self._internal = True
        try:
            with self.hold_sync():
                for k, v in traits.items():
                    setattr(self, k, v)
        finally:
            self._internal = False


def _read_design(source) -> dict:
    if isinstance(source, Generator):
        spec = source.to_dict()
        spec.pop("family", None)
        return spec
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip()
                                    .startswith(("{", "["))):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{str(source)[:80]!r} is neither JSON text nor a file")
        source = path.read_text()
    if isinstance(source, (str, bytes)):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as err:
            raise ValueError(f"could not read the design JSON: {err}") from None
    if not isinstance(source, dict):
        raise TypeError(f"a design is a JSON object (text or file), a dict or a Generator, got "
                        f"{type(source).__name__} {str(source)[:40]}")
    return copy.deepcopy(source)


def _stats(gen: Generator, report, elapsed_ms: float) -> dict:
    o, i = gen.shape
    return json_safe({
        "family": gen.family,
        "shape": [o, i],
        "num_params": gen.num_params,
        "dense_params": o * i,
        "compression_ratio": gen.compression_ratio,
        "flops": report.total_flops,
        "peak_bytes": report.peak_bytes,
        "largest_intermediate": report.largest_intermediate,
        "num_stages": gen.num_stages,
        "num_cores": len(gen.cores),
        "site_dims": list(gen.tensorization.site_dims),
        "out_modes": list(gen.tensorization.out_modes),
        "in_modes": list(gen.tensorization.in_modes),
        "activations": [a.name for a in gen.activations],
        "text": {
            "params": f"{gen.num_params:,}",
            "compression": format_ratio(gen.compression_ratio),
            "flops": format_count(report.total_flops, "FLOP"),
            "peak": format_bytes(report.peak_bytes),
        },
        "ms": round(elapsed_ms, 1),
    })
