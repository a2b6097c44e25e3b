"""Shared fixtures: no network, one real-model load per session, tiny models built in code."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """The offline SmolLM2-135M-Instruct as a HookedTransformer, loaded once per test session."""
    from interp.models import load_model

    model = load_model("smollm2-135m")
    model.eval()
    return model


@pytest.fixture()
def tiny_model():
    """A 2-layer random HookedTransformer (MLP + attention) small enough for any unit test."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=16,
        n_ctx=32,
        d_head=4,
        n_heads=4,
        d_mlp=32,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    model.eval()
    return model
