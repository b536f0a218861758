"""Bad input gets a clear ValueError/TypeError that names the problem and what would work."""

from __future__ import annotations

import networkx as nx
import pytest

import adntn_lab as al


def two_core_design(**changes):
    design = {
        "in_features": 4,
        "out_features": 4,
        "cores": [{"name": "a", "stage": 0, "sites": [0]},
                  {"name": "b", "stage": 1, "sites": [1]}],
        "bonds": [{"u": "a", "v": "b", "dim": 2}],
    }
    design.update(changes)
    return design


# ---------------------------------------------------------------------------- build
@pytest.mark.parametrize("in_f,out_f,bad", [(0, 10, "in_features"), (10, -3, "out_features"),
                                            (-1, 5, "in_features")])
def test_non_positive_features(in_f, out_f, bad):
    with pytest.raises(ValueError, match=bad) as info:
        al.build("ttn", in_f, out_f)
    msg = str(info.value)
    assert "positive integer" in msg and "for example" in msg


def test_non_integer_features():
    with pytest.raises(TypeError, match="in_features must be a positive integer"):
        al.build("ttn", 10.5, 10)
    with pytest.raises(TypeError, match="out_features"):
        al.build("mpo", 10, "10")


@pytest.mark.parametrize("family,kwargs,name", [
    ("ttn", {"bond_dim": 0}, "bond_dim"),
    ("mera", {"bond_dim": -2, "n_sites": 4}, "bond_dim"),
    ("mpo", {"bond_dim": 0}, "bond_dim"),
    ("attn", {"bond_dim": 1.5}, "bond_dim"),
])
def test_non_positive_bond_dimension(family, kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        al.build(family, 16, 16, **kwargs)
    assert "positive integer" in str(info.value) and "for example" in str(info.value)


def test_non_positive_rank():
    with pytest.raises(ValueError, match="positive integer"):
        al.build("lowrank", 16, 16, rank=0)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown family 'tnn'") as info:
        al.build("tnn", 16, 16)
    msg = str(info.value)
    for fam in ("ttn", "attn", "mera", "brickwall", "mpo", "lowrank", "from_graph"):
        assert fam in msg


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'") as info:
        al.build("ttn", 16, 16, n_sites=3, activation="sigmoid")
    msg = str(info.value)
    for name in al.ACTIVATIONS:
        assert name in msg
    assert "callable" in msg
    with pytest.raises(TypeError, match="activation must be a name"):
        al.build("ttn", 16, 16, n_sites=3, activation=3)


def test_activation_list_of_wrong_length():
    with pytest.raises(ValueError, match="2 activations") as info:
        al.build("ttn", 16, 16, n_sites=3, activation=["relu", "relu"])
    assert "3 stages" in str(info.value)


def test_activation_on_a_linear_family():
    with pytest.raises(ValueError, match="no nonlinear stage") as info:
        al.build("mpo", 16, 16, activation="relu")
    assert "identity" in str(info.value)


@pytest.mark.parametrize("family,options,fix", [
    ("ttn", {"n_sites": 2}, "n_sites"),    # no stage between leaves and root
    ("mera", {"n_sites": 4}, "n_sites"),   # one level only
    ("brickwall", {"depth": 1}, "depth"),  # one layer only
])
def test_activation_on_a_network_too_small_to_have_a_nonlinear_stage(family, options, fix):
    """The valid alternative is a larger network of the same family, not 'choose ttn'."""
    with pytest.raises(ValueError, match="no nonlinear stage") as info:
        al.build(family, 16, 16, activation="relu", **options)
    msg = str(info.value)
    assert fix in msg, msg
    assert "such as 'ttn'" not in msg, msg


@pytest.mark.parametrize("kwargs,name,need", [
    ({"in_modes": (2, 2)}, "in_modes", 10),
    ({"out_modes": (3, 3), "in_modes": (4, 4)}, "out_modes", 12),
    ({"out_modes": (2, 2, 2)}, "out_modes", 12),
])
def test_modes_whose_product_is_too_small(kwargs, name, need):
    with pytest.raises(ValueError, match=name) as info:
        al.build("ttn", 10, 12, **kwargs)
    msg = str(info.value)
    assert "multiply to" in msg and f"at least {need}" in msg
    assert "e.g." in msg


def test_modes_of_different_lengths():
    with pytest.raises(ValueError, match="one entry per site"):
        al.build("ttn", 10, 10, out_modes=(3, 3, 3), in_modes=(4, 4))


def test_family_specific_options():
    with pytest.raises(TypeError, match="unexpected option") as info:
        al.build("ttn", 16, 16, depth=3)
    assert "lateral" in str(info.value)
    with pytest.raises(ValueError, match="pattern") as info:
        al.build("brickwall", 16, 16, pattern="zigzag")
    assert "staircase" in str(info.value) and "brickwall" in str(info.value)
    with pytest.raises(ValueError, match="depth"):
        al.build("brickwall", 16, 16, depth=0)
    with pytest.raises(ValueError, match="power-of-two") as info:
        al.build("mera", 16, 16, n_sites=6)
    assert "n_sites=8" in str(info.value)
    with pytest.raises(ValueError, match="qubit"):
        al.build("brickwall", 16, 16, in_modes=(4, 4))


# ---------------------------------------------------------------------------- custom graphs
def test_json_bond_naming_an_unknown_core():
    design = two_core_design(bonds=[{"u": "a", "v": "b", "dim": 2},
                                    {"u": "a", "v": "ghost", "dim": 2}])
    with pytest.raises(ValueError, match="dangling") as info:
        al.from_graph(design)
    msg = str(info.value)
    assert "ghost" in msg and "'a'" in msg and "'b'" in msg


def test_networkx_edge_to_a_node_without_stage():
    g = nx.Graph(in_features=4, out_features=4)
    g.add_node("a", stage=0, sites=[0])
    g.add_node("b", stage=1, sites=[1])
    g.add_edge("a", "b", dim=2)
    g.add_edge("a", "x", dim=2)  # "x" has no stage: not a core
    with pytest.raises(ValueError, match="dangling") as info:
        al.from_graph(g)
    msg = str(info.value)
    assert "'x'" in msg and "stage" in msg


def test_missing_physical_leg():
    design = two_core_design(out_modes=[2, 2, 1], in_modes=[2, 1, 2])
    with pytest.raises(ValueError, match="site 2 is missing") as info:
        al.from_graph(design)
    assert "sites" in str(info.value)


def test_doubled_physical_leg():
    design = two_core_design(cores=[{"name": "a", "stage": 0, "sites": [0]},
                                    {"name": "b", "stage": 1, "sites": [0, 1]}])
    with pytest.raises(ValueError, match="doubled") as info:
        al.from_graph(design)
    msg = str(info.value)
    assert "'a'" in msg and "'b'" in msg and "exactly one core" in msg


def test_stages_that_leave_more_than_one_tensor():
    design = two_core_design(
        cores=[{"name": "a", "stage": 0, "sites": [0]},
               {"name": "c", "stage": 0},
               {"name": "b", "stage": 1, "sites": [1]}],
        bonds=[{"u": "a", "v": "c", "dim": 2}],
    )
    with pytest.raises(ValueError, match="leave 2 tensors") as info:
        al.from_graph(design)
    assert "connect them with a bond" in str(info.value)


def test_one_stage_graph_that_leaves_two_tensors():
    design = two_core_design(cores=[{"name": "a", "stage": 0, "sites": [0]},
                                    {"name": "b", "stage": 0, "sites": [1]}], bonds=[])
    with pytest.raises(ValueError, match="leave 2 tensors"):
        al.from_graph(design, activation="identity")


def test_one_stage_graph_reports_its_structure_error_with_default_activation():
    """Without an activation argument the structural mistake must still be what is reported."""
    design = two_core_design(cores=[{"name": "a", "stage": 0, "sites": [0]},
                                    {"name": "b", "stage": 0, "sites": [1]}], bonds=[])
    with pytest.raises(ValueError, match="leave 2 tensors"):
        al.from_graph(design)


def test_one_stage_graph_builds_with_default_activation():
    """A valid single-stage design has no nonlinear stage; leaving activation unset works."""
    design = two_core_design(cores=[{"name": "a", "stage": 0, "sites": [0]},
                                    {"name": "b", "stage": 0, "sites": [1]}])
    gen = al.from_graph(design)
    assert gen.num_stages == 1 and gen.weight().shape == (4, 4)


def test_other_graph_mistakes():
    with pytest.raises(ValueError, match="positive integer 'dim'"):
        al.from_graph(two_core_design(bonds=[{"u": "a", "v": "b", "dim": 0}]))
    with pytest.raises(ValueError, match="non-negative integer 'stage'"):
        al.from_graph(two_core_design(cores=[{"name": "a", "stage": -1, "sites": [0]},
                                             {"name": "b", "stage": 1, "sites": [1]}]))
    with pytest.raises(ValueError, match="itself"):
        al.from_graph(two_core_design(bonds=[{"u": "a", "v": "b", "dim": 2},
                                             {"u": "a", "v": "a", "dim": 2}]))
    with pytest.raises(ValueError, match="unique"):
        al.from_graph(two_core_design(cores=[{"name": "a", "stage": 0, "sites": [0]},
                                             {"name": "a", "stage": 1, "sites": [1]}]))
    with pytest.raises(ValueError, match="in_features"):
        al.from_graph({"cores": [{"name": "a", "stage": 0, "sites": [0]}], "bonds": []})
    with pytest.raises(TypeError, match="networkx graph, a dict or a JSON string"):
        al.from_graph(42)
    with pytest.raises(ValueError, match="JSON"):
        al.from_graph("{not json")


# ---------------------------------------------------------------------------- cost / weight
def test_cost_and_weight_arguments():
    gen = al.build("ttn", 16, 16, n_sites=3)
    with pytest.raises(ValueError, match="schedule"):
        gen.cost(8, schedule="lazy")
    with pytest.raises(ValueError, match="batch_size"):
        gen.cost(batch_size=0)
    with pytest.raises(ValueError, match="pass batch_size"):
        gen.cost(schedule="fused")
    with pytest.raises(ValueError, match="backend"):
        gen.weight(backend="jax")
    relu_last = al.build("ttn", 16, 16, n_sites=3, activation=["identity", "relu", "relu"])
    with pytest.raises(ValueError, match="linear last stage"):
        relu_last.cost(8, schedule="fused")
