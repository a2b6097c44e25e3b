"""Activation sources for training: anything that yields ``[batch, d_in]`` tensors, or pairs
``(x [batch, d_in], y [batch, d_out])`` for a transcoder (``hook=(input hook, output hook)``).

- :func:`store_source`: an :class:`~interp.store.ActivationStore`, seeded and resumable.
- :func:`model_source`: a model run on the fly over a corpus, stopping after the hooked layer,
  with a shuffle buffer so rows of one context are spread over many batches.
- :func:`rebatch`: any iterator of row blocks cut into exact batches.

Pairs are the same rows of both hooks: a store's batch order depends only on the seed, the batch
size and the shards, never on the hook read, and a model's rows are shuffled by one permutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["model_source", "rebatch", "store_source"]


Hooks = str | tuple[str, str]


def store_source(
    store: Any, batch_size: int, skip: int = 0, *, seed: int = 0, hook: Hooks | None = None
) -> Iterator[Tensor] | Iterator[tuple[Tensor, Tensor]]:
    """Endless seeded batches from a store; ``skip`` resumes after that many batches. A pair of
    hooks gives ``(x, y)`` batches, row i of both from the same token."""
    if isinstance(hook, tuple):
        # Two readers on one schedule (the same seed): the same rows, in the same order.
        xs, ys = (store_source(store, batch_size, skip, seed=seed, hook=h) for h in hook)
        return zip(xs, ys, strict=True)  # type: ignore[arg-type]
    return store.batches(batch_size, hook=hook, seed=seed, epochs=None, drop_last=True, skip=skip)  # type: ignore[no-any-return]


def rebatch(blocks: Iterable[Tensor], batch_size: int) -> Iterator[Float[Tensor, "batch d"]]:
    """Cut a stream of ``[n_i, d]`` blocks into ``[batch_size, d]`` batches (a short tail is dropped)."""
    pending: list[Tensor] = []
    n = 0
    for block in blocks:
        pending.append(block)
        n += len(block)
        while n >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, n = ([rest] if len(rest) else []), len(rest)


def model_source(
    model: Any,
    hook: Hooks,
    contexts: Iterable[Tensor],
    batch_size: int,
    *,
    max_tokens: int = 1024,
    buffer_batches: int = 8,
    drop_bos: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Iterator[Float[Tensor, "batch d"]] | Iterator[tuple[Tensor, Tensor]]:
    """Stream activations of ``hook`` straight from the model (``stop_at_layer``: no wasted layers).

    Rows fill a buffer of ``buffer_batches`` batches that is shuffled (seeded) before it is served,
    so consecutive training rows rarely share a context. ``max_tokens``: contexts × positions per
    forward (at least one context); ``batch_size`` is rows per training batch. A pair of hooks
    yields ``(x, y)`` pairs from one forward per chunk, shuffled together.
    """
    from interp.cache import cache_activations
    from interp.core.forward import rows_for
    from interp.validate import check_int

    check_int(max_tokens, "max_tokens", minimum=1)

    gen = torch.Generator().manual_seed(seed)
    first = 1 if drop_bos else 0

    def blocks() -> Iterator[Tensor]:
        chunk: list[Tensor] = []
        for ctx in contexts:
            chunk.append(torch.as_tensor(ctx))
            if len(chunk) == rows_for(max_tokens, chunk[0].shape[-1]):
                yield _acts(chunk)
                chunk = []
        if chunk:
            yield _acts(chunk)

    names = list(hook) if isinstance(hook, tuple) else [hook]

    def _acts(chunk: list[Tensor]) -> Tensor:
        # One forward for both hooks; their rows side by side, so one permutation shuffles both.
        toks = torch.stack(chunk).to(model.cfg.device)
        cache = cache_activations(
            model, toks, names, positions=slice(first, None), dtype=dtype, device="cpu"
        )
        widths[:] = [int(cache[n].shape[-1]) for n in names]
        return torch.cat([cache[n].reshape(-1, cache[n].shape[-1]) for n in names], -1)

    widths: list[int] = []  # of each hook's part of a row, set by the first forward

    def serve(rows: Tensor) -> Iterator[Any]:
        for batch in rows.split(batch_size):
            yield tuple(batch.split(widths, -1)) if len(names) > 1 else batch

    buffer: list[Tensor] = []
    n = 0
    for block in blocks():
        buffer.append(block)
        n += len(block)
        if n >= batch_size * buffer_batches:
            rows = torch.cat(buffer)
            rows = rows[torch.randperm(len(rows), generator=gen)]
            n_full = len(rows) // batch_size * batch_size
            yield from serve(rows[:n_full])
            buffer, n = [rows[n_full:]], len(rows) - n_full
    if n >= batch_size:  # the last, partly filled buffer: its full batches too
        rows = torch.cat(buffer)
        rows = rows[torch.randperm(len(rows), generator=gen)]
        yield from serve(rows[: len(rows) // batch_size * batch_size])
