"""The data behind the attribution-graph view: a pruned :class:`~interp.circuits.AttributionGraph`
as compact columns for the page's script.

Nodes sit at (x, y) = (position, layer): token embeddings on row −1, a layer's features and error
node on row ``layer`` (spread across their position's column), the logits on row ``n_layers``.
Columns are positions, never token strings, so a repeated token keeps its own column. Edges are
the pruned graph's, each in one of 8 bins (sign × |weight| relative to the largest), so the page
draws them as 8 traces however many there are. Node ids are circuit-tracer's (as
:mod:`interp.circuits.export` writes them), so supernode groups exported from the view name the
same nodes as the viewer JSON.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import torch

from interp.validate import did_you_mean

__all__ = [
    "EDGE_BINS",
    "KINDS",
    "attribution_data",
    "check_dashboard_url",
    "check_supernodes",
    "token_label",
]

KINDS = ("embedding", "feature", "error", "logit")
EDGE_BINS = (1 / 32, 1 / 8, 1 / 2)
"""|weight| / max |weight| cut points: an edge's magnitude bin (0 thinnest .. 3 thickest)."""
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def token_label(token: str) -> str:
    """A token as a visible label: empty and whitespace-only tokens drawn with visible marks, and
    control and format characters (RTL marks, zero-width joiners ...) as ``⟨U+XXXX⟩``.

    >>> token_label(" Paris"), token_label(""), token_label("  "), token_label("a\\u202eb")
    (' Paris', '∅', '␣␣', 'a⟨U+202E⟩b')
    """
    if token == "":
        return "\u2205"
    if token.isspace():
        return "".join(_VISIBLE.get(c, f"\u27e8U+{ord(c):04X}\u27e9") for c in token)
    return "".join(
        f"\u27e8U+{ord(c):04X}\u27e9" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
        for c in token
    )


def check_dashboard_url(template: str) -> str:
    """``template`` (``{layer}`` and ``{feature}`` fields) checked: it formats, and it is a relative
    path or a file/http(s) URL (a ``javascript:`` link would run code)."""
    try:
        url = template.format(layer=0, feature=0)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"dashboard_url {template!r} does not format: use the fields {{layer}} and "
            f"{{feature}} only, e.g. 'features_l{{layer}}.html#features-latent-{{feature}}' ({err})"
        ) from None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("", "file", "http", "https"):
        raise ValueError(
            f"dashboard_url {template!r} has scheme {scheme!r}: give a relative path or a "
            "file:, http: or https: URL"
        )
    return template


def check_supernodes(groups: Any, ids: list[str]) -> list[list[str]]:
    """``groups`` (circuit-tracer's ``[[name, node_id, ...], ...]``, or a mapping holding it as
    ``supernodes`` or ``qParams.supernodes``: an exported groups file or viewer JSON) checked
    against the drawn node ``ids``: names unique and non-empty, each node known and in one group.

    >>> check_supernodes({"supernodes": [["France", "0_5_3", "1_9_3"]]}, ["0_5_3", "1_9_3"])
    [['France', '0_5_3', '1_9_3']]
    >>> check_supernodes([["x", "0_5_4"]], ["0_5_3", "1_9_3"])
    Traceback (most recent call last):
    ValueError: supernode 'x': node '0_5_4' is not in the pruned graph; did you mean '0_5_3'?
    """
    if isinstance(groups, Mapping):
        groups = groups.get("supernodes", (groups.get("qParams") or {}).get("supernodes"))
    shape = "[[name, node_id, ...], ...] (or {'supernodes': ...}, or a viewer JSON's qParams)"
    if not isinstance(groups, (list, tuple)):
        raise ValueError(f"supernodes: expected {shape}; got {type(groups).__name__}")
    known = set(ids)
    owner: dict[str, str] = {}  # node id -> its supernode
    out: list[list[str]] = []
    for g in groups:
        if (not isinstance(g, (list, tuple)) or len(g) < 2 or not isinstance(g[0], str)
                or not g[0].strip()):  # fmt: skip
            raise ValueError(
                f"supernode {g!r}: expected [name, node_id, ...] with a non-empty name"
            )
        name, members = g[0].strip(), [str(m) for m in g[1:]]
        for m in members:
            if m not in known:
                raise ValueError(
                    f"supernode {name!r}: node {m!r} is not in the pruned graph"
                    + did_you_mean(m, ids)
                )
            if m in owner and owner[m] == name:
                raise ValueError(f"node {m!r} is listed twice in supernode {name!r}")
            if m in owner:
                raise ValueError(
                    f"node {m!r} is in supernodes {owner[m]!r} and {name!r}: a node joins one only"
                )
            owner[m] = name
        if any(o[0] == name for o in out):
            raise ValueError(f"two supernodes are named {name!r}: names must be unique")
        out.append([name, *members])
    return out


def _node_rows(graph: Any, keep: list[int]) -> dict[str, list[Any]]:
    """kind, layer, pos, feature, activation, id and label of each kept node."""
    from interp.circuits.export import node_id

    cols: dict[str, list[Any]] = {k: [] for k in ("kind", "layer", "pos", "feature", "act", "id")}
    acts = graph.activation_values[graph.selected_features].tolist()
    kinds = {"token": 0, "feature": 1, "error": 2, "logit": 3}
    for i in keep:
        n = graph.node_at(i)
        kind, layer, pos = kinds[n.kind], n.layer, n.pos
        f = None if n.kind == "error" else n.ident
        act = acts[i] if n.kind == "feature" else None
        nid = node_id(graph, i)  # the viewer JSON's id, so both formats name the same node
        for k, v in zip(cols, (kind, layer, pos, f, act, nid), strict=True):
            cols[k].append(v)
    return cols


def _layout(cols: Mapping[str, list[Any]], n_pos: int, n_layers: int) -> tuple[list[float], ...]:
    """x spreads the nodes of one (layer, position) cell across its column (error node first);
    logits spread leftwards from the last column, the most probable rightmost."""
    cells: dict[tuple[int, int], list[int]] = {}
    for j, (layer, pos) in enumerate(zip(cols["layer"], cols["pos"], strict=True)):
        cells.setdefault((layer, pos), []).append(j)
    x = [0.0] * len(cols["kind"])
    y = [float(v) for v in cols["layer"]]
    logits = cells.pop((n_layers, n_pos - 1), [])
    for members in cells.values():
        members.sort(key=lambda j: (cols["kind"][j] != 2, cols["feature"][j] or 0))
        for k, j in enumerate(members):
            x[j] = cols["pos"][j] + (
                0.0 if len(members) == 1 else -0.4 + 0.8 * k / (len(members) - 1)
            )
    step = min(2.0, (n_pos - 1) / max(len(logits) - 1, 1)) if n_pos > 1 else 0.2
    for k, j in enumerate(logits):
        x[j] = n_pos - 1 - k * step
    return x, y


def attribution_data(
    graph: Any,
    pruned: Any,
    *,
    features: Mapping[int, Any] | None = None,
    dashboard_url: str | None = None,
) -> dict[str, Any]:
    """The view's JSON: tokens, nodes (columns), edges (source, target, weight, bin) and scores.

    ``pruned`` is ``graph.prune(...)``'s result; ``features`` maps a layer to its
    :class:`~interp.viz.FeatureData` (a node whose latent it holds is marked ``rec``)."""
    from interp.circuits.influence import node_influence

    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    index = {node: j for j, node in enumerate(keep)}
    cols = _node_rows(graph, keep)
    x, y = _layout(cols, graph.n_pos, graph.n_layers)
    infl = node_influence(graph.adjacency, graph.logit_weights)[keep].tolist()
    dst, src = pruned.edge_mask.nonzero(as_tuple=True)
    w = graph.adjacency[dst, src].float()
    big = float(w.abs().max()) if len(w) else 1.0
    mag = torch.bucketize(w.abs() / (big or 1.0), torch.tensor(EDGE_BINS))
    edges = {
        "src": [index[s] for s in src.tolist()],
        "dst": [index[d] for d in dst.tolist()],
        "w": [float(f"{v:.4g}") for v in w.tolist()],
        "bin": ((w < 0).long() * 4 + mag).tolist(),
    }
    n_in, n_out = [0] * len(keep), [0] * len(keep)
    for s, d in zip(edges["src"], edges["dst"], strict=True):
        n_out[s] += 1
        n_in[d] += 1
    probs = graph.logit_probabilities.tolist()
    logit_strings = graph.logit_strings or [f"#{int(t)}" for t in graph.logit_tokens]
    labels = []
    for j, node in enumerate(keep):
        if cols["kind"][j] == 3:
            k = node - graph.logit_start
            labels.append(f"{token_label(logit_strings[k])} (p={probs[k]:.3f})")
        else:
            labels.append("")
    has = {
        layer: set(data.features) for layer, data in (features or {}).items()
    }  # latents with dashboard data, per layer
    rec = [
        int(cols["kind"][j] == 1 and cols["feature"][j] in has.get(cols["layer"][j], ()))
        for j in range(len(keep))
    ]
    urls = [
        dashboard_url.format(layer=cols["layer"][j], feature=cols["feature"][j])
        if dashboard_url is not None and cols["kind"][j] == 1
        else None
        for j in range(len(keep))
    ]
    # marker size: influence on the logits (a logit: its probability), square-root scaled
    top_infl, top_p = max(infl + [1e-12]), max(probs + [1e-12])
    size = [
        8 + 12 * math.sqrt(max(probs[node - graph.logit_start], 0) / top_p)
        if cols["kind"][j] == 3
        else 6 + 12 * math.sqrt(max(infl[j], 0) / top_infl)
        for j, node in enumerate(keep)
    ]
    replacement, completeness = graph.scores()
    tokens = graph.token_strings or [f"#{int(t)}" for t in graph.tokens]
    return {
        "n_layers": graph.n_layers,
        "prompt": graph.prompt,
        "tokens": tokens,
        "labels": [token_label(t) for t in tokens],
        "transcoder_layers": list(graph.transcoder_layers),
        "scores": {"replacement": _finite(replacement), "completeness": _finite(completeness)},
        "nodes": {
            **cols,
            "act": [None if a is None else float(f"{a:.4g}") for a in cols["act"]],
            "x": [round(v, 4) for v in x],
            "y": y,
            "infl": [float(f"{v:.4g}") for v in infl],
            "size": [round(v, 2) for v in size],
            "n_in": n_in,
            "n_out": n_out,
            "label": labels,
            "rec": rec,
            "url": urls,
        },
        "edges": edges,
        "hooks": {str(k): v.hook for k, v in (features or {}).items()},
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
