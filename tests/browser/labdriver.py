"""Drive a real JupyterLab in Chromium from pytest: server, notebooks, cells, screenshots.

The fixtures in ``tests/browser/conftest.py`` build on these functions; tests normally use the
fixtures (``lab_server``, ``lab_page``) and call the notebook functions below directly::

    from labdriver import cell_output_text, open_notebook, run_all, write_notebook

    @pytest.mark.browser
    def test_something(lab_server, lab_page, tmp_path):
        nb = write_notebook(tmp_path / "demo.ipynb", ["x = 6 * 7", "print(x)"])
        open_notebook(lab_page, lab_server, nb)
        run_all(lab_page)
        assert cell_output_text(lab_page, 1) == "42"

Every function works on the notebook that is visible in the page (the current tab). Cell indices
count all cells (code and markdown) from 0, as in the ``.ipynb`` file. Timeouts are in seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ADNTN_ARTIFACTS_DIR", REPO_ROOT / "artifacts")) / "browser"
CHROMIUM = Path(os.environ.get("ADNTN_CHROMIUM", "/usr/bin/chromium"))

# JupyterLab user settings that keep the page quiet and deterministic: no news or update
# toasts, every cell attached to the DOM (no virtual scrolling), no bracket auto-closing.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/codemirror-extension/plugin.jupyterlab-settings": {
        "defaultConfig": {"autoClosingBrackets": False}
    },
}


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab server started by :func:`start_lab_server`.

    Attributes
    ----------
    url : str
        Base URL with a trailing slash, e.g. ``"http://127.0.0.1:38211/"``.
    token : str
        The random authentication token.
    root : pathlib.Path
        The server's root directory; notebooks must lie inside it to be opened.
    log : pathlib.Path
        File that receives the server's (and its kernels') stdout and stderr.
    process : subprocess.Popen
        The server process (leader of its own process group, which also holds the kernels).
    """

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen

    def lab_url(self, path: str) -> str:
        """URL that opens ``path`` (relative to :attr:`root`) in JupyterLab, token included.

        ``reset`` starts from an empty workspace, so that documents opened by earlier pages on
        the same server are not restored (and do not start kernels of their own).
        """
        return f"{self.url}lab/tree/{path}?reset&token={self.token}"

    def api(self, endpoint: str, method: str = "GET", body: Any = None, timeout: float = 10.0):
        """Call the REST API, e.g. ``server.api("api/sessions")``; returns the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + endpoint.lstrip("/"),
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def log_tail(self, n_chars: int = 4000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no server log)"

    def shutdown_kernels(self) -> None:
        """Delete every session, which shuts its kernel down."""
        for session in self.api("api/sessions"):
            try:
                self.api(f"api/sessions/{session['id']}", method="DELETE")
            except urllib.error.HTTPError:
                pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_lab_server(base: Path, log: Path, timeout: float = 60.0) -> LabServer:
    """Start JupyterLab on 127.0.0.1 at a free port and wait until ``/api/status`` answers.

    Parameters
    ----------
    base : pathlib.Path
        An empty temporary directory. The server root is ``base / "root"``; Jupyter's config,
        data, runtime and settings directories are created beside it so that nothing from the
        user's own Jupyter setup leaks in.
    log : pathlib.Path
        File for the server's output.
    timeout : float
        Seconds to wait for the server to answer.

    Returns
    -------
    LabServer
    """
    base = Path(base)
    root = base / "root"
    root.mkdir(parents=True, exist_ok=True)
    settings = base / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(base / "ipython"),
    )
    token = secrets.token_hex(24)
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = LabServer(f"http://127.0.0.1:{port}/", token, root, log, process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with status {process.returncode} before answering; "
                f"log {log}:\n{server.log_tail()}"
            )
        try:
            server.api("api/status", timeout=2.0)
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop_lab_server(server)
            raise RuntimeError(
                f"JupyterLab did not answer on {server.url}api/status within {timeout:.0f} s; "
                f"log {log}:\n{server.log_tail()}"
            )
        time.sleep(0.2)


def stop_lab_server(server: LabServer, timeout: float = 10.0) -> None:
    """Shut the server down: ask politely, then terminate, then kill its process group."""
    process = server.process
    if process.poll() is None:
        try:
            server.api("api/shutdown", method="POST", timeout=5.0)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
    try:  # kernels share the server's process group; leave none behind
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------


def write_notebook(path: Path, cells: Sequence[str | tuple[str, str]]) -> Path:
    """Write a Python 3 notebook with the given cells and return its path.

    Parameters
    ----------
    path : pathlib.Path
        Destination ``.ipynb`` file.
    cells : sequence of str or (kind, source)
        A plain string is a code cell; ``("markdown", text)`` makes a markdown cell.
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    for cell in cells:
        kind, source = ("code", cell) if isinstance(cell, str) else cell
        if kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source))
        elif kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            raise ValueError(f"cell kind must be 'code' or 'markdown', got {kind!r}")
    path = Path(path)
    nbformat.write(nb, path)
    return path


def open_notebook(page, server: LabServer, notebook: Path | str, timeout: float = 60.0,
                  hide_sidebar: bool = True):
    """Open a notebook in JupyterLab and wait until its kernel is idle.

    Parameters
    ----------
    page : playwright.sync_api.Page
    server : LabServer
    notebook : pathlib.Path or str
        An ``.ipynb`` file anywhere (copied into the server root under its own name unless it
        already lies inside the root), or a path relative to the root.
    timeout : float
        Seconds for the page to load and the kernel to start.
    hide_sidebar : bool
        Collapse the left sidebar so that the notebook gets the width of the page.

    Returns
    -------
    playwright.sync_api.Locator
        The notebook panel.
    """
    path = Path(notebook)
    if path.is_absolute():
        try:
            rel = path.resolve().relative_to(server.root.resolve())
        except ValueError:
            shutil.copy(path, server.root / path.name)
            rel = Path(path.name)
    else:
        rel = path
        if not (server.root / rel).is_file():
            raise FileNotFoundError(f"{rel} is not in the server root {server.root}")
    page.goto(server.lab_url(rel.as_posix()), timeout=timeout * 1000)
    panel = notebook_panel(page)
    panel.locator(".jp-Notebook").wait_for(state="visible", timeout=timeout * 1000)
    if hide_sidebar:
        page.evaluate(
            "() => { const app = window.jupyterapp;"
            " if (app && !app.shell.leftCollapsed) app.shell.collapseLeft(); }"
        )
    wait_idle(page, timeout=timeout)
    return panel


def notebook_panel(page):
    """Locator of the notebook panel visible in the page (the current tab)."""
    return page.locator(".jp-NotebookPanel:visible")


def cells(page):
    """Locator of all cells (``.jp-Cell``) of the visible notebook, in order."""
    return notebook_panel(page).locator(".jp-Notebook .jp-Cell")


# Read the visible notebook's state in one round trip: kernel status, the input prompts of the
# code cells ("[ ]:", "[*]:", "[3]:"), and the errors in the notebook model (needs the app that
# the server fixture exposes as window.jupyterapp).
_STATE_JS = """
() => {
  const panels = [...document.querySelectorAll('.jp-NotebookPanel')].filter(p => {
    const r = p.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
  if (panels.length === 0) return null;
  const panel = panels[0];
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => {
    const p = c.querySelector('.jp-InputPrompt');
    return c.classList.contains('jp-CodeCell') && p ? p.textContent.trim() : null; });
  const errors = [];
  let kernel;
  const app = window.jupyterapp;
  const widget = app && app.shell.currentWidget;
  if (widget && widget.node === panel && widget.sessionContext) {
    const session = widget.sessionContext.session;
    kernel = session && session.kernel ? session.kernel.status : null;
  }
  if (widget && widget.node === panel && widget.content && widget.content.model) {
    const model = widget.content.model;
    for (let i = 0; i < model.cells.length; i++) {
      const outputs = model.cells.get(i).outputs;
      if (!outputs) continue;
      for (let j = 0; j < outputs.length; j++) {
        const out = outputs.get(j).toJSON();
        if (out.output_type === 'error')
          errors.push({cell: i, ename: out.ename, evalue: out.evalue});
      }
    }
  }
  return {status: indicator ? indicator.dataset.status : null, kernel, prompts, errors};
}
"""


def notebook_state(page) -> dict:
    """Kernel status, code-cell prompts and errors of the visible notebook.

    Returns
    -------
    dict
        ``{"status", "kernel", "prompts", "errors"}``: ``status`` is the kernel status shown
        in the notebook toolbar (``"idle"``, ``"busy"``, ...); ``kernel`` the status of the
        kernel the notebook's session holds (None while it has none; absent when the page does
        not expose the app); ``prompts[i]`` the input prompt of cell ``i`` (``"[ ]:"``,
        ``"[*]:"``, ``"[3]:"``; None for markdown cells); each error is
        ``{"cell": i, "ename": ..., "evalue": ...}`` for an error output in the notebook.
    """
    state = page.evaluate(_STATE_JS)
    if state is None:
        raise RuntimeError("no notebook is visible in the page")
    return state


def _wait(page, done, what: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = notebook_state(page)
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; "
                               f"notebook state: {state}")
        page.wait_for_timeout(100)


def _running(state: dict) -> bool:
    return any(p is not None and "*" in p for p in state["prompts"])


def wait_idle(page, timeout: float = 60.0) -> dict:
    """Wait until no cell is queued or running and the kernel reports ``idle``.

    The kernel must be seen idle on two polls 0.1 s apart, so that the short idle spell
    between two executions does not count. Returns :func:`notebook_state`.
    """
    seen = [0]

    def done(state):
        quiet = (
            state["status"] == "idle"
            and state.get("kernel", "idle") == "idle"
            and not _running(state)
        )
        seen[0] = seen[0] + 1 if quiet else 0
        return seen[0] >= 2

    return _wait(page, done, "the kernel to become idle", timeout)


def _raise_errors(state: dict, what: str) -> None:
    if state["errors"]:
        lines = [f"  cell {e['cell']}: {e['ename']}: {e['evalue']}" for e in state["errors"]]
        raise AssertionError(f"{what} raised:\n" + "\n".join(lines))


def run_all(page, timeout: float = 120.0, raise_on_error: bool = True) -> dict:
    """Run all cells through the menu (Run > Run All Cells) and wait for the kernel to finish.

    Parameters
    ----------
    page : playwright.sync_api.Page
    timeout : float
        Seconds for the whole notebook to run.
    raise_on_error : bool
        Raise AssertionError naming every cell whose output holds an error.

    Returns
    -------
    dict
        The final :func:`notebook_state`.
    """
    before = notebook_state(page)["prompts"]
    if all(p is None for p in before):
        return notebook_state(page)
    page.locator('.lm-MenuBar-item:has(.lm-MenuBar-itemLabel:text-is("Run"))').click()
    page.locator('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))').click()
    _wait(page, lambda s: s["prompts"] != before, "Run All Cells to start", 30.0)
    state = wait_idle(page, timeout=timeout)
    if raise_on_error:
        _raise_errors(state, "Run All Cells")
    return state


def cell_output_text(page, index: int) -> str:
    """Text of the outputs of cell ``index`` (0-based, all cells), joined by newlines."""
    outputs = cells(page).nth(index).locator(".jp-OutputArea-output")
    return "\n".join(t.strip() for t in outputs.all_inner_texts())


def run_code_in_new_cell(page, code: str, timeout: float = 60.0,
                         raise_on_error: bool = True) -> str:
    """Type ``code`` into a new cell at the end, run it with Shift+Enter, return its output text.

    The cell is typed through the keyboard as a user would: select the last cell, press ``b``
    (insert below) and ``Enter`` (edit mode), insert the text, press ``Shift+Enter``. An empty
    code cell at the end (as Shift+Enter leaves behind) is used instead of adding another.
    """
    all_cells = cells(page)
    n_cells = all_cells.count()
    last = all_cells.nth(n_cells - 1) if n_cells else None
    reuse = (
        last is not None
        and "jp-CodeCell" in (last.get_attribute("class") or "")
        and not last.locator(".cm-content").inner_text().strip()
    )
    if reuse:
        index = n_cells - 1
        last.locator(".jp-InputPrompt").click()
        page.keyboard.press("Escape")
    else:
        index = n_cells
        if last is not None:
            last.locator(".jp-InputPrompt").click()
            page.keyboard.press("Escape")
            page.keyboard.press("b")
        else:
            notebook_panel(page).locator(".jp-Notebook").click()
    cell = all_cells.nth(index)
    cell.wait_for(state="visible", timeout=10_000)
    page.keyboard.press("Enter")
    cell.locator(".cm-content:focus").wait_for(timeout=10_000)
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")

    def done(state):
        prompt = state["prompts"][index] if len(state["prompts"]) > index else None
        return prompt is not None and prompt.strip("[]: ").isdigit()

    _wait(page, done, f"cell {index} to run", timeout)
    state = wait_idle(page, timeout=timeout)
    if raise_on_error:
        _raise_errors({"errors": [e for e in state["errors"] if e["cell"] == index]},
                      f"cell {index}")
    return cell_output_text(page, index)


def screenshot(page, name: str, target=None, full_page: bool = False) -> Path:
    """Save a PNG to ``artifacts/browser/NAME.png`` and return its path.

    ``target`` may be a Locator to capture one element instead of the page.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if target is not None:
        target.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=full_page)
    return path
