"""Small random models built in code, on either backend, with no hub access.

``random_model(**fields)`` takes ``HookedTransformerConfig`` field names (so a test or an example
written for TransformerLens 3 states its model once) and builds the Hugging Face architecture that
expresses them: learned positions and LayerNorm are GPT-2, rotary positions and RMSNorm are Llama
(gated SiLU MLP, grouped-query attention through ``n_key_value_heads``). ``backend="bridge"`` is
that Hugging Face model as a ``TransformerBridge``; ``"hooked"`` is TransformerLens's conversion of
the same weights, so the two backends compute the same function. What neither architecture has
(attention-only models, no normalisation, partial rotary) is refused with the reason.

The tokenizer is word-level (``"t0 t5 t7"``), saved once under ``cache_root()`` because a bridge
reloads its tokenizer from the folder it came from. BOS is never prepended.

>>> m = random_model("bridge", n_layers=1, d_model=8, n_heads=2, d_mlp=16, d_vocab=20)
>>> type(m).__name__, m.cfg.n_layers, tuple(m(m.to_tokens("t1 t2 t3")).shape)
('TransformerBridge', 1, (1, 3, 20))
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import torch
from torch import nn

from interp._io import remove_tree
from interp.manifest import set_source
from interp.models import cache_root, hooked_from_hf_gpt2, hooked_from_hf_llama
from interp.validate import did_you_mean

__all__ = ["hf_random_model", "random_model", "to_backend", "word_tokenizer"]

_FIELDS = {
    "n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn",
    "normalization_type", "positional_embedding_type", "n_key_value_heads", "rotary_dim",
    "gated_mlp", "attn_only", "seed", "device",
}  # fmt: skip


def word_tokenizer(d_vocab: int) -> Any:
    """A word-level tokenizer over ``t0 … t{d_vocab-1}`` (``t0`` is also unk), from a folder under
    ``cache_root()`` written once, atomically."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = cache_root() / "word_tokenizers" / f"v{d_vocab}"
    if not (folder / "tokenizer.json").exists():
        words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(d_vocab)}, unk_token="t0"))
        words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        staging = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
        PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0").save_pretrained(staging)
        try:
            os.replace(staging, folder)  # a concurrent writer may have won: same files
        except OSError:
            remove_tree(staging)
    return AutoTokenizer.from_pretrained(folder)


def hf_random_model(**fields: Any) -> nn.Module:
    """The Hugging Face model (GPT-2 or Llama, eval mode, seeded) that expresses ``fields``."""
    unknown = sorted(set(fields) - _FIELDS)
    if unknown:
        hints = "".join(did_you_mean(u, sorted(_FIELDS)) for u in unknown)
        raise TypeError(f"random_model: unknown fields {unknown}{hints}; known: {sorted(_FIELDS)}")
    f = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_vocab": 50, "n_ctx": 32, "seed": 0} | fields
    d_model, n_heads = f["d_model"], f["n_heads"]
    d_head = f.get("d_head", d_model // n_heads)
    d_mlp = f.get("d_mlp", 4 * d_model)
    rotary = f.get("positional_embedding_type", "standard") == "rotary"
    norm = f.get("normalization_type", "RMS" if rotary else "LN")
    refuse = _refusal(f, rotary, norm, d_head)
    if refuse:
        raise ValueError(f"random_model: {refuse}")
    torch.manual_seed(f["seed"])
    if rotary:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            hidden_size=d_model, num_hidden_layers=f["n_layers"], num_attention_heads=n_heads,
            num_key_value_heads=f.get("n_key_value_heads") or n_heads, head_dim=d_head,
            intermediate_size=d_mlp, vocab_size=f["d_vocab"], max_position_embeddings=f["n_ctx"],
            hidden_act="silu", rms_norm_eps=1e-5, tie_word_embeddings=False,
        )  # fmt: skip
        return LlamaForCausalLM(cfg).eval()
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2_cfg = GPT2Config(
        n_embd=d_model, n_layer=f["n_layers"], n_head=n_heads, n_inner=d_mlp,
        vocab_size=f["d_vocab"], n_positions=f["n_ctx"],
        activation_function=f.get("act_fn", "gelu_new"), bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return GPT2LMHeadModel(gpt2_cfg).eval()


def _refusal(f: dict[str, Any], rotary: bool, norm: str, d_head: int) -> str | None:
    arch = "Llama (rotary)" if rotary else "GPT-2 (standard positions)"
    if f.get("attn_only"):
        return "attn_only=True: GPT-2 and Llama both have MLPs; build a HookedTransformer (TL 3)"
    if norm != ("RMS" if rotary else "LN"):
        return f"normalization_type={norm!r} with {arch}: it has {'RMS' if rotary else 'LN'}"
    if rotary:
        if f.get("act_fn", "silu") != "silu" or f.get("gated_mlp", True) is False:
            return "a Llama MLP is gated SiLU (act_fn='silu', gated_mlp unset or True)"
        if f.get("rotary_dim", d_head) != d_head:
            return f"rotary_dim={f['rotary_dim']} with d_head={d_head}: Llama rotates every dim"
    else:
        if d_head * f["n_heads"] != f["d_model"]:
            return f"GPT-2 needs d_head * n_heads == d_model, got {d_head} * {f['n_heads']}"
        if f.get("n_key_value_heads") or f.get("gated_mlp"):
            return "GPT-2 has no grouped-query attention or gated MLP; use rotary (Llama)"
    if f.get("device", "cpu") != "cpu":
        return "random models are built on the CPU; move them afterwards"
    return None


def to_backend(hf_model: nn.Module, backend: str = "bridge", *, name: str = "random") -> Any:
    """An in-memory GPT-2 or Llama as a TransformerBridge (compatibility mode, no weight
    processing) or, ``"hooked"``, a HookedTransformer of the same weights (TL 3 only). The
    word-level tokenizer is attached; BOS is never prepended."""
    config: Any = hf_model.config
    tokenizer = word_tokenizer(config.vocab_size)
    kind = config.model_type
    if kind not in ("gpt2", "llama"):
        raise ValueError(f"to_backend: GPT-2 or Llama models only, got model_type {kind!r}")
    model: Any
    if backend == "hooked":
        convert = hooked_from_hf_llama if kind == "llama" else hooked_from_hf_gpt2
        model = convert(hf_model, tokenizer, "cpu", torch.float32, name=name)
    elif backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=torch.float32
        )
        model.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    else:
        raise ValueError(f"backend must be 'bridge' or 'hooked', got {backend!r}")
    model.cfg.default_prepend_bos = False
    return model.eval()


def random_model(backend: str | None = None, **fields: Any) -> Any:
    """:func:`hf_random_model` on ``backend`` (``None``: :func:`interp.models.default_backend`)."""
    from interp.models import default_backend

    backend = backend or default_backend()
    if backend not in ("bridge", "hooked"):
        raise ValueError(f"backend must be 'bridge' or 'hooked', got {backend!r}")
    model = to_backend(hf_random_model(**fields), backend)
    return set_source(model, random_model, backend, **fields)  # seeded: the same weights again
