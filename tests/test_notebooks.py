"""The notebooks run, and are stored executed, readable on GitHub and nbviewer, path-free.

Re-execute and store them all with ``.venv/bin/python tools/execute_notebooks.py``.
"""

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
MACHINE_PATH = re.compile(r"/work/|/tmp/|/root/|/home/|/Users/|\b[A-Za-z]:\\[\w.]")  # C:\Users
ids = [p.name for p in NOTEBOOKS]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", ROOT / "tools" / "execute_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def _shows_something(source: str) -> bool:
    """A cell that prints, or whose last statement is an expression not silenced by ';'."""
    tree = ast.parse(source)
    prints = any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("print", "display")
        for n in ast.walk(tree)
    )
    last = tree.body[-1] if tree.body else None
    shown = isinstance(last, ast.Expr) and not source.rstrip().endswith(";")
    return prints or shown


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ should hold at least the quickstart"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_stored_executed(path):
    cells = _code_cells(path)
    unrun = [i for i, c in cells if c.execution_count is None]
    assert not unrun, f"cells {unrun} are stored unexecuted: run tools/execute_notebooks.py"
    counts = [c.execution_count for _, c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"not run top to bottom once: {counts}"
    silent = [i for i, c in cells if _shows_something(c.source) and not c.outputs]
    assert not silent, f"cells {silent} should show something but have no stored output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_stored_without_errors(path):
    errors = [
        (i, o.ename, o.evalue)
        for i, c in _code_cells(path)
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_figures_have_a_static_fallback(path):
    """GitHub and nbviewer run no JavaScript: plotly JSON needs an image or plain HTML beside it,
    and no output may rely on a script to show anything."""
    bad = []
    for i, c in _code_cells(path):
        for o in c.outputs:
            data = o.get("data", {})
            if PLOTLY in data and not ({"image/png", "text/html"} & set(data)):
                bad.append((i, "plotly JSON without image/png or text/html"))
            if "<script" in str(data.get("text/html", "")) or "srcdoc=" in str(
                data.get("text/html", "")
            ):
                bad.append((i, "text/html that needs JavaScript"))
            if "image/png" in data:
                assert len(data["image/png"]) > 1000, f"cell {i}: a suspiciously small PNG"
    assert not bad


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "image/png":
                yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_machine_paths_in_outputs(path):
    leaks = [
        (i, text[max(m.start() - 30, 0) : m.end() + 30])
        for i, c in _code_cells(path)
        for text in _strings(c.outputs)
        for m in MACHINE_PATH.finditer(text)
    ]
    assert not leaks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_no_progress_bars_or_terminal_codes(path):
    """Progress bars and cursor escapes show as junk lines in a stored notebook."""
    junk = [
        (i, text[:80])
        for i, c in _code_cells(path)
        for o in c.outputs
        if o.output_type == "stream"
        for text in [o.text]
        if "\x1b[" in text or re.search(r"\d+%\|", text)
    ]
    assert not junk


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs(path):
    """Run offline, the way tools/execute_notebooks.py stores it: no errors, no machine paths."""
    tool = _tool()
    nb = tool.execute(path)
    assert not tool.problems(nb)
