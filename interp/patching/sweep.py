"""``patch_sweep``: activation patching over every cell of a site, batched.

Denoising (the default) runs the corrupted prompts and restores one clean activation per cell;
noising runs the clean prompts and replaces one activation with its corrupted value, its mean
over a reference set, or zero. The metric maps logits ``[batch, pos, d_vocab]`` to one value per
prompt (``[batch]``), so every cell carries a confidence interval over prompts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.cache import cache_activations
from interp.core.adapter import adapt
from interp.core.forward import keep_into
from interp.core.fused import fused_layers
from interp.core.metric import read_positions
from interp.core.sites import Cell, Site, axis_sizes, enumerate_cells, site_spec
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
    reference_tokens,
)
from interp.patching.result import PatchResult
from interp.patching.runner import PatchRunner
from interp.recipe import recorded
from interp.validate import (
    check_head,
    check_int,
    check_layer,
    check_nonempty,
    check_position,
    check_positions,
)

__all__ = ["first_change", "patch_sweep"]

# Logits held at once while unembedding a sweep's final residuals: 2**23 floats (32 MB in
# float32), so a sweep's memory does not grow with its number of cells.
UNEMBED_FLOATS = 1 << 23


# The keyword argument that restricts each axis.
ARGS = {"layer": "layers", "pos": "positions", "head": "heads", "src_pos": "src_positions"}


def fixed_axes(
    site: Site, over: Sequence[str], restrict: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``over`` plus every axis given one index without being in ``over``, and those axes.

    ``over=("layer", "head"), positions=[-1]`` patches each head at the last position only: the
    sweep runs over (layer, head, pos) and the length-1 ``pos`` axis is squeezed away afterwards.
    """
    fixed = []
    for axis, chosen in restrict.items():
        if chosen is None or axis in over:
            continue
        if axis not in site.axes:
            raise ValueError(
                f"{ARGS[axis]}= was given, but site {site.name!r} has no {axis} axis (its axes: "
                f"{', '.join(site.axes)})"
            )
        vals = _as_list(chosen)
        if len(vals) != 1:
            raise ValueError(
                f"{ARGS[axis]}={vals} names {len(vals)} entries, but {axis!r} is not in "
                f"over={tuple(over)}: add {axis!r} to over to sweep each of them, or give one "
                f"to patch only there"
            )
        fixed.append(axis)
    return (*over, *fixed), tuple(fixed)


def _as_list(chosen: Any) -> list[Any]:
    return [chosen] if isinstance(chosen, int) or not isinstance(chosen, Iterable) else list(chosen)


def _ranges(
    model: TLModel,
    site: Site,
    over: Sequence[str],
    n_pos: int,
    restrict: dict[str, Sequence[int] | int | None],
) -> dict[str, list[int]]:
    """The indices swept on each axis of ``over``: all of them, or the ones asked for."""
    sizes = axis_sizes(model, site, n_pos)
    out: dict[str, list[int]] = {}
    for axis in over:
        chosen = restrict.get(axis)
        if chosen is None:
            out[axis] = list(range(sizes[axis]))
            continue
        vals = check_nonempty(_as_list(chosen), f"{ARGS[axis]}=")
        if axis == "layer":
            out[axis] = [check_layer(v, sizes[axis], negative=True) for v in vals]
        elif axis == "head":
            out[axis] = [check_head(v, sizes[axis], negative=True) for v in vals]
        else:
            what = "position" if axis == "pos" else "source position"
            out[axis] = [check_position(v, sizes[axis], what) for v in vals]
    return out


def _logit_positions(logits_at: int | Sequence[int] | None, n_pos: int) -> list[int]:
    if logits_at is None:
        return list(range(n_pos))
    return check_positions(logits_at, n_pos, "logits_at")


def _ablation_source(
    model: TLModel,
    names: list[str],
    ablation: str,
    base_acts: dict[str, Tensor],
    reference: Tensor | None,
) -> dict[str, Tensor]:
    """What a mean or zero ablation patches in: the reference set's mean, or zeros."""
    if ablation == "zero":
        return {n: torch.zeros_like(base_acts[n]) for n in names}
    assert reference is not None
    cache = cache_activations(model, reference, names)
    return {n: cache[n].mean(0, keepdim=True) for n in names}


@recorded
def patch_sweep(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    site: str,
    over: Sequence[str] = ("layer", "pos"),
    ablation: str = "corrupt",
    direction: str = "denoise",
    reference: Any = None,
    layers: Sequence[int] | int | None = None,
    positions: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    src_positions: Sequence[int] | int | None = None,
    logits_at: int | Sequence[int] | None = None,
    max_tokens: int = 16384,
    fast: bool | None = None,
    features: Any = None,
    transcoders: Any = None,
) -> PatchResult:
    """Patch ``site`` at every cell of ``over`` and measure ``metric`` on the patched logits.

    Args:
        clean, corrupt: token ids ``[batch, pos]`` (or text), paired prompt by prompt.
            ``corrupt`` may be None for mean or zero ablation.
        metric: logits ``[batch, pos, d_vocab]`` → ``[batch]`` (or a scalar, which loses the CIs).
        site: ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn_out``, ``mlp_out``, ``z``,
            ``q``, ``k``, ``v``, ``pattern`` or ``attn_scores``.
        over: axes to index, in the order of the result's dimensions: ``layer`` plus any of
            ``pos``, ``head``, ``src_pos`` (patterns). An axis not listed is patched whole.
        ablation: ``corrupt`` (the paired corrupted prompt), ``mean`` (over ``reference``, default
            the clean batch; per position when the lengths match) or ``zero``.
        direction: ``denoise`` (clean activation into the corrupted run) or ``noise``.
        layers, positions, heads, src_positions: sweep only these indices of an axis. An
            axis given one index but not listed in ``over`` is patched at that index only and
            left out of the result: ``over=("layer", "head"), positions=[-1]`` is a layer × head
            sweep at the last position.
        logits_at: positions the metric reads. When given, the metric gets logits at just
            these positions (``[batch, len(logits_at), d_vocab]``) and the sweep skips the
            unembedding elsewhere; ``None`` gives it every position, but computes them only
            where the metric reads (found by :func:`interp.core.metric.read_positions` on the
            unpatched runs; the others hold the base run's logits). A metric whose choice of
            positions depends on the logits' values may read elsewhere in a patched run than
            in the unpatched ones: give such a metric ``logits_at``.
        max_tokens: rows × positions per batched forward (memory bound).
        fast: force (True) or forbid (False) the block-level fast path; default when supported.
        features, transcoders: with ``site="feature"``, the cells are these transcoder feature
            nodes (``"F3.12@5"``, or an attribution graph's :func:`feature_nodes`), each patched
            through its transcoder's decoder direction at the MLP output
            (:func:`interp.circuits.cells.patch_features`, which takes the other arguments as
            here; ``over`` and the index restrictions do not apply).
    """
    if site == "feature":
        from interp.circuits.cells import patch_features

        return patch_features(
            model,
            clean,
            corrupt,
            metric,
            features=features,
            transcoders=transcoders,
            ablation=ablation,
            direction=direction,
            reference=reference,
            logits_at=logits_at,
            max_tokens=max_tokens,
            fast=fast,
        )
    if features is not None or transcoders is not None:
        raise ValueError(
            f"features= and transcoders= are for site='feature'; site={site!r} patches "
            "activations by site, layer, position and head"
        )
    spec = site_spec(site, over)
    restrict = {"layer": layers, "pos": positions, "head": heads, "src_pos": src_positions}
    over, fixed = fixed_axes(spec, over, restrict)
    check_int(max_tokens, "max_tokens", minimum=1)
    clean_t = as_tokens(model, clean, "clean")
    corrupt_t = None if corrupt is None else as_tokens(model, corrupt, "corrupt")
    check_pair(clean_t, corrupt_t)
    check_ablation(ablation, direction, corrupt_t)
    n, n_pos = clean_t.shape
    ranges = _ranges(model, spec, over, n_pos, restrict)
    logit_pos = _logit_positions(logits_at, n_pos)
    check_metric_first(model, metric, n, len(logit_pos), clean_t)
    ref_t = reference_tokens(model, reference, clean_t, ablation)
    adapter = adapt(model)
    for layer in ranges["layer"]:
        adapter.check_writable(spec.hook_name(layer))
    use_fast = adapter.fast_capable if fast is None else fast
    if use_fast and not adapter.fast_capable:
        raise ValueError(
            "fast=True needs the block-level partial forward (a HookedTransformer with causal "
            f"attention on one device); got {adapter}"
        )

    base_t, source_t = (corrupt_t, clean_t) if direction == "denoise" else (clean_t, corrupt_t)
    assert base_t is not None
    cells, shape = enumerate_cells(over, ranges)
    names = [spec.hook_name(layer) for layer in sorted({c.layer for c in cells})]
    # The base run, block by block: its logits where the metric may read, its keys and values,
    # and the swept site's activations. The other run (the source of a corrupt patch, else just
    # the other end of the scale) gives its logits and, in the same forward, the site's values.
    runner = PatchRunner(
        model, base_t, spec, logit_pos, fast=use_fast, max_tokens=max_tokens, keep=names
    )
    base_logits = runner.base_logits
    base_vals = checked_metric(metric, base_logits, n, base_t)
    other_logits, other_vals, src = None, None, None
    if source_t is not None:
        kept: dict[str, Tensor] = {}
        keep = [(name, keep_into(name, kept)) for name in names] if ablation == "corrupt" else []
        # Fused as the base run is, so values that cannot differ compare equal (first_change).
        with torch.no_grad(), hooks(model, fwd=keep), fused_layers(model):
            other_logits = _sel(model(source_t), logits_at, logit_pos)
        other_vals = checked_metric(metric, other_logits, n, source_t)
        src = kept if ablation == "corrupt" else None
    if src is None:
        src = _ablation_source(model, names, ablation, runner.base_acts, ref_t)
    clean_vals = base_vals if direction == "noise" else other_vals
    assert clean_vals is not None  # denoising reads the clean run as its source
    corrupt_vals = (
        None if corrupt_t is None else (base_vals if direction == "denoise" else other_vals)
    )
    # With every position's logits handed to the metric, compute them only where it reads: it
    # gets the base run's logits with those positions replaced (checked: core.metric).
    lazy = logits_at is None
    others = () if other_logits is None else (other_logits,)
    read = read_positions(metric, base_logits, base_t, n, others) if lazy else logit_pos
    del other_logits, others
    runner.forward.narrow(read)
    buffer = base_logits if lazy else None

    # Where each cell can first change the run (None: nowhere, its value is the base run's,
    # exactly, with no forward): its position, or for a patch over every position the first
    # position where the patched value differs from the base run's.
    starts = [
        first_change(
            src[spec.hook_name(c.layer)], runner.base_acts[spec.hook_name(c.layer)], c, spec.layout
        )
        for c in cells
    ]
    runner.release_base_acts()  # only needed for the check above
    per_prompt = clean_vals.shape[0] == n
    values = torch.empty(n if per_prompt else 1, len(cells))

    def score(idx: list[int], logits: Tensor) -> None:
        for j, i in enumerate(idx):
            if buffer is None:
                values[:, i] = checked_metric(metric, logits[j], n, base_t).cpu()
            else:
                buffer[:, read] = logits[j].to(buffer.dtype)
                values[:, i] = checked_metric(metric, buffer, n, base_t).cpu()

    # Final residuals wait here and are unembedded a bounded chunk of cells at a time; each
    # chunk's logits are scored and dropped, so memory does not grow with the number of cells.
    pending: list[tuple[list[int], Tensor]] = []
    cells_per_unembed = max(1, UNEMBED_FLOATS // (n * len(read) * adapter.spec.d_vocab))

    def flush() -> None:
        idx = [i for ids, _ in pending for i in ids]
        finals = torch.cat([out for _, out in pending])  # [cells, n, n_read, d_model]
        pending.clear()
        for c in range(0, len(idx), cells_per_unembed):
            chunk = finals[c : c + cells_per_unembed]
            logits = runner.logits(chunk.flatten(0, 1)).reshape(*chunk.shape[:3], -1)
            score(idx[c : c + cells_per_unembed], logits)

    for i, start in enumerate(starts):
        if start is None:
            values[:, i] = base_vals.cpu()
    todo = [i for i, start in enumerate(starts) if start is not None]
    firsts = [start for start in starts if start is not None]
    for layer, p0, group in runner.groups([cells[i] for i in todo], firsts):
        idx = [todo[j] for j in group]
        out = runner.run(layer, p0, [cells[i] for i in idx], src[spec.hook_name(layer)])
        if not runner.forward.is_residual:
            score(idx, out)
            continue
        pending.append((idx, out))
        if sum(len(i) for i, _ in pending) >= cells_per_unembed:
            flush()
    if pending:
        flush()

    labels = axis_labels(model, clean_t, over, ranges)
    result = PatchResult(
        values.reshape(values.shape[0], *shape),
        tuple(over),
        labels,
        metric_name(metric),
        "patch_sweep",
        site,
        ablation,
        direction,
        clean_vals.cpu(),
        None if corrupt_vals is None else corrupt_vals.cpu(),
        {
            "model": model_fingerprint(model),
            "indices": {a: ranges[a] for a in over},
            "logits_at": None if logits_at is None else logit_pos,
            "forwards": runner.forwards,
            "block_positions": runner.forward.block_positions,
            "fast": runner.fast,
            "cells_skipped_unchanged": sum(start is None for start in starts),
            "metric_reads": None if not lazy else read,
        },
    )
    return result.squeeze(*fixed) if fixed else result


def first_change(source: Tensor, base: Tensor, cell: Cell, layout: str) -> int | None:
    """The first position at which patching ``cell`` writes a value other than the one already
    there (None: it changes nothing). Under causal attention nothing before it can change."""
    # Single indices as length-1 slices, so the position axis keeps its place.
    keep = tuple(slice(i, i + 1) if isinstance(i, int) else i for i in cell.index(layout, 0))
    at = (slice(None), *keep)
    cur = base[at]
    differ = source[at].expand_as(cur) != cur
    if not bool(differ.any()):
        return None
    if cell.pos is not None:
        return cell.pos
    per_pos = differ.movedim(2 if layout == "bhqk" else 1, 0).flatten(1).any(1)
    return int(per_pos.nonzero()[0])


def _sel(logits: Tensor, logits_at: Any, logit_pos: list[int]) -> Tensor:
    return logits if logits_at is None else logits[:, logit_pos]
