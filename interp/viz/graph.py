"""The component graph drawn with edge weights from edge patching or edge attribution.

Columns are the forward order (embeddings, then each layer's heads, then its MLP, then the
logits); a head sits at its index within its layer's column. Only the ``top`` edges by
|effect| are drawn, coloured by sign (red: patching the edge raises the metric) and sized by
magnitude; hover shows the edge, its mean and CI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interp.viz.text import plotly_text

__all__ = ["plot_graph"]


def _split(edge: str) -> tuple[str, str]:
    s, r = edge.split("->", 1)
    return s, r


def _receiver_node(name: str) -> str:
    """The component a receiver input belongs to: ``L1H7.k`` → ``L1H7``, ``MLP3.in`` → ``MLP3``."""
    base = name.split("@", 1)[0]
    if base.endswith(".in"):
        return base[:-3]
    return base.rsplit(".", 1)[0] if "." in base else base


def _xy(node: str) -> tuple[float, float]:
    if node in ("embed", "pos_embed"):
        return 0.0, 0.0 if node == "embed" else 1.0
    if node == "logits":
        return -1.0, 0.0  # placed after the last layer by the caller
    if node.startswith("MLP"):
        layer = int(node[3:])
        return 2.0 * layer + 2.0, -1.0
    layer_s, head_s = node[1:].split("H") if "H" in node else node[1:].split("G")
    return 2.0 * int(layer_s) + 1.0, float(head_s)


def plot_graph(result: Any, *, top: int = 30, title: str | None = None) -> Any:
    """A Plotly drawing of the ``top`` edges of an edge result (``axes == ("edge",)``)."""
    import plotly.graph_objects as go

    if tuple(result.axes) != ("edge",):
        raise ValueError(
            f"plot_graph draws edge results (axes ('edge',), from edge_patch or "
            f"edge_attribution); got axes {tuple(result.axes)}"
        )
    base = result.corrupt if result.direction == "denoise" else result.clean
    centre = float(base.mean()) if base is not None else 0.0
    effect = result.mean.numpy() - centre
    ci = result.ci() if result.n_prompts > 1 else None
    order = np.argsort(-np.abs(effect))[:top]
    edges = [_split(result.labels["edge"][i]) for i in order]
    nodes = sorted({s for s, _ in edges} | {_receiver_node(r) for _, r in edges})
    pos = {n: _xy(n) for n in nodes}
    last_x = max([x for x, _ in pos.values()] + [0.0]) + 1.0
    pos = {n: (last_x, 0.0) if n == "logits" else xy for n, xy in pos.items()}
    biggest = float(np.abs(effect[order]).max()) if len(order) else 1.0
    fig = go.Figure()
    for i, (s, r) in zip(order, edges, strict=True):
        (x0, y0), (x1, y1) = pos[s], pos[_receiver_node(r)]
        hover = f"{plotly_text(s)} → {plotly_text(r)}<br>effect {effect[i]:+.4g}"
        if ci is not None:
            hover += f"<br>95% CI of value [{float(ci.low[i]):.4g}, {float(ci.high[i]):.4g}]"
        fig.add_scatter(
            x=[x0, (x0 + x1) / 2, x1],
            y=[y0, (y0 + y1) / 2, y1],
            mode="lines",
            line={
                "width": 1 + 7 * abs(effect[i]) / (biggest or 1.0),
                "color": "#c0392b" if effect[i] > 0 else "#2c6fbb",
            },
            hoverinfo="text",
            text=[hover] * 3,
            showlegend=False,
            opacity=0.75,
        )
    fig.add_scatter(
        x=[pos[n][0] for n in nodes],
        y=[pos[n][1] for n in nodes],
        mode="markers+text",
        text=[plotly_text(n) for n in nodes],
        textposition="top center",
        hoverinfo="text",
        marker={"size": 14, "color": "#444"},
        showlegend=False,
    )
    metric = plotly_text(result.metric)
    for colour, sign in (("#c0392b", "raises"), ("#2c6fbb", "lowers")):
        fig.add_scatter(  # legend entries only: what the two edge colours mean
            x=[None],
            y=[None],
            mode="lines",
            line={"color": colour, "width": 4},
            name=f"patching the edge {sign} {metric}",
        )
    fig.update_layout(
        title=plotly_text(title)
        if title is not None
        else plotly_text(
            f"{result.method}: top {len(order)} edges · {result.metric} ({result.direction})"
        ),
        xaxis={"title": "forward order (layer)", "showgrid": False, "zeroline": False,
               **_layer_ticks(last_x)},
        yaxis={"title": "head", "showgrid": False, "zeroline": False, "autorange": "reversed",
               **_head_ticks(pos.values())},
        legend={"orientation": "h", "y": -0.2, "x": 0},
        plot_bgcolor="white",
    )  # fmt: skip
    return fig


def _layer_ticks(last_x: float) -> dict[str, Any]:
    """Ticks at whole layers: ``embed``, then ``L0`` (its heads) and ``MLP0`` ..., ``logits``."""
    vals, text = [0.0], ["embed"]
    for x in range(1, int(last_x)):
        layer = (x - 1) // 2
        vals.append(float(x))
        text.append(f"L{layer}" if x % 2 else f"MLP{layer}")
    return {"tickvals": vals + [last_x], "ticktext": text + ["logits"]}


def _head_ticks(points: Any) -> dict[str, Any]:
    """Whole-number ticks ``MLP`` (row -1, where MLPs sit), ``H0``, ``H1`` ... up to the last."""
    top = int(max([y for _, y in points] + [0.0]))
    return {
        "tickvals": list(range(-1, top + 1)),
        "ticktext": ["MLP"] + [f"H{h}" for h in range(top + 1)],
    }
