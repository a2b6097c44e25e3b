"""The steering study made honest (issue 14): plays split for training and held-out text, controls
at the vector's norm, the prompting baseline, the wrong-direction rate. Tiny models built in code;
one slow test on SmolLM2."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from interp.metrics import loss
from interp.steering import Measure, SteeringSweep, add, encode, extract, steer, sweep
from interp.steering.data import shakespeare_passages, shakespeare_split
from interp.steering.sweeps import (
    _kl,
    random_direction,
    wilson_interval,
    word_embedding_direction,
)

POS = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14], [15, 16]]
NEG = [[23, 24, 25], [26, 27, 28, 29, 30, 31], [32, 33], [34, 35, 36, 37]]
TEXT = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 20], [21, 22, 23]]
PREFIX = [40, 41, 42]
ALPHAS = [0.0, 1.0, -3.0]


def _last_logit(logits, enc):
    last = enc.first + enc.lengths - 1
    return logits[torch.arange(len(enc)), last, 7]


def _measures():
    return [
        Measure("effect", POS + NEG, _last_logit),
        Measure("kl", TEXT, "kl"),
        Measure("loss", TEXT, "loss"),
    ]


@pytest.fixture()
def swept(tiny_model):
    vecs = extract(tiny_model, POS, NEG, layers=[0, 1])
    other = torch.zeros(16)
    other[3] = 5.0  # a direction of its own norm (5), to be rescaled to the vector's
    res = sweep(
        tiny_model, vecs, layers=[0, 1], alphas=ALPHAS, measures=_measures(), intended="effect",
        controls={"random": random_direction(tiny_model, seed=1), "axis": other},
        prefix={"prompt": PREFIX, "other": [44, 45]}, max_tokens=18, n_resamples=200,
        progress=False,
    )  # fmt: skip
    return vecs, other, res


# --- the plays ----------------------------------------------------------------------------------


def test_the_studys_training_and_held_out_passages_come_from_disjoint_sets_of_six_plays():
    from interp.steering.study import N_HELD_OUT_SHAKESPEARE, N_TRAIN_SHAKESPEARE, shakespeare_sets

    split = shakespeare_sets()
    assert len(split.train) == N_TRAIN_SHAKESPEARE and len(split.held_out) == N_HELD_OUT_SHAKESPEARE
    assert not set(split.train_plays) & set(split.held_out_plays)
    assert len(split.train_plays) >= 6 and len(split.held_out_plays) >= 6
    assert not set(split.train) & set(split.held_out)
    # the plays named are the ones the passages came from, and any prefix of the held-out list
    # (the quick run takes 12) spreads over as many plays as it has passages
    held = shakespeare_passages(
        N_HELD_OUT_SHAKESPEARE, plays=range(1, 38, 2), lines=2, min_chars=50
    )
    assert [p for _, p in held] == split.held_out
    assert len({play for play, _ in held[:12]}) == 12


def test_max_docs_acts_and_passages_come_from_the_whole_play():
    from interp.corpus import shakespeare
    from interp.steering.data import _speech_passages

    rows = shakespeare_passages(9, max_docs=3, lines=2)
    assert [play for play, _ in rows[:3]] == [
        "a-midsummer-night-s-dream", "as-you-like-it", "love-s-labours-lost",
    ]  # fmt: skip
    assert len(rows) == 9 and len({p for _, p in rows}) == 9
    every = _speech_passages(next(iter(shakespeare(1)))[1], 2, 30)
    at = [every.index(p) for _, p in shakespeare_passages(3, plays=[0], lines=2)]
    assert at[0] < len(every) / 3 <= at[1] < 2 * len(every) / 3 <= at[2]  # not the opening


def test_the_split_refuses_what_cannot_make_two_sets_of_six_plays():
    with pytest.raises(
        ValueError, match=r"select 10 plays: two disjoint sets of 6 plays need at least 12"
    ):
        shakespeare_split(48, 20, max_docs=10)
    with pytest.raises(ValueError, match="4 held-out passages cannot come from 6 plays"):
        shakespeare_split(48, 4)
    with pytest.raises(ValueError, match=r"plays \[40\] do not exist: the corpus has 38"):
        shakespeare_passages(3, plays=[1, 40])
    with pytest.raises(ValueError, match="select no play"):
        shakespeare_passages(3, first_doc=38)
    with pytest.raises(ValueError, match="speeches with 2 lines of at least 500 characters"):
        shakespeare_passages(3, plays=[0], lines=2, min_chars=500)


# --- controls -----------------------------------------------------------------------------------


def test_controls_run_at_the_vectors_norm_at_each_layer_through_the_same_cells(tiny_model, swept):
    vecs, other, res = swept
    assert set(res.controls) == {"random", "axis"}
    for la in (0, 1):
        norm = float(vecs[la].vector.norm())
        for name in res.controls:
            assert res.config["control_norms"][name][str(la)] == pytest.approx(norm, rel=1e-6)
    eff = encode(tiny_model, POS + NEG)
    base = _last_logit(tiny_model(eff.tokens, attention_mask=eff.attention_mask), eff)
    for li, la in enumerate([0, 1]):
        by_hand = other / other.norm() * vecs[la].vector.norm()
        for ai, alpha in enumerate(ALPHAS):
            with steer(tiny_model, add(by_hand, alpha, layer=la)):
                steered = tiny_model(eff.tokens, attention_mask=eff.attention_mask)
            torch.testing.assert_close(
                res.controls["axis"]["effect"][:, li, ai], _last_logit(steered, eff) - base,
                atol=1e-5, rtol=1e-4,
            )  # fmt: skip
    # the steering vector's own cells are untouched by the controls
    plain = sweep(
        tiny_model, vecs, layers=[0, 1], alphas=ALPHAS, measures=_measures(), intended="effect",
        max_tokens=18, progress=False,
    )  # fmt: skip
    for m in plain.values:
        torch.testing.assert_close(res.values[m], plain.values[m])
    assert not plain.controls and not plain.prompted


def test_the_embedding_control_is_the_metric_words_embedding_difference():
    from interp.random_models import random_model

    m = random_model(n_layers=1, d_model=8, n_heads=2, d_mlp=16, d_vocab=20, seed=0)
    d = word_embedding_direction(m, ["t3", "t4"], ["t5"])
    w_e = m.W_E.detach()
    torch.testing.assert_close(d, (w_e[3] + w_e[4]) / 2 - w_e[5])
    with pytest.raises(ValueError, match="not single tokens"):
        word_embedding_direction(m, ["t3 t4"], ["t5"])


def test_controls_and_prefixes_are_checked_before_the_model_runs(tiny_model, monkeypatch):
    vecs = extract(tiny_model, POS, NEG, layers=[0, 1])

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(tiny_model, "forward", refuse)
    kw = {"layers": [0, 1], "alphas": [1.0], "measures": _measures(), "intended": "effect"}
    with pytest.raises(ValueError, match="cannot be named 'prompt'"):
        sweep(tiny_model, vecs, controls={"prompt": torch.ones(16)}, **kw)
    with pytest.raises(ValueError, match=r"control 'r' at layer 0 has shape \(8,\).*d_model is 16"):
        sweep(tiny_model, vecs, controls={"r": torch.ones(8)}, **kw)
    with pytest.raises(ValueError, match="control 'z' is zero at layer 0"):
        sweep(tiny_model, vecs, controls={"z": torch.zeros(16)}, **kw)
    with pytest.raises(ValueError, match=r"control 'r' has no direction for layer 1; it has \[0\]"):
        sweep(tiny_model, vecs, controls={"r": {0: torch.ones(16)}}, **kw)
    with pytest.raises(ValueError, match="prompting prefix 'prompt' has no tokens"):
        sweep(tiny_model, vecs, prefix=[], **kw)
    with pytest.raises(ValueError, match="a prefix cannot be named 'r'"):
        sweep(tiny_model, vecs, controls={"r": torch.ones(16)}, prefix={"r": [4]}, **kw)


# --- the prompting baseline ---------------------------------------------------------------------


def test_the_prompting_baseline_equals_a_plain_forward_on_the_prefixed_prompts(tiny_model, swept):
    vecs, _, res = swept
    eff, text = encode(tiny_model, POS + NEG), encode(tiny_model, TEXT)
    pre_eff = encode(tiny_model, [PREFIX + p for p in POS + NEG])
    pre_text = encode(tiny_model, [PREFIX + p for p in TEXT])
    n = len(PREFIX)
    with torch.no_grad():
        plain = tiny_model(eff.tokens, attention_mask=eff.attention_mask)
        prefixed = tiny_model(pre_eff.tokens, attention_mask=pre_eff.attention_mask)
        plain_text = tiny_model(text.tokens, attention_mask=text.attention_mask)
        pre_logits = tiny_model(pre_text.tokens, attention_mask=pre_text.attention_mask)
    want = _last_logit(prefixed, pre_eff) - _last_logit(plain, eff)
    torch.testing.assert_close(res.prompted["prompt"]["effect"], want, atol=1e-5, rtol=1e-4)
    # loss and KL over the prompt's own tokens: the prefixed run's columns from len(PREFIX) on
    own = pre_logits[:, n : n + text.tokens.shape[1]]
    for i, p in enumerate(TEXT):
        ids = torch.tensor([p])
        ce = loss(own[i : i + 1, : len(p)], ids) - loss(plain_text[i : i + 1, : len(p)], ids)
        assert float(res.prompted["prompt"]["loss"][i]) == pytest.approx(float(ce), abs=1e-5)
    want_kl = _kl(plain_text, own, text)
    torch.testing.assert_close(res.prompted["prompt"]["kl"], want_kl, atol=1e-5, rtol=1e-4)
    assert res.config["prefixes"] == {"prompt": PREFIX, "other": [44, 45]}
    lone = sweep(
        tiny_model, vecs, layers=[1], alphas=[1.0], measures=_measures(), intended="effect",
        prefix=PREFIX, progress=False,
    )  # fmt: skip
    assert list(lone.prompted) == ["prompt"]  # one prefix is called "prompt"
    torch.testing.assert_close(lone.prompted["prompt"]["kl"], res.prompted["prompt"]["kl"])


def test_a_prompt_that_starts_with_bos_gives_it_up_to_the_prefix(monkeypatch):
    """Where the model prepends BOS, a prompt's BOS is not repeated after a prefix that starts
    with one: the prefix's last token stands in for it."""
    from interp.random_models import random_model

    m = random_model(n_layers=2, d_model=16, n_heads=4, d_mlp=32, d_vocab=50, seed=0)
    m.tokenizer.bos_token = "t1"
    monkeypatch.setattr(m.cfg, "default_prepend_bos", True)
    vecs = extract(m, POS, NEG, layers=[1])
    prompts = [[1, 5, 6, 7], [1, 8, 9]]
    kw = {"layers": [1], "alphas": [1.0], "intended": "kl", "progress": False}
    res = sweep(m, vecs, measures=[Measure("kl", prompts, "kl")], prefix=[1, 30, 31], **kw)
    with torch.no_grad():
        for i, p in enumerate(prompts):
            plain = m(torch.tensor([p]))
            joined = m(torch.tensor([[1, 30, 31, *p[1:]]]))[:, 2:]  # 31 stands in for BOS
            want = _kl(plain, joined, encode(m, [p]))
            assert float(res.prompted["prompt"]["kl"][i]) == pytest.approx(float(want[0]), abs=1e-6)
    monkeypatch.setattr(m.cfg, "default_prepend_bos", False)  # then BOS is a token like others
    kept = sweep(m, vecs, measures=[Measure("kl", prompts, "kl")], prefix=[1, 30, 31], **kw)
    with torch.no_grad():
        joined = m(torch.tensor([[1, 30, 31, *prompts[1]]]))[:, 3:]
        want = _kl(m(torch.tensor([prompts[1]])), joined, encode(m, [prompts[1]]))
    assert float(kept.prompted["prompt"]["kl"][1]) == pytest.approx(float(want[0]), abs=1e-6)


# --- the wrong-direction rate -------------------------------------------------------------------


def test_wrong_direction_rate_equals_a_hand_count(swept):
    _, _, res = swept
    w = res.wrong_direction()
    v = res.values["effect"]  # goal "increase": against it is < 0 at alpha > 0, > 0 at alpha < 0
    for li in range(2):
        assert torch.isnan(w.rate[li, 0])  # alpha = 0 aims nowhere
        assert int(w.wrong[li, 1]) == sum(float(x) < 0 for x in v[:, li, 1])
        assert int(w.wrong[li, 2]) == sum(float(x) > 0 for x in v[:, li, 2])
        assert float(w.rate[li, 1]) == pytest.approx(int(w.wrong[li, 1]) / 8)
    low, high = wilson_interval(w.wrong[0, 1], 8)
    assert float(w.low[0, 1]) == pytest.approx(float(low)) and float(w.high[0, 1]) == pytest.approx(
        float(high)
    )
    ties = torch.zeros(8, 2, 3)
    ties[:3, :, 1:], ties[3:5, :, 1:] = -1.0, 1.0  # at alpha = 1: 3 against, 2 with, 3 still
    tied = replace(res, values={**res.values, "effect": ties}).wrong_direction()
    assert int(tied.wrong[0, 1]) == 3 and int(tied.wrong[0, 2]) == 2  # no change is not wrong
    down = replace(res, goal="decrease").wrong_direction()
    assert int(down.wrong[0, 1]) == sum(float(x) > 0 for x in v[:, 0, 1])
    ctrl = res.wrong_direction("axis")
    assert int(ctrl.wrong[1, 2]) == sum(
        float(x) > 0 for x in res.controls["axis"]["effect"][:, 1, 2]
    )
    prompt = res.wrong_direction("prompt")
    assert prompt.rate.ndim == 0 and int(prompt.wrong) == sum(
        float(x) < 0 for x in res.prompted["prompt"]["effect"]
    )
    with pytest.raises(KeyError, match="this sweep has: steering, random, axis, prompt, other"):
        res.wrong_direction("embedding")
    with pytest.raises(ValueError, match="no prompting baseline"):
        replace(res, prompted={}).wrong_direction("prompt")


def test_wilson_interval_matches_statsmodels():
    proportion_confint = pytest.importorskip("statsmodels.stats.proportion").proportion_confint
    for k, n in [(0, 12), (3, 8), (8, 8), (5, 24), (1, 1)]:
        low, high = wilson_interval(torch.tensor(float(k)), n)
        want = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (float(low), float(high)) == pytest.approx(want, abs=1e-9)
    with pytest.raises(ValueError, match="at least one prompt"):
        wilson_interval(0.0, 0)


# --- the report ---------------------------------------------------------------------------------


def test_best_reports_every_baseline_on_its_reporting_prompts(swept):
    from interp.multiple_testing import split_samples

    _, _, res = swept
    b = res.best()
    li, ai = res.layers.index(b.layer), res.alphas.index(b.alpha)
    shown = split_samples(8, 0.5, seed=0)[1]
    own = res.values["effect"][shown, li, ai]
    axis = res.controls["axis"]["effect"][shown, li, ai]
    assert b.baselines["axis"]["effect"][0] == pytest.approx(float(axis.mean()), abs=1e-6)
    assert b.baselines["prompt"]["effect"][0] == pytest.approx(
        float(res.prompted["prompt"]["effect"][shown].mean()), abs=1e-6
    )
    kl_shown = split_samples(4, 0.5, seed=0)[1]
    assert b.baselines["random"]["kl"][0] == pytest.approx(
        float(res.controls["random"]["kl"][kl_shown, li, ai].mean()), abs=1e-6
    )
    assert b.versus["axis"][0] == pytest.approx(float((own - axis).mean()), abs=1e-6)
    assert set(b.wrong) == {"steering", "random", "axis", "prompt", "other"}
    assert int(b.wrong["steering"].wrong) == int((own < 0).sum()) and b.wrong["steering"].n == 4
    text = res.summary()
    for what in ("control 'axis' at the same cell and norm", "prompt 'prompt' ([40, 41, 42]), no vector",
                 "steering minus baseline", "wrong direction (against 'increase'; Wilson 95%)"):  # fmt: skip
        assert what in text, text


def test_controls_and_the_prompting_baseline_survive_sel_save_and_load(swept, tmp_path):
    _, _, res = swept
    small = res.sel(layer=["L1"], alpha=["1"])
    assert torch.equal(
        small.controls["random"]["kl"], res.controls["random"]["kl"][:, [1]][:, :, [1]]
    )
    assert torch.equal(small.prompted["other"]["loss"], res.prompted["other"]["loss"])
    back = SteeringSweep.load(res.save(tmp_path / "sweep"))
    for name, by in res.controls.items():
        for m, v in by.items():
            assert torch.equal(back.controls[name][m], v)
    for name, by in res.prompted.items():
        assert all(torch.equal(back.prompted[name][m], v) for m, v in by.items())
    assert back.summary() == res.summary()
    info = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert info["controls"] == ["random", "axis"] and info["prefixes"] == ["prompt", "other"]
    with pytest.raises(
        ValueError, match="control 'x' needs values of the steering vector's shapes"
    ):
        replace(res, controls={"x": {"effect": torch.zeros(8, 2, 3)}})
    with pytest.raises(ValueError, match="'p' needs one value per prompt of every measure"):
        replace(res, prompted={"p": {"effect": torch.zeros(8)}})


# --- on SmolLM2 ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_on_smollm2_the_text_prefix_and_the_embedding_control(smollm2):
    from interp.core.positions import real
    from interp.steering import word_logit_diff
    from interp.steering.data import (
        NEGATIVE_WORDS,
        POSITIVE_WORDS,
        SENTIMENT_PAIRS,
        SENTIMENT_PROMPTS,
    )  # fmt: skip

    vec = extract(smollm2, [p for p, _ in SENTIMENT_PAIRS[:8]], [n for _, n in SENTIMENT_PAIRS[:8]],
                  layers=[21], position=real(slice(1, None)))  # fmt: skip
    metric = word_logit_diff(smollm2, POSITIVE_WORDS, NEGATIVE_WORDS)
    prompts, prefix = SENTIMENT_PROMPTS[:4], "Answer positively:\n"
    res = sweep(
        smollm2, vec, layers=[21], alphas=[1.0], measures=[Measure("s", prompts, metric)],
        intended="s", prefix=prefix, progress=False,
        controls={"embedding": word_embedding_direction(smollm2, POSITIVE_WORDS, NEGATIVE_WORDS)},
    )  # fmt: skip
    with torch.no_grad():
        for i, p in enumerate(prompts):  # the text joined, tokenized as one string
            joined = encode(smollm2, [prefix + p])
            assert (
                joined.tokens[0].tolist()
                == smollm2.to_tokens(prefix)[0].tolist() + smollm2.to_tokens(p)[0].tolist()
            )
            alone = encode(smollm2, [p])
            want = metric(smollm2(joined.tokens), joined) - metric(smollm2(alone.tokens), alone)
            assert float(res.prompted["prompt"]["s"][i]) == pytest.approx(float(want[0]), abs=1e-3)
    assert (res.controls["embedding"]["s"] > 0).all()  # the metric's own words, pushed


@pytest.mark.parametrize("module", ["interp.steering.data", "interp.steering.sweeps"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
