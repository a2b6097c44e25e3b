"""Fused norms and GELU in the partial forward: same values to rounding, hooks still honoured."""

from __future__ import annotations

import doctest

import pytest
import torch

from tests.conftest import HOOKED, NEEDS_HOOKED

hooked_only = pytest.mark.skipif(not HOOKED, reason=NEEDS_HOOKED)

SMALL = dict(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=50, n_ctx=16)


def _model(**cfg):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    model = HookedTransformer(HookedTransformerConfig(**{**SMALL, **cfg}))
    for p in model.parameters():  # non-trivial norm weights and biases
        p.data.add_(0.1 * torch.randn_like(p))
    return model.eval()


@hooked_only
@pytest.mark.parametrize(
    "cfg",
    [
        dict(normalization_type="LN", act_fn="gelu_new"),
        dict(normalization_type="LNPre", act_fn="gelu_fast"),
        dict(normalization_type="RMS", act_fn="gelu_new"),
        dict(normalization_type="RMSPre", act_fn="silu"),
    ],
)
def test_fused_forward_equals_transformer_lens(cfg):
    from interp.core.fused import fused_layers

    model = _model(**cfg)
    tokens = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(tokens)
        with fused_layers(model):
            swapped = model.blocks[0].ln1.forward.__name__ == "forward" and "forward" in vars(
                model.blocks[0].ln1
            )
            acts = {b.mlp.act_fn.__name__ for b in model.blocks}
            fused = model(tokens)
        after = model(tokens)
    assert swapped
    assert acts == ({"silu"} if cfg["act_fn"] == "silu" else {"_gelu_tanh"})
    torch.testing.assert_close(fused, plain, atol=2e-5, rtol=1e-5)
    assert torch.equal(after, plain)  # restored exactly
    assert "forward" not in vars(model.blocks[0].ln1)
    assert model.blocks[0].mlp.act_fn.__name__ in ("gelu_new", "gelu_fast", "silu")


@hooked_only
def test_a_hooked_norm_runs_transformer_lens_forward():
    from interp.core.fused import fused_layers
    from interp.hooks import hooks

    model = _model(normalization_type="LN", act_fn="gelu_new")
    tokens = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(2))
    seen: dict[str, torch.Tensor] = {}

    def keep(act, hook):
        seen[hook.name] = act

    def double(act, hook):
        return act * 2.0

    name = "blocks.1.ln2.hook_scale"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=name)
        want = model.run_with_hooks(tokens, fwd_hooks=[(name, double)])
        with fused_layers(model), hooks(model, fwd=[(name, keep)]):
            model(tokens)
        with fused_layers(model), hooks(model, fwd=[(name, double)]):
            got = model(tokens)
    torch.testing.assert_close(seen[name], cache[name])  # the hook fired, on TL's value
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)  # and its edit took effect


@hooked_only
def test_restored_after_an_error():
    from interp.core.fused import fused_layers

    model = _model(normalization_type="LN", act_fn="gelu_new")
    with pytest.raises(RuntimeError, match="boom"), fused_layers(model):
        raise RuntimeError("boom")
    assert all("forward" not in vars(m) for m in model.modules())
    assert model.blocks[0].mlp.act_fn.__name__ == "gelu_new"


@hooked_only
def test_docstring_example_runs():
    import interp.core.fused

    result = doctest.testmod(interp.core.fused, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_bridge_norms_and_gelu_fused_and_restored():
    from interp.core.fused import fused_layers
    from interp.hooks import hooks
    from interp.random_models import random_model

    model = random_model(
        "bridge", n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=16,
        seed=0,
    )  # fmt: skip
    tokens = torch.randint(0, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    name = "blocks.1.ln2.hook_normalized"
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        plain = model(tokens)
        _, cache = model.run_with_cache(tokens, names_filter=[name])
        with fused_layers(model):
            replaced = [type(m).__name__ for m in model.modules() if "forward" in vars(m)]
            fused = model(tokens)
            with hooks(model, fwd=[(name, lambda act, hook: seen.update({name: act}))]):
                model(tokens)
        after = model(tokens)
    assert replaced.count("NormalizationBridge") == 5 and replaced.count("NewGELUActivation") == 2
    torch.testing.assert_close(fused, plain, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(seen[name], cache[name])  # a hooked norm still feeds its hook
    assert torch.equal(after, plain)
    assert not any("forward" in vars(m) for m in model.modules())
