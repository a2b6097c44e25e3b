"""A tiny random Llama as a TransformerBridge and as a HookedTransformer of the same weights.

No hub access: the tokenizer is a small word-level one saved to a folder (the bridge reloads its
tokenizer from disk), the model is built from a config with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = [f"w{i}" for i in range(60)]


def word_tokenizer(folder: Path) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>")
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_llama(*, seed: int = 0, n_kv: int = 2) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv,
        vocab_size=len(WORDS) + 2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def twins(
    folder: Path, *, seed: int = 0, n_kv: int = 2, state: dict[str, torch.Tensor] | None = None
) -> tuple[Any, Any]:
    """(bridge, hooked) over the same random Llama weights (hooked is None on TL 4); ``state``
    replaces the seeded weights (to run one model under two TransformerLens versions)."""
    from transformer_lens.model_bridge import TransformerBridge

    from interp.models import hooked_available, hooked_from_hf_llama

    tok = word_tokenizer(folder)
    hf = tiny_llama(seed=seed, n_kv=n_kv)
    if state is not None:
        hf.load_state_dict(state)
    hooked = None  # TransformerLens 4 has no HookedTransformer: the bridge alone
    if hooked_available():
        hooked = hooked_from_hf_llama(hf, tok, "cpu", torch.float32, name="tiny-llama")
        hooked.cfg.default_prepend_bos = False
    bridge = TransformerBridge.boot_transformers(
        "tiny-llama", hf_model=hf, tokenizer=tok, device="cpu", dtype=torch.float32
    )
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    bridge.cfg.default_prepend_bos = False
    return bridge, hooked
