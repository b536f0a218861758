"""What went wrong at the workshop, checked in a real JupyterLab page.

- Enter applies a number typed into the designer's preset form (not only leaving the field),
  and a typo such as ``1e3`` as bond dimension is refused in place: the error says why, the
  parameter count stays, the kernel stays responsive.
- The explorer's plot shows one experiment; a sweep on another dataset gets its own view.
- Restarting the kernel mid-training turns the trainer (and every other widget) into a
  visibly disconnected state: the status says so and Stop is disabled.

Screenshots go to ``artifacts/browser/workshop-*.png``.
"""

from __future__ import annotations

import pytest
from labdriver import open_notebook, run_all, run_code_in_new_cell, screenshot, write_notebook

import adntn_lab as al

CELLS = [
    "from adntn_lab.data import load_dataset\n"
    "from adntn_lab.models import build_model\n"
    "from adntn_lab.nn import compress_model\n"
    "from adntn_lab.widgets import CompressionExplorer, LiveTrainer, TopologyDesigner",
    "designer = TopologyDesigner('ttn', 1024, 1024, bond_dim=4, memory_budget='2GiB')\n"
    "designer",
    "rows = [dict(key='dense', family='dense', params=4810, test_acc=0.96, dataset='mnist-5k',"
    " model='fc2', layer='fc1', hidden=256),\n"
    "        dict(key='ttn-chi2', family='ttn', bond_dim=2, params=822, test_acc=0.90,"
    " dataset='mnist-5k', model='fc2', layer='fc1', hidden=256),\n"
    "        dict(key='ttn-chi2', family='ttn', bond_dim=2, params=700, test_acc=0.99,"
    " dataset='digits', model='fc2', layer='fc1', hidden=64)]\n"
    "explorer = CompressionExplorer(rows)\n"
    "explorer",
    "data = load_dataset('digits')\n"
    "model = compress_model(build_model('fc2', data, hidden=32), topology='ttn',"
    " include=['fc1'], min_params=0, bond_dim=3)\n"
    "trainer = LiveTrainer(model, data, epochs=2000, update_interval=0.2)\n"
    "trainer",
]


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_workshop_fixes_in_jupyterlab(lab_server, lab_page, tmp_path):
    from playwright.sync_api import expect

    page = lab_page
    page.set_viewport_size({"width": 1400, "height": 1400})
    nb = write_notebook(tmp_path / "workshop_fixes.ipynb", CELLS)
    open_notebook(page, lab_server, nb)
    run_all(page, timeout=150)

    # ------------------------------------------------------------------ Enter and a typo
    designer = page.locator(".adntn-designer")
    params = designer.get_by_test_id("stat-params")
    expect(params).to_have_text(f"{al.build('ttn', 1024, 1024, bond_dim=4).num_params:,}")
    field = designer.get_by_test_id("preset-bond_dim")
    field.fill("6")
    field.press("Enter")  # no blur: the field keeps the focus
    expect(params).to_have_text(f"{al.build('ttn', 1024, 1024, bond_dim=6).num_params:,}")
    assert field.evaluate("node => node === document.activeElement")
    field.fill("1e3")
    field.press("Enter")
    error = designer.get_by_test_id("designer-error")
    expect(error).to_contain_text("with bond_dim=1000 needs about")
    expect(error).to_contain_text("would fit")
    expect(params).to_have_text(f"{al.build('ttn', 1024, 1024, bond_dim=6).num_params:,}")
    expect(designer.get_by_test_id("designer-busy")).to_be_hidden()
    screenshot(page, "workshop-designer-refused", target=designer)
    out = run_code_in_new_cell(page, "print(designer.generator.num_params, designer.preset"
                                     "['bond_dim'])")
    assert out == f"{al.build('ttn', 1024, 1024, bond_dim=6).num_params} 1000"

    # pictures: a MERA with lateral mixers and a deep brick wall (bonds clear of cores, the
    # legend inside the widget)
    run_code_in_new_cell(page, "designer.preset = {**designer.preset, 'family': 'mera', "
                               "'in_features': 64, 'out_features': 64, 'bond_dim': 3, "
                               "'lateral': True}")
    expect(designer.get_by_test_id("stat-params")).to_have_text(
        f"{al.build('mera', 64, 64, bond_dim=3, lateral=True).num_params:,}")
    screenshot(page, "workshop-designer-mera", target=designer)
    run_code_in_new_cell(page, "designer.preset = {**designer.preset, 'family': 'brickwall', "
                               "'depth': 9}")
    expect(designer.get_by_test_id("stat-params")).to_have_text(
        f"{al.build('brickwall', 64, 64, depth=9).num_params:,}")
    legend = designer.locator(".adntn-legend")
    assert legend.evaluate("n => n.scrollWidth <= n.clientWidth + 1")
    assert legend.evaluate("n => n.getBoundingClientRect().right <= "
                           "n.closest('.adntn-widget').getBoundingClientRect().right")
    screenshot(page, "workshop-designer-brickwall", target=designer)

    # ------------------------------------------------------------------ explorer views
    explorer = page.locator(".adntn-explorer")
    explorer.scroll_into_view_if_needed()
    view = explorer.get_by_test_id("explorer-view")
    expect(view).to_have_value("mnist-5k · fc2 · fc1 · hidden 256")
    expect(explorer.locator(".adntn-point")).to_have_count(2)
    view.select_option("digits · fc2 · fc1 · hidden 64")
    expect(explorer.locator(".adntn-point")).to_have_count(1)
    expect(explorer.locator(".adntn-point.adntn-pareto")).to_have_count(1)
    screenshot(page, "workshop-explorer-view", target=explorer)

    # ------------------------------------------------------------------ kernel restart
    trainer = page.locator(".adntn-trainer")
    trainer.scroll_into_view_if_needed()
    status = trainer.get_by_test_id("trainer-status")
    trainer.get_by_test_id("trainer-start").click()
    expect(status).to_have_text("running")
    expect(trainer.get_by_test_id("trainer-stop")).to_be_enabled()
    # Kernel > Restart Kernel, without its confirmation dialog
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    banner = trainer.get_by_test_id("disconnected")
    expect(banner).to_be_visible(timeout=20_000)
    expect(banner).to_contain_text("kernel was restarted")
    expect(status).to_have_text("disconnected")
    expect(trainer.get_by_test_id("trainer-stop")).to_be_disabled()
    # every widget of the dead kernel says so
    expect(designer.get_by_test_id("disconnected")).to_be_visible()
    expect(explorer.get_by_test_id("disconnected")).to_be_visible()
    screenshot(page, "workshop-trainer-disconnected", target=trainer)
