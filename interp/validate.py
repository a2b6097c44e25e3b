"""Checks of user input shared by every public entry point, run before any forward pass.

Each check raises with what was wrong, what was expected and, for names, the closest valid ones.
Out-of-range indices raise :class:`OutOfRangeError`, which is both an ``IndexError`` (it is one)
and a ``ValueError`` (the argument's value is wrong), so callers may catch either.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "OutOfRangeError",
    "check_choice",
    "check_context",
    "check_device",
    "check_dtype",
    "check_head",
    "check_index",
    "check_int",
    "check_layer",
    "check_nonempty",
    "check_position",
    "check_position_tensor",
    "check_positions",
    "check_token_ids",
    "check_tokenizer",
    "check_tokens",
    "check_width",
    "did_you_mean",
]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


class OutOfRangeError(IndexError, ValueError):
    """An index (position, layer, head, token id) outside the range its axis allows."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'a', 'b'?"`` for the closest choices, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def check_choice(value: Any, choices: Sequence[Any], what: str) -> Any:
    """``value`` if it is one of ``choices``; else a ValueError listing them and close matches."""
    if value in choices:
        return value
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}{hint}")


def check_int(value: Any, what: str, *, minimum: int | None = None) -> int:
    """A plain int (bools refused), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, Tensor) and value.ndim == 0 and value.dtype in _INT_DTYPES:
            value = int(value)
        else:
            raise TypeError(f"{what} must be an int; got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be at least {minimum}; got {value}")
    return int(value)


def check_index(
    value: Any, n: int, what: str, *, negative: bool = True, of: str | None = None
) -> int:
    """An index into an axis of ``n`` entries, as 0..n-1; negative counts from the end if allowed.

    Never wraps: ``n`` and ``-n - 1`` are errors, not the first and last entries. ``of`` names
    the axis in the message (default ``"{n} entries"``).
    """
    i = check_int(value, what)
    lo = -n if negative else 0
    if not lo <= i < n:
        valid = f"0..{n - 1}" + (f", or {-n}..-1 from the end" if negative else "")
        if n == 0:
            valid = "none: the axis is empty"
        raise OutOfRangeError(
            f"{what} {i} is out of range for {of or f'{n} entries'} (valid: {valid})"
        )
    return i % n


def check_position(pos: Any, n_pos: int, what: str = "position") -> int:
    """A position among ``n_pos`` (negative from the end), as 0..n_pos-1."""
    return check_index(pos, n_pos, what, of=f"sequences of {n_pos} positions")


def check_positions(positions: Any, n_pos: int, what: str = "positions") -> list[int]:
    """A non-empty list of positions (an int, ints or an integer tensor), each as 0..n_pos-1."""
    if isinstance(positions, Tensor):
        return check_position_tensor(positions, n_pos, what).reshape(-1).tolist()
    if isinstance(positions, int | str) or not isinstance(positions, Iterable):
        vals: list[Any] = [positions]
    else:
        vals = list(positions)
    check_nonempty(vals, what)
    return [check_position(p, n_pos, what.removesuffix("s") or what) for p in vals]


def check_position_tensor(idx: Tensor, n_pos: int, what: str = "positions") -> Tensor:
    """An integer tensor of positions, checked at once (no per-element loop), as 0..n_pos-1."""
    if idx.dtype not in _INT_DTYPES:
        raise TypeError(f"{what} must be integers; got a tensor of dtype {idx.dtype}")
    check_nonempty(idx, what)
    hi, lo = int(idx.max()), int(idx.min())
    for bad in (hi, lo):
        check_position(bad, n_pos, what.removesuffix("s") or what)
    return idx.long() % n_pos


def check_layer(layer: Any, n_layers: int, what: str = "layer", *, negative: bool = False) -> int:
    """A block index of a model with ``n_layers`` layers."""
    of = f"a model with {n_layers} layers"
    return check_index(layer, n_layers, what, negative=negative, of=of)


def check_head(head: Any, n_heads: int, what: str = "head", *, negative: bool = False) -> int:
    """A head index of a layer with ``n_heads`` heads."""
    return check_index(head, n_heads, what, negative=negative, of=f"{n_heads} heads")


def check_nonempty(x: Any, what: str) -> Any:
    """``x`` if it has at least one element (a sequence, a tensor, a string)."""
    size = x.numel() if isinstance(x, Tensor) else len(x)
    if size == 0:
        raise ValueError(f"{what} is empty: give at least one")
    return x


def check_token_ids(tokens: Any, d_vocab: int, what: str = "tokens") -> Tensor:
    """Integer token ids, every one in 0..d_vocab-1 (a tensor of the same shape is returned)."""
    t = tokens if isinstance(tokens, Tensor) else torch.as_tensor(tokens)
    if t.dtype not in _INT_DTYPES:
        raise TypeError(f"{what} must be integer token ids; got a tensor of dtype {t.dtype}")
    if t.numel() == 0:
        return t
    hi, lo = int(t.max()), int(t.min())
    if hi >= d_vocab or lo < 0:
        bad = hi if hi >= d_vocab else lo
        where = tuple(int(i) for i in (t == bad).nonzero()[0]) if t.ndim else ()
        raise OutOfRangeError(
            f"{what} holds token id {bad}{f' at index {where}' if where else ''}, but this "
            f"model's vocabulary has d_vocab={d_vocab} ids (valid: 0..{d_vocab - 1}). Were the "
            "tokens made by another model's tokenizer?"
        )
    return t


def check_context(n: int, n_ctx: int, what: str = "the sequence length") -> None:
    """A sequence of ``n`` positions fits the model's context window of ``n_ctx``."""
    if n > n_ctx:
        raise ValueError(
            f"{what} is {n} positions, longer than this model's context window n_ctx={n_ctx}: "
            f"use at most {n_ctx} positions"
        )


def check_width(x: Tensor, d: int, what: str, *, name: str = "d_model") -> None:
    """The last axis of ``x`` has ``d`` entries."""
    if x.ndim == 0 or x.shape[-1] != d:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}, but this model's {name} is {d}: expected a last "
            f"axis of {d}. Was it made with another model?"
        )


def check_dtype(dtype: Any, what: str = "dtype", *, floating: bool = True) -> torch.dtype | None:
    """``None`` or a torch dtype (a floating one when ``floating``)."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(
            f"{what} must be a torch.dtype such as torch.float32; got {type(dtype).__name__} "
            f"{dtype!r}"
        )
    if floating and not dtype.is_floating_point:
        raise ValueError(f"{what} must be a floating-point dtype for activations; got {dtype}")
    return dtype


def check_device(device: Any, what: str = "device") -> torch.device | None:
    """``None`` or a device torch can use here (a missing GPU is an error, not a late crash)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{what} {device!r} is not a device: use 'cpu', 'cuda', 'cuda:0', 'mps', ..."
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index is not None and dev.index >= count):
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(f"{what} {device!r} is not available: this machine has {have}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what} {device!r} is not available on this machine")
    return dev


def check_tokenizer(model: Any, what: str) -> None:
    """The model has a tokenizer (``what`` needs text, not token ids)."""
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            f"{what} needs a model with a tokenizer, but this {type(model).__name__} has none "
            "(a model built from a config alone). Load one with a tokenizer, e.g. "
            "interp.models.load_model('smollm2-135m'), or set model.set_tokenizer(...)"
        )


def check_tokens(model: Any, tokens: Any, what: str = "tokens") -> Tensor:
    """Token ids ``[batch, pos]`` (or ``[pos]``) this model can run: non-empty, in its vocabulary
    and no longer than its context window."""
    if not isinstance(tokens, Tensor):
        raise TypeError(
            f"{what} must be token ids [batch, pos] or text; got {type(tokens).__name__}"
        )
    if tokens.ndim not in (1, 2):
        raise ValueError(
            f"{what} must be token ids of shape [batch, pos]; got {tuple(tokens.shape)}"
        )
    if tokens.numel() == 0:
        raise ValueError(f"{what} is empty: shape {tuple(tokens.shape)}; give at least one token")
    cfg = model.cfg
    check_token_ids(tokens, int(cfg.d_vocab), what)
    n_ctx = getattr(cfg, "n_ctx", None)
    if n_ctx is not None:
        check_context(int(tokens.shape[-1]), int(n_ctx), f"the length of {what}")
    return tokens
