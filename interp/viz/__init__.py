"""Dashboards: SAE feature views, attention patterns, Plotly figures, in one self-contained HTML file.

>>> from interp.viz import feature_browser, save_html
>>> browser = feature_browser(sae, store, model=model)
>>> save_html("features.html", browser, sweep.plot(), title="Layer 15")

Names are re-exported lazily: importing ``interp.viz`` does not load plotly. It registers the
view of each result kind with :func:`interp.core.result.register_plot`.
"""

from __future__ import annotations

import importlib
from typing import Any

from interp.core.result import register_plot

__all__ = [
    "AttentionView",
    "AttributionView",
    "Dashboard",
    "FeatureBrowser",
    "FeatureDashboard",
    "FeatureData",
    "FigureView",
    "Text",
    "View",
    "attention_view",
    "attribution_view",
    "collect",
    "demo_views",
    "feature_browser",
    "feature_dashboard",
    "save_html",
    "save_with_dashboards",
    "to_html",
]

_HOME = {
    "Dashboard": "interp.viz.html",
    "AttentionView": "interp.viz.attention",
    "attention_view": "interp.viz.attention",
    "AttributionView": "interp.viz.attribution",
    "attribution_view": "interp.viz.attribution",
    "save_with_dashboards": "interp.viz.attribution",
    "FeatureBrowser": "interp.viz.features",
    "FeatureDashboard": "interp.viz.features",
    "feature_browser": "interp.viz.features",
    "feature_dashboard": "interp.viz.features",
    "FeatureData": "interp.viz.feature_data",
    "collect": "interp.viz.feature_data",
    "FigureView": "interp.viz.views",
    "Text": "interp.viz.views",
    "View": "interp.viz.views",
    "demo_views": "interp.viz.demo",
    "save_html": "interp.viz.html",
    "to_html": "interp.viz.html",
}


# The plot registry: the view of each Result kind (see interp.core.result), imported on first use.
_PLOTS = {
    "patch_result": "interp.viz.patching:plot_patch_result",
    "scrub_result": "interp.viz.scrubbing:plot_scrub_result",
    "scrub_comparison": "interp.viz.scrubbing:plot_scrub_comparison",
    "steering_sweep": "interp.viz.steering:plot_steering_sweep",
}
for _kind, _fn in _PLOTS.items():
    register_plot(_kind, _fn)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'interp.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
