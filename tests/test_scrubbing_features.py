"""Transcoder features as causal-scrubbing claims: a hand-built model whose answer is known by
construction, a dense reference for every sample, and bad hypotheses refused before any run."""

from __future__ import annotations

import pytest
import torch

from interp.circuits import attribute
from interp.circuits.cells import feature_acts, input_hook
from interp.circuits.validate import feature_nodes
from interp.core.interventions import Record, intervene
from interp.hooks import hooks
from interp.scrubbing import Hypothesis, HypothesisError, claim, compare, next_token_loss, scrub
from interp.scrubbing.feature_toy import feature_dataset, feature_model, last_logit_loss
from saes.config import SAEConfig
from saes.transcoder import Transcoder
from tests.conftest import HOOKED, NEEDS_HOOKED


def last_is_two(tokens: torch.Tensor) -> bool:
    return bool(tokens[-1] == 2)


@pytest.mark.skipif(not HOOKED, reason=NEEDS_HOOKED)
def test_known_answer_feature_claims():
    """The graph of the hand-built model names the carrier; scrubbing it recovers everything."""
    model, tc = feature_model()
    data = feature_dataset(64)
    g = attribute(model, torch.tensor([1, 2, 2]), {0: tc}, targets=[3], max_feature_nodes=None)
    nodes = feature_nodes(g, g.prune().node_mask)
    assert [n.name for n in nodes] == ["F0.0@2"]
    hyps = [
        Hypothesis.from_features("carrier", nodes),
        Hypothesis.from_features("carrier, classes", ["F0.0"], feature=last_is_two),
        Hypothesis.from_features("bystander", ["F0.1@2"]),
        Hypothesis("whole MLP", claim("logits", None, claim("MLP0"))),
    ]
    comp = compare(model, data, hyps, last_logit_loss, n_samples=200, transcoders={0: tc})
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

    import interp.scrubbing.feature_toy as toy
    import interp.scrubbing.hypothesis as hypothesis

    for module in (hypothesis, toy) if HOOKED else (hypothesis,):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
