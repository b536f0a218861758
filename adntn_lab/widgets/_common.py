"""Shared pieces of the widgets: static files, error display, action messages, images.

Every widget is an :class:`anywidget.AnyWidget` whose ES module and CSS live in
``adntn_lab/widgets/static/`` (package data: wheels and editable installs read the same
files). Front ends talk to Python in two ways: by setting synced traits (as any ipywidget
does) and by sending custom messages ``{"action": name, ...}`` for button presses. Both
paths run inside :meth:`_guard`,
so a bad edit shows its reason in the widget's ``error`` trait instead of raising into the
notebook, and the widget keeps its last good state.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import traceback
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..utils import format_bytes, format_count, json_safe

__all__ = [
    "ActionWidget",
    "describe_error",
    "static_file",
    "widget_module",
    "widget_styles",
    "figure_to_data_url",
    "array_to_png",
    "format_bytes",
    "format_count",
    "json_safe",
    "new_figure",
]

STATIC = Path(__file__).resolve().parent / "static"


def static_file(name: str) -> Path:
    """Path of a widget's ES module or stylesheet in ``adntn_lab/widgets/static``.

    Parameters
    ----------
    name : str
        File name such as ``"designer.js"``.
    """
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(f"widget file {name!r} is missing from {STATIC}; "
                                "reinstall adntn_lab")
    return path


def widget_module(name: str) -> str:
    """ES module of a widget: the shared helpers (``common.js``) followed by ``<name>.js``."""
    return static_file("common.js").read_text() + "\n" + static_file(f"{name}.js").read_text()


def widget_styles(name: str) -> str:
    """Stylesheet of a widget: the shared ``base.css`` followed by ``<name>.css``."""
    return static_file("base.css").read_text() + "\n" + static_file(f"{name}.css").read_text()


class ActionWidget(anywidget.AnyWidget):
    """Base of the widgets: an ``error`` trait, guarded actions and custom-message dispatch.

    Subclasses name their actions in ``_actions`` (action name -> method name); the front end
    sends ``{"action": "start"}`` and the method is called with the remaining keys as keyword
    arguments.
    """

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Unicode("").tag(sync=True)

    _actions: dict[str, str] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._on_custom_message)

    @contextlib.contextmanager
    def _guard(self, what: str):
        """Run a user-triggered step; show any failure in ``error`` instead of raising."""
        try:
            yield
        except Exception as exc:  # a widget must not raise into the notebook for a bad edit
            self.error = describe_error(what, exc)

    def _on_custom_message(self, _widget, content, _buffers):
        if not isinstance(content, dict):
            self.error = f"ignored a message that is not a dict: {content!r}"
            return
        action = content.get("action")
        method = self._actions.get(action)
        if method is None:
            known = ", ".join(sorted(self._actions))
            self.error = f"unknown action {action!r}; this widget knows: {known}"
            return
        kwargs = {k: v for k, v in content.items() if k != "action"}
        with self._guard(str(action)):
            getattr(self, method)(**kwargs)

    def send_action(self, action: str, **kwargs) -> None:
        """Deliver an action exactly as the front end does (for scripts and tests)."""
        self._handle_msg({"content": {"data": {"method": "custom",
                                               "content": {"action": action, **kwargs}}},
                          "buffers": []})


def describe_error(what: str, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, (ValueError, TypeError)):
        return f"{what}: {msg}"
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(frame[0].filename).name}:{frame[0].lineno})" if frame else ""
    return f"{what}: {type(exc).__name__}: {msg}{where}"


# ---------------------------------------------------------------------- images


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure with an Agg canvas, independent of pyplot (safe in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_data_url(fig, fmt: str = "png", dpi: int | None = None) -> str:
    """Encode a matplotlib figure as a ``data:`` URL (PNG or SVG) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    try:  # figures made by pyplot must be released from its registry
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # pragma: no cover - pyplot unavailable
        pass
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_to_png(array, *, max_side: int = 256, cmap: str = "RdBu_r") -> str:
    """A 2-D array as a heatmap PNG ``data:`` URL (symmetric colour range around 0).

    Parameters
    ----------
    array : array_like, shape (rows, cols)
        Large arrays are block-averaged down to at most ``max_side`` pixels a side.
    """
    from matplotlib import colormaps

    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"array_to_png needs a 2-D array, got shape {a.shape}")
    a = _downsample(a, max_side)
    finite = np.isfinite(a)
    vmax = float(np.max(np.abs(a[finite]))) if finite.any() else 1.0
    vmax = vmax if vmax > 0 else 1.0
    rgba = colormaps[cmap]((np.nan_to_num(a) / vmax + 1.0) / 2.0, bytes=True)
    return _rgba_png(rgba)


def _downsample(a: np.ndarray, max_side: int) -> np.ndarray:
    for axis in (0, 1):
        n = a.shape[axis]
        if n > max_side:
            f = math.ceil(n / max_side)
            pad = (-n) % f
            widths = [(0, 0), (0, 0)]
            widths[axis] = (0, pad)
            a = np.pad(a, widths, mode="edge")
            shape = list(a.shape)
            shape[axis : axis + 1] = [shape[axis] // f, f]
            a = a.reshape(shape).mean(axis=axis + 1)
    return a


def _rgba_png(rgba: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgba, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
