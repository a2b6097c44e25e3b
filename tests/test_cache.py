import pytest
import torch

from interp.cache import cache_activations, select_positions
from interp.core.adapter import adapt
from interp.hooks import UnknownHookError


def test_matches_transformer_lens_run_with_cache(tiny_model):
    tokens = torch.randint(0, 50, (3, 7))
    _, ref = tiny_model.run_with_cache(tokens)
    names = [
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_pattern",
        "blocks.0.attn.hook_z",
        "ln_final.hook_normalized",
    ]
    cache = cache_activations(tiny_model, tokens, names)
    assert set(cache.keys()) == set(names)
    if adapt(tiny_model).backend == "hooked":  # a bridge's hook_dict is not in forward order
        assert list(cache.keys()) == [
            "blocks.0.attn.hook_z",
            "blocks.0.hook_resid_post",
            "blocks.1.attn.hook_pattern",
            "ln_final.hook_normalized",
        ]
    for n in names:
        torch.testing.assert_close(cache[n], ref[n], rtol=0, atol=0)
    # TL's cache API works on the result
    torch.testing.assert_close(cache["resid_post", 0], ref["resid_post", 0])


def test_positions_int_list_slice_and_per_sequence(tiny_model):
    tokens = torch.randint(0, 50, (3, 7))
    _, ref = tiny_model.run_with_cache(tokens)
    resid, pat = "blocks.1.hook_resid_pre", "blocks.0.attn.hook_pattern"
    c = cache_activations(tiny_model, tokens, [resid, pat], positions=-1)
    torch.testing.assert_close(c[resid], ref[resid][:, -1:])
    torch.testing.assert_close(c[pat], ref[pat][:, :, -1:])  # queries, not keys
    c = cache_activations(tiny_model, tokens, resid, positions=[0, 2, 5])
    torch.testing.assert_close(c[resid], ref[resid][:, [0, 2, 5]])
    c = cache_activations(tiny_model, tokens, resid, positions=slice(1, None))
    torch.testing.assert_close(c[resid], ref[resid][:, 1:])
    per_seq = torch.tensor([[6], [3], [0]])  # e.g. last real token of right-padded prompts
    c = cache_activations(tiny_model, tokens, [resid, pat], positions=per_seq)
    for b, p in enumerate([6, 3, 0]):
        torch.testing.assert_close(c[resid][b, 0], ref[resid][b, p])
        torch.testing.assert_close(c[pat][b, :, 0], ref[pat][b, :, p])


def test_dtype_device_and_stop_early(tiny_model):
    tokens = torch.randint(0, 50, (2, 5))
    calls = []
    tiny_model.blocks[1].hook_resid_post.add_hook(lambda x, hook: calls.append(1))
    c = cache_activations(
        tiny_model, tokens, "blocks.0.hook_resid_post", dtype=torch.float16, device="cpu"
    )
    assert c["blocks.0.hook_resid_post"].dtype == torch.float16
    assert calls == []  # block 1 never ran
    cache_activations(tiny_model, tokens, "blocks.0.hook_resid_post", stop_early=False)
    assert calls == [1]
    tiny_model.reset_hooks()


def test_bad_positions_and_names(tiny_model):
    tokens = torch.randint(0, 50, (2, 5))
    with pytest.raises(IndexError, match="out of range"):
        cache_activations(tiny_model, tokens, "blocks.0.hook_resid_post", positions=[0, 5])
    with pytest.raises(ValueError, match="per-sequence positions"):
        cache_activations(
            tiny_model,
            tokens,
            "blocks.0.hook_resid_post",
            positions=torch.zeros(3, 1, dtype=torch.long),
        )
    with pytest.raises(UnknownHookError, match="Did you mean"):
        cache_activations(tiny_model, tokens, "blocks.0.hook_resid_pst")


def test_select_positions_rejects_float_index():
    with pytest.raises(TypeError):
        select_positions(torch.zeros(1, 3, 2), torch.tensor([0.5]), 1)


def test_text_longer_than_the_context_is_refused_not_truncated(smollm2_bridge):
    text = "to be or not " * 2100  # > 8192 tokens
    with pytest.raises(ValueError, match="n_ctx=8192"):
        cache_activations(smollm2_bridge, text, "blocks.0.hook_resid_post")
