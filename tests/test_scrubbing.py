"""Causal scrubbing: hand-built model with a known circuit, exact baselines, a per-sample
unbatched reference, bad input, files and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.core.nodes import ComponentGraph, UnknownNodeError
from interp.core.result import Result, Values
from interp.hooks import hooks
from interp.models import hooked_available
from interp.scrubbing import (
    FeatureError,
    Hypothesis,
    HypothesisError,
    ScrubComparison,
    ScrubResult,
    claim,
    compare,
    next_token_loss,
    scrub,
)
from interp.scrubbing.engine import ScrubEngine, plan
from interp.scrubbing.handbuilt import (
    copy_first_dataset,
    copy_first_hypotheses,
    copy_first_model,
    token_at,
)
from interp.scrubbing.hypothesis import feature_values
from interp.stats import bootstrap_ci

torch.set_num_threads(1)
METRIC = next_token_loss(2)


@pytest.fixture(scope="module")
def hand():
    return copy_first_model(), copy_first_dataset(1000)


@pytest.fixture(scope="module")
def hand_results(hand):
    model, data = hand
    hs = list(copy_first_hypotheses().values()) + [Hypothesis("nothing", claim("logits"))]
    everything = [claim(n.name) for n in ComponentGraph(model).senders]
    hs.append(Hypothesis("everything", claim("logits", None, *everything)))
    return compare(model, data, hs, METRIC, n_samples=400, seed=1)


def test_hand_built_model_is_the_circuit_it_claims(hand):
    """Position 2 attends to 0 (L0H0) and 1 (L0H1) alone; the top logit is the copied token."""
    model, data = hand
    logits, cache = model.run_with_cache(data[:64])
    pattern = cache["blocks.0.attn.hook_pattern"][:, :, 2, :3]
    torch.testing.assert_close(pattern[:, 0, 0], torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(pattern[:, 1, 1], torch.ones(64), atol=1e-5, rtol=0)
    assert torch.equal(logits[:, 2].argmax(-1), data[:64, 0])


@pytest.mark.skipif(not hooked_available(), reason="needs HookedTransformer (TL 3)")
def test_hand_built_model_is_the_same_on_both_backends(hand):
    data = hand[1][:64]
    bridge, hooked = copy_first_model("bridge"), copy_first_model("hooked")
    torch.testing.assert_close(bridge(data), hooked(data), atol=1e-5, rtol=1e-5)


def test_true_hypothesis_recovers_the_loss_and_wrong_ones_do_not(hand_results):
    c = hand_results
    assert c["true: L0H0 copies token 0"].recovered > 0.99
    assert c["true, deep: L0H0.v <- embed(token 0)"].recovered > 0.99
    assert c["wrong: L0H1 copies token 1"].recovered_ci().high < 0.2
    assert c["wrong, deep: L0H0.v <- embed(token 1)"].recovered_ci().high < 0.2
    diff = c.difference_ci("true: L0H0 copies token 0", "wrong: L0H1 copies token 1")
    assert diff.low > 0.7


def test_claiming_everything_is_clean_and_nothing_is_random_exactly(hand_results):
    every, nothing = hand_results["everything"], hand_results["nothing"]
    assert torch.equal(every.scrubbed, every.clean)
    assert torch.equal(nothing.scrubbed, nothing.random)
    assert every.recovered == 1.0 and nothing.recovered == 0.0
    # random really is random: far worse than clean on this task
    assert float(nothing.random.mean()) > float(nothing.clean.mean()) + 3


def test_a_coarser_feature_recovers_less(hand):
    """Resampling within "token 0 mod 2" classes (three tokens each) loses most of the copy."""
    model, data = hand

    def parity(x):
        return int(x[0]) % 2

    fine = Hypothesis("fine", claim("logits", None, claim("L0H0", token_at(0))))
    coarse = Hypothesis("coarse", claim("logits", None, claim("L0H0", parity)))
    c = compare(model, data, [fine, coarse], METRIC, n_samples=300)
    # a resample agrees on token 0 with probability 1/3: recovered ~ 1/3 of the gap
    assert 0.15 < c["coarse"].recovered < 0.55 < c["fine"].recovered


def test_deep_identity_tree_on_toy_model_is_exactly_clean():
    """Every sender under every receiver on the same input: bit-identical to the clean run."""
    from interp.toy import load_toy_induction, repeated_random_tokens

    model = load_toy_induction()
    data = repeated_random_tokens(64, 20, generator=torch.Generator().manual_seed(0))
    layer0 = [claim(f"L0H{h}", None, claim("embed")) for h in range(8)]
    layer1 = [claim(f"L1H{h}", None, claim("embed"), *layer0) for h in range(8)]
    h = Hypothesis("all", claim("logits", None, claim("embed"), *layer0, *layer1))
    r = scrub(
        model, data, h, next_token_loss(range(21, 40)), n_samples=8, max_tokens=8192 * data.shape[1]
    )
    assert torch.equal(r.scrubbed, r.clean)
    assert r.meta["forwards"]["scrub"] == 1  # the whole tree in one forward


def _reference(model, graph, tokens, plan_, rows, engine, i):
    """Unbatched, recursive evaluation of sample i: one forward per instance, no batching.

    Handles embeddings, positional embeddings, heads and MLPs (non-GQA models)."""
    insts = {x.id: x for x in plan_.instances}

    def value(k):
        inst = insts[k]
        if inst.role == "alias":  # a non-leaf MLP is its MLP{l}.in receiver
            return value(inst.alias)
        if inst.role == "leaf":
            act = engine.cache[inst.node.hook][rows[k][i]]
            return act[:, inst.node.head] if inst.node.kind == "head" else act
        if inst.role == "head":
            qkv = {kind: value(r) for kind, r in inst.inputs.items()}
            got = {}

            def set_(kind):
                def fn(act, hook):
                    act = act.clone()
                    act[0, :, inst.node.head] = qkv[kind]
                    return act

                return fn

            def rec(act, hook):
                got["z"] = act[0, :, inst.node.head].clone()

            L = inst.node.layer
            fwd = [(f"blocks.{L}.attn.hook_{k}", set_(k)) for k in "qkv"]
            with hooks(model, fwd=[*fwd, (f"blocks.{L}.attn.hook_z", rec)]):
                model(tokens[rows[k][i]][None])
            return got["z"]
        # a receiver: every upstream sender from r, claimed ones from their subtree
        r = rows[-1 - k][i]
        claimed = {insts[c].node.name: value(c) for c in inst.claimed.values()}
        node = inst.node
        fwd, got = [], {}

        def set_whole(name):
            def fn(act, hook):
                return claimed.get(name, engine.cache[hook.name][r])[None]

            return fn

        fwd.append(("hook_embed", set_whole("embed")))
        if graph.has_pos_embed:
            fwd.append(("hook_pos_embed", set_whole("pos_embed")))
        for L in range(graph.n_layers):
            if graph.attn_order(L) < node.order:

                def set_z(act, hook, L=L):
                    out = engine.cache[hook.name][r].clone()
                    for h in range(graph.n_heads):
                        if f"L{L}H{h}" in claimed:
                            out[:, h] = claimed[f"L{L}H{h}"]
                    return out[None]

                fwd.append((f"blocks.{L}.attn.hook_z", set_z))
            if not graph.attn_only and graph.mlp_order(L) < node.order:
                fwd.append((f"blocks.{L}.hook_mlp_out", set_whole(f"MLP{L}")))
        if node.kind in ("q", "k", "v"):

            def rec(act, hook):
                got["v"] = act[0, :, node.head].clone()

            fwd.append((node.hook, rec))
        elif node.kind == "mlp_in":

            def rec_mlp(act, hook):
                got["v"] = act[0].clone()

            fwd.append((node.hook, rec_mlp))
        with hooks(model, fwd=fwd):
            got["logits"] = model(tokens[r][None])[0]
        return got["v"] if node.kind != "logits" else got["logits"]

    return value(plan_.root)


def _check_against_reference(model, tokens, hyp, metric, n=6, max_rows=17, seed=0):
    """Scrub n samples batched (several chunks) and per sample; return the plan and rows."""
    graph = ComponentGraph(model)
    hyp.validate(graph)
    ids = {id(f): feature_values(f, tokens) for f in hyp.features()}
    p = plan(graph, hyp)
    eng = ScrubEngine(model, graph, tokens, metric, ids, max_tokens=max_rows * tokens.shape[1])
    gen = torch.Generator().manual_seed(seed)
    n_data = tokens.shape[0]
    ref = torch.randint(0, n_data, (n,), generator=gen)
    rows = eng.sample([p], ref, torch.randint(0, n_data, (n,), generator=gen), gen)
    got = eng.scrub([p], rows)[0]
    with torch.no_grad():
        want = torch.stack(
            [
                metric(
                    _reference(model, graph, tokens, p, rows, eng, i)[None], tokens[ref[i]][None]
                )[0]
                for i in range(n)
            ]
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    return p, rows, eng


def test_batched_scrub_matches_an_unbatched_per_sample_reference():
    from interp.scrubbing.induction import bench_hypothesis
    from interp.toy import load_toy_induction, repeated_random_tokens

    model = load_toy_induction()
    tokens = repeated_random_tokens(300, 20, generator=torch.Generator().manual_seed(3))
    p, rows, eng = _check_against_reference(model, tokens, bench_hypothesis(), next_token_loss(30))
    assert eng.forwards["scrub"] == 2  # 5 blocks: 3 samples (15 rows) per forward
    # resampled inputs really agree on their features, and differ otherwise
    insts = {x.id: x for x in p.instances}
    for inst in p.instances:
        f = inst.feature
        if callable(f) and inst.parent is not None:
            for a, b in zip(rows[inst.id], rows[inst.parent], strict=True):
                assert f(tokens[a]) == f(tokens[b])
    assert any(
        not torch.equal(rows[i.id], rows[i.parent]) for i in insts.values() if i.parent is not None
    )


# -- models with MLPs (and LayerNorm, GELU, absolute positions) ---------------------------------


def _mlp_data():
    # 8 token values at 6 positions, 400 rows: features at one position have 8 classes of ~50
    return torch.randint(0, 8, (400, 6), generator=torch.Generator().manual_seed(5))


def _tok(p):
    def feature(x):
        return int(x[p])

    feature.__name__ = f"token {p}"
    return feature


def _mlp_hypotheses():
    t2, t3, t4 = _tok(2), _tok(3), _tok(4)
    # MLP1 reads token 4 from L1H0 (whose value reads token 3 through MLP0) and from embed
    deep = claim(
        "logits",
        None,
        claim(
            "MLP1",
            t4,
            claim("MLP1.in", None, claim("embed", t4), claim(
                "L1H0", t3,
                claim("L1H0.q", None, claim("embed"), claim("pos_embed")),
                claim("L1H0.v", None, claim("MLP0", t3, claim("embed", t3), claim("L0H1", t2))),
            )),
        ),
        claim("MLP0", t4, claim("embed", t4), claim("pos_embed")),
    )  # fmt: skip
    # the MLP leaf and the shorthand (an MLP with upstream senders as children)
    short = claim(
        "logits", None, claim("MLP1", t4, claim("embed", t4), claim("L0H2", t2)), claim("L1H3")
    )
    return {"deep": Hypothesis("deep", deep), "short": Hypothesis("short", short)}


def _everything(graph):
    """Every sender under every receiver, all on the parent's input (feature None)."""

    def sender(n):
        node = graph.node(n)
        if node.kind in ("embed", "pos_embed"):
            return claim(n)
        recv = f"{n}.in" if node.kind == "mlp" else f"{n}.q"  # a head: shorthand for q, k, v
        return claim(n, None, *(sender(u.name) for u in graph.upstream(recv)))

    top = [sender(s.name) for s in graph.senders]
    return Hypothesis("everything, deep", claim("logits", None, *top))


def test_mlp_model_everything_is_clean_and_nothing_is_random(tiny_model):
    model, data = tiny_model, _mlp_data()
    graph = ComponentGraph(model)
    assert not graph.attn_only and graph.has_pos_embed
    flat = Hypothesis("everything", claim("logits", None, *(claim(s.name) for s in graph.senders)))
    hs = [flat, _everything(graph), Hypothesis("nothing", claim("logits")),
          *_mlp_hypotheses().values()]  # fmt: skip
    metric = next_token_loss(range(5))
    c = compare(model, data, hs, metric, n_samples=200, seed=2, max_tokens=600 * data.shape[1])
    for name in ("everything", "everything, deep"):
        torch.testing.assert_close(c[name].scrubbed, c[name].clean, atol=1e-5, rtol=0)
    assert torch.equal(c["nothing"].scrubbed, c["nothing"].random)
    assert float(c["nothing"].random.mean()) != float(c["nothing"].clean.mean())
    assert c["everything"].recovered == pytest.approx(1.0, abs=1e-4)
    # the partial hypotheses really resample: neither clean nor random
    for name in ("deep", "short"):
        s = c[name].scrubbed
        assert not torch.allclose(s, c[name].clean) and not torch.equal(s, c[name].random)
    assert c.results[0].meta["forwards"]["scrub"] > 1  # several chunks


def test_mlp_hypotheses_match_the_per_sample_reference(tiny_model):
    data = _mlp_data()
    metric = next_token_loss(range(5))
    for hyp in _mlp_hypotheses().values():
        p, rows, _ = _check_against_reference(tiny_model, data, hyp, metric, n=5, max_rows=23)
        kinds = {i.node.kind for i in p.instances}
        assert {"mlp", "mlp_in"} <= kinds
        for inst in p.instances:
            if callable(inst.feature) and inst.parent is not None:
                for a, b in zip(rows[inst.id], rows[inst.parent], strict=True):
                    assert inst.feature(data[a]) == inst.feature(data[b])


# -- bad input: clear errors before any model run ---------------------------------------------


class _Exploding:
    """A model stand-in whose forward must never run."""


@pytest.fixture()
def no_forward(hand, monkeypatch):
    model, data = hand

    def boom(*a, **k):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(type(model), "forward", boom)
    return model, data


def test_unknown_node_suggests_close_names(no_forward):
    model, data = no_forward
    h = Hypothesis("typo", claim("logits", None, claim("L0H9")))
    with pytest.raises(UnknownNodeError, match="did you mean.*'L0H0'"):
        scrub(model, data, h, METRIC, n_samples=10)


def test_cyclic_and_disconnected_correspondences():
    with pytest.raises(HypothesisError, match="cycle: .*L1H7 -> L0H4 -> L1H7"):
        Hypothesis.from_graph("c", {"logits": ["L1H7"], "L1H7": ["L0H4"], "L0H4": ["L1H7"]})
    with pytest.raises(HypothesisError, match=r"disconnected: \['L0H2', 'embed'\]"):
        Hypothesis.from_graph("d", {"logits": ["L1H7"], "L0H2": ["embed"]})
    with pytest.raises(HypothesisError, match="root must be 'logits'"):
        Hypothesis("r", claim("L1H7"))


def test_illegal_links(no_forward):
    model, data = no_forward
    bad = [
        (claim("logits", None, claim("L0H0", None, claim("L0H1"))), "cannot feed"),
        (claim("logits", None, claim("L0H0.q")), "is a receiver"),
        (claim("logits", None, claim("L0H0", None, claim("L0H1.q"))), "cannot feed"),
        (claim("logits", None, claim("embed", None, claim("embed"))), "has no children"),
        (claim("logits", None, claim("L0H0"), claim("L0H0")), "twice"),
    ]
    for root, msg in bad:
        with pytest.raises(HypothesisError, match=msg):
            scrub(model, data, Hypothesis("bad", root), METRIC, n_samples=10)


def test_feature_that_raises_or_is_unhashable(no_forward):
    model, data = no_forward

    def broken(x):
        return int(x[99])

    def listy(x):
        return x.tolist()[:2]

    for f, msg in ((broken, "raised IndexError.*row 0"), (listy, "unhashable list")):
        h = Hypothesis("f", claim("logits", None, claim("L0H0", f)))
        with pytest.raises(FeatureError, match=msg):
            scrub(model, data, h, METRIC, n_samples=10)


def test_from_edges_builds_the_tree():
    f = token_at(0)
    h = Hypothesis.from_edges("e", ["embed->L0H0.v", "L0H0->logits"], {"L0H0": f})
    assert h.root.node == "logits"
    (head,) = h.root.children
    assert head.node == "L0H0" and head.feature is f
    assert [c.node for c in head.children] == ["L0H0.v"]
    assert [c.node for c in head.children[0].children] == ["embed"]


# -- result: CI, node effects, plot, files -------------------------------------------------------


def test_result_plot_save_load_and_node_effects(hand, tmp_path):
    model, data = hand
    h = copy_first_hypotheses()["true, deep"]
    r = scrub(model, data, h, METRIC, n_samples=200, node_effects=True)
    assert r.recovered > 0.99
    by_node = {n["node"]: n for n in r.nodes if not n["implicit"]}
    assert by_node["L0H0"]["recovered_without"] < 0.2  # dropping the head loses everything
    assert by_node["embed"]["classes"] == 6 and by_node["embed"]["pool"] == pytest.approx(
        1000 / 6, rel=0.1
    )
    rc = r.recovered_ci()
    assert rc.low <= rc.estimate <= rc.high
    fig = r.plot()
    assert len(fig.data) == 2 and any("L0H0" in t for t in fig.data[1].text)
    d = r.save(tmp_path / "run")
    manifest = json.loads((d / "run.json").read_text())
    assert manifest["kind"] == "scrub" and manifest["seed"] == 0
    assert manifest["data"]["dataset"]["shape"] == [1000, 4]
    back = ScrubResult.load(d)
    assert torch.equal(back.scrubbed, r.scrubbed) and back.recovered == r.recovered
    assert not list(d.glob(".*tmp*"))
    np.testing.assert_allclose(back.summary()["recovered"], r.summary()["recovered"])


# -- the Result verbs: values, sel, ci, files, views -------------------------------------------


def _synthetic(name, seed, n=50):
    g = torch.Generator().manual_seed(seed)
    clean, random = torch.rand(n, generator=g), 2 + torch.rand(n, generator=g)
    scrubbed = clean + (random - clean) * torch.rand(n, generator=g)
    nodes = [{"id": 0, "parent": None, "node": "logits", "feature": "f", "path": ["logits"]}]
    return ScrubResult(
        name, {"node": "logits"}, "loss", clean, scrubbed, random, nodes, {"seed": 0}
    )


def _comparison():
    a, b, c = (_synthetic(n, 0) for n in "abc")  # the same samples and baselines
    b.scrubbed, c.scrubbed = a.scrubbed * 0.5, a.random - 0.1
    return ScrubComparison([a, b, c], {"note": "x"})


def test_scrub_result_is_a_result_and_selects_its_runs():
    r = _synthetic("h", 3)
    assert isinstance(r, Result) and r.axes == ("run",) and r.shape == (3,)
    torch.testing.assert_close(r.values, torch.stack([r.clean, r.scrubbed, r.random], 1))
    one = r.sel(run="scrubbed")
    assert isinstance(one, Values) and one.axes == () and torch.equal(one.values, r.scrubbed)
    assert one.meta["fixed"] == {"run": "scrubbed"} and one.meta["hypothesis"] == "h"
    two = r.sel(run=["random", 0])
    assert two.labels == {"run": ["random", "clean"]} and torch.equal(two.values[:, 1], r.clean)
    ci = r.ci()  # one interval per mean loss, the same numbers as each loss on its own
    for i, k in enumerate(["clean", "scrubbed", "random"]):
        alone = bootstrap_ci(getattr(r, k))
        assert float(ci.low[i]) == pytest.approx(float(alone.low))
        assert float(ci.estimate[i]) == pytest.approx(float(getattr(r, k).mean()))
    with pytest.raises(KeyError, match="scrubbed"):
        r.sel(run="scrubed")


def test_scrub_comparison_selects_hypotheses_and_its_ci_is_per_hypothesis():
    c = _comparison()
    assert isinstance(c, Result) and c.axes == ("hypothesis",) and c.values.shape == (50, 3)
    sub = c.sel(hypothesis=["c", "a"])
    assert isinstance(sub, ScrubComparison) and [r.hypothesis for r in sub.results] == ["c", "a"]
    b = c.sel(hypothesis="b")
    assert isinstance(b, Values) and torch.equal(b.values, c["b"].scrubbed)
    assert b.meta["fixed"] == {"hypothesis": "b"}
    ci = c.ci(n_resamples=300, seed=2)
    torch.testing.assert_close(ci.estimate, c.values.double().mean(0))
    assert (ci.low <= ci.estimate).all() and (ci.estimate <= ci.high).all()
    with pytest.raises(ValueError, match="same samples"):
        ScrubComparison([_synthetic("a", 0, n=10), _synthetic("b", 0, n=12)])


def _assert_same(x, y):
    assert x.hypothesis == y.hypothesis and x.tree == y.tree and x.metric == y.metric
    assert x.nodes == y.nodes and x.meta == y.meta
    for k in ("clean", "scrubbed", "random"):
        assert torch.equal(getattr(x, k), getattr(y, k))


def test_scrub_comparison_save_load_round_trip(tmp_path):
    c = _comparison()
    d = c.save(tmp_path / "cmp")
    back = ScrubComparison.load(d)
    assert back.meta == c.meta and len(back.results) == len(c.results)
    for x, y in zip(back.results, c.results, strict=True):
        _assert_same(x, y)
    assert back.table() == c.table()
    # a folder saved before load existed: comparison.json held only the table
    (d / "comparison.json").write_text(json.dumps({"table": c.table()}))
    old = ScrubComparison.load(d)
    assert [r.hypothesis for r in old.results] == ["a", "b", "c"]
    (d / "comparison.json").write_text(json.dumps({"format": "mechscope.patch_result/1"}))
    with pytest.raises(ValueError, match="does not hold a scrub comparison"):
        ScrubComparison.load(d)
    with pytest.raises(FileNotFoundError, match="comparison.json"):
        ScrubComparison.load(tmp_path / "nothing")


def test_difference_ci_seed_and_resamples_move_the_interval_not_the_estimate():
    c = _comparison()
    default = c.difference_ci("a", "b")
    assert default == c.difference_ci("a", "b", 0.95, n_resamples=2000, seed=0)
    other = c.difference_ci("a", "b", seed=1)
    assert other.estimate == default.estimate
    assert (other.low, other.high) != (default.low, default.high)
    fewer = c.difference_ci("a", "b", n_resamples=100)
    assert fewer.estimate == default.estimate and fewer.low != default.low


def test_scrub_views_come_from_the_plot_registry():
    import plotly.graph_objects as go

    from interp.viz.scrubbing import plot_scrub_comparison, plot_scrub_result

    r, c = _synthetic("h", 1), _comparison()
    assert type(r).plot is Result.plot and type(c).plot is Result.plot
    fig, bars = r.plot(), c.plot()
    assert isinstance(fig, go.Figure) and isinstance(bars, go.Figure)
    assert fig.to_dict() == plot_scrub_result(r).to_dict()
    assert bars.to_dict() == plot_scrub_comparison(c).to_dict()
    assert list(bars.data[0].y) == pytest.approx([row["recovered"] for row in c.table()])
