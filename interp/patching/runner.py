"""Patched forwards for a sweep: cells grouped by where they can first change the run.

Cells that share (layer l, first position p) are stacked along the batch axis of one restarted
forward of :class:`interp.core.forward.PartialForward`, within a token budget. Every patch is a
hook written here and installed by the partial forward through :func:`interp.hooks.hooks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.forward import PartialForward
from interp.core.sites import Cell, Site
from interp.hooks import hook_layer

__all__ = ["PatchRunner"]

# Sites that only the attention's output carries into the residual stream: a patch there is a
# known change of the residual after attention, so the restart skips that attention.
ATTENTION_OUTPUT_SITES = ("z", "attn_out")


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
        # layer -> its attention output's hook, where the site lets a restart skip attention
        self.attn_outs: dict[int, str] = {}
        if site.name in ATTENTION_OUTPUT_SITES:
            adapter = adapt(model)
            layers = {hook_layer(name) for name in keep}
            self.attn_outs = {la: adapter.attn_out_hook(la) for la in layers if la is not None}
        keep = [*keep, *self.attn_outs.values()]
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
        """Drop the base run's activations, except those a restart after attention reads."""
        if not self.attn_outs or not self.forward.is_residual:
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

        if layer in self.attn_outs and self.forward.is_residual and self.forward.mid_usable(layer):
            mid = self._mid(layer, p0, cells, source)
            out = self.forward.run_from(layer, p0, k, mid=mid)
        else:
            out = self.forward.run_from(layer, p0, k, [(self.site.hook_name(layer), patch)])
        return out.reshape(k, n, *out.shape[1:])

    @torch.no_grad()
    def _mid(self, layer: int, p0: int, cells: Sequence[Cell], source: Tensor) -> Tensor:
        """Each cell's residual after block ``layer``'s attention, from ``p0`` on: the base
        run's plus the patch's change of the attention output (through W_O for a head's z)."""
        kept = self.forward.kept
        base_site = kept[self.site.hook_name(layer)]
        base_attn = kept[self.attn_outs[layer]][:, p0:]
        base_mid = self.forward.base.resid_pre[layer][:, p0:] + base_attn  # as the block adds
        layout = self.site.layout
        mid = base_mid.repeat(len(cells), 1, 1)
        w_o = self.forward.adapter.w_o(layer) if self.site.name == "z" else None
        for c, cell in enumerate(cells):
            at = (slice(None), *cell.source_index(layout, p0))
            delta = source[at].to(base_site.dtype) - base_site[at]
            rows = mid[c * self.n : (c + 1) * self.n]
            pos = cell.index(layout, p0)[0]
            if w_o is None:  # attn_out: the change itself
                rows[:, pos] += delta
            elif cell.head is not None:  # one head: its d_head columns of W_O
                rows[:, pos] += delta @ w_o[cell.head].to(delta.dtype)
            else:  # every head at once
                rows[:, pos] += torch.einsum("...hd,hdm->...m", delta, w_o.to(delta.dtype))
        return mid

    def logits(self, final: Tensor) -> Tensor:
        return self.forward.logits(final)
