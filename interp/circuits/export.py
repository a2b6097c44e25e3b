"""Export a pruned graph to the JSON that circuit-tracer's and Neuronpedia's graph viewer reads.

Field names and node ids follow circuit-tracer's ``frontend/graph_models.py`` and
``utils/create_graph_files.py``: ``metadata`` (slug, scan, transcoder_list, prompt_tokens,
prompt, node_threshold, schema_version), ``qParams``, ``nodes`` (node_id, feature, layer,
ctx_idx, feature_type, token_prob, is_target_logit, run_idx, reverse_ctx_idx, jsNodeId, clerp,
influence, activation) and ``links`` (source, target, weight).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from interp._io import atomic_write_json
from interp.circuits.graph import AttributionGraph

__all__ = ["export_json", "node_id", "to_viewer_json"]


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def node_id(graph: AttributionGraph, i: int) -> str:
    """The viewer's ``node_id`` of node ``i``: ``{layer}_{feature}_{pos}``, errors
    ``{layer}_-1_{pos}``, tokens ``E_{token}_{pos}``, logits ``{n_layers + 1}_{token}_{last pos}``."""
    n = graph.node_at(i)
    if n.kind == "token":
        return f"E_{n.ident}_{n.pos}"
    layer = n.layer + 1 if n.kind == "logit" else n.layer
    return f"{layer}_{n.ident}_{n.pos}"


def _node(graph: AttributionGraph, i: int, influence: float) -> dict[str, Any]:
    base = {
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "clerp": "",
    }
    if i < graph.n_features:
        layer, pos, f = graph.feature_table[i].tolist()
        act = float(graph.activation_values[graph.selected_features[i]])
        return base | {
            "node_id": node_id(graph, i), "feature": _cantor(layer, f), "layer": str(layer),
            "ctx_idx": pos, "feature_type": "cross layer transcoder",
            "jsNodeId": f"{layer}_{f}-0", "influence": influence, "activation": act,
        }  # fmt: skip
    if i < graph.token_start:
        layer, pos = divmod(i - graph.n_features, graph.n_pos)
        return base | {
            "node_id": node_id(graph, i), "feature": -1, "layer": str(layer), "ctx_idx": pos,
            "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_-1-{pos}",
            "influence": influence, "activation": None,
        }  # fmt: skip
    if i < graph.logit_start:
        pos = i - graph.token_start
        tok = int(graph.tokens[pos])
        return base | {
            "node_id": node_id(graph, i), "feature": pos, "layer": "E", "ctx_idx": pos,
            "feature_type": "embedding", "jsNodeId": f"E_{tok}-{pos}", "influence": influence,
            "activation": None,
        }  # fmt: skip
    j = i - graph.logit_start
    tok, p = int(graph.logit_tokens[j]), float(graph.logit_probabilities[j])
    text = graph.logit_strings[j] if graph.logit_strings else str(tok)
    layer = str(graph.n_layers + 1)
    return base | {
        "node_id": node_id(graph, i), "feature": tok, "layer": layer,
        "ctx_idx": graph.n_pos - 1, "feature_type": "logit", "token_prob": p,
        "is_target_logit": j == 0, "jsNodeId": f"L_{tok}-{graph.n_pos - 1}",
        "clerp": f'Output "{text}" (p={p:.3f})', "influence": None, "activation": None,
    }  # fmt: skip


def to_viewer_json(
    graph: AttributionGraph,
    slug: str,
    *,
    scan: str = "mechscope",
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> dict[str, Any]:
    """The pruned graph as the viewer's JSON object (a dict; see :func:`export_json`)."""
    pruned = graph.prune(node_threshold, edge_threshold)
    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    nodes = {i: _node(graph, i, float(pruned.cumulative_scores[i])) for i in keep}
    dst, src = pruned.edge_mask.nonzero(as_tuple=True)
    links = [
        {
            "source": nodes[s]["node_id"],
            "target": nodes[d]["node_id"],
            "weight": float(graph.adjacency[d, s]),
        }
        for d, s in zip(dst.tolist(), src.tolist(), strict=True)
        if s in nodes and d in nodes
    ]
    used = {x for link in links for x in (link["source"], link["target"])}
    kept = [
        n
        for n in nodes.values()
        if n["node_id"] in used or n["feature_type"] in ("embedding", "logit")
    ]
    tokens = graph.token_strings or [str(int(t)) for t in graph.tokens]
    return {
        "metadata": {
            "slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": tokens,
            "prompt": graph.prompt, "node_threshold": node_threshold, "schema_version": 1,
        },
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": kept,
        "links": links,
    }  # fmt: skip


def export_json(
    graph: AttributionGraph, path: str | os.PathLike[str], slug: str | None = None, **kw: Any
) -> Path:
    """Write the viewer JSON to ``path`` (atomically); ``slug`` defaults to the file's stem."""
    path = Path(path)
    atomic_write_json(path, to_viewer_json(graph, slug or path.stem, **kw))
    return path
