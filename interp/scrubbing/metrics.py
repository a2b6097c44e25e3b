"""Scrubbing metrics: ``(logits, tokens) -> loss per input``, lower is better."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from interp.manifest import sourced
from interp.validate import check_int, check_nonempty, check_positions

__all__ = ["next_token_loss"]


@sourced
def next_token_loss(
    positions: int | Sequence[int] | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy of predicting ``tokens[:, p + 1]`` from ``logits[:, p]``, averaged over
    ``positions`` (default: every position but the last), one value per input."""

    if positions is not None:  # types now; ranges once the length is known (never wrapped)
        given = [positions] if isinstance(positions, int) else list(positions)
        for p in check_nonempty(given, "positions"):
            check_int(p, "a position")

    def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
        n_pos = tokens.shape[1]
        if positions is None:
            pos = list(range(n_pos - 1))
        else:
            pos = check_positions(positions, n_pos, "positions")
        if any(p >= n_pos - 1 for p in pos):
            raise ValueError(f"positions {pos}: the last position ({n_pos - 1}) has no next token")
        idx = torch.tensor(pos, device=logits.device)
        logp = logits[:, idx].float().log_softmax(-1)
        target = tokens[:, idx + 1].to(logits.device)
        return -logp.gather(-1, target[..., None])[..., 0].mean(-1)

    return next_token_loss
