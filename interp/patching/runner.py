"""Patched forwards for a sweep: cells grouped by where they can first change the run.

Cells that share (layer l, first position p) are stacked along the batch axis of one restarted
forward of :class:`interp.core.forward.PartialForward`, within a token budget. Every patch is a
hook written here and installed by the partial forward through :func:`interp.hooks.hooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from interp.core.forward import PartialForward
from interp.core.sites import Cell, Site

__all__ = ["PatchRunner"]


class PatchRunner:
    """Runs groups of cells of one site against one base input and one source activation."""

    def __init__(
        self,
        model: Any,
        base_tokens: Tensor,
        site: Site,
        logit_pos: Sequence[int],
        *,
        fast: bool | None,
        max_tokens: int = 16384,
        keep: Sequence[str] = (),
    ):
        self.site = site
        self.max_tokens = max_tokens
        self.n, self.n_pos = base_tokens.shape
        self.forward = PartialForward(model, base_tokens, logit_pos, fast=fast, keep=keep)
        self.fast = self.forward.fast
        # A restarted forward skips earlier positions too; whole forwards run them all.
        self.skip_positions = self.forward.mode is not None

    @property
    def base_logits(self) -> Tensor:
        """The base run's logits at the positions asked for, ``[batch, n_logit_pos, d_vocab]``."""
        return self.forward.base.logits

    @property
    def base_acts(self) -> dict[str, Tensor]:
        """The swept site's activations in the base run (``keep``)."""
        return self.forward.kept

    def release_base_acts(self) -> None:
        self.forward.kept = {}

    @property
    def forwards(self) -> int:
        return self.forward.forwards

    def groups(
        self, cells: Sequence[Cell], starts: Sequence[int] | None = None
    ) -> list[tuple[int, int, list[int]]]:
        """(layer, first position, cell indices) batches, each within the token budget.
        ``starts``: where each cell can first change the run (default: ``Cell.first_pos``)."""
        keyed: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(cells):
            first = c.first_pos if starts is None else starts[i]
            p0 = first if self.skip_positions else 0
            keyed.setdefault((c.layer, p0), []).append(i)
        out = []
        for (layer, p0), idx in sorted(keyed.items()):
            per = max(1, self.max_tokens // max(1, self.n * (self.n_pos - p0)))
            out += [(layer, p0, idx[i : i + per]) for i in range(0, len(idx), per)]
        return out

    def run(self, layer: int, p0: int, cells: Sequence[Cell], source: Tensor) -> Tensor:
        """Each cell patched, ``[len(cells), batch, n_logit_pos, ·]`` (final residuals on the
        block-level path, to be unembedded by :meth:`logits`; logits otherwise)."""
        n, k = self.n, len(cells)
        layout = self.site.layout

        def patch(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            for c, cell in enumerate(cells):
                dst = (slice(c * n, (c + 1) * n), *cell.index(layout, p0))
                act[dst] = source[(slice(None), *cell.source_index(layout, p0))].to(act.dtype)
            return act

        out = self.forward.run_from(layer, p0, k, [(self.site.hook_name(layer), patch)])
        return out.reshape(k, n, *out.shape[1:])

    def logits(self, final: Tensor) -> Tensor:
        return self.forward.logits(final)
