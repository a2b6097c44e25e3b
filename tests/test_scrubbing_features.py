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


def _record(model, tokens, names):
    got: dict = {}
    with torch.no_grad(), intervene(model, [Record(h, got) for h in names]):
        model(tokens)
    return got


def _feature_delta(model, tc, data, f, x, r):
    """``(a_f(x) − a_f(r)) · W_dec[f]`` for one sample, computed from a plain forward."""
    acts = feature_acts(tc, _record(model, data, [input_hook(model, 0)])[input_hook(model, 0)], [f])
    return (acts[x, :, 0] - acts[r, :, 0])[:, None] * tc.W_dec[f].detach()


@pytest.mark.parametrize("parent", ["MLP1", "L1H2"])
def test_nested_feature_claims_equal_a_dense_forward(tiny_model, parent):
    """logits <- {MLP1 | L1H2} <- F0.f: the parent is computed on its own random rows with only
    F0.f's share of MLP0 taken from the reference row, everything else upstream frozen on those
    rows; the logits read the parent's value and every other sender on the root's random row.
    Each sample is rebuilt here with plain hooks, row by row, from the result's recorded draws."""
    model = tiny_model
    tc, f = _tc(1), 5
    data = torch.randint(0, 50, (24, 6), generator=torch.Generator().manual_seed(3))
    metric = next_token_loss()
    hyp = Hypothesis("nested", claim("logits", None, claim(parent, None, claim(f"F0.{f}"))))
    res = scrub(model, data, hyp, metric, n_samples=10, transcoders={0: tc})
    assert res.rows is not None and res.random_from is not None and res.scrubbed_from is not None
    n_parent_rows = 1 if parent == "MLP1" else 3  # one MLP1.in block, or one per q, k, v
    assert res.scrubbed_from.shape[1] == 1 + n_parent_rows
    cache = _record(model, data, ["blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"])
    want = []
    for i, x in enumerate(res.rows.tolist()):
        r0 = int(res.random_from[i, 0])
        assert int(res.scrubbed_from[i, 0]) == r0  # the root's unclaimed inputs: its random row
        parts = res.scrubbed_from[i, 1:].tolist()
        edit = {r: _feature_delta(model, tc, data, f, x, r) for r in parts}
        last = _parent_hooks(model, data, cache, parent, parts, edit, r0)
        with torch.no_grad(), hooks(model, fwd=last):
            want.append(metric(model(data[r0 : r0 + 1]), data[x : x + 1])[0])
    torch.testing.assert_close(res.scrubbed, torch.stack(want), atol=1e-5, rtol=1e-5)
    assert float((res.scrubbed - res.random).abs().max()) > 1e-4  # the claim changed something


def _parent_hooks(model, data, cache, parent, parts, edit, r0, head=2):
    """Hooks for the root's forward on row ``r0`` that put in the parent's scrubbed value."""

    def mlp0(r):
        return ("blocks.0.hook_mlp_out", lambda a, hook, d=edit[r]: a + d[None])

    if parent == "MLP1":  # MLP1's output on row r1, MLP0 edited, layer-1 heads frozen on r1
        (r1,) = parts
        z1 = cache["blocks.1.attn.hook_z"][r1 : r1 + 1]
        fwd = [mlp0(r1), ("blocks.1.attn.hook_z", lambda a, hook: z1)]
        value = _record_with(model, data[r1 : r1 + 1], fwd, "blocks.1.hook_mlp_out")
        return [("blocks.1.hook_mlp_out", lambda a, hook: value)]
    qkv = {}  # q, k and v of the head, each from its own row with MLP0 edited there
    for kind, r in zip("qkv", parts, strict=True):
        name = f"blocks.1.attn.hook_{kind}"
        qkv[name] = _record_with(model, data[r : r + 1], [mlp0(r)], name)[:, :, head]

    def put(values):
        def fn(a, hook):
            a = a.clone()
            a[:, :, head] = values[hook.name]
            return a

        return fn

    z_name = "blocks.1.attn.hook_z"
    z = _record_with(model, data[r0 : r0 + 1], [(n, put(qkv)) for n in qkv], z_name)[:, :, head]
    frozen_mlp = cache["blocks.1.hook_mlp_out"][r0 : r0 + 1]
    return [(z_name, put({z_name: z})), ("blocks.1.hook_mlp_out", lambda a, hook: frozen_mlp)]


def _record_with(model, tokens, fwd, name):
    got: dict = {}
    with torch.no_grad(), hooks(model, fwd=fwd), intervene(model, [Record(name, got)]):
        model(tokens)
    return got[name]


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
