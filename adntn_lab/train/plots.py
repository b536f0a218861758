"""Learning-curve figures (matplotlib; no pyplot state is touched)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .records import History

__all__ = ["plot_curves", "smooth"]


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average of a 1-d sequence (window shrinks at the start)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(histories: Mapping[str, History] | History, axes=None, title: str | None = None):
    """Training loss per step (smoothed) and test accuracy per epoch.

    Parameters
    ----------
    histories : History or mapping label -> History
        One curve per history, drawn in the same colour on both panels.
    axes : pair of matplotlib Axes, optional
        Where to draw (loss, accuracy); a new 1x2 figure otherwise.
    title : str, optional
        Figure title (only for a new figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    if isinstance(histories, History):
        histories = {"run": histories}
    if axes is None:
        fig = Figure(figsize=(10, 3.8), layout="constrained")
        axes = fig.subplots(1, 2)
        if title:
            fig.suptitle(title)
    else:
        fig = axes[0].figure
    ax_loss, ax_acc = axes
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        steps = len(h.step_loss)
        if steps:
            per_epoch = steps / max(len(h.epoch), 1) if h.epoch else steps
            x = np.arange(1, steps + 1) / per_epoch if h.epoch else np.arange(1, steps + 1)
            ax_loss.plot(x, h.step_loss, color=color, alpha=0.2, lw=0.8)
            ax_loss.plot(x, smooth(h.step_loss, max(1, steps // 50)), color=color, lw=1.6,
                         label=label)
        acc = [a for a in h.test_acc if not math.isnan(a)]
        if acc:
            ax_acc.plot(h.epoch[: len(h.test_acc)], [100 * a for a in h.test_acc], "o-",
                        color=color, ms=3.5, label=f"{label} (test)")
        if h.train_acc:
            ax_acc.plot(h.epoch, [100 * a for a in h.train_acc], "--", color=color, lw=1,
                        alpha=0.7, label=f"{label} (train)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (cross-entropy)")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3, which="both")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(alpha=0.3)
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no completed epoch yet", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
    return fig
