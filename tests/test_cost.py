"""Cost reports: steps match the executed contraction, FLOPs counted independently,
schedule choice, dense yardstick, printing and export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import adntn_lab as al


def sizes_of_groups(gen):
    """Run the generator and record every group's result size (the tensors on the front)."""
    sizes = {}

    def hook(group, out):
        sizes[group.key] = int(np.asarray(out).size)
        return out

    W, captures = gen.program.run(gen.params, capture=True, hook=hook)
    return W, captures, sizes


# ---------------------------------------------------------------------------- captures
@pytest.mark.parametrize("family,options", [
    ("ttn", {"n_sites": 4, "bond_dim": 3}),
    ("ttn", {"n_sites": 8, "bond_dim": 2, "lateral": True, "activation": "tanh"}),
    ("mera", {"n_sites": 8, "bond_dim": 2}),
    ("mera", {"n_sites": 8, "bond_dim": 2, "lateral": True, "activation": "tanh"}),
    ("brickwall", {"depth": 2}),
    ("brickwall", {"depth": 3, "pattern": "brickwall"}),
    ("attn", {"bond_dim": 2}),
    ("mpo", {"n_cores": 4}),
])
def test_captured_intermediates_have_the_reported_shapes(family, options):
    gen = al.build(family, 30, 20, **options)
    W, captures = gen.program.run(gen.params, capture=True)
    np.testing.assert_allclose(W, gen.weight(), rtol=1e-12, atol=1e-14)
    report = gen.cost(batch_size=None, schedule="materialize")
    assert len(captures) == len(report.steps) > 0
    for cap, step in zip(captures, report.steps):
        assert (cap.stage, cap.group, cap.step) == (step.stage, step.group, step.step)
        assert (cap.left, cap.right) == (step.left, step.right)
        assert tuple(cap.shape) == tuple(step.output_shape) == tuple(np.shape(cap.array))
    # steps come stage by stage, and every stage's last group ends in its front tensor
    assert [c.stage for c in captures] == sorted(c.stage for c in captures)


# ---------------------------------------------------------------------------- FLOPs
def test_two_site_ttn_flops_by_hand():
    chi = 4
    gen = al.build("ttn", 17, 33, bond_dim=chi, n_sites=2)
    d0, d1 = gen.tensorization.site_dims
    assert d0 != d1
    # root group: U0 (d0 x chi), U1 (d1 x chi), R (chi x chi). The best order absorbs R into
    # the smaller leaf (min(d) chi^2 multiply-adds), then meets the other leaf (d0 d1 chi).
    best = min(d0, d1) * chi * chi + d0 * d1 * chi
    orders = [best, max(d0, d1) * chi * chi + d0 * d1 * chi, 2 * d0 * d1 * chi * chi]
    assert best == min(orders)
    report = gen.cost()
    assert report.total_flops == 2 * best
    assert [s.flops for s in report.steps] == [2 * min(d0, d1) * chi * chi, 2 * d0 * d1 * chi]
    assert report.stages[0].flops == 0  # leaves alone: nothing to contract
    assert report.dense_flops is None


@pytest.mark.parametrize("family,options", [
    ("ttn", {"n_sites": 4, "bond_dim": 3}),
    ("ttn", {"n_sites": 5, "bond_dim": 2}),
    ("ttn", {"n_sites": 8, "bond_dim": 2, "lateral": True}),
    ("mera", {"n_sites": 8, "bond_dim": 2}),
])
def test_step_flops_match_a_count_from_the_captures(family, options):
    """A pairwise contraction A.B -> C with no index shared by all three costs
    2 * |open of A| * |open of B| * |contracted| = 2 * sqrt(|A| |B| |C|) FLOPs."""
    gen = al.build(family, 30, 20, **options)
    _, captures, front = sizes_of_groups(gen)
    report = gen.cost()
    inter = {}
    total = 0
    for cap, step in zip(captures, report.steps):
        def size(label, cap=cap):
            if label.startswith("#"):
                return inter[(cap.stage, cap.group, int(label[1:]))]
            if label in gen.params:
                return gen.params[label].size
            return front[label]

        a, b, c = size(cap.left), size(cap.right), int(np.prod(cap.shape))
        expect = 2 * math.isqrt(a * b * c)
        assert expect * expect == 4 * a * b * c  # a perfect square: no hyper-indices
        assert step.flops == expect, (step, a, b, c)
        inter[(cap.stage, cap.group, cap.step)] = c
        total += expect
    assert report.total_flops == total == sum(s.flops for s in report.stages)
    assert report.largest_intermediate >= max(int(np.prod(c.shape)) for c in captures)


def test_dense_yardstick_and_materialize_total():
    gen = al.build("ttn", 100, 60, n_sites=3, bond_dim=3)
    base = gen.cost()
    for batch in (1, 32):
        mat = gen.cost(batch_size=batch, schedule="materialize")
        assert mat.dense_flops == 2 * batch * 60 * 100
        assert mat.total_flops == base.total_flops + mat.dense_flops
        assert mat.generation_flops == base.total_flops
        fused = gen.cost(batch_size=batch, schedule="fused")
        assert fused.schedule == "fused" and fused.dense_flops == mat.dense_flops
        assert fused.total_flops == sum(s.flops for s in fused.steps)
        assert "x" in {s.left for s in fused.steps} | {s.right for s in fused.steps}


# ---------------------------------------------------------------------------- auto
def test_auto_picks_fused_for_a_large_batch_on_ttn_1024():
    gen = al.build("ttn", 1024, 1024, bond_dim=4)
    report = gen.cost(batch_size=4096, schedule="auto")
    assert set(report.alternatives) == {"materialize", "fused"}
    assert report.alternatives["fused"] < report.alternatives["materialize"]
    assert report.schedule == "fused"
    assert report.total_flops == report.alternatives["fused"]
    # the materialize alternative is generation plus the dense matmul
    gen_flops = gen.cost().total_flops
    assert report.alternatives["materialize"] == gen_flops + 2 * 4096 * 1024 * 1024


def test_auto_picks_materialize_where_fused_costs_more():
    gen = al.build("ttn", 8, 8, bond_dim=4, n_sites=2)
    report = gen.cost(batch_size=1024, schedule="auto")
    assert report.alternatives["materialize"] < report.alternatives["fused"]
    assert report.schedule == "materialize"
    assert report.total_flops == report.alternatives["materialize"]
    assert report.total_flops == gen.cost().total_flops + 2 * 1024 * 8 * 8


def test_auto_without_batch_or_with_nonlinear_last_stage_is_materialize():
    gen = al.build("ttn", 64, 64, n_sites=3)
    assert gen.cost().schedule == "materialize"
    relu_last = al.build("ttn", 64, 64, n_sites=3, activation=["identity", "relu", "relu"])
    r = relu_last.cost(batch_size=4096, schedule="auto")
    assert r.schedule == "materialize" and set(r.alternatives) == {"materialize"}


# ---------------------------------------------------------------------------- report
def test_report_fields_and_exports():
    gen = al.build("mera", 64, 32, n_sites=8, bond_dim=2)
    report = gen.cost(batch_size=16, schedule="materialize")
    assert report.num_params == gen.num_params
    assert report.compression_ratio == pytest.approx(gen.compression_ratio)
    assert report.shape == (32, 64) and report.family == "mera"
    assert len(report.stages) == gen.num_stages
    assert [s.groups for s in report.stages] == [
        sum(1 for g in gen.program.groups if g.stage == s) for s in range(gen.num_stages)]
    assert sum(s.flops for s in report.stages) == sum(st.flops for st in report.steps)
    # memory: at least the cores plus W at float32
    assert report.peak_bytes >= 4 * (sum(p.size for p in gen.params.values()) + 32 * 64)
    d = json.loads(report.to_json())
    assert d["total_flops"] == report.total_flops and len(d["steps"]) == len(report.steps)
    text = str(report)
    assert "stage" in text and "FLOPs" in text and "mera" in text
    assert f"{gen.num_params:,}" in text
    html = report._repr_html_()
    assert "<table>" in html and "mera" in html
    float32 = gen.cost(dtype="float32")
    float64 = gen.cost(dtype="float64")
    assert float64.peak_bytes == 2 * float32.peak_bytes
    assert float64.total_flops == float32.total_flops


def test_report_plots():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = al.build("ttn", 64, 64, n_sites=4, bond_dim=3)
    fig = gen.cost().plot_steps()
    assert len(fig.axes[0].patches) == len(gen.cost().steps)
    plt.close(fig)


def test_lateral_mixers_raise_the_cost():
    plain = al.build("ttn", 100, 60, n_sites=8, bond_dim=3)
    lateral = al.build("ttn", 100, 60, n_sites=8, bond_dim=3, lateral=True)
    assert lateral.cost().total_flops > plain.cost().total_flops
    assert lateral.cost().largest_intermediate >= plain.cost().largest_intermediate
