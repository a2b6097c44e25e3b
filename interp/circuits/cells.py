"""Feature nodes as patching cells: :func:`patch_features`.

A cell is a feature node ``F{layer}.{feature}@pos`` (``@pos`` left off: every position), from
:func:`interp.circuits.validate.feature_nodes` or :meth:`ComponentGraph.node`. Patching it sets
the feature's activation in the base run to its value in the source run (the other prompt of the
pair, the mean over a reference set, or zero) and delivers the change through the transcoder's
decoder direction at the MLP output, ``mlp_out[:, pos] += (a_source − a_base) · W_dec[feature]``:
an edit of the real model, as :func:`~interp.circuits.validate.feature_interventions` makes, not
of the replacement model. Cells run through the patching sweep's runner and the one partial
forward (a cell at layer l and position p recomputes only layers ≥ l and positions ≥ p), and
the result is a :class:`~interp.patching.PatchResult` with one axis, ``feature``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.cache import cache_activations
from interp.circuits.replacement import INPUT_HOOK, OUTPUT_HOOK, check_transcoders
from interp.core.adapter import adapt
from interp.core.forward import MAX_TOKENS, keep_into
from interp.core.fused import fused_layers
from interp.core.nodes import ComponentGraph, Node
from interp.core.sites import SITES, Cell
from interp.hooks import HookFn, TLModel, hook_names, hooks
from interp.models import model_fingerprint
from interp.patching.inputs import (
    Metric,
    as_tokens,
    check_ablation,
    check_metric_first,
    check_pair,
    checked_metric,
    metric_name,
    reference_tokens,
)
from interp.patching.result import PatchResult
from interp.patching.runner import PatchRunner
from interp.recipe import recorded
from interp.validate import check_int, check_positions

__all__ = ["feature_acts", "feature_cells", "input_hook", "patch_features"]


def input_hook(model: Any, layer: int) -> str:
    """Where the transcoder at ``layer`` reads the MLP's input (as the replacement model does)."""
    name = INPUT_HOOK.format(layer=layer)
    return name if name in set(hook_names(model)) else f"blocks.{layer}.hook_resid_mid"


def feature_cells(
    model: Any, features: Any, transcoders: Mapping[int, Any], n_pos: int | None = None
) -> list[Node]:
    """``features`` (names like ``"F3.12@5"`` or feature :class:`Node` s) as checked nodes:
    each one a feature, at a layer with a transcoder, below its ``d_sae``, at a position
    among ``n_pos``. Every error is raised before any model run."""
    graph = ComponentGraph(model)
    items = [features] if isinstance(features, (str, Node)) else list(features)
    if not items:
        raise ValueError("features is empty: name at least one feature node, e.g. 'F0.12@3'")
    out = []
    for item in items:
        node = graph.node(item, n_pos=n_pos)
        if node.kind != "feature":
            raise ValueError(
                f"{node.name!r} is a {node.kind} node; feature cells are transcoder features "
                "'F{layer}.{feature}' or 'F{layer}.{feature}@{pos}'"
            )
        assert node.layer is not None and node.head is not None
        tc = transcoders.get(node.layer)
        if tc is None:
            raise ValueError(
                f"{node.name!r}: no transcoder at layer {node.layer} (layers with one: "
                f"{sorted(transcoders)})"
            )
        d_sae = int(tc.cfg.d_sae)
        if not 0 <= node.head < d_sae:
            raise ValueError(
                f"{node.name!r}: feature {node.head} is beyond the layer-{node.layer} transcoder's "
                f"d_sae = {d_sae} (features 0-{d_sae - 1})"
            )
        if node.pos is not None and n_pos is not None and not 0 <= node.pos < n_pos:
            raise IndexError(
                f"{node.name!r}: position {node.pos} is out of range for {n_pos} positions"
            )
        out.append(node)
    return out


def feature_acts(transcoder: Any, x: Tensor, features: Sequence[int]) -> Tensor:
    """The activations ``[..., len(features)]`` of ``features`` on transcoder inputs ``x``."""
    flat = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        acts = transcoder.encode(flat.to(transcoder.W_enc.dtype))[:, list(features)]
    return acts.reshape(*x.shape[:-1], len(features)).float()


@recorded
def patch_features(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    features: Any,
    transcoders: Mapping[int, Any],
    ablation: str = "corrupt",
    direction: str = "denoise",
    reference: Any = None,
    logits_at: int | Sequence[int] | None = None,
    max_tokens: int = MAX_TOKENS,
    fast: bool | None = None,
) -> PatchResult:
    """Patch each feature node of ``features`` (one cell each) and measure ``metric``.

    Arguments as :func:`interp.patching.patch_sweep` (``clean``, ``corrupt``, ``metric``,
    ``ablation``, ``direction``, ``reference``, ``logits_at``, ``max_tokens``, ``fast``), plus
    ``features``: feature nodes or their names; ``transcoders``: ``{layer: Transcoder}``.
    """
    check_int(max_tokens, "max_tokens", minimum=1)
    clean_t = as_tokens(model, clean, "clean")
    corrupt_t = None if corrupt is None else as_tokens(model, corrupt, "corrupt")
    check_pair(clean_t, corrupt_t)
    check_ablation(ablation, direction, corrupt_t)
    n, n_pos = clean_t.shape
    tcs = check_transcoders(model, transcoders)
    nodes = feature_cells(model, features, tcs, n_pos)
    logit_pos = list(range(n_pos)) if logits_at is None else check_positions(logits_at, n_pos)
    check_metric_first(model, metric, n, len(logit_pos), clean_t)
    ref_t = reference_tokens(model, reference, clean_t, ablation)
    adapter = adapt(model)
    layers = sorted({int(nd.layer) for nd in nodes})  # type: ignore[arg-type]
    for layer in layers:
        adapter.check_writable(OUTPUT_HOOK.format(layer=layer))
    ins = {layer: input_hook(model, layer) for layer in layers}
    feats = {layer: sorted({int(nd.head) for nd in nodes if nd.layer == layer}) for layer in layers}  # type: ignore[arg-type]

    base_t, source_t = (corrupt_t, clean_t) if direction == "denoise" else (clean_t, corrupt_t)
    assert base_t is not None
    runner = PatchRunner(
        model, base_t, SITES["mlp_out"], logit_pos, fast=fast, max_tokens=max_tokens,
        keep=list(ins.values()),
    )  # fmt: skip
    base_vals = checked_metric(metric, runner.base_logits, n, base_t)
    base_a = {lay: feature_acts(tcs[lay], runner.base_acts[ins[lay]], feats[lay]) for lay in layers}
    runner.release_base_acts()
    other_vals = None
    if source_t is not None:
        kept: dict[str, Tensor] = {}
        keep = [(name, keep_into(name, kept)) for name in ins.values()]
        with torch.no_grad(), hooks(model, fwd=keep), fused_layers(model):
            other_logits = model(source_t)[:, logit_pos]
        other_vals = checked_metric(metric, other_logits, n, source_t)
        del other_logits
    if ablation == "corrupt":
        src = {lay: feature_acts(tcs[lay], kept[ins[lay]], feats[lay]) for lay in layers}
    elif ablation == "zero":
        src = {lay: torch.zeros_like(base_a[lay]) for lay in layers}
    else:  # the mean activation over the reference set, per position
        cache = cache_activations(model, ref_t, list(ins.values()))
        src = {
            lay: feature_acts(tcs[lay], cache[ins[lay]], feats[lay]).mean(0, keepdim=True)
            for lay in layers
        }
    clean_vals = base_vals if direction == "noise" else other_vals
    assert clean_vals is not None
    corrupt_vals = (
        None if corrupt_t is None else (base_vals if direction == "denoise" else other_vals)
    )

    # Per cell: the change of the feature's activation at each position ([n, n_pos]), and the
    # first position where it is non-zero (None: the cell changes nothing).
    deltas, starts = [], []
    for nd in nodes:
        j = feats[nd.layer].index(nd.head)  # type: ignore[index, arg-type]
        d = (src[nd.layer][..., j] - base_a[nd.layer][..., j]).expand(n, n_pos).clone()  # type: ignore[index]
        if nd.pos is not None:
            keep_pos = torch.zeros(n_pos, dtype=torch.bool)
            keep_pos[nd.pos] = True
            d[:, ~keep_pos] = 0
        changed = d.abs().sum(0).nonzero()
        deltas.append(d)
        starts.append(int(changed[0]) if len(changed) else None)

    values = torch.empty(n, len(nodes))
    for i, start in enumerate(starts):
        if start is None:
            values[:, i] = base_vals.cpu()
    todo = [i for i, s in enumerate(starts) if s is not None]
    cells = [Cell(int(nodes[i].layer), nodes[i].pos) for i in todo]  # type: ignore[arg-type]
    firsts = [s for s in starts if s is not None]
    for layer, p0, group in runner.groups(cells, firsts):
        idx = [todo[j] for j in group]
        fn = _add_along_decoder(
            [deltas[i][:, p0:] for i in idx],
            [tcs[layer].W_dec[int(nodes[i].head)].detach() for i in idx],  # type: ignore[arg-type]
            n,
        )
        out = runner.forward.run_from(layer, p0, len(idx), [(OUTPUT_HOOK.format(layer=layer), fn)])
        out = out.reshape(len(idx), n, *out.shape[1:])
        for j, i in enumerate(idx):
            logits = runner.logits(out[j]) if runner.forward.is_residual else out[j]
            values[:, i] = checked_metric(metric, logits, n, base_t).cpu()

    return PatchResult(
        values, ("feature",), {"feature": [nd.name for nd in nodes]}, metric_name(metric),
        "patch_features", "feature", ablation, direction, clean_vals.cpu(),
        None if corrupt_vals is None else corrupt_vals.cpu(),
        {
            "model": model_fingerprint(model),
            "transcoder_layers": sorted(tcs),
            "logits_at": None if logits_at is None else logit_pos,
            "forwards": runner.forwards,
            "block_positions": runner.forward.block_positions,
            "fast": runner.fast,
            "cells_skipped_unchanged": sum(s is None for s in starts),
        },
    )  # fmt: skip


def _add_along_decoder(deltas: list[Tensor], vectors: list[Tensor], n: int) -> HookFn:
    """A hook on ``k`` stacked copies of the base rows: copy c gets ``deltas[c] ⊗ vectors[c]``
    added at the positions it covers (the activation's positions start where the deltas do)."""

    def fn(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        for c, (d, v) in enumerate(zip(deltas, vectors, strict=True)):
            add = d[:, :, None].to(act) * v.to(act)
            act[c * n : (c + 1) * n] += add[:, -act.shape[1] :]
        return act

    return fn
