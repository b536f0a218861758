"""The resource guard: oversized designs are refused before anything large is allocated."""

from __future__ import annotations

import tracemalloc

import pytest

import adntn_lab as al
from adntn_lab import resources
from adntn_lab.resources import ResourceLimitError


@pytest.mark.parametrize("family,in_f,out_f,opts", [
    ("ttn", 1024, 1024, {"bond_dim": 10**6}),        # a typo: 6.9 EiB of cores
    ("ttn", 1024, 1024, {"bond_dim": 1000}),         # '1e3' typed for '10'
    ("ttn", 2**20, 2**20, {}),                       # W alone 4 TiB
    ("brickwall", 10**9, 10**9, {}),                 # 10^9 features
    ("mpo", 4096, 4096, {"bond_dim": 100_000}),
])
def test_oversized_designs_are_refused_before_allocating(family, in_f, out_f, opts):
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        with pytest.raises(ResourceLimitError) as info:
            al.build(family, in_f, out_f, memory_budget="1GiB", **opts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "over the memory budget of 1 GiB" in msg and "needs about" in msg
    assert "memory_budget" in msg  # says how to raise it
    assert peak < 64 * 2**20  # nothing large was allocated


def test_the_suggested_smaller_setting_fits():
    budget = 64 * 2**20
    with pytest.raises(ResourceLimitError, match=r"bond_dim=(\d+) would fit") as info:
        al.build("ttn", 1024, 1024, bond_dim=1000, memory_budget=budget)
    import re

    chi = int(re.search(r"bond_dim=(\d+) would fit", str(info.value)).group(1))
    assert 1 <= chi < 1000
    gen = al.build("ttn", 1024, 1024, bond_dim=chi, memory_budget=budget, calibrate=False)
    assert gen.resource_estimate().peak_bytes <= budget
    with pytest.raises(ResourceLimitError):
        al.build("ttn", 1024, 1024, bond_dim=chi + 1, memory_budget=budget)


def test_large_intermediates_are_counted_for_every_network():
    """A MERA whose W is small can still have a huge intermediate: the plan-based check of the
    generator catches it, custom networks included."""
    with pytest.raises(ResourceLimitError, match="largest intermediate"):
        al.build("mera", 4096, 4096, bond_dim=64, memory_budget="4GiB")
    spec = {"in_features": 64, "out_features": 64,
            "cores": [{"name": "A", "stage": 0, "sites": [0]},
                      {"name": "B", "stage": 0, "sites": [1]}],
            "bonds": [{"u": "A", "v": "B", "dim": 3000}]}
    with pytest.raises(ResourceLimitError, match="custom"):
        al.from_graph(spec, memory_budget="1MiB")
    assert al.from_graph(spec, memory_budget="1GiB", calibrate=False).num_params == 2 * 64 * 3000


def test_estimate_agrees_with_the_built_generator():
    for family, opts in (("ttn", {"bond_dim": 4}), ("mera", {"bond_dim": 3}),
                         ("brickwall", {"depth": 2}), ("mpo", {"bond_dim": 5}),
                         ("lowrank", {"rank": 3}), ("attn", {"bond_dim": 2})):
        est = resources.estimate(family, 784, 256, **opts)
        gen = al.build(family, 784, 256, **opts)
        assert est.params == gen.num_params
        assert est.w_bytes == 4 * gen.tensorization.padded_out * gen.tensorization.padded_in
        assert est.dense_params == 784 * 256
        assert gen.resource_estimate().peak_bytes >= est.peak_bytes


def test_budget_settings():
    assert resources.parse_size("8GiB") == 8 * 2**30
    assert resources.parse_size("512 MiB") == 512 * 2**20
    assert resources.parse_size("none") is None
    with pytest.raises(ValueError, match="cannot read the memory size"):
        resources.parse_size("lots")
    try:
        al.set_memory_budget("2GiB")
        assert resources.memory_budget() == 2 * 2**30
        assert resources.memory_budget("1MiB") == 2**20  # a per-call budget wins
        al.set_memory_budget(None)
        assert resources.memory_budget() is None
    finally:
        al.set_memory_budget("auto")
    with pytest.raises(ValueError, match="positive number of bytes"):
        al.set_memory_budget(-1)


def test_default_budget_is_half_the_available_memory(monkeypatch):
    monkeypatch.delenv("ADNTN_LAB_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr(resources, "available_memory", lambda: 10 * 2**30)
    assert resources.memory_budget() == 5 * 2**30
    monkeypatch.setattr(resources, "available_memory", lambda: None)  # unknown: no limit
    assert resources.memory_budget() is None


def test_environment_budget(monkeypatch):
    monkeypatch.setenv("ADNTN_LAB_MEMORY_BUDGET", "1MiB")
    with pytest.raises(ResourceLimitError, match="1 MiB"):
        al.build("ttn", 1024, 1024, bond_dim=64)
    monkeypatch.setenv("ADNTN_LAB_MEMORY_BUDGET", "none")
    assert resources.memory_budget() is None


def test_huge_feature_counts_tensorize_quickly():
    """The exact balanced factorisation is exponential in the number of sites; above its step
    budget a greedy one is used, so 10^9 features are refused at once instead of hanging."""
    from adntn_lab.tensorize import balanced_factors

    for n, k in ((10**9, 15), (10**9, 4), (10**7, 8)):
        f = balanced_factors(n, k)
        assert len(f) == k
        prod = 1
        for x in f:
            prod *= x
        assert n <= prod <= 2 * n
    # sizes the exact search finishes keep their exact, most balanced factors
    assert balanced_factors(4096, 4) == (8, 8, 8, 8)
    assert balanced_factors(784, 3) == (10, 9, 9)


def test_cli_costs_reports_on_a_layer_whose_w_would_not_fit(capsys):
    """A cost report needs shapes only: a 2^20 x 2^20 TTN (W would be 4 TiB) is reported."""
    from adntn_lab import cli

    assert cli.main(["costs", "--family", "ttn", "--in-features", str(2**20),
                     "--out-features", str(2**20), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "ttn 1048576×1048576" in out and "dense matmul" in out
    code = cli.main(["costs", "--family", "ttn", "--in-features", "1024", "--out-features",
                     "1024", "--bond-dim", "100000"])
    assert code == 2
    assert "memory budget" in capsys.readouterr().err
