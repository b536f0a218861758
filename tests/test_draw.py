"""Pictures of generators: nothing hides anything, loops look like loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import adntn_lab as al
from adntn_lab.draw import layout
from adntn_lab.widgets._common import new_figure

RING = {"in_features": 64, "out_features": 64,
        "cores": [{"name": f"A{k}", "stage": 0, "sites": [k]} for k in range(4)],
        "bonds": [{"u": f"A{k}", "v": f"A{(k + 1) % 4}", "dim": 16} for k in range(4)]}

GALLERY = {
    "mpo": lambda: al.build("mpo", 64, 64),
    "lowrank": lambda: al.build("lowrank", 64, 64, rank=4),
    "brickwall staircase": lambda: al.build("brickwall", 64, 64, depth=3),
    "brickwall brickwall": lambda: al.build("brickwall", 64, 64, depth=3, pattern="brickwall"),
    "mera lateral": lambda: al.build("mera", 64, 64, lateral=True),
    "ttn lateral": lambda: al.build("ttn", 64, 64, lateral=True, n_sites=8),
    "attn": lambda: al.build("attn", 64, 64),
    "ring": lambda: al.from_graph(RING, activation="identity"),
}


def _drawn(gen, size=(5, 4)):
    fig = new_figure(*size)
    ax = fig.add_subplot(1, 1, 1)
    gen.draw(ax=ax)
    fig.canvas.draw()
    return fig, ax, fig.canvas.get_renderer()


@pytest.mark.parametrize("name", list(GALLERY))
def test_no_label_covers_another_and_none_leaves_the_axes_upwards(name):
    fig, ax, renderer = _drawn(GALLERY[name]())
    texts = [t for t in ax.texts if t.get_text() and t.get_visible()]
    assert texts
    boxes = {id(t): t.get_window_extent(renderer) for t in texts}
    clashes = [(a.get_text(), b.get_text()) for a, b in itertools.combinations(texts, 2)
               if boxes[id(a)].overlaps(boxes[id(b)])]
    assert not clashes, clashes
    # core names stay below the title (a flat row used to put them into the row above)
    title = ax.title.get_window_extent(renderer)
    assert all(boxes[id(t)].y1 <= title.y0 + 1 for t in texts)


@pytest.mark.parametrize("name", list(GALLERY))
def test_no_core_hides_another(name):
    pos = layout(GALLERY[name]())
    points = np.array(list(pos.values()))
    gaps = [math.dist(a, b) for a, b in itertools.combinations(points, 2)]
    assert min(gaps) > 0.3


def test_a_ring_is_drawn_as_a_loop_with_legs_outwards():
    gen = al.from_graph(RING, activation="identity")
    pos = layout(gen)
    xy = np.array([pos[f"A{k}"] for k in range(4)])
    # a closed loop, not a line: the cores span an area, each bond has the same length
    area = 0.5 * abs(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1],
                                                                    np.roll(xy[:, 0], 1)))
    assert area > 0.5
    sides = [math.dist(xy[k], xy[(k + 1) % 4]) for k in range(4)]
    assert max(sides) == pytest.approx(min(sides))
    fig, ax, _ = _drawn(gen)
    centre = xy.mean(axis=0)
    legs = [line.get_xydata() for line in ax.lines if line.get_color() == "#222222"]
    assert len(legs) == 4
    for (x0, y0), (x1, y1) in legs:  # each leg points away from the loop's centre
        assert math.dist((x1, y1), centre) > math.dist((x0, y0), centre)


def test_a_bond_that_would_cross_a_core_bows_around_it():
    from matplotlib.patches import PathPatch

    line = {"in_features": 16, "out_features": 16, "out_modes": [4, 4], "in_modes": [4, 4],
            "cores": [{"name": "a", "stage": 0, "sites": [0], "x": 0, "y": 0},
                      {"name": "m", "stage": 0, "x": 1, "y": 0},
                      {"name": "b", "stage": 0, "sites": [1], "x": 2, "y": 0}],
            "bonds": [{"u": "a", "v": "m", "dim": 2}, {"u": "m", "v": "b", "dim": 2},
                      {"u": "a", "v": "b", "dim": 2}]}
    gen = al.from_graph(line, activation="identity")
    gen.blueprint.positions.update({"a": (0.0, 0.0), "m": (1.0, 0.0), "b": (2.0, 0.0)})
    _, ax, _ = _drawn(gen)
    curves = [p for p in ax.patches if isinstance(p, PathPatch)]
    assert len(curves) == 1  # a-b, which would run straight through m
    verts = curves[0].get_path().vertices
    assert abs(verts[1][1]) > 0.2  # its control point lies off the line


def test_compression_below_one_is_not_rounded_to_zero():
    fig, ax, _ = _drawn(al.from_graph(RING, activation="identity"))
    assert "(0.5×)" in ax.get_title()
