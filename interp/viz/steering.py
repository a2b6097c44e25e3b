"""The view of a steering sweep (registered for ``SteeringSweep.plot()`` in :mod:`interp.viz`):
one panel per measure, the mean against α with a line per layer and the CI of every cell as
error bars. Every label reaches plotly through :func:`~interp.viz.text.plotly_text`."""

from __future__ import annotations

from typing import Any

from interp.viz.text import plotly_text

__all__ = ["plot_steering_sweep"]

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def plot_steering_sweep(sweep: Any) -> Any:
    """A Plotly figure: one panel per measure, mean vs α per layer, with CI error bars."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(sweep.values)
    titles = [
        plotly_text(f"{n} ({'KL' if sweep.metrics[n] == 'kl' else 'Δ vs unsteered'})")
        for n in names
    ]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles)
    for col, name in enumerate(names, start=1):
        c = sweep.ci(name)
        for li, layer in enumerate(sweep.layers):
            est = c.estimate[li].tolist()
            fig.add_trace(
                go.Scatter(
                    x=sweep.alphas,
                    y=est,
                    mode="lines+markers",
                    name=plotly_text(f"layer {layer}"),
                    legendgroup=str(layer),
                    showlegend=col == 1,
                    line={"color": _PALETTE[li % len(_PALETTE)]},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (c.high[li] - c.estimate[li]).tolist(),
                        "arrayminus": (c.estimate[li] - c.low[li]).tolist(),
                    },
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="α", row=1, col=col)
    fig.update_layout(
        title=plotly_text(
            f"Steering sweep — intended: {sweep.intended} ({sweep.goal}); "
            f"{sweep.level:.0%} bootstrap CIs over prompts"
        ),
        height=460,
        legend={"orientation": "h", "y": -0.25, "x": 0},  # below the panels: never cut off
    )
    return fig
