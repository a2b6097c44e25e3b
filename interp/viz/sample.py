"""A tiny model, store and SAE built in code, with hostile token strings: for tests and examples.

Token 7 decodes to ``<script>alert(1)</script>`` and token 8 to ``</script><b>x</b>&amp;``, so
every page built from this data checks that model strings are shown as text, never run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

__all__ = ["HOSTILE", "ToySetup", "ToyTokenizer", "toy_setup"]

HOSTILE = {7: "<script>alert(1)</script>", 8: "</script><b>x</b>&amp;", 9: "\n"}
_WORDS = (
    " the", " a", " king", " queen", " love", " night", " day", " sword", " crown", " is",
    " and", " of", " my", " lord", " sweet", " death", " heart", " eyes", " fair", " foul",
    ",", ".", "!", "?", " to", " be", " not", " thou", " thee", " art", " hath", " doth",
    " moon", " sun", " star", " fool", " war", " peace", " blood", " tears", " grave",
)  # fmt: skip


class ToyTokenizer:
    """``decode([id])``: a word, or one of the hostile strings in :data:`HOSTILE`."""

    def decode(self, ids: list[int]) -> str:
        return "".join(HOSTILE.get(int(i), _WORDS[int(i) % len(_WORDS)]) for i in ids)


class ToySetup(NamedTuple):
    model: Any
    store: Any
    sae: Any
    tokenizer: ToyTokenizer


def toy_model(seed: int = 0) -> Any:
    """A 2-layer random model (d_model 16, 4 heads, vocabulary 50): a HookedTransformer where
    TransformerLens has one, else a GPT-2 TransformerBridge of the same sizes (TL 4)."""
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:  # TL 4 removed them
        return _toy_bridge(seed)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
    )  # fmt: skip
    return HookedTransformer(cfg).eval()


def _toy_bridge(seed: int) -> Any:
    from interp.random_models import random_model

    bridge = random_model(
        "bridge", n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", seed=seed,
    )  # fmt: skip
    bridge.tokenizer = None  # as the HookedTransformer: token ids in, ToyTokenizer for labels
    return bridge


def toy_setup(
    directory: str | os.PathLike[str],
    *,
    d_sae: int = 24,
    n_contexts: int = 16,
    context_size: int = 12,
    seed: int = 0,
) -> ToySetup:
    """A store of ``n_contexts`` random contexts (each holding tokens 7, 8 and 9) at
    ``blocks.1.hook_resid_post`` and a ReLU SAE whose biases make latent j fire on about 0.5%
    (j = 0) to 70% (the last) of the rows and latent 3 dead. The biases are quantiles of the
    store's own pre-activations, so the spread is the same whatever the backend's activation
    scale (a fixed bias range left a GPT-2 bridge's latents all dead or all on)."""
    from interp.store import ActivationStore
    from saes.config import SAEConfig
    from saes.sae import SAE

    model = toy_model(seed)
    g = torch.Generator().manual_seed(seed)
    contexts = []
    for _ in range(n_contexts):
        ctx = torch.randint(0, 50, (context_size,), generator=g)
        ctx[torch.randperm(context_size, generator=g)[:3]] = torch.tensor([7, 8, 9])
        contexts.append(ctx)
    store = ActivationStore.write(
        Path(directory), model, "blocks.1.hook_resid_post", contexts,
        context_size=context_size, shard_tokens=context_size * 5,
    )  # fmt: skip
    sae = SAE(SAEConfig(d_in=16, d_sae=d_sae, activation="relu"), seed=seed)
    rows: Any = store.batches(256, seed=0)  # activations only: an iterator of tensors
    x = torch.cat(list(rows))
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc
        q = torch.linspace(0.995, 0.3, d_sae, dtype=pre.dtype)
        sae.b_enc.copy_(-torch.stack([pre[:, j].quantile(q[j]) for j in range(d_sae)]))
        if d_sae > 3:
            sae.b_enc[3] = -1e3
    return ToySetup(model, store, sae, ToyTokenizer())
