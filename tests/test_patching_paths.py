"""Path patching, edge patching and attribution patching against exact or hand computations."""

from __future__ import annotations

import pytest
import torch
from builders import tl_model

from interp.core.nodes import ComponentGraph, UnknownNodeError
from interp.metrics import logit_diff
from interp.patching import (
    attribution_patch,
    correlation,
    edge_attribution,
    edge_patch,
    patch_sweep,
    path_patch,
)


def _metric(logits):
    return logit_diff(logits, 3, 7)


def _batch(model, n=4, pos=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = model.cfg.d_vocab
    return torch.randint(0, v, (n, pos), generator=g), torch.randint(0, v, (n, pos), generator=g)


def _linear_after_attention():
    """One attention layer, no norms, no MLP: the logits are linear in every head's z. Neither
    GPT-2 nor Llama expresses it, so it is a HookedTransformer and its tests are TL 3 only."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(2)
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=16,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        d_vocab=30,
        attn_only=True,
        normalization_type=None,
        device="cpu",
    )
    return HookedTransformer(cfg).eval()


def test_graph_vocabulary(tiny_model):
    g = ComponentGraph(tiny_model)
    assert [n.name for n in g.senders[:3]] == ["embed", "pos_embed", "L0H0"]
    assert g.node("L1H3.v").hook == "blocks.1.attn.hook_v"
    assert g.node("L0H2@5").pos == 5
    # Heads of a layer reach later layers and their own layer's MLP, never their own inputs.
    ups = {s.name for s in g.upstream("L1H0.q")}
    assert "MLP0" in ups and "L0H3" in ups and "L1H1" not in ups
    assert "L1H2" in {s.name for s in g.upstream("MLP1.in")}
    assert len(g.edges) == sum(len(g.upstream(r)) for r in g.receivers)
    with pytest.raises(UnknownNodeError, match="did you mean 'L1H3'"):
        g.node("L1H33")


def test_graph_gqa_names_shared_key_value_heads():
    model = tl_model(
        n_layers=2, d_model=24, n_ctx=8, d_head=4, n_heads=6, n_key_value_heads=2, d_vocab=20,
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=4,
        d_mlp=16,
    )  # fmt: skip
    g = ComponentGraph(model)
    assert g.node("L1G1.k").head == 1
    with pytest.raises(UnknownNodeError, match="'L1G1.k'"):
        g.node("L1H4.k")


def test_all_paths_out_of_a_head_equal_patching_it(tmp_path):
    """In a 2-layer attention-only model every path from a layer-0 head goes through a layer-1
    input or straight to the logits, so path patching into all of them is activation patching."""
    from interp.toy import load_toy_induction

    model = load_toy_induction()
    clean, corrupt = _batch(model, n=6, pos=9)
    recv = [r.name for r in ComponentGraph(model).receivers if r.layer == 1] + ["logits"]
    got = path_patch(model, clean, corrupt, _metric, senders=["L0H4", "L0H2"], receivers=recv)
    ref = patch_sweep(
        model,
        clean,
        corrupt,
        _metric,
        site="z",
        over=("layer", "head"),
        direction="noise",
        layers=[0],
        heads=[4, 2],
    )
    torch.testing.assert_close(got.values, ref.values[:, 0], atol=1e-5, rtol=0)
    assert got.labels["sender"] == ["L0H4", "L0H2"]


def test_direct_path_to_logits_by_hand(tiny_model):
    clean, corrupt = _batch(tiny_model)
    got = path_patch(tiny_model, clean, corrupt, _metric, senders="L0H1", receivers="logits")
    _, cc = tiny_model.run_with_cache(clean)
    _, xc = tiny_model.run_with_cache(corrupt)
    dz = xc["blocks.0.attn.hook_z"][:, :, 1] - cc["blocks.0.attn.hook_z"][:, :, 1]
    final = cc["blocks.1.hook_resid_post"] + dz @ tiny_model.blocks[0].attn.W_O[1]
    logits = tiny_model.unembed(tiny_model.ln_final(final))
    torch.testing.assert_close(got.values[:, 0], _metric(logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize("freeze", ["heads+mlps", "heads"])
def test_a_path_to_the_logits_is_one_forward_with_the_rest_frozen(tiny_model, freeze):
    """Into the logits alone, path patching a head is one forward of the base prompts with the
    sender at its source value and every other head held at its base value, and every MLP too
    for "heads+mlps" (direct paths), none for "heads" (Wang et al.: MLPs recomputed)."""
    clean, corrupt = _batch(tiny_model)
    got = path_patch(
        tiny_model, clean, corrupt, _metric, senders="L0H1", receivers="logits", freeze=freeze
    )
    assert got.meta["freeze"] == freeze and got.direction == "noise"  # base clean, source corrupt
    _, base = tiny_model.run_with_cache(clean)
    _, src = tiny_model.run_with_cache(corrupt)

    def heads(act, hook):
        out = base[hook.name].clone()
        if hook.name == "blocks.0.attn.hook_z":
            out[:, :, 1] = src[hook.name][:, :, 1]
        return out

    def mlps(act, hook):
        return base[hook.name].clone()

    fwd = [(f"blocks.{la}.attn.hook_z", heads) for la in range(2)]
    if freeze == "heads+mlps":
        fwd += [(f"blocks.{la}.hook_mlp_out", mlps) for la in range(2)]
    with torch.no_grad():
        ref = _metric(tiny_model.run_with_hooks(clean, fwd_hooks=fwd))
    torch.testing.assert_close(got.values[:, 0], ref, atol=1e-5, rtol=0)


def test_the_two_freeze_semantics_differ_only_through_mlps(tiny_model):
    clean, corrupt = _batch(tiny_model)
    kw = {"senders": ["L0H1", "L0H3"], "receivers": ["L1H0.q", "logits"]}
    direct = path_patch(tiny_model, clean, corrupt, _metric, **kw)
    wang = path_patch(tiny_model, clean, corrupt, _metric, freeze="heads", **kw)
    assert direct.meta["freeze"] == "heads+mlps"  # the default
    assert (direct.values - wang.values).abs().max() > 1e-4  # MLP0 carries part of the paths
    with pytest.raises(ValueError, match="freeze"):
        path_patch(tiny_model, clean, corrupt, _metric, freeze="mlps", **kw)


def test_path_into_an_mlp_input_by_hand(tiny_model):
    clean, corrupt = _batch(tiny_model)
    got = path_patch(tiny_model, clean, corrupt, _metric, senders="L0H2", receivers="MLP1.in")
    _, cc = tiny_model.run_with_cache(clean)
    _, xc = tiny_model.run_with_cache(corrupt)
    dz = xc["blocks.0.attn.hook_z"][:, :, 2] - cc["blocks.0.attn.hook_z"][:, :, 2]
    block = tiny_model.blocks[1]
    mlp_in = cc["blocks.1.hook_resid_mid"] + dz @ tiny_model.blocks[0].attn.W_O[2]
    new_out = block.mlp(block.ln2(mlp_in))
    logits = tiny_model.run_with_hooks(
        clean, fwd_hooks=[("blocks.1.hook_mlp_out", lambda a, hook: new_out)]
    )
    torch.testing.assert_close(got.values[:, 0], _metric(logits), atol=1e-5, rtol=0)


def test_heads_sweep_layout_and_cells_without_a_path(tiny_model):
    clean, corrupt = _batch(tiny_model)
    res = path_patch(tiny_model, clean, corrupt, _metric, senders="heads", receivers="L1H0.q")
    assert res.axes == ("layer", "head") and res.shape == (2, 4)
    # Layer-1 heads have no path into a layer-1 query: their cells are the clean run.
    torch.testing.assert_close(res.values[:, 1], res.clean[:, None].expand(-1, 4))
    one = path_patch(tiny_model, clean, corrupt, _metric, senders="L0H3", receivers="L1H0.q")
    torch.testing.assert_close(res.values[:, 0, 3], one.values[:, 0])


@pytest.mark.hooked
def test_attribution_is_exact_where_the_model_is_linear():
    model = _linear_after_attention()
    clean, corrupt = _batch(model)
    exact = patch_sweep(model, clean, corrupt, _metric, site="z", over=("layer", "head", "pos"))
    for method in ("atp", "ig"):
        est = attribution_patch(
            model, clean, corrupt, _metric, site="z", over=("layer", "head", "pos"), method=method
        )
        torch.testing.assert_close(est.values, exact.values, atol=1e-4, rtol=0)
        torch.testing.assert_close(est.corrupt, exact.corrupt)
    edges = edge_attribution(model, clean, corrupt, _metric)
    to_logits = [i for i, e in enumerate(edges.labels["edge"]) if e.endswith("->logits")]
    exact_edges = edge_patch(
        model, clean, corrupt, _metric, edges=[edges.labels["edge"][i] for i in to_logits]
    )
    torch.testing.assert_close(edges.values[:, to_logits], exact_edges.values, atol=1e-4, rtol=0)


def test_attribution_reading_only_the_metric_positions_is_the_same(tiny_model):
    clean, corrupt = _batch(tiny_model)
    full = attribution_patch(tiny_model, clean, corrupt, _metric, site="z", over=("layer", "head"))
    last = attribution_patch(
        tiny_model, clean, corrupt, _metric, site="z", over=("layer", "head"), logits_at=-1
    )
    torch.testing.assert_close(last.values, full.values, atol=1e-5, rtol=0)
    e_full = edge_attribution(tiny_model, clean, corrupt, _metric)
    e_last = edge_attribution(tiny_model, clean, corrupt, _metric, logits_at=[-1])
    torch.testing.assert_close(e_last.values, e_full.values, atol=1e-5, rtol=0)


def test_attribution_tracks_exact_patching_on_the_toy_model():
    from interp.toy import load_toy_induction, repeated_random_tokens

    model = load_toy_induction()
    g = torch.Generator().manual_seed(0)
    clean = repeated_random_tokens(12, 8, generator=g)
    corrupt = clean.clone()
    corrupt[:, 9:] = torch.randint(1, model.cfg.d_vocab, (12, 8), generator=g)

    def metric(logits):
        return logits[:, -2].log_softmax(-1).gather(1, clean[:, -1:])[:, 0]

    exact = patch_sweep(model, clean, corrupt, metric, site="z", over=("layer", "head"))
    est = attribution_patch(model, clean, corrupt, metric, site="z", over=("layer", "head"))
    assert correlation(est, exact) > 0.5
    edges_exact = edge_patch(model, clean, corrupt, metric)
    eap = edge_attribution(model, clean, corrupt, metric)
    assert eap.labels == edges_exact.labels
    assert correlation(eap, edges_exact) > 0.5


def test_bad_nodes_and_directions(tiny_model, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(tiny_model, "forward", boom)  # every check comes before any forward
    clean, corrupt = _batch(tiny_model)
    with pytest.raises(ValueError, match="not upstream"):
        path_patch(tiny_model, clean, corrupt, _metric, senders="L1H0", receivers="L0H1.q")
    with pytest.raises(ValueError, match="not upstream"):
        edge_patch(tiny_model, clean, corrupt, _metric, edges=["MLP1->L1H0.k"])
    with pytest.raises(UnknownNodeError, match="did you mean"):
        path_patch(tiny_model, clean, corrupt, _metric, senders="L0H9", receivers="logits")
    with pytest.raises(ValueError, match="receivers, not senders"):
        path_patch(tiny_model, clean, corrupt, _metric, senders="L1H0.q", receivers="logits")
    with pytest.raises(IndexError, match="out of range"):
        path_patch(tiny_model, clean, corrupt, _metric, senders="L0H0", receivers="logits@9")
    with pytest.raises(ValueError, match="same shape"):
        edge_attribution(tiny_model, clean, corrupt[:2], _metric)
    with pytest.raises(ValueError, match="one value per prompt"):
        path_patch(
            tiny_model, clean, corrupt, lambda lg: lg[:, -1], senders="L0H0", receivers="logits"
        )
    with pytest.raises(ValueError, match="the metric failed"):
        attribution_patch(
            tiny_model,
            clean,
            corrupt,
            lambda lg: lg[:, 99].sum(-1),
            site="z",
            over=("layer", "head"),
        )


def test_integration_grids_converge_to_the_same_integral(tiny_model):
    """EAP-IG's points: the midpoint rule and Hanna et al.'s right sum approximate one integral;
    they differ at 1 step and agree as steps grow (midpoint error ~1/m^2, right ~1/m)."""
    clean, corrupt = _batch(tiny_model)

    def eap(grid, steps):
        return edge_attribution(
            tiny_model, clean, corrupt, _metric, method="eap-ig", steps=steps, grid=grid
        )

    gap = [float((eap("midpoint", m).values - eap("right", m).values).abs().max()) for m in (1, 32)]
    assert gap[1] < gap[0] / 10, gap
    assert eap("right", 2).meta["grid"] == "right" and eap("midpoint", 2).meta["grid"] == "midpoint"
    with pytest.raises(ValueError, match="grid"):
        eap("left", 2)
