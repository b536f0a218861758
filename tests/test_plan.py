"""Planning and execution: the tree cache, slicing under a memory limit, fused vs materialize."""

from __future__ import annotations

import re

import numpy as np
import pytest

import adntn_lab as al

# a 2-site TTN with a wide bond: its root group has an intermediate (4 x 16) larger than its
# output (4 x 4), so a limit between "inputs + output" and the unsliced peak forces slicing
WIDE = dict(family="ttn", in_features=4, out_features=4, bond_dim=16, n_sites=2,
            activation="identity")

# a triangle contracted in a nonlinear stage: sliced before tanh is applied
TRIANGLE = {
    "in_features": 4, "out_features": 4, "out_modes": [2, 2], "in_modes": [2, 2],
    "cores": [{"name": "a", "stage": 0, "sites": [0]}, {"name": "b", "stage": 0},
              {"name": "c", "stage": 0}, {"name": "t", "stage": 1, "sites": [1]}],
    "bonds": [{"u": "a", "v": "b", "dim": 16}, {"u": "b", "v": "c", "dim": 16},
              {"u": "a", "v": "c", "dim": 8}, {"u": "c", "v": "t", "dim": 2}],
}


def wide_ttn():
    kw = dict(WIDE)
    return al.build(kw.pop("family"), kw.pop("in_features"), kw.pop("out_features"), **kw)


# ---------------------------------------------------------------------------- cache
def test_second_planning_of_a_structure_hits_the_cache():
    first = al.build("ttn", 1024, 1024, bond_dim=4)
    info = al.plan_cache_info()
    second = al.build("ttn", 1024, 1024, bond_dim=4, seed=5)
    after = al.plan_cache_info()
    n_groups = len(second.program.groups)
    assert after["misses"] == info["misses"]
    assert after["hits"] - info["hits"] >= n_groups
    assert after["size"] == info["size"]
    # the very same trees are reused
    assert all(a is b for a, b in zip(first.program.trees(), second.program.trees()))
    # a different structure is planned anew (a shape no other test uses: the cache is
    # process-wide, and the tests run in any order)
    al.build("ttn", 1009, 997, bond_dim=5)
    assert al.plan_cache_info()["misses"] > after["misses"]


@pytest.mark.filterwarnings("ignore:Couldn't import")
@pytest.mark.parametrize("optimize", ["greedy", "optimal", "hyper"])
def test_selectable_optimizers_give_the_same_weight(optimize, tmp_path):
    ref = al.build("ttn", 37, 29, n_sites=4, bond_dim=7, activation="tanh").weight()
    al.set_plan_cache(tmp_path)
    try:
        gen = al.build("ttn", 37, 29, n_sites=4, bond_dim=7, activation="tanh",
                       optimize=optimize)
    finally:
        al.set_plan_cache(None)
    np.testing.assert_allclose(gen.weight(), ref, rtol=1e-12, atol=1e-14)
    if optimize == "hyper":  # hyper-optimised trees are kept on disk
        assert any(tmp_path.iterdir())


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'fancy'") as info:
        al.build("ttn", 10, 10, optimize="fancy")
    assert "greedy" in str(info.value)


# ---------------------------------------------------------------------------- slicing
def test_sliced_weight_equals_unsliced():
    gen = wide_ttn()
    W = gen.weight()
    # bytes at float64: over what the root group needs at least (what is held meanwhile plus
    # its inputs and output), under the unsliced peak
    limit = gen.program.minimum_memory(8) + 30 * 8
    report = gen.cost(memory_limit=limit, dtype="float64")
    assert max(s.slices for s in report.stages) > 1
    assert gen.cost(dtype="float64").stages[-1].slices == 1
    Ws = gen.weight(memory_limit=limit)
    np.testing.assert_allclose(Ws, W, rtol=1e-12, atol=1e-14)
    torch = pytest.importorskip("torch")
    Wt = gen.weight(backend="torch", dtype=torch.float64, memory_limit=limit)
    np.testing.assert_allclose(Wt.numpy(), W, rtol=1e-12, atol=1e-14)


def test_sliced_nonlinear_stage_equals_unsliced():
    gen = al.from_graph(TRIANGLE, activation="tanh")
    W = gen.weight()
    limit = gen.program.minimum_memory(8) + 100 * 8
    report = gen.cost(memory_limit=limit, dtype="float64")
    assert report.stages[0].slices > 1 and report.stages[0].activation == "tanh"
    np.testing.assert_allclose(gen.weight(memory_limit=limit), W, rtol=1e-12, atol=1e-14)


def _bytes(msg):
    return [int(m.replace(",", "")) for m in re.findall(r"([\d,]+) bytes", msg)]


def test_memory_limit_refusal_gives_required_and_allowed_bytes():
    gen = wide_ttn()
    # the root group takes X0.0 (4x16), X0.1 (4x16) and R (16x16) and makes a 4x4 output,
    # while the leaves U0 (4x16) and U1 (4x16) stay held
    required = (4 * 16 + 4 * 16 + 16 * 16 + 4 * 4 + 2 * 4 * 16) * 8
    assert gen.program.minimum_memory(8) == required
    with pytest.raises(al.MemoryLimitError) as info:
        gen.weight(memory_limit=4000)  # enough for the leaves, not for the root
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"{required:,} bytes" in msg and "4,000 bytes" in msg
    assert "memory_limit" in msg
    with pytest.raises(al.MemoryLimitError) as info:
        gen.cost(memory_limit=2000, dtype="float32")
    assert f"{required // 2:,} bytes" in str(info.value)


@pytest.mark.parametrize("elements", [400, 405, 412])
def test_limit_that_slicing_cannot_reach_is_refused_clearly(elements):
    """Inputs and output fit, but no slicing brings the intermediates under the limit."""
    gen = wide_ttn()
    limit = elements * 8
    with pytest.raises(al.MemoryLimitError) as info:
        gen.weight(memory_limit=limit)
    nums = _bytes(str(info.value))
    assert limit in nums and any(n > limit for n in nums)


# ---------------------------------------------------------------------------- fused
FUSED_CASES = [
    ("ttn", 60, 100, {"n_sites": 3, "activation": "relu"}),
    ("ttn-lateral", 33, 17, {"n_sites": 8, "bond_dim": 2, "lateral": True}),
    ("attn", 33, 17, {"activation": "tanh"}),
    ("mera", 10, 30, {"n_sites": 8, "bond_dim": 2}),
    ("brickwall", 33, 17, {"depth": 2}),
    ("mpo", 60, 100, {}),
    ("lowrank", 10, 784, {"rank": 3}),
]


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: c[0])
def test_fused_program_equals_x_times_w_transpose(case):
    name, out_f, in_f, options = case
    gen = al.build(name.split("-")[0], in_f, out_f, seed=2, **options)
    x = np.random.default_rng(0).standard_normal((7, in_f))
    y = gen.program.fused(gen.params, x)
    assert y.shape == (7, out_f)
    np.testing.assert_allclose(y, x @ gen.weight().T, rtol=1e-10, atol=1e-12)


def test_fused_refuses_a_nonlinear_last_stage():
    gen = al.build("ttn", 16, 16, n_sites=3, activation=["identity", "relu", "relu"])
    with pytest.raises(ValueError, match="materialize"):
        gen.program.fused(gen.params, np.ones((2, 16)))


@pytest.mark.parametrize("topology,options", [
    ("ttn", {"bond_dim": 3, "n_sites": 3}),
    ("brickwall", {"depth": 2}),
    ("mera", {"n_sites": 8, "bond_dim": 2}),
])
def test_linear_layer_fused_equals_materialize(topology, options):
    torch = pytest.importorskip("torch")
    from adntn_lab.nn import ADNTNLinear

    torch.manual_seed(0)
    mat = ADNTNLinear(30, 20, topology=topology, schedule="materialize",
                      dtype=torch.float64, **options)
    fus = ADNTNLinear(30, 20, topology=topology, schedule="fused", dtype=torch.float64,
                      **options)
    fus.load_state_dict(mat.state_dict())
    x = torch.randn(3, 4, 30, dtype=torch.float64)
    torch.testing.assert_close(fus(x), mat(x), rtol=1e-10, atol=1e-12)
    assert fus(x).shape == (3, 4, 20)


def test_auto_schedule_of_the_layer_follows_the_cost_model():
    torch = pytest.importorskip("torch")
    from adntn_lab.nn import ADNTNLinear

    big = ADNTNLinear(1024, 1024, topology="ttn", bond_dim=4)
    assert big.schedule == "auto"
    assert big.schedule_for(4096) == "fused"
    small = ADNTNLinear(8, 8, topology="ttn", bond_dim=4)
    assert small.schedule_for(1024) == "materialize"
    x = torch.randn(1024, 8, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), x @ small.weight.T + small.bias, rtol=1e-5,
                                   atol=1e-6)
