"""The browser harness itself: a tiny anywidget driven through a real JupyterLab page."""

from __future__ import annotations

import pytest
from labdriver import (
    cell_output_text,
    open_notebook,
    run_all,
    run_code_in_new_cell,
    screenshot,
    write_notebook,
)

COUNTER_WIDGET = '''
import anywidget
import traitlets


class Counter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.className = "harness-counter";
      const show = () => { button.textContent = `count is ${model.get("value")}`; };
      button.addEventListener("click", () => {
        model.set("value", model.get("value") + 1);
        model.save_changes();
      });
      model.on("change:value", show);
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    value = traitlets.Int(0).tag(sync=True)


counter = Counter()
counter
'''


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_anywidget_counter_syncs_both_ways(lab_server, lab_page, tmp_path):
    from playwright.sync_api import expect

    page = lab_page
    nb = write_notebook(tmp_path / "harness_counter.ipynb", [
        ("markdown", "# Counter"),
        COUNTER_WIDGET,
        "print('ready', counter.value)",
    ])  # fmt: skip
    open_notebook(page, lab_server, nb)
    run_all(page)
    assert cell_output_text(page, 2) == "ready 0"

    button = page.locator("button.harness-counter")
    expect(button).to_have_text("count is 0")
    for _ in range(3):
        button.click()
    expect(button).to_have_text("count is 3")
    screenshot(page, "harness-counter-clicked")

    # The clicks reached the kernel: the traitlet holds the count.
    assert run_code_in_new_cell(page, "print('value =', counter.value)") == "value = 3"

    # And a change made in Python reaches the page.
    run_code_in_new_cell(page, "counter.value = 40\ncounter.value += 2")
    expect(button).to_have_text("count is 42")
    screenshot(page, "harness-counter-from-python")


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_run_all_reports_the_failing_cell(lab_server, lab_page, tmp_path):
    nb = write_notebook(tmp_path / "harness_error.ipynb", [
        "x = 1",
        "raise ValueError('bad value for x')",
        "print('not reached')",
    ])  # fmt: skip
    open_notebook(lab_page, lab_server, nb)
    with pytest.raises(AssertionError, match=r"cell 1: ValueError: bad value for x"):
        run_all(lab_page)
    assert cell_output_text(lab_page, 2) == ""
