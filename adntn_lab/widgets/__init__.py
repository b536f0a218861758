"""JupyterLab widgets (anywidget): see a generator, what it costs and how it learns.

- :class:`TopologyDesigner`: family presets or a hand-drawn network, with live costs.
- :class:`ContractionInspector`: the contraction step by step, schedules side by side.
- :class:`LiveTrainer`: training in a background thread with Start, Stop and Resume.
- :class:`CompressionExplorer`: accuracy against parameters over a sweep, Pareto front marked.

Their ES modules and stylesheets live in ``adntn_lab/widgets/static/``.
"""

from .designer import TopologyDesigner
from .explorer import CompressionExplorer, pareto_front
from .inspector import ContractionInspector, compare_schedules, merged_cores
from .trainer import LiveTrainer, compression_info

__all__ = [
    "CompressionExplorer",
    "ContractionInspector",
    "LiveTrainer",
    "TopologyDesigner",
    "compare_schedules",
    "compression_info",
    "merged_cores",
    "pareto_front",
]
