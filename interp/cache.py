"""Selective in-memory caching of activations.

Only the named hooks are kept, optionally only at chosen positions, cast and moved as they are
produced (so a GPU run can stream straight into CPU memory). When every requested hook lives in the
blocks, a ``HookedTransformer`` stops after the last block needed instead of running to the logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import ActivationCache  # TL 3 and TL 4

from interp.core.adapter import adapt
from interp.core.positions import Real, column_index
from interp.hooks import HookSpec, TLModel, hook_layer, hooks, resolve_hooks
from interp.validate import (
    check_device,
    check_dtype,
    check_position,
    check_position_tensor,
    check_positions,
    check_tokenizer,
    check_tokens,
)

__all__ = ["Positions", "cache_activations", "position_dim", "select_positions"]

Positions = int | slice | Sequence[int] | Tensor | Real | None

# Hooks whose position axis is not axis 1: attention patterns and scores are [batch, head, query, key];
# positions select queries.
_QUERY_AXIS_SUFFIXES = ("hook_pattern", "hook_attn_scores")


def position_dim(name: str) -> int:
    """The axis of a hook's activation that indexes (query) positions."""
    return 2 if name.endswith(_QUERY_AXIS_SUFFIXES) else 1


def select_positions(act: Tensor, positions: Positions, dim: int) -> Tensor:
    """Index ``act`` along ``dim`` by positions.

    ``positions`` is an int (that axis is kept, with length 1), a slice, a list of ints (the same for
    every sequence) or an integer tensor ``[batch, n]`` giving each sequence its own positions (for
    example the last real token of each left- or right-padded sequence).
    """
    if positions is None:
        return act
    n_pos = act.shape[dim]
    if isinstance(positions, int):
        return act.narrow(dim, check_positions(positions, n_pos)[0], 1)
    if isinstance(positions, slice):
        return act[(slice(None),) * dim + (positions,)]
    idx = check_position_tensor(torch.as_tensor(positions, device=act.device), n_pos)
    if idx.ndim == 1:
        return act.index_select(dim, idx)
    _check_per_sequence(idx, act.shape[0])
    moved = act.movedim(dim, 1)  # [batch, pos, ...]
    gather_idx = idx.view(*idx.shape, *([1] * (moved.ndim - 2))).expand(
        *idx.shape, *moved.shape[2:]
    )
    return moved.gather(1, gather_idx).movedim(1, dim)


def _check_per_sequence(idx: Tensor, batch: int) -> None:
    if idx.ndim != 2 or idx.shape[0] != batch:
        raise ValueError(
            f"per-sequence positions must have shape [batch={batch}, n]; got {tuple(idx.shape)}"
        )


def _check_position_arg(positions: Positions, tokens: Tensor) -> None:
    """Positions checked against the tokens, so a bad one fails before the forward."""
    if positions is None or isinstance(positions, slice):
        return
    n_pos = tokens.shape[-1]
    if isinstance(positions, int):
        check_position(positions, n_pos)
        return
    idx = check_position_tensor(torch.as_tensor(positions), n_pos)
    if idx.ndim >= 2:
        _check_per_sequence(idx, tokens.shape[0] if tokens.ndim == 2 else 1)


class _Reached(Exception):  # noqa: N818 - control flow, never seen by callers
    """Raised by the last requested hook to end a bridge's forward there."""


def _stop_layer(model: TLModel, names: list[str]) -> int | None:
    """The first block that no requested hook needs, or None when the whole model must run."""
    if adapt(model).backend != "hooked":  # a bridge has no stop_at_layer shortcut worth taking
        return None
    layers = [hook_layer(n) for n in names]
    if any(layer is None for layer in layers):
        # Embedding hooks are computed before block 0; anything else (ln_final, unembed) needs all.
        if all(
            n.startswith(("hook_embed", "hook_pos_embed", "hook_tokens"))
            for n, la in zip(names, layers, strict=True)
            if la is None
        ):
            return max((la for la in layers if la is not None), default=-1) + 1
        return None
    return max(la for la in layers if la is not None) + 1


def cache_activations(
    model: TLModel,
    tokens: Int[Tensor, "batch pos"] | str | list[str],
    names: HookSpec,
    *,
    positions: Positions = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    stop_early: bool = True,
    **forward_kwargs: Any,
) -> ActivationCache:
    """Run the model once and keep only the activations of ``names``.

    Args:
        model: a TransformerLens model.
        tokens: token ids ``[batch, pos]``, or text (tokenized with the model's tokenizer).
        names: a hook spec (see :mod:`interp.hooks`): names, globs, ``(site, layer)`` pairs, ...
        positions: keep only these columns (see :func:`select_positions`), or ``real(i)`` /
            ``last_real()``: each row's real tokens, from ``attention_mask`` when it is given.
        dtype, device: cast and move each activation as it is produced.
        stop_early: stop after the last block any hook needs (a ``HookedTransformer``), or right
            after the last requested hook fires (a bridge).
        forward_kwargs: passed to the model's forward (``attention_mask``, ``padding_side``, ...).

    Returns:
        A TransformerLens ``ActivationCache`` keyed by full hook names (``cache["resid_post", 3]`` works).

    >>> cache = cache_activations(model, tokens, "blocks.*.hook_resid_post", positions=-1)
    """
    resolved = resolve_hooks(model, names)
    if isinstance(tokens, (str, list)):
        check_tokenizer(model, "text input")
        tokens = model.to_tokens(tokens, truncate=False)  # too long is refused below, not cut
    tokens = check_tokens(model, tokens)
    if isinstance(positions, Real):  # each row's real tokens, from the attention mask if given
        mask = forward_kwargs.get("attention_mask")
        mask = torch.ones_like(tokens) if mask is None else torch.as_tensor(mask)
        positions = column_index(positions, mask.reshape(tokens.shape))
    _check_position_arg(positions, tokens)
    check_dtype(dtype)
    check_device(device)
    store: dict[str, Tensor] = {}

    def make_hook(name: str):
        dim = position_dim(name)

        def hook(act: Tensor, hook: Any) -> None:
            store[name] = select_positions(act.detach(), positions, dim).to(
                device=device, dtype=dtype
            )
            if stop_by_raise and len(store) == len(resolved):
                raise _Reached  # a bridge: nothing after the last requested hook is needed

        return hook

    kwargs = dict(forward_kwargs)
    # A bridge has no stop_at_layer that saves work: it stops when the last hook has fired.
    stop_by_raise = stop_early and adapt(model).backend == "bridge"
    stop = _stop_layer(model, resolved) if stop_early else None
    if stop is not None:
        # Even stop == n_layers pays: it skips ln_final and the unembedding.
        kwargs["stop_at_layer"] = stop
    elif adapt(model).backend == "hooked":
        kwargs.setdefault("return_type", None)
    fwd = [(n, make_hook(n)) for n in resolved]
    with torch.no_grad(), hooks(model, fwd=fwd), contextlib.suppress(_Reached):
        model(tokens, **kwargs)
    missing = [n for n in resolved if n not in store]
    if missing:
        raise RuntimeError(f"the forward pass never reached these hooks: {missing}")
    return ActivationCache({n: store[n] for n in resolved}, model)
