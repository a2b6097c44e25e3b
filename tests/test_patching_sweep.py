"""patch_sweep against transformer_lens.patching, by hand, and on bad input."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp
from builders import tl_model

from interp.core.adapter import adapt
from interp.metrics import logit_diff
from interp.patching import PatchResult, patch_sweep


def _gqa_model():
    """Rotary, RMS, grouped-query attention: a HookedTransformer on TL 3, a Llama bridge on TL 4."""
    torch.manual_seed(1)
    return tl_model(
        n_layers=3, d_model=24, n_ctx=32, d_head=4, n_heads=6, n_key_value_heads=2, d_mlp=32,
        d_vocab=50, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=4, seed=1,
    )  # fmt: skip


def _metric(logits):
    return logit_diff(logits, 3, 7)


def _batch(model, n=4, pos=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = model.cfg.d_vocab
    return torch.randint(0, v, (n, pos), generator=g), torch.randint(0, v, (n, pos), generator=g)


TL_CASES = [
    (tlp.get_act_patch_resid_pre, "resid_pre", ("layer", "pos")),
    (tlp.get_act_patch_resid_mid, "resid_mid", ("layer", "pos")),
    (tlp.get_act_patch_mlp_out, "mlp_out", ("layer", "pos")),
    (tlp.get_act_patch_attn_head_out_by_pos, "z", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_out_all_pos, "z", ("layer", "head")),
    (tlp.get_act_patch_attn_head_k_by_pos, "k", ("layer", "pos", "head")),
    (tlp.get_act_patch_attn_head_pattern_by_pos, "pattern", ("layer", "head", "pos")),
    (
        tlp.get_act_patch_attn_head_pattern_dest_src_pos,
        "pattern",
        ("layer", "head", "pos", "src_pos"),
    ),
]


@pytest.mark.parametrize("model_kind", ["tiny", "gqa"])
@pytest.mark.parametrize(
    "tl_fn,site,over", TL_CASES, ids=[c[1] + "-" + "x".join(c[2]) for c in TL_CASES]
)
def test_matches_transformer_lens(tiny_model, model_kind, tl_fn, site, over):
    model = tiny_model if model_kind == "tiny" else _gqa_model()
    clean, corrupt = _batch(model, pos=5)
    if site == "resid_mid" and adapt(model).backend == "bridge":
        # The bridge aliases resid_mid to the MLP norm's input: refused, not patched half-way.
        with pytest.raises(ValueError, match="cannot write blocks.0.hook_resid_mid"):
            patch_sweep(model, clean, corrupt, _metric, site=site, over=over)
        return
    _, cache = model.run_with_cache(clean)
    ref = tl_fn(model, corrupt, cache, lambda lg: _metric(lg).mean())
    # The block-level fast path (HookedTransformer) and whole batched forwards (both backends).
    for fast in (True, False) if adapt(model).fast_capable else (False,):
        got = patch_sweep(model, clean, corrupt, _metric, site=site, over=over, fast=fast)
        assert got.shape == tuple(ref.shape)
        assert got.meta["fast"] is fast
        torch.testing.assert_close(got.mean, ref.float(), atol=1e-5, rtol=0)


def test_toy_model_matches_and_singles_out_induction_heads():
    from interp.toy import load_toy_induction, repeated_random_tokens

    model = load_toy_induction()
    g = torch.Generator().manual_seed(0)
    clean = repeated_random_tokens(16, 10, generator=g)  # BOS + 10 random + the same 10
    corrupt = clean.clone()
    corrupt[:, 11:] = torch.randint(1, model.cfg.d_vocab, (16, 10), generator=g)  # no repeat

    def metric(logits):  # log-prob of the repeated token at the last position
        return logits[:, -2].log_softmax(-1).gather(1, clean[:, -1:])[:, 0]

    _, cache = model.run_with_cache(clean)
    ref = tlp.get_act_patch_attn_head_out_all_pos(
        model, corrupt, cache, lambda lg: metric(lg).mean()
    )
    res = patch_sweep(model, clean, corrupt, metric, site="z", over=("layer", "head"))
    torch.testing.assert_close(res.mean, ref.float(), atol=1e-5, rtol=0)
    # Restoring any one induction head (all of layer 1) recovers more than restoring any layer-0
    # head except the previous-token heads L0H4 and L0H2, which the induction heads read.
    norm = res.normalized().mean
    best_l0 = torch.argsort(norm[0], descending=True)[:2].tolist()
    assert set(best_l0) == {4, 2}, norm[0]
    others = [h for h in range(8) if h not in best_l0]
    assert norm[1].min() > norm[0, others].max() + 0.03, norm


def test_cells_that_cannot_change_are_skipped_exactly(tiny_model):
    clean, corrupt = _batch(tiny_model, pos=7)
    corrupt[:, :4] = clean[:, :4]  # the prompts differ from position 4 on
    _, cache = tiny_model.run_with_cache(clean)
    ref = tlp.get_act_patch_resid_pre(tiny_model, corrupt, cache, lambda lg: _metric(lg).mean())
    got = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre")
    torch.testing.assert_close(got.mean, ref.float(), atol=1e-5, rtol=0)
    # Positions 0-3 hold the same residual in both runs at every layer: 2 layers x 4 positions.
    assert got.meta["cells_skipped_unchanged"] == 8
    torch.testing.assert_close(got.values[:, :, :4], got.corrupt[:, None, None].expand(-1, 2, 4))


def test_noising_mean_and_zero_ablation_by_hand(tiny_model):
    clean, corrupt = _batch(tiny_model, n=5)
    ref_set = _batch(tiny_model, n=6, seed=3)[0]
    for ablation in ("mean", "zero"):
        res = patch_sweep(
            tiny_model,
            clean,
            None,
            _metric,
            site="attn_out",
            over=("layer", "pos"),
            ablation=ablation,
            direction="noise",
            reference=ref_set,
        )
        _, ref_cache = tiny_model.run_with_cache(ref_set)
        for layer, pos in [(0, 2), (1, 6)]:
            name = f"blocks.{layer}.hook_attn_out"
            value = ref_cache[name].mean(0)[pos] if ablation == "mean" else 0.0

            def hook(act, hook, pos=pos, value=value):
                act = act.clone()
                act[:, pos] = value
                return act

            logits = tiny_model.run_with_hooks(clean, fwd_hooks=[(name, hook)])
            torch.testing.assert_close(
                res.values[:, layer, pos], _metric(logits), atol=1e-5, rtol=0
            )
        assert res.corrupt is None and res.direction == "noise"


def test_logits_at_gives_the_same_numbers(tiny_model):
    clean, corrupt = _batch(tiny_model)
    full = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre")
    last = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre", logits_at=-1)
    torch.testing.assert_close(full.values, last.values, atol=1e-5, rtol=0)


def test_restricted_axes_and_labels(tiny_model):
    clean, corrupt = _batch(tiny_model)
    full = patch_sweep(tiny_model, clean, corrupt, _metric, site="z", over=("layer", "head", "pos"))
    part = patch_sweep(
        tiny_model,
        clean,
        corrupt,
        _metric,
        site="z",
        over=("layer", "head", "pos"),
        layers=[1],
        heads=[0, 3],
        positions=[-1],
    )
    assert part.shape == (1, 2, 1)
    assert part.labels["layer"] == ["L1"] and part.labels["head"] == ["H0", "H3"]
    torch.testing.assert_close(part.values[:, 0, :, 0], full.values[:, 1, [0, 3], -1])


def test_result_ci_top_save_load(tiny_model, tmp_path):
    clean, corrupt = _batch(tiny_model, n=8)
    res = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_post")
    ci = res.ci()
    assert (ci.low <= res.mean + 1e-6).all() and (res.mean <= ci.high + 1e-6).all()
    # The last layer's output at the last position is all the metric reads: restoring it
    # restores the clean value exactly.
    torch.testing.assert_close(res.values[:, -1, -1], res.clean, atol=1e-5, rtol=0)
    norm = res.normalized()
    assert abs(float(norm.clean.mean()) - 1) < 1e-6 and abs(float(norm.corrupt.mean())) < 1e-6
    top = res.top(3)
    assert len(top) == 3 and all(r["low"] <= r["mean"] <= r["high"] for r in top)
    # A table in a notebook and in print: how it was chosen, one column per axis, the numbers.
    assert "<table><caption>top 3" in top._repr_html_() and "<th>layer</th>" in top._repr_html_()
    assert str(top).splitlines()[0].startswith("top 3 by abs_effect, ranked on 4 prompts")
    assert str(top).splitlines()[1].split()[:3] == ["layer", "pos", "mean"]
    out = res.save(tmp_path / "r")
    back = PatchResult.load(out)
    assert torch.equal(back.values, res.values) and back.labels == res.labels
    assert (out / "run.json").exists()
    assert len(res.to_dataframe()) == res.values[0].numel()


def test_a_lambda_metric_is_named_on_the_axes(tiny_model):
    clean, corrupt = _batch(tiny_model)
    res = patch_sweep(tiny_model, clean, corrupt, lambda lg: _metric(lg), site="resid_pre")
    assert res.metric == "metric (lambda)"
    assert res.normalized().metric == "normalized(metric (lambda))"


def test_scalar_metric_loses_only_the_ci(tiny_model):
    clean, corrupt = _batch(tiny_model)
    res = patch_sweep(tiny_model, clean, corrupt, lambda lg: _metric(lg).mean(), site="resid_pre")
    per = patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre")
    assert res.n_prompts == 1
    torch.testing.assert_close(res.mean, per.mean, atol=1e-5, rtol=0)


def test_bad_input_fails_before_any_forward(tiny_model, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(tiny_model, "forward", boom)
    clean, corrupt = _batch(tiny_model)
    with pytest.raises(ValueError, match="same shape"):
        patch_sweep(tiny_model, clean, corrupt[:, :-1], _metric, site="resid_pre")
    with pytest.raises(ValueError, match="one value per prompt"):
        patch_sweep(tiny_model, clean, corrupt, lambda lg: lg[:, -1, :2], site="resid_pre")
    with pytest.raises(IndexError, match="pos"):
        patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre", positions=[7])
    with pytest.raises(IndexError, match="layer"):
        patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre", layers=[2])
    with pytest.raises(ValueError, match="did you mean 'resid_pre'"):
        patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pr")
    with pytest.raises(ValueError, match="cannot be indexed by"):
        patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre", over=("layer", "head"))
    with pytest.raises(ValueError, match="direction='noise'"):
        patch_sweep(tiny_model, clean, corrupt, _metric, site="resid_pre", ablation="zero")
