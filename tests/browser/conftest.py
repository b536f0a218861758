"""Fixtures for real-browser tests: a JupyterLab server and a Chromium page driven by Playwright.

- ``lab_server`` (session): JupyterLab on 127.0.0.1 at a free port, token auth, temporary root;
  log in ``artifacts/browser/jupyterlab.log``.
- ``chromium`` (session): headless Chromium (``$ADNTN_CHROMIUM``, default ``/usr/bin/chromium``).
- ``lab_page`` (per test): a fresh browser context and page. When the test fails, a screenshot
  and the browser console are saved to ``artifacts/browser/`` under the test's name; the kernels
  the test started are shut down afterwards.

Whether browser tests may run at all (and whether a missing browser skips or fails them) is
decided in ``tests/conftest.py``.
"""

from __future__ import annotations

import re

import pytest
from labdriver import ARTIFACTS, CHROMIUM, start_lab_server, stop_lab_server


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """A running :class:`labdriver.LabServer`, shared by all browser tests."""
    server = start_lab_server(tmp_path_factory.mktemp("jupyterlab"), ARTIFACTS / "jupyterlab.log")
    yield server
    stop_lab_server(server)


@pytest.fixture(scope="session")
def chromium():
    """A headless Playwright Chromium browser."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
    except Exception:
        playwright.stop()
        raise
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def lab_page(request, chromium, lab_server):
    """A fresh page (1400x900) in its own browser context."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    console = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"))
        except Exception:  # the page may be gone; the console log still helps
            pass
        (ARTIFACTS / f"FAILED-{name}-console.txt").write_text("\n".join(console))
    context.close()
    lab_server.shutdown_kernels()
