"""Interventions that test a graph: predicted vs measured effects of editing features.

A feature edit sets a feature's activation at one (layer, position). In the local replacement
model the edit replaces the activation inside the transcoder (downstream features recompute,
attention and norms stay frozen); in the real model it adds ``(new − old) · W_dec[feature]`` to
the MLP output there (:func:`feature_interventions`: core :class:`~interp.core.interventions.Add`
interventions). A graph's feature nodes (:func:`feature_nodes`) are patching cells
(:func:`interp.circuits.cells.patch_features`) and scrubbing claims
(:meth:`interp.scrubbing.Hypothesis.from_features`).
The graph predicts the change of a target (logit − mean logit) linearly: the edge weights per
unit of source activation, summed over every path through the graph's feature nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.circuits.graph import AttributionGraph
from interp.circuits.replacement import OUTPUT_HOOK, FeatureEdit, LocalReplacement
from interp.core.interventions import Add
from interp.core.nodes import Node

__all__ = [
    "InterventionCheck",
    "check_interventions",
    "feature_interventions",
    "feature_nodes",
    "predicted_effect",
]


def feature_nodes(graph: AttributionGraph, mask: Tensor | None = None) -> list[Node]:
    """The graph's feature nodes (those in ``mask``, a pruned node mask, if given) as core
    :class:`~interp.core.nodes.Node` s of kind ``feature`` (``head`` holds the feature index)."""
    out = []
    for i, (layer, pos, f) in enumerate(graph.feature_table.tolist()):
        if mask is None or bool(mask[i]):
            out.append(Node(2 * layer + 2, "feature", layer, f, pos))
    return out


def _pos_mask(pos: int):
    def where(act: Tensor) -> Tensor:
        m = torch.zeros(1, act.shape[1], dtype=torch.bool, device=act.device)
        m[0, pos] = True
        return m

    return where


def feature_interventions(rep: LocalReplacement, edits: Sequence[FeatureEdit]) -> list[Add]:
    """Core interventions that carry out ``edits`` in the real model: at the MLP output, add
    ``(value − activation on the prompt) · W_dec[feature]`` at the edit's position."""
    out = []
    for e in edits:
        tc = rep.transcoders.get(e.layer)
        if tc is None:
            raise ValueError(
                f"no transcoder at layer {e.layer} (layers with one: {sorted(rep.transcoders)})"
            )
        delta = e.value - float(rep.acts[e.layer][e.pos, e.feature])
        vec = tc.W_dec[e.feature].detach()
        out.append(Add(OUTPUT_HOOK.format(layer=e.layer), vec, where=_pos_mask(e.pos), scale=delta))
    return out


def predicted_effect(graph: AttributionGraph, deltas: Tensor, logit: int = 0) -> float:
    """The graph's linear prediction of the change of logit node ``logit`` (logit − mean) when
    the feature nodes' activations change by ``deltas`` ``[n_features]``."""
    n = graph.n_features
    acts = graph.activation_values[graph.selected_features]
    per_unit = graph.adjacency[:, :n] / acts  # ∂target / ∂activation of each feature source
    ff = per_unit[:n]
    total = deltas.clone()
    for _ in range(graph.n_layers + 1):  # the graph is acyclic: n_layers steps reach every path
        total = deltas + ff @ total
    return float(per_unit[graph.logit_start + logit] @ total)


@dataclass
class InterventionCheck:
    """Per feature: the graph's predicted change of the target logit and the change measured in
    the replacement model, in the real model with attention patterns and norm scales frozen at the
    prompt (its MLPs live), and in the real model.

    The three measurements separate what the graph leaves out. The replacement model differs from
    the prediction only where a downstream transcoder's active set changes (TopK's latent swaps
    are jumps, so this one does not shrink with the edit). The frozen real model differs from the
    replacement only through the MLPs: the transcoders' response to the edit against the MLPs'.
    The real model adds what the graph freezes by construction: attention patterns (QK paths)
    and normalisation scales.
    """

    features: list[tuple[int, int, int]]
    predicted: Tensor
    replacement: Tensor
    real: Tensor
    frozen: Tensor

    @property
    def correlation_replacement(self) -> float:
        return _corr(self.predicted, self.replacement)

    @property
    def correlation_real(self) -> float:
        return _corr(self.predicted, self.real)

    @property
    def correlation_frozen(self) -> float:
        return _corr(self.predicted, self.frozen)


def _corr(a: Tensor, b: Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _target(logits: Tensor, token: int) -> float:
    last = logits[-1].float()
    return float(last[token] - last.mean())


def check_interventions(
    model: Any,
    graph: AttributionGraph,
    transcoders: dict[int, Any],
    *,
    n: int = 20,
    fraction: float = 0.1,
    logit: int = 0,
    skip_position_0: bool | None = None,
) -> InterventionCheck:
    """For the ``n`` feature nodes with the most influence on the logits, scale each one's
    activation by ``1 − fraction`` and compare the graph's predicted change of logit node
    ``logit`` with the change measured in the replacement model, in the real model with
    attention and norms frozen, and in the real model (:class:`InterventionCheck`).
    ``skip_position_0``: as given to :func:`~interp.circuits.attribute`; None reads it off the
    graph (no active feature at position 0: skipped)."""
    graph.check_model(model)
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0)
    if cap > 0:
        raise ValueError(
            f"this model caps its logits (output_logits_soft_cap={cap}): the graph's logit nodes "
            "are the logits before the cap, the measured ones after it, so they cannot be compared "
            "as they stand; not supported yet"
        )
    if skip_position_0 is None:
        skip_position_0 = not bool((graph.active_features[:, 1] == 0).any())
    rep = LocalReplacement.from_prompt(
        model, graph.tokens, transcoders, skip_position_0=skip_position_0
    )
    from interp.circuits.influence import node_influence

    infl = node_influence(graph.adjacency, graph.logit_weights)[: graph.n_features]
    order = infl.argsort(descending=True)[:n].tolist()
    token = int(graph.logit_tokens[logit])
    base_rep = _target(rep.logits_of(), token)
    with torch.no_grad():
        base_real = _target(model(rep.tokens)[0], token)
    from interp.core.interventions import intervene
    from interp.hooks import hooks

    with torch.no_grad(), hooks(model, fwd=rep.freeze_hooks()):
        base_frozen = _target(model(rep.tokens)[0], token)
    feats, pred, meas_rep, meas_real, meas_frozen = [], [], [], [], []
    acts = graph.activation_values[graph.selected_features]
    for i in order:
        layer, pos, f = graph.feature_table[i].tolist()
        a = float(acts[i])
        edit = FeatureEdit(layer, pos, f, a * (1 - fraction))
        deltas = torch.zeros(graph.n_features)
        deltas[i] = -fraction * a
        feats.append((layer, pos, f))
        pred.append(predicted_effect(graph, deltas, logit))
        meas_rep.append(_target(rep.logits_of([edit]), token) - base_rep)
        with torch.no_grad(), intervene(model, feature_interventions(rep, [edit])):
            meas_real.append(_target(model(rep.tokens)[0], token) - base_real)
            with hooks(model, fwd=rep.freeze_hooks()):
                meas_frozen.append(_target(model(rep.tokens)[0], token) - base_frozen)
    return InterventionCheck(
        feats, *(torch.tensor(v) for v in (pred, meas_rep, meas_real, meas_frozen))
    )
