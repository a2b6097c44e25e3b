"""Positions: one meaning everywhere, absolute token columns, and named helpers for the others.

An int, a list of ints or a slice is a column of the token tensor a call runs on, ``-1`` being its
last column: in patching, caching, scrubbing metrics, steering edits and steering extraction alike.
Where a column is not what is meant (a padded batch, a generation), a helper says so:

- :func:`real` ``(i)``: the ``i``-th real (not padding) token of each row, from the attention mask
  (an int, a list of ints or a slice; ``real(slice(1, None))`` is every real token but the first);
- :func:`last_real`: each row's last real token, ``real(-1)``;
- :func:`prompt` / :func:`generated`: the columns before / from the prompt's length (in
  ``generate``, the prompt and the sampled tokens).

>>> import torch
>>> mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])  # row 0 is left-padded
>>> column_index(last_real(), mask).tolist()
[[3], [3]]
>>> column_index(real([0, 1]), mask).tolist()
[[1, 2], [0, 1]]
>>> column_index(2, mask).tolist()  # a column is a column, padded row or not
[[2], [2]]
>>> column_mask(real(slice(1, None)), mask).int().tolist()
[[0, 0, 1, 1], [0, 1, 1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.validate import did_you_mean

__all__ = ["Positions", "Real", "Span", "check_positions_spec", "column_index", "column_mask"]
__all__ += ["generated", "last_real", "positions_from_json", "positions_to_json", "prompt", "real"]


@dataclass(frozen=True)
class Real:
    """Indices among each row's real tokens (not columns); build with :func:`real`."""

    index: int | tuple[int, ...] | slice


@dataclass(frozen=True)
class Span:
    """The prompt's columns or the generated ones; build with :func:`prompt`, :func:`generated`."""

    part: Literal["prompt", "generated"]


Positions = Literal["all", "prompt", "generated"] | int | Sequence[int] | slice | Real | Span

_WORDS = ("all", "prompt", "generated")


def real(index: int | Sequence[int] | slice = slice(None)) -> Real:
    """The ``index``-th real token of each row (an int, a list of ints or a step-1 slice)."""
    spec = Real(index if isinstance(index, (int, slice)) else tuple(index))
    check_positions_spec(spec)
    return spec


def last_real() -> Real:
    """Each row's last real token."""
    return Real(-1)


def prompt() -> Span:
    """The columns before the prompt length (every column of a plain forward)."""
    return Span("prompt")


def generated() -> Span:
    """The columns from the prompt length on (none in a plain forward without ``prompt_len``)."""
    return Span("generated")


def _ints(index: Any, what: str) -> list[int]:
    ints = [index] if isinstance(index, int) else list(index)
    if not ints or not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise ValueError(
            f"{what} must be an int, a non-empty list of ints or a slice; got {index!r}"
        )
    return ints


def check_positions_spec(positions: Any) -> Positions:
    """``positions`` if it is a valid spec (ranges are checked once the tokens are known)."""
    if isinstance(positions, str):
        if positions not in _WORDS:
            raise ValueError(
                f"positions must be 'all', 'prompt', 'generated', an int, a list of ints, a slice, "
                f"or a helper from interp.core.positions (real(i), last_real(), ...); got "
                f"{positions!r}{did_you_mean(positions, _WORDS + ('last_real()', 'real(i)'))}"
            )
        return positions  # type: ignore[return-value]
    if isinstance(positions, Span):
        return positions
    index = positions.index if isinstance(positions, Real) else positions
    if isinstance(index, slice):
        if index.step not in (None, 1) or not all(
            b is None or isinstance(b, int) for b in (index.start, index.stop)
        ):
            raise ValueError(f"a positions slice must have int bounds and step 1; got {index!r}")
        return positions  # type: ignore[no-any-return]
    if isinstance(index, Tensor):
        raise ValueError("positions must be ints, a slice or a helper; got a tensor")
    _ints(index, "positions")
    return positions  # type: ignore[no-any-return]


def _rows(mask: Tensor | None, batch: int, width: int, device: Any) -> tuple[Tensor, Tensor]:
    """Each row's first real column and number of real tokens."""
    if mask is None:
        return (torch.zeros(batch, dtype=torch.long, device=device),
                torch.full((batch,), width, dtype=torch.long, device=device))  # fmt: skip
    m = mask.to(device).bool()
    return m.long().argmax(1), m.sum(1)


def column_mask(
    positions: Positions,
    mask: Int[Tensor, "batch width"] | None = None,
    *,
    batch: int | None = None,
    width: int | None = None,
    cols: Int[Tensor, " n"] | None = None,
    prompt_len: int | None = None,
    first: Int[Tensor, " batch"] | None = None,
    length: Int[Tensor, " batch"] | None = None,
) -> Bool[Tensor, "batch_or_1 n"] | None:
    """Where ``positions`` falls among the columns ``cols`` (default all ``width`` columns).

    ``mask`` is the attention mask of the prompt (``first`` and ``length`` give the same directly:
    each row's first real column and real-token count); ``prompt_len`` the prompt's width, for
    generation, where ``cols`` goes past it. Negative columns count from the prompt's end. None
    means every column.
    """
    check_positions_spec(positions)
    if mask is not None:
        batch, width = mask.shape
    if width is None:
        width = prompt_len if prompt_len is not None else int(cols[-1]) + 1  # type: ignore[index]
    device = cols.device if cols is not None else (mask.device if mask is not None else "cpu")
    cols = torch.arange(width, device=device) if cols is None else cols
    end = prompt_len if prompt_len is not None else width
    if positions == "all":
        return None
    if positions == "prompt" or positions == Span("prompt"):
        return (cols < end)[None]
    if positions == "generated" or positions == Span("generated"):
        return (cols >= end)[None]
    if not isinstance(positions, Real):  # absolute columns
        if isinstance(positions, slice):
            lo, hi, _ = positions.indices(end)
            return ((cols >= lo) & (cols < hi if positions.stop is not None else True))[None]
        ints = torch.tensor(_ints(positions, "positions"), device=device)
        if (ints >= end).any() or (ints < -end).any():
            raise IndexError(
                f"positions {ints.tolist()} are out of range for {end} columns "
                f"(valid: {-end}..{end - 1}); for indices among each row's real tokens use "
                f"interp.core.positions.real(...)"
            )
        target = torch.where(ints >= 0, ints, end + ints)
        return (cols[None, :] == target[:, None]).any(0)[None]
    n_rows = batch if batch is not None else (len(first) if first is not None else 1)
    if first is None or length is None:
        first, length = _rows(mask, n_rows, end, device)
    first, length = first.to(device), length.to(device)
    index = positions.index
    if isinstance(index, slice):
        rank = cols[None, :] - first[:, None]  # index among real tokens; < 0 on left pads
        lo, hi = index.start or 0, index.stop
        keep = rank >= (torch.as_tensor(lo, device=device) if lo >= 0 else length[:, None] + lo)
        if hi is not None:
            keep &= rank < (torch.as_tensor(hi, device=device) if hi >= 0 else length[:, None] + hi)
        else:  # on to the end: the real prompt tokens (no right padding), then generated columns
            keep &= (rank < length[:, None]) | (cols >= end)[None]
        return keep
    target = _real_targets(index, first, length, device)
    return (cols[None, None, :] == target[:, :, None]).any(1)


def _real_targets(index: Any, first: Tensor, length: Tensor, device: Any) -> Tensor:
    ints = torch.tensor(_ints(index, "real(...)"), device=device)
    shortest = int(length.min())
    if (ints >= shortest).any() or (ints < -shortest).any():
        raise IndexError(
            f"positions {ints.tolist()} are out of range for a {shortest}-token prompt "
            f"(real-token indices, valid: {-shortest}..{shortest - 1})"
        )
    return first[:, None] + torch.where(ints >= 0, ints, length[:, None] + ints)


def column_index(
    positions: int | Sequence[int] | Real, mask: Int[Tensor, "batch width"]
) -> Int[Tensor, "batch k"]:
    """The columns of ``positions`` in each row, ``[batch, k]`` (for gathering one or a few
    tokens per row; a slice or a span selects a different number per row: use :func:`column_mask`)."""
    check_positions_spec(positions)
    batch, width = mask.shape
    if isinstance(positions, Real):
        if isinstance(positions.index, slice):
            raise ValueError("column_index takes ints or real(int...); use column_mask for slices")
        first, length = _rows(mask, batch, width, mask.device)
        return _real_targets(positions.index, first, length, mask.device)
    if isinstance(positions, (str, slice, Span)):
        raise ValueError(f"column_index takes ints or real(...); got {positions!r}")
    ints = torch.tensor(_ints(positions, "positions"), device=mask.device)
    if (ints >= width).any() or (ints < -width).any():
        raise IndexError(f"positions {ints.tolist()} are out of range for {width} columns")
    return torch.where(ints >= 0, ints, width + ints)[None].expand(batch, -1)


def positions_to_json(positions: Positions) -> Any:
    """A JSON value that :func:`positions_from_json` reads back."""
    if isinstance(positions, Span):
        return positions.part
    tag, index = (
        ("real", positions.index) if isinstance(positions, Real) else ("columns", positions)
    )
    if isinstance(index, slice):
        return [tag, "slice", index.start, index.stop]
    return [tag, index if isinstance(index, int) else list(index)]  # type: ignore[arg-type]


def positions_from_json(value: Any) -> Positions:
    if isinstance(value, list) and value and value[0] in ("real", "columns"):
        tag, rest = value[0], value[1:]
        index: Any = slice(rest[1], rest[2]) if rest and rest[0] == "slice" else rest[0]
        if tag == "real":
            return real(index)
        return index if isinstance(index, (int, slice)) else list(index)
    if value in ("prompt", "generated"):
        return Span(value)
    return value  # type: ignore[no-any-return]
