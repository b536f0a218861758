"""Pictures of generators: cores coloured by stage, bonds with dimensions, labelled legs.

The family builders give their own positions (trees, brick walls, chains). A drawn network
without positions is laid out here: stages as rows, each row ordered by the sites its cores
carry, and a stage whose bonds close a loop (a ring MPO) on a circle, so the loop is seen.
Legs of laid-out cores hang straight below them (radially out of a circle); legs of family
layouts end at their site's column. Labels are placed in points, not data units, so they keep
their distance from the markers at any size of the figure.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["layout", "draw_generator", "stage_colors"]

_LEG = 0.6          # leg length in layout units
_DENSE_LEGS = 8     # more legs than this in one row: their labels alternate between two rows


def stage_colors(num_stages: int) -> list[str]:
    """One hex colour per stage (matplotlib's tab10 cycle)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10"]
    return [to_hex(cmap(s % 10)) for s in range(num_stages)]


def _bond_owners(gen) -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for name, c in gen.cores.items():
        for ix in c.inds:
            owners.setdefault(ix, []).append(name)
    return owners


def _stage_graph(gen):
    import networkx as nx

    g = nx.Graph()
    for name, c in gen.cores.items():
        g.add_node(name, stage=c.stage)
    for names in _bond_owners(gen).values():
        if len(names) == 2:
            g.add_edge(*names)
    return g


def _ring_stages(gen) -> dict[int, list[str]]:
    """Stages whose cores form one closed loop of bonds: stage -> cores in loop order."""
    import networkx as nx

    g = _stage_graph(gen)
    rings = {}
    for s in sorted({c.stage for c in gen.cores.values()}):
        members = [n for n, c in gen.cores.items() if c.stage == s]
        sub = g.subgraph(members)
        if len(members) >= 3 and nx.is_connected(sub) and all(d == 2 for _, d in sub.degree):
            cycle = [u for u, _ in nx.find_cycle(sub, source=min(members, key=_site_key(gen)))]
            rings[s] = cycle
    return rings


def _site_key(gen):
    def key(name):
        sites = gen.cores[name].sites
        return (min(sites) if sites else math.inf, name)

    return key


def layout(gen) -> dict[str, tuple[float, float]]:
    """Positions of the cores: the family's own layout, else stages as rows (a stage that is
    a closed loop on a circle), each row ordered by site."""
    pos = dict(gen.blueprint.positions)
    if all(name in pos for name in gen.cores):
        return _separate(pos)
    rings = _ring_stages(gen)
    stages = sorted({c.stage for c in gen.cores.values()})
    width = max(sum(1 for c in gen.cores.values() if c.stage == s) for s in stages)
    y = 0.0
    for s in stages:
        if s in rings:
            cycle = rings[s]
            r = max(0.8, len(cycle) / (2 * math.pi))
            cx = (width - 1) / 2
            cy = y + r
            for k, name in enumerate(cycle):  # first core at the bottom, then anticlockwise
                a = -math.pi / 2 + 2 * math.pi * k / len(cycle)
                pos.setdefault(name, (cx + r * math.cos(a), cy + r * math.sin(a)))
            y += 2 * r + 1.0
            continue
        row = sorted((n for n, c in gen.cores.items() if c.stage == s), key=_site_key(gen))
        offset = (width - len(row)) / 2
        for k, name in enumerate(row):
            pos.setdefault(name, (offset + k, y))
        y += 1.0
    return _separate(pos)


def _separate(pos: dict, gap: float = 0.45) -> dict:
    """Move cores that (nearly) share a position apart sideways: one marker or name must
    never hide another (a lateral mixer right under a disentangler, say)."""
    out: dict = {}
    for name, (x, y) in pos.items():
        x, y = float(x), float(y)
        while any(abs(x - ox) < gap and abs(y - oy) < gap * 0.8 for ox, oy in out.values()):
            x += gap
        out[name] = (x, y)
    return out


def _leg_ends(gen, pos) -> dict[int, tuple[str, tuple[float, float], tuple[float, float]]]:
    """site -> (core, end point, outward unit direction) of every physical leg."""
    family_layout = all(name in gen.blueprint.positions for name in gen.cores)
    ys = [p[1] for p in pos.values()]
    leg_y = min(ys) - _LEG
    rings = _ring_stages(gen) if not family_layout else {}
    ring_of = {n: s for s, cycle in rings.items() for n in cycle}
    ends = {}
    for name, c in gen.cores.items():
        x, y = pos[name]
        for k in c.sites:
            if name in ring_of:  # radially out of the loop
                members = rings[ring_of[name]]
                cx = float(np.mean([pos[m][0] for m in members]))
                cy = float(np.mean([pos[m][1] for m in members]))
                dx, dy = x - cx, y - cy
                norm = math.hypot(dx, dy) or 1.0
                d = (dx / norm, dy / norm)
                ends[k] = (name, (x + _LEG * d[0], y + _LEG * d[1]), d)
            elif family_layout and gen.family != "lowrank":
                ends[k] = (name, (float(k), leg_y), (0.0, -1.0))
            else:
                ends[k] = (name, (x, leg_y if family_layout else y - _LEG), (0.0, -1.0))
    return ends


def _bend(p0, p1, centres, radius):
    """Control point bowing the bond p0-p1 around every core centre it would cross, or None."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.hypot(*d))
    if length == 0:
        return None
    normal = np.array([-d[1], d[0]]) / length
    push = 0.0
    for c in centres:
        t = float(np.dot(c - p0, d) / length**2)
        if not 0.05 < t < 0.95:
            continue
        off = float(np.dot(c - p0, normal))
        if abs(off) < radius:
            push = max(push, radius * 2.2) * (-1 if off > 0 else 1)
    if push == 0.0:
        return None
    return (p0 + p1) / 2 + normal * push


def draw_generator(gen, ax=None, *, highlight=(), show_dims: bool = True, title=None):
    """Draw a generator.

    Parameters
    ----------
    gen : Generator
    ax : matplotlib Axes, optional
        Draw into this axis; a new figure is made otherwise.
    highlight : iterable of str
        Core names to outline (e.g. the cores merged at one contraction step).
    show_dims : bool
        Label bonds with their dimensions.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    pos = layout(gen)
    colors = stage_colors(gen.num_stages)
    own_figure = ax is None
    if own_figure:
        n = len(gen.cores)
        width = float(np.clip(1.2 + 0.35 * np.ptp([p[0] for p in pos.values()] or [0]), 5, 14))
        fig, ax = plt.subplots(figsize=(width, 4.5 if n < 60 else 6))
    else:
        fig = ax.figure
    labelled = len(gen.cores) <= 40
    centres = {name: np.asarray(p, float) for name, p in pos.items()}
    dims = []  # bond-dimension labels: dropped where they would cover a name or each other
    for ix, names in _bond_owners(gen).items():
        if ix.startswith("p") or len(names) != 2:
            continue
        p0, p1 = centres[names[0]], centres[names[1]]
        others = [c for n, c in centres.items() if n not in names]
        ctrl = _bend(p0, p1, others, radius=0.16)
        if ctrl is None:
            ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color="#888888", lw=1.0, zorder=1)
            mid = (p0 + p1) / 2
        else:  # a bond that would run through another core bows around it
            path = MplPath([p0, ctrl, p1], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
            ax.add_patch(PathPatch(path, fc="none", ec="#888888", lw=1.0, zorder=1))
            mid = 0.25 * p0 + 0.5 * ctrl + 0.25 * p1
        if show_dims and labelled:
            dims.append(ax.text(mid[0], mid[1], str(gen.size_dict[ix]), fontsize=7,
                                color="#555555", ha="center", va="center", zorder=2,
                                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none",
                                          alpha=0.8)))
    ends = _leg_ends(gen, pos)
    dense_row = len(ends) > _DENSE_LEGS
    for k, (name, (ex, ey), (dx, dy)) in sorted(ends.items()):
        x, y = pos[name]
        ax.plot([x, ex], [y, ey], color="#222222", lw=1.2, zorder=1)
        o, i = gen.tensorization.out_modes[k], gen.tensorization.in_modes[k]
        # below the leg; in a dense row every other label one row lower, so none run together
        drop = 2.3 if dense_row and k % 2 else 0.0
        ax.annotate(f"p{k}\n{o}×{i}", (ex, ey), xytext=(9 * dx, 9 * dy - 8 * drop),
                    textcoords="offset points", fontsize=7, ha="center",
                    va="top" if dy < -0.3 else ("bottom" if dy > 0.3 else "center"),
                    annotation_clip=False)
    hl = set(highlight)
    for name, c in gen.cores.items():
        x, y = pos[name]
        marker = "s" if c.constant else ("D" if c.kind in ("disentangler", "mixer") else "o")
        size = 60 if c.constant else 180
        ax.scatter([x], [y], s=size, marker=marker, color=colors[c.stage],
                   edgecolors="red" if name in hl else "black",
                   linewidths=2.5 if name in hl else 0.8, zorder=3)
        if labelled:  # above the core, or opposite its legs when they do not hang down
            up = [d for _, _, d in (ends[k] for k in c.sites)]
            if up and np.mean([d[1] for d in up]) > -0.3:
                dx, dy = -np.mean([d[0] for d in up]), -np.mean([d[1] for d in up])
                norm = math.hypot(dx, dy) or 1.0
                ax.annotate(name, (x, y), xytext=(17 * dx / norm, 17 * dy / norm),
                            textcoords="offset points", fontsize=7, ha="center",
                            va="center", zorder=4, annotation_clip=False)
            else:
                ax.annotate(name, (x, y), xytext=(0, 8), textcoords="offset points",
                            fontsize=7, ha="center", va="bottom", zorder=4,
                            annotation_clip=False)
    handles = [Line2D([], [], marker="o", ls="", color=colors[s],
                      label=f"stage {s}: {gen.activations[s].name}")
               for s in range(gen.num_stages)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              frameon=False)
    ratio = gen.compression_ratio
    ratio_text = f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"
    ax.set_title(title or f"{gen.family}: {gen.out_features}×{gen.in_features}, "
                 f"{gen.num_params:,} params ({ratio_text})", fontsize=10, pad=14)
    ax.set_axis_off()
    # room for the names above the top row and the leg labels below the lowest legs
    xs = [p[0] for p in pos.values()] + [e[1][0] for e in ends.values()]
    ys = [p[1] for p in pos.values()] + [e[1][1] for e in ends.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - (0.9 if dense_row else 0.6), max(ys) + 0.5)
    if own_figure:  # leave the layout of a caller's figure alone
        fig.tight_layout()
    _drop_covering(ax, dims)
    return fig


def _drop_covering(ax, dims) -> None:
    """Hide each bond-dimension label that overlaps another label (names and leg labels
    are kept; of two overlapping dimensions the first drawn stays)."""
    try:
        renderer = ax.figure.canvas.get_renderer()
    except AttributeError:  # a canvas that cannot measure text: keep everything
        return
    keep = [t.get_window_extent(renderer) for t in ax.texts if t not in dims and t.get_text()]
    for t in dims:
        box = t.get_window_extent(renderer)
        if any(box.overlaps(other) for other in keep):
            t.set_visible(False)
        else:
            keep.append(box)
