"""Timing helpers shared by the benchmarks (side-by-side ratios, never absolute claims)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def timeit(fn, *, repeat: int = 5, warmup: int = 1, min_time: float = 0.0) -> float:
    """Best (minimum) wall time of ``fn()`` in seconds.

    The minimum is the least disturbed by other work on a shared machine; the ratios reported
    compare minima taken in the same run.
    """
    for _ in range(warmup):
        fn()
    times = []
    t_start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - t_start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return float(np.min(times))


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path
