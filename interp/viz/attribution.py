"""The attribution-graph view: a pruned :class:`~interp.circuits.AttributionGraph` drawn by layer ×
position, with hover details, click-to-pin, and supernodes grouped by hand.

>>> from interp.viz.attribution_sample import synthetic_graph
>>> graph, pruned = synthetic_graph(60, 200, n_layers=3, n_pos=5, n_errors=5)
>>> view = AttributionView(graph, pruned=pruned)    # from the graph alone; inline in Jupyter
>>> len(view.data()["nodes"]["id"]), len(view.data()["edges"]["w"])
(60, 200)
>>> "mechscope.attribution(" in view.to_html()      # view.save("graph.html"): one HTML file
True

With feature dashboards (hover shows them; ``save_with_dashboards`` also writes one feature
browser per layer and links each feature node to its dashboard)::

    view = attribution_view(graph, transcoders, store, model=model)
    save_with_dashboards(view, "runs/paris_view")

Hover a node: its id, token, activation, influence on the logits and edge counts, and (given
feature data) the feature's dashboard: top activating contexts and logit effects. Click: pin its
incoming and outgoing edges (the rest dim). Shift-click or box-select nodes, name them, "group
selected": a supernode, drawn as one node at its members' mean position, its edges the sums of
its members' edges (edges among members not drawn); "expand" draws the members again. Groups
export and import as JSON (circuit-tracer's ``qParams.supernodes``), or come with the view:

>>> ids = view.data()["nodes"]["id"]
>>> AttributionView(graph, pruned=pruned, supernodes=[["early", *ids[:3]]]).data()["supernodes"]
[['early', '0_71_0', '0_99_0', '0_79_0']]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interp.viz.attribution_assets import ATTRIBUTION_CSS, ATTRIBUTION_JS
from interp.viz.attribution_data import (
    EDGE_BINS,
    attribution_data,
    check_dashboard_url,
    check_supernodes,
)
from interp.viz.page import Page
from interp.viz.views import View

__all__ = ["AttributionView", "attribution_view", "save_with_dashboards"]


class AttributionView(View):
    """An attribution graph, pruned by influence (``node_threshold``, ``edge_threshold``; or pass
    ``pruned``, a :class:`~interp.circuits.PruneResult`), as an interactive plotly view.

    ``features``: ``{layer: FeatureData}`` of the transcoders' latents (hover shows their
    dashboards); ``dashboard_url``: a link per feature node, ``{layer}`` and ``{feature}`` filled
    in; ``webgl``: draw with ``scattergl`` (faster with a GPU; software WebGL is slower);
    ``supernodes``: groups drawn merged at open (see
    :func:`~interp.viz.attribution_data.check_supernodes`).
    """

    def __init__(
        self,
        graph: Any,
        *,
        features: Mapping[int, Any] | None = None,
        dashboard_url: str | None = None,
        node_threshold: float = 0.8,
        edge_threshold: float = 0.98,
        pruned: Any = None,
        webgl: bool = False,
        title: str | None = None,
        supernodes: Any = None,
    ):
        from interp.circuits.graph import AttributionGraph

        if not isinstance(graph, AttributionGraph):
            raise TypeError(
                f"AttributionView draws an interp.circuits.AttributionGraph (from attribute() or "
                f"AttributionGraph.load); got {type(graph).__name__}"
            )
        features = dict(features or {})
        layers = sorted(graph.transcoder_layers)
        bad = [k for k in features if k not in layers]
        if bad:
            raise ValueError(
                f"features for layer(s) {bad}, but this graph has transcoders at layers {layers}: "
                "key the feature data by the layer of its transcoder"
            )
        self.graph, self.features = graph, features
        self.dashboard_url = None if dashboard_url is None else check_dashboard_url(dashboard_url)
        self.pruned = pruned if pruned is not None else graph.prune(node_threshold, edge_threshold)
        self.supernodes: list[list[str]] = []
        if supernodes is not None:
            from interp.circuits.export import node_id

            ids = [node_id(graph, i) for i in self.pruned.node_mask.nonzero()[:, 0].tolist()]
            self.supernodes = check_supernodes(supernodes, ids)
        self.webgl = bool(webgl)
        self.title = title if title is not None else f"Attribution graph · {graph.prompt!r}"

    def data(self) -> dict[str, Any]:
        """The page's JSON (see :func:`interp.viz.attribution_data.attribution_data`)."""
        d = attribution_data(
            self.graph, self.pruned, features=self.features, dashboard_url=self.dashboard_url
        )
        return d | {
            "edge_bins": list(EDGE_BINS),
            "webgl": self.webgl,
            "supernodes": self.supernodes,
        }

    def render(self, page: Page) -> str:
        from interp.viz.assets import FEATURE_JS

        page.use_plotly()
        if self.features:
            page.add_script("feature", FEATURE_JS)
        page.add_script("attribution", ATTRIBUTION_JS)
        page.add_style("attribution", ATTRIBUTION_CSS)
        root = page.new_id("attribution")
        d = self.data()
        blocks = [page.json_block(f"{root}-data", d)]
        nodes = d["nodes"]
        for layer, data in self.features.items():
            wanted = sorted(
                {f for f, k, lay in zip(nodes["feature"], nodes["kind"], nodes["layer"], strict=True)
                 if k == 1 and lay == layer and f in data.features}
            )  # fmt: skip
            blocks.append(page.json_block(f"{root}-L{layer}-vocab", data.vocab_for(wanted)))
            blocks += [page.json_block(f"{root}-L{layer}-f{f}", data.features[f]) for f in wanted]
        return (
            f'<div id="{root}" data-mechscope="attribution"></div>'
            + "".join(blocks)
            + page.init(f"mechscope.attribution('{root}');")
        )


def attribution_view(
    graph: Any,
    transcoders: Mapping[int, Any],
    store: Any | Mapping[int, Any],
    *,
    model: Any | None = None,
    **kwargs: Any,
) -> AttributionView:
    """The view with each transcoder's dashboard data for the graph's pruned feature nodes.

    ``store``: one activation store holding every transcoder's input hook, or ``{layer: store}``;
    ``model`` gives logit effects and token strings. Other keyword arguments go to
    :func:`interp.viz.feature_data.collect` (``n_batches``, ``top_k`` ...) except those of
    :class:`AttributionView` (thresholds, ``dashboard_url``, ``title``), which go to it."""
    from interp.viz.feature_data import collect

    own = {"dashboard_url", "node_threshold", "edge_threshold", "webgl", "title", "supernodes"}
    view_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
    view = AttributionView(graph, **view_kw)  # checks the graph and prunes it, before any pass
    missing = [layer for layer in graph.transcoder_layers if layer not in transcoders]
    if missing:
        raise ValueError(
            f"the graph has transcoders at layers {graph.transcoder_layers}; none given for "
            f"{missing}"
        )
    stores = store if isinstance(store, Mapping) else dict.fromkeys(transcoders, store)
    table = graph.feature_table[view.pruned.node_mask[: graph.n_features]].tolist()
    features = {}
    for layer in graph.transcoder_layers:
        latents = sorted({f for lay, _, f in table if lay == layer})
        if not latents:
            continue
        if layer not in stores:
            raise ValueError(f"no store for layer {layer}: stores are given for {sorted(stores)}")
        tc = transcoders[layer]
        hook = tc.cfg.metadata.get("hook", f"blocks.{layer}.ln2.hook_normalized")
        hook = hook if len(stores[layer].hooks) > 1 else None
        features[layer] = collect(
            tc, stores[layer], latents=latents, model=model, hook=hook, **kwargs
        )
    view.features = features
    return view


def save_with_dashboards(view: AttributionView, directory: str | os.PathLike[str]) -> Path:
    """Write ``graph.html`` and, per layer with feature data, ``features_l{layer}.html`` (a
    :class:`~interp.viz.FeatureBrowser`) into ``directory``; each feature node links to its
    dashboard. Returns the path of ``graph.html``."""
    from interp.viz.features import FeatureBrowser

    if not view.features:
        raise ValueError(
            "this view has no feature data: build it with attribution_view(graph, transcoders, "
            "store) or AttributionView(graph, features={layer: FeatureData})"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for layer, data in view.features.items():
        FeatureBrowser(data, title=f"Layer {layer} transcoder · {data.hook}").save(
            directory / f"features_l{layer}.html"
        )
    view.dashboard_url = "features_l{layer}.html#features-latent-{feature}"
    return view.save(directory / "graph.html")
