"""One small protocol over the two TransformerLens model classes.

Methods never check the model class: they ask :func:`adapt` for a :class:`ModelAdapter` and use
its facts (layers, heads, GQA groups, widths), its hook names and its few operations (the final
norm and unembedding, the per-head output projection, scoped switches such as split q/k/v
inputs). ``HookedTransformer`` (TransformerLens 3) and ``TransformerBridge`` (TransformerLens 3
and 4) are supported; anything else is refused here, before any forward pass.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["ModelAdapter", "ModelSpec", "UnsupportedModelError", "adapt"]

Backend = Literal["hooked", "bridge"]


class UnsupportedModelError(TypeError):
    """A model that is neither a ``HookedTransformer`` nor a ``TransformerBridge``."""


@dataclass(frozen=True)
class ModelSpec:
    """The facts every method needs, read once from the model's configuration."""

    n_layers: int
    n_heads: int
    n_kv_heads: int  # == n_heads without grouped-query attention
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    attn_only: bool
    parallel: bool  # attention and MLP read the same residual (GPT-J style)
    positional: str  # "standard" (a learned pos_embed), "rotary", "shortformer", ...
    causal: bool

    @property
    def gqa(self) -> bool:
        return self.n_kv_heads != self.n_heads

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_group(self, head: int) -> int:
        """The key/value head a query head reads under grouped-query attention."""
        return head // self.group_size

    def heads_of_group(self, group: int) -> list[int]:
        return list(range(group * self.group_size, (group + 1) * self.group_size))


def _backend(model: Any) -> Backend:
    # Imported lazily: TransformerLens 4 has no HookedTransformer, TL 3 may lack the bridge.
    hooked: Any
    try:  # TL 4 raises ImportError (not AttributeError) for the removed class
        from transformer_lens import HookedTransformer as hooked
    except ImportError:
        hooked = None
    if hooked is not None and isinstance(model, hooked):
        return "hooked"
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TL 3 before the bridge
        return _refuse(model)
    if isinstance(model, TransformerBridge):
        return "bridge"
    return _refuse(model)


def _refuse(model: Any) -> Backend:
    kind = type(model).__name__
    hint = ""
    if hasattr(model, "_model") and hasattr(model, "trace"):  # an nnsight envelope
        hint = " It looks like an nnsight envelope: pass the TransformerLens model it wraps."
    elif isinstance(model, nn.Module) and hasattr(model, "config"):
        hint = (
            " It looks like a Hugging Face model: wrap it with "
            "TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=...) or load it "
            "with interp.models.load_model(folder)."
        )
    raise UnsupportedModelError(
        f"mechscope works on TransformerLens models, a HookedTransformer or a TransformerBridge; "
        f"got {kind}.{hint}"
    )


def _spec(cfg: Any) -> ModelSpec:
    n_heads = int(cfg.n_heads)
    kv = getattr(cfg, "n_key_value_heads", None) or n_heads
    return ModelSpec(
        n_layers=int(cfg.n_layers),
        n_heads=n_heads,
        n_kv_heads=int(kv),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        attn_only=bool(getattr(cfg, "attn_only", False)),
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        positional=str(getattr(cfg, "positional_embedding_type", "standard")),
        causal=getattr(cfg, "attention_dir", "causal") == "causal",
    )


class ModelAdapter:
    """What methods may ask of a model. Get one with :func:`adapt` (cached per model)."""

    def __init__(self, model: Any):
        self.backend: Backend = _backend(model)
        self._model = weakref.ref(model)
        self.spec = _spec(model.cfg)

    @property
    def model(self) -> Any:
        m = self._model()
        if m is None:  # pragma: no cover - the adapter outlived its model
            raise RuntimeError("the model this adapter describes has been deleted")
        return m

    # -- hook names -----------------------------------------------------------------------
    @property
    def embed_hooks(self) -> list[str]:
        """The hooks holding the input embeddings (token, and learned position if any)."""
        names = ["hook_embed"]
        if self.spec.positional == "standard":
            names.append("hook_pos_embed")
        return names

    def attn_out_hook(self, layer: int) -> str:
        """What ``layer``'s attention adds to the residual stream: ``hook_attn_out``, on a bridge
        its canonical name (a bridge not in compatibility mode has no other)."""
        return f"blocks.{layer}." + (
            "hook_attn_out" if self.backend == "hooked" else "attn.hook_out"
        )

    @property
    def final_hook(self) -> str:
        """The residual stream the final norm and unembedding read."""
        return f"blocks.{self.spec.n_layers - 1}.hook_resid_post"

    # -- operations -----------------------------------------------------------------------
    def unembed(self, resid: Tensor, *, softcap: bool = True) -> Tensor:
        """Logits from final residuals ``[..., d_model]``: final norm, unembedding, softcap
        (``softcap=False``: the logits before it, which are linear in the normed residual)."""
        model = self.model
        cfg = model.cfg
        if getattr(cfg, "normalization_type", None) is not None:
            resid = model.ln_final(resid)
        logits = model.unembed(resid)
        cap = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)
        if cap > 0 and softcap:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def w_o(self, layer: int) -> Tensor:
        """The attention output weights of ``layer``, ``[head, d_head, d_model]``."""
        model = self.model
        return model.blocks[layer].attn.W_O if self.backend == "hooked" else model.W_O[layer]

    def head_outputs(self, layer: int, z: Tensor) -> Tensor:
        """Each head's write into the residual stream, ``[..., head, d_model]`` from ``hook_z``."""
        return torch.einsum("...hd,hdm->...hm", z, self.w_o(layer).to(z.dtype))

    @property
    def restart(self) -> Literal["blocks", "decoder"] | None:
        """How a forward can restart from a layer (see :mod:`interp.core.forward`).

        From a layer *and* a position, later positions reading the earlier ones' keys and values
        from a cache: ``"blocks"`` (a HookedTransformer's blocks, causal, one device) or
        ``"decoder"`` (a bridge over a decoder whose attention reads a key-value cache, rotary or
        with absolute positions: its HF decoder layers are called in turn, hooks firing; the
        partial forward checks itself once and falls back where they do not compute what the
        whole forward does). None: whole forwards only.
        """
        model = self.model
        if not self.spec.causal or getattr(model.cfg, "n_devices", 1) != 1:
            return None
        if self.backend == "hooked":
            ok = self.spec.positional in ("standard", "rotary", "shortformer")
            return "blocks" if ok else None
        return "decoder" if self.cached_key_hook is not None else None

    @property
    def rotary(self) -> bool:
        """Whether a bridge's model computes rotary position embeddings in its base model."""
        base = getattr(getattr(self.model, "original_model", None), "base_model", None)
        return getattr(base, "rotary_emb", None) is not None

    @property
    def cached_key_hook(self) -> str | None:
        """A bridge's hook (under ``blocks.{l}.``) whose value is the key its attention caches:
        the rotated key of a rotary model, the plain key of one with absolute positions (added
        to the residual stream before the blocks, so a restart from a block needs nothing else)."""
        if self.backend == "hooked":
            return None
        name = "attn.hook_rot_k" if self.rotary else "attn.hook_k"
        return name if f"blocks.0.{name}" in self.model.hook_dict else None

    @property
    def fast_capable(self) -> bool:
        """Whether a forward can restart from a layer (:attr:`restart` is not None)."""
        return self.restart is not None

    def check_writable(self, hook: str) -> None:
        """Refuse a write that the model would not carry out as the hook name says.

        A bridge aliases ``blocks.{l}.hook_resid_mid`` to ``blocks.{l}.ln2.hook_in``: a value
        returned there reaches the MLP's norm but not the residual skip, so "patching resid_mid"
        would patch the MLP input only. (Reading it, and its gradient, are exact.)
        """
        if self.backend == "bridge" and hook.endswith(".hook_resid_mid"):
            layer = hook.split(".")[1]
            raise ValueError(
                f"cannot write {hook} on a TransformerBridge: the bridge aliases it to "
                f"blocks.{layer}.ln2.hook_in, so a new value would reach only the MLP branch, not "
                f"the residual stream. Patch 'attn_out' at layer {layer} (resid_mid = resid_pre + "
                f"attn_out), 'mlp_in' for the MLP branch, or use a HookedTransformer"
            )

    # -- scoped switches (always restored) ------------------------------------------------
    @contextlib.contextmanager
    def split_inputs(self) -> Iterator[None]:
        """Per-head q/k/v input hooks (``hook_q_input``...) and ``hook_mlp_in``, then restored."""
        model = self.model
        cfg = model.cfg
        old = (bool(cfg.use_split_qkv_input), bool(getattr(cfg, "use_hook_mlp_in", False)))
        try:
            model.set_use_split_qkv_input(True)
            if not self.spec.attn_only:
                model.set_use_hook_mlp_in(True)
            yield
        finally:
            model.set_use_split_qkv_input(old[0])
            if not self.spec.attn_only:
                model.set_use_hook_mlp_in(old[1])

    @contextlib.contextmanager
    def activation_grads_only(self) -> Iterator[None]:
        """Weights frozen so a backward computes activation gradients only; flags restored."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"ModelAdapter({self.backend}, {s.n_layers} layers, {s.n_heads} heads"
            f"{f' ({s.n_kv_heads} kv)' if s.gqa else ''}, d_model {s.d_model})"
        )


_ADAPTERS: weakref.WeakKeyDictionary[Any, ModelAdapter] = weakref.WeakKeyDictionary()


def adapt(model: Any) -> ModelAdapter:
    """The adapter of a TransformerLens model; an :class:`UnsupportedModelError` otherwise."""
    if isinstance(model, ModelAdapter):
        return model
    try:
        cached = _ADAPTERS.get(model)
    except TypeError:  # not weak-referenceable: certainly not a TL model
        cached = None
    if cached is None:
        cached = ModelAdapter(model)
        _ADAPTERS[model] = cached
    return cached
