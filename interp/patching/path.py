"""Exact path patching (Wang et al., 2022): the effect of senders through chosen receivers only.

For each sender group, two forwards (batched over all groups at once):

1. **Sender run.** The base prompts, with every attention head's output (``hook_z``) and every
   MLP's output frozen to its base value, except the senders, which take the source value.
   Receiver MLPs are left free so their outputs reflect their patched inputs. Because everything
   else is frozen, the residual stream differs from the base run only by the senders' direct
   contributions; the receivers' inputs (``hook_q``/``hook_k``/``hook_v``, an MLP's output, the
   final residual) are recorded. That is ``freeze="heads+mlps"`` (the default): a path is a
   direct edge of the component graph, the semantics ``edge_patch`` and the EAP estimates use.
   ``freeze="heads"`` is Wang et al.'s (IOI): only the heads are frozen and every MLP is
   recomputed, so a sender's effect that passes through MLPs on its way to a receiver counts
   as part of its path.
2. **Receiver run.** The base prompts with just the receivers set to the recorded values (the
   final residual receiver adds its recorded difference to ``blocks.{L-1}.hook_resid_post``); the
   rest of the model runs freely downstream of them. The metric is read here.

No linearisation: this is the exact counterfactual. Base/source follow ``direction``: ``noise``
(the default, as in the IOI paper) runs the clean prompts with the senders' corrupted values.

**The defaults of** ``path_patch`` **and** ``edge_patch`` **differ on purpose.** ``path_patch``
noises (Wang et al.: how much the clean behaviour loses when a path carries corrupted values);
``edge_patch`` denoises, because it exists to check ``edge_attribution``, whose EAP estimates
(Syed et al.; Hanna et al.) are of restoring clean values into the corrupted run, and
``patch_sweep`` denoises too. Pass ``direction=`` to either to choose; every result records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.cache import cache_activations
from interp.core.forward import MAX_TOKENS, rows_for
from interp.core.interventions import FrozenBlock, freeze_senders, node_index
from interp.core.nodes import ComponentGraph, Node
from interp.hooks import TLModel, hook_layer, hooks
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
from interp.recipe import recorded
from interp.validate import check_choice, check_int

__all__ = ["FREEZE", "edge_patch", "path_patch"]

FREEZE = ("heads+mlps", "heads")

SenderSpec = str | Node | Sequence[str | Node]


def _sender_groups(
    graph: ComponentGraph, senders: Any
) -> tuple[list[list[Node]], tuple[str, ...], dict[str, list[str]]]:
    """Cells (each a group of senders patched together), result axes and labels."""
    if isinstance(senders, str) and senders == "heads":
        groups = [[s] for s in graph.senders if s.kind == "head"]
        labels = {
            "layer": [f"L{i}" for i in range(graph.n_layers)],
            "head": [f"H{h}" for h in range(graph.n_heads)],
        }
        return groups, ("layer", "head"), labels
    if isinstance(senders, (str, Node)):
        senders = [senders]
    if not senders:
        raise ValueError("senders is empty: name at least one sender node (e.g. 'L9H6')")
    groups = []
    for item in senders:
        group = [item] if isinstance(item, (str, Node)) else list(item)
        groups.append([graph.node(s) for s in group])
    for g in groups:
        bad = [s.name for s in g if not s.is_sender]
        if bad:
            raise ValueError(
                f"{bad} are receivers, not senders; senders are embed, pos_embed, heads "
                "('L1H7') and MLPs ('MLP3')"
            )
    names = ["+".join(s.name for s in g) for g in groups]
    return groups, ("sender",), {"sender": names}


def _check_receivers(graph: ComponentGraph, receivers: Any, n_pos: int) -> list[Node]:
    recv = [graph.node(r, n_pos=n_pos) for r in graph_list(receivers)]
    if not recv:
        raise ValueError("receivers is empty: name at least one (e.g. 'L9H9.q' or 'logits')")
    bad = [r.name for r in recv if not r.is_receiver]
    if bad:
        raise ValueError(
            f"{bad} are senders, not receivers; receivers are a head's input ('L9H9.q', "
            "'.k', '.v'), an MLP's input ('MLP3.in') or 'logits'"
        )
    return recv


def graph_list(x: Any) -> list[Any]:
    return [x] if isinstance(x, (str, Node)) else list(x)


@recorded
def path_patch(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    senders: SenderSpec | Sequence[Sequence[str | Node]] | str,
    receivers: str | Node | Sequence[str | Node],
    ablation: str = "corrupt",
    direction: str = "noise",
    reference: Any = None,
    max_tokens: int = MAX_TOKENS,
    freeze: str = "heads+mlps",
) -> PatchResult:
    """Metric after patching each sender group's paths into ``receivers`` (exactly).

    Args:
        senders: a node (``"L9H6"``), a list of nodes (each its own cell), a list containing
            lists (a group patched together is one cell), or ``"heads"`` (every head, one cell
            each, laid out as layer × head). ``@pos`` narrows a sender to one position.
        receivers: one or more of ``"L{l}H{h}.q|k|v"`` (``L{l}G{g}.k|v`` under GQA),
            ``"MLP{l}.in"``, ``"logits"``; ``@pos`` narrows a receiver to one position.
        ablation, direction, reference: as in :func:`interp.patching.patch_sweep`.
        freeze: what the sender run holds at base: ``"heads+mlps"`` (direct paths only, the
            component graph's edges; the default) or ``"heads"`` (Wang et al.: MLPs recomputed,
            so paths through MLPs count).

    A sender with no path to any receiver (not upstream of one) is an error when named; within
    ``"heads"`` its cell is exactly the base run's value, which is what its path patch is.
    """
    graph = ComponentGraph(model)
    check_int(max_tokens, "max_tokens", minimum=1)
    check_choice(freeze, FREEZE, "freeze")
    clean_t = as_tokens(model, clean, "clean")
    corrupt_t = None if corrupt is None else as_tokens(model, corrupt, "corrupt")
    check_pair(clean_t, corrupt_t)
    check_ablation(ablation, direction, corrupt_t)
    reference = reference_tokens(model, reference, clean_t, ablation)
    n, n_pos = clean_t.shape
    recv = _check_receivers(graph, receivers, n_pos)
    groups, axes, labels = _sender_groups(graph, senders)
    for g in groups:
        for s in g:
            if s.pos is not None and not 0 <= s.pos < n_pos:
                raise IndexError(f"sender {s.name}: position out of range for {n_pos} positions")
    last = max(r.order for r in recv)
    if axes == ("sender",):
        for g in groups:
            down = [s.name for s in g if s.order >= last]
            if down and all(s.order >= r.order for s in g for r in recv):
                raise ValueError(
                    f"sender(s) {down} are not upstream of any receiver in "
                    f"{[r.name for r in recv]}: a path runs from an earlier component to a later "
                    "one (heads of layer l reach the inputs of layers > l, and MLP l's input)"
                )

    run = _PathRun(model, graph, clean_t, corrupt_t, metric, ablation, direction, reference)
    run.freeze = freeze
    active = [[s for s in g if any(s.order < r.order for r in recv)] for g in groups]
    values = run.values([(g, recv) for g in active], max_tokens)
    clean_vals, corrupt_vals = run.clean_vals, run.corrupt_vals
    forwards = run.forwards

    shape = tuple(len(labels[a]) for a in axes)
    return PatchResult(
        values.reshape(values.shape[0], *shape),
        axes,
        labels,
        metric_name(metric),
        "path_patch",
        "paths",
        ablation,
        direction,
        clean_vals.cpu(),
        None if corrupt_vals is None else corrupt_vals.cpu(),
        {
            "model": model_fingerprint(model),
            "receivers": [r.name for r in recv],
            "forwards": forwards,
            "freeze": freeze,
        },
    )


class _PathRun:
    """Baselines and base/source activations shared by every cell of a path-patching call."""

    def __init__(
        self,
        model: TLModel,
        graph: ComponentGraph,
        clean_t: Tensor,
        corrupt_t: Tensor | None,
        metric: Metric,
        ablation: str,
        direction: str,
        reference: Any,
    ):
        self.model, self.graph, self.metric = model, graph, metric
        self.n = n = clean_t.shape[0]
        check_metric_first(model, metric, n, clean_t.shape[1], clean_t)
        base_t, source_t = (clean_t, corrupt_t) if direction == "noise" else (corrupt_t, clean_t)
        assert base_t is not None
        self.base_t = base_t
        with torch.no_grad():
            self.clean_vals = checked_metric(metric, model(clean_t), n, clean_t)
            self.corrupt_vals = (
                None
                if corrupt_t is None
                else checked_metric(metric, model(corrupt_t), n, corrupt_t)
            )
            names = _activation_names(model, graph)
            base_cache = cache_activations(model, base_t, names)
            self.base = {k: base_cache[k] for k in names}
            if ablation == "mean":
                ref_cache = cache_activations(model, reference, names)
                self.source = {
                    k: ref_cache[k].mean(0, keepdim=True).expand_as(self.base[k]) for k in names
                }
            elif ablation == "zero":
                self.source = {k: torch.zeros_like(v) for k, v in self.base.items()}
            else:
                assert source_t is not None
                src_cache = cache_activations(model, source_t, names)
                self.source = {k: src_cache[k] for k in names}
        self.base_vals = self.clean_vals if direction == "noise" else self.corrupt_vals
        self.forwards = 0
        self.freeze = "heads+mlps"

    def values(self, cells: list[tuple[list[Node], list[Node]]], max_tokens: int) -> Tensor:
        """Per-prompt metric ``[n, len(cells)]``; a cell without senders is the base run."""
        n = self.n
        out = torch.empty(self.clean_vals.shape[0], len(cells))
        chunk = max(1, rows_for(max_tokens, self.base_t.shape[1]) // n)
        for start in range(0, len(cells), chunk):
            idx = list(range(start, min(start + chunk, len(cells))))
            todo = [i for i in idx if cells[i][0]]
            for i in idx:
                if not cells[i][0]:
                    assert self.base_vals is not None
                    out[:, i] = self.base_vals.cpu()
            if not todo:
                continue
            with torch.no_grad():
                logits = _two_runs(
                    self.model,
                    self.graph,
                    self.base_t,
                    self.base,
                    self.source,
                    [cells[i] for i in todo],
                    recompute_mlps=self.freeze == "heads",
                )
            self.forwards += 2
            for j, i in enumerate(todo):
                out[:, i] = checked_metric(
                    self.metric, logits[j * n : (j + 1) * n], n, self.base_t
                ).cpu()
        return out


def _parse_edge(graph: ComponentGraph, edge: Any, n_pos: int) -> tuple[Node, Node]:
    if isinstance(edge, str):
        if "->" not in edge:
            raise ValueError(
                f"an edge is written 'SENDER->RECEIVER' (e.g. 'L0H4->L1H7.k'); got {edge!r}"
            )
        edge = edge.split("->", 1)
    s, r = (graph.node(x.strip() if isinstance(x, str) else x, n_pos=n_pos) for x in edge)
    if not s.is_sender or not r.is_receiver:
        raise ValueError(
            f"edge {s.name}->{r.name}: the first node must be a sender and the second a receiver"
        )
    if s.order >= r.order:
        raise ValueError(
            f"edge {s.name}->{r.name}: the sender is not upstream of the receiver, so no path "
            "connects them"
        )
    return s, r


@recorded
def edge_patch(
    model: TLModel,
    clean: Any,
    corrupt: Any,
    metric: Metric,
    *,
    edges: Sequence[Any] | None = None,
    ablation: str = "corrupt",
    direction: str = "denoise",
    reference: Any = None,
    max_tokens: int = MAX_TOKENS,
) -> PatchResult:
    """Exact path patching of each edge alone (``"L0H4->L1H7.k"`` or ``(sender, receiver)``).

    ``edges=None`` patches every edge of the component graph, one cell each; the result lines
    up with :func:`interp.patching.edge_attribution` for checking the estimates.
    """
    graph = ComponentGraph(model)
    check_int(max_tokens, "max_tokens", minimum=1)
    clean_t = as_tokens(model, clean, "clean")
    corrupt_t = None if corrupt is None else as_tokens(model, corrupt, "corrupt")
    check_pair(clean_t, corrupt_t)
    check_ablation(ablation, direction, corrupt_t)
    reference = reference_tokens(model, reference, clean_t, ablation)
    n_pos = clean_t.shape[1]
    pairs = graph.edges if edges is None else [_parse_edge(graph, e, n_pos) for e in edges]
    if not pairs:
        raise ValueError("edges is empty")
    run = _PathRun(model, graph, clean_t, corrupt_t, metric, ablation, direction, reference)
    values = run.values([([s], [r]) for s, r in pairs], max_tokens)
    return PatchResult(
        values,
        ("edge",),
        {"edge": [f"{s.name}->{r.name}" for s, r in pairs]},
        metric_name(metric),
        "edge_patch",
        "edges",
        ablation,
        direction,
        run.clean_vals.cpu(),
        None if run.corrupt_vals is None else run.corrupt_vals.cpu(),
        {"model": model_fingerprint(model), "forwards": run.forwards},
    )


def _activation_names(model: TLModel, graph: ComponentGraph) -> list[str]:
    return [*graph.sender_hooks, f"blocks.{graph.n_layers - 1}.hook_resid_post"]


def _pos_index(node: Node) -> slice | int:
    return slice(None) if node.pos is None else node.pos


def _two_runs(
    model: TLModel,
    graph: ComponentGraph,
    tokens: Tensor,
    base: dict[str, Tensor],
    source: dict[str, Tensor],
    cells: list[tuple[list[Node], list[Node]]],
    *,
    recompute_mlps: bool = False,
) -> Tensor:
    """Receiver-run logits ``[len(cells) * n, pos, vocab]``, one (senders, receivers) per cell."""
    n, k = tokens.shape[0], len(cells)
    rep = tokens.repeat(k, 1)
    receiver_mlps = {r.layer for _, recv in cells for r in recv if r.kind == "mlp_in"}
    recorded: dict[str, Tensor] = {}
    final = f"blocks.{graph.n_layers - 1}.hook_resid_post"

    def rows(c: int) -> slice:
        return slice(c * n, (c + 1) * n)

    # Step 1: every head and MLP output frozen at base, except the senders'. A receiver MLP's
    # output (from its patched input) is recorded, but only its frozen value flows on: later
    # receivers see direct paths from the senders only. With ``recompute_mlps`` (Wang et al.)
    # only the heads are frozen and every MLP's recomputed output flows on.
    def keep_receiver_mlp(name: str, act: Tensor) -> None:
        if name.endswith("hook_mlp_out") and hook_layer(name) in receiver_mlps:
            recorded[name] = act.clone()

    def source_of(s: Node) -> Any:
        return lambda: source[s.hook][(slice(None), *node_index(s))]

    blocks = [
        FrozenBlock(rows(c), base.__getitem__, None, [(s, source_of(s)) for s in senders])
        for c, (senders, _) in enumerate(cells)
    ]
    free = (lambda name: name.endswith("hook_mlp_out")) if recompute_mlps else None
    fwd = freeze_senders(graph, blocks, before=keep_receiver_mlp, free=free)

    def record(act: Tensor, hook: Any) -> None:
        recorded[hook.name] = act.clone()

    all_recv = [r for _, recv in cells for r in recv]
    want = sorted({r.hook for r in all_recv if r.kind != "logits"})
    if any(r.kind == "logits" for r in all_recv):
        want.append(final)
    to_record = [w for w in want if not w.endswith("hook_mlp_out")]
    with hooks(model, fwd=fwd + [(w, record) for w in to_record]):
        model(rep, return_type=None)

    # Step 2: the base run with only each cell's receivers changed.
    def set_receivers(act: Tensor, hook: Any) -> Tensor:
        out = act.clone()
        got = recorded[hook.name]
        for c, (_, recv) in enumerate(cells):
            for r in recv:
                if r.kind == "logits" or r.hook != hook.name:
                    continue
                p = _pos_index(r)
                if r.kind == "mlp_in":
                    out[rows(c), p] = got[rows(c), p]
                else:
                    out[rows(c), p, r.head] = got[rows(c), p, r.head]
        return out

    def add_direct(act: Tensor, hook: Any) -> Tensor:
        out = act.clone()
        for c, (_, recv) in enumerate(cells):
            for r in recv:
                if r.kind == "logits":
                    p = _pos_index(r)
                    out[rows(c), p] += recorded[final][rows(c), p] - base[final][:, p]
        return out

    fwd2: list[tuple[Any, Any]] = [(h, set_receivers) for h in want if h != final]
    if final in want:
        fwd2.append((final, add_direct))
    with hooks(model, fwd=fwd2):
        return model(rep)
