"""Attribution graphs over transcoder features (issue 15): the local replacement model, graphs,
pruning by influence, save/load and export, and interventions that test a graph's claims."""

from interp.circuits.attribute import attribute, salient_logits, target_tokens
from interp.circuits.cells import patch_features
from interp.circuits.graph import AttributionGraph, GraphModelMismatch
from interp.circuits.influence import PruneResult, graph_scores, node_influence, prune
from interp.circuits.replacement import FeatureEdit, LocalReplacement

__all__ = [
    "AttributionGraph",
    "FeatureEdit",
    "GraphModelMismatch",
    "LocalReplacement",
    "PruneResult",
    "attribute",
    "graph_scores",
    "patch_features",
    "node_influence",
    "prune",
    "salient_logits",
    "target_tokens",
]
