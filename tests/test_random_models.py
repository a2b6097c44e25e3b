"""interp.random_models: one description, the same function on both backends, clear refusals."""

from __future__ import annotations

import pytest
import torch

from interp.models import hooked_available
from interp.random_models import hf_random_model, random_model

GPT2 = dict(n_layers=2, d_model=16, n_heads=4, d_mlp=32, d_vocab=30, act_fn="gelu", seed=3)
LLAMA = dict(
    n_layers=2, d_model=16, n_heads=4, n_key_value_heads=2, d_mlp=32, d_vocab=30,
    positional_embedding_type="rotary", normalization_type="RMS", act_fn="silu", seed=3,
)  # fmt: skip


@pytest.mark.parametrize("fields", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_bridge_is_the_hugging_face_model(fields):
    hf = hf_random_model(**fields)
    bridge = random_model("bridge", **fields)
    tokens = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bridge(tokens), hf(tokens).logits, atol=1e-6, rtol=0)
    assert bridge.cfg.n_layers == 2 and bridge.cfg.d_vocab == 30
    assert bridge.to_tokens("t4 t7").tolist() == [[4, 7]]  # word-level, no BOS prepended


@pytest.mark.skipif(not hooked_available(), reason="needs HookedTransformer (TL 3)")
@pytest.mark.parametrize("fields", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_hooked_is_the_same_weights(fields):
    hf = hf_random_model(**fields)
    hooked = random_model("hooked", **fields)
    assert type(hooked).__name__ == "HookedTransformer"
    tokens = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hooked(tokens), hf(tokens).logits, atol=1e-5, rtol=0)


def test_seed_fixes_the_weights():
    a, b, c = (hf_random_model(**GPT2 | {"seed": s}) for s in (3, 3, 4))
    wa, wb, wc = (m.transformer.wte.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize(
    "fields, match",
    [
        (GPT2 | {"n_layer": 2}, r"unknown fields \['n_layer'\].*n_layers"),
        (GPT2 | {"attn_only": True}, "attn_only=True"),
        (GPT2 | {"normalization_type": "RMS"}, "it has LN"),
        (LLAMA | {"rotary_dim": 2}, "Llama rotates every dim"),
        (LLAMA | {"act_fn": "gelu"}, "gated SiLU"),
        (GPT2 | {"n_key_value_heads": 2}, "grouped-query"),
        (GPT2 | {"d_head": 3}, "d_head \\* n_heads == d_model"),
        (GPT2 | {"device": "cuda"}, "built on the CPU"),
    ],
)
def test_refusals_say_why(fields, match):
    with pytest.raises((TypeError, ValueError), match=match):
        hf_random_model(**fields)


def test_unknown_backend():
    with pytest.raises(ValueError, match="'bridge' or 'hooked'"):
        random_model("hookd", **GPT2)
