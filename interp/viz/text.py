"""Strings from users and models on their way into a page: the one place they are made safe.

- :func:`clean_text`: any ``str`` as one that encodes to UTF-8 (a lone surrogate, which Python
  strings may hold and UTF-8 cannot, becomes U+FFFD; a split surrogate pair is joined).
- :func:`plotly_text`: text that plotly.js shows exactly as given. Plotly reads a little HTML in
  titles, tick labels, hover text, annotations and legend names (``<b>``, ``<a href>``,
  ``<br>`` ...) and decodes ``&amp; &lt; &gt;``, a few named entities and numeric ones, but not
  ``&quot;``: so ``& < >`` are escaped, and nothing else (an escaped ``"`` would show as ``&quot;``).
- :func:`plotly_plain`: the plain text plotly shows for a markup string (a figure title becoming
  an HTML heading, which is then escaped for HTML once, not twice).
"""

from __future__ import annotations

import html
import re

__all__ = ["clean_text", "plotly_plain", "plotly_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_TAG = re.compile(r"<[^<>]*>")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_text(text: object) -> str:
    """``str(text)`` with every lone surrogate replaced by U+FFFD, so it always encodes."""
    s = str(text)
    if _SURROGATE.search(s) is None:
        return s
    # UTF-16 joins a high + low pair into its character and replaces the strays.
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def plotly_text(text: object) -> str:
    """``text`` for any string plotly.js draws: shown literally, never read as markup."""
    return clean_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plotly_plain(markup: object) -> str:
    """The text plotly.js shows for ``markup``: line breaks as spaces, tags dropped, entities
    decoded (so ``plotly_plain(plotly_text(s)) == s``)."""
    s = _BREAK.sub(" ", clean_text(markup))
    return html.unescape(_TAG.sub("", s))
