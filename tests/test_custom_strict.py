"""from_graph refuses every malformed design by name (the table in fuzz_specs.py), and a
seeded fuzz of valid designs either builds a generator equal to quimb's contraction or is
refused with a ValueError/TypeError raised by custom.py itself."""

from __future__ import annotations

import copy
import json
import random
import traceback
from pathlib import Path

import numpy as np
import pytest
from designs import CUSTOM
from fuzz_specs import (
    CASES,
    CONST,
    DELETE,
    LEGGED,
    PARAMS_A,
    TEXTS,
    mutate,
    networkx_cases,
)

import adntn_lab as al
from adntn_lab.topologies import custom

CUSTOM_PY = Path(custom.__file__).resolve()


def raised_in_custom(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc``'s traceback is in custom.py."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve() == CUSTOM_PY


def refused(spec, error, words):
    with pytest.raises((ValueError, TypeError)) as info:
        al.from_graph(spec, activation="identity", calibrate=False)
    assert type(info.value) is error or isinstance(info.value, error), info.value
    assert words in str(info.value), str(info.value)
    assert raised_in_custom(info.value), traceback.format_exception(info.value)
    return str(info.value)


def test_the_bases_of_the_table_are_valid():
    for base in (CUSTOM, LEGGED, CONST, mutate(CUSTOM, "cores[0].params", PARAMS_A)):
        assert al.from_graph(base, calibrate=False).weight().shape == (12, 20)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_design_is_refused_naming_the_field(case):
    _, base, path, value, error, words = case
    refused(mutate(base, path, value), error, words)


@pytest.mark.parametrize("case", TEXTS, ids=[c[0] for c in TEXTS])
def test_malformed_json_text_is_refused(case):
    _, text, error, words = case
    refused(text, error, words)


@pytest.mark.parametrize("index", range(6))
def test_malformed_networkx_graph_is_refused(index):
    name, graph, error, words = networkx_cases()[index]
    refused(graph, error, words)


def test_networkx_nodes_5_and_5_as_text_are_two_nodes_when_named_apart():
    import networkx as nx

    g = nx.Graph(in_features=4, out_features=4)
    g.add_node(5, stage=0, sites=[0])
    g.add_node("6", stage=1, sites=[1])
    g.add_edge(5, "6", dim=2)
    gen = al.from_graph(g)
    assert set(gen.cores) == {"5", "6"}


def test_a_design_file_is_read(tmp_path):
    path = tmp_path / "design.json"
    path.write_text(json.dumps(CUSTOM))
    a = al.from_graph(str(path), calibrate=False, seed=3)
    b = al.from_graph(path, calibrate=False, seed=3)
    np.testing.assert_array_equal(a.weight(), al.from_graph(CUSTOM, calibrate=False,
                                                            seed=3).weight())
    np.testing.assert_array_equal(a.weight(), b.weight())


def test_params_are_used_exactly():
    gen = al.from_graph(mutate(CUSTOM, "cores[0].params", PARAMS_A), calibrate=False)
    np.testing.assert_array_equal(gen.params["a"], np.full((3, 2, 6), 0.1))


# ----------------------------------------------------------------------------- seeded fuzz

POOL = [-1, 0, 1, 2, 3, 5, 7, 0.5, 2.0, 0.7, "2", "12", "a", "m", "", True, False, None,
        [], {}, [1, 2], [0.7], [2, 2], {"bond": 0}, {"site": 0}, "relu", float("nan")]


def _paths(obj, prefix=""):
    """Every path into a JSON-like object, e.g. ``cores[0].sites[0]``."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{prefix}.{k}" if prefix else k
            out.append(p)
            out += _paths(v, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            p = f"{prefix}[{i}]"
            out.append(p)
            out += _paths(v, p)
    return out


def _random_mutation(rng: random.Random, base: dict) -> dict:
    """One or two random edits: replace a value, delete it, add a field, or copy another."""
    spec = copy.deepcopy(base)
    for _ in range(rng.choice((1, 1, 1, 2))):
        paths = [p for p in _paths(spec) if "params" not in p and "value" not in p]
        path = rng.choice(paths)
        op = rng.random()
        if op < 0.6:
            spec = mutate(spec, path, rng.choice(POOL))
        elif op < 0.75:
            spec = mutate(spec, path, DELETE)
        elif op < 0.85 and not path.endswith("]"):
            spec = mutate(spec, path + "_extra", rng.choice(POOL))
        else:
            spec = mutate(spec, path, _get(spec, rng.choice(paths)))
    return spec


def _get(spec, path):
    from fuzz_specs import _STEP

    target = spec
    for name, index in _STEP.findall(path):
        target = target[name if name else int(index)]
    return target


def _quimb_weight(gen) -> np.ndarray:
    tz = gen.tensorization
    t = gen.tn.contract(output_inds=tz.physical_inds)
    data = t.transpose(*tz.physical_inds).data
    return tz.to_matrix(data)


def _valid_bases():
    mpo = al.build("mpo", 12, 8, n_cores=3, bond_dim=2, seed=1).to_dict(include_params=True)
    bw = al.build("brickwall", 8, 4, depth=2, seed=1).to_dict()
    return [CUSTOM, LEGGED, CONST, mpo, bw]


def test_seeded_fuzz_refuses_by_name_or_builds_the_right_weight():
    rng = random.Random(20261201)
    bases = _valid_bases()
    outcomes = {"refused": 0, "built": 0}
    for trial in range(300):
        spec = _random_mutation(rng, rng.choice(bases))
        try:
            gen = al.from_graph(spec, activation="identity", calibrate=False, seed=trial)
        except (ValueError, TypeError) as exc:
            assert raised_in_custom(exc), (json.dumps(spec, default=str)[:400],
                                           traceback.format_exception(exc))
            assert str(exc)
            outcomes["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point is that nothing else escapes
            pytest.fail(f"trial {trial}: {type(exc).__name__}: {exc}\n"
                        f"{json.dumps(spec, default=str)[:400]}")
        np.testing.assert_allclose(gen.weight(), _quimb_weight(gen), rtol=1e-10, atol=1e-12)
        outcomes["built"] += 1
    assert outcomes["refused"] > 100 and outcomes["built"] > 20, outcomes


def test_designer_names_a_json_list_as_what_it_is():
    from adntn_lab.widgets import TopologyDesigner

    with pytest.raises(ValueError, match="JSON object.*got list") as info:
        TopologyDesigner(design="[1, 2, 3]")
    assert "neither JSON text nor a file" not in str(info.value)


def test_python_sequences_of_integers_are_accepted_as_such():
    import networkx as nx

    spec = {k: v for k, v in CUSTOM.items() if k not in ("out_modes", "in_modes")}
    a = al.from_graph(spec, out_modes=np.array([2, 2, 3, 1]), in_modes=(3, 2, 2, 2),
                      calibrate=False, seed=2)
    b = al.from_graph(CUSTOM, calibrate=False, seed=2)
    np.testing.assert_array_equal(a.weight(), b.weight())
    with pytest.raises(TypeError, match=r"out_modes \(argument\)\[0\]"):
        al.from_graph(spec, out_modes=np.array([2.0, 2, 3, 1]), in_modes=(3, 2, 2, 2))
    g = nx.Graph(in_features=4, out_features=4)
    g.add_node("a", stage=0, sites=range(1))
    g.add_node("b", stage=np.int64(1), site=np.int64(1))
    g.add_edge("a", "b", dim=np.int64(2))
    assert al.from_graph(g).weight().shape == (4, 4)
