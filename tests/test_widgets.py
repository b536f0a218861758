"""Headless tests of the widgets: drive them exactly as the browser does and check Python state.

The front end talks to a widget in two ways, both reproduced here through ``_handle_msg``:
``update`` messages that set synced traits, and ``custom`` messages ``{"action": ...}`` for
button presses.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import adntn_lab as al
from adntn_lab.models import build_model
from adntn_lab.nn import compress_model
from adntn_lab.train import fit
from adntn_lab.widgets import (
    CompressionExplorer,
    ContractionInspector,
    LiveTrainer,
    TopologyDesigner,
    pareto_front,
)
from adntn_lab.widgets._common import static_file


def browser_sets(widget, **state):
    """Deliver a trait update exactly as the front end sends it."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state,
                                             "buffer_paths": []}}, "buffers": []})


def browser_clicks(widget, action, **content):
    """Deliver a button press (custom message) exactly as the front end sends it."""
    widget._handle_msg({"content": {"data": {"method": "custom",
                                             "content": {"action": action, **content}}},
                        "buffers": []})


def same_structure(a: al.Generator, b: al.Generator) -> None:
    assert list(a.cores) == list(b.cores)
    for name in a.cores:
        ca, cb = a.cores[name], b.cores[name]
        assert (ca.inds, ca.shape, ca.stage, ca.sites, ca.constant) == \
               (cb.inds, cb.shape, cb.stage, cb.sites, cb.constant), name
    assert [x.name for x in a.activations] == [x.name for x in b.activations]
    assert a.tensorization == b.tensorization


# ---------------------------------------------------------------------------- static files


def test_static_files_are_package_data():
    import adntn_lab.widgets

    folder = Path(adntn_lab.widgets.__file__).parent / "static"
    for name in ("designer", "inspector", "trainer", "explorer", "common"):
        js = static_file(f"{name}.js")
        assert js.parent == folder
        assert "export" in js.read_text()
    for name in ("designer", "inspector", "trainer", "explorer", "base"):
        assert static_file(f"{name}.css").read_text().strip()
    with pytest.raises(FileNotFoundError, match="reinstall"):
        static_file("no-such-widget.js")


def test_importing_the_widgets_loads_neither_torch_nor_any_file():
    # each check in a fresh interpreter: this one has long imported torch
    code = ("import builtins, io, sys\n"
            "opened = []\n"
            "real = io.open\n"
            "def spy(file, *a, **k):\n"
            "    opened.append(str(file))\n"
            "    return real(file, *a, **k)\n"
            "builtins.open = io.open = spy\n"
            "import adntn_lab.widgets\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'anywidget' not in sys.modules, 'anywidget imported'\n"
            "bad = [f for f in opened if f.endswith(('.js', '.css'))]\n"
            "assert not bad, bad\n"
            "from adntn_lab.widgets import TopologyDesigner\n"
            "assert 'torch' not in sys.modules, 'the designer imported torch'\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_widget_modules_are_files_for_hot_reload():
    from anywidget._file_contents import FileContents

    for cls, name in ((TopologyDesigner, "designer"), (ContractionInspector, "inspector"),
                      (LiveTrainer, "trainer"), (CompressionExplorer, "explorer")):
        # anywidget turns a Path into a FileContents it can watch (ANYWIDGET_HMR=1)
        for key, ext in (("_esm", "js"), ("_css", "css")):
            value = cls.__dict__[key]
            assert isinstance(value, FileContents), (cls, key)
            assert Path(value._path) == static_file(f"{name}.{ext}")
    d = TopologyDesigner("ttn", 16, 16)
    assert d._esm == static_file("designer.js").read_text()
    assert d._common_js == static_file("common.js").read_text()
    assert d._common_css == static_file("base.css").read_text()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_es_modules_parse():
    for name in ("common", "designer", "inspector", "trainer", "explorer"):
        text = static_file(f"{name}.js").read_text()
        res = subprocess.run(["node", "--input-type=module", "--check"],
                             input=text, capture_output=True, text=True)
        assert res.returncode == 0, f"{name}: {res.stderr}"
        if name != "common":  # the helpers live only in common.js
            assert "function el(" not in text and "loadCommon(model)" in text


def test_common_helpers_run_in_node(tmp_path):
    """common.js's pure helpers, imported as the page imports them (an ES module)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    script = tmp_path / "check.mjs"
    script.write_text(
        f"import * as c from {json.dumps(static_file('common.js').as_uri())};\n"
        "const names = ['el', 'svg', 'wire', 'errorBanner', 'busySign', 'watchConnection',"
        " 'setup', 'applyOnEnter', 'ensureStyles'];\n"
        "for (const n of names) if (typeof c[n] !== 'function') throw new Error(n);\n"
        "const seen = [];\n"
        "const model = { on: (n, f) => seen.push(['on', n]),\n"
        "                off: (n, f) => seen.push(['off', n]) };\n"
        "const off = c.wire(model, { 'change:a': () => 0, 'change:b': () => 0 });\n"
        "off();\n"
        "console.log(JSON.stringify(seen));\n")
    res = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [["on", "change:a"], ["on", "change:b"],
                                      ["off", "change:a"], ["off", "change:b"]]


def test_clear_widget_caches_rereads_the_shared_files(monkeypatch, tmp_path):
    from adntn_lab.widgets import _common, clear_widget_caches

    assert _common.shared_text("common.js") == static_file("common.js").read_text()
    fake = tmp_path / "common.js"
    fake.write_text("export const changed = 1;")
    monkeypatch.setattr(_common, "STATIC", tmp_path)
    assert "changed" not in _common.shared_text("common.js")  # still the cached text
    clear_widget_caches()
    assert _common.shared_text("common.js") == "export const changed = 1;"
    clear_widget_caches()


def test_array_to_png_keeps_the_aspect_ratio():
    import base64
    import struct

    def png_size(url):
        raw = base64.b64decode(url.split(",", 1)[1])
        return struct.unpack(">II", raw[16:24])  # width, height from the IHDR chunk

    from adntn_lab.widgets._common import array_to_png

    for rows, cols in ((32, 1024), (1024, 64), (100, 100), (300, 700), (12, 20)):
        w, h = png_size(array_to_png(np.ones((rows, cols)), max_side=256))
        assert max(w, h) <= 256
        assert w / h == pytest.approx(cols / rows, rel=0.15), (rows, cols, w, h)


# ---------------------------------------------------------------------------- designer


@pytest.mark.parametrize("preset, kwargs", [
    ({"family": "ttn", "bond_dim": 3}, {"bond_dim": 3, "activation": "relu"}),
    ({"family": "attn", "bond_dim": 2, "n_sites": 4}, {"bond_dim": 2, "n_sites": 4,
                                                      "activation": "relu"}),
    ({"family": "mera", "bond_dim": 2, "lateral": True, "activation": "tanh"},
     {"bond_dim": 2, "lateral": True, "activation": "tanh"}),
    ({"family": "brickwall", "depth": 2, "pattern": "brickwall"},
     {"depth": 2, "pattern": "brickwall", "activation": "relu"}),
    ({"family": "mpo", "bond_dim": 3, "n_sites": 3}, {"bond_dim": 3, "n_sites": 3}),
    ({"family": "lowrank", "bond_dim": 5}, {"rank": 5}),
    ({"family": "ttn", "bond_dim": 2, "activation": "identity, tanh, identity"},
     {"bond_dim": 2, "activation": ["identity", "tanh", "identity"]}),
])
def test_designer_presets_match_build(preset, kwargs):
    d = TopologyDesigner("ttn", 64, 48)
    browser_sets(d, preset={**d.preset, **preset})
    assert d.error == ""
    ref = al.build(preset["family"], 64, 48, **kwargs)
    same_structure(d.generator, ref)
    np.testing.assert_allclose(d.generator.weight(), ref.weight(), rtol=1e-12, atol=0)
    report = ref.cost()
    s = d.stats
    assert (s["num_params"], s["flops"], s["peak_bytes"]) == \
           (ref.num_params, report.total_flops, report.peak_bytes)
    assert s["compression_ratio"] == pytest.approx(64 * 48 / ref.num_params)
    # the drawing the page shows is the preset's own description
    assert {c["name"] for c in d.design["cores"]} == set(ref.cores)


def test_designer_preset_refresh_reuses_the_plan():
    d = TopologyDesigner("ttn", 1024, 1024, bond_dim=4)
    browser_sets(d, preset={**d.preset, "bond_dim": 5})  # plans the new structure
    browser_sets(d, preset={**d.preset, "bond_dim": 4})
    before = al.plan_cache_info()
    browser_sets(d, preset={**d.preset, "bond_dim": 5})  # estimate and build: no new plan
    after = al.plan_cache_info()
    assert d.stats["num_params"] == al.build("ttn", 1024, 1024, bond_dim=5).num_params
    assert after["misses"] == before["misses"] and after["hits"] > before["hits"]


def _drawing_session():
    """The designs the front end sends while a user draws a two-leaf tree, step by step."""
    d0 = {"format": "adntn-graph/1", "in_features": 16, "out_features": 12,
          "out_modes": [4, 3], "in_modes": [4, 4], "activation": "relu", "cores": [],
          "bonds": []}
    steps = []
    d = copy.deepcopy(d0)
    d["cores"].append({"name": "c0", "stage": 0, "kind": "core", "constant": False,
                       "sites": [], "x": 0.0, "y": 0.0})                  # click: add core
    steps.append(copy.deepcopy(d))
    d["cores"].append({"name": "c1", "stage": 0, "kind": "core", "constant": False,
                       "sites": [], "x": 2.0, "y": 0.0})
    steps.append(copy.deepcopy(d))
    d["cores"].append({"name": "c2", "stage": 1, "kind": "core", "constant": False,
                       "sites": [], "x": 1.0, "y": 1.2})
    steps.append(copy.deepcopy(d))
    d["bonds"].append({"u": "c0", "v": "c2", "dim": 3})                   # connect
    steps.append(copy.deepcopy(d))
    d["bonds"].append({"u": "c1", "v": "c2", "dim": 2})
    steps.append(copy.deepcopy(d))
    d["cores"][0]["sites"] = [0]                                          # mark sites
    steps.append(copy.deepcopy(d))
    d["cores"][1]["sites"] = [1]
    steps.append(copy.deepcopy(d))
    return d0, steps


def test_drawn_custom_design_equals_from_graph():
    d = TopologyDesigner("ttn", 16, 12)
    preset_gen = d.generator
    d0, steps = _drawing_session()
    browser_clicks(d, "new_custom", in_features=16, out_features=12, n_sites=2)
    assert d.mode == "custom"
    assert d.design["out_modes"] == [4, 3] and d.design["in_modes"] == [4, 4]
    assert d.generator is preset_gen and "empty" in d.error
    for design in steps[:-1]:
        browser_sets(d, design=design)
        assert d.error, "an unfinished drawing must be reported"
        assert d.generator is preset_gen  # the last valid generator stays
    browser_sets(d, design=steps[-1])
    assert d.error == ""
    ref = al.from_graph(steps[-1])
    same_structure(d.generator, ref)
    np.testing.assert_allclose(d.generator.weight(), ref.weight(), rtol=1e-12, atol=0)
    assert d.stats["num_params"] == ref.num_params == 16 * 3 + 12 * 2 + 3 * 2
    assert d.stats["flops"] == ref.cost().total_flops
    # export / import round trip in the adntn-graph/1 format
    exported = json.loads(d.to_json())
    assert exported["format"] == "adntn-graph/1"
    again = al.from_graph(exported)
    same_structure(again, ref)
    np.testing.assert_allclose(again.weight(), ref.weight(), rtol=1e-12, atol=0)


def test_moving_a_core_keeps_the_generator():
    d = TopologyDesigner("ttn", 16, 12)
    _, steps = _drawing_session()
    browser_sets(d, mode="custom")
    browser_sets(d, design=steps[-1])
    gen = d.generator
    moved = copy.deepcopy(steps[-1])
    moved["cores"][2]["x"] = 5.5
    browser_sets(d, design=moved)
    assert d.generator is gen and d.error == ""
    assert d.design["cores"][2]["x"] == 5.5


def test_invalid_edits_keep_the_last_valid_generator_and_say_why():
    d = TopologyDesigner("ttn", 16, 12)
    _, steps = _drawing_session()
    browser_sets(d, mode="custom")
    browser_sets(d, design=steps[-1])
    good, stats = d.generator, dict(d.stats)
    w = good.weight()

    doubled = copy.deepcopy(steps[-1])
    doubled["cores"][1]["sites"] = [0]
    browser_sets(d, design=doubled)
    assert re.search(r"site 0 is doubled", d.error)
    assert d.generator is good and d.stats == stats

    dangling = copy.deepcopy(steps[-1])
    dangling["bonds"].append({"u": "c2", "v": "ghost", "dim": 2})
    browser_sets(d, design=dangling)
    assert "dangling" in d.error and d.generator is good

    bad_dim = copy.deepcopy(steps[-1])
    bad_dim["bonds"][0]["dim"] = 0
    browser_sets(d, design=bad_dim)
    assert "positive integer 'dim'" in d.error and d.generator is good

    browser_clicks(d, "load_json", source="{not json")
    assert "could not read the design JSON" in d.error and d.generator is good
    browser_clicks(d, "reshape", in_features=-3)
    assert "in_features" in d.error and d.generator is good
    browser_clicks(d, "explode")
    assert "unknown action 'explode'" in d.error
    np.testing.assert_array_equal(d.generator.weight(), w)

    browser_sets(d, design=steps[-1])  # fixing the drawing clears the message
    assert d.error == "" and d.generator.num_params == good.num_params

    browser_sets(d, mode="preset")
    preset_gen = d.generator
    browser_sets(d, preset={**d.preset, "bond_dim": "many"})
    assert "bond dimension must be a positive integer" in d.error
    assert d.generator is preset_gen
    browser_sets(d, preset={**d.preset, "family": "hypercube"})
    assert "unknown family 'hypercube'" in d.error and d.generator is preset_gen


def test_edit_as_custom_and_load_json():
    d = TopologyDesigner("mera", 64, 64, bond_dim=2)
    browser_clicks(d, "edit_as_custom")
    assert d.mode == "custom" and d.error == ""
    same_structure(d.generator, al.from_graph(al.build("mera", 64, 64, bond_dim=2).to_dict()))
    other = al.build("attn", 32, 32, bond_dim=2)
    browser_clicks(d, "load_json", source=json.dumps(other.to_dict()))
    assert d.error == ""
    same_structure(d.generator, al.from_graph(other.to_dict()))
    # a family's cores may start at another scale than a drawn core's; calibration (to 1e-6)
    # brings both to the same weight
    np.testing.assert_allclose(d.generator.weight(), other.weight(), rtol=1e-5, atol=1e-9)
    assert d.load_json({"cores": []}) is False and "no cores" in d.error


def test_designer_constructor_rejects_bad_arguments():
    with pytest.raises(TypeError, match="unknown preset option"):
        TopologyDesigner("ttn", 16, 16, colour="red")
    with pytest.raises(ValueError, match="unknown family"):
        TopologyDesigner("hypercube", 16, 16)


@pytest.mark.parametrize("family, kwargs", [
    ("ttn", {"bond_dim": 5}), ("attn", {"bond_dim": 3, "n_sites": 4}),
    ("mera", {"bond_dim": 3}), ("brickwall", {"depth": 2}), ("mpo", {"bond_dim": 6}),
    ("lowrank", {"rank": 7}),
])
def test_the_plan_peak_is_the_cost_report_of_the_built_generator(family, kwargs):
    from adntn_lab.families import get_family
    from adntn_lab.widgets._limits import plan_peak

    fam = get_family(family)
    opts = fam.resolve_options({k: v for k, v in kwargs.items() if k != "n_sites"})
    tz = fam.tensorize(128, 256, n_sites=kwargs.get("n_sites"), options=opts)
    gen = al.build(family, 256, 128, **kwargs)
    assert plan_peak(fam.blueprint(tz, opts)) == gen.cost(dtype="float64").peak_bytes


def test_an_oversized_preset_is_refused_in_place_without_allocating():
    import tracemalloc

    from adntn_lab.widgets._limits import check_preset

    d = TopologyDesigner("ttn", 1024, 1024, bond_dim=4, memory_budget="2GiB")
    gen, stats, design = d.generator, dict(d.stats), copy.deepcopy(d.design)
    tracemalloc.start()
    try:
        browser_sets(d, preset={**d.preset, "bond_dim": 1000})  # "1e3" typed in the field
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"the refused design allocated {peak / 2**20:.0f} MiB"
    assert "ttn 1024x1024 with bond_dim=1000 needs about" in d.error
    assert "memory budget of 2 GiB" in d.error
    assert d.generator is gen and d.stats == stats and d.design == design
    assert d.busy == ""
    # the suggested smaller setting fits
    hint = re.search(r"; bond_dim=(\d+) would fit", d.error)
    assert hint, d.error
    smaller = int(hint.group(1))
    assert smaller < 1000
    assert check_preset("ttn", 1024, 1024, bond_dim=smaller, budget="2GiB") <= 2 * 2**30
    browser_sets(d, preset={**d.preset, "bond_dim": 6})
    assert d.error == "" and d.generator.num_params == al.build("ttn", 1024, 1024,
                                                                 bond_dim=6).num_params


def test_a_large_mera_is_refused_and_the_limit_is_configurable():
    d = TopologyDesigner("mera", 256, 256, bond_dim=2, memory_budget="2GiB")
    gen = d.generator
    browser_sets(d, preset={**d.preset, "in_features": 4096, "out_features": 4096,
                            "bond_dim": 64})
    # its cores fit (68.7 M parameters), but generating W would not
    assert "mera 4096x4096 with bond_dim=64 needs about 4 PiB at its peak" in d.error
    assert d.generator is gen and d.stats["shape"] == [256, 256]
    small = TopologyDesigner("ttn", 64, 64, bond_dim=2, memory_budget=200 * 2**10)
    browser_sets(small, preset={**small.preset, "bond_dim": 64})
    assert "memory budget of 200 KiB" in small.error and small.stats["num_params"] == \
        al.build("ttn", 64, 64, bond_dim=2).num_params
    with pytest.raises(ValueError, match="memory_budget must be"):
        TopologyDesigner("ttn", 64, 64, memory_budget=-1)
    with pytest.raises(ValueError, match="cannot read the memory size"):
        TopologyDesigner("ttn", 64, 64, memory_budget="lots")


def test_a_huge_drawn_bond_is_refused_and_an_expanding_design_says_so():
    d = TopologyDesigner("ttn", 64, 64, memory_budget="2GiB")
    browser_sets(d, mode="custom")
    two = {"format": "adntn-graph/1", "in_features": 64, "out_features": 64,
           "out_modes": [8, 8], "in_modes": [8, 8],
           "cores": [{"name": "a", "stage": 0, "sites": [0], "x": 0, "y": 0},
                     {"name": "b", "stage": 0, "sites": [1], "x": 1, "y": 0}],
           "bonds": [{"u": "a", "v": "b", "dim": 3000}]}
    browser_sets(d, design=two)
    assert d.error == ""  # 384,000 parameters: small in memory, but larger than dense
    assert d.stats["num_params"] == 2 * 64 * 3000
    assert d.stats["text"]["compression"] == "0.011× (more parameters than the dense W)"
    good = d.generator
    huge = copy.deepcopy(two)
    huge["cores"].append({"name": "c", "stage": 0, "x": 2, "y": 0})
    huge["bonds"] += [{"u": "b", "v": "c", "dim": 3000}, {"u": "c", "v": "a", "dim": 3000}]
    browser_sets(d, design=huge)
    assert "the drawing (64x64, 3 cores) needs about" in d.error
    assert "bond dimensions of at most" in d.error
    assert d.generator is good


# ---------------------------------------------------------------------------- inspector


def _open_indices(gen: al.Generator, names) -> list[int]:
    """Dimensions of the indices a set of cores shares with the rest (or that are physical)."""
    count: dict[str, int] = {}
    for n in names:
        for ix in gen.cores[n].inds:
            count[ix] = count.get(ix, 0) + 1
    return sorted(gen.size_dict[ix] for ix, c in count.items() if c == 1)


def test_inspector_slider_walks_the_cost_report():
    gen = al.build("ttn", 64, 48, bond_dim=3, activation="identity", n_sites=4)
    ins = ContractionInspector(gen)
    report = gen.cost()
    tn = gen.tn
    seen = 0
    drawings = set()
    for g, group in enumerate(ins.groups):
        browser_sets(ins, group=g)
        assert ins.step == 0
        for k in range(group["steps"]):
            browser_sets(ins, step=k)
            assert ins.error == ""
            st = report.steps[ins.global_step]
            assert (st.stage, st.group, st.step) == (group["stage"], group["group"], k)
            it = ins.intermediate
            assert tuple(it["shape"]) == st.output_shape
            assert it["flops"] == st.flops and it["size"] == math.prod(st.output_shape)
            # the highlighted cores are exactly what this intermediate is made of: their
            # open legs are its legs, and (all activations identity) contracting them in
            # quimb gives a tensor of the same norm
            cores = ins.highlight
            assert sorted(it["shape"]) == _open_indices(gen, cores)
            sub = tn.select_any(cores).contract()
            assert it["norm"] == pytest.approx(float(np.linalg.norm(sub.data)), rel=1e-9)
            drawings.add(ins.drawing)
            seen += 1
    assert seen == len(report.steps)
    assert len(drawings) == seen  # every step outlines other cores
    assert ins.highlight == list(gen.cores)  # the last step holds every core


def test_inspector_out_of_range_input_is_reported():
    ins = ContractionInspector(al.build("ttn", 16, 16, bond_dim=2))
    before = dict(ins.intermediate)
    browser_sets(ins, step=99)
    assert "step must lie in" in ins.error
    assert ins.step == 0 and ins.intermediate == before
    browser_sets(ins, group=-4)
    assert "group must lie in" in ins.error and ins.group == 0
    browser_sets(ins, backend="abacus")
    assert "not available" in ins.error and ins.backend == "numpy"
    browser_sets(ins, memory_limit=-5)
    assert "memory_limit must be" in ins.error and ins.memory_limit > 0


def test_inspector_compares_schedules_and_optimisers():
    ring = {"in_features": 4, "out_features": 4, "out_modes": [2, 2], "in_modes": [2, 2],
            "cores": [{"name": "a", "stage": 0, "sites": [0]}, {"name": "b", "stage": 0},
                      {"name": "c", "stage": 0, "sites": [1]}, {"name": "d", "stage": 0}],
            "bonds": [{"u": "a", "v": "b", "dim": 16}, {"u": "b", "v": "c", "dim": 16},
                      {"u": "c", "v": "d", "dim": 16}, {"u": "d", "v": "a", "dim": 16}]}
    gen = al.from_graph(ring, activation="identity")
    ins = ContractionInspector(gen, batch_size=8)
    limit = ins.memory_limit
    browser_clicks(ins, "compare")  # Measure: runs in the background
    assert ins.wait(60.0) and not ins.measuring
    assert ins.error == "" and ins.busy == ""
    rows = {(r["optimizer"], r["schedule"]): r for r in ins.comparison}
    assert set(rows) == {(o, s) for o in ("auto", "greedy", "optimal")
                         for s in ("materialize", "fused", "sliced")}
    for (opt, schedule), row in rows.items():
        ref_gen = al.from_graph(ring, activation="identity", optimize=opt)
        if schedule == "sliced":
            ref = ref_gen.cost(8, "materialize", memory_limit=limit)
        else:
            ref = ref_gen.cost(8, schedule)
        assert (row["flops"], row["peak_bytes"]) == (ref.total_flops, ref.peak_bytes)
        assert row["time_ms"] > 0
    assert rows[("auto", "sliced")]["slices"] > 1  # the ring must be cut to fit
    browser_sets(ins, backend="torch")
    browser_clicks(ins, "compare")
    assert ins.wait(60.0) and ins.error == ""
    timed = [r for r in ins.comparison if r["flops"] is not None]
    assert timed and all(r["time_ms"] > 0 for r in timed)
    # a new setting refreshes the predicted costs at once; times wait for Measure
    browser_sets(ins, memory_limit=2000)
    assert "memory_limit allows 2,000 bytes" in rows_note(ins, "auto", "sliced")
    assert all(r["time_ms"] is None for r in ins.comparison)
    browser_sets(ins, batch_size=16)
    ref = al.from_graph(ring, activation="identity").cost(16, "fused")
    fused = next(r for r in ins.comparison
                 if (r["optimizer"], r["schedule"]) == ("auto", "fused"))
    assert (fused["flops"], fused["text"]["time"]) == (ref.total_flops, "press Measure")


def test_measure_reports_progress_and_stops_early():
    gen = al.build("ttn", 64, 64, bond_dim=3)
    ins = ContractionInspector(gen, batch_size=4)
    seen = []
    stop = __import__("threading").Event()

    def progress(done, total, opt, schedule):
        seen.append((done, total, opt, schedule))
        if done == 1:
            stop.set()  # as a Stop press during the second measurement

    from adntn_lab.widgets.inspector import compare_schedules

    rows = compare_schedules(gen, batch_size=4, memory_limit=ins.memory_limit,
                             progress=progress, stop_event=stop)
    assert [s[:2] for s in seen] == [(0, 9), (1, 9)]
    measured = [r for r in rows if r["time_ms"] is not None]
    assert len(measured) == 2
    assert all(r["note"] == "stopped" for r in rows
               if r["flops"] is not None and r["time_ms"] is None)
    browser_clicks(ins, "stop")  # nothing running: harmless
    assert ins.error == "" and not ins.measuring


def rows_note(ins, opt, schedule):
    return next(r["note"] for r in ins.comparison
                if r["optimizer"] == opt and r["schedule"] == schedule)


# ---------------------------------------------------------------------------- trainer


def _model(data, seed=0):
    torch.manual_seed(seed)
    return compress_model(build_model("fc2", data, hidden=32), topology="ttn", include=["fc1"],
                          min_params=0, bond_dim=3, seed=seed)


def _wait_for(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)


def test_stop_ends_the_training_thread_within_a_step(digits):
    tr = LiveTrainer(_model(digits), digits, epochs=500, update_interval=0.05)
    browser_clicks(tr, "start")
    assert tr.status == "running" and tr.running
    _wait_for(lambda: tr.step >= 3)
    before = tr.state.step
    browser_clicks(tr, "stop")
    assert tr.wait(60.0), "training did not stop"
    assert tr.state.step - before <= 2  # the step under way (and one that raced the press)
    assert tr.status == "stopped" and "Resume" in tr.message
    step = tr.state.step
    assert 3 <= step < 500 * 23
    time.sleep(0.2)
    assert tr.state.step == step and tr.step == step  # nothing runs after Stop
    if tr.state.batch > 0:  # stopped mid-epoch: Start is refused (Resume finishes the epoch)
        browser_clicks(tr, "start")
        assert "press Resume" in tr.error and not tr.running


def test_stop_and_resume_equals_an_uninterrupted_run(digits):
    reference = _model(digits)
    fit(reference, digits, epochs=3, lr=3e-3, batch_size=64, seed=0, progress=False)

    model = _model(digits)
    tr = LiveTrainer(model, digits, epochs=3, lr=3e-3, batch_size=64, seed=0,
                     update_interval=0.05)
    browser_clicks(tr, "start")
    _wait_for(lambda: tr.state.step >= 5)
    browser_clicks(tr, "stop")
    assert tr.wait(2.0)
    assert tr.status == "stopped" and 0 < tr.state.step < 3 * 23
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    time.sleep(0.1)
    for k, v in model.state_dict().items():  # stopping loses nothing and changes nothing
        assert torch.equal(v, snapshot[k])
    browser_clicks(tr, "resume")
    assert tr.wait(60.0) and tr.status == "finished", tr.error
    for (k, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs from the uninterrupted run"
    c = tr.curves
    assert c["epoch"] == [1, 2, 3] and len(c["test_acc"]) == 3
    assert c["step_loss"] == pytest.approx(tr.history.step_loss)
    assert tr.progress == 1.0 and tr.step == 69 and tr.epoch == 3
    cores = set(model.fc1.cores)
    assert {n.split(".", 1)[1] for n in tr.grad_norms["names"]} == cores
    assert all(v is not None and v > 0 for v in tr.grad_norms["values"])
    assert tr.weight_image.startswith("data:image/png;base64,")


def test_trainer_reports_parameters_and_compression(digits):
    model = _model(digits)
    tr = LiveTrainer(model, digits)
    gen = model.fc1.generator
    total = sum(p.numel() for p in model.parameters())
    dense_total = total - gen.num_params + 64 * 32
    assert tr.info["params"] == total
    assert tr.info["dense_params"] == dense_total
    assert tr.info["compression"] == pytest.approx(dense_total / total)
    assert tr.info["layers"][0]["params"] == gen.num_params
    with pytest.raises(TypeError, match="dataset name"):
        LiveTrainer(model, 42)


def test_a_failing_run_is_shown_in_the_widget(digits):
    torch.manual_seed(0)
    tr = LiveTrainer(build_model("fc2", digits, hidden=16), digits, epochs=2, lr=1e6,
                     optimizer="sgd")
    browser_clicks(tr, "start")
    assert tr.wait(30.0)
    assert tr.status == "error" and "loss became nan" in tr.error
    assert tr.state.step < 2 * 23


def test_a_second_trainer_of_the_same_model_stops_the_first(digits):
    model = _model(digits)
    first = LiveTrainer(model, digits, epochs=500, update_interval=0.05)
    browser_clicks(first, "start")
    _wait_for(lambda: first.state.step >= 2)
    second = LiveTrainer(model, digits, epochs=1, update_interval=0.05)  # the cell, re-run
    assert not first.running and first.status == "replaced"
    assert "newer LiveTrainer" in first.message
    stopped_at = first.state.step
    browser_clicks(first, "resume")
    assert "took over" in first.error and not first.running
    browser_clicks(first, "start")
    assert not first.running and first.state.step == stopped_at
    browser_clicks(second, "start")
    assert second.wait(60.0) and second.status == "finished", second.error
    assert second.history.epoch == [1]
    # a trainer of another model is left alone
    other = LiveTrainer(_model(digits, seed=1), digits, epochs=1)
    assert second.status == "finished" and other.status == "idle"


# ---------------------------------------------------------------------------- explorer


def _dominated(i, params, acc):
    return any(params[j] <= params[i] and acc[j] >= acc[i]
               and (params[j] < params[i] or acc[j] > acc[i])
               for j in range(len(params)) if j != i)


def test_pareto_front_on_constructed_points():
    # a known front (more parameters, strictly better), each point shadowed by worse ones
    front_pts = [(100, 0.50), (300, 0.70), (1000, 0.80), (5000, 0.95)]
    pts = list(front_pts)
    for p, a in front_pts:
        pts += [(p * 1.5, a - 0.01), (p, a - 0.2), (p * 1.01, a)]
    pts.append((5000, 0.95))  # an exact duplicate of a front point stays on the front
    pts.append((80, None))  # no accuracy: never on the front
    order = list(range(len(pts)))
    random.Random(1).shuffle(order)
    shuffled = [pts[i] for i in order]
    front = pareto_front([p for p, _ in shuffled], [a for _, a in shuffled])
    got = sorted({shuffled[i] for i in front})
    assert got == sorted(set(front_pts))
    assert sum(shuffled[i] == (5000, 0.95) for i in front) == 2
    params = [shuffled[i][0] for i in front]
    assert params == sorted(params)


def test_pareto_front_matches_brute_force_on_random_points():
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(1, 40)
        params = [rng.choice([10, 20, 50, 100, 200]) * rng.randint(1, 5) for _ in range(n)]
        acc = [round(rng.random(), 1) for _ in range(n)]
        expected = {i for i in range(n) if not _dominated(i, params, acc)}
        assert set(pareto_front(params, acc)) == expected


SWEEP_ROWS = [
    {"key": "dense", "family": "dense", "params": 4810, "test_acc": 0.96},
    {"key": "ttn-chi2", "family": "ttn", "bond_dim": 2, "params": 822, "test_acc": 0.90},
    {"key": "ttn-chi4", "family": "ttn", "bond_dim": 4, "params": 986, "test_acc": 0.93},
    {"key": "mpo-chi2", "family": "mpo", "bond_dim": 2, "params": 842, "test_acc": 0.88},
    {"key": "lowrank-chi2", "family": "lowrank", "bond_dim": 2, "params": 970,
     "test_acc": 0.86},
]


def test_explorer_marks_the_front_and_selects_points(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SWEEP_ROWS))
    ex = CompressionExplorer(path, layer_shape=(32, 64))
    assert [p["key"] for p in ex.points] == [r["key"] for r in SWEEP_ROWS]
    assert [ex.points[i]["key"] for i in ex.front] == ["ttn-chi2", "ttn-chi4", "dense"]
    assert [p["pareto"] for p in ex.points] == [True, True, True, False, False]

    browser_sets(ex, selected=3)  # a click on the MPO point
    assert ex.selection["key"] == "mpo-chi2" and ex.selection["dominated_by"] == ["ttn-chi2"]
    gen = ex.selected_generator
    ref = al.build("mpo", 64, 32, bond_dim=2)
    same_structure(gen, ref)
    browser_sets(ex, selected=4)
    assert ex.selected_generator.num_params == al.build("lowrank", 64, 32, rank=2).num_params
    browser_sets(ex, selected=0)
    assert ex.selected_generator is None and ex.selection["kind"] == "dense"
    browser_sets(ex, selected=17)
    assert "no point 17" in ex.error and ex.selected == 0
    with pytest.raises(ValueError, match="params"):
        CompressionExplorer([{"family": "ttn"}])


def test_explorer_runs_a_small_sweep(digits):
    ex = CompressionExplorer(families=["ttn", "brickwall"], budgets=[2], baselines=["dense"],
                             epochs=1, hidden=16)
    browser_clicks(ex, "run")
    assert ex.wait(180.0) and ex.status == "finished", ex.error
    keys = [p["key"] for p in ex.points]
    assert keys == ["dense", "ttn-chi2", "brickwall-depth2"]
    assert [p["label"] for p in ex.points] == ["dense", "ttn χ=2", "brickwall depth=2"]
    from adntn_lab.train.runs import RunConfig, build_run_model

    for p in ex.points:
        assert (p["dataset"], p["model"], p["layer"], p["hidden"]) == ("digits", "fc2", "fc1",
                                                                       16)
        fam = None if p["family"] == "dense" else p["family"]
        config = RunConfig(model="fc2", dataset="digits", family=fam, bond_dim=p["bond_dim"] or 4,
                           options={"depth": 2} if fam == "brickwall" else {}, hidden=16,
                           epochs=1)
        model = build_run_model(config, digits)
        assert p["params"] == sum(q.numel() for q in model.parameters())
        assert 0.0 <= p["test_acc"] <= 1.0
    browser_sets(ex, selected=1)
    gen = ex.selected_generator  # the trained generator of that run
    same_structure(gen, al.build("ttn", 64, 16, bond_dim=2))
    assert not np.allclose(gen.weight(), al.build("ttn", 64, 16, bond_dim=2).weight())
    browser_sets(ex, selected=2)  # the brick-wall point really has depth 2
    same_structure(ex.selected_generator, al.build("brickwall", 64, 16, depth=2))
    assert set(itertools.chain(ex.front)) <= {0, 1, 2}
    browser_sets(ex, settings={**ex.settings, "budgets": [0]})
    browser_clicks(ex, "run")
    assert "budgets must be" in ex.error and ex.status == "finished"


def _fake_point(s, family, value, seed, data, stop_event):
    """A stand-in for training: a point with made-up accuracy in the sweep's experiment."""
    from adntn_lab.widgets.explorer import normalise_point

    row = {"key": "dense" if family is None else f"{family}-chi{value}", "family": family,
           "bond_dim": value, "params": 1000 * (value or 10), "test_acc": 0.99, "seed": seed,
           "dataset": s["dataset"], "model": s["model"], "layer": s["layer"],
           "hidden": s["hidden"]}
    return normalise_point(row), None


def test_a_sweep_on_another_dataset_never_mixes_into_a_plot(monkeypatch, tmp_path):
    from adntn_lab.widgets import explorer as explorer_module

    # rows of run_sweep on mnist-5k that say nothing about their dataset: run folders do
    rows = []
    for r in SWEEP_ROWS:
        run_dir = tmp_path / r["key"]
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(
            {"model": "fc2", "dataset": "mnist-5k", "hidden": 256, "compress": ["fc1"]}))
        rows.append({**r, "run_dir": str(run_dir)})
    ex = CompressionExplorer(rows)
    mnist = "mnist-5k · fc2 · fc1 · hidden 256"
    assert ex.view == mnist and [g["key"] for g in ex.groups] == [mnist]
    # Run defaults to the loaded experiment, so its points would join this plot
    assert (ex.settings["dataset"], ex.settings["hidden"]) == ("mnist-5k", 256)
    front_before = list(ex.front)
    monkeypatch.setattr(explorer_module, "load_dataset", lambda name: name, raising=False)
    monkeypatch.setattr("adntn_lab.data.load_dataset", lambda name: name)
    monkeypatch.setattr(explorer_module, "train_point", _fake_point)
    ex.run(dataset="digits", hidden=64, families=["ttn"], budgets=[2], baselines=["dense"])
    assert ex.wait(30.0) and ex.status == "finished", ex.error
    digits_group = "digits · fc2 · fc1 · hidden 64"
    assert [p["group"] for p in ex.points] == [mnist] * 5 + [digits_group] * 2
    assert ex.view == digits_group  # the plot switched to the new experiment
    assert set(ex.front) <= {5, 6}
    browser_sets(ex, view=mnist)
    assert ex.front == front_before  # 99 % points elsewhere take nothing from this front
    assert [p["pareto"] for p in ex.points[:5]] == [True, True, True, False, False]
    browser_sets(ex, selected=3)
    assert ex.selection["dominated_by"] == ["ttn-chi2"]  # only points of its own plot
    browser_sets(ex, view="cifar10 · vgg")
    assert "no experiment" in ex.error and ex.view == mnist


def test_sweep_jobs_use_each_familys_knob():
    from adntn_lab.widgets.explorer import budget_label, sweep_jobs

    s = {"families": ["ttn", "brickwall"], "baselines": ["dense", "lowrank"], "budgets": [2, 5],
         "seeds": [0, 1]}
    jobs = sweep_jobs(s)
    assert jobs[:5] == [(None, None, 0), ("ttn", 2, 0), ("ttn", 5, 0), ("brickwall", 2, 0),
                        ("brickwall", 5, 0)]
    assert len(jobs) == 2 * (1 + 3 * 2)
    assert [budget_label(f, v) for f, v in (("ttn", 2), ("brickwall", 5), ("lowrank", 3),
                                            (None, None))] == \
        ["ttn χ=2", "brickwall depth=5", "lowrank rank=3", "dense"]
