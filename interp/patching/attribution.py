"""Attribution patching: first-order estimates of patching effects from one backward pass.

Node attribution (Nanda, 2023) estimates what :func:`~interp.patching.patch_sweep` would measure
for every cell of a site at once::

    metric(base with cell := source)  ≈  metric(base) + Σ (source − base) · ∂metric/∂act

the sum running over the activation entries the cell covers. Cost: one forward of the source
prompts, one forward and one backward of the base prompts; the backward computes gradients for
activations only (weights are frozen for the call), about the price of one more forward.

Edge attribution (EAP, Syed et al., 2023) scores every sender → receiver edge of the component
graph by (source − base) output of the sender · gradient at the receiver's input. With
``method="ig"`` (EAP-IG, Hanna et al., 2024) gradients are averaged over ``steps`` points on the
straight line from the base to the source input embeddings before the product. ``grid``: the
points. ``"midpoint"`` (the default), (k + ½)/m for k = 0..m−1, the midpoint rule, whose error
falls as 1/m² for a smooth path; ``"right"``, k/m for k = 1..m (a right Riemann sum, error 1/m,
which includes the source end itself). Denoising (base = corrupted, source = clean) that is Hanna
et al.'s grid, which ends at the clean input; noising mirrors it, ending at the corrupted input,
and the estimates are patched metric values, not their score's sign convention.
docs/methods.md gives the measured difference.

Both return :class:`PatchResult` objects holding *estimated patched metric values*, in the same
units as the exact methods, so they can be compared cell for cell (``correlation``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.forward import logits_at as _run_logits
from interp.core.metric import takes_batch
from interp.core.nodes import ComponentGraph
from interp.core.sites import Site, site_spec
from interp.hooks import TLModel, hooks
from interp.models import model_fingerprint
from interp.patching.inputs import (
    Metric,
    as_tokens,
    axis_labels,
    check_ablation,
    check_metric_first,
    check_pair,
    checked_metric,
    metric_name,
)
from interp.patching.result import PatchResult
from interp.patching.sweep import _logit_positions, _ranges, fixed_axes
from interp.recipe import recorded
from interp.validate import check_choice, check_int

__all__ = ["GRIDS", "attribution_patch", "correlation", "edge_attribution"]

GRIDS = ("midpoint", "right")  # integrated-gradient points: (k + 1/2)/m, or k/m for k = 1..m


def _forward_with_grads(
    model: TLModel,
    tokens: Tensor,
    metric: Metric,
    names: list[str],
    *,
    source_embeds: dict[str, Tensor] | None = None,
    steps: int = 1,
    grid: str = "midpoint",
    logit_pos: list[int] | None = None,
    branch: frozenset[str] = frozenset(),
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Metric values, activations and mean activation gradients at ``names``.

    With ``source_embeds`` the input embeddings run at ``steps`` points between the base and the
    source embeddings (all in one batch), and the gradients are averaged over those points.
    """
    n = tokens.shape[0]
    acts: dict[str, Tensor] = {}

    def leaf(act: Tensor, hook: Any) -> Tensor:
        x = act.detach()
        if source_embeds is not None:
            shift = 0.5 if grid == "midpoint" else 1.0
            alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + shift) / steps
            a = alphas.repeat_interleave(n).view(-1, *([1] * (x.ndim - 1)))
            src = source_embeds[hook.name].repeat(steps, *([1] * (x.ndim - 1)))
            x = x + a * (src - x)
        return x.requires_grad_(True)

    def keep(act: Tensor, hook: Any) -> Tensor:
        # Returned, so the tensor whose gradient is taken is the one that flows on (a bridge
        # may hand its hooks a converted view and carry on with the original otherwise). A
        # branch input is cloned: on a bridge ``hook_mlp_in`` is the residual itself, and only
        # the returned value is the MLP branch's own.
        x = act.clone() if hook.name in branch else act
        acts[hook.name] = x
        return x

    rows = tokens.repeat(steps, 1)
    with adapt(model).activation_grads_only(), torch.enable_grad():
        with hooks(model, fwd=[(e, leaf) for e in adapt(model).embed_hooks] + [(names, keep)]):
            logits = _run_logits(model, rows, logit_pos)
        per_step = [
            checked_metric(metric, logits[i * n : (i + 1) * n].detach(), n, tokens)
            for i in range(steps)
        ]
        call = (lambda lg: metric(lg, tokens)) if takes_batch(metric) else metric
        total = torch.stack([call(logits[i * n : (i + 1) * n]).sum() for i in range(steps)]).sum()
        grads = torch.autograd.grad(total, [acts[k] for k in names], allow_unused=True)
    out_grads = {}
    for k, g in zip(names, grads, strict=True):
        g = torch.zeros_like(acts[k]) if g is None else g
        out_grads[k] = g.reshape(steps, n, *g.shape[1:]).mean(0)
    out_acts = {k: a.detach()[:n] for k, a in acts.items()}  # the base run's (steps == 1)
    return per_step[0], out_acts, out_grads


def _source_run(
    model: TLModel,
    tokens: Tensor,
    metric: Metric,
    names: list[str],
    logit_pos: list[int] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any) -> None:
        acts[hook.name] = act.detach()

    with torch.no_grad(), hooks(model, fwd=[(names, keep)]):
        logits = _run_logits(model, tokens, logit_pos)
    return checked_metric(metric, logits, tokens.shape[0], tokens), acts


def _grads(
    model: TLModel,
    base_t: Tensor,
    metric: Metric,
    names: list[str],
    src_acts: dict[str, Tensor],
    ig: bool,
    steps: int,
    logit_pos: list[int] | None = None,
    branch: frozenset[str] = frozenset(),
    grid: str = "midpoint",
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Base metric values, base activations and (mean) gradients at ``names``."""
    if not ig:
        return _forward_with_grads(model, base_t, metric, names, logit_pos=logit_pos, branch=branch)
    embeds = {e: src_acts[e] for e in adapt(model).embed_hooks}
    _, _, grads = _forward_with_grads(
        model,
        base_t,
        metric,
        names,
        source_embeds=embeds,
        steps=steps,
        grid=grid,
        logit_pos=logit_pos,
        branch=branch,
    )
    # No interpolation point is the base run itself, so measure that separately.
    base_vals, base_acts = _source_run(model, base_t, metric, names, logit_pos)
    return base_vals, base_acts, grads


def _prepare(
    model: TLModel, clean: Any, corrupt: Any, ablation: str, direction: str
) -> tuple[Tensor, Tensor, Tensor | None]:
    clean_t = as_tokens(model, clean, "clean")
    corrupt_t = None if corrupt is None else as_tokens(model, corrupt, "corrupt")
    check_pair(clean_t, corrupt_t)
    check_ablation(ablation, direction, corrupt_t)
    if ablation != "corrupt":
        raise ValueError("attribution patching supports ablation='corrupt' (a paired source run)")
    assert corrupt_t is not None
    return clean_t, corrupt_t, None


def _reduce(prod: Tensor, spec: Site, over: Sequence[str]) -> Tensor:
    """Sum ``[n, *layout]`` over the dimensions not in ``over``; order the kept ones as ``over``."""
    dims = {"bpd": ("pos", "d"), "bphd": ("pos", "head", "d"), "bhqk": ("head", "pos", "src_pos")}
    names = dims[spec.layout]
    keep = [a for a in over if a != "layer"]
    summed = [i + 1 for i, a in enumerate(names) if a not in keep]
    x = prod.sum(dim=summed) if summed else prod
    remaining = [a for a in names if a in keep]
    return x.permute(0, *[remaining.index(a) + 1 for a in keep])


@recorded
def attribution_patch(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    site: str,
    over: Sequence[str] = ("layer", "pos"),
    direction: str = "denoise",
    method: str = "atp",
    steps: int = 5,
    grid: str = "midpoint",
    layers: Sequence[int] | int | None = None,
    positions: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    src_positions: Sequence[int] | int | None = None,
    logits_at: int | Sequence[int] | None = None,
) -> PatchResult:
    """Estimated :func:`patch_sweep` values for every cell, from gradients.

    ``method="atp"``: the gradient at the base run; ``"ig"``: averaged over ``steps`` points
    between base and source input embeddings (``grid``: ``"midpoint"`` or Hanna et al.'s
    ``"right"``; module docstring). Other arguments as in ``patch_sweep``
    (``logits_at`` skips the unembedding, and its backward, outside the positions the metric
    reads).
    """
    if check_choice(method, ("atp", "ig"), "method") == "ig":
        check_int(steps, "steps", minimum=1)
    check_choice(grid, GRIDS, "grid")
    spec = site_spec(site, over)
    restrict = {"layer": layers, "pos": positions, "head": heads, "src_pos": src_positions}
    over, fixed = fixed_axes(spec, over, restrict)
    clean_t, corrupt_t, _ = _prepare(model, clean, corrupt, "corrupt", direction)
    n, n_pos = clean_t.shape
    ranges = _ranges(model, spec, over, n_pos, restrict)
    base_t, source_t = (corrupt_t, clean_t) if direction == "denoise" else (clean_t, corrupt_t)
    layer_list = ranges["layer"]
    names = [spec.hook_name(layer) for layer in layer_list]
    embeds = adapt(model).embed_hooks
    logit_pos = None if logits_at is None else _logit_positions(logits_at, n_pos)
    check_metric_first(model, metric, n, n_pos if logit_pos is None else len(logit_pos), base_t)
    src_vals, src_acts = _source_run(model, source_t, metric, names + embeds, logit_pos)
    base_vals, base_acts, grads = _grads(
        model, base_t, metric, names, src_acts, method == "ig", steps, logit_pos, grid=grid
    )
    per_layer = []
    for name in names:
        prod = (src_acts[name] - base_acts[name]) * grads[name]
        cells = _reduce(prod, spec, over)  # [n, *kept axes in over order, without layer]
        for axis in [a for a in over if a != "layer"]:
            idx = torch.tensor(ranges[axis], device=cells.device)
            pos_in = [a for a in over if a != "layer"].index(axis) + 1
            cells = cells.index_select(pos_in, idx)
        per_layer.append(cells)
    est = torch.stack(per_layer, dim=1)  # [n, layer, *rest in over order]
    layer_at = list(over).index("layer")
    est = est.movedim(1, layer_at + 1)
    values = base_vals.view(-1, *([1] * (est.ndim - 1))).to(est.device) + est.float()
    clean_vals, corrupt_vals = (
        (src_vals, base_vals) if direction == "denoise" else (base_vals, src_vals)
    )
    labels = axis_labels(model, clean_t, over, ranges)
    result = PatchResult(
        values.detach().cpu(),
        tuple(over),
        labels,
        metric_name(metric),
        "attribution_patch" if method == "atp" else "attribution_patch_ig",
        site,
        "corrupt",
        direction,
        clean_vals.cpu(),
        corrupt_vals.cpu(),
        {
            "model": model_fingerprint(model),
            "method": method,
            "steps": steps if method == "ig" else 1,
            "grid": grid if method == "ig" else None,
        },
    )
    return result.squeeze(*fixed) if fixed else result


# -- edges ----------------------------------------------------------------------------------
def _sender_outputs(model: TLModel, graph: ComponentGraph, acts: dict[str, Tensor]) -> Tensor:
    """Each sender's write into the residual stream, ``[n, pos, n_senders, d_model]``."""
    adapter = adapt(model)
    per_head: dict[int | None, Tensor] = {
        layer: adapter.head_outputs(layer, acts[f"blocks.{layer}.attn.hook_z"])
        for layer in range(graph.n_layers)
    }
    outs = [
        per_head[s.layer][:, :, s.head] if s.kind == "head" else acts[s.hook] for s in graph.senders
    ]
    return torch.stack(outs, dim=2)


def _receiver_hook(model: TLModel, r: Any) -> tuple[str, int | None]:
    """The residual-width input a receiver reads, and its head (None: not per head)."""
    if r.kind == "logits":
        return adapt(model).final_hook, None
    return r.input_hook, r.head if r.spec.per_head else None


@recorded
def edge_attribution(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    direction: str = "denoise",
    method: str = "eap",
    steps: int = 5,
    grid: str = "midpoint",
    logits_at: int | Sequence[int] | None = None,
) -> PatchResult:
    """Estimated metric after patching each edge of the component graph alone.

    ``values[:, e]`` ≈ the metric when only edge e carries the source value (what
    :func:`edge_patch` measures exactly). ``method``: ``"eap"`` or ``"eap-ig"``.
    """
    if check_choice(method, ("eap", "eap-ig"), "method") == "eap-ig":
        check_int(steps, "steps", minimum=1)
    check_choice(grid, GRIDS, "grid")
    graph = ComponentGraph(model)
    clean_t, corrupt_t, _ = _prepare(model, clean, corrupt, "corrupt", direction)
    base_t, source_t = (corrupt_t, clean_t) if direction == "denoise" else (clean_t, corrupt_t)
    sender_names = sorted({s.hook for s in graph.senders})
    recv = graph.receivers
    recv_hooks = sorted({_receiver_hook(model, r)[0] for r in recv})
    embeds = adapt(model).embed_hooks
    ig = method == "eap-ig"
    logit_pos = None if logits_at is None else _logit_positions(logits_at, clean_t.shape[1])
    check_metric_first(
        model,
        metric,
        clean_t.shape[0],
        clean_t.shape[1] if logit_pos is None else len(logit_pos),
        base_t,
    )
    with adapt(model).split_inputs():
        src_vals, src_acts = _source_run(
            model, source_t, metric, sorted({*sender_names, *embeds}), logit_pos
        )
        base_vals, base_acts, grads = _grads(
            model,
            base_t,
            metric,
            sorted({*recv_hooks, *sender_names}),
            src_acts,
            ig,
            steps,
            logit_pos,
            frozenset(recv_hooks) - {adapt(model).final_hook},
            grid=grid,
        )
    delta = _sender_outputs(model, graph, src_acts) - _sender_outputs(model, graph, base_acts)
    g = []
    for r in recv:
        hook, head = _receiver_hook(model, r)
        g.append(grads[hook] if head is None else grads[hook][:, :, head])
    g_all = torch.stack(g, dim=2)  # [n, pos, n_receivers, d_model]
    scores = torch.einsum("bpsd,bprd->bsr", delta.float(), g_all.float())  # [n, S, R]
    s_idx = {s.name: i for i, s in enumerate(graph.senders)}
    r_idx = {r.name: i for i, r in enumerate(recv)}
    edges = graph.edges
    est = torch.stack([scores[:, s_idx[s.name], r_idx[r.name]] for s, r in edges], dim=1)
    values = base_vals.view(-1, 1).to(est.device) + est
    clean_vals, corrupt_vals = (
        (src_vals, base_vals) if direction == "denoise" else (base_vals, src_vals)
    )
    return PatchResult(
        values.detach().cpu(),
        ("edge",),
        {"edge": [f"{s.name}->{r.name}" for s, r in edges]},
        metric_name(metric),
        "edge_attribution" if not ig else "edge_attribution_ig",
        "edges",
        "corrupt",
        direction,
        clean_vals.cpu(),
        corrupt_vals.cpu(),
        {
            "model": model_fingerprint(model),
            "method": method,
            "steps": steps if ig else 1,
            "grid": grid if ig else None,
        },
    )


def correlation(a: PatchResult, b: PatchResult) -> float:
    """Pearson correlation of two results' cell means (same cells, e.g. estimate vs exact)."""
    if a.shape != b.shape or a.axes != b.axes:
        raise ValueError(f"results differ in layout: {a.axes}{a.shape} vs {b.axes}{b.shape}")
    x, y = a.mean.flatten().double(), b.mean.flatten().double()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])
