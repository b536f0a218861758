"""JupyterLab widgets (anywidget): see a generator, what it costs and how it learns.

- :class:`TopologyDesigner`: family presets or a hand-drawn network, with live costs.
- :class:`ContractionInspector`: the contraction step by step, schedules side by side.
- :class:`LiveTrainer`: training in a background thread with Start, Stop and Resume.
- :class:`CompressionExplorer`: accuracy against parameters over a sweep, Pareto front marked.

Their ES modules and stylesheets live in ``adntn_lab/widgets/static/``. The submodules load on
first use (``import adntn_lab.widgets`` imports neither torch nor anywidget and reads no file),
so a notebook that only draws does not pay for the trainer.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    "CompressionExplorer": "explorer",
    "pareto_front": "explorer",
    "ContractionInspector": "inspector",
    "compare_schedules": "inspector",
    "merged_cores": "inspector",
    "LiveTrainer": "trainer",
    "compression_info": "trainer",
    "TopologyDesigner": "designer",
    "clear_widget_caches": "_common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adntn_lab.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
