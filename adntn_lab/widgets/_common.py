"""Shared pieces of the widgets: static files, error display, action messages, images.

Every widget is an :class:`anywidget.AnyWidget` whose ES module and CSS live in
``adntn_lab/widgets/static/`` (package data: wheels and editable installs read the same
files). Each widget class names its own ``static/NAME.js`` and ``static/NAME.css`` as
:class:`pathlib.Path` objects, so anywidget reads them when the class is defined (that is, when
its submodule is first imported) and reloads them on change with ``ANYWIDGET_HMR=1``.

The helpers every front end needs (``static/common.js``: DOM builders, handler wiring, the
error banner, the disconnected state) and the shared stylesheet (``static/base.css``) travel
as two synced traits of :class:`ActionWidget`; each module imports the helpers from a blob
URL once per page. That keeps every module a plain file anywidget can load and hot-reload,
with no build step and no copy of the helpers in each file.

Front ends talk to Python in two ways: by setting synced traits (as any ipywidget does) and by
sending custom messages ``{"action": name, ...}`` for button presses. Both paths run inside
:meth:`ActionWidget._guard`, so a bad edit shows its reason in the widget's ``error`` trait
instead of raising into the notebook, and the widget keeps its last good state.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import threading
import traceback
from pathlib import Path

import anywidget
import numpy as np
import traitlets

from ..utils import format_bytes, format_count, json_safe

__all__ = [
    "ActionWidget",
    "clear_widget_caches",
    "describe_error",
    "static_file",
    "shared_text",
    "register_cache",
    "figure_to_data_url",
    "array_to_png",
    "format_bytes",
    "format_count",
    "format_ratio",
    "json_safe",
    "new_figure",
]

STATIC = Path(__file__).resolve().parent / "static"

# text of common.js / base.css, read on first use; written by whichever thread builds the
# first widget, hence the lock
_SHARED_TEXT: dict[str, str] = {}
_SHARED_LOCK = threading.Lock()
_CLEARERS: list = []  # functions that empty the other modules' caches (registered on import)


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


def shared_text(name: str) -> str:
    """Text of a shared static file (``"common.js"`` or ``"base.css"``), read once."""
    with _SHARED_LOCK:
        text = _SHARED_TEXT.get(name)
        if text is None:
            text = _SHARED_TEXT[name] = static_file(name).read_text()
        return text


def register_cache(clear) -> None:
    """Have :func:`clear_widget_caches` also call ``clear()`` (one per module cache)."""
    with _SHARED_LOCK:
        if clear not in _CLEARERS:
            _CLEARERS.append(clear)


def clear_widget_caches() -> None:
    """Empty every module-level cache of the widgets (shared static text, trainer registry).

    Tests call it between cases so that they pass in any order; in a notebook it makes the
    next widget re-read ``common.js`` and ``base.css`` (after editing them).
    """
    with _SHARED_LOCK:
        _SHARED_TEXT.clear()
        clearers = list(_CLEARERS)
    for clear in clearers:
        clear()


class ActionWidget(anywidget.AnyWidget):
    """Base of the widgets: an ``error`` trait, guarded actions and custom-message dispatch.

    Subclasses name their actions in ``_actions`` (action name -> method name); the front end
    sends ``{"action": "start"}`` and the method is called with the remaining keys as keyword
    arguments. Every widget also answers ``{"action": "ping"}`` with a ``{"pong": n}``
    message, which the front end uses to tell a live kernel from a gone one.
    """

    error = traitlets.Unicode("").tag(sync=True)
    busy = traitlets.Unicode("").tag(sync=True)
    _common_js = traitlets.Unicode("").tag(sync=True)
    _common_css = traitlets.Unicode("").tag(sync=True)

    _actions: dict[str, str] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.hold_sync():
            self._common_js = shared_text("common.js")
            self._common_css = shared_text("base.css")
        self.on_msg(self._on_custom_message)

    @contextlib.contextmanager
    def _guard(self, what: str):
        """Run a user-triggered step; show any failure in ``error`` instead of raising."""
        try:
            yield
        except Exception as exc:  # a widget must not raise into the notebook for a bad edit
            self.error = describe_error(what, exc)

    @contextlib.contextmanager
    def _busy(self, what: str):
        """Show ``what`` as the widget's busy state while the block runs."""
        self.busy = what
        try:
            yield
        finally:
            self.busy = ""

    def _on_custom_message(self, _widget, content, _buffers):
        if not isinstance(content, dict):
            self.error = f"ignored a message that is not a dict: {content!r}"
            return
        action = content.get("action")
        if action == "ping":
            self.send({"pong": content.get("n", 0)})
            return
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
    """Block means with one factor for both axes, so the picture keeps the array's aspect
    ratio (a 32x1024 weight stays 32 times as wide as tall)."""
    f = math.ceil(max(a.shape) / max_side)
    if f <= 1:
        return a
    for axis in (0, 1):
        n = a.shape[axis]
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


# ---------------------------------------------------------------------- formatting


def format_ratio(ratio: float) -> str:
    """Compression ratio for display: ``52.3×``, ``1.8×``, ``0.011× (larger than dense)``."""
    if ratio is None or not math.isfinite(ratio):
        return "–"
    if ratio >= 10:
        return f"{ratio:,.1f}×"
    if ratio >= 1:
        return f"{ratio:.2f}×"
    return f"{ratio:.2g}× (more parameters than the dense W)"
