"""``AttributionGraph``: nodes, the dense adjacency over them, pruning, scores, save and load.

Nodes are ordered as circuit-tracer orders them: the selected active features (by layer,
position, feature), one error node per (layer, position) (layer-major), one token node per
position, then the logit nodes. ``adjacency[target, source]`` is the direct effect.
Saved as a folder: ``graph.safetensors`` (tensors) and ``graph.json`` (the rest, and a manifest
with the model's weight fingerprint); written to a temporary folder and renamed, so a failed save
leaves nothing at the path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from interp._io import atomic_write_json, fsync_dir, read_json
from interp.circuits.influence import PruneResult, graph_scores, prune
from interp.manifest import run_manifest

__all__ = ["AttributionGraph", "GraphModelMismatch"]

FORMAT = "mechscope-attribution-graph"
_TENSORS = (
    "tokens",
    "active_features",
    "activation_values",
    "selected_features",
    "adjacency",
    "logit_tokens",
    "logit_probabilities",
)


class NodeRef(NamedTuple):
    """What node ``i`` of a graph is: its kind, layer (-1 for tokens, ``n_layers`` for logits),
    position, and ident (feature id, token id, logit token id; -1 for an error node)."""

    kind: Literal["feature", "error", "token", "logit"]
    layer: int
    pos: int
    ident: int


class GraphModelMismatch(ValueError):
    """A graph loaded, or used, with a model other than the one it was computed on."""


@dataclass
class AttributionGraph:
    tokens: Tensor  # [n_pos]
    active_features: Tensor  # [n_active, 3]: (layer, pos, feature)
    activation_values: Tensor  # [n_active]
    selected_features: Tensor  # indices into active_features: the graph's feature nodes
    adjacency: Tensor  # [n_nodes, n_nodes], (target, source)
    logit_tokens: Tensor  # [n_logits]
    logit_probabilities: Tensor  # [n_logits]
    n_layers: int
    transcoder_layers: list[int]
    backward_passes: int = 0
    seconds: float = 0.0
    fingerprint: str = ""
    token_strings: list[str] = field(default_factory=list)
    logit_strings: list[str] = field(default_factory=list)
    prompt: str = ""
    model: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        model, self.model = self.model, None  # the graph does not keep the model alive
        if model is None:
            return
        from interp.models import model_fingerprint

        self.fingerprint = self.fingerprint or model_fingerprint(model)
        tok = getattr(model, "tokenizer", None)
        if tok is not None:
            self.token_strings = self.token_strings or [
                tok.decode([t]) for t in self.tokens.tolist()
            ]
            self.logit_strings = self.logit_strings or [
                tok.decode([t]) for t in self.logit_tokens.tolist()
            ]
            self.prompt = self.prompt or tok.decode(self.tokens.tolist())

    # -- layout -----------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return len(self.selected_features)

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return len(self.logit_tokens)

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    @property
    def feature_table(self) -> Tensor:
        """``[n_features, 3]`` (layer, pos, feature) of the graph's feature nodes."""
        return self.active_features[self.selected_features]

    def node_at(self, i: int) -> NodeRef:
        """Node ``i`` decoded from the node order (features, errors, tokens, logits)."""
        if i < self.n_features:
            layer, pos, f = self.feature_table[i].tolist()
            return NodeRef("feature", layer, pos, f)
        if i < self.token_start:
            layer, pos = divmod(i - self.n_features, self.n_pos)
            return NodeRef("error", layer, pos, -1)
        if i < self.logit_start:
            pos = i - self.token_start
            return NodeRef("token", -1, pos, int(self.tokens[pos]))
        tok = int(self.logit_tokens[i - self.logit_start])
        return NodeRef("logit", self.n_layers, self.n_pos - 1, tok)

    def node_label(self, i: int) -> str:
        """``F{layer}.{feature}@{pos}``, ``E{layer}@{pos}`` (error), ``tok@{pos}``, ``logit:{id}``."""
        n = self.node_at(i)
        if n.kind == "feature":
            return f"F{n.layer}.{n.ident}@{n.pos}"
        if n.kind == "error":
            return f"E{n.layer}@{n.pos}"
        return f"tok@{n.pos}" if n.kind == "token" else f"logit:{n.ident}"

    @property
    def logit_weights(self) -> Tensor:
        w = torch.zeros(len(self.adjacency))
        w[self.logit_start :] = self.logit_probabilities
        return w

    # -- analysis ---------------------------------------------------------------------------
    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PruneResult:
        """circuit-tracer's pruning (see :func:`interp.circuits.influence.prune`)."""
        return prune(
            self.adjacency, self.logit_weights, self.n_features, self.n_pos, self.n_logits,
            node_threshold, edge_threshold,
        )  # fmt: skip

    def plot(self, **kwargs: Any) -> Any:
        """The interactive view (:class:`interp.viz.attribution.AttributionView`; ``kwargs`` go
        to it), so ``save_html(path, graph)`` and a notebook cell's ``graph.plot()`` draw it."""
        from interp.viz.attribution import AttributionView

        return AttributionView(self, **kwargs)

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score), circuit-tracer's definitions."""
        return graph_scores(
            self.adjacency, self.logit_weights, self.n_features, self.n_errors, self.n_pos
        )

    # -- save / load ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the graph folder at ``path`` (refused if it exists, unless ``overwrite``)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            save_file(
                {k: getattr(self, k).contiguous() for k in _TENSORS}, str(tmp / "graph.safetensors")
            )
            meta = {
                "format": FORMAT,
                "n_layers": self.n_layers,
                "transcoder_layers": self.transcoder_layers,
                "backward_passes": self.backward_passes,
                "seconds": self.seconds,
                "fingerprint": self.fingerprint,
                "token_strings": self.token_strings,
                "logit_strings": self.logit_strings,
                "prompt": self.prompt,
                "manifest": run_manifest(
                    kind="attribution_graph", config={"fingerprint": self.fingerprint}
                ),
            }
            atomic_write_json(tmp / "graph.json", meta)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None) -> AttributionGraph:
        """Read a saved graph; with ``model``, check it is the model the graph was computed on."""
        path = Path(path)
        meta_file = path / "graph.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{path} is not an attribution graph folder (no graph.json)")
        meta = read_json(meta_file)
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{meta_file} is not a mechscope attribution graph (format {meta.get('format')!r})"
            )
        if model is not None:
            check_model(meta["fingerprint"], model, str(path))
        tensors = load_file(str(path / "graph.safetensors"))
        keys: tuple[str, ...] = (
            "n_layers",
            "transcoder_layers",
            "backward_passes",
            "seconds",
            "fingerprint",
        )
        keys += ("token_strings", "logit_strings", "prompt")
        fields: dict[str, Any] = {k: tensors[k] for k in _TENSORS} | {k: meta[k] for k in keys}
        return cls(**fields)

    def check_model(self, model: Any) -> None:
        """Refuse a model whose weights are not the ones the graph was computed on."""
        check_model(self.fingerprint, model, "this graph")


def check_model(fingerprint: str, model: Any, what: str) -> None:
    from interp.models import model_fingerprint

    have = model_fingerprint(model)
    if have != fingerprint:
        raise GraphModelMismatch(
            f"{what} was computed on a model with weight fingerprint {fingerprint[:16]}…; the model "
            f"given has {have[:16]}…: load the model the graph was made with"
        )
