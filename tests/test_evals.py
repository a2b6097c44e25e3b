"""Tests for saes.evals: metric properties, the splice, and agreement with SAELens's own evals.

SAELens's eval functions run offline here: they only call ``get_batch_tokens`` on the activation
store they are given, so a stub that returns fixed token contexts drives them on ``tiny_model``.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from interp.cache import cache_activations
from interp.store import ActivationStore
from saes.config import SAEConfig
from saes.evals import (
    ce_loss_recovered,
    cosine_similarity,
    dead_fraction,
    dense_fraction,
    evaluate,
    evaluate_reconstruction,
    explained_variance,
    feature_density,
    feature_density_histogram,
    fraction_variance_unexplained,
    l0,
    mse,
)
from saes.sae import SAE, SAEOutput

HOOK = "blocks.0.hook_resid_post"


def rand_x(n=64, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3 + torch.arange(d) * 10  # a large mean component


def tokens(n=6, pos=12, seed=1, bos=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 50, (n, pos), generator=g)
    if bos is not None:
        t[:, 0] = bos
    return t


def topk_sae(d_in=16, d_sae=64, k=4):
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, activation="topk", k=k), seed=0)
    with torch.no_grad():  # nonzero biases, so the SAELens weight mapping is exercised
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    return sae


class Identity(nn.Module):
    def forward(self, x):
        return SAEOutput(x, x, x)


class Zero(nn.Module):
    def forward(self, x):
        return SAEOutput(torch.zeros_like(x), x, x)


# ---- pure metrics -----------------------------------------------------------------------------
def test_predicting_the_mean_explains_nothing_and_a_perfect_reconstruction_everything():
    x = rand_x()
    mean = x.mean(0).expand_as(x)
    assert abs(float(explained_variance(x, mean))) < 1e-6
    assert float(explained_variance(x, x)) == 1.0
    assert float(fraction_variance_unexplained(x, x)) == 0.0
    assert float(mse(x, x)) == 0.0
    assert float(cosine_similarity(x, x)) == pytest.approx(1.0, abs=1e-12)


def test_fvu_mse_cosine_match_direct_dense_computations():
    x, r = rand_x(seed=0).numpy().astype(np.float64), rand_x(seed=1).numpy().astype(np.float64)
    fvu = ((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    xt, rt = torch.from_numpy(x), torch.from_numpy(r)
    assert float(fraction_variance_unexplained(xt, rt)) == pytest.approx(fvu, rel=1e-12)
    assert float(mse(xt, rt)) == pytest.approx(((x - r) ** 2).sum(1).mean(), rel=1e-12)
    cos = (x * r).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(r, axis=1)
    assert float(cosine_similarity(xt, rt)) == pytest.approx(cos.mean(), rel=1e-12)


def test_l0_densities_dead_and_dense_on_a_constructed_code():
    acts = torch.zeros(10, 4)
    acts[:, 0] = 1.0  # fires on every row
    acts[3, 1] = 2.0  # on one row in ten
    acts[:5, 3] = 0.5  # on half the rows; latent 2 never fires
    assert float(l0(acts)) == pytest.approx((10 + 1 + 5) / 10)
    density = feature_density(acts)
    assert density.tolist() == [1.0, 0.1, 0.0, 0.5]
    assert dead_fraction(density) == 0.25
    assert dense_fraction(density) == 0.5  # 0.1 is not above the default threshold 0.1
    assert dense_fraction(density, threshold=0.05) == 0.75
    hist = feature_density_histogram(density, bins=4, low=-2.0)
    assert hist.n_dead == 1 and sum(hist.counts) == 3 and hist.edges[0] == -2.0
    assert hist.counts == [0, 0, 1, 2]  # log10: -1 lands in [-1, -0.5); 0 and -0.3 in the last bin
    json.dumps(hist.to_dict())


def test_streaming_reconstruction_equals_the_pure_metrics_on_all_rows():
    sae = topk_sae(d_in=8, d_sae=32)
    x = rand_x(n=100)
    res = evaluate_reconstruction(sae, list(x.split(7)), dense_threshold=0.2)
    with torch.no_grad():
        out = sae(x)  # one matmul over all rows: float32 rounding differs from the batched one
    assert res.n_tokens == 100
    assert res.l0 == pytest.approx(float(l0(out.acts)))
    assert res.mse == pytest.approx(float(mse(x, out.recon)), rel=1e-6)
    assert res.fvu == pytest.approx(float(fraction_variance_unexplained(x, out.recon)), rel=1e-6)
    assert res.explained_variance == pytest.approx(1 - res.fvu)
    assert res.cosine_similarity == pytest.approx(float(cosine_similarity(x, out.recon)))
    torch.testing.assert_close(res.density, feature_density(out.acts))
    assert res.dense_fraction == dense_fraction(res.density, 0.2)
    assert len(list(evaluate_reconstruction(sae, x.split(7), 2).density)) == 32
    assert evaluate_reconstruction(sae, x.split(7), 2).n_tokens == 14
    json.dumps(res.to_dict())
    with pytest.raises(ValueError, match="empty"):
        evaluate_reconstruction(sae, [])


# ---- the splice ---------------------------------------------------------------------------------
def test_identity_recovers_everything_and_zero_nothing(tiny_model):
    t = tokens()
    same = ce_loss_recovered(tiny_model, Identity(), HOOK, t, max_tokens=48)
    assert same.loss_recovered == 1.0 and same.kl_sae == 0.0 and same.ce_sae == same.ce_clean
    assert same.n_loss_positions == 6 * 11 and same.n_kl_positions == 6 * 12
    zero = ce_loss_recovered(tiny_model, Zero(), HOOK, t, max_tokens=48)
    assert zero.loss_recovered == 0.0 and zero.ce_sae == zero.ce_zero
    assert zero.kl_sae == zero.kl_zero > 0
    one = ce_loss_recovered(tiny_model, Zero(), HOOK, t, max_tokens=1)  # a context a forward
    assert one.ce_zero == pytest.approx(zero.ce_zero, rel=1e-5)
    assert one.kl_zero == pytest.approx(zero.kl_zero, rel=1e-5)


def test_skip_bos_leaves_position_zero_alone_and_out_of_the_means(tiny_model):
    t = tokens(bos=0)
    res = ce_loss_recovered(tiny_model, Zero(), HOOK, t, skip_bos=True)
    assert res.n_loss_positions == 6 * 10 and res.n_kl_positions == 6 * 11

    def zero_after_bos(act, hook):
        act = act.clone()
        act[:, 1:] = 0
        return act

    with torch.no_grad():
        clean = tiny_model(t).log_softmax(-1)
        logp = tiny_model.run_with_hooks(t, fwd_hooks=[(HOOK, zero_after_bos)]).log_softmax(-1)
    ce = -logp[:, 1:-1].gather(-1, t[:, 2:, None]).mean()
    kl = (clean.exp() * (clean - logp)).sum(-1)[:, 1:].mean()
    assert res.ce_sae == pytest.approx(float(ce), rel=1e-5)
    assert res.kl_sae == pytest.approx(float(kl), rel=1e-4)
    assert res.ce_zero == res.ce_sae  # zero ablation on the same positions as the splice
    every = ce_loss_recovered(tiny_model, Zero(), HOOK, t, skip_bos=True, zero_ablate="all")
    assert every.ce_zero != res.ce_zero


# ---- agreement with SAELens ---------------------------------------------------------------------
class TokenStub:
    """The one method SAELens's eval functions call on their activation store."""

    def __init__(self, toks):
        self.toks = toks

    def get_batch_tokens(self, n):
        return self.toks


def saelens_twin(sae, hook):
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    c = sae.cfg
    cfg = TopKSAEConfig(d_in=c.d_in, d_sae=c.d_sae, k=c.k, apply_b_dec_to_input=True)
    cfg.metadata = SAEMetadata(hook_name=hook)
    twin = TopKSAE(cfg)  # TopK then ReLU, on (x − b_dec) W_enc + b_enc: the same function as ours
    twin.load_state_dict({n: getattr(sae, n).detach().clone() for n in twin.state_dict()})
    return twin


@pytest.mark.parametrize("bos", [None, 0])
def test_reconstruction_metrics_agree_with_saelens(tiny_model, bos):
    from sae_lens.evals import get_sparsity_and_variance_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    sae, t = topk_sae(), tokens(bos=bos)
    theirs, feats = get_sparsity_and_variance_metrics(
        saelens_twin(sae, HOOK), tiny_model, TokenStub(t), ActivationScaler(), n_batches=1,
        compute_l2_norms=False, compute_sparsity_metrics=True, compute_variance_metrics=True,
        compute_featurewise_density_statistics=True, eval_batch_size_prompts=len(t),
        model_kwargs={}, ignore_tokens=None if bos is None else [bos],
    )  # fmt: skip
    # mechscope's side: the rows a store keeps (position 0 dropped when it is BOS)
    first = 0 if bos is None else 1
    x = cache_activations(tiny_model, t, [HOOK], positions=slice(first, None))[HOOK]
    ours = evaluate_reconstruction(sae, x.reshape(-1, 16).split(10))
    assert ours.l0 == pytest.approx(theirs["l0"], rel=1e-6)
    assert ours.explained_variance == pytest.approx(theirs["explained_variance"], abs=1e-5)
    assert ours.mse == pytest.approx(theirs["mse"], rel=1e-5)
    assert ours.cosine_similarity == pytest.approx(theirs["cossim"], rel=1e-5)
    np.testing.assert_allclose(ours.density.numpy(), feats["feature_density"], rtol=1e-6)
    # SAELens's legacy explained variance is another quantity (per token, against its batch mean)
    assert ours.explained_variance != pytest.approx(theirs["explained_variance_legacy"], abs=1e-3)


@pytest.mark.parametrize("bos", [None, 0])
def test_ce_loss_recovered_agrees_with_saelens(tiny_model, bos):
    from sae_lens.evals import get_downstream_reconstruction_metrics
    from sae_lens.training.activation_scaler import ActivationScaler

    sae, t = topk_sae(), tokens(bos=bos)
    theirs = get_downstream_reconstruction_metrics(
        saelens_twin(sae, HOOK), tiny_model, TokenStub(t), ActivationScaler(), compute_kl=True,
        compute_ce_loss=True, n_batches=1, eval_batch_size_prompts=len(t),
        ignore_tokens=None if bos is None else [bos],
    )  # fmt: skip
    # SAELens zeroes every position, BOS included: zero_ablate="all" is its definition
    ours = ce_loss_recovered(
        tiny_model, sae, HOOK, t, max_tokens=48, skip_bos=bos is not None, zero_ablate="all"
    )
    assert ours.ce_clean == pytest.approx(theirs["ce_loss_without_sae"], rel=1e-5)
    assert ours.ce_sae == pytest.approx(theirs["ce_loss_with_sae"], rel=1e-5)
    assert ours.ce_zero == pytest.approx(theirs["ce_loss_with_ablation"], rel=1e-5)
    assert ours.loss_recovered == pytest.approx(theirs["ce_loss_score"], rel=1e-4)
    assert ours.kl_sae == pytest.approx(theirs["kl_div_with_sae"], rel=1e-4)
    assert ours.kl_zero == pytest.approx(theirs["kl_div_with_ablation"], rel=1e-4)
    if bos is None:  # with no BOS both zero-ablation conventions are the same
        default = ce_loss_recovered(tiny_model, sae, HOOK, t, max_tokens=48)
        assert default.loss_recovered == pytest.approx(ours.loss_recovered, rel=1e-6)


# ---- from a store -------------------------------------------------------------------------------
def write_store(path, model, n=8, ctx=10):
    g = torch.Generator().manual_seed(5)
    contexts = [torch.randint(0, 50, (ctx,), generator=g) for _ in range(n)]
    return ActivationStore.write(path, model, HOOK, contexts, context_size=ctx, shard_tokens=30)


def test_evaluate_uses_the_stores_rows_and_contexts(tmp_path, tiny_model):
    store = write_store(tmp_path / "s", tiny_model)
    sae = topk_sae()
    res = evaluate(sae, store, tiny_model, batch_size=16, n_ce_contexts=8)
    all_rows = store.rows(np.arange(len(store))).acts
    direct = evaluate_reconstruction(sae, [all_rows])
    assert res.reconstruction.n_tokens == len(store) == 80
    assert res.reconstruction.fvu == pytest.approx(direct.fvu, rel=1e-6)
    toks = torch.stack([store.context(i) for i in range(8)])
    ce = ce_loss_recovered(tiny_model, sae, HOOK, toks, skip_bos=False)
    assert res.ce is not None and res.ce.loss_recovered == pytest.approx(ce.loss_recovered)
    assert res.hook == HOOK
    json.dumps(res.to_dict())
    assert evaluate(sae, store, batch_size=16, n_batches=2).ce is None


def test_bad_input(tmp_path, tiny_model):
    store = write_store(tmp_path / "s", tiny_model)
    wide = SAE(SAEConfig(d_in=32, d_sae=64, activation="relu"), seed=0)
    with pytest.raises(ValueError, match=r"width 16.*d_in=32"):
        evaluate(wide, store)
    with pytest.raises(ValueError, match="exactly one hook"):
        ce_loss_recovered(tiny_model, Identity(), "blocks.*.hook_resid_post", tokens())
    with pytest.raises(KeyError, match="not in this store"):
        evaluate(topk_sae(), store, hook="blocks.1.hook_resid_post")


@pytest.mark.slow
def test_random_sae_on_smollm2_gives_sane_numbers(tmp_path, smollm2):
    from interp.corpus import texts_corpus

    hook = "blocks.6.hook_resid_post"
    text = "The quick brown fox jumps over the lazy dog. " * 40
    store = ActivationStore.write(
        tmp_path / "s", smollm2, hook, texts_corpus([text]), context_size=16, max_tokens=64
    )
    assert store.manifest["drop_bos"]
    sae = SAE(SAEConfig(d_in=576, d_sae=1152, activation="topk", k=16), seed=0)
    res = evaluate(sae, store, smollm2, batch_size=64, n_ce_contexts=2, ce_max_tokens=32)
    r, ce = res.reconstruction, res.ce
    assert ce is not None and r.n_tokens == len(store) == 4 * 15
    assert r.l0 == pytest.approx(16)  # no zero pre-activation in the top 16 of 1152
    assert all(math.isfinite(v) for v in (r.mse, r.fvu, r.cosine_similarity))
    assert 0 <= r.dead_fraction <= 1 and ce.n_loss_positions == 2 * 14
    assert ce.ce_zero > ce.ce_clean > 0 and ce.kl_zero > 0 and ce.kl_sae > 0
    assert math.isfinite(ce.loss_recovered) and ce.ce_sae > ce.ce_clean
    json.dumps(res.to_dict())
