"""The one partial forward: run only what an intervention can change.

An intervention at layer l and position p leaves every earlier layer, and under causal attention
every earlier position, exactly as in the unchanged (base) run. :class:`PartialForward` runs the
base once, block by block, keeping each block's input residual and its keys and values; then
:meth:`PartialForward.run_from` restarts at block l with only positions ≥ p, attention reading the
base's keys and values for the earlier positions from a frozen cache, and returns the final
residual at the positions a metric reads (unembed them with :meth:`PartialForward.logits`, in large
batches). Where the block-level path does not apply (see :attr:`ModelAdapter.fast_capable`) it
falls back to whole forwards, with the same interface, so callers never branch on the model.

:func:`logits_at` is the same idea for a single run: the unembedding only at the positions asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.fused import fused_layers
from interp.hooks import HookFn, hooks

__all__ = ["BaseRun", "PartialForward", "keep_into", "logits_at"]


def keep_into(name: str, into: dict[str, Tensor]) -> HookFn:
    """A hook that stores its activation in ``into[name]`` (the name asked for)."""

    # Keyed by the name asked for: a bridge's hook point carries its canonical name.
    def keep(act: Tensor, hook: Any) -> None:
        into[name] = act

    return keep


@dataclass
class BaseRun:
    """The unchanged run: logits at the read positions, per-block residuals, keys and values."""

    tokens: Tensor
    logits: Tensor  # [batch, n_logit_pos, d_vocab]
    resid_pre: list[Tensor] = field(default_factory=list)
    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    shortformer: Tensor | None = None
    final: Tensor | None = None  # [batch, n_logit_pos, d_model] before the final norm


def _kv_entry_class() -> Any:
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    return TransformerLensKeyValueCacheEntry


class PartialForward:
    """A base run of ``tokens`` and forwards that restart from it at a layer and position.

    ``fast=None`` uses the block-level path wherever the model allows it. Counters:
    ``forwards`` (restarted forwards, a batched one counts once) and ``block_positions`` (the sum
    over forwards of blocks × positions × rows actually computed), for benchmarks.
    """

    def __init__(
        self,
        model: Any,
        tokens: Tensor,
        logit_pos: Sequence[int],
        *,
        fast: bool | None = None,
        keep: Sequence[str] = (),
    ):
        self.adapter = adapt(model)
        self.model = model
        self.fast = self.adapter.fast_capable if fast is None else fast
        self.mode = self.adapter.restart if self.fast else None
        if self.fast and not self.adapter.fast_capable:
            raise ValueError(
                "fast=True needs the block-level partial forward, which this model does not "
                f"support ({self.adapter}); use fast=None or False"
            )
        self.logit_pos = list(logit_pos)
        self.n, self.n_pos = tokens.shape
        self.kept: dict[str, Tensor] = {}  # activations at ``keep`` in the base run
        # Base run and restarts alike use fused norms and GELU: a cell that changes nothing
        # must reproduce the base run exactly.
        # Block 0's attention output, for the check of `mid`. (Not its residual after attention:
        # on a bridge that is the second norm's input, and a hook there unfuses that norm.)
        self._attn0: dict[str, Tensor] = {}
        keepers = [(name, self._keeper(name)) for name in keep]
        if self.mode is not None:
            keepers.append((self.adapter.attn_out_hook(0), keep_into("attn", self._attn0)))
        with hooks(model, fwd=keepers), fused_layers(model):
            self.base = self._base_run(tokens)
        if self.mode == "decoder":
            self._check_restart()
        self.tail = self.mode is not None and self._check_tail()
        self.mid_ok = self.mode is not None and self._check_mid()
        self.__dict__.pop("_final_all", None)
        self._attn0.clear()
        self.forwards = 0
        self.block_positions = 0

    def _keeper(self, name: str) -> HookFn:
        return keep_into(name, self.kept)

    def _base_run(self, tokens: Tensor) -> BaseRun:
        model = self.model
        with torch.no_grad():
            if self.mode is None:
                return BaseRun(tokens, model(tokens)[:, self.logit_pos])
            if self.mode == "decoder":
                return self._base_by_hooks(tokens)
            cfg = model.cfg
            entry_cls = _kv_entry_class()
            # The same computation as model(tokens), block by block, so each block's keys and
            # values are captured exactly as attention caches them (after any qk-norm or clip).
            resid, _, spe, _ = model.input_to_embed(tokens)
            resid_pre, keys, values = [], [], []
            for block in model.blocks:
                entry = entry_cls.init_cache_entry(cfg, cfg.device, self.n)
                resid_pre.append(resid)
                resid = block(resid, past_kv_cache_entry=entry, shortformer_pos_embed=spe)
                keys.append(entry.past_keys)
                values.append(entry.past_values)
            self._final_all = resid
            final = resid[:, self.logit_pos]
            logits = self.adapter.unembed(final)
            return BaseRun(tokens, logits, resid_pre, keys, values, spe, final)

    def _base_by_hooks(self, tokens: Tensor) -> BaseRun:
        """The base run of a bridge, read by hooks: each block's input residual, its rotated
        keys and its values (as the HF attention caches them, ``[batch, kv_head, pos, d]``) and
        the final residual."""
        n_layers = self.adapter.spec.n_layers
        got: dict[str, Tensor] = {}
        resid = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
        key_hook = self.adapter.cached_key_hook
        keys = [f"blocks.{i}.{key_hook}" for i in range(n_layers)]
        values = [f"blocks.{i}.attn.hook_v" for i in range(n_layers)]
        names = [*resid, *keys, *values, self.adapter.final_hook]
        with hooks(self.model, fwd=[(name, keep_into(name, got)) for name in names]):
            self.model(tokens, return_type=None)
        final_all = got[self.adapter.final_hook]
        final = final_all[:, self.logit_pos]
        if any(k not in got for k in keys + values):  # this attention does not expose them
            self._fall_back()
            return BaseRun(tokens, self.adapter.unembed(final))
        base = BaseRun(
            tokens,
            self.adapter.unembed(final),
            [got[k] for k in resid],
            [got[k].transpose(1, 2) for k in keys],
            [got[k].transpose(1, 2) for k in values],
            final=final,
        )
        self._final_all = final_all
        return base

    def _check_restart(self) -> None:
        """Check the restart once, on the last block from the middle position (outside any
        caller's hooks): an architecture whose decoder layers do not compute there what the
        full forward did falls back to whole forwards (slower, never wrong)."""
        p0 = self.n_pos // 2
        try:
            with torch.no_grad():
                again = self._decoder_blocks(self.adapter.spec.n_layers - 1, p0, 1)
            want = self._final_all[:, p0:]
            ok = bool(torch.allclose(again, want, rtol=1e-4, atol=1e-5))
        except Exception:  # noqa: BLE001 - any failure of the restart means: do not use it
            ok = False
        if not ok:
            self._fall_back()

    def _check_tail(self) -> bool:
        """Check once that the last block, run for its trailing rows only (:meth:`_tail_hooks`),
        gives the full forward's final residual there: restarted at the middle position, the last
        two rows kept. Where it does not (an architecture whose block reshapes by its input's
        length, say), every restart runs the last block whole."""
        last = self.adapter.spec.n_layers - 1
        p0 = self.n_pos // 2
        t0 = max(0, self.n_pos - 2 - p0)
        if t0 == 0 or _hooked(self.model.blocks[last]):
            return False
        try:
            with torch.no_grad(), fused_layers(self.model):
                if self.mode == "decoder":
                    got = self._decoder_blocks(last, p0, 1, tail=t0)
                else:
                    got = self._blocks_from_raw(last, p0, 1, tail=t0)
            want = self._final_all[:, p0 + t0 :]
            return bool(torch.allclose(got[:, -want.shape[1] :], want, rtol=1e-4, atol=1e-5))
        except Exception:  # noqa: BLE001 - any failure means: run the last block whole
            return False

    def _check_mid(self) -> bool:
        """Check once that block 0 run from its residual after attention (its input plus its
        attention's output; :meth:`_mlp_half`) gives the next block's input (or the final
        residual) of the base run."""
        attn = self._attn0.get("attn")
        if attn is None or not self.base.resid_pre or _hooked(self.model.blocks[0]):
            return False
        mid = self.base.resid_pre[0] + attn
        n_layers = self.adapter.spec.n_layers
        want = self.base.resid_pre[1] if n_layers > 1 else self._final_all
        try:
            with torch.no_grad(), fused_layers(self.model):
                got = self._mlp_half(0, mid)
            return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5))
        except Exception:  # noqa: BLE001 - any failure means: restart at the block's start
            return False

    def mid_usable(self, layer: int) -> bool:
        """Whether :meth:`run_from` can take ``mid=`` at ``layer`` now: the check passed and no
        hook is on that block (a hook there would miss the attention it skips)."""
        return self.mid_ok and not _hooked(self.model.blocks[layer])

    def _mlp_half(self, layer: int, mid: Tensor) -> Tensor:
        """Block ``layer`` from its residual after attention: its MLP, added to it."""
        block = self.model.blocks[layer]
        if self.mode == "decoder":
            out = block.mlp(block.ln2(mid))
            return mid + (out[0] if isinstance(out, tuple) else out)
        cfg = self.model.cfg
        if cfg.parallel_attn_mlp or cfg.use_normalization_before_and_after:
            raise NotImplementedError("the MLP does not read the residual after attention alone")
        mid = block.hook_resid_mid(mid)
        if cfg.attn_only:
            return block.hook_resid_post(mid)
        mlp_in = block.hook_mlp_in(mid.clone()) if cfg.use_hook_mlp_in else mid
        return block.hook_resid_post(mid + block.apply_mlp(block.ln2(mlp_in)))

    def _fall_back(self) -> None:
        self.mode = None
        self.fast = False

    def narrow(self, positions: Sequence[int]) -> None:
        """From now on, read logits only at ``positions`` (some of the positions asked for)."""
        idx = [self.logit_pos.index(p) for p in positions]
        self.logit_pos = list(positions)
        self.base.logits = self.base.logits[:, idx]
        if self.base.final is not None:
            self.base.final = self.base.final[:, idx]

    def run_from(
        self,
        layer: int,
        p0: int,
        k: int,
        fwd: Sequence[tuple[Any, HookFn]] = (),
        *,
        mid: Tensor | None = None,
    ) -> Tensor:
        """``k`` stacked copies of the base run, changed by the hooks ``fwd``, from ``layer`` and
        position ``p0`` on: ``[k * batch, n_logit_pos, ·]``.

        ``mid`` (``[k * batch, n_pos - p0, d_model]``, only where :meth:`mid_usable`): block
        ``layer``'s residual after attention at positions from ``p0`` on, for a change that
        only that attention's output carries (a head's ``z``, ``attn_out``): the block then
        runs its MLP only, its attention unrun.

        The block-level path returns final residuals (``d_model`` wide; unembed them with
        :meth:`logits`, since TL's unembedding copies its whole weight on every call); the
        whole-forward path returns logits. ``is_residual`` says which.
        """
        if mid is not None and not self.mid_usable(layer):
            raise ValueError(f"mid= cannot be used at layer {layer}: check mid_usable() first")
        self.forwards += 1
        n_layers = self.adapter.spec.n_layers
        with torch.no_grad(), hooks(self.model, fwd=fwd), fused_layers(self.model):
            if self.mode is None:
                self.block_positions += k * self.n * self.n_pos * n_layers
                return self.model(self.base.tokens.repeat(k, 1))[:, self.logit_pos]
            if all(p < p0 for p in self.logit_pos):  # the metric reads nothing this changes
                assert self.base.final is not None
                return self.base.final.repeat(k, 1, 1)
            self.block_positions += k * self.n * (self.n_pos - p0) * (n_layers - layer)
            tail = self._tail_start(p0)
            resid = None
            if mid is not None:  # the MLP half of block `layer`, then the blocks after it
                last = layer == n_layers - 1
                resid = self._mlp_half(layer, mid[:, tail:] if last and tail else mid)
                layer += 1
                if last:
                    return self._finish(resid, p0 + (tail or 0), k)
            if self.mode == "decoder":
                out = self._decoder_blocks(layer, p0, k, tail=tail, resid=resid)
                return self._finish(out, p0, k)
            out = self._blocks_from_raw(layer, p0, k, tail=tail, resid=resid)
            return self._finish(out, p0 + (tail or 0), k)

    @property
    def is_residual(self) -> bool:
        return self.mode is not None

    def _tail_start(self, p0: int) -> int | None:
        """The first restarted row the last block must compute (rows before it feed only the
        other rows' keys and values there), or None to run it whole."""
        if not self.tail:
            return None
        t0 = min(p for p in self.logit_pos if p >= p0) - p0
        last = self.model.blocks[self.adapter.spec.n_layers - 1]
        return t0 if t0 > 0 and not _hooked(last) else None

    def _tail_hooks(self, t0: int) -> list[tuple[str, HookFn]]:
        """Hooks that make the last block compute its rows from ``t0`` on only. A
        HookedTransformer block computes every row's keys and values, then attention for the kept
        queries (the pattern's rows sliced), puts the attention output back at full length (zeros
        above: those rows are never read) and runs the MLP on the kept rows, returning those. A
        bridge's block runs attention whole and the MLP on the kept rows, returning every row
        (the kept ones right)."""
        last = f"blocks.{self.adapter.spec.n_layers - 1}"

        def rows(x: Tensor, hook: Any) -> Tensor:
            return x[..., t0:, :]

        def pad(x: Tensor, hook: Any) -> Tensor:
            full = x.new_zeros(x.shape[0], t0 + x.shape[1], *x.shape[2:])
            full[:, t0:] = x
            return full

        if self.mode == "decoder":
            # A bridge's attention reshapes its output by its input's length, so it runs whole;
            # the HF layer adds the residual itself, so the MLP's output goes back at full length.
            return [(f"{last}.ln2.hook_in", rows), (f"{last}.mlp.hook_out", pad)]
        return [
            (f"{last}.attn.hook_pattern", rows),
            (f"{last}.hook_attn_out", pad),
            (f"{last}.hook_resid_mid", rows),
        ]

    def _blocks_from_raw(
        self,
        layer: int,
        p0: int,
        k: int,
        tail: int | None = None,
        resid: Tensor | None = None,
    ) -> Tensor:
        """The residual after the last block, restarted at ``layer`` and ``p0`` (from ``resid``
        there, by default the base run's): rows from ``p0 + tail`` on (from ``p0`` when
        ``tail`` is None)."""
        model, base = self.model, self.base
        entry_cls = _kv_entry_class()
        if resid is None:
            resid = base.resid_pre[layer][:, p0:].repeat(k, 1, 1)
        spe = None if base.shortformer is None else base.shortformer[:, p0:].repeat(k, 1, 1)
        n_layers = self.adapter.spec.n_layers
        for i in range(layer, n_layers):
            entry = entry_cls(
                base.keys[i][:, :p0].repeat(k, 1, 1, 1),
                base.values[i][:, :p0].repeat(k, 1, 1, 1),
                frozen=True,
            )
            with hooks(model, fwd=self._tail_hooks(tail) if tail and i == n_layers - 1 else ()):
                resid = model.blocks[i](resid, past_kv_cache_entry=entry, shortformer_pos_embed=spe)
        return resid

    def _finish(self, resid: Tensor, p0: int, k: int) -> Tensor:
        """Final residuals at the read positions: ``resid``'s rows hold positions from ``p0``
        on; positions before p0 are unchanged, so they keep the base run's."""
        assert self.base.final is not None
        out = self.base.final.repeat(k, 1, 1)
        new = [j for j, p in enumerate(self.logit_pos) if p >= p0]
        if new:
            out[:, new] = resid[:, [self.logit_pos[j] - p0 for j in new]]
        return out

    def _decoder_blocks(
        self,
        layer: int,
        p0: int,
        k: int,
        tail: int | None = None,
        resid: Tensor | None = None,
    ) -> Tensor:
        """The residual after the last block at positions >= p0, restarted at ``layer`` from
        ``resid`` (default: the base run's); right from row ``tail`` on only, when given."""
        # A bridge's blocks wrap the HF decoder layers: called in turn on positions >= p0, with
        # their rotary embeddings (if any), a causal mask over every position and the base run's keys and
        # values before p0 in a fresh cache, they compute what the full forward does there,
        # hooks included. The cache goes in as ``layer_past``, which the bridge's attention
        # reads (transformers renames ``past_key_values`` to ``cache``, which it does not).
        from transformers import DynamicCache

        model, base = self.model, self.base
        if resid is None:
            resid = base.resid_pre[layer][:, p0:].repeat(k, 1, 1)
        pos = torch.arange(p0, self.n_pos, device=resid.device)[None]
        rotary = {}
        if self.adapter.rotary:  # absolute positions are in the residual stream already
            emb = model.original_model.base_model.rotary_emb(resid, position_ids=pos)
            rotary = {"position_embeddings": emb}
        mask = torch.full((self.n_pos - p0, self.n_pos), float("-inf"), device=resid.device)
        mask = mask.triu(p0 + 1).to(resid.dtype)[None, None]
        last = self.adapter.spec.n_layers - 1
        for i in range(layer, last + 1):
            # A cache per block holding only its own layer (the others stay empty): each block's
            # keys and values, grown by its new positions, are freed once it has run, so a
            # restart's memory does not grow with the number of layers it runs.
            cache = DynamicCache()
            cache.update(
                base.keys[i][:, :, :p0].repeat(k, 1, 1, 1),
                base.values[i][:, :, :p0].repeat(k, 1, 1, 1),
                i,
            )
            with hooks(model, fwd=self._tail_hooks(tail) if tail and i == last else ()):
                out = model.blocks[i](
                    resid, attention_mask=mask, position_ids=pos, layer_past=cache, **rotary
                )
            del cache
            resid = out[0] if isinstance(out, tuple) else out
        return resid

    def logits(self, final: Tensor) -> Tensor:
        """Logits from final residuals ``[rows, pos, d_model]`` (the block-level path's output)."""
        with torch.no_grad():
            return self.adapter.unembed(final)


def _hooked(module: Any) -> bool:
    """Whether any hook point inside ``module`` has a forward hook attached."""
    return any(
        getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None)
        for m in module.modules()
        if type(m).__name__ == "HookPoint"
    )


def logits_at(model: Any, tokens: Tensor, positions: Sequence[int] | None) -> Tensor:
    """Logits ``[batch, len(positions), d_vocab]``, unembedding only those positions where the
    model allows it (all positions when ``positions`` is None). Differentiable."""
    if positions is None:
        return model(tokens)
    adapter = adapt(model)
    if adapter.restart == "blocks":
        resid = model(tokens, stop_at_layer=adapter.spec.n_layers)
    elif adapter.restart == "decoder":  # the final residual, read by a hook (gradients flow)
        got: dict[str, Tensor] = {}
        with hooks(model, fwd=[(adapter.final_hook, keep_into(adapter.final_hook, got))]):
            model(tokens, return_type=None)
        resid = got[adapter.final_hook]
    else:
        return model(tokens)[:, list(positions)]
    return adapter.unembed(resid[:, list(positions)])


MAX_TOKENS = 16384  # the one batching knob's default: rows × positions in one forward


def rows_for(max_tokens: int, n_pos: int) -> int:
    """How many sequences of ``n_pos`` tokens fit one forward of at most ``max_tokens`` tokens
    (at least one)."""
    return max(1, int(max_tokens) // max(1, int(n_pos)))
