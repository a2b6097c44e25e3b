"""Attention patterns per head, with token labels, for circuit dashboards to link to.

>>> view = attention_view(model, "When Mary and John went to the store, John gave", layers=[0, 1])
>>> save_html("attn.html", view)      # a head selector; the URL #attn-L1H3 opens head L1H3
>>> view.figure(1, 3)                 # one head as a plotly Figure

In a page, ``mechscope.showHead(layer, head)`` switches every attention view that has the head
(a circuit view's click handler calls it), and links to ``#attn-L{layer}H{head}`` do the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interp.viz import assets
from interp.viz.page import Page
from interp.viz.text import plotly_text
from interp.viz.views import View

__all__ = ["AttentionView", "attention_view"]


class AttentionView(View):
    """Attention patterns ``[head, query_pos, key_pos]`` of some heads on one prompt."""

    def __init__(
        self,
        tokens: Sequence[str],
        heads: Sequence[tuple[int, int]],
        patterns: Float[Tensor, "head query_pos key_pos"],
        *,
        title: str = "Attention patterns",
    ):
        n = len(tokens)
        if patterns.ndim != 3 or patterns.shape[0] != len(heads) or patterns.shape[1:] != (n, n):
            raise ValueError(
                f"patterns must be [heads={len(heads)}, query_pos={n}, key_pos={n}] for "
                f"{len(heads)} heads and {n} tokens; got shape {tuple(patterns.shape)}"
            )
        self.tokens, self.heads = [str(t) for t in tokens], [(int(a), int(b)) for a, b in heads]
        self.patterns, self.title = patterns.detach().float().cpu(), title

    def pattern(self, layer: int, head: int) -> Float[Tensor, "query_pos key_pos"]:
        try:
            return self.patterns[self.heads.index((layer, head))]
        except ValueError:
            raise KeyError(
                f"head L{layer}H{head} is not in this view; it holds "
                + ", ".join(f"L{a}H{b}" for a, b in self.heads[:12])
                + (" ..." if len(self.heads) > 12 else "")
            ) from None

    def figure(self, layer: int, head: int) -> Any:
        """One head's pattern as a plotly heatmap (token labels escaped for plotly)."""
        import plotly.graph_objects as go

        z = self.pattern(layer, head)
        labels = [f"{i}: {plotly_text(_show(t))}" for i, t in enumerate(self.tokens)]
        fig = go.Figure(
            go.Heatmap(
                z=z.numpy(),
                colorscale=[[0, "#ffffff"], [0.25, "#9ecae1"], [1, "#08306b"]],
                zmin=0,
                zmax=1,
                hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>",
            )  # fmt: skip
        )
        ticks = list(range(len(labels)))
        fig.update_layout(
            title=f"Attention pattern L{layer}H{head}",
            xaxis={"tickvals": ticks, "ticktext": labels, "tickangle": -60, "title": "key"},
            yaxis={"tickvals": ticks, "ticktext": labels, "autorange": "reversed", "title": "query"},
            width=720, height=680,
        )  # fmt: skip
        return fig

    def render(self, page: Page) -> str:
        page.use_plotly()
        page.add_script("attention", assets.ATTENTION_JS)
        root = page.new_id("attention")
        data = {
            "tokens": self.tokens,
            "heads": [list(h) for h in self.heads],
            "patterns": [[[round(float(v), 4) for v in row] for row in p] for p in self.patterns],
        }
        anchors = "".join(f'<a id="attn-L{a}H{b}"></a>' for a, b in self.heads)
        return (
            f'<div id="{root}" data-mechscope="attention">{anchors}</div>'
            + page.json_block(f"{root}-data", data)
            + page.init(f"mechscope.attention({json.dumps(root)});")
        )


def _show(token: str) -> str:
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5")


def attention_view(
    model: Any,
    tokens: str | Tensor | Sequence[int],
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    title: str | None = None,
) -> AttentionView:
    """Run ``model`` once on one prompt and keep the attention patterns of ``heads``
    ((layer, head) pairs; default every head of ``layers``, default every layer)."""
    from interp.cache import cache_activations

    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if heads is None:
        layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
        heads = [(la, h) for la in layer_ids for h in range(n_heads)]
    heads = [(int(a), int(b)) for a, b in heads]
    bad = [f"L{a}H{b}" for a, b in heads if not (0 <= a < n_layers and 0 <= b < n_heads)]
    if bad or not heads:
        raise ValueError(
            f"heads {bad[:5] or '(none)'} are not in this model: it has layers 0..{n_layers - 1} "
            f"and heads 0..{n_heads - 1} per layer"
        )
    if isinstance(tokens, str):
        toks = model.to_tokens(tokens)
    else:
        toks = torch.as_tensor(tokens).long()
        toks = toks[None] if toks.ndim == 1 else toks
    if toks.ndim != 2 or toks.shape[0] != 1:
        raise ValueError(
            f"one prompt at a time: tokens must be [pos] or [1, pos], got {tuple(toks.shape)}"
        )
    names = sorted({f"blocks.{a}.attn.hook_pattern" for a, _ in heads})
    cache = cache_activations(model, toks, names, dtype=torch.float32, device="cpu")
    patterns = torch.stack([cache[f"blocks.{a}.attn.hook_pattern"][0, b] for a, b in heads])
    if getattr(model, "tokenizer", None) is not None:
        labels = [str(model.tokenizer.decode([int(t)])) for t in toks[0]]
    else:
        labels = [f"#{int(t)}" for t in toks[0]]
    return AttentionView(labels, heads, patterns, title=title or "Attention patterns")
