"""``scrub`` and ``compare``: check everything, then a handful of batched forwards."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interp.circuits.cells import feature_cells
from interp.circuits.replacement import check_transcoders
from interp.core.forward import MAX_TOKENS
from interp.core.nodes import ComponentGraph
from interp.hooks import TLModel
from interp.models import model_fingerprint
from interp.patching.inputs import as_tokens, metric_name
from interp.recipe import recorded
from interp.scrubbing.engine import Plan, ScrubEngine, ScrubMetric, plan
from interp.scrubbing.hypothesis import (
    Claim,
    Hypothesis,
    HypothesisError,
    feature_values,
    other_rows,
)
from interp.scrubbing.result import ScrubComparison, ScrubResult

__all__ = ["compare", "scrub"]


@recorded
def scrub(
    model: TLModel,
    dataset: Any,
    hypothesis: Hypothesis,
    metric: ScrubMetric,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    node_effects: bool = False,
    max_tokens: int = MAX_TOKENS,
    transcoders: Mapping[int, Any] | None = None,
) -> ScrubResult:
    """Causally scrub ``hypothesis`` on ``dataset`` and score it with ``metric`` (a loss).

    Args:
        model: a TransformerLens model.
        dataset: token ids ``[n_inputs, pos]`` (or text); every resample is drawn from its rows.
        hypothesis: a :class:`Hypothesis` (a claim tree rooted at ``logits``).
        metric: ``(logits [batch, pos, vocab], tokens [batch, pos]) -> [batch]``, a loss per
            input, lower is better; ``tokens`` are the reference inputs (the labels' source).
            See :func:`interp.scrubbing.next_token_loss`.
        n_samples: reference inputs drawn (with replacement) from the dataset.
        seed: seeds every draw (references, classes, random inputs).
        node_effects: also scrub, for every claim, the hypothesis without it (and its subtree)
            in the same forwards; each node then carries ``recovered_without``.
        max_tokens: the most tokens (sequences × positions) in one forward.
        transcoders: ``{layer: saes.Transcoder}``, needed when the hypothesis claims transcoder
            features (``F{l}.{f}``, e.g. from :meth:`Hypothesis.from_features`).

    Everything is checked before the model runs: node names (close names suggested), the
    tree's links, every feature on every dataset row (it must not raise and must return a
    hashable value), and the metric's shape.
    """
    hyps = [hypothesis]
    if node_effects:
        hyps += _variants(hypothesis)
    comp = _run(model, dataset, hyps, metric, n_samples, seed, max_tokens, transcoders)
    res = comp.results[0]
    if node_effects:
        for variant in comp.results[1:]:
            k = int(variant.hypothesis.rsplit("#", 1)[1])
            for n in res.nodes:
                if n["claim"] == k:
                    n["recovered_without"] = variant.recovered
    return res


@recorded
def compare(
    model: TLModel,
    dataset: Any,
    hypotheses: Sequence[Hypothesis],
    metric: ScrubMetric,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    max_tokens: int = MAX_TOKENS,
    transcoders: Mapping[int, Any] | None = None,
) -> ScrubComparison:
    """Scrub several hypotheses on the same references and baselines, in the same forwards."""
    if not hypotheses:
        raise ValueError("compare needs at least one hypothesis")
    return _run(model, dataset, list(hypotheses), metric, n_samples, seed, max_tokens, transcoders)


def _variants(h: Hypothesis) -> list[Hypothesis]:
    out = []
    for k in range(1, len(h.claims())):
        out.append(Hypothesis(f"{h.name} without #{k}", _drop(h.root, k)))  # type: ignore[arg-type]
    return out


def _drop(root: Claim, target: int) -> Claim | None:
    """``root`` without the claim at preorder index ``target`` (and its subtree)."""
    counter = itertools.count()

    def rec(c: Claim) -> Claim | None:
        k = next(counter)
        kids = [got for ch in c.children if (got := rec(ch)) is not None]
        return None if k == target else Claim(c.node, c.feature, tuple(kids), c.label)

    return rec(root)


def _run(
    model: TLModel,
    dataset: Any,
    hyps: list[Hypothesis],
    metric: ScrubMetric,
    n_samples: int,
    seed: int,
    max_tokens: int,
    transcoders: Mapping[int, Any] | None = None,
) -> ScrubComparison:
    t0 = time.perf_counter()
    if not callable(metric):
        raise TypeError(f"metric must be callable (logits, tokens) -> losses; got {metric!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2 (for a CI); got {n_samples}")
    for h in hyps:
        if not isinstance(h, Hypothesis):
            raise TypeError(f"expected Hypothesis objects; got {type(h).__name__}")
    names = [h.name for h in hyps]
    if len(set(names)) != len(names):
        raise HypothesisError(f"hypothesis names must be distinct; got {names}")
    tokens = as_tokens(model, dataset, "dataset")
    if tokens.shape[0] < 2:
        raise ValueError("the dataset needs at least two inputs to resample from")
    graph = ComponentGraph(model)
    for h in hyps:
        h.validate(graph)
    claimed = [n for h in hyps for n in h.feature_nodes(graph)]
    if claimed:
        if transcoders is None:
            raise HypothesisError(
                f"the hypotheses claim transcoder features ({claimed[0].name}, ...): pass "
                "transcoders={layer: saes.Transcoder}"
            )
        transcoders = check_transcoders(model, transcoders)
        feature_cells(model, claimed, transcoders)
    feature_ids: dict[int, np.ndarray] = {}
    for h in hyps:
        for f in h.features():
            if id(f) not in feature_ids:
                feature_ids[id(f)] = feature_values(f, tokens)
    plans: list[Plan] = []
    start = 0
    for h in hyps:
        p = plan(graph, h, start)
        start += len(p.instances)
        plans.append(p)

    engine = ScrubEngine(
        model, graph, tokens, metric, feature_ids, max_tokens, claimed, transcoders
    )
    gen = torch.Generator().manual_seed(seed)
    n_data = tokens.shape[0]
    ref = torch.randint(0, n_data, (n_samples,), generator=gen)
    rand0 = other_rows(ref, n_data, gen)
    rows = engine.sample(plans, ref, rand0, gen)
    clean, random = engine.baseline(ref, rand0)
    scrubbed = engine.scrub(plans, rows)
    seconds = time.perf_counter() - t0

    meta = {
        "n_samples": n_samples,
        "seed": seed,
        "dataset_rows": n_data,
        "forwards": dict(engine.forwards),
        "rows": dict(engine.rows),
        "seconds": round(seconds, 3),
        "hypotheses_in_call": len(hyps),
        "model": model_fingerprint(model),
        "data": {"dataset": {"sha256": _hash(tokens), "shape": list(tokens.shape)}},
    }
    results = []
    for h, p, s in zip(hyps, plans, scrubbed, strict=True):
        nodes = _node_rows(p, feature_ids)
        results.append(ScrubResult(h.name, _tree(h.root), metric_name(metric), clean, s, random,  # type: ignore[arg-type]
                                   nodes, dict(meta), rows=ref.clone(),
                                   scrubbed_from=_partners(p, rows, ref), random_from=rand0[:, None]))  # fmt: skip
    return ScrubComparison(results)


def _partners(p: Plan, rows: dict[int, Tensor], ref: Tensor) -> Tensor:
    """``[n, k]``: every dataset row besides its reference that a sample's scrubbed run read
    (each distinct draw once: a child without a feature shares its parent's rows)."""
    seen, cols = {id(ref)}, []
    for inst in p.instances:
        for key in (inst.id, -1 - inst.id):
            t = rows.get(key)
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                cols.append(t)
    return torch.stack(cols, 1) if cols else torch.empty(len(ref), 0, dtype=torch.long)


def _node_rows(p: Plan, feature_ids: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for inst in p.instances:
        f = inst.feature
        classes = pool = None
        if f is not None and not isinstance(f, str) and id(f) in feature_ids:
            ids = feature_ids[id(f)]
            counts = np.bincount(ids)
            classes, pool = int(counts.size), float((counts**2).sum() / ids.size)
        rows.append(
            {
                "id": inst.id,
                "parent": inst.parent,
                "node": inst.node.name,
                "feature": inst.label,
                "path": list(inst.path),
                "implicit": inst.implicit,
                "claim": inst.claim,
                "classes": classes,
                "pool": pool,
            }
        )
    return rows


def _tree(c: Claim) -> dict[str, Any]:
    return {"node": c.node, "feature": c.feature_name, "children": [_tree(ch) for ch in c.children]}


def _hash(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
