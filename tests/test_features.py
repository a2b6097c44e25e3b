"""Tests for saes.features: every streamed statistic against a brute-force pass over all rows."""

import json

import numpy as np
import pytest
import torch

from interp.store import ActivationStore
from saes.config import SAEConfig
from saes.features import feature_stats, logit_effects
from saes.sae import SAE

HOOK = "blocks.1.hook_resid_post"
D_SAE = 24


def contexts(n=12, ctx=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50, (ctx,), generator=g) for _ in range(n)]


@pytest.fixture()
def store(tmp_path, tiny_model):
    return ActivationStore.write(
        tmp_path / "s", tiny_model, HOOK, contexts(), context_size=6, shard_tokens=18
    )


@pytest.fixture()
def sae(store):
    """Biases set from the store's own pre-activations, so that whatever the model's activation
    scale, latent j fires on about 0.5% (j = 0) to 70% (j = 23) of rows; latent 3 is dead."""
    sae = SAE(SAEConfig(d_in=16, d_sae=D_SAE, activation="relu"), seed=0)
    x = torch.cat(list(store.batches(64, seed=0)))
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc
        q = torch.linspace(0.995, 0.3, D_SAE, dtype=pre.dtype)
        sae.b_enc.copy_(-torch.stack([pre[:, j].quantile(q[j]) for j in range(D_SAE)]))
        sae.b_enc[3] = -1e3
    return sae


class FakeTokenizer:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def dense(sae, store, batch_size):
    """Every row's activations, token and (seq_id, position): the brute-force reference. Encoded in
    the same batches as feature_stats reads, so the float32 values are bit-identical."""
    batches = list(store.batches(batch_size, seed=0, with_meta=True))
    with torch.no_grad():
        acts = torch.cat([sae.encode(b.acts) for b in batches])
    return acts, *(torch.cat([getattr(b, k) for b in batches]) for k in ("seq_ids", "positions"))


def test_top_activations_density_and_contexts_equal_a_dense_pass(store, sae):
    report = feature_stats(sae, store, batch_size=7, top_k=5, context_window=(2, 1))
    acts, seqs, poss = dense(sae, store, 7)
    where = {(int(s), int(p)): i for i, (s, p) in enumerate(zip(seqs, poss, strict=True))}
    assert report.n_rows == len(store) == 72 and report.hook == HOOK
    assert [f.latent for f in report.features] == list(range(D_SAE))
    for f in report.features:
        a = acts[:, f.latent]
        assert f.n_active == int((a != 0).sum()) and f.density == f.n_active / 72
        ranked = a.argsort(descending=True, stable=True)
        order = ranked[: min(5, f.n_active)]
        assert torch.equal(torch.tensor([e.value for e in f.top]), a[order])
        pairs = [(e.seq_id, e.position) for e in f.top]
        assert len(set(pairs)) == len(pairs)
        # rows with equal activations (position 0 of contexts that start with the same token) may
        # be kept in either order: compare the rows themselves where no tie straddles the cut
        if f.n_active <= 5 or a[ranked[4]] > a[ranked[5]]:
            assert set(pairs) == {(int(seqs[i]), int(poss[i])) for i in order}
        for e in f.top:
            assert e.value == float(a[where[e.seq_id, e.position]])
            ctx = store.context(e.seq_id).tolist()
            start = max(0, e.position - 2)
            assert e.context_ids == ctx[start : e.position + 2]
            assert e.context_ids[e.focus] == e.token_id == ctx[e.position]
        if f.n_active:
            assert f.max_activation == pytest.approx(float(a.max()))
            assert f.mean_activation == pytest.approx(float(a[a != 0].mean()), rel=1e-5)
    dead = report.feature(3)
    assert dead.n_active == 0 and dead.top == [] and dead.bands == [] and sum(dead.hist_counts) == 0
    assert any(0 < f.n_active < 20 for f in report.features)  # rare latents are covered too


def test_histograms_are_exact_after_growing(store, sae):
    report = feature_stats(sae, store, batch_size=5, hist_bins=8)
    acts = dense(sae, store, 5)[0]
    for f in report.features:
        a = acts[:, f.latent].double()
        assert sum(f.hist_counts) == f.n_active
        if not f.n_active:
            continue
        e = torch.tensor(f.hist_edges, dtype=torch.float64)
        assert e[0] == 0 and a.max() <= e[-1] < 2 * a.max() + 1e-9
        ref = [int(((a > lo) & (a <= hi)).sum()) for lo, hi in zip(e[:-1], e[1:], strict=True)]
        assert f.hist_counts == ref


@pytest.mark.parametrize("reservoir", [4, 512])
def test_quantile_samples_lie_in_their_bands(store, sae, reservoir):
    report = feature_stats(
        sae, store, batch_size=9, n_quantiles=4, examples_per_band=3, reservoir_size=reservoir
    )
    acts, seqs, poss = dense(sae, store, 9)
    where = {(int(s), int(p)): i for i, (s, p) in enumerate(zip(seqs, poss, strict=True))}
    for f in report.features:
        if not f.n_active:
            continue
        assert len(f.bands) == 4
        assert all(b.low <= b.high for b in f.bands)
        assert all(x.high == y.low for x, y in zip(f.bands, f.bands[1:], strict=False))
        for j, band in enumerate(f.bands):
            assert len(band.examples) <= 3
            for e in band.examples:
                assert e.value <= band.high
                assert band.low <= e.value if j == 0 else band.low < e.value
                assert e.value == float(acts[where[e.seq_id, e.position], f.latent])
        a = acts[:, f.latent]
        if reservoir >= f.n_active:  # the sample is every active row: quantiles are exact
            q = torch.quantile(a[a != 0].double(), torch.linspace(0, 1, 5, dtype=torch.float64))
            edges = [f.bands[0].low] + [b.high for b in f.bands]
            np.testing.assert_allclose(edges, q.numpy(), rtol=1e-12)
            assert sum(len(b.examples) for b in f.bands) >= min(f.n_active, 4)


def test_seeded_subset_with_tokens_is_json_ready(store, sae):
    a = feature_stats(
        sae, store, latents=[5, 0], batch_size=8, n_batches=3, tokenizer=FakeTokenizer()
    )
    b = feature_stats(
        sae, store, latents=[5, 0], batch_size=8, n_batches=3, tokenizer=FakeTokenizer()
    )
    assert a == b and a.n_rows == 24 and [f.latent for f in a.features] == [5, 0]
    ex = next(e for f in a.features for e in f.top)
    assert ex.context_tokens == [f"<{t}>" for t in ex.context_ids]
    json.dumps(a.to_dict())


def test_logit_effects_equal_a_direct_matmul(sae, tiny_model):
    ids = [0, 7, 23]
    raw = feature_effects = logit_effects(sae, tiny_model, ids, k=4, through_final_norm=False)
    direct = sae.W_dec[ids].detach() @ tiny_model.W_U.detach()
    for eff, row in zip(raw.effects, direct, strict=True):
        top, bottom = row.topk(4), row.topk(4, largest=False)
        assert eff.top_ids == top.indices.tolist() and eff.bottom_ids == bottom.indices.tolist()
        torch.testing.assert_close(torch.tensor(eff.top_values), top.values)
        torch.testing.assert_close(torch.tensor(eff.bottom_values), bottom.values)
    normed = logit_effects(sae, tiny_model, ids, k=4, tokenizer=FakeTokenizer())
    d = sae.W_dec[ids].detach()
    ref = (
        (d - d.mean(-1, keepdim=True)) * tiny_model.ln_final.w.detach()
    ) @ tiny_model.W_U.detach()
    for eff, row in zip(normed.effects, ref, strict=True):
        torch.testing.assert_close(torch.tensor(eff.top_values), row.topk(4).values)
        assert eff.top_tokens == [f"<{i}>" for i in eff.top_ids]
    # without a tokenizer argument the model's own is used (a bridge has one; the random
    # HookedTransformer has none)
    own = getattr(tiny_model, "tokenizer", None)
    first = feature_effects.effects[0]
    expect = None if own is None else [own.decode([i]) for i in first.top_ids]
    assert normed.through_final_norm and first.top_tokens == expect
    json.dumps(normed.to_dict())


def test_bad_input(tmp_path, store, sae, tiny_model):
    with pytest.raises(ValueError, match=r"\[24\] out of range.*d_sae=24.*0\.\.23"):
        feature_stats(sae, store, latents=[1, 24])
    with pytest.raises(ValueError, match=r"0\.\.23"):
        logit_effects(sae, tiny_model, [-1])
    empty = ActivationStore.write(tmp_path / "e", tiny_model, HOOK, [], context_size=6)
    with pytest.raises(ValueError, match="no activation rows"):
        feature_stats(sae, empty)
    narrow = SAE(SAEConfig(d_in=8, d_sae=D_SAE, activation="relu"), seed=0)
    with pytest.raises(ValueError, match=r"width 16.*d_in=8"):
        feature_stats(narrow, store)
    with pytest.raises(ValueError, match=r"d_in=8.*d_model=16"):
        logit_effects(narrow, tiny_model)
