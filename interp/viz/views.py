"""``View``: anything that can draw itself into a :class:`~interp.viz.page.Page`.

Plotly figures become :class:`FigureView`; results with a ``.plot()`` method returning a figure
(patching sweeps, steering sweeps ...) are accepted wherever a view is (see :func:`as_view`).
"""

from __future__ import annotations

import html as _html
import json
import os
from pathlib import Path
from typing import Any

from interp._io import atomic_write_bytes
from interp.viz.page import Page, esc, html_path, render_views
from interp.viz.text import plotly_plain

__all__ = ["FigureView", "Text", "View", "as_view"]


class View:
    """Base class of the dashboard views. Subclasses implement :meth:`render`."""

    title: str = ""

    def render(self, page: Page) -> str:
        """This view's HTML fragment. Shared parts go through ``page`` (plotly.js, scripts, data)."""
        raise NotImplementedError

    def to_html(self, title: str | None = None) -> str:
        """This view alone as a self-contained HTML document (see :func:`interp.viz.to_html`)."""
        return render_views([self], title or self.title or "mechscope")

    def save(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Write this view alone as a self-contained HTML file (see :func:`interp.viz.save_html`)."""
        path = html_path(path)
        document = render_views([self], title or self.title or "mechscope")
        atomic_write_bytes(path, document.encode("utf-8"))
        return path

    def _repr_html_(self) -> str:
        # In Jupyter: the whole self-contained page in a sandboxed iframe, so the view works the
        # same in Notebook, JupyterLab and VS Code, offline, and its styles cannot leak out.
        doc = self.to_html()
        return (
            f'<iframe srcdoc="{_html.escape(doc, quote=True)}" sandbox="allow-scripts" '
            'style="width: 100%; height: 720px; border: 1px solid #ddd;"></iframe>'
        )


class FigureView(View):
    """A Plotly figure (``plotly.graph_objects.Figure`` or its dict form) drawn with plotly.js."""

    def __init__(self, figure: Any, title: str | None = None):
        self.figure = figure
        self.title = title if title is not None else _figure_title(figure)

    def render(self, page: Page) -> str:
        import plotly.io as pio

        page.use_plotly()
        div, data = page.new_id("fig"), page.new_id("fig-data")
        # plotly serialises numpy arrays and dates; parsed back so every string is cleaned
        spec = json.loads(pio.to_json(self.figure, validate=False))
        return (
            f'<div class="ms-figure" id="{div}"></div>'
            + page.json_block(data, spec)
            + page.init(f"mechscope.plot({_js(div)}, {_js(data)});")
        )


class Text(View):
    """A heading and/or a paragraph of plain text (escaped: no markup is interpreted)."""

    def __init__(self, text: str = "", *, heading: str | None = None):
        self.text, self.title = text, heading or ""

    def render(self, page: Page) -> str:
        parts = [f'<p class="ms-text">{esc(self.text)}</p>'] if self.text else []
        return "".join(parts)


def as_view(item: Any, position: int = 0) -> View:
    """A view for ``item``: a View, a Plotly figure, or a result with ``.plot()`` giving either."""
    if isinstance(item, View):
        return item
    if _is_figure(item):
        return FigureView(item)
    plot = getattr(item, "plot", None)
    if callable(plot) and not isinstance(item, type):
        drawn = plot()
        if isinstance(drawn, View):
            return drawn
        if _is_figure(drawn):
            return FigureView(drawn, title=_figure_title(drawn) or type(item).__name__)
        raise TypeError(
            f"argument {position + 1}: {type(item).__name__}.plot() returned a "
            f"{type(drawn).__name__}; expected a plotly Figure or an interp.viz view"
        )
    raise TypeError(
        f"argument {position + 1} is a {type(item).__module__}.{type(item).__qualname__}, which "
        "save_html cannot draw; expected an interp.viz view (FeatureBrowser, FeatureDashboard, "
        "AttentionView, Text ...), a plotly.graph_objects.Figure, or a result with a .plot() "
        "method that returns one"
    )


def _is_figure(item: Any) -> bool:
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError:  # pragma: no cover - plotly is a dependency
        return False
    return isinstance(item, BaseFigure)


def _figure_title(fig: Any) -> str:
    try:
        text = fig.layout.title.text
    except AttributeError:
        return ""
    return plotly_plain(text) if text else ""  # the text plotly shows; escaped again as HTML


def _js(s: str) -> str:
    """A JavaScript string literal for an id made by Page.new_id (letters, digits, - and _)."""
    return f"'{s}'"
