"""Plotly figures for patching results: heatmaps and bars with the CI of every cell on hover.

- two axes (layer × pos, layer × head): a heatmap;
- one axis (senders, edges): a bar chart with CI error bars, the ``top`` cells by effect;
- three or more: a heatmap of the last two axes with a slider over the leading ones.

Axes of length 1 (a head sweep at one position) are dropped first, their label moved to the
title. Cells sit at integer coordinates with the labels as tick text, so two positions with the
same token stay two columns. The colour scale is centred on the base run's mean (the value with
no effect), so blue and red read as "patching moved the metric down / up". Every label reaches
plotly through :func:`~interp.viz.text.plotly_text`: shown as text, never read as markup.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from interp.viz.text import plotly_text

__all__ = ["plot_patch_result"]

_SHORT = 24  # longest tick label of a bar chart; the whole label is on hover


def _base_mean(result: Any) -> float:
    base = result.corrupt if result.direction == "denoise" else result.clean
    return float(base.mean()) if base is not None else 0.0


def _squeezed(result: Any) -> Any:
    """``result`` without its length-1 axes, keeping at least one (``PatchResult.squeeze`` puts
    each dropped axis's label in ``meta["fixed"]``)."""
    drop = [a for a, n in zip(result.axes, result.shape, strict=True) if n == 1]
    if len(drop) == len(result.axes):
        drop = drop[:-1]
    return result.squeeze(*drop) if drop else result


def _title(result: Any) -> str:
    fixed = result.meta.get("fixed", {})
    where = f" at {', '.join(f'{a} {v}' for a, v in fixed.items())}" if fixed else ""
    return plotly_text(
        f"{result.method} · {result.site}{where} · {result.metric} · {result.ablation} "
        f"({result.direction}) · n={result.n_prompts}"
    )


def _short(label: str) -> str:
    label = label.replace("->", "→")
    return label if len(label) <= _SHORT else label[: _SHORT - 1] + "…"


def _ints(labels: list[str]) -> list[int] | None:
    """``[3, 5]`` for labels ``["L3", "L5"]`` (None when they are not all that form)."""
    try:
        return [int(s[1:]) for s in labels]
    except ValueError:
        return None


def plot_patch_result(
    result: Any, *, top: int = 40, level: float = 0.95, title: str | None = None
) -> Any:
    """A Plotly figure of ``result`` (a :class:`~interp.patching.PatchResult`)."""
    import plotly.graph_objects as go

    result = _squeezed(result)
    mean = result.mean.numpy()
    ci = result.ci(level=level) if result.n_prompts > 1 else None
    low = ci.low.numpy() if ci is not None else mean
    high = ci.high.numpy() if ci is not None else mean
    raw = {a: [str(v) for v in result.labels[a]] for a in result.axes}
    labels = {a: [plotly_text(v) for v in raw[a]] for a in result.axes}
    centre = _base_mean(result)
    span = float(np.nanmax(np.abs(mean - centre))) or 1.0
    pct = int(round(level * 100))
    metric = plotly_text(result.metric)
    fig = go.Figure()
    heading = plotly_text(title) if title is not None else _title(result)

    def cell(m: float, lo: float, hi: float) -> str:
        return f"{metric} {m:.4g}<br>{pct}% CI [{lo:.4g}, {hi:.4g}]"

    if len(result.axes) == 1:
        (axis,) = result.axes
        order = np.argsort(-np.abs(mean - centre))[:top]
        slots = list(range(len(order)))
        fig.add_bar(
            x=slots,
            y=mean[order] - centre,
            base=centre,
            marker={"color": ["#c0392b" if mean[i] >= centre else "#2c6fbb" for i in order]},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": high[order] - mean[order],
                "arrayminus": mean[order] - low[order],
            },
            customdata=[
                f"{axis}: {labels[axis][i]}<br>{cell(mean[i], low[i], high[i])}" for i in order
            ],
            hovertemplate="%{customdata}<extra></extra>",
        )
        fig.update_layout(
            title=heading,
            yaxis_title=metric,
            xaxis={
                "title": f"{axis} (top {len(order)} by |effect|)",
                "tickvals": slots,
                "ticktext": [plotly_text(_short(raw[axis][i])) for i in order],
                "tickangle": -45,
            },
        )
        return fig

    lead, (ya, xa) = result.axes[:-2], result.axes[-2:]
    lead_idx = list(itertools.product(*(range(len(labels[a])) for a in lead)))
    xs, ys = list(range(len(labels[xa]))), list(range(len(labels[ya])))
    for k, idx in enumerate(lead_idx):
        m, lo, hi = mean[idx], low[idx], high[idx]
        custom = [
            [
                f"{ya}: {labels[ya][r]}<br>{xa}: {labels[xa][c]}<br>{cell(m[r, c], lo[r, c], hi[r, c])}"
                for c in xs
            ]
            for r in ys
        ]
        fig.add_heatmap(
            z=m,
            x=xs,
            y=ys,
            customdata=custom,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale="RdBu_r",
            zmid=centre,
            zmin=centre - span,
            zmax=centre + span,
            colorbar={"title": metric},
            visible=k == 0,
            name=", ".join(labels[a][i] for a, i in zip(lead, idx, strict=True)),
        )
    layout: dict[str, Any] = {
        "title": heading,
        "xaxis": {"title": xa, "tickvals": xs, "ticktext": labels[xa]},
        "yaxis": {"title": ya, "tickvals": ys, "ticktext": labels[ya], "autorange": "reversed"},
    }
    if len(xs) > 8:
        layout["xaxis"]["tickangle"] = -45
    layers, heads = _ints(raw[ya]), _ints(raw[xa])
    if (ya, xa) == ("layer", "head") and layers is not None and heads is not None:
        # A click on a cell shows that head in the page's attention views.
        layout["meta"] = {"mechscope_click": "head", "layers": layers, "heads": heads}
    if lead:
        steps = []
        for k, idx in enumerate(lead_idx):
            visible = [j == k for j in range(len(lead_idx))]
            steps.append(
                {
                    "method": "update",
                    "args": [{"visible": visible}],
                    "label": ", ".join(labels[a][i] for a, i in zip(lead, idx, strict=True)),
                }
            )
        layout["sliders"] = [{"steps": steps, "currentvalue": {"prefix": f"{', '.join(lead)}: "}}]
    fig.update_layout(**layout)
    return fig
