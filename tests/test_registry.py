"""The family registry: one declaration per family, read by every consumer."""

from __future__ import annotations

import sys
import textwrap

import pytest

import adntn_lab as al
from adntn_lab import families
from adntn_lab.families import all_families, get_family
from adntn_lab.train.config import FAMILY_OPTIONS, RunConfig, budget_build_options

SHAPES = [(16, 16), (120, 400), (256, 784), (1000, 300), (64, 4096)]


def _options_grid(fam):
    if fam.name in ("ttn", "attn", "mera"):
        return [{"bond_dim": 2}, {"bond_dim": 5}, {"bond_dim": 3, "lateral": True}]
    if fam.name == "brickwall":
        return [{"depth": 1}, {"depth": 4, "pattern": "brickwall"}]
    if fam.name == "mpo":
        return [{"bond_dim": 3}, {"bond_dim": 6, "n_cores": 3}]
    return [{"rank": 1}, {"bond_dim": 7}]


@pytest.mark.parametrize("name", al.FAMILIES)
def test_parameter_count_matches_the_built_generator(name):
    """The registry's count (closed form where the family has one) equals the parameters of
    the generator that is actually built, for several shapes and options."""
    fam = get_family(name)
    for out_f, in_f in SHAPES:
        for opts in _options_grid(fam):
            if name == "mera" and out_f * in_f < 64:
                continue
            resolved = fam.resolve_options(opts)
            tz = fam.tensorize(out_f, in_f, options=resolved)
            gen = al.build(name, in_f, out_f, calibrate=False, **opts)
            assert fam.num_params(tz, resolved) == gen.num_params, (out_f, in_f, opts)
            est = al.resources.estimate(name, in_f, out_f, **opts)
            assert est.params == gen.num_params


def test_every_consumer_lists_the_registered_families():
    from adntn_lab.cli import FAMILY_CHOICES, build_parser
    from adntn_lab.widgets.designer import FAMILY_FIELDS

    assert al.FAMILIES == tuple(f.name for f in all_families())
    assert FAMILY_CHOICES == (*al.FAMILIES, "dense")
    assert set(FAMILY_FIELDS) == set(al.FAMILIES)
    every_option = {o.name for f in all_families() for o in f.options} - {"bond_dim"}
    assert every_option <= set(FAMILY_OPTIONS)
    help_text = build_parser().format_help() + build_parser()._subparsers._group_actions[0] \
        .choices["train"].format_help()
    for name in every_option:
        assert "--" + name.replace("_", "-") in help_text


@pytest.mark.parametrize("name,budget,expect", [
    ("ttn", 5, {"bond_dim": 5}),
    ("mpo", 3, {"bond_dim": 3}),
    ("lowrank", 6, {"rank": 6}),
    ("brickwall", 5, {"depth": 5}),
])
def test_a_budget_sets_the_family_knob(name, budget, expect):
    opts = budget_build_options(name, budget)
    assert opts == expect
    assert RunConfig(family=name, bond_dim=budget).build_options() == {"seed": 0, **expect}


def test_explorer_rebuilds_the_generator_a_row_was_trained_with():
    """A sweep row for brick-wall with budget 5 was trained with depth 5 (the run config's
    knob); the explorer used to rebuild depth 3 from it."""
    from adntn_lab.train.strategies import build_run_model
    from adntn_lab.widgets import CompressionExplorer

    for family, budget in (("brickwall", 5), ("lowrank", 3), ("ttn", 2)):
        config = RunConfig(model="fc2", family=family, bond_dim=budget, hidden=32)
        model = build_run_model(config, {"input_shape": (1, 28, 28), "num_classes": 10})
        trained = model.fc1.generator
        row = {"family": family, "bond_dim": budget, "params": trained.num_params,
               "test_acc": 0.5, "in_features": 784, "out_features": 32}
        explorer = CompressionExplorer([row])
        explorer.selected = 0
        rebuilt = explorer.selected_generator
        assert rebuilt.options == trained.options
        assert rebuilt.num_params == trained.num_params


def test_unknown_family_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'mera'"):
        get_family("mrea")


def test_bool_and_float_options_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="ttn option bond_dim must be a positive integer"):
        al.build("ttn", 64, 64, bond_dim=True)
    with pytest.raises(ValueError, match="brickwall option depth"):
        al.build("brickwall", 64, 64, depth=2.0)
    with pytest.raises(TypeError, match="lateral must be True or False"):
        al.build("ttn", 64, 64, lateral=1)


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    gen = al.build("ttn", 64, 64, bond_dim=np.int64(3), calibrate=False)
    assert gen.options["bond_dim"] == 3 and type(gen.options["bond_dim"]) is int


def test_adding_a_family_means_adding_one_module(tmp_path, monkeypatch):
    """A module that defines FAMILY in the families package is discovered as a family."""
    (tmp_path / "diagonal.py").write_text(textwrap.dedent('''
        from adntn_lab.families._spec import Family, Option
        from adntn_lab.families.lowrank import _tensorize
        from adntn_lab.topologies import build_lowrank

        FAMILY = Family(name="rank_one", summary="rank one", order=99,
                        builder=lambda tz, rank: build_lowrank(tz, rank=rank),
                        options=(Option("rank", "int", 1, "always one"),), knob="rank",
                        nonlinear=False, tensorizer=_tensorize, takes_modes=False)
    '''))
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    try:
        found = families._discover()
    finally:
        sys.modules.pop("adntn_lab.families.diagonal", None)
    assert list(found)[:6] == list(al.FAMILIES) and "rank_one" in found
    bp = found["rank_one"].blueprint(found["rank_one"].tensorize(8, 8), {"rank": 1})
    assert sum(c.size for c in bp.cores) == 16
