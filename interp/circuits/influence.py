"""Influence on the logits, pruning and graph scores, with circuit-tracer's definitions.

The adjacency ``A[target, source]`` is normalised row-wise (``|A|`` over each row's L1 norm), and
a node's influence is ``w (Â + Â² + …)`` with ``w`` the logit nodes' probabilities: the series
ends because the graph is acyclic. Pruning keeps the nodes holding ``node_threshold`` of the
cumulative influence (tokens and logits always), then the edges holding ``edge_threshold`` of
the edge influence in the node-pruned graph, then drops features and errors left without an
outgoing edge and features left without an incoming one, until nothing changes.

>>> A = torch.tensor([[0., 0., 0.], [2., 0., 0.], [1., 3., 0.]])  # 0 → 1 → 2 (a logit), 0 → 2
>>> node_influence(A, torch.tensor([0., 0., 1.])).tolist()
[1.0, 0.75, 0.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "PruneResult",
    "edge_influence",
    "graph_scores",
    "node_influence",
    "normalize",
    "partial_influence",
    "prune",
    "threshold_of",
]


def normalize(a: Tensor) -> Tensor:
    """``|a|`` with each row divided by its L1 norm (rows of zeros stay zero)."""
    b = a.abs()
    return b / b.sum(1, keepdim=True).clamp(min=1e-10)


def _series(norm: Tensor, w: Tensor, max_iter: int = 1000) -> Tensor:
    cur = w @ norm
    total = cur.clone()
    for _ in range(max_iter):
        cur = cur @ norm
        if not cur.any():
            return total
        total += cur
    raise RuntimeError("the influence series did not end: the adjacency has a cycle")


def node_influence(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """Each node's total influence on the weighted logit nodes (``logit_weights`` over all nodes)."""
    return _series(normalize(adjacency), logit_weights)


def edge_influence(adjacency: Tensor, logit_weights: Tensor) -> Tensor:
    """``Â[t, s] · (influence of t + its logit weight)``: each edge's share of the influence."""
    norm = normalize(adjacency)
    infl = _series(norm, logit_weights) + logit_weights
    return norm * infl[:, None]


def partial_influence(rows: Tensor, logit_p: Tensor, row_node: Tensor, n_sources: int) -> Tensor:
    """Influence of every source node computed from the rows attributed so far (logit rows
    first, ``row_node[i]`` the node of row i; logits are numbered from ``n_sources``)."""
    norm = normalize(rows)
    weight = torch.zeros(n_sources + len(logit_p))
    weight[n_sources:] = logit_p
    node_to_row = torch.full((n_sources + len(logit_p),), -1, dtype=torch.long)
    node_to_row[row_node] = torch.arange(len(row_node))
    prod = weight[row_node]  # [rows]
    total = torch.zeros(rows.shape[1])
    for _ in range(1000):
        nxt = prod @ norm  # [n_sources]
        if not nxt.any():
            return total
        total += nxt
        full = torch.cat([nxt, torch.zeros(len(logit_p))])
        prod = full[row_node]  # a node without a row (not attributed yet) passes nothing on
    raise RuntimeError("the partial influence series did not end")


def threshold_of(scores: Tensor, fraction: float) -> Tensor:
    """The smallest score among the largest ones that hold ``fraction`` of the total (sorting
    only the non-zero scores: zeros add nothing to the cumulative sum).

    >>> round(threshold_of(torch.tensor([0.5, 0.0, 0.3, 0.2]), 0.8).item(), 6)
    0.3
    """
    nz = scores[scores != 0]
    if len(nz) == 0:
        return scores.new_zeros(())
    s = nz.sort(descending=True).values
    cum = s.cumsum(0) / s.sum()
    i = min(int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype))), len(s) - 1)
    return s[i]


class PruneResult(NamedTuple):
    node_mask: Tensor  # [n_nodes] bool
    edge_mask: Tensor  # [n_nodes, n_nodes] bool (target, source)
    cumulative_scores: Tensor  # [n_nodes]: cumulative influence fraction at each node's rank


def prune(
    adjacency: Tensor,
    logit_weights: Tensor,
    n_features: int,
    n_tokens: int,
    n_logits: int,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
) -> PruneResult:
    """circuit-tracer's pruning of an ``[n_nodes, n_nodes]`` adjacency ordered features, errors,
    tokens, logits."""
    for name, v in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {v}")
    infl = node_influence(adjacency, logit_weights)
    node_mask = infl >= threshold_of(infl, node_threshold)
    keep_end = -n_logits - n_tokens
    node_mask[keep_end:] = True
    pruned = adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    scores = edge_influence(pruned, logit_weights)
    edge_mask = scores >= threshold_of(scores.flatten(), edge_threshold)
    edge_mask &= scores != 0  # a zero edge carries no influence (circuit-tracer keeps it only at 0)
    old = node_mask.clone()
    while True:
        node_mask[:keep_end] &= edge_mask[:, :keep_end].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        if torch.equal(node_mask, old):
            break
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
    edge_mask[~node_mask] = False
    edge_mask[:, ~node_mask] = False
    order = infl.argsort(descending=True)
    cum = infl[order].cumsum(0) / infl.sum().clamp(min=1e-30)
    cumulative = torch.zeros_like(infl)
    cumulative[order] = cum
    return PruneResult(node_mask, edge_mask, cumulative)


def graph_scores(
    adjacency: Tensor, logit_weights: Tensor, n_features: int, n_errors: int, n_tokens: int
) -> tuple[float, float]:
    """(replacement score, completeness score) as circuit-tracer defines them: the share of the
    tokens' and errors' influence that is the tokens'; the influence-weighted share of each
    node's normalised input that does not come from error nodes."""
    norm = normalize(adjacency)
    infl = _series(norm, logit_weights)
    e0, e1 = n_features, n_features + n_errors
    token = infl[e1 : e1 + n_tokens].sum()
    error = infl[e0:e1].sum()
    replacement = token / (token + error)
    non_error = 1 - norm[:, e0:e1].sum(-1)
    out = infl + logit_weights
    completeness = (non_error * out).sum() / out.sum()
    return float(replacement), float(completeness)
