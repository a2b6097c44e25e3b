"""Attribution graphs built in code, for the view's tests, benchmark and screenshots.

- :func:`synthetic_graph`: a graph of exactly ``n_nodes`` drawn nodes and ``n_edges`` edges
  (random weights, every edge from a lower row to a higher one, so the graph is acyclic), with the
  :class:`~interp.circuits.PruneResult` that keeps them all: the benchmark's "pruned graph of
  1,000 nodes and 10,000 edges".
- :func:`toy_graph`: a real graph, :func:`interp.circuits.attribute` on the 2-layer toy model of
  :mod:`interp.viz.sample` with random TopK transcoders at both layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["synthetic_graph", "toy_graph", "toy_transcoders"]


def synthetic_graph(
    n_nodes: int = 1000,
    n_edges: int = 10_000,
    *,
    n_layers: int = 12,
    n_pos: int = 16,
    n_logits: int = 5,
    n_errors: int = 60,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(graph, prune result keeping exactly ``n_nodes`` nodes and ``n_edges`` edges)."""
    from interp.circuits.graph import AttributionGraph
    from interp.circuits.influence import PruneResult

    n_feat = n_nodes - n_pos - n_logits - n_errors
    if n_feat < 1 or n_errors > n_layers * n_pos:
        raise ValueError(f"{n_nodes} nodes cannot hold {n_pos} tokens, {n_logits} logits and "
                         f"{n_errors} errors plus at least one feature")  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    layer = torch.randint(0, n_layers, (n_feat,), generator=g)
    pos = torch.randint(0, n_pos, (n_feat,), generator=g)
    feats = torch.stack([layer, pos, torch.randperm(n_feat * 4, generator=g)[:n_feat]], 1)
    feats = feats[torch.argsort(feats[:, 0] * n_pos + feats[:, 1], stable=True)]
    n_all = n_feat + n_layers * n_pos + n_pos + n_logits
    # The row of each node: features and errors at their layer, tokens -1, logits n_layers.
    row = torch.cat([feats[:, 0], torch.arange(n_layers).repeat_interleave(n_pos),
                     torch.full((n_pos,), -1), torch.full((n_logits,), n_layers)])  # fmt: skip
    errors = n_feat + torch.randperm(n_layers * n_pos, generator=g)[:n_errors]
    kept = torch.cat([torch.arange(n_feat), errors, torch.arange(n_all - n_pos - n_logits, n_all)])
    targets = torch.cat([torch.arange(n_feat), torch.arange(n_all - n_logits, n_all)])
    sources = kept[row[kept] < n_layers]  # everything but the logits
    adjacency = torch.zeros(n_all, n_all)
    while int((adjacency != 0).sum()) < n_edges:
        t = targets[torch.randint(0, len(targets), (n_edges,), generator=g)]
        s = sources[torch.randint(0, len(sources), (n_edges,), generator=g)]
        ok = (row[s] < row[t]) & (adjacency[t, s] == 0)
        t, s = t[ok], s[ok]
        first = torch.unique(t * n_all + s)  # each pair once
        t, s = first // n_all, first % n_all
        need = n_edges - int((adjacency != 0).sum())
        w = torch.randn(len(t), generator=g) * torch.rand(len(t), generator=g) ** 3
        adjacency[t[:need], s[:need]] = w[:need] + torch.sign(w[:need]) * 1e-3
    node_mask = torch.zeros(n_all, dtype=torch.bool)
    node_mask[kept] = True
    graph = AttributionGraph(
        tokens=torch.arange(n_pos) % 50, active_features=feats,
        activation_values=torch.rand(n_feat, generator=g) * 5,
        selected_features=torch.arange(n_feat), adjacency=adjacency,
        logit_tokens=torch.arange(n_logits), logit_probabilities=torch.full((n_logits,), 0.9 / n_logits),
        n_layers=n_layers, transcoder_layers=list(range(n_layers)),
        token_strings=[f" tok{p % 7}" for p in range(n_pos)],  # repeats, as real prompts have
        logit_strings=[f" out{j}" for j in range(n_logits)], prompt="synthetic",
    )  # fmt: skip
    return graph, PruneResult(node_mask, adjacency != 0, torch.zeros(n_all))


def toy_transcoders(model: Any, d_sae: int = 48, k: int = 6, seed: int = 1) -> dict[int, Any]:
    """Random TopK MLP transcoders at every layer of ``model``, with non-zero biases."""
    from saes.config import SAEConfig
    from saes.transcoder import Transcoder

    d = int(model.cfg.d_model)
    out = {}
    for layer in range(int(model.cfg.n_layers)):
        cfg = SAEConfig(d_in=d, d_sae=d_sae, k=k, d_out=d, activation="topk")
        tc = Transcoder(cfg, seed=seed + layer)
        with torch.no_grad():
            tc.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + layer))
        tc.cfg.metadata["hook"] = f"blocks.{layer}.ln2.hook_normalized"
        out[layer] = tc
    return out


def toy_graph(
    tokens: Sequence[int],
    token_strings: Sequence[str] | None = None,
    *,
    model: Any = None,
    transcoders: dict[int, Any] | None = None,
) -> Any:
    """:func:`interp.circuits.attribute` on the toy model (or ``model``) with
    :func:`toy_transcoders` (or ``transcoders``); token labels from ``token_strings`` (default
    the toy tokenizer's)."""
    from interp.circuits import attribute
    from interp.viz.sample import ToyTokenizer, toy_model

    model = toy_model() if model is None else model
    tcs = toy_transcoders(model) if transcoders is None else transcoders
    graph = attribute(model, torch.tensor([list(tokens)]), tcs, batch_size=16)
    tok = ToyTokenizer()
    graph.token_strings = list(token_strings or [tok.decode([t]) for t in tokens])
    graph.logit_strings = [tok.decode([int(t)]) for t in graph.logit_tokens]
    graph.prompt = "".join(graph.token_strings)
    return graph
