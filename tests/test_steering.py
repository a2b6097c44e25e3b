"""interp.steering on tiny models built in code: extraction, application, padding, errors, I/O."""

from __future__ import annotations

import pytest
import torch
from builders import tl_model

from interp.cache import cache_activations
from interp.core.positions import Real, last_real, real
from interp.steering import (
    SteeringVector,
    ablate,
    add,
    clamp,
    collect_activations,
    encode,
    extract,
    generate,
    load_vectors,
    project,
    save_vectors,
    steer,
)
from interp.steering.apply import Edit
from interp.steering.extraction import direction_from_activations
from interp.steering.io import ModelMismatchError
from interp.steering.read import accuracy_from_activations

# Token-id prompts of different lengths, so every batch is padded.
POS = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14], [15, 16], [17, 18, 19, 20, 21, 22]]
NEG = [[23, 24, 25], [26, 27, 28, 29, 30, 31], [32, 33], [34, 35, 36, 37], [38, 39, 40]]


def _rotary_model():
    """A tiny Llama-like model: rotary positions, RMS norm, gated MLP, grouped-query attention
    (a HookedTransformer on TL 3, a Llama TransformerBridge on TL 4)."""
    torch.manual_seed(1)
    return tl_model(
        n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, n_key_value_heads=2, d_mlp=32,
        d_vocab=50, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        gated_mlp=True, rotary_dim=4, seed=1,
    )  # fmt: skip


@pytest.fixture(params=["standard", "rotary"])
def model(request, tiny_model):
    return tiny_model if request.param == "standard" else _rotary_model()


def _no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "position", ["last", "mean", real(0), real(1), real(-2), real(slice(1, None)), last_real()]
)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_diff_mean_equals_direct_cache(model, position, padding_side):
    vecs = extract(
        model, POS, NEG, layers=[0, 1], position=position, padding_side=padding_side, max_tokens=18
    )
    for layer in (0, 1):
        name = f"blocks.{layer}.hook_resid_pre"

        def one(ids, name=name):  # each prompt alone, no padding, straight from the cache
            act = cache_activations(model, torch.tensor([ids]), name)[name][0]
            if position == "mean":
                return act.mean(0)
            index = position.index if isinstance(position, Real) else -1
            return act[index].mean(0) if isinstance(index, slice) else act[index]

        direct = torch.stack([one(p) for p in POS]).mean(0) - torch.stack(
            [one(n) for n in NEG]
        ).mean(0)
        got = vecs[layer].vector
        torch.testing.assert_close(got, direct, atol=2e-5, rtol=1e-4)
        assert vecs[layer].hook_name == name and vecs[layer].method == "diff_mean"


def test_extraction_is_the_same_under_both_paddings_and_batch_sizes(model):
    a = collect_activations(
        model, POS, layers=[0, 1], position="last", padding_side="left", max_tokens=12
    )
    b = collect_activations(
        model, POS, layers=[0, 1], position="last", padding_side="right", max_tokens=30
    )
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_extraction_reads_absolute_columns_only_where_prompts_have_one_length(model):
    same = [p[:4] for p in POS if len(p) >= 4]  # one length: a column is one token in each prompt
    assert len(same) >= 3
    for position, rel in ((2, real(2)), (-1, last_real()), (slice(1, None), real(slice(1, None)))):
        cols = collect_activations(model, same, layers=[1], position=position, padding_side="left")
        torch.testing.assert_close(
            cols, collect_activations(model, same, layers=[1], position=rel), atol=1e-6, rtol=0
        )
    with pytest.raises(ValueError, match=r"absolute column.*different lengths.*interp\.real\(2\)"):
        collect_activations(model, POS, layers=[1], position=2)


def test_methods_recover_a_planted_direction():
    torch.manual_seed(0)
    d = 32
    true = torch.nn.functional.normalize(torch.randn(d), dim=0)
    base = torch.randn(40, d)
    pos, neg = (
        base + 2 * true + 0.1 * torch.randn(40, d),
        base - 2 * true + 0.1 * torch.randn(40, d),
    )
    for method in ("diff_mean", "pca", "probe"):
        v = direction_from_activations(pos, neg, method).vector
        cos = torch.nn.functional.cosine_similarity(v, true, dim=0)
        # A regularised probe on separable data also fits some noise: a looser bound.
        assert cos > (0.85 if method == "probe" else 0.98), (method, cos)
        # Scaled in activation units: the class separation along the direction (4 here).
        assert 3.5 < float(v @ torch.nn.functional.normalize(v, dim=0)) < 4.5
    one = direction_from_activations(pos[:1], neg[:1], "actadd").vector
    torch.testing.assert_close(one, (pos[0] - neg[0]).float(), atol=1e-5, rtol=1e-5)


def test_probe_separates_held_out_data():
    torch.manual_seed(0)
    d = 24
    w = torch.randn(d)
    x = torch.randn(200, d)
    pos, neg = x[x @ w > 0.5][:40], x[x @ w < -0.5][:40]
    direction = direction_from_activations(pos[:30], neg[:30], "probe")
    vec = SteeringVector(direction.vector, 0, threshold=direction.threshold, method="probe")
    acc = accuracy_from_activations(vec, pos[30:], neg[30:])
    assert float(acc.accuracy.estimate) >= 0.9 and acc.ranking is not None
    assert acc.accuracy.low <= acc.accuracy.estimate <= acc.accuracy.high


# --- application ------------------------------------------------------------------------------


def test_add_through_the_hook_equals_editing_the_residual_by_hand(model):
    tokens = torch.tensor([POS[0], POS[4][:5]])
    v = torch.randn(model.cfg.d_model)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    by_hand = model(cache["blocks.1.hook_resid_pre"] + 3.0 * v, start_at_layer=1)
    with steer(model, add(v, 3.0, layer=1)):
        hooked = model(tokens)
    torch.testing.assert_close(hooked, by_hand, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(hooked, model(tokens), atol=1e-3)
    assert _no_hooks_left(model)


def test_alpha_zero_changes_nothing_bit_for_bit(model):
    tokens = torch.tensor([POS[0], POS[4][:5]])
    clean = model(tokens)
    v = torch.randn(model.cfg.d_model)
    for positions in ("all", "prompt", -1, [0, 2], real([0, -1]), slice(1, None)):
        with steer(model, [add(v, 0.0, layer=0, positions=positions), add(v, 0.0, layer=1)]):
            assert torch.equal(model(tokens), clean)
    out = generate(model, tokens[:1], add(v, 0.0, layer=1), max_new_tokens=4, stop_at_eos=False)
    # generate() runs a bridge without the key-value cache (docs/steering.md); compare like with like
    cache = {"use_past_kv_cache": False} if type(model).__name__ == "TransformerBridge" else {}
    plain = model.generate(
        tokens[:1], max_new_tokens=4, do_sample=False, stop_at_eos=False, verbose=False, **cache
    )
    assert torch.equal(out, plain)


def test_ablate_and_clamp_set_the_projection_only_where_asked(model):
    tokens = torch.tensor([POS[4]])
    v = torch.randn(model.cfg.d_model)
    u = v / v.norm()
    name = "blocks.1.hook_resid_pre"
    clean = cache_activations(model, tokens, name)[name]
    with steer(model, ablate(v, layer=1, positions=[1, -1])):
        got = cache_activations(model, tokens, name)[name]  # cached after the edit
    proj = got @ u
    assert proj[0, [1, 5]].abs().max() < 1e-5
    torch.testing.assert_close(got[0, [0, 2, 3, 4]], clean[0, [0, 2, 3, 4]], atol=0, rtol=0)
    with steer(model, clamp(v, 7.5, layer=1)):
        got = cache_activations(model, tokens, name)[name]
    torch.testing.assert_close(got @ u, torch.full_like(proj, 7.5), atol=1e-4, rtol=0)
    # The orthogonal part is untouched.
    torch.testing.assert_close(
        got - (got @ u)[..., None] * u, clean - (clean @ u)[..., None] * u, atol=1e-5, rtol=0
    )


def test_several_vectors_compose_in_order(model):
    tokens = torch.tensor([POS[0]])
    v, w = torch.randn(model.cfg.d_model), torch.randn(model.cfg.d_model)
    with steer(model, [add(v, 1.0, layer=1), add(w, -2.0, layer=1)]):
        both = model(tokens)
    with steer(model, add(v - 2.0 * w, 1.0, layer=1)):
        summed = model(tokens)
    torch.testing.assert_close(both, summed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "positions",
    [
        "all",
        "prompt",
        last_real(),
        real(0),
        real([0, -2]),
        real(slice(1, None)),
        real(slice(0, -1)),
    ],
)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_steers_like_each_sequence_alone(model, positions, padding_side):
    prompts = [POS[0], POS[1], POS[3], NEG[1]]
    enc = encode(model, prompts, padding_side=padding_side)
    v = torch.randn(model.cfg.d_model)
    edits = [add(v, 2.5, layer=0, positions=positions), ablate(v + 1, layer=1, positions=positions)]
    with steer(model, edits, attention_mask=enc.attention_mask):
        batched = model(enc.tokens, attention_mask=enc.attention_mask)
    for row, ids in enumerate(prompts):
        with steer(model, edits):
            alone = model(torch.tensor([ids]))[0]
        real = enc.attention_mask[row].bool()
        torch.testing.assert_close(batched[row, real], alone, atol=1e-5, rtol=1e-5)
    clean = model(enc.tokens, attention_mask=enc.attention_mask)
    assert not torch.allclose(batched, clean, atol=1e-3)


@pytest.mark.parametrize("positions", [2, [0, -1], slice(-3, None)])
def test_int_positions_are_absolute_columns_in_a_padded_batch(model, positions):
    prompts = [POS[0], NEG[1][:3]]  # the second is left-padded
    enc = encode(model, prompts, padding_side="left")
    v = torch.randn(model.cfg.d_model)
    name = "blocks.1.hook_resid_pre"
    clean = cache_activations(model, enc.tokens, name, attention_mask=enc.attention_mask)[name]
    with steer(model, add(v, 2.0, layer=1, positions=positions), attention_mask=enc.attention_mask):
        got = cache_activations(model, enc.tokens, name, attention_mask=enc.attention_mask)[name]
    width = enc.tokens.shape[1]
    cols = torch.zeros(width, dtype=torch.bool)
    cols[torch.arange(width)[positions]] = True  # what Python indexing of the columns means
    torch.testing.assert_close(got[:, cols], clean[:, cols] + 2.0 * v, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:, ~cols], clean[:, ~cols], atol=0, rtol=0)


def test_generation_steers_prompt_and_generated_tokens_with_and_without_cache(model):
    # TransformerLens's own key-value-cache generation is off for learned absolute positions
    # without a tokenizer (unsteered, step-2 logits differ by ~2 from a full forward), so the
    # cached path is compared on the rotary HookedTransformer only, which matches the full
    # forward to 1e-6. A TransformerBridge's cached generation disagrees with its full forwards
    # even unsteered (docs/steering.md), so the bridge is checked without the cache.
    hooked = type(model).__name__ == "HookedTransformer"
    use_cache = model.cfg.positional_embedding_type == "rotary" and hooked
    prompt = torch.tensor([POS[4]])
    v = 3 * torch.randn(model.cfg.d_model)
    kw = {"max_new_tokens": 6, "stop_at_eos": False}
    for positions in ("all", "prompt", "generated", [1, -1], slice(2, None), real(slice(2, None))):
        edit = add(v, 1.0, layer=1, positions=positions)
        cached = generate(model, prompt, edit, use_past_kv_cache=use_cache, **kw)
        uncached = generate(model, prompt, edit, use_past_kv_cache=False, **kw)
        # By hand: the whole sequence each step, the prompt length marking generated columns.
        seq = prompt
        for _ in range(6):
            with steer(model, edit, prompt_len=prompt.shape[1]):
                nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
        assert torch.equal(cached, seq) and torch.equal(uncached, seq), positions
    assert _no_hooks_left(model)


def test_a_bridge_generates_without_the_cache_by_default(model, monkeypatch):
    seen = {}
    real_generate = model.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate(model, torch.tensor([POS[0]]), add(torch.zeros(model.cfg.d_model), 1.0, layer=1),
             max_new_tokens=2, stop_at_eos=False)  # fmt: skip
    bridge = type(model).__name__ == "TransformerBridge"
    assert seen.get("use_past_kv_cache", "unset") == (False if bridge else "unset")


def test_generate_takes_one_prompt_as_a_1d_tensor(model):
    v = 3 * torch.randn(model.cfg.d_model)
    kw = {"max_new_tokens": 3, "stop_at_eos": False}
    one = generate(model, torch.tensor(POS[4]), add(v, 1.0, layer=1, positions=[1, -1]), **kw)
    two = generate(model, torch.tensor([POS[4]]), add(v, 1.0, layer=1, positions=[1, -1]), **kw)
    assert torch.equal(one, two)


def test_generated_only_leaves_the_prompt_alone(model):
    tokens = torch.tensor([POS[4]])
    v = 5 * torch.randn(model.cfg.d_model)
    with steer(model, add(v, 1.0, layer=0, positions="generated"), prompt_len=4):
        logits = model(tokens)
    clean = model(tokens)
    assert torch.equal(logits[:, :4], clean[:, :4])
    assert not torch.allclose(logits[:, 4:], clean[:, 4:], atol=1e-3)


def test_hooks_are_removed_after_an_exception(model):
    v = torch.randn(model.cfg.d_model)
    with pytest.raises(RuntimeError, match="boom"), steer(model, add(v, 1.0, layer=1)):
        raise RuntimeError("boom")
    assert _no_hooks_left(model)


# --- reading ----------------------------------------------------------------------------------


def test_projection_scores_match_the_cache_and_ignore_padding(model):
    vec = extract(model, POS, NEG, layers=1, method="diff_mean")[1]
    proj = project(model, [POS[0], POS[3]], vec, padding_side="left", max_tokens=5)
    assert proj.scores.shape == (2, 5) and torch.isnan(proj.scores[1, :3]).all()
    for ids, got in zip([POS[0], POS[3]], proj.per_prompt(), strict=True):
        act = cache_activations(model, torch.tensor([ids]), vec.hook_name)[vec.hook_name][0]
        torch.testing.assert_close(got, act @ vec.unit, atol=1e-5, rtol=1e-5)


# --- bad input: clear errors before any model run ---------------------------------------------


@pytest.fixture()
def no_run(model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(model, "forward", refuse)
    return model


def test_bad_input_is_refused_before_the_model_runs(no_run):
    model = no_run
    with pytest.raises(ValueError, match=r"'pca' needs paired prompts.*5 prompts.*4"):
        extract(model, POS, NEG[:4], layers=0, method="pca")
    with pytest.raises(ValueError, match="single pair"):
        extract(model, POS, NEG, layers=0, method="actadd")
    with pytest.raises(ValueError, match="negative set is empty"):
        extract(model, POS, [], layers=0)
    with pytest.raises(ValueError, match=r"layer 2 is out of range.*2 layers.*0\.\.1"):
        extract(model, POS, NEG, layers=[0, 2])
    with pytest.raises(ValueError, match="unknown method"):
        extract(model, POS, NEG, layers=0, method="mean")
    with pytest.raises(IndexError, match="out of range"):
        extract(model, POS, NEG, layers=0, position=real(5))
    with pytest.raises(ValueError, match="have no tokens"):
        extract(model, [[1], []], NEG[:2], layers=0)
    with (
        pytest.raises(ValueError, match=r"shape \(8,\).*d_model is 16.*expected shape \(16,\)"),
        steer(model, add(torch.randn(8), 1.0, layer=0)),
    ):
        pass
    with (
        pytest.raises(ValueError, match="layer -1 is out of range"),
        steer(model, add(torch.randn(16), 1.0, layer=-1)),
    ):
        pass
    with pytest.raises(ValueError, match="unknown steering site"):
        add(torch.randn(16), 1.0, layer=0, site="attn.hook_z").hook_name  # noqa: B018
    with pytest.raises(ValueError, match="positions must be"):
        add(torch.randn(16), 1.0, layer=0, positions="last")
    with (
        pytest.raises(IndexError, match=r"positions \[5\] are out of range.*real tokens \(3"),
        steer(
            model,
            add(torch.randn(16), 1.0, layer=0, positions=real([0, 5])),
            attention_mask=encode(model, [[1, 2, 3], [4, 5, 6, 7]]).attention_mask,
        ),
    ):
        pass
    with (
        pytest.raises(IndexError, match=r"positions \[5\] are out of range for the columns \(4"),
        steer(
            model,
            add(torch.randn(16), 1.0, layer=0, positions=[0, 5]),
            attention_mask=encode(model, [[1, 2, 3], [4, 5, 6, 7]]).attention_mask,
        ),
    ):
        pass
    with pytest.raises(ValueError, match="raw tensor needs layer"):
        add(torch.randn(16), 1.0)
    assert _no_hooks_left(model)


def test_edit_records_its_hook():
    e = add(SteeringVector(torch.ones(4), 3, site="resid_post"), 2.0, layer=5)
    assert isinstance(e, Edit) and e.hook_name == "blocks.5.hook_resid_post" and e.value == 2.0


# --- save / load ------------------------------------------------------------------------------


def test_save_and_load_round_trip_and_refuse_another_model(model, tmp_path):
    vecs = extract(model, POS, NEG, layers=[0, 1], method="pca")
    path = save_vectors(tmp_path / "sub" / "vecs.safetensors", vecs, config={"note": "test"})
    assert [p.name for p in path.parent.iterdir()] == ["vecs.safetensors"]  # no temp files left
    back = load_vectors(path, model=model)
    for layer in (0, 1):
        assert torch.equal(back[layer].vector, vecs[layer].vector)
        assert back[layer].hook_name == vecs[layer].hook_name and back[layer].method == "pca"
        assert back[layer].threshold == vecs[layer].threshold
        assert back[layer].metadata["data_sha256"] == vecs[layer].metadata["data_sha256"]
        assert (
            back[layer].metadata["model_fingerprint"] == vecs[layer].metadata["model_fingerprint"]
        )
    other = _rotary_model() if model.cfg.positional_embedding_type == "standard" else None
    if other is not None:
        with pytest.raises(ModelMismatchError, match="extracted from model"):
            load_vectors(path, model=other)
    assert set(load_vectors(path)) == {0, 1}


def test_save_refuses_two_vectors_at_one_layer(tmp_path):
    # load_vectors returns {layer: vector}, so such a file could never be loaded back.
    vecs = [SteeringVector(torch.ones(4), 3), SteeringVector(torch.ones(4), 3, site="resid_post")]
    path = tmp_path / "v.safetensors"
    with pytest.raises(ValueError, match="share a layer"):
        save_vectors(path, vecs)
    assert not path.exists()
