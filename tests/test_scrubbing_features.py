"""Transcoder features as causal-scrubbing claims: a hand-built model whose answer is known by
construction, a dense reference for every sample, and bad hypotheses refused before any run."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.cells import feature_acts, input_hook
from interp.core.interventions import Record, intervene
from interp.hooks import hooks
from interp.scrubbing import Hypothesis, HypothesisError, claim, compare, next_token_loss, scrub
from saes.config import SAEConfig
from saes.transcoder import Transcoder
from tests.conftest import HOOKED, NEEDS_HOOKED


def _copy_feature_model():
    """One layer, attention writing nothing, no norms: token 2 turns on transcoder feature 0,
    which alone writes the direction logit 3 reads (logit 3 = 3 · [last token is 2]); feature 1
    (token 1) writes a direction no logit reads. The MLP computes exactly the transcoder."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=4, n_ctx=8, d_head=2, n_heads=1, d_mlp=8, d_vocab=5,
        act_fn="relu", normalization_type=None, seed=0, device="cpu",
    )  # fmt: skip
    model = HookedTransformer(cfg)
    tc = Transcoder(SAEConfig(d_in=4, d_sae=2, activation="relu", d_out=4), seed=0)
    with torch.no_grad():
        for p in [*model.parameters(), *tc.parameters()]:
            p.zero_()
        model.W_E.copy_(torch.eye(5, 4))  # token t -> e_t (token 4 -> 0)
        model.W_U[3, 3] = 1.0
        for w_in, w_enc, w_out, w_dec in (
            (model.blocks[0].mlp.W_in, tc.W_enc, model.blocks[0].mlp.W_out, tc.W_dec),
        ):
            w_in[2, 0] = w_enc[2, 0] = 2.0
            w_out[0, 3] = w_dec[0, 3] = 1.5
            w_in[1, 1] = w_enc[1, 1] = 1.0
            w_out[1, 0] = w_dec[1, 0] = 1.0
    model.eval()
    return model, tc


def _last_logit3_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return -logits[:, -1, 3]


def last_is_two(tokens: torch.Tensor) -> bool:
    return bool(tokens[-1] == 2)


@pytest.mark.skipif(not HOOKED, reason=NEEDS_HOOKED)
def test_known_answer_feature_claims():
    model, tc = _copy_feature_model()
    g = torch.Generator().manual_seed(0)
    data = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (64, 4), generator=g)]
    hyps = [
        Hypothesis.from_features("carrier", ["F0.0@3"]),
        Hypothesis.from_features("carrier, classes", ["F0.0"], feature=last_is_two),
        Hypothesis.from_features("bystander", ["F0.1@2"]),
        Hypothesis("whole MLP", claim("logits", None, claim("MLP0"))),
    ]
    comp = compare(model, data, hyps, _last_logit3_loss, n_samples=200, transcoders={0: tc})
    true, classes, wrong, mlp = comp.results
    assert float((true.random - true.clean).abs().max()) > 1.0  # the baselines differ
    torch.testing.assert_close(true.scrubbed, true.clean)  # the carrier alone: nothing lost
    torch.testing.assert_close(classes.scrubbed, true.clean)
    torch.testing.assert_close(mlp.scrubbed, true.clean)
    torch.testing.assert_close(wrong.scrubbed, wrong.random)  # the bystander: nothing kept
    assert true.recovered == pytest.approx(1.0) and wrong.recovered == pytest.approx(0.0)
    assert [n["node"] for n in true.nodes] == ["logits", "F0.0"]


def _tc(seed: int, d: int = 16, d_sae: int = 24) -> Transcoder:
    tc = Transcoder(SAEConfig(d_in=d, d_sae=d_sae, activation="relu", d_out=d), seed=seed)
    with torch.no_grad():
        tc.b_enc.uniform_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
    return tc


@pytest.mark.parametrize("layer", [0, 1])
def test_every_sample_equals_a_dense_forward(tiny_model, layer):
    """logits <- F{layer}.f: each sample is its random row's forward with every sender frozen
    there and the feature's decoder term swapped for its value on the reference row."""
    model = tiny_model
    tcs = {0: _tc(1), 1: _tc(2)}
    f = 5
    data = torch.randint(0, 50, (24, 6), generator=torch.Generator().manual_seed(3))
    metric = next_token_loss()
    res = scrub(
        model, data, Hypothesis.from_features("one feature", [f"F{layer}.{f}@2"]), metric,
        n_samples=12, transcoders=tcs,
    )  # fmt: skip
    got: dict = {}
    with torch.no_grad(), intervene(model, [Record(input_hook(model, layer), got)]):
        model(data)
    acts = feature_acts(tcs[layer], got[input_hook(model, layer)], [f])[..., 0]
    frozen: dict = {}
    later = ["blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"] if layer == 0 else []
    with torch.no_grad(), intervene(model, [Record(h, frozen) for h in later]):
        model(data)
    vec = tcs[layer].W_dec[f].detach()
    assert res.rows is not None and res.random_from is not None
    want = []
    for x, r in zip(res.rows.tolist(), res.random_from[:, 0].tolist(), strict=True):
        delta = acts[x] - acts[r]
        fwd = [
            (f"blocks.{layer}.hook_mlp_out", lambda a, hook, d=delta: a + d[None, :, None] * vec)
        ]
        fwd += [(h, lambda a, hook, h=h, r=r: frozen[h][r : r + 1]) for h in later]
        with torch.no_grad(), hooks(model, fwd=fwd):
            want.append(metric(model(data[r : r + 1]), data[x : x + 1])[0])
    torch.testing.assert_close(res.scrubbed, torch.stack(want), atol=1e-5, rtol=1e-5)
    assert float((res.scrubbed - res.random).abs().max()) > 1e-4  # the feature changed something


def test_bad_feature_hypotheses_fail_before_any_run(tiny_model):
    model = tiny_model
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    data = torch.randint(0, 50, (8, 5), generator=torch.Generator().manual_seed(0))
    metric = next_token_loss()
    one = Hypothesis.from_features("h", ["F0.3"])
    try:
        with pytest.raises(HypothesisError, match="pass transcoders="):
            scrub(model, data, one, metric, n_samples=4)
        with pytest.raises(ValueError, match="no transcoder at layer 0"):
            scrub(model, data, one, metric, n_samples=4, transcoders={1: _tc(2)})
        with pytest.raises(ValueError, match="beyond the layer-0 transcoder's d_sae = 24"):
            big = Hypothesis.from_features("h", ["F0.30"])
            scrub(model, data, big, metric, n_samples=4, transcoders={0: _tc(1)})
        with pytest.raises(HypothesisError, match="feature claims are leaves"):
            h = Hypothesis("h", claim("logits", None, claim("F1.3", None, claim("L0H1"))))
            scrub(model, data, h, metric, n_samples=4, transcoders={1: _tc(2)})
        with pytest.raises(HypothesisError, match="claims both 'MLP1' and its feature"):
            h = Hypothesis.from_features("h", ["F1.3"], also=["MLP1"])
            scrub(model, data, h, metric, n_samples=4, transcoders={1: _tc(2)})
        with pytest.raises(HypothesisError, match="no feature nodes given"):
            Hypothesis.from_features("h", [])
    finally:
        handle.remove()
    assert not calls


def test_docstring_examples():
    import doctest

    import interp.scrubbing.hypothesis as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
