"""Prompts to padded token batches with an explicit mask, and token positions per sequence.

mechscope pads by hand (each prompt is tokenized alone, then padded) rather than asking the
tokenizer, so the mask is exact even where the pad token is also a real token (SmolLM2 pads with
``<|im_end|>``), and tiny models without a tokenizer take lists of token ids the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from interp.core.positions import (
    Real,
    column_index,
    column_mask,
    last_real,
    positions_from_json,
    positions_to_json,
    real,
)
from interp.hooks import TLModel

__all__ = [
    "Encoded", "Position", "Prompts", "encode", "hash_prompts", "is_pooled", "position_from_json", "require_unpadded",
    "position_to_json", "token_index", "token_mask",
]  # fmt: skip

# Text, or token ids per prompt (ragged lists or 1-d tensors), for models without a tokenizer.
Prompts = Sequence[str] | Sequence[Sequence[int]] | Sequence[Tensor]
# Where to read a sequence: its last real token ("last" = last_real()), the mean over its real
# tokens, real(i) (0 = first real token, -1 = last), the mean over real(slice) (real(slice(1, None))
# skips the first, which in SmolLM2 is an attention sink with a huge norm), or absolute columns (an
# int, or a slice to average over), taken only where the prompts have one length.
Position = Literal["last", "mean"] | int | slice | Real
PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class Encoded:
    """A padded batch: ``tokens`` and ``attention_mask`` are ``[batch, pos]``; 1 marks real tokens."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.attention_mask.sum(1)

    @property
    def first(self) -> Int[Tensor, " batch"]:
        """Column of each sequence's first real token (0 under right padding)."""
        return self.attention_mask.int().argmax(1)

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def chunks(self, size: int) -> Iterator[Encoded]:
        """Consecutive sub-batches of at most ``size`` sequences, each trimmed of all-pad columns."""
        for i in range(0, len(self), size):
            tok, mask = self.tokens[i : i + size], self.attention_mask[i : i + size]
            keep = mask.any(0).nonzero()[:, 0]
            lo, hi = int(keep.min()), int(keep.max()) + 1
            yield Encoded(tok[:, lo:hi], mask[:, lo:hi])

    def forward_kwargs(self) -> dict[str, Any]:
        """What the model's forward needs; no mask when nothing is padded (the faster TL path)."""
        return {} if bool(self.attention_mask.all()) else {"attention_mask": self.attention_mask}


def _ids(model: TLModel, prompt: Any, prepend_bos: bool | None) -> list[int]:
    if isinstance(prompt, str):
        if getattr(model, "tokenizer", None) is None:
            raise TypeError("this model has no tokenizer: pass token ids instead of text")
        kwargs = {} if prepend_bos is None else {"prepend_bos": prepend_bos}
        return model.to_tokens(prompt, **kwargs)[0].tolist()
    return [int(t) for t in torch.as_tensor(prompt).reshape(-1).tolist()]


def encode(
    model: TLModel,
    prompts: Prompts | Encoded,
    *,
    padding_side: PaddingSide = "right",
    prepend_bos: bool | None = None,
    what: str = "prompts",
) -> Encoded:
    """Tokenize each prompt alone and pad to a batch on ``padding_side``."""
    if isinstance(prompts, Encoded):
        return prompts
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right'; got {padding_side!r}")
    if isinstance(prompts, (str, Tensor)) or len(prompts) == 0:
        raise ValueError(
            f"the {what} are empty or not a list: expected a non-empty list of strings or of "
            f"token-id sequences; got {type(prompts).__name__} of length {len(prompts)}"
        )
    ids = [_ids(model, p, prepend_bos) for p in prompts]
    if empty := [i for i, x in enumerate(ids) if not x]:
        raise ValueError(f"{what} {empty[:5]} have no tokens: every prompt needs at least one")
    tok = getattr(model, "tokenizer", None)
    pad = getattr(tok, "pad_token_id", None) or 0
    width = max(map(len, ids))
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        cols = slice(0, len(x)) if padding_side == "right" else slice(width - len(x), width)
        tokens[row, cols] = torch.tensor(x)
        mask[row, cols] = 1
    return Encoded(tokens, mask)


def token_index(enc: Encoded, position: int | str | Real) -> Int[Tensor, " batch"]:
    """The column of one token per sequence: ``"last"`` (= ``last_real()``), ``real(i)``, or an
    absolute column (prompts of one length only)."""
    if position == "last":
        position = last_real()
    if isinstance(position, Real) and isinstance(position.index, int):
        return column_index(position, enc.attention_mask)[:, 0]
    if not isinstance(position, int) or isinstance(position, bool):
        raise ValueError(
            f"position must be 'last', 'mean', an int column, a slice, real(i) or real(slice); "
            f"got {position!r}"
        )
    require_unpadded(enc, position)
    return column_index(position, enc.attention_mask)[:, 0]


def require_unpadded(enc: Encoded, position: Any) -> None:
    """Absolute columns of prompts padded here mean nothing to the caller (they move with the
    padding side and the batch): they are taken only where every prompt has the same length."""
    lengths = enc.lengths
    if bool((lengths != lengths[0]).any()):
        raise ValueError(
            f"position {position!r} is an absolute column, but these prompts have different "
            f"lengths ({int(lengths.min())}..{int(lengths.max())} tokens), so columns move with "
            f"the padding; for indices among each prompt's real tokens use "
            f"interp.real({position!r}) (or 'last' / 'mean')"
        )


def is_pooled(position: Any) -> bool:
    """Whether ``position`` averages over several tokens (``"mean"`` or a slice)."""
    index = position.index if isinstance(position, Real) else position
    return position == "mean" or isinstance(index, slice)


def hash_prompts(*sets: Prompts) -> str:
    """sha256 over the prompts (text or token ids), so an artifact can name its data."""
    plain = [[p if isinstance(p, str) else torch.as_tensor(p).tolist() for p in s] for s in sets]
    return hashlib.sha256(json.dumps(plain).encode()).hexdigest()


def token_mask(enc: Encoded, position: str | slice | Real) -> Int[Tensor, "batch pos"]:
    """1 at the tokens that ``"mean"`` (every real token), ``real(slice)`` (a slice of real-token
    indices) or a slice of absolute columns (prompts of one length only) averages over."""
    if position == "mean":
        return enc.attention_mask
    if isinstance(position, slice):
        require_unpadded(enc, position)
        keep = column_mask(position, enc.attention_mask).expand_as(enc.attention_mask)  # type: ignore[union-attr]
    elif isinstance(position, Real) and isinstance(position.index, slice):
        keep = column_mask(position, enc.attention_mask) & enc.attention_mask.bool()  # type: ignore[operator]
    else:
        raise ValueError(
            f"position must be 'mean', a slice or real(slice) to average over; got {position!r}"
        )
    if not keep.any(1).all():
        raise IndexError(f"position {position!r} selects no token of some prompt")
    return keep.long()


def position_to_json(position: Position) -> Any:
    if position in ("last", "mean"):
        return position
    return positions_to_json(position)  # type: ignore[arg-type]


def position_from_json(value: Any) -> Position:
    """Reads what :func:`position_to_json` wrote, and vectors saved before positions meant columns
    (an int or ``["slice", a, b]`` then counted real tokens)."""
    if isinstance(value, bool) or value in ("last", "mean"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, int):
        return real(value)
    if isinstance(value, list) and value and value[0] == "slice":
        return real(slice(value[1], value[2]))
    return positions_from_json(value)  # type: ignore[return-value]
