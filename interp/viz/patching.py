"""Plotly figures for patching results: heatmaps and bars with the CI of every cell on hover.

- two axes (layer × pos, layer × head): a heatmap;
- one axis (senders, edges): a bar chart with CI error bars, the ``top`` cells by effect;
- three or more: a heatmap of the last two axes with a slider over the leading ones.

The colour scale is centred on the base run's mean (the value with no effect), so blue and red
read as "patching moved the metric down / up". Model strings (tokens) are HTML-escaped because
Plotly interprets tags in labels and hover text.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from interp.viz.page import esc

__all__ = ["plot_patch_result"]


def _base_mean(result: Any) -> float:
    base = result.corrupt if result.direction == "denoise" else result.clean
    return float(base.mean()) if base is not None else 0.0


def _hover(result: Any, axes: tuple[str, ...]) -> str:
    parts = [f"{a}: %{{{k}}}" for a, k in zip(axes, ("y", "x"), strict=False)]
    return "<br>".join(parts) + "<br>%{customdata}<extra></extra>"


def _title(result: Any) -> str:
    return esc(
        f"{result.method} · {result.site} · {result.metric} · {result.ablation} "
        f"({result.direction}) · n={result.n_prompts}"
    )


def plot_patch_result(
    result: Any, *, top: int = 40, level: float = 0.95, title: str | None = None
) -> Any:
    """A Plotly figure of ``result`` (a :class:`~interp.patching.PatchResult`)."""
    import plotly.graph_objects as go

    mean = result.mean.numpy()
    ci = result.ci(level=level) if result.n_prompts > 1 else None
    low = ci.low.numpy() if ci is not None else mean
    high = ci.high.numpy() if ci is not None else mean
    labels = {a: [esc(v) for v in result.labels[a]] for a in result.axes}
    centre = _base_mean(result)
    span = float(np.nanmax(np.abs(mean - centre))) or 1.0
    pct = int(round(level * 100))
    fig = go.Figure()
    heading = title if title is not None else _title(result)

    if len(result.axes) == 1:
        (axis,) = result.axes
        order = np.argsort(-np.abs(mean - centre))[:top]
        names = [labels[axis][i] for i in order]
        fig.add_bar(
            x=names,
            y=mean[order] - centre,
            base=centre,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": high[order] - mean[order],
                "arrayminus": mean[order] - low[order],
            },
            customdata=[
                f"mean {mean[i]:.4g}<br>{pct}% CI [{low[i]:.4g}, {high[i]:.4g}]" for i in order
            ],
            hovertemplate=f"{axis}: %{{x}}<br>%{{customdata}}<extra></extra>",
        )
        fig.update_layout(title=heading, yaxis_title=esc(result.metric), xaxis_title=axis)
        return fig

    lead, (ya, xa) = result.axes[:-2], result.axes[-2:]
    lead_idx = list(itertools.product(*(range(len(labels[a])) for a in lead)))
    for k, idx in enumerate(lead_idx):
        m, lo, hi = mean[idx], low[idx], high[idx]
        custom = np.vectorize(lambda a, b, c: f"mean {a:.4g}<br>{pct}% CI [{b:.4g}, {c:.4g}]")(
            m, lo, hi
        )
        fig.add_heatmap(
            z=m,
            x=labels[xa],
            y=labels[ya],
            customdata=custom,
            hovertemplate=_hover(result, (ya, xa)),
            colorscale="RdBu_r",
            zmid=centre,
            zmin=centre - span,
            zmax=centre + span,
            colorbar={"title": esc(result.metric)},
            visible=k == 0,
            name=", ".join(labels[a][i] for a, i in zip(lead, idx, strict=True)),
        )
    layout: dict[str, Any] = {
        "title": heading,
        "xaxis": {"title": xa, "type": "category"},
        "yaxis": {"title": ya, "type": "category", "autorange": "reversed"},
    }
    if (ya, xa) == ("layer", "head"):
        layout["meta"] = {"mechscope_click": "head"}  # a click shows the head's attention
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
