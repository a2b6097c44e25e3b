"""Run the notebooks offline and store them executed, readable where JavaScript does not run.

    .venv/bin/python tools/execute_notebooks.py                  # every notebook in notebooks/
    .venv/bin/python tools/execute_notebooks.py notebooks/04_patching.ipynb

Each notebook runs in a fresh temporary directory, so nothing it writes lands in the repository,
and its progress bars are dropped from the stored outputs. GitHub and nbviewer run no
JavaScript, so every Plotly figure keeps its JSON (interactive in Jupyter) and gains a PNG drawn
by plotly.js in headless Chromium, and each of mechscope's iframe views (``Dashboard``, views)
is stored as a screenshot of its page instead of a multi-megabyte ``srcdoc``. A notebook whose
outputs hold an error or a machine path is not written: fix the cell to print relative paths.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PLOTLY = "application/vnd.plotly.v1+json"
MACHINE_PATH = re.compile(r"/work/|/tmp/|/root/|/home/|/Users/|\b[A-Za-z]:\\[\w.]")
_IFRAME = re.compile(r'^<iframe srcdoc="([^"]*)"')
_PROGRESS = re.compile(r"\d+%\|.*\| *[\d.]+k?/[\d.]+k? \[|\x1b\[")  # a tqdm bar, or cursor moves

# The kernel's environment: offline, figures as JSON (not 4.8 MB of inlined plotly.js per
# notebook), no ipywidgets warning (stderr noise that names the venv's path).
KERNEL_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "PLOTLY_RENDERER": "plotly_mimetype",
    "PYTHONWARNINGS": "ignore:IProgress not found",
}


def execute(path: Path, *, timeout: int = 1200) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed top to bottom in a temporary directory (not saved)."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="mechscope-nb-") as cwd:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,  # timestamps would change every cell on every run
            coalesce_streams=True,  # a progress bar is stored as its last state, not every update
            resources={"metadata": {"path": cwd}},
        )
        client.execute(env={**os.environ, **KERNEL_ENV})
    return nb


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Error outputs and machine paths in the outputs, one line each (empty: fine to store)."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {i}: {out.ename}: {out.evalue}")
            for text in _strings(out):
                hit = MACHINE_PATH.search(text)
                if hit:
                    where = text[max(hit.start() - 40, 0) : hit.end() + 40]
                    found.append(f"cell {i}: machine path in an output: ...{where}...")
    return found


def drop_progress_bars(nb: nbformat.NotebookNode) -> None:
    """Remove tqdm bars from stderr, in place: transient, and different on every run."""
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                lines = out.text.splitlines(keepends=True)
                out.text = "".join(line for line in lines if not _PROGRESS.search(line))
                if not out.text.strip():
                    continue
            kept.append(out)
        if "outputs" in cell:
            cell.outputs = kept


def _strings(obj: Any) -> list[str]:
    """Every string in an output, its PNG (base64) left out."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [t for k, v in obj.items() if k != "image/png" for t in _strings(v)]
    if isinstance(obj, list):
        return [t for v in obj for t in _strings(v)]
    return []


class StaticImages:
    """Adds ``image/png`` to the outputs JavaScript-free renderers cannot draw."""

    def __init__(self, browser: Any, workdir: Path):
        import plotly.offline

        self.browser, self.workdir = browser, workdir
        page = workdir / "plotly.html"
        page.write_text(
            f"<!doctype html><meta charset='utf-8'><script>{plotly.offline.get_plotlyjs()}"
            "</script><body></body>",
            encoding="utf-8",
        )
        self.plotly_page, self._on_plotly_page = page, False

    def add(self, nb: nbformat.NotebookNode) -> int:
        """Images added to ``nb``, in place."""
        added = 0
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                data = out.get("data")
                if not data or "image/png" in data:
                    continue
                if PLOTLY in data:
                    data["image/png"] = self.figure_png(data[PLOTLY])
                    added += 1
                elif (m := _IFRAME.match(str(data.get("text/html", "")))) is not None:
                    data["image/png"] = self.page_png(html.unescape(m.group(1)))
                    data["text/plain"] = "An interactive mechscope page: run the cell in Jupyter."
                    del data["text/html"]  # its srcdoc inlines plotly.js: megabytes per output
                    added += 1
        return added

    def figure_png(self, spec: dict[str, Any]) -> str:
        layout = spec.get("layout", {})
        opts = {"format": "png", "width": layout.get("width") or 900}
        opts["height"] = layout.get("height") or 500
        if not self._on_plotly_page:  # one load of plotly.js serves every figure
            self.browser.load(self.plotly_page)
            self._on_plotly_page = True
        fig = {"data": spec.get("data", []), "layout": layout}
        url = self.browser.evaluate(f"Plotly.toImage({json.dumps(fig)}, {json.dumps(opts)})")
        return str(url).split(",", 1)[1]

    def page_png(self, document: str) -> str:
        page = self.workdir / "view.html"
        page.write_text(document, encoding="utf-8")
        self._on_plotly_page = False
        loaded = self.browser.load(page)
        if loaded.console_errors:
            raise RuntimeError(f"the view's page logged errors: {loaded.console_errors}")
        width, height = self.browser.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, 2400), "scale": 1}
        shot = self.browser.send(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
            session=True,
        )
        return str(shot["data"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        available = ", ".join(p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")))
        parser.error(f"no such notebook: {', '.join(missing)} (notebooks/ holds {available})")

    sys.path.insert(0, str(ROOT))
    from interp.viz.chromium import Browser

    failed = 0
    with tempfile.TemporaryDirectory() as tmp, Browser(width=1000, height=900) as browser:
        images = StaticImages(browser, Path(tmp))
        for path in paths:
            t0 = time.perf_counter()
            nb = execute(path)
            seconds = time.perf_counter() - t0
            drop_progress_bars(nb)
            added = images.add(nb)
            bad = problems(nb)
            if bad:
                failed += 1
                print(f"{path.name}: not written, {len(bad)} problem(s):", *bad, sep="\n  ")
                continue
            nbformat.write(nb, path)
            print(f"{path.name}: executed in {seconds:.0f} s, {added} static image(s) added")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
