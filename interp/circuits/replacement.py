"""The local replacement model of one prompt (Ameisen et al., 2025).

On the prompt, every attention pattern (``blocks.L.attn.hook_pattern``) and every normalisation
denominator (``hook_scale`` of each LayerNorm/RMSNorm, ``ln_final`` included) is frozen at its
value; at each layer with a transcoder the MLP output is the transcoder's output on the live MLP
input plus a frozen error term (real MLP output − transcoder output), and a layer without one is
frozen whole (an error node per position). On the prompt the replacement's logits therefore equal
the model's; away from it, the transcoders' features recompute and everything else stays fixed.
By default position 0 is frozen whole at every layer (its error node is the whole MLP output; no
feature there): many models keep an input-independent attention sink there, of huge norm, that
transcoders are not trained on (``python -m saes.transcoders`` drops it) and circuit-tracer
leaves out of its features too. All of it is hooks installed through :func:`interp.hooks.hooks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.core.adapter import adapt
from interp.core.forward import keep_into
from interp.hooks import HookFn, hook_names, hooks

__all__ = [
    "INPUT_HOOK",
    "OUTPUT_HOOK",
    "FeatureEdit",
    "LocalReplacement",
    "check_prompt",
    "check_transcoders",
]

INPUT_HOOK = "blocks.{layer}.ln2.hook_normalized"
"""Where a transcoder reads the MLP's input (the second norm's output; ``hook_resid_mid`` in a
model without norms)."""
OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"
EMBED_HOOK = "blocks.0.hook_resid_pre"  # token (+ learned position) embedding: the token nodes


def check_transcoders(model: Any, transcoders: Mapping[int, Any]) -> dict[int, Any]:
    """``{layer: transcoder}`` after checking layers and widths against the model."""
    spec = adapt(model).spec
    if spec.attn_only:
        raise ValueError("an attention-only model has no MLPs to replace with transcoders")
    if not isinstance(transcoders, Mapping):
        raise TypeError(
            f"transcoders must map a layer to a saes.Transcoder, e.g. {{0: tc}}; got "
            f"{type(transcoders).__name__}"
        )
    out: dict[int, Any] = {}
    for layer, tc in transcoders.items():
        if not isinstance(layer, int) or not 0 <= layer < spec.n_layers:
            raise ValueError(
                f"transcoder layer {layer!r} is not a layer of this model (0–{spec.n_layers - 1})"
            )
        if getattr(tc, "kind", None) != "transcoder":
            raise TypeError(
                f"layer {layer}: expected a saes.Transcoder (an MLP input → output map); got "
                f"{type(tc).__name__}{' (an SAE reconstructs its input)' if getattr(tc, 'kind', '') == 'sae' else ''}"
            )
        trained = tc.cfg.metadata.get("layer")
        if trained is not None and int(trained) != layer:
            raise ValueError(
                f"the transcoder given for layer {layer} was trained on layer {trained} "
                f"(its cfg.metadata['layer']): pass it as {{{trained}: transcoder}}"
            )
        d_in, d_out = int(tc.cfg.d_in), int(tc.cfg.out_width)
        if (d_in, d_out) != (spec.d_model, spec.d_model):
            raise ValueError(
                f"layer {layer}: the transcoder maps width {d_in} → {d_out}, but this model's MLP "
                f"reads and writes d_model = {spec.d_model}: it was trained for another model"
            )
        out[layer] = tc
    return dict(sorted(out.items()))


def check_prompt(model: Any, tokens: Tensor) -> Tensor:
    """``tokens`` as ``[1, pos]`` after checking it fits the model's context."""
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError(
            f"one prompt at a time: expected tokens [pos] or [1, pos], got {tuple(tokens.shape)}"
        )
    n_ctx = adapt(model).spec.n_ctx
    if not 0 < tokens.shape[1] <= n_ctx:
        raise ValueError(
            f"the prompt has {tokens.shape[1]} tokens; this model's context is {n_ctx} tokens"
        )
    return tokens


@dataclass(frozen=True)
class FeatureEdit:
    """Set feature ``feature`` of the transcoder at ``layer`` to ``value`` at ``pos``."""

    layer: int
    pos: int
    feature: int
    value: float


class _Stop(Exception):
    """Raised from the last hook a caller needs, so the rest of the forward is not run."""


class LocalReplacement:
    """The frozen quantities of one prompt and the hooks that make the replacement model.

    Built by :meth:`from_prompt` (one forward pass). ``acts[layer]`` are the transcoder's
    activations ``[pos, d_sae]``, ``errors[layer]`` the error node vectors ``[pos, d_model]``
    (the whole MLP output where there is no transcoder, and at position 0 unless
    ``skip_position_0=False``), ``embed`` the token nodes' vectors.
    """

    def __init__(
        self,
        model: Any,
        tokens: Tensor,
        transcoders: Mapping[int, Any],
        *,
        skip_position_0: bool = True,
    ):
        self.model = model
        self.first = 1 if skip_position_0 else 0  # the first position with feature nodes
        self.tokens = check_prompt(model, tokens)
        self.transcoders = check_transcoders(model, transcoders)
        self.spec = adapt(model).spec
        names = set(hook_names(model))
        self.pattern_hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(self.spec.n_layers)]
        self.scale_hooks = [n for n in hook_names(model) if n.endswith("hook_scale")]
        missing = [h for h in self.pattern_hooks if h not in names]
        if missing:
            raise ValueError(f"this model has no attention-pattern hook {missing[0]!r} to freeze")
        self.input_hooks = {
            i: h if (h := INPUT_HOOK.format(layer=i)) in names else f"blocks.{i}.hook_resid_mid"
            for i in self.transcoders
        }
        self.frozen: dict[str, Tensor] = {}
        self.acts: dict[int, Tensor] = {}
        self.errors: dict[int, Tensor] = {}
        self.skip: dict[int, Tensor] = {}
        self.embed = torch.empty(0)
        self.logits = torch.empty(0)

    @classmethod
    @torch.no_grad()
    def from_prompt(
        cls,
        model: Any,
        tokens: Tensor,
        transcoders: Mapping[int, Any],
        *,
        skip_position_0: bool = True,
    ) -> LocalReplacement:
        """Run the model once on ``tokens`` and freeze what the replacement keeps fixed."""
        self = cls(model, tokens, transcoders, skip_position_0=skip_position_0)
        rec: dict[str, Tensor] = {}
        keep = [*self.pattern_hooks, *self.scale_hooks, EMBED_HOOK]
        keep += [OUTPUT_HOOK.format(layer=i) for i in range(self.spec.n_layers)]
        keep += list(self.input_hooks.values())
        with hooks(model, fwd=[(n, keep_into(n, rec)) for n in keep]):
            self.logits = model(self.tokens)[0].detach()
        self.frozen = {n: rec[n].detach().clone() for n in [*self.pattern_hooks, *self.scale_hooks]}
        self.embed = rec[EMBED_HOOK][0].detach().clone()
        for layer in range(self.spec.n_layers):
            mlp_out = rec[OUTPUT_HOOK.format(layer=layer)][0].detach()
            tc = self.transcoders.get(layer)
            if tc is None:
                self.errors[layer] = mlp_out.clone()
                continue
            x = rec[self.input_hooks[layer]][0].detach()
            acts = tc.encode(x)
            acts[: self.first] = 0
            recon = tc.decode(acts)
            skip = tc.skip(x)
            if skip is not None:
                recon = recon + skip
                self.skip[layer] = skip
            self.acts[layer] = acts
            recon[: self.first] = 0  # a skipped position's MLP output is all error
            self.errors[layer] = (mlp_out - recon.to(mlp_out.dtype)).clone()
        return self

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    def live_mask(self, dtype: torch.dtype) -> Tensor:
        """``[pos, 1]``: 0 at the positions frozen whole (position 0 when skipped), else 1."""
        mask = torch.ones(self.n_pos, 1, dtype=dtype)
        mask[: self.first] = 0
        return mask

    def _check_edits(self, edits: Sequence[FeatureEdit]) -> None:
        for e in edits:
            if e.layer not in self.transcoders:
                raise ValueError(
                    f"no transcoder at layer {e.layer} (layers with one: {sorted(self.transcoders)})"
                )
            if not self.first <= e.pos < self.n_pos:
                raise ValueError(
                    f"edit at position {e.pos}: features exist at positions {self.first}–"
                    f"{self.n_pos - 1}"
                    + (" (position 0 is an error node: skip_position_0=True)" if e.pos == 0 else "")
                )

    # -- hooks ------------------------------------------------------------------------------
    def freeze_hooks(self) -> list[tuple[str, HookFn]]:
        """Patterns and norm scales at their prompt values (detached: no gradient through them).

        An activation with fewer positions than the prompt (the unembedding of the last
        position alone) takes the frozen values of the last positions."""

        def frozen(name: str) -> HookFn:
            value = self.frozen[name]

            def fn(act: Tensor, hook: Any) -> Tensor:
                v = value
                if name.endswith("hook_scale") and act.shape[-2] != v.shape[-2]:
                    v = v[..., -act.shape[-2] :, :]
                return v.to(act.dtype).expand_as(act)

            return fn

        return [(n, frozen(n)) for n in self.frozen]

    def mlp_hooks(
        self,
        edits: Sequence[FeatureEdit] = (),
        leaves: Mapping[int, Tensor] | None = None,
        inputs: dict[int, Tensor] | None = None,
    ) -> list[tuple[str, HookFn]]:
        """The replacement's MLP outputs: transcoder(live input) (+ edits) + frozen error.

        With ``leaves``, ``leaves[layer]`` is used as the MLP output minus its skip term (the
        linear, cut path of the attribution); ``inputs`` receives each transcoder's live input.
        """
        live: dict[int, Tensor] = {} if inputs is None else inputs
        out: list[tuple[str, HookFn]] = []
        by_layer: dict[int, list[FeatureEdit]] = {}
        self._check_edits(edits)
        for e in edits:
            by_layer.setdefault(e.layer, []).append(e)
        for layer in self.transcoders:
            out.append((self.input_hooks[layer], keep_into_int(layer, live)))
        for layer in range(self.spec.n_layers):
            out.append(
                (
                    OUTPUT_HOOK.format(layer=layer),
                    self._mlp_out(layer, by_layer.get(layer, []), leaves, live),
                )
            )
        return out

    def _mlp_out(
        self,
        layer: int,
        edits: list[FeatureEdit],
        leaves: Mapping[int, Tensor] | None,
        live: dict[int, Tensor],
    ) -> HookFn:
        tc = self.transcoders.get(layer)
        err = self.errors[layer]
        mask = self.live_mask(err.dtype)

        def fn(act: Tensor, hook: Any) -> Tensor:
            x = live.get(layer)
            if leaves is not None:
                out = leaves[layer]
                if tc is not None and tc.cfg.skip_connection:
                    out = out + tc.skip(x) * mask.to(act.dtype)
                return out.to(act.dtype)
            if tc is None:
                return err.to(act.dtype).expand_as(act)
            assert x is not None
            acts = tc.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
            if edits:
                acts = acts.clone()
                for e in edits:
                    acts[:, e.pos, e.feature] = e.value
            y = tc._reconstruct(acts.reshape(-1, acts.shape[-1]), x.reshape(-1, x.shape[-1]))
            return (y.reshape(act.shape) * mask.to(y.dtype) + err).to(act.dtype)

        return fn

    @contextmanager
    def replaced(self, edits: Sequence[FeatureEdit] = ()) -> Iterator[Any]:
        """The model as the local replacement model (optionally with features set)."""
        with hooks(self.model, fwd=[*self.freeze_hooks(), *self.mlp_hooks(edits)]):
            yield self.model

    def logits_of(self, edits: Sequence[FeatureEdit] = ()) -> Tensor:
        """The replacement model's logits ``[pos, d_vocab]`` on the prompt."""
        with torch.no_grad(), self.replaced(edits):
            return self.model(self.tokens)[0]

    def real_logits(self, edits: Sequence[FeatureEdit] = ()) -> Tensor:
        """The real model's logits with each edit added through the transcoder's decoder
        direction: ``(value − activation) · W_dec[feature]`` at the MLP output."""
        by_hook: dict[str, list[FeatureEdit]] = {}
        self._check_edits(edits)
        for e in edits:
            by_hook.setdefault(OUTPUT_HOOK.format(layer=e.layer), []).append(e)

        def make(group: list[FeatureEdit]) -> HookFn:
            def fn(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                for e in group:
                    tc = self.transcoders[e.layer]
                    delta = e.value - float(self.acts[e.layer][e.pos, e.feature])
                    act[:, e.pos] += delta * tc.W_dec[e.feature].to(act.dtype)
                return act

            return fn

        with torch.no_grad(), hooks(self.model, fwd=[(h, make(g)) for h, g in by_hook.items()]):
            return self.model(self.tokens)[0]

    def run_to_final(self, fwd: Sequence[tuple[str, HookFn]], batch: int) -> Tensor:
        """The final residual stream ``[batch, pos, d_model]`` of the prompt replicated ``batch``
        times under ``fwd``; the unembedding is not run."""
        final = adapt(self.model).final_hook
        got: dict[str, Tensor] = {}

        def stop(act: Tensor, hook: Any) -> None:
            got["final"] = act
            raise _Stop

        try:
            with hooks(self.model, fwd=[*fwd, (final, stop)]):
                self.model(self.tokens.expand(batch, -1))
        except _Stop:
            pass
        return got["final"]

    def unembed_last(self, final: Tensor) -> Tensor:
        """Logits at the last position from final residuals, the final norm's scale frozen and
        no output softcap: logit nodes are linear in their sources, as circuit-tracer's (which
        injects the demeaned unembedding column before any cap)."""
        scale = [(n, f) for n, f in self.freeze_hooks() if n.startswith("ln_final")]
        with hooks(self.model, fwd=scale):
            return adapt(self.model).unembed(final[:, -1:], softcap=False)[:, 0]


def keep_into_int(layer: int, into: dict[int, Tensor]) -> Callable[[Tensor, Any], None]:
    def keep(act: Tensor, hook: Any) -> None:
        into[layer] = act

    return keep
