"""A one-layer attention-only model with weights set by hand, so its circuit is known.

Inputs are ``[a, b, c, a]`` over ``V`` tokens (a, b, c uniform); the loss is predicting the last
token (``a``) at position 2. Head ``L0H0`` attends from position 2 to position 0 (through the
position embedding alone) and copies ``a`` into the logits (gain 8); head ``L0H1`` attends to
position 1 and pushes ``b`` (gain 2), a distractor. The residual stream has one block each for
the token, the position, and the two heads' outputs; only the head blocks reach the unembedding.

So, by construction: ``logits <- L0H0`` with feature "token 0" is the true hypothesis (its value
comes through ``L0H0.v`` from the token embedding at position 0; its query and key read only
positions); ``logits <- L0H1`` with "token 1" is wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.scrubbing.hypothesis import Hypothesis, claim

if TYPE_CHECKING:  # TransformerLens 4 has neither: imported where the model is built
    from transformer_lens import HookedTransformer

__all__ = ["copy_first_dataset", "copy_first_hypotheses", "copy_first_model", "token_at"]

V = 6  # vocabulary
N_CTX = 4
GAIN_COPY, GAIN_DISTRACT, SHARP = 8.0, 2.0, 30.0


def copy_first_model() -> HookedTransformer:
    """The hand-set model (deterministic: no random initialisation is used).

    A HookedTransformer, so TransformerLens 3 only (TL 4 removed the class; a bridge version
    is future work).
    """
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as err:  # TL 4 raises ImportError for the removed names
        raise ImportError(
            "copy_first_model builds a HookedTransformer, which TransformerLens 4 removed; "
            "use the TransformerLens 3 environment (`make env`)"
        ) from err
    d_model = V + N_CTX + 2 * V
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=d_model,
        n_ctx=N_CTX,
        d_head=V,
        n_heads=2,
        d_vocab=V,
        attn_only=True,
        normalization_type=None,
        positional_embedding_type="standard",
        act_fn=None,  # type: ignore[arg-type]
        d_mlp=None,
        default_prepend_bos=False,
        init_weights=False,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        tok, pos = slice(0, V), slice(V, V + N_CTX)
        out = [slice(V + N_CTX, V + N_CTX + V), slice(V + N_CTX + V, d_model)]
        model.embed.W_E[:, tok] = torch.eye(V)
        model.pos_embed.W_pos[:, pos] = torch.eye(N_CTX)
        attn = model.blocks[0].attn
        for h, key_pos in ((0, 0), (1, 1)):
            attn.W_Q[h, V + 2, 0] = 1.0  # only the query at position 2 looks anywhere
            attn.W_K[h, V + key_pos, 0] = SHARP  # ... at the key at key_pos
            attn.W_V[h, tok] = torch.eye(V)  # the token there
            attn.W_O[h, :, out[h]] = torch.eye(V)  # into the head's own block
        model.unembed.W_U[out[0]] = GAIN_COPY * torch.eye(V)
        model.unembed.W_U[out[1]] = GAIN_DISTRACT * torch.eye(V)
    model.eval()
    return model


def copy_first_dataset(n: int, seed: int = 0) -> Tensor:
    """``[n, 4]`` rows ``[a, b, c, a]``."""
    g = torch.Generator().manual_seed(seed)
    abc = torch.randint(0, V, (n, 3), generator=g)
    return torch.cat([abc, abc[:, :1]], dim=1)


def token_at(p: int):  # noqa: ANN201 - a feature
    """The feature "the token at position p"."""

    def feature(x: Tensor) -> int:
        return int(x[p])

    feature.__name__ = f"token {p}"
    return feature


def copy_first_hypotheses() -> dict[str, Hypothesis]:
    t0, t1 = token_at(0), token_at(1)
    return {
        "true": Hypothesis("true: L0H0 copies token 0", claim("logits", None, claim("L0H0", t0))),
        "true, deep": Hypothesis(
            "true, deep: L0H0.v <- embed(token 0)",
            claim("logits", None, claim("L0H0", t0, claim("L0H0.v", None, claim("embed", t0)))),
        ),
        "wrong": Hypothesis("wrong: L0H1 copies token 1", claim("logits", None, claim("L0H1", t1))),
        "wrong, deep": Hypothesis(
            "wrong, deep: L0H0.v <- embed(token 1)",
            claim("logits", None, claim("L0H0", t0, claim("L0H0.v", None, claim("embed", t1)))),
        ),
        "both heads": Hypothesis(
            "both heads",
            claim("logits", None, claim("L0H0", t0), claim("L0H1", t1)),
        ),
    }
