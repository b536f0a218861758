"""Custom networks: from_graph (networkx and JSON), to_dict round trips."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from designs import CUSTOM

import adntn_lab as al

ROUND_TRIP = [
    ("ttn", {"n_sites": 4, "activation": "relu"}),
    ("ttn", {"n_sites": 3, "activation": ["identity", "tanh", "identity"]}),
    ("attn", {"activation": "tanh"}),
    ("mera", {"n_sites": 8, "activation": "gelu"}),
    ("brickwall", {"depth": 3, "pattern": "staircase"}),
    ("brickwall", {"depth": 2, "pattern": "brickwall", "activation": "silu"}),
    ("mpo", {"n_cores": 3}),
    ("lowrank", {"rank": 3}),
    ("ttn", {"lateral": True, "n_sites": 8, "activation": "leaky_relu"}),
    ("mera", {"lateral": True, "n_sites": 8, "activation": "tanh"}),
]


@pytest.mark.parametrize("case", ROUND_TRIP,
                         ids=lambda c: f"{c[0]}-{'-'.join(str(v) for v in c[1].values())}")
def test_to_dict_round_trip_reproduces_weight(case):
    family, options = case
    gen = al.build(family, 30, 20, seed=4, **options)
    desc = gen.to_dict(include_params=True)
    text = json.dumps(desc)  # JSON-able
    assert desc["format"] == "adntn-graph/1"
    again = al.from_graph(json.loads(text))
    np.testing.assert_array_equal(again.weight(), gen.weight())
    assert again.num_params == gen.num_params
    assert again.num_stages == gen.num_stages
    assert [s.activation.name for s in again.stages] == [s.activation.name for s in gen.stages]
    assert sorted(again.constant_names) == sorted(gen.constant_names)
    assert again.tensorization == gen.tensorization
    # a JSON string is accepted as well
    np.testing.assert_array_equal(al.from_graph(text).weight(), gen.weight())


def test_to_dict_describes_the_structure():
    gen = al.build("brickwall", 8, 4, depth=2)
    desc = gen.to_dict()
    cores = {c["name"]: c for c in desc["cores"]}
    assert set(cores) == set(gen.cores)
    assert desc["in_features"] == 8 and desc["out_features"] == 4
    assert desc["out_modes"] == list(gen.tensorization.out_modes)
    assert desc["in_modes"] == list(gen.tensorization.in_modes)
    assert all("params" not in c for c in desc["cores"])
    for name, c in cores.items():
        assert c["stage"] == gen.cores[name].stage
        assert c["constant"] == gen.cores[name].constant
        assert isinstance(c["x"], float) and isinstance(c["y"], float)
    degree = {n: 0 for n in cores}
    for b in desc["bonds"]:
        assert b["dim"] == 2
        degree[b["u"]] += 1
        degree[b["v"]] += 1
    for name, c in gen.cores.items():
        open_legs = sum(1 for ix in c.inds if ix.startswith("p"))
        assert degree[name] + open_legs == len(c.inds)
    assert sum(len(c["sites"]) for c in desc["cores"]) == gen.tensorization.n_sites


def _bond_keys(gen, name):
    """Each axis of a core named by what it connects to: the other core, or the site."""
    keys = []
    for ix in gen.cores[name].inds:
        if ix.startswith("p"):
            keys.append(ix)
        else:
            (other,) = [n for n, c in gen.cores.items() if ix in c.inds and n != name]
            keys.append(other)
    return keys


def test_networkx_design_equals_json_design():
    g = nx.Graph(in_features=20, out_features=12, out_modes=[2, 2, 3, 1],
                 in_modes=[3, 2, 2, 2])
    # nodes and edges added in an order different from the JSON description
    g.add_node("t", stage=2)
    g.add_node("d", stage=0, site=3)
    g.add_node("c", stage=0, sites=[2])
    g.add_node("n", stage=1)
    g.add_node("m", stage=1)
    g.add_node("b", stage=0, sites=[1])
    g.add_node("a", stage=0, sites=[0])
    for u, v, dim in [("d", "t", 3), ("n", "t", 2), ("m", "t", 2), ("c", "n", 3),
                      ("b", "m", 2), ("a", "m", 2), ("a", "b", 3)]:
        g.add_edge(u, v, dim=dim)
    from_nx = al.from_graph(g, activation="tanh")
    from_json = al.from_graph(CUSTOM, activation="tanh")
    assert set(from_nx.cores) == set(from_json.cores)
    assert from_nx.tensorization == from_json.tensorization
    assert from_nx.num_params == from_json.num_params
    for name in from_json.cores:
        a, b = from_nx.cores[name], from_json.cores[name]
        assert a.stage == b.stage and a.sites == b.sites
        assert sorted(zip(_bond_keys(from_nx, name), a.shape)) == sorted(
            zip(_bond_keys(from_json, name), b.shape))
    # the same core values (axes matched by what they connect to) give the same W
    params = {}
    for name in from_json.cores:
        kj, kn = _bond_keys(from_json, name), _bond_keys(from_nx, name)
        params[name] = from_json.params[name].transpose([kj.index(k) for k in kn])
    np.testing.assert_allclose(from_nx.program.run(params), from_json.weight(), rtol=1e-12,
                               atol=1e-14)


def test_features_given_as_arguments_override_the_graph():
    design = {k: v for k, v in CUSTOM.items() if k not in ("in_features", "out_features",
                                                         "out_modes", "in_modes")}
    gen = al.from_graph(design, in_features=50, out_features=9)
    assert gen.weight().shape == (9, 50)
    assert gen.tensorization.n_sites == 4
    assert gen.tensorization.padded_in >= 50 and gen.tensorization.padded_out >= 9


def test_callable_activation_applies_per_group():
    """sigma(x) = 2x on stages 0 and 1 scales each path: W = 2*2 (m) * 2*2 (n) * 2 (d) W_lin."""

    def double(x):
        return 2 * x

    lin = al.from_graph(CUSTOM, activation="identity", calibrate=False, seed=9)
    dbl = al.from_graph(CUSTOM, activation=double, calibrate=False, seed=9)
    assert dbl.stages[0].activation.name == "double"
    np.testing.assert_allclose(dbl.weight(), 32 * lin.weight(), rtol=1e-12)


def test_default_activation_of_a_custom_graph():
    gen = al.from_graph(CUSTOM)
    names = [s.activation.name for s in gen.stages]
    assert names[-1] == "identity"
    assert all(n != "identity" for n in names[:-1])


def test_constant_cores_in_a_custom_graph():
    design = {
        "in_features": 2, "out_features": 2, "out_modes": [2, 1], "in_modes": [1, 2],
        "cores": [
            {"name": "v", "stage": 0, "constant": True, "value": [1.0, 0.5]},
            {"name": "g", "stage": 1, "sites": [0, 1]},
        ],
        "bonds": [{"u": "v", "v": "g", "dim": 2}],
    }
    gen = al.from_graph(design, activation="identity")
    assert gen.constant_names == ["v"] and gen.trainable_names == ["g"]
    assert gen.num_params == 8
    tn_const = gen.tn.select_tensors("CONST")
    assert len(tn_const) == 1
    np.testing.assert_array_equal(tn_const[0].data, [1.0, 0.5])
    g = gen.params["g"]
    axis_v = gen.cores["g"].inds.index(gen.cores["v"].inds[0])
    expect = np.tensordot(np.array([1.0, 0.5]), np.moveaxis(g, axis_v, 0), axes=1)
    rest = [ix for ix in gen.cores["g"].inds if ix != gen.cores["v"].inds[0]]
    expect = expect.transpose([rest.index("p0"), rest.index("p1")])
    np.testing.assert_allclose(gen.weight(), expect, rtol=1e-12)
