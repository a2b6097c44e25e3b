"""Metrics on model outputs, one value per prompt, so results can carry confidence intervals.

- ``logit_diff``:   logit[correct] − logit[incorrect] at a position (default: the last).
- ``prob``:         softmax probability of a token at a position.
- ``kl_div``:       KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v)) of the next-token distributions,
                    at a position, or averaged over positions.
- ``loss``:         next-token cross-entropy, averaged over the predicted positions of each prompt.
- ``normalized``:   (value − corrupted) / (clean − corrupted): 0 = the corrupted run, 1 = the clean run.

Positions: an int (the same for every prompt, negative counts from the end) or an integer tensor
``[batch]`` giving each prompt its own position (e.g. the last real token under padding).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.validate import check_position, check_position_tensor, check_token_ids

__all__ = ["kl_div", "logit_diff", "loss", "normalized", "prob"]

Position = int | Int[Tensor, " batch"]


def _at(
    logits: Float[Tensor, "batch pos d_vocab"], pos: Position
) -> Float[Tensor, "batch d_vocab"]:
    if logits.ndim != 3:
        raise ValueError(f"logits must be [batch, pos, d_vocab]; got shape {tuple(logits.shape)}")
    n_pos = logits.shape[1]
    if isinstance(pos, int):
        return logits[:, check_position(pos, n_pos)]
    idx = torch.as_tensor(pos, device=logits.device)
    if idx.shape != (logits.shape[0],):
        raise ValueError(
            f"per-prompt positions must have shape [batch={logits.shape[0]}]; got {tuple(idx.shape)}"
        )
    idx = check_position_tensor(idx, n_pos, "per-prompt positions")
    return logits[torch.arange(logits.shape[0], device=logits.device), idx]


def _tokens(tok: int | Tensor, at: Tensor, what: str) -> Tensor:
    """Token ids as ``[batch]``, each checked against the logits' vocabulary."""
    batch, d_vocab = at.shape
    t = check_token_ids(torch.as_tensor(tok), d_vocab, what).to(at.device).long()
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"{what} must be one token id or one id per prompt: shape [{batch}]; got "
            f"{tuple(t.shape)}"
        )
    return t


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"],
    correct: int | Int[Tensor, " batch"],
    incorrect: int | Int[Tensor, " batch"],
    *,
    pos: Position = -1,
) -> Float[Tensor, " batch"]:
    """logit[correct] − logit[incorrect] for each prompt."""
    at = _at(logits, pos)
    c, i = _tokens(correct, at, "correct"), _tokens(incorrect, at, "incorrect")
    return at.gather(1, c[:, None])[:, 0] - at.gather(1, i[:, None])[:, 0]


def prob(
    logits: Float[Tensor, "batch pos d_vocab"],
    token: int | Int[Tensor, " batch"],
    *,
    pos: Position = -1,
) -> Float[Tensor, " batch"]:
    """Softmax probability of ``token`` for each prompt."""
    at = _at(logits, pos).float().softmax(-1)
    return at.gather(1, _tokens(token, at, "token")[:, None])[:, 0]


def kl_div(
    logits_p: Float[Tensor, "batch pos d_vocab"],
    logits_q: Float[Tensor, "batch pos d_vocab"],
    *,
    pos: Position | None = -1,
) -> Float[Tensor, " batch"]:
    """KL(p ‖ q) per prompt, p the reference (usually clean) run; ``pos=None`` averages positions."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(
            f"logits differ in shape: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}"
        )
    if pos is None:
        lp, lq = logits_p.float().log_softmax(-1), logits_q.float().log_softmax(-1)
        return (lp.exp() * (lp - lq)).sum(-1).mean(-1)
    lp, lq = _at(logits_p, pos).float().log_softmax(-1), _at(logits_q, pos).float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, " batch"]:
    """Mean next-token cross-entropy of each prompt (positions whose target is masked out are skipped)."""
    if logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on [batch, pos]"
        )
    check_token_ids(tokens, logits.shape[-1], "tokens")
    if attention_mask is not None and attention_mask.shape != tokens.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; it must match the tokens' "
            f"[batch, pos] = {tuple(tokens.shape)}"
        )
    logp = logits[:, :-1].float().log_softmax(-1)
    nll = -logp.gather(-1, tokens[:, 1:, None].long())[..., 0]  # [batch, pos-1]
    if attention_mask is None:
        return nll.mean(-1)
    keep = (attention_mask[:, 1:] * attention_mask[:, :-1]).to(nll.dtype)
    return (nll * keep).sum(-1) / keep.sum(-1).clamp_min(1)


def normalized(value: Tensor, clean: Tensor | float, corrupted: Tensor | float) -> Tensor:
    """(value − corrupted) / (clean − corrupted): 0 at the corrupted baseline, 1 at the clean run."""
    denom = torch.as_tensor(clean) - torch.as_tensor(corrupted)
    if torch.any(denom == 0):
        raise ValueError("clean and corrupted values are equal: the normalised metric is undefined")
    return (value - torch.as_tensor(corrupted)) / denom
