"""Every method gives the same numbers on a TransformerBridge and on a HookedTransformer of the
same weights (a tiny random Llama with grouped-query attention: rotary, RMSNorm, gated MLP).

The bridge runs the Hugging Face model itself; the HookedTransformer is TransformerLens's own
conversion of those weights. Agreement to 1e-5 (fp32) is the claim.
"""

from __future__ import annotations

import pytest
import torch
from twins import twins

from interp.cache import cache_activations
from interp.core.adapter import adapt
from interp.core.forward import PartialForward
from interp.patching import (
    attribution_patch,
    edge_attribution,
    edge_patch,
    patch_sweep,
    path_patch,
)
from interp.scrubbing import Hypothesis, claim, compare
from interp.scrubbing.metrics import next_token_loss
from interp.steering.apply import ablate, add, clamp, steer

# Tests that compare with the HookedTransformer twin are marked ``hooked`` (skipped on
# TransformerLens 4, which has none); the rest check the bridge against its own whole forwards.
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    bridge, hooked = twins(tmp_path_factory.mktemp("tok"))
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(2, 62, (4, 9), generator=gen)
    corrupt = torch.randint(2, 62, (4, 9), generator=gen)
    return bridge, hooked, clean, corrupt


def metric(logits):
    return logits[:, -1, 5] - logits[:, -1, 7]


@pytest.mark.hooked
def test_the_twins_are_what_they_say(pair):
    bridge, hooked, clean, _ = pair
    assert (adapt(bridge).backend, adapt(hooked).backend) == ("bridge", "hooked")
    assert adapt(bridge).spec == adapt(hooked).spec and adapt(bridge).spec.gqa
    torch.testing.assert_close(bridge(clean), hooked(clean), **TOL)


def test_the_bridge_restarts_from_any_layer_exactly(pair):
    bridge, _, clean, _ = pair
    full = bridge(clean)
    pf = PartialForward(bridge, clean, list(range(clean.shape[1])))
    assert pf.mode == "decoder"
    for layer in range(2):
        for p0 in (0, 4, clean.shape[1] - 1):  # later positions read earlier keys from a cache
            out = pf.logits(pf.run_from(layer, p0, 2)).reshape(2, *full.shape)
            torch.testing.assert_close(out[1], full, **TOL)
    assert pf.block_positions == 2 * 4 * (9 + 5 + 1) * (2 + 1)


SWEEPS = [
    ("resid_pre", ("layer", "pos")),
    ("resid_post", ("layer", "pos")),
    ("attn_out", ("layer", "pos")),
    ("mlp_out", ("layer", "pos")),
    ("z", ("layer", "pos", "head")),
    ("k", ("layer", "head")),
    ("v", ("layer", "pos", "head")),
    ("pattern", ("layer", "head")),
]


@pytest.mark.parametrize(("site", "over"), SWEEPS)
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_patch_sweep(pair, site, over, direction):
    bridge, hooked, clean, corrupt = pair
    rb = patch_sweep(bridge, clean, corrupt, metric, site=site, over=over, direction=direction)
    slow = patch_sweep(
        bridge, clean, corrupt, metric, site=site, over=over, direction=direction, fast=False
    )
    torch.testing.assert_close(rb.values, slow.values, **TOL)  # the restart against whole forwards
    if hooked is not None:
        rh = patch_sweep(hooked, clean, corrupt, metric, site=site, over=over, direction=direction)
        torch.testing.assert_close(rb.values, rh.values, **TOL)
    assert rb.meta["fast"] and not slow.meta["fast"]


def test_patching_resid_mid_on_a_bridge_is_refused_with_the_reason(pair):
    bridge, _, clean, corrupt = pair
    with pytest.raises(ValueError, match="ln2.hook_in.*only the MLP branch"):
        patch_sweep(bridge, clean, corrupt, metric, site="resid_mid")


@pytest.mark.hooked
@pytest.mark.parametrize(
    "call",
    [
        lambda m, c, x: attribution_patch(m, c, x, metric, site="resid_pre"),
        lambda m, c, x: attribution_patch(m, c, x, metric, site="z", over=("layer", "pos", "head")),
        lambda m, c, x: attribution_patch(m, c, x, metric, site="attn_out", method="ig", steps=3),
        lambda m, c, x: edge_attribution(m, c, x, metric),
        lambda m, c, x: edge_attribution(m, c, x, metric, method="eap-ig", steps=3),
        lambda m, c, x: path_patch(m, c, x, metric, senders="heads", receivers="logits"),
        lambda m, c, x: path_patch(
            m, c, x, metric, senders=["L0H1", "MLP0"], receivers=["L1H2.q", "L1G1.k", "MLP1.in"]
        ),
        lambda m, c, x: edge_patch(m, c, x, metric),
    ],
    ids=["atp-resid", "atp-z", "atp-ig", "eap", "eap-ig", "path-heads", "path-receivers", "edges"],
)
def test_attribution_and_path_patching(pair, call):
    bridge, hooked, clean, corrupt = pair
    torch.testing.assert_close(
        call(bridge, clean, corrupt).values, call(hooked, clean, corrupt).values, **TOL
    )


@pytest.mark.hooked
def test_caching(pair):
    bridge, hooked, clean, _ = pair
    names = [
        "hook_embed",
        "blocks.0.attn.hook_z",
        "blocks.1.hook_resid_mid",
        "blocks.1.attn.hook_k",
    ]
    cb, ch = cache_activations(bridge, clean, names), cache_activations(hooked, clean, names)
    for n in names:
        torch.testing.assert_close(cb[n], ch[n], **TOL)


@pytest.mark.hooked
def test_steering_edits(pair):
    bridge, hooked, clean, _ = pair
    v = torch.randn(32, generator=torch.Generator().manual_seed(3))
    edits = [
        add(v, 2.0, layer=1),
        ablate(v, layer=0, site="attn_out"),
        clamp(v, 1.5, layer=1, site="resid_post", positions=[-1]),
    ]
    outs = []
    for m in (bridge, hooked):
        with steer(m, edits):
            outs.append(m(clean))
    torch.testing.assert_close(outs[0], outs[1], **TOL)


@pytest.mark.hooked
def test_causal_scrubbing(pair):
    bridge, hooked, _, _ = pair
    data = torch.randint(2, 62, (24, 9), generator=torch.Generator().manual_seed(5))
    first = lambda t: t[0]  # noqa: E731 - a feature: the first token
    hyps = [
        Hypothesis(
            "L1 heads on embed",
            claim("logits", None, *[claim(f"L1H{h}", None, claim("embed")) for h in range(4)]),
        ),
        Hypothesis("first token", claim("logits", first)),
    ]
    loss = next_token_loss(range(4, 8))
    cb = compare(bridge, data, hyps, loss, n_samples=16, seed=0)
    ch = compare(hooked, data, hyps, loss, n_samples=16, seed=0)
    for h in hyps:
        for part in ("clean", "scrubbed", "random"):
            torch.testing.assert_close(getattr(cb[h.name], part), getattr(ch[h.name], part), **TOL)


@pytest.mark.hooked
def test_logits_at_only_some_positions(pair):
    from interp.core.forward import logits_at

    bridge, hooked, clean, _ = pair
    full = hooked(clean)
    for m in (bridge, hooked):
        torch.testing.assert_close(logits_at(m, clean, [3, 8]), full[:, [3, 8]], **TOL)
    kw = {"site": "resid_pre", "logits_at": -1}
    torch.testing.assert_close(
        attribution_patch(bridge, clean, clean.flip(0), metric, **kw).values,
        attribution_patch(hooked, clean, clean.flip(0), metric, **kw).values,
        **TOL,
    )


@pytest.mark.hooked
def test_the_store_writer_and_the_model_streamed_source(pair, tmp_path):
    """The activation store and the SAE trainer's model-streamed source read the same rows from
    a bridge as from its HookedTransformer twin."""
    from interp.store import ActivationStore
    from saes.data import model_source

    bridge, hooked, _, _ = pair
    gen = torch.Generator().manual_seed(7)
    contexts = [torch.randint(2, 62, (6,), generator=gen) for _ in range(6)]
    hook = "blocks.1.hook_resid_post"
    kw = {"context_size": 6, "shard_tokens": 18, "forward_max_tokens": 12, "progress": False}
    sb = ActivationStore.write(tmp_path / "b", bridge, hook, contexts, **kw)
    sh = ActivationStore.write(tmp_path / "h", hooked, hook, contexts, **kw)
    assert len(sb.shards) == len(sh.shards) > 1
    for i in range(len(sb.shards)):
        torch.testing.assert_close(sb.shard_activations(i), sh.shard_activations(i), **TOL)
    rows_b = torch.cat(
        list(model_source(bridge, hook, contexts, 5, max_tokens=12, buffer_batches=2))
    )
    rows_h = torch.cat(
        list(model_source(hooked, hook, contexts, 5, max_tokens=12, buffer_batches=2))
    )
    torch.testing.assert_close(rows_b, rows_h, **TOL)


def test_a_restart_that_fails_its_check_falls_back_to_whole_forwards(pair, monkeypatch):
    bridge, _, clean, corrupt = pair
    real = PartialForward._decoder_blocks

    def off_by_a_little(self, layer, p0, k):
        return real(self, layer, p0, k) + 1e-3  # an architecture whose restart is not exact

    monkeypatch.setattr(PartialForward, "_decoder_blocks", off_by_a_little)
    pf = PartialForward(bridge, clean, [8])
    assert pf.mode is None and not pf.fast
    torch.testing.assert_close(pf.run_from(1, 4, 1), bridge(clean)[:, [8]], **TOL)
    r = patch_sweep(bridge, clean, corrupt, metric, site="resid_pre")
    monkeypatch.undo()
    want = patch_sweep(bridge, clean, corrupt, metric, site="resid_pre")  # the restart, exact
    torch.testing.assert_close(r.values, want.values, **TOL)
    assert not r.meta["fast"]  # the result says which path ran
