"""A one-layer Llama with weights set by hand, so its circuit is known; both backends.

Inputs are ``[a, b, c, a]`` over ``V`` tokens (a, b, c uniform); the loss is predicting the last
token (``a``) at position 2. Head ``L0H0`` attends from position 2 to position 0 and copies ``a``
into the logits (gain 8); head ``L0H1`` attends to position 1 and pushes ``b`` (gain 2), a
distractor. The residual stream has one block for the token, one constant unit, and one block each
for the two heads' outputs; only the head blocks reach the unembedding; the MLP is zero.

Where the heads look comes from rotary positions alone: each head's query and key read only the
constant unit, so the score is ``SHARP * cos(alpha + (query - key))`` in the first rotary pair
(frequency 1), and ``alpha = -2`` (``L0H0``) or ``-1`` (``L0H1``) puts the maximum at 2 or 1
positions back. Every embedding row has the same norm and the heads' outputs are one-hot, so each
RMSNorm divides by a constant its weight undoes: the model is the linear circuit above.

So, by construction: ``logits <- L0H0`` with feature "token 0" is the true hypothesis (its value
comes through ``L0H0.v`` from the token embedding at position 0; its query and key read only
positions); ``logits <- L0H1`` with "token 1" is wrong.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from interp.manifest import sourced
from interp.random_models import to_backend
from interp.scrubbing.hypothesis import Hypothesis, claim

__all__ = ["copy_first_dataset", "copy_first_hypotheses", "copy_first_model", "token_at"]

V = 6  # vocabulary, and each head's width
N_CTX = 4
GAIN_COPY, GAIN_DISTRACT, SHARP = 8.0, 2.0, 30.0
EPS = 1e-5
_TOK, _ONE = slice(0, V), V  # residual layout: token block, constant unit, head 0, head 1
_OUT = (slice(V + 1, 2 * V + 1), slice(2 * V + 1, 3 * V + 1))
D_MODEL = 3 * V + 2  # one spare unit: Llama wants a width divisible by the head count


@sourced
def copy_first_model(backend: str | None = None) -> Any:
    """The hand-set model (deterministic: no random initialisation survives) as a
    TransformerBridge or, ``backend="hooked"``, a HookedTransformer of the same weights (TL 3);
    ``None`` is :func:`interp.models.default_backend`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp.models import default_backend

    cfg = LlamaConfig(
        hidden_size=D_MODEL, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        head_dim=V, intermediate_size=4, vocab_size=V, max_position_embeddings=N_CTX,
        hidden_act="silu", rms_norm_eps=EPS, tie_word_embeddings=False,
    )  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        hf.model.embed_tokens.weight[:, _TOK] = torch.eye(V)
        hf.model.embed_tokens.weight[:, _ONE] = 1.0
        layer = hf.model.layers[0]
        layer.input_layernorm.weight.fill_(math.sqrt(2 / D_MODEL + EPS))  # rows: norm sqrt 2
        attn, half = layer.self_attn, V // 2
        amp = math.sqrt(SHARP * math.sqrt(V))  # score = amp**2 cos(...) / sqrt(head_dim)
        for h, alpha in ((0, -2.0), (1, -1.0)):
            rows = slice(h * V, (h + 1) * V)
            q = attn.q_proj.weight[rows]
            q[0, _ONE], q[half, _ONE] = amp * math.cos(alpha), amp * math.sin(alpha)
            attn.k_proj.weight[rows][0, _ONE] = amp
            attn.v_proj.weight[rows, _TOK] = torch.eye(V)  # the token there
            attn.o_proj.weight[_OUT[h], rows] = torch.eye(V)  # into the head's own block
        # At the loss position: token + constant + two one-hot head outputs, norm 2.
        hf.model.norm.weight.fill_(math.sqrt(4 / D_MODEL + EPS))
        hf.lm_head.weight[:, _OUT[0]] = GAIN_COPY * torch.eye(V)
        hf.lm_head.weight[:, _OUT[1]] = GAIN_DISTRACT * torch.eye(V)
    return to_backend(hf, backend or default_backend(), name="copy-first")


def copy_first_dataset(n: int, seed: int = 0) -> Tensor:
    """``[n, 4]`` rows ``[a, b, c, a]``."""
    g = torch.Generator().manual_seed(seed)
    abc = torch.randint(0, V, (n, 3), generator=g)
    return torch.cat([abc, abc[:, :1]], dim=1)


@sourced
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
