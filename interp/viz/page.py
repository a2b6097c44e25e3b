"""``Page``: what the views of one HTML document share (ids, plotly.js, styles, scripts, data).

Every string from a model or a user reaches the page by one of two routes, both escaped here:
HTML text and attribute values through :func:`esc`, and data through :meth:`Page.json_block`
(JSON inside ``<script type="application/json">`` with ``<``, ``>``, ``&`` written as ``\\u003c``
..., so no string can close the block). JavaScript then puts text into the DOM with
``textContent`` only, never ``innerHTML``. Both routes replace lone surrogates (U+FFFD), so a
page always encodes as UTF-8; strings for plotly go through :func:`interp.viz.text.plotly_text`.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from interp.viz import assets
from interp.viz.text import clean_text

__all__ = ["Page", "esc", "html_path", "render_views", "script_safe_json"]

_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")


def esc(text: object) -> str:
    """Escape text for HTML element content or a quoted attribute value."""
    return html.escape(clean_text(text), quote=True)


def script_safe_json(obj: Any) -> str:
    """``obj`` as JSON (or an already serialised JSON string) that cannot end a ``<script>``.

    Non-ASCII stays as characters (not ``\\u`` escapes), so a lone surrogate is a character here
    and :func:`clean_text` replaces it."""
    if not isinstance(obj, str):
        obj = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return _UNSAFE_RE.sub(lambda m: _UNSAFE[m.group()], clean_text(obj))


class Page:
    """Collects one document: the views' HTML fragments, plus each shared part exactly once."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self.plotly = False
        self._styles: dict[str, str] = {"core": assets.CORE_CSS}
        self._scripts: dict[str, str] = {"core": assets.CORE_JS}

    def new_id(self, prefix: str = "v") -> str:
        """A page-unique element id: ``prefix``, then ``prefix-2``, ``prefix-3`` ..."""
        prefix = re.sub(r"[^A-Za-z0-9_-]", "-", prefix) or "v"
        n = self._ids.get(prefix, 0) + 1
        self._ids[prefix] = n
        return prefix if n == 1 else f"{prefix}-{n}"

    def use_plotly(self) -> None:
        """Inline plotly.js in this page (once, however many views ask)."""
        self.plotly = True

    def add_style(self, key: str, css: str) -> None:
        self._styles.setdefault(key, css)

    def add_script(self, key: str, js: str) -> None:
        self._scripts.setdefault(key, js)

    @staticmethod
    def json_block(element_id: str, obj: Any) -> str:
        """Data for the page's scripts, parsed only when ``mechscope.data(id)`` asks for it."""
        return (
            f'<script type="application/json" id="{esc(element_id)}">'
            f"{script_safe_json(obj)}</script>"
        )

    @staticmethod
    def init(js: str) -> str:
        """A view's start-up code; it runs after the whole document and the shared scripts."""
        return f"<script>mechscope.onReady(function () {{ {js} }});</script>"

    def document(self, title: str, sections: list[str], toc: list[tuple[str, str]]) -> str:
        head = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            # No network: nothing may be fetched, whatever a string in the data says.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
            'img-src data: blob:; font-src data:">',
            f"<title>{esc(title)}</title>",
            "<style>" + "\n".join(self._styles.values()) + "</style>",
        ]
        if self.plotly:
            head.append(_plotly_script())
        head.append("<script>" + "\n".join(self._scripts.values()) + "</script>")
        head.append('</head><body><div class="ms-page">')
        body = [f'<h1 class="ms-title">{esc(title)}</h1>']
        if len(toc) > 1:
            links = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in toc)
            body.append(f'<nav class="ms-toc">{links}</nav>')
        body += sections
        body.append("</div><script>mechscope.start();</script></body></html>")
        return "\n".join(head + body)


def render_views(views: Sequence[Any], title: str) -> str:
    """One document of ``views`` (each with a ``title`` and ``render(page)``), a section each."""
    page = Page()
    sections, toc = [], []
    for i, view in enumerate(views):
        sid = page.new_id(f"section-{i + 1}")
        show = view.title and not (len(views) == 1 and view.title == title)
        heading = f"<h2>{esc(view.title)}</h2>" if show else ""
        sections.append(
            f'<section class="ms-view" id="{sid}">{heading}{view.render(page)}</section>'
        )
        toc.append((sid, view.title or f"view {i + 1}"))
    # Each route in escapes its strings; this catches a custom view's raw lone surrogate too.
    return clean_text(page.document(title, sections, toc))


def html_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as the file a page is written to; a directory is refused before any rendering."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; save_html needs a file path (*.html)")
    return path


def _plotly_script() -> str:
    from plotly.offline import get_plotlyjs

    # PlotlyConfig as plotly's own to_html writes it: MathJax, if any, stays local.
    return (
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script>{get_plotlyjs()}</script>"
    )
