"""Views of causal scrubbing results (registered for ``ScrubResult.plot()`` and
``ScrubComparison.plot()`` in :mod:`interp.viz`).

:func:`plot_scrub_result`: the treeified hypothesis drawn with Plotly, the output on the right,
inputs on the left. Each node shows its component, its feature, and its numbers: how many classes
the feature splits the dataset into and the mean pool a resample is drawn from; with node effects
computed (``scrub(..., node_effects=True)``), the loss recovered when that claim (and its
subtree) is dropped.

:func:`plot_scrub_comparison`: bars of loss recovered per hypothesis, with 95% CIs.
"""

from __future__ import annotations

from typing import Any

from interp.viz.text import plotly_text

__all__ = ["plot_scrub_comparison", "plot_scrub_result"]


def _layout(nodes: list[dict[str, Any]]) -> dict[int, tuple[float, float]]:
    kids: dict[int | None, list[int]] = {}
    for n in nodes:
        kids.setdefault(n["parent"], []).append(n["id"])
    pos: dict[int, tuple[float, float]] = {}
    next_y = [0.0]

    def place(i: int, depth: int) -> float:
        ch = kids.get(i, [])
        if not ch:
            y = next_y[0]
            next_y[0] += 1.0
        else:
            ys = [place(c, depth + 1) for c in ch]
            y = sum(ys) / len(ys)
        pos[i] = (-float(depth), y)
        return y

    for root in kids.get(None, []):
        place(root, 0)
    return pos


def plot_scrub_result(result: Any, *, title: str | None = None) -> Any:
    import plotly.graph_objects as go

    nodes = result.nodes
    pos = _layout(nodes)
    ex: list[float | None] = []
    ey: list[float | None] = []
    for n in nodes:
        if n["parent"] is not None:
            (x0, y0), (x1, y1) = pos[n["id"]], pos[n["parent"]]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
    text, hover, colour = [], [], []
    for n in nodes:
        line = f"{plotly_text(n['node'])}<br>{plotly_text(n['feature'])}"
        if n.get("classes") is not None:
            line += f"<br>{n['classes']} classes, pool {n['pool']:.1f}"
        if n.get("recovered_without") is not None:
            line += f"<br>without: {n['recovered_without']:.2f}"
        text.append(line)
        hover.append(" → ".join(plotly_text(p) for p in reversed(n["path"])) + "<br>" + line)
        colour.append("#bbbbbb" if n.get("implicit") else "#4c78a8")
    rc = result.recovered_ci()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#999", "width": 1}, hoverinfo="skip")
    )
    fig.add_trace(
        go.Scatter(
            x=[pos[n["id"]][0] for n in nodes],
            y=[pos[n["id"]][1] for n in nodes],
            mode="markers+text",
            marker={"size": 14, "color": colour},
            text=text,
            textposition="top center",
            hovertext=hover,
            hoverinfo="text",
        )
    )
    fig.update_layout(
        title=plotly_text(
            title
            or (
                f"{result.hypothesis}: loss recovered {rc.estimate:.2f} "
                f"[{rc.low:.2f}, {rc.high:.2f}] (n={rc.n})"
            )
        ),
        showlegend=False,
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
        height=max(360, 130 * (1 + max((p[1] for p in pos.values()), default=0))),
    )
    return fig


def plot_scrub_comparison(comparison: Any) -> Any:
    """Bars of loss recovered per hypothesis, with 95% CIs."""
    import plotly.graph_objects as go

    rows = comparison.table()
    slots = list(range(len(rows)))  # one bar per hypothesis, even where two names agree
    names = [plotly_text(r["hypothesis"]) for r in rows]
    fig = go.Figure(
        go.Bar(
            x=slots,
            y=[r["recovered"] for r in rows],
            customdata=names,
            hovertemplate="%{customdata}<br>recovered %{y:.3f}<extra></extra>",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [r["high"] - r["recovered"] for r in rows],
                "arrayminus": [r["recovered"] - r["low"] for r in rows],
            },
            text=[f"{r['recovered']:.2f}" for r in rows],
        )
    )
    fig.update_layout(
        title="Causal scrubbing: fraction of loss recovered (95% CI)",
        yaxis_title="(random − scrubbed) / (random − clean)",
        xaxis={"title": "hypothesis", "tickvals": slots, "ticktext": names},
        template="plotly_white",
    )
    return fig
