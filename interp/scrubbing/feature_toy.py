"""A one-layer model and its exact MLP transcoder, set by hand, whose feature circuit is known.

Tokens 0, 1 and 2 embed as e_0, e_1 and e_2 (token 4 as zero; width 4, vocabulary 5); attention
writes nothing and there are no norms. Transcoder feature 0 reads token 2 (weight 2) and writes
1.5·e_3, the only direction a logit reads (logit 3); feature 1 reads token 1 and writes e_0,
which no logit reads. The MLP computes exactly what the transcoder does, so its error nodes are
zero. By construction, logit 3 at the last position is 3·[last token is 2], carried by ``F0.0``
at the last position alone: claiming ``F0.0`` recovers all of :func:`last_logit_loss`, claiming
``F0.1`` none of it. Needs a ``HookedTransformer`` (TransformerLens 3).

>>> model, tc = feature_model()
>>> tokens = torch.tensor([[1, 2], [2, 1], [4, 2]])
>>> (-last_logit_loss(model(tokens), tokens)).tolist()
[3.0, 0.0, 3.0]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["TOKENS", "feature_dataset", "feature_model", "last_logit_loss"]

TOKENS = (0, 1, 2, 4)  # token 3 would write e_3 itself


def feature_model() -> tuple[Any, Any]:
    """The model (a ``HookedTransformer``) and its layer-0 transcoder."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saes.config import SAEConfig
    from saes.transcoder import Transcoder

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=4, n_ctx=8, d_head=2, n_heads=1, d_mlp=8, d_vocab=5,
        act_fn="relu", normalization_type=None, seed=0, device="cpu",
    )  # fmt: skip
    model = HookedTransformer(cfg)
    tc = Transcoder(SAEConfig(d_in=4, d_sae=2, activation="relu", d_out=4), seed=0)
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        for p in [*model.parameters(), *tc.parameters()]:
            p.zero_()
        model.W_E.copy_(torch.eye(5, 4))
        model.W_U[3, 3] = 1.0
        for feature, (read, write, w_in, w_out) in enumerate(((2, 3, 2.0, 1.5), (1, 0, 1.0, 1.0))):
            mlp.W_in[read, feature] = tc.W_enc[read, feature] = w_in
            mlp.W_out[feature, write] = tc.W_dec[feature, write] = w_out
    tc.cfg.metadata.update(layer=0, hook="blocks.0.hook_resid_mid")
    model.eval()
    return model, tc


def feature_dataset(n: int, length: int = 4, seed: int = 0) -> Tensor:
    """``[n, length]`` tokens drawn uniformly from :data:`TOKENS`."""
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(TOKENS)[torch.randint(0, len(TOKENS), (n, length), generator=g)]


def last_logit_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """−logit 3 at the last position, per input (a loss: lower is better)."""
    return -logits[:, -1, 3]
