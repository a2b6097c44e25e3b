"""``save_html``: views and Plotly figures in one self-contained HTML file.

>>> save_html("dashboard.html", browser, sweep.plot(), attention, title="Layer 15 features")

- One file: plotly.js (when any view needs it) and every script and style are inlined once; the
  page fetches nothing (a Content-Security-Policy forbids it), so it opens offline, from disk.
- Every model or user string is escaped (see :mod:`interp.viz.page`).
- Atomic: the page is rendered in memory first, then written to a temporary name and renamed, so
  an error leaves no file (or the previous one) at ``path``, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from interp._io import atomic_write_bytes
from interp.viz.page import html_path, render_views
from interp.viz.views import as_view

__all__ = ["Dashboard", "save_html", "to_html"]


def to_html(*items: Any, title: str = "mechscope") -> str:
    """The document :func:`save_html` writes, as a string."""
    if not items:
        raise ValueError(
            "nothing to draw: pass one or more interp.viz views or plotly Figures, "
            "e.g. save_html(path, browser, fig)"
        )
    views = [as_view(item, i) for i, item in enumerate(items)]  # every argument checked first
    return render_views(views, title)


def save_html(path: str | os.PathLike[str], *items: Any, title: str = "mechscope") -> Path:
    """Write ``items`` (views, Plotly figures, results with ``.plot()``) as one HTML page.

    Returns the path written. Raises ``TypeError`` naming any argument it cannot draw, before
    anything is written.
    """
    path = html_path(path)
    document = to_html(*items, title=title)
    atomic_write_bytes(path, document.encode("utf-8"))
    return path


class Dashboard:
    """Several views as one page, shown inline in Jupyter (views on one page are linked: a click
    on a layer × head heatmap cell shows that head in the page's attention views).

    >>> Dashboard(heads.plot(), attention_view(model, tokens), title="IOI heads")
    """

    def __init__(self, *items: Any, title: str = "mechscope", height: int = 900):
        self.html = to_html(*items, title=title)  # every argument checked now
        self.title, self.height = title, height

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        atomic_write_bytes(path, self.html.encode("utf-8"))
        return path

    def _repr_html_(self) -> str:
        import html as _html

        return (
            f'<iframe srcdoc="{_html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
            f'style="width: 100%; height: {int(self.height)}px; border: 1px solid #ddd;"></iframe>'
        )
