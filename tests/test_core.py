"""The core layer: adapter, site table, interventions, partial forward, Result."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from interp.core.adapter import UnsupportedModelError, adapt
from interp.core.forward import PartialForward, logits_at
from interp.core.interventions import (
    Add,
    Clamp,
    FrozenBlock,
    ProjectOut,
    Record,
    Replace,
    freeze_senders,
    intervene,
)
from interp.core.nodes import ComponentGraph
from interp.core.result import Result
from interp.core.sites import SITES, Site, register_site, residual_sites, site_hook
from interp.hooks import hooks


def _n_hooks(model) -> int:
    # A bridge lists one hook point under each of its names: count each point once.
    points = {id(hp): hp for hp in model.hook_dict.values()}.values()
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in points)


def test_a_model_of_neither_class_is_refused_naming_what_is_supported():
    with pytest.raises(UnsupportedModelError, match="HookedTransformer or a TransformerBridge"):
        adapt(nn.Linear(2, 2))

    class HFLike(nn.Module):
        config = object()

    with pytest.raises(UnsupportedModelError, match="boot_transformers"):
        adapt(HFLike())

    class Envelope:  # the shape of an nnsight LanguageModel
        _model = nn.Linear(1, 1)

        def trace(self):  # pragma: no cover - never called
            pass

    with pytest.raises(UnsupportedModelError, match="nnsight"):
        adapt(Envelope())


def test_adapter_reads_the_configuration_and_the_gqa_map(tiny_model):
    a = adapt(tiny_model)
    assert adapt(tiny_model) is a  # cached per model
    assert (a.spec.n_layers, a.spec.n_heads, a.spec.d_model) == (2, 4, 16)
    assert a.backend == ("hooked" if "HookedTransformer" in type(tiny_model).__name__ else "bridge")
    assert not a.spec.gqa and a.spec.kv_group(3) == 3
    assert a.embed_hooks == ["hook_embed", "hook_pos_embed"]
    tokens = torch.randint(0, 50, (2, 6))
    logits, cache = tiny_model.run_with_cache(tokens)
    torch.testing.assert_close(a.unembed(cache[a.final_hook]), logits, rtol=1e-5, atol=1e-5)
    # The per-head output projection, against TL's own per-head result.
    z = cache["blocks.1.attn.hook_z"]
    heads = a.head_outputs(1, z)
    attn_out = heads.sum(2) + tiny_model.blocks[1].attn.b_O
    torch.testing.assert_close(attn_out, cache["blocks.1.hook_attn_out"], rtol=1e-5, atol=1e-5)


def test_split_inputs_and_frozen_weights_leave_the_model_as_it_was(tiny_model):
    a = adapt(tiny_model)
    flags = [p.requires_grad for p in tiny_model.parameters()]
    with pytest.raises(RuntimeError), a.split_inputs(), a.activation_grads_only():
        assert tiny_model.cfg.use_split_qkv_input
        assert not any(p.requires_grad for p in tiny_model.parameters())
        raise RuntimeError("boom")
    assert not tiny_model.cfg.use_split_qkv_input
    assert [p.requires_grad for p in tiny_model.parameters()] == flags


def test_one_site_table_serves_patching_and_steering():
    assert residual_sites() == ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
    assert site_hook("k", 2) == "blocks.2.attn.hook_k" and SITES["k"].kv
    with pytest.raises(ValueError, match="did you mean 'resid_post'"):
        site_hook("resid_psot", 0, residual=True)
    with pytest.raises(ValueError, match="steering site 'z'"):
        site_hook("z", 0, residual=True)
    new = register_site(Site("test_latents", "blocks.{layer}.hook_resid_post.sae", "bpd"))
    try:
        assert site_hook("test_latents", 1) == "blocks.1.hook_resid_post.sae"
        with pytest.raises(ValueError, match="already registered"):
            register_site(Site("test_latents", "elsewhere.{layer}", "bpd"))
    finally:
        SITES.pop(new.name)


def test_directional_interventions_match_the_dense_formulas(tiny_model):
    tokens = torch.randint(0, 50, (2, 5))
    hook = "blocks.1.hook_resid_pre"
    v = torch.randn(16)
    u = v / v.norm()
    _, cache = tiny_model.run_with_cache(tokens, names_filter=hook)
    x = cache[hook]
    seen: dict[str, torch.Tensor] = {}
    cases = [
        (Add(hook, v, scale=2.5), x + 2.5 * v),
        (ProjectOut(hook, v), x - (x @ u)[..., None] * u),
        (Clamp(hook, v, value=3.0), x + (3.0 - x @ u)[..., None] * u),
        (Replace(hook, torch.zeros(16), (1,)), x.clone().index_fill_(1, torch.tensor([1]), 0.0)),
    ]
    for iv, want in cases:
        with intervene(tiny_model, [iv, Record(hook, seen)]):
            tiny_model(tokens)
        torch.testing.assert_close(seen[hook], want, rtol=1e-5, atol=1e-5)
    # ``where`` limits the edit to chosen positions.
    only_last = Add(hook, v, lambda act: torch.arange(act.shape[1])[None] == act.shape[1] - 1)
    with intervene(tiny_model, [only_last, Record(hook, seen)]):
        tiny_model(tokens)
    torch.testing.assert_close(seen[hook][:, :-1], x[:, :-1])
    torch.testing.assert_close(seen[hook][:, -1], x[:, -1] + v)


def test_interventions_are_removed_even_when_the_forward_fails(tiny_model):
    before = _n_hooks(tiny_model)
    with (
        pytest.raises(ValueError),
        intervene(tiny_model, [Add("blocks.0.hook_resid_pre", torch.ones(16))]),
    ):
        assert _n_hooks(tiny_model) == before + 1
        raise ValueError("fault")
    assert _n_hooks(tiny_model) == before


def test_freezing_every_sender_at_another_run_reproduces_that_run(tiny_model):
    """Hold every head and MLP output (and the embeddings) at run B's values while running A:
    the residual stream, hence the logits, are B's."""
    graph = ComponentGraph(tiny_model)
    a_tok, b_tok = torch.randint(0, 50, (2, 6)), torch.randint(0, 50, (2, 6))
    b_logits, b_cache = tiny_model.run_with_cache(b_tok)
    block = FrozenBlock(slice(0, 2), lambda name: b_cache[name])
    with hooks(tiny_model, fwd=freeze_senders(graph, [block])):
        got = tiny_model(a_tok)
    torch.testing.assert_close(got, b_logits, rtol=1e-4, atol=1e-4)
    # Overriding one last-layer head with A's value adds exactly that head's difference to B's
    # final residual (everything else, the last MLP included, is frozen).
    a_cache = tiny_model.run_with_cache(a_tok)[1]
    head = graph.node("L1H2")
    block = FrozenBlock(
        slice(0, 2), lambda name: b_cache[name], None, [(head, lambda: a_cache[head.hook][:, :, 2])]
    )
    with hooks(tiny_model, fwd=freeze_senders(graph, [block])):
        got = tiny_model(a_tok)
    ad = adapt(tiny_model)
    delta = (
        ad.head_outputs(1, a_cache[head.hook])[:, :, 2]
        - ad.head_outputs(1, b_cache[head.hook])[:, :, 2]
    )
    want = ad.unembed(b_cache[ad.final_hook] + delta)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, b_logits, atol=1e-3)


def test_the_partial_forward_restarted_anywhere_without_a_change_is_the_full_forward(tiny_model):
    tokens = torch.randint(0, 50, (3, 7))
    full = tiny_model(tokens)
    pf = PartialForward(tiny_model, tokens, list(range(7)))
    assert pf.fast  # a HookedTransformer's blocks, or a GPT-2 bridge's decoder layers
    torch.testing.assert_close(pf.base.logits, full, rtol=1e-5, atol=1e-5)
    for layer in (0, 1):
        for p0 in (0, 3, 6):
            out = pf.run_from(layer, p0, 2)
            out = (pf.logits(out) if pf.is_residual else out).reshape(2, 3, 7, -1)
            torch.testing.assert_close(out[1], full, rtol=1e-4, atol=1e-4)
    slow = PartialForward(tiny_model, tokens, [6], fast=False)
    torch.testing.assert_close(slow.run_from(1, 3, 1), full[:, [6]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        logits_at(tiny_model, tokens, [2, 6]), full[:, [2, 6]], rtol=1e-5, atol=1e-5
    )


@dataclass
class _Scores(Result):
    values: torch.Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]]
    note: str = ""
    meta: dict = field(default_factory=dict)


def _scores() -> _Scores:
    v = torch.arange(24.0).reshape(2, 3, 4)
    return _Scores(v, ("layer", "pos"), {"layer": ["L0", "L1", "L2"], "pos": ["a", "b", "a", "c"]})


def test_result_selects_by_label_or_index_and_refuses_an_ambiguous_label():
    r = _scores()
    assert r.sel(layer="L2", pos=3).values.tolist() == [11.0, 23.0]
    assert r.sel(layer="L2", pos=3).meta["fixed"] == {"layer": "L2", "pos": "c"}
    sub = r.sel(layer=["L2", "L0"], pos=[1, 3])
    assert sub.axes == ("layer", "pos") and sub.labels["layer"] == ["L2", "L0"]
    assert sub.values[0].tolist() == [[9.0, 11.0], [1.0, 3.0]]
    with pytest.raises(KeyError, match="appears 2 times"):
        r.sel(pos="a")
    with pytest.raises(KeyError, match="did you mean 'L1'"):
        r.sel(layer="L11")
    with pytest.raises(ValueError, match="no axis 'head'"):
        r.sel(head=0)
    assert r.sel(layer=[1]).squeeze().axes == ("pos",)


def test_result_round_trips_through_its_folder(tmp_path):
    r = _scores()
    r.note = "x"
    r.save(tmp_path / "r")
    back = _Scores.load(tmp_path / "r")
    assert back.axes == r.axes and back.labels == r.labels and back.note == "x"
    torch.testing.assert_close(back.values, r.values)
    assert (tmp_path / "r" / "run.json").exists()
    ci = back.ci(n_resamples=200, seed=1)
    assert ci.low.shape == (3, 4) and bool((ci.low <= ci.high).all())


def test_one_metric_convention_logits_alone_or_with_the_batch(tiny_model):
    """A (logits, batch) metric gets the tokens of the run it measures: patching's base run,
    scrubbing's inputs; a logits-only metric works the same everywhere."""
    from interp.patching import patch_sweep
    from interp.scrubbing import Hypothesis, claim, scrub
    from interp.scrubbing.metrics import next_token_loss

    gen = torch.Generator().manual_seed(0)
    clean, corrupt = (
        torch.randint(0, 50, (3, 6), generator=gen),
        torch.randint(0, 50, (3, 6), generator=gen),
    )
    with_batch = next_token_loss(range(2, 5))  # (logits, tokens) -> [n]
    closed = lambda lg: with_batch(lg, corrupt)  # noqa: E731 - denoising: the base run is corrupt
    a = patch_sweep(tiny_model, clean, corrupt, with_batch, site="resid_pre")
    b = patch_sweep(tiny_model, clean, corrupt, closed, site="resid_pre")
    torch.testing.assert_close(a.values, b.values)
    data = torch.randint(0, 50, (12, 6), generator=gen)
    hyp = Hypothesis("embed", claim("logits", None, claim("embed")))
    first = lambda lg: lg[:, -1].logsumexp(-1)  # noqa: E731 - a logits-only loss
    r = scrub(tiny_model, data, hyp, first, n_samples=6)
    assert r.scrubbed.shape == (6,)
    with pytest.raises(ValueError, match=r"one value per input \(shape \[12\]\)"):
        scrub(tiny_model, data, hyp, lambda lg: lg.sum(), n_samples=6)


def test_a_spliced_dictionary_is_exact_until_its_latents_are_changed(tiny_model):
    """Splice an SAE at a residual hook: with nothing attached the model computes what it did
    (reconstruction + error = the activation); ablating one latent through the SAE's own hook
    point changes the activation by exactly that latent's decoder row times its value."""
    from interp.core.interventions import Splice
    from saes import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=16, d_sae=32, activation="topk", k=4), seed=0).eval()
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_resid_pre"
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        base, cache = tiny_model.run_with_cache(tokens, names_filter=hook)
        with intervene(tiny_model, [Splice(hook, sae)]):
            spliced = tiny_model(tokens)
        torch.testing.assert_close(spliced, base, rtol=1e-5, atol=1e-5)
        acts = sae(cache[hook].reshape(-1, 16)).acts
        latent = int(acts.abs().sum(0).argmax())

        def ablate(a, hook):
            a = a.clone()
            a[:, latent] = 0
            return a

        with (
            sae.hooks([("hook_sae_acts_post", ablate)]),
            intervene(tiny_model, [Splice(hook, sae), Record("blocks.1.hook_resid_pre", seen)]),
        ):
            changed = tiny_model(tokens)
    assert not torch.allclose(changed, base, atol=1e-4)
    want = cache[hook].reshape(-1, 16) - acts[:, latent, None] * sae.W_dec[latent]
    got = seen[hook].reshape(-1, 16)  # Record runs after Splice on the same hook
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_transcoder_splice_reads_its_input_site_and_keeps_the_mlp_output(tiny_model):
    """A transcoder splice at the MLP output reads the MLP input in the same forward: with its
    error term the model is unchanged; ablating a latent moves the MLP output by exactly
    -activation · decoder row (the error held), computed by hand from a cache."""
    from interp.core.interventions import Splice
    from saes import SAEConfig
    from saes.transcoder import Transcoder, mlp_metadata

    ins, out = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"
    cfg = SAEConfig(
        d_in=16, d_sae=32, d_out=16, activation="relu",
        metadata=mlp_metadata(1, model=None, fingerprint=None),
    )  # fmt: skip
    tc = Transcoder(cfg, seed=0).eval()
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        base, cache = tiny_model.run_with_cache(tokens, names_filter=[ins, out])
        with intervene(tiny_model, [Splice(out, tc)]):
            spliced = tiny_model(tokens)
        torch.testing.assert_close(spliced, base, rtol=1e-5, atol=1e-5)
        acts = tc(cache[ins].reshape(-1, 16)).acts
        latent = int(acts.abs().sum(0).argmax())

        def ablate(a, hook):
            a = a.clone()
            a[:, latent] = 0
            return a

        with (
            tc.hooks([("hook_sae_acts_post", ablate)]),
            intervene(tiny_model, [Splice(out, tc, input_hook=ins), Record(out, seen)]),
        ):
            tiny_model(tokens)
    want = cache[out].reshape(-1, 16) - acts[:, latent, None] * tc.W_dec[latent]
    torch.testing.assert_close(seen[out].reshape(-1, 16), want, rtol=1e-4, atol=1e-5)
    assert acts[:, latent].abs().sum() > 0


def test_transcoder_splice_without_an_input_site_is_refused():
    from interp.core.interventions import Splice
    from saes import SAEConfig
    from saes.transcoder import Transcoder

    tc = Transcoder(SAEConfig(d_in=16, d_sae=32, d_out=16, activation="relu"), seed=0)
    with pytest.raises(ValueError, match="input_hook="):
        Splice("blocks.1.hook_mlp_out", tc).hooks()


def test_feature_nodes_are_named_in_the_component_graph_vocabulary(tiny_model):
    from interp.core.nodes import UnknownNodeError

    graph = ComponentGraph(tiny_model)
    node = graph.node("F1.7@3")
    assert (node.kind, node.layer, node.head, node.pos) == ("feature", 1, 7, 3)
    assert node.name == "F1.7@3" and node.is_sender and node.hook == "blocks.1.hook_mlp_out"
    assert node.order == graph.node("MLP1").order  # where the MLP writes
    assert node.order < graph.node("logits").order
    with pytest.raises(UnknownNodeError, match="MLP layers 0-1"):
        graph.node(f"F{graph.n_layers}.0")
