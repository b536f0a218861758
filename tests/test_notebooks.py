"""Workshop notebooks: each runs start to finish in quick mode; none is committed with output.

Every notebook in ``notebooks/`` is executed with nbclient in a fresh ``python3`` kernel that
runs this interpreter (``sys.executable``), with ``ADNTN_QUICK=1`` in the kernel's environment
and ``notebooks/`` as its working directory. Exercises are executed with their solutions: each
empty code cell tagged ``exercise`` is filled with the code of the hidden solution that follows
it, so the solutions are checked as well. A static check makes sure that no later cell relies
on a name that only a solution defines (participants may skip the exercises).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]

CELL_TIMEOUT_S = 240  # one cell in quick mode
NOTEBOOK_TIMEOUT_S = 420  # one whole notebook in quick mode (pytest-timeout)
QUICK_FLAG = 'QUICK = os.environ.get("ADNTN_QUICK", "0") == "1"'
SOLUTION_RE = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _exercises(nb) -> list[tuple[int, str]]:
    """(index of the empty exercise cell, solution code) for every exercise of ``nb``."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "exercise" not in _tags(cell):
            continue
        following = [c for c in nb.cells[i + 1:] if "solution" in _tags(c)
                     or "exercise" in _tags(c)]
        if not following or "solution" not in _tags(following[0]):
            raise AssertionError(f"exercise cell {i} has no hidden solution after it")
        match = SOLUTION_RE.search(following[0].source)
        if match is None:
            raise AssertionError(f"the solution after exercise cell {i} has no ```python block")
        out.append((i, match.group(1)))
    return out


def _assigned(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _loaded(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _code(source: str) -> ast.AST:
    # IPython magics and shell escapes are not Python; the notebooks use none, but be lenient
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return ast.parse("\n".join(lines))


def _kernel_spec_dir(tmp_path: Path) -> Path:
    """A ``python3`` kernelspec that starts a kernel with this very interpreter."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (adntn_lab tests)",
        "language": "python",
    }))
    return tmp_path / "jupyter"


def test_there_are_workshop_notebooks():
    numbers = [name[:2] for name in NAMES]
    assert len(NOTEBOOKS) >= 6, f"expected the six workshop notebooks, found {NAMES}"
    assert numbers == sorted(set(numbers)), f"notebook numbers repeat: {NAMES}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_is_committed_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name}: cell {i} has outputs; strip them"
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {i} has execution_count {cell.get('execution_count')}; "
            "strip it")
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in the metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_structure(path):
    """A goal on top, the quick-mode flag in the first code cell, hidden solutions that are
    not needed by the cells after them."""
    nb = _read(path)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    assert "**Goal:**" in first_md.source, f"{path.name}: the first cell must state the goal"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert QUICK_FLAG in first_code.source, f"{path.name}: first code cell must read ADNTN_QUICK"

    exercises = _exercises(nb)
    assert exercises, f"{path.name}: has no exercise"
    for i, cell in enumerate(nb.cells):
        if "exercise" in _tags(cell):
            assert cell.source.strip() == "", f"{path.name}: exercise cell {i} is not empty"
        if "solution" in _tags(cell):
            assert cell.source.lstrip().startswith("<details><summary>Solution</summary>"), (
                f"{path.name}: solution cell {i} is not hidden behind a <details> toggle")

    # names that only solutions define must not be used by the notebook's own later cells
    plain = [(i, _code(c.source)) for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and "exercise" not in _tags(c)]
    defined_by_notebook = set().union(*(_assigned(t) for _, t in plain))
    for index, solution in exercises:
        only_here = _assigned(_code(solution)) - defined_by_notebook
        for j, tree in plain:
            if j > index:
                used = _loaded(tree) & only_here
                assert not used, (f"{path.name}: cell {j} uses {sorted(used)}, which only the "
                                  f"solution of exercise cell {index} defines")


def _with_solutions(nb):
    solved = copy.deepcopy(nb)
    for index, solution in _exercises(solved):
        solved.cells[index].source = solution
    return solved


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    nb = _with_solutions(_read(path))
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec_dir(tmp_path)))
    env = {**os.environ, "ADNTN_QUICK": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed in quick mode:\n{ANSI_RE.sub('', str(err))}",
                    pytrace=False)
    elapsed = time.perf_counter() - t0
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: cells raised {[(i, o['ename']) for i, o in errors]}"
    ran = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in ran), f"{path.name}: cells were skipped"
    print(f"{path.name}: {elapsed:.1f} s in quick mode")
