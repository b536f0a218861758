"""Suite-wide test gating: tests marked ``gpu`` or ``browser`` run only where they can.

- ``gpu``: skipped unless torch sees a CUDA device or CuPy can use one.
- ``browser``: skipped unless Playwright, JupyterLab and a Chromium executable
  (``$ADNTN_CHROMIUM``, default ``/usr/bin/chromium``) are present. When ``CI`` is set to a
  true value they fail with the same reason instead, so that CI never passes without them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set to a true value."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def gpu_unavailable_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is usable."""
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except ImportError:
        pass
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                return None
        except Exception:  # any CUDA runtime error means "no usable device"
            pass
    return "no CUDA device: torch.cuda.is_available() is False and CuPy has no usable device"


@functools.cache
def browser_unavailable_reason() -> str | None:
    """Why browser tests cannot run here, or None when everything they need is present."""
    chromium = Path(os.environ.get("ADNTN_CHROMIUM", "/usr/bin/chromium"))
    missing = []
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        missing.append(f"a Chromium executable at {chromium} (`apt-get install chromium`)")
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {package} (`pip install -e .[dev]`)")
    if not missing:
        return None
    return "browser tests need " + " and ".join(missing)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        reason = gpu_unavailable_reason()
        if reason:
            pytest.skip(reason)
    if item.get_closest_marker("browser") is not None:
        reason = browser_unavailable_reason()
        if reason:
            if in_ci():
                pytest.fail(f"{reason}; CI=true, so browser tests may not be skipped",
                            pytrace=False)
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each test with one torch thread: the suite's layers are small, and on a shared
    two-core machine a second thread mostly spins waiting for the first."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Start each test with empty process-wide caches (contraction trees; the widgets' shared
    text and trainer registry, when the widgets are loaded), so tests pass in any order."""
    from adntn_lab.engine.planning import clear_plan_cache

    clear_plan_cache()
    widgets = sys.modules.get("adntn_lab.widgets._common")
    if widgets is not None:
        widgets.clear_widget_caches()
    yield


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as an adntn_lab Dataset (loaded once; tests only read it)."""
    from adntn_lab.data import load_dataset

    return load_dataset("digits")
