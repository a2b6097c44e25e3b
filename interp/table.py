"""Rows of results that print as an aligned table and render as an HTML table in Jupyter.

:class:`Rows` is a plain ``list`` of dicts (so ``for row in rows: row["mean"]`` keeps working) that
also knows how to show itself: a nested dict such as ``{"cell": {"layer": 9, "head": 1}}`` becomes
one column per key (``layer``, ``head``), floats get a fixed number of significant digits.

>>> rows = Rows([{"cell": {"layer": 9, "head": 1}, "mean": 0.4213, "low": 0.30, "high": 0.55}])
>>> print(rows)
layer  head    mean  low  high
    9     1  0.4213  0.3  0.55
>>> rows[0]["cell"]["head"]
1
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["Rows"]


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(value)
        elif key != "index":  # the flat index repeats what the cell columns already say
            out[key] = value
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Rows(list[dict[str, Any]]):
    """A list of result rows that prints as a table (text and HTML), under its ``note`` (how the
    rows were chosen and what their intervals mean) where it has one."""

    def __init__(self, rows: Any = (), note: str = "") -> None:
        super().__init__(rows)
        self.note = note

    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for row in self for k in _flat(row)))

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        cols = self.columns()
        return cols, [[_fmt(_flat(row).get(c, "")) for c in cols] for row in self]

    def __repr__(self) -> str:
        cols, body = self._cells()
        if not body:
            return "(no rows)"
        widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in body]
        return "\n".join(([self.note] if self.note else []) + lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        cols, body = self._cells()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in body
        )
        note = f"<caption>{html.escape(self.note)}</caption>" if self.note else ""
        return f"<table>{note}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    def to_dataframe(self) -> Any:
        """The rows as a pandas DataFrame, one column per (flattened) key."""
        import pandas as pd

        return pd.DataFrame([_flat(row) for row in self])
