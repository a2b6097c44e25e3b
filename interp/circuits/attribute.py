"""Attribution graphs: direct effects between features, errors, tokens and logits.

In the local replacement model with the MLP outputs cut (each a leaf: features' decoder writes,
``b_dec`` and the error term; a skip transcoder's skip term stays a live linear path), every
target — a feature's pre-activation, or a target logit minus the mean logit — is linear in the
sources. So the edge source → target is the source's vector (activation · decoder row, error
vector, embedding) dotted with the gradient of the target at the source's layer and position.
Gradients come from batched backward passes: the prompt is replicated ``batch_size`` times and
each row gets a different target's output gradient. Rows are computed for the logits first,
then for features in order of their influence on the logits so far (re-ranked every
``update_interval`` batches), up to ``max_feature_nodes``, as circuit-tracer does; the edge
matrix is ``[max_feature_nodes + n_logits, all nodes]``, never all features × all features.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.circuits.graph import AttributionGraph
from interp.circuits.influence import partial_influence
from interp.circuits.replacement import (
    EMBED_HOOK,
    LocalReplacement,
    check_prompt,
    check_transcoders,
)

__all__ = ["attribute", "salient_logits", "target_tokens"]


def salient_logits(
    logits: Tensor, max_n_logits: int = 10, desired_logit_prob: float = 0.95
) -> tuple[Tensor, Tensor]:
    """The top tokens until their cumulative probability reaches ``desired_logit_prob`` (at most
    ``max_n_logits``), and their probabilities.

    >>> idx, p = salient_logits(torch.tensor([0.0, 3.0, 2.9, -5.0]), desired_logit_prob=0.5)
    >>> idx.tolist()
    [1]
    """
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_idx = probs.topk(min(max_n_logits, probs.shape[-1]))
    cutoff = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(desired_logit_prob))) + 1
    return top_idx[:cutoff], top_p[:cutoff]


def target_tokens(model: Any, targets: Sequence[str | int]) -> list[int]:
    """Token ids of ``targets`` (ids, or strings that must each be exactly one token)."""
    d_vocab = int(model.cfg.d_vocab)
    out = []
    for t in targets:
        if isinstance(t, int) and not isinstance(t, bool):
            if not 0 <= t < d_vocab:
                raise ValueError(f"target token id {t} is outside the vocabulary (0–{d_vocab - 1})")
            out.append(t)
            continue
        if not isinstance(t, str):
            raise TypeError(f"a target is a token string or id; got {type(t).__name__}")
        if getattr(model, "tokenizer", None) is None:
            raise ValueError(f"target {t!r}: this model has no tokenizer; give token ids instead")
        ids = model.to_tokens(t, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = [model.tokenizer.decode([i]) for i in ids]
            raise ValueError(
                f"target {t!r} is {len(ids)} tokens {pieces}, not one: a logit node is one token "
                "(mind the leading space, e.g. ' Paris')"
            )
        out.append(int(ids[0]))
    return out


def _tokens(model: Any, prompt: str | Tensor | Sequence[int]) -> Tensor:
    if isinstance(prompt, str):
        if getattr(model, "tokenizer", None) is None:
            raise ValueError("this model has no tokenizer: pass the prompt as token ids")
        return model.to_tokens(prompt)
    return torch.as_tensor(prompt, dtype=torch.long)


class _Sources:
    """Per-layer tables to turn leaf gradients into edge rows over all source nodes."""

    def __init__(self, rep: LocalReplacement):
        self.rep = rep
        n_pos, n_layers = rep.n_pos, rep.spec.n_layers
        feats, vals = [], []
        for layer, acts in rep.acts.items():
            pos, f = acts.nonzero(as_tuple=True)
            feats.append(torch.stack([torch.full_like(pos, layer), pos, f], 1))
            vals.append(acts[pos, f])
        self.features = torch.cat(feats) if feats else torch.zeros(0, 3, dtype=torch.long)
        self.values = torch.cat(vals) if vals else torch.zeros(0)
        self.n_features = len(self.features)
        self.n_nodes = self.n_features + n_layers * n_pos + n_pos
        # Feature columns per layer, padded per position: edge = g[b, p] · (a · W_dec[f]).
        self.padded: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        for layer in rep.acts:
            rows = (self.features[:, 0] == layer).nonzero()[:, 0]
            pos, f = self.features[rows, 1], self.features[rows, 2]
            counts = torch.bincount(pos, minlength=n_pos)
            slot = torch.arange(len(rows)) - (counts.cumsum(0) - counts)[pos]  # rows are pos-sorted
            width = int(counts.max()) if len(rows) else 0
            dec = torch.zeros(n_pos, width, rep.spec.d_model)
            w = rep.transcoders[layer].W_dec.detach().float()
            dec[pos, slot] = self.values[rows, None] * w[f]
            self.padded[layer] = (dec, pos, slot, rows)
        self.encoders = {
            layer: (tc.W_enc.detach().float() * tc.input_scale.float())
            for layer, tc in rep.transcoders.items()
        }

    def rows(self, g_embed: Tensor, g_mlp: Mapping[int, Tensor]) -> Tensor:
        """Edge rows ``[batch, n_nodes]`` (features, errors, tokens) from the leaf gradients."""
        rep = self.rep
        b, n_pos = g_embed.shape[0], rep.n_pos
        out = g_embed.new_zeros(b, self.n_nodes)
        for layer, (dec, pos, slot, rows) in self.padded.items():
            if len(rows):
                per = torch.einsum("bpd,pkd->bpk", g_mlp[layer], dec)
                out[:, rows] = per[:, pos, slot]
        e0 = self.n_features
        for layer in range(rep.spec.n_layers):
            err = rep.errors[layer].float()
            out[:, e0 + layer * n_pos : e0 + (layer + 1) * n_pos] = torch.einsum(
                "bpd,pd->bp", g_mlp[layer], err
            )
        t0 = e0 + rep.spec.n_layers * n_pos
        out[:, t0 : t0 + n_pos] = torch.einsum("bpd,pd->bp", g_embed, rep.embed.float())
        return out


def attribute(
    model: Any,
    prompt: str | Tensor | Sequence[int],
    transcoders: Mapping[int, Any],
    *,
    targets: Sequence[str | int] | None = None,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    batch_size: int = 32,
    max_feature_nodes: int | None = 1024,
    update_interval: int = 4,
    skip_position_0: bool = True,
) -> AttributionGraph:
    """The attribution graph of ``prompt`` with ``transcoders`` ``{layer: saes.Transcoder}``.

    ``targets``: logit nodes as token strings (one token each) or ids; by default the top logits
    up to ``desired_logit_prob`` (at most ``max_n_logits``). ``max_feature_nodes`` caps the
    feature rows (None: every active feature — memory then grows with its square).
    ``skip_position_0``: no feature nodes at position 0 (the attention sink); each layer's MLP
    output there is its error node whole, as in :class:`LocalReplacement`.
    """
    tokens = check_prompt(model, _tokens(model, prompt))
    transcoders = check_transcoders(model, transcoders)
    wanted = None if targets is None else target_tokens(model, targets)
    if batch_size < 1 or (max_feature_nodes is not None and max_feature_nodes < 0):
        raise ValueError("batch_size must be ≥ 1 and max_feature_nodes ≥ 0 (or None)")
    t_start = time.perf_counter()
    rep = LocalReplacement.from_prompt(model, tokens, transcoders, skip_position_0=skip_position_0)
    last = rep.logits[-1]
    probs = torch.softmax(last.float(), -1)
    if wanted is None:
        logit_idx, logit_p = salient_logits(last, max_n_logits, desired_logit_prob)
    else:
        logit_idx = torch.tensor(wanted)
        logit_p = probs[logit_idx]
    src = _Sources(rep)
    n_feat, n_logits = src.n_features, len(logit_idx)
    n_sel = n_feat if max_feature_nodes is None else min(max_feature_nodes, n_feat)

    # One forward with the prompt replicated; every backward pass reuses its graph.
    n_layers = rep.spec.n_layers
    dtype = rep.embed.dtype
    embed_leaf = rep.embed.expand(batch_size, -1, -1).clone().requires_grad_(True)
    leaves = {}
    for layer in range(n_layers):
        base = rep.errors[layer].clone()
        if layer in rep.acts:
            tc = transcoders[layer]
            base = base + (tc.decode(rep.acts[layer]) * rep.live_mask(dtype)).to(dtype)
        leaves[layer] = base.expand(batch_size, -1, -1).clone().requires_grad_(True)
    inputs: dict[int, Tensor] = {}
    fwd = [(EMBED_HOOK, lambda act, hook: embed_leaf.to(act.dtype))]
    fwd += rep.freeze_hooks() + rep.mlp_hooks(leaves=leaves, inputs=inputs)
    with torch.enable_grad():
        final = rep.run_to_final(fwd, batch_size)
        logits = rep.unembed_last(final).float()  # [batch, d_vocab]
        demeaned = logits - logits.mean(-1, keepdim=True)
    sources = [embed_leaf, *(leaves[i] for i in range(n_layers))]
    passes = 0

    def backward(kind: str, items: Tensor) -> Tensor:
        """Edge rows for a batch of targets: logit indices, or active-feature indices."""
        nonlocal passes
        n = len(items)
        outs: list[Tensor] = []
        grads: list[Tensor] = []
        if kind == "logit":
            g = torch.zeros_like(demeaned)
            g[torch.arange(n), logit_idx[items]] = 1.0
            outs, grads = [demeaned], [g]
        else:
            for layer in sorted({int(x) for x in src.features[items, 0]}):
                sel = (src.features[items, 0] == layer).nonzero()[:, 0]
                x = inputs[layer]
                g = torch.zeros_like(x)
                pos, f = src.features[items[sel], 1], src.features[items[sel], 2]
                g[sel, pos] = src.encoders[layer][:, f].T.to(x.dtype)
                outs.append(x)
                grads.append(g)
        raw = torch.autograd.grad(outs, sources, grads, retain_graph=True, allow_unused=True)
        passes += 1
        got = [torch.zeros_like(s) if g is None else g for g, s in zip(raw, sources, strict=True)]
        return src.rows(got[0].float(), {i: got[i + 1].float() for i in range(n_layers)})[:n]

    edges = torch.zeros(n_sel + n_logits, src.n_nodes)
    row_node = torch.zeros(n_sel + n_logits, dtype=torch.long)
    for i in range(0, n_logits, batch_size):
        items = torch.arange(i, min(i + batch_size, n_logits))
        edges[items] = backward("logit", items)
        row_node[items] = src.n_nodes + items  # logit nodes follow every source node
    visited = torch.zeros(n_feat, dtype=torch.bool)
    st = n_logits
    while st - n_logits < n_sel:
        if n_sel == n_feat:
            pending = torch.arange(n_feat)
        else:
            infl = partial_influence(edges[:st], logit_p, row_node[:st], src.n_nodes)
            rank = infl[:n_feat].argsort(descending=True)
            pending = rank[~visited[rank]][
                : min(update_interval * batch_size, n_sel - (st - n_logits))
            ]
        for i in range(0, len(pending), batch_size):
            items = pending[i : i + batch_size]
            edges[st : st + len(items)] = backward("feature", items)
            row_node[st : st + len(items)] = items
            visited[items] = True
            st += len(items)

    selected = visited.nonzero()[:, 0]
    keep_cols = torch.cat([selected, torch.arange(n_feat, src.n_nodes)])
    n_nodes = len(keep_cols) + n_logits
    adjacency = torch.zeros(n_nodes, n_nodes)
    feat_rows = edges[n_logits:][row_node[n_logits:].argsort()]  # selected features, in order
    adjacency[: len(selected), : len(keep_cols)] = feat_rows[:, keep_cols]
    adjacency[-n_logits:, : len(keep_cols)] = edges[:n_logits][:, keep_cols]
    return AttributionGraph(
        tokens=tokens[0].clone(),
        active_features=src.features,
        activation_values=src.values.float(),
        selected_features=selected,
        adjacency=adjacency,
        logit_tokens=logit_idx.clone(),
        logit_probabilities=logit_p.float(),
        n_layers=n_layers,
        transcoder_layers=sorted(transcoders),
        backward_passes=passes,
        seconds=time.perf_counter() - t_start,
        model=model,
    )
