"""Scrubbing metrics: ``(logits, tokens) -> loss per input``, lower is better."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["next_token_loss"]


def next_token_loss(
    positions: int | Sequence[int] | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy of predicting ``tokens[:, p + 1]`` from ``logits[:, p]``, averaged over
    ``positions`` (default: every position but the last), one value per input."""

    def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
        n_pos = tokens.shape[1]
        if positions is None:
            pos = list(range(n_pos - 1))
        else:
            pos = [positions] if isinstance(positions, int) else list(positions)
        pos = [p % n_pos for p in pos]
        if any(p >= n_pos - 1 for p in pos):
            raise ValueError(f"positions {pos}: the last position ({n_pos - 1}) has no next token")
        idx = torch.tensor(pos, device=logits.device)
        logp = logits[:, idx].float().log_softmax(-1)
        target = tokens[:, idx + 1].to(logits.device)
        return -logp.gather(-1, target[..., None])[..., 0].mean(-1)

    return next_token_loss
