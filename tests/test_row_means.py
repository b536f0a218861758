"""Calibration keeps the spread of W's row means at the level of i.i.d. entries.

Behind a ReLU every intermediate tensor of a tree is non-negative, so the rows of a ReLU TTN's
W do not average out: before this was calibrated, rms(row means) * sqrt(in) / std(W) was 3-6 on
a 1024 x 1024 layer and 5-13 on the wide MLP's 4096 x 4096 one (a dense init gives ~1). Fed by
non-negative inputs (a ReLU layer's output), a unit then has the sign of its row mean for every
input, a third of the units start dead, and Adam's first steps kill the rest
(experiments/paper_scale, problem 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import adntn_lab as al
from adntn_lab.generator import default_init_std
from adntn_lab.numerics import MAX_ROW_MEAN_RATIO, ROW_CENTERING_TRIGGER

torch = pytest.importorskip("torch")


def _w(gen) -> np.ndarray:
    return np.asarray(gen.weight(), dtype=np.float64)


def row_mean_ratio(w: np.ndarray) -> float:
    return float(np.sqrt(np.mean(w.mean(axis=1) ** 2)) * math.sqrt(w.shape[1]) / w.std())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bond_dim", [4, 8])
def test_relu_tree_row_means_are_at_the_iid_level(bond_dim, seed):
    gen = al.build("ttn", 1024, 1024, bond_dim=bond_dim, seed=seed)
    w = _w(gen)
    # the line searches stop at ROW_CENTERING_STEPS; they get close to the target
    assert row_mean_ratio(w) <= 1.5 * MAX_ROW_MEAN_RATIO
    # the rest of the calibration still holds: W's std is the dense default, its mean ~0
    assert w.std() == pytest.approx(default_init_std(1024), rel=1e-6)
    assert abs(w.mean()) < 1e-3 * w.std()


def test_relu_tree_units_fed_by_relu_outputs_start_alive():
    """The consequence that matters: units of a layer whose input is non-negative are not
    dead (or always on) at initialisation."""
    gen = al.build("ttn", 1024, 1024, bond_dim=8, seed=0)
    w = _w(gen)
    h = np.maximum(np.random.default_rng(0).standard_normal((512, 1024)), 0.0)
    frac = (h @ w.T > 0).mean(axis=0)  # per unit: share of inputs it is active on
    # i.i.d. entries: ~1 % of the units are active on under 5 % or over 95 % of the inputs;
    # this tree before row centring: 75 %
    assert np.mean((frac < 0.05) | (frac > 0.95)) < 0.15


@pytest.mark.parametrize("family,options", [("mpo", {}), ("lowrank", {}),
                                            ("ttn", {"activation": "identity"})])
def test_linear_generators_are_left_alone(family, options, monkeypatch):
    """Linear generators average out by themselves (ratio 0.1-1.8 by chance): below the
    trigger, so their calibration is what it was."""
    from adntn_lab.generator import Generator

    changed = []
    original = Generator._center_rows
    monkeypatch.setattr(Generator, "_center_rows",
                        lambda self, *a: changed.append(original(self, *a)) or changed[-1])
    for seed in range(4):
        w = _w(al.build(family, 1024, 1024, bond_dim=4, seed=seed, **options))
        assert row_mean_ratio(w) <= ROW_CENTERING_TRIGGER
    assert changed and not any(moved for moved, _ in changed)
