"""The widgets in a real JupyterLab page: draw, step, stop — and check the kernel agrees.

Runs ``widgets_browser.ipynb`` (next to this file), then

- draws in the TopologyDesigner: a click on the empty canvas adds a core, a click on its
  ``+`` handle and then on the root joins them; the parameter count changes in the page and in
  the kernel;
- moves the ContractionInspector's slider with the keyboard and sees the next step's shape;
- starts the LiveTrainer, presses Stop mid-run and sees training stop (in the page and in
  the kernel);
- clicks a point of the CompressionExplorer and reads its configuration.

Screenshots of every widget go to ``artifacts/browser/widgets-*.png``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from labdriver import cell_output_text, open_notebook, run_all, run_code_in_new_cell, screenshot

import adntn_lab as al

NOTEBOOK = Path(__file__).with_name("widgets_browser.ipynb")


def _notebook_source(index: int) -> str:
    return "".join(json.loads(NOTEBOOK.read_text())["cells"][index]["source"])


def _start_design() -> dict:
    """The ``start`` design the notebook's designer cell defines (read from the notebook)."""
    scope: dict = {}
    source = _notebook_source(3)
    exec(source.split("designer = ")[0], scope)  # only the dict literal, no widget
    return scope["start"]


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_widgets_in_jupyterlab(lab_server, lab_page):
    from playwright.sync_api import expect

    page = lab_page
    page.set_viewport_size({"width": 1400, "height": 1300})
    open_notebook(page, lab_server, NOTEBOOK)
    run_all(page, timeout=150)
    start = _start_design()
    first = al.from_graph(start).num_params
    assert cell_output_text(page, 4) == f"designer params: {first}"

    # ------------------------------------------------------------------ designer
    designer = page.locator(".adntn-designer")
    params = designer.get_by_test_id("stat-params")
    expect(params).to_have_text(f"{first:,}")
    canvas = designer.get_by_test_id("designer-canvas")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.85, "y": box["height"] * 0.25})
    new_core = designer.locator("[data-core]").nth(3)
    expect(new_core).to_have_attribute("data-core", "c3")
    # a core without legs is not a valid design yet: the page says so and keeps the count
    expect(designer.get_by_test_id("designer-error")).to_contain_text("'c3' has no legs")
    expect(params).to_have_text(f"{first:,}")
    designer.locator('[data-handle="c3"]').click()
    designer.locator('[data-core="r"] .adntn-core-shape').click()
    expected = dict(start, cores=[*start["cores"], {"name": "c3", "stage": 0, "sites": []}],
                    bonds=[*start["bonds"], {"u": "c3", "v": "r", "dim": 3}])
    after = al.from_graph(expected).num_params
    assert after != first
    expect(params).to_have_text(f"{after:,}")
    expect(designer.get_by_test_id("designer-error")).to_be_hidden()
    expect(designer.locator(".adntn-bond")).to_have_count(3)
    screenshot(page, "widgets-designer", target=designer)
    out = run_code_in_new_cell(
        page, "print(designer.generator.num_params, [c['name'] for c in designer.design['cores']],"
              " repr(designer.error))")
    assert out == f"{after} ['a', 'b', 'r', 'c3'] ''"

    # ------------------------------------------------------------------ inspector
    inspector = page.locator(".adntn-inspector")
    inspector.scroll_into_view_if_needed()
    steps = al.build("ttn", 64, 64, bond_dim=3).cost().steps
    label = inspector.get_by_test_id("step-label")
    shape = inspector.get_by_test_id("intermediate-shape")
    expect(label).to_have_text("step 1 / 2")
    expect(shape).to_have_text(str(steps[0].output_shape))
    first_drawing = inspector.get_by_test_id("inspector-drawing").get_attribute("src")
    slider = inspector.get_by_test_id("step-slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    expect(label).to_have_text("step 2 / 2")
    expect(shape).to_have_text(str(steps[1].output_shape))
    expect(inspector.get_by_test_id("intermediate-cores")).to_have_text("U0, U1, G0")
    expect(inspector.locator(".adntn-tree .adntn-node.adntn-current")).to_have_attribute(
        "data-step", "1")
    assert inspector.get_by_test_id("inspector-drawing").get_attribute("src") != first_drawing
    screenshot(page, "widgets-inspector", target=inspector)
    out = run_code_in_new_cell(
        page, "print(inspector.step, inspector.intermediate['shape'], inspector.highlight)")
    assert out == f"1 {list(steps[1].output_shape)} ['U0', 'U1', 'G0']"

    # ------------------------------------------------------------------ trainer
    trainer = page.locator(".adntn-trainer")
    trainer.scroll_into_view_if_needed()
    status = trainer.get_by_test_id("trainer-status")
    progress = trainer.get_by_test_id("trainer-progress")
    expect(status).to_have_text("idle")
    trainer.get_by_test_id("trainer-start").click()
    expect(status).to_have_text("running")
    expect(progress).to_have_text(re.compile(r"step (\d{2,}) /"), timeout=60_000)
    expect(trainer.locator(".adntn-chart polyline").first).to_be_visible()
    trainer.get_by_test_id("trainer-stop").click()
    # Stop takes effect after the current step (the headless tests check the thread ends)
    expect(status).to_have_text("stopped", timeout=10_000)
    stopped_at = int(re.search(r"step (\d+) /", progress.inner_text()).group(1))
    page.wait_for_timeout(1000)
    assert int(re.search(r"step (\d+) /", progress.inner_text()).group(1)) == stopped_at
    expect(trainer.get_by_test_id("trainer-resume")).to_be_enabled()
    screenshot(page, "widgets-trainer", target=trainer)
    out = run_code_in_new_cell(page, "print(trainer.status, trainer.running, trainer.state.step)")
    assert out == f"stopped False {stopped_at}"

    # ------------------------------------------------------------------ explorer
    explorer = page.locator(".adntn-explorer")
    explorer.scroll_into_view_if_needed()
    expect(explorer.locator(".adntn-point.adntn-pareto")).to_have_count(4)
    explorer.locator('.adntn-point[data-key="mpo-chi2"]').click()
    selection = explorer.get_by_test_id("explorer-selection")
    expect(selection).to_contain_text("mpo-chi2")
    expect(selection).to_contain_text("dominated by ttn-chi2")
    screenshot(page, "widgets-explorer", target=explorer)
    out = run_code_in_new_cell(page, "print(explorer.selected_generator.num_params)")
    assert out == str(al.build("mpo", 64, 64, bond_dim=2).num_params)
