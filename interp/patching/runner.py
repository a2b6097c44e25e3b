"""Batched patched forwards that skip what a patch cannot change.

A patch at layer l and position p leaves every earlier layer, and (under causal attention) every
earlier position, exactly as in the base run. For a ``HookedTransformer`` the fast runner
therefore starts at block l from the base run's residual stream, feeds only positions ≥ p, and
lets attention read the base run's keys and values for positions < p from a frozen KV cache; the
final norm and unembedding run only at the positions the metric reads. Cells that share (l, p)
are stacked along the batch axis of one forward. Any other TL model (e.g. a ``TransformerBridge``)
gets the generic runner: whole forwards, many cells stacked in one batch.

Every patch is written by a hook installed with :func:`interp.hooks.hooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities import apply_softcap

from interp.hooks import TLModel, hooks
from interp.patching.sites import Cell, Site

__all__ = ["BaseRun", "PatchRunner", "is_fast_capable"]


def is_fast_capable(model: TLModel) -> bool:
    """Whether the block-level fast path applies (HookedTransformer with causal attention)."""
    from transformer_lens import HookedTransformer

    cfg = model.cfg
    return (
        isinstance(model, HookedTransformer)
        and getattr(cfg, "attention_dir", "causal") == "causal"
        and getattr(cfg, "positional_embedding_type", "standard")
        in ("standard", "rotary", "shortformer")
        and getattr(cfg, "n_devices", 1) == 1
    )


@dataclass
class BaseRun:
    """What the fast runner needs from the unpatched run: per-layer residuals, keys and values."""

    tokens: Tensor
    logits: Tensor  # [batch, n_logit_pos, d_vocab] at ``logit_pos``
    resid_pre: list[Tensor] = field(default_factory=list)
    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    shortformer: Tensor | None = None
    final: Tensor | None = None  # [batch, n_logit_pos, d_model] before the final norm


class PatchRunner:
    """Runs groups of cells of one site against one base input and one source activation."""

    def __init__(
        self,
        model: TLModel,
        base_tokens: Tensor,
        site: Site,
        logit_pos: Sequence[int],
        *,
        fast: bool,
        max_tokens: int = 16384,
        keep: Sequence[str] = (),
    ):
        self.model, self.site, self.fast = model, site, fast
        self.logit_pos = list(logit_pos)
        self.max_tokens = max_tokens
        self.n, self.n_pos = base_tokens.shape
        # The base run also keeps the activations at ``keep`` (the swept site's hooks).
        self.base_acts: dict[str, Tensor] = {}
        with hooks(model, fwd=[(name, self._keeper(name)) for name in keep]):
            self.base = self._base_run(base_tokens)
        self.forwards = 0  # patched forwards run (batched ones count once)
        self.block_positions = 0  # sum over forwards of blocks × positions × rows

    # -- base run ---------------------------------------------------------------------------
    def _keeper(self, name: str) -> Callable[[Tensor, Any], None]:
        # Keyed by the name asked for: a bridge's hook point may carry another (aliased) name.
        def keep(act: Tensor, hook: Any) -> None:
            self.base_acts[name] = act

        return keep

    def _base_run(self, tokens: Tensor) -> BaseRun:
        model = self.model
        with torch.no_grad():
            if not self.fast:
                logits = model(tokens)
                return BaseRun(tokens, logits[:, self.logit_pos])
            cfg = model.cfg
            # The same computation as model(tokens), block by block, so each block's keys and
            # values are captured exactly as attention caches them (after any qk-norm or clip).
            resid, _, spe, _ = model.input_to_embed(tokens)
            resid_pre, keys, values = [], [], []
            for block in model.blocks:
                entry = TransformerLensKeyValueCacheEntry.init_cache_entry(cfg, cfg.device, self.n)
                resid_pre.append(resid)
                resid = block(resid, past_kv_cache_entry=entry, shortformer_pos_embed=spe)
                keys.append(entry.past_keys)
                values.append(entry.past_values)
            final = resid[:, self.logit_pos]
            return BaseRun(tokens, self._unembed(final), resid_pre, keys, values, spe, final)

    def _unembed(self, resid: Tensor) -> Tensor:
        model = self.model
        if model.cfg.normalization_type is not None:
            resid = model.ln_final(resid)
        return apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap)

    # -- grouping ---------------------------------------------------------------------------
    def groups(self, cells: Sequence[Cell]) -> list[tuple[int, int, list[int]]]:
        """(layer, first position, cell indices) batches, each within the token budget."""
        keyed: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(cells):
            p0 = c.first_pos if self.fast else 0
            keyed.setdefault((c.layer, p0), []).append(i)
        out = []
        for (layer, p0), idx in sorted(keyed.items()):
            per = max(1, self.max_tokens // max(1, self.n * (self.n_pos - p0)))
            out += [(layer, p0, idx[i : i + per]) for i in range(0, len(idx), per)]
        return out

    # -- one batched forward ----------------------------------------------------------------
    def run(self, layer: int, p0: int, cells: Sequence[Cell], source: Tensor) -> Tensor:
        """Each cell patched, ``[len(cells), batch, n_logit_pos, ·]``.

        The fast runner returns the final residual stream (``d_model`` wide), to be unembedded
        in large batches by :meth:`logits` (TL's unembedding copies its whole weight on every
        call, so one call per forward would dominate); the generic runner returns logits.
        """
        n, k = self.n, len(cells)
        layout = self.site.layout

        def patch(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            for c, cell in enumerate(cells):
                dst = (slice(c * n, (c + 1) * n), *cell.index(layout, p0))
                act[dst] = source[(slice(None), *cell.index(layout, 0))].to(act.dtype)
            return act

        fwd: list[tuple[Any, Callable[..., Any]]] = [(self.site.hook_name(layer), patch)]
        self.forwards += 1
        with torch.no_grad(), hooks(self.model, fwd=fwd):
            if not self.fast:
                out = self.model(self.base.tokens.repeat(k, 1))[:, self.logit_pos]
                self.block_positions += k * n * self.n_pos * self.model.cfg.n_layers
            else:
                out = self._run_from(layer, p0, k)
        return out.reshape(k, n, *out.shape[1:])

    def _run_from(self, layer: int, p0: int, k: int) -> Tensor:
        model, base = self.model, self.base
        resid = base.resid_pre[layer][:, p0:].repeat(k, 1, 1)
        spe = None if base.shortformer is None else base.shortformer[:, p0:].repeat(k, 1, 1)
        n_layers = model.cfg.n_layers
        for i in range(layer, n_layers):
            entry = TransformerLensKeyValueCacheEntry(
                base.keys[i][:, :p0].repeat(k, 1, 1, 1),
                base.values[i][:, :p0].repeat(k, 1, 1, 1),
                frozen=True,
            )
            resid = model.blocks[i](resid, past_kv_cache_entry=entry, shortformer_pos_embed=spe)
        self.block_positions += k * self.n * (self.n_pos - p0) * (n_layers - layer)
        # Positions before p0 are unchanged: they keep the base run's final residual.
        assert base.final is not None
        out = base.final.repeat(k, 1, 1)
        new = [j for j, p in enumerate(self.logit_pos) if p >= p0]
        if new:
            out[:, new] = resid[:, [self.logit_pos[j] - p0 for j in new]]
        return out

    def logits(self, final: Tensor) -> Tensor:
        """Logits from final residuals ``[rows, pos, d_model]`` (fast runner's output)."""
        with torch.no_grad():
            return self._unembed(final)
