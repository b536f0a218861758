"""Pictures of generators: cores coloured by stage, bonds with dimensions, labelled legs."""

from __future__ import annotations

import numpy as np

__all__ = ["layout", "draw_generator", "stage_colors"]


def stage_colors(num_stages: int) -> list[str]:
    """One hex colour per stage (matplotlib's tab10 cycle)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10"]
    return [to_hex(cmap(s % 10)) for s in range(num_stages)]


def layout(gen) -> dict[str, tuple[float, float]]:
    """Positions of the cores: the family's own layout, else stages as rows."""
    pos = dict(gen.blueprint.positions)
    if all(name in pos for name in gen.cores):
        return pos
    import networkx as nx

    g = nx.Graph()
    for name, c in gen.cores.items():
        g.add_node(name, stage=c.stage)
    owners: dict[str, list[str]] = {}
    for name, c in gen.cores.items():
        for ix in c.inds:
            owners.setdefault(ix, []).append(name)
    for names in owners.values():
        if len(names) == 2:
            g.add_edge(*names)
    auto = nx.multipartite_layout(g, subset_key="stage", align="horizontal", scale=len(g) / 2)
    for name, (x, _) in auto.items():
        pos.setdefault(name, (float(x), float(gen.cores[name].stage)))
    return pos


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

    pos = layout(gen)
    colors = stage_colors(gen.num_stages)
    own_figure = ax is None
    if own_figure:
        n = len(gen.cores)
        width = float(np.clip(1.2 + 0.35 * np.ptp([p[0] for p in pos.values()] or [0]), 5, 14))
        fig, ax = plt.subplots(figsize=(width, 4.5 if n < 60 else 6))
    else:
        fig = ax.figure
    owners: dict[str, list[str]] = {}
    for name, c in gen.cores.items():
        for ix in c.inds:
            owners.setdefault(ix, []).append(name)
    for ix, names in owners.items():
        if ix.startswith("p"):
            continue
        (x0, y0), (x1, y1) = pos[names[0]], pos[names[1]]
        ax.plot([x0, x1], [y0, y1], color="#888888", lw=1.0, zorder=1)
        if show_dims and len(gen.cores) <= 40:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(gen.size_dict[ix]), fontsize=7,
                    color="#555555", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
    ys = [p[1] for p in pos.values()]
    leg_y = min(ys) - 0.6
    for name, c in gen.cores.items():
        x, y = pos[name]
        for ix in c.inds:
            if ix.startswith("p"):
                k = int(ix[1:])
                ax.plot([x, k if gen.family != "lowrank" else x], [y, leg_y], color="#222222",
                        lw=1.2, zorder=1)
                o, i = gen.tensorization.out_modes[k], gen.tensorization.in_modes[k]
                ax.text(k if gen.family != "lowrank" else x, leg_y - 0.12, f"p{k}\n{o}×{i}",
                        fontsize=7, ha="center", va="top")
    hl = set(highlight)
    for name, c in gen.cores.items():
        x, y = pos[name]
        marker = "s" if c.constant else ("D" if c.kind in ("disentangler", "mixer") else "o")
        size = 60 if c.constant else 180
        ax.scatter([x], [y], s=size, marker=marker, color=colors[c.stage],
                   edgecolors="red" if name in hl else "black",
                   linewidths=2.5 if name in hl else 0.8, zorder=3)
        if len(gen.cores) <= 40:
            ax.text(x, y + 0.18, name, fontsize=7, ha="center", va="bottom", zorder=4)
    handles = [Line2D([], [], marker="o", ls="", color=colors[s],
                      label=f"stage {s}: {gen.activations[s].name}")
               for s in range(gen.num_stages)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              frameon=False)
    ax.set_title(title or f"{gen.family}: {gen.out_features}×{gen.in_features}, "
                 f"{gen.num_params:,} params ({gen.compression_ratio:,.0f}×)", fontsize=10)
    ax.set_axis_off()
    ax.margins(0.08)
    if own_figure:  # leave the layout of a caller's figure alone
        fig.tight_layout()
    return fig
