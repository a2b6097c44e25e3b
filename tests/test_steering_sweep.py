"""interp.steering.sweep on a tiny model: every cell equals a direct steered run; CIs, plot, save."""

from __future__ import annotations

import json
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from interp.metrics import loss
from interp.steering import Measure, SteeringSweep, add, encode, extract, steer, sweep
from interp.steering.sweeps import _kl

POS = [[3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14], [15, 16]]
NEG = [[23, 24, 25], [26, 27, 28, 29, 30, 31], [32, 33], [34, 35, 36, 37]]
TEXT = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 20], [21, 22, 23]]


def _last_logit(logits, enc):
    last = enc.first + enc.lengths - 1
    return logits[torch.arange(len(enc)), last, 7]


@pytest.fixture()
def result(tiny_model):
    vecs = extract(tiny_model, POS, NEG, layers=[0, 1])
    measures = [
        Measure("effect", POS + NEG, _last_logit),
        Measure("kl", TEXT, "kl"),
        Measure("loss", TEXT, "loss"),
    ]
    return vecs, sweep(
        tiny_model, vecs, layers=[0, 1], alphas=[0.0, 1.0, -3.0], measures=measures,
        intended="effect", max_tokens=18, n_resamples=200,
    )  # fmt: skip


def test_every_cell_equals_a_direct_steered_run(tiny_model, result):
    vecs, res = result
    text, eff = encode(tiny_model, TEXT), encode(tiny_model, POS + NEG)
    base = tiny_model(text.tokens, attention_mask=text.attention_mask)
    base_loss = loss(base, text.tokens, attention_mask=text.attention_mask)
    base_eff = _last_logit(tiny_model(eff.tokens, attention_mask=eff.attention_mask), eff)
    for li, layer in enumerate([0, 1]):
        for ai, alpha in enumerate([0.0, 1.0, -3.0]):
            with steer(tiny_model, add(vecs[layer], alpha)):
                steered = tiny_model(eff.tokens, attention_mask=eff.attention_mask)
            torch.testing.assert_close(
                res.values["effect"][:, li, ai], _last_logit(steered, eff) - base_eff,
                atol=1e-5, rtol=1e-4,
            )  # fmt: skip
            with steer(tiny_model, add(vecs[layer], alpha), attention_mask=text.attention_mask):
                logits = tiny_model(text.tokens, attention_mask=text.attention_mask)
            kl = _kl(base, logits, text)
            dloss = loss(logits, text.tokens, attention_mask=text.attention_mask) - base_loss
            torch.testing.assert_close(res.values["kl"][:, li, ai], kl, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(res.values["loss"][:, li, ai], dloss, atol=1e-5, rtol=1e-4)
    assert res.values["kl"][:, :, 0].abs().max() < 1e-6  # alpha = 0: no change
    assert res.values["effect"][:, :, 0].abs().max() < 1e-5
    assert res.values["kl"][:, :, 2].min() > 0


def test_cis_best_summary_and_plot(result):
    _, res = result
    ci = res.ci("loss")
    assert (
        ci.estimate.shape == (2, 3)
        and (ci.low <= ci.estimate).all()
        and (ci.estimate <= ci.high).all()
    )
    best = res.best()
    assert best.alpha != 0.0 or res.ci("effect").estimate.max() <= 0
    assert set(best.side_effects) == {"kl", "loss"}
    capped = res.best(max_kl=1e-9)  # only the alpha = 0 cells qualify
    assert capped.alpha == 0.0
    assert "best: layer" in res.summary()
    # n is the intended measure's number of prompts, whichever measure comes first
    assert f"of {len(TEXT)} prompts" in replace(res, intended="loss", goal="decrease").summary()
    fig = res.plot()
    assert isinstance(fig, go.Figure) and len(fig.data) == 3 * 2
    assert fig.data[0].error_y.array is not None


def test_save_and_load_with_manifest(result, tmp_path):
    _, res = result
    d = res.save(tmp_path / "sweep")
    run = json.loads((d / "run.json").read_text())
    assert run["kind"] == "steering_sweep" and run["config"]["intended"] == "effect"
    assert "git" in run and "packages" in run and "loss" in run["data"]
    back = SteeringSweep.load(d)
    for k in res.values:
        assert torch.equal(back.values[k], res.values[k])
    assert back.layers == res.layers and back.alphas == res.alphas
    assert sorted(p.name for p in d.iterdir()) == ["run.json", "sweep.json", "values.safetensors"]


def test_a_mapped_vector_is_applied_at_the_layer_it_is_mapped_to(tiny_model):
    vec0 = extract(tiny_model, POS, NEG, layers=[0])[0]
    m = [Measure("kl", TEXT, "kl")]
    res = sweep(tiny_model, {1: vec0}, layers=[1], alphas=[2.0], measures=m, intended="kl")
    text = encode(tiny_model, TEXT)
    base = tiny_model(text.tokens, attention_mask=text.attention_mask)
    with steer(tiny_model, add(vec0, 2.0, layer=1)):
        steered = tiny_model(text.tokens, attention_mask=text.attention_mask)
    torch.testing.assert_close(res.values["kl"][:, 0, 0], _kl(base, steered, text))
    assert res.values["kl"].min() > 0


def test_sweep_refuses_bad_input(tiny_model):
    vecs = extract(tiny_model, POS, NEG, layers=[0])
    m = [Measure("kl", TEXT, "kl")]
    with pytest.raises(ValueError, match="no vector for layers"):
        sweep(tiny_model, vecs, layers=[0, 1], alphas=[1.0], measures=m, intended="kl")
    with pytest.raises(ValueError, match="out of range"):
        sweep(tiny_model, vecs[0], layers=[0, 5], alphas=[1.0], measures=m, intended="kl")
    with pytest.raises(ValueError, match="is not a measure"):
        sweep(tiny_model, vecs[0], layers=[0], alphas=[1.0], measures=m, intended="effect")
    with pytest.raises(ValueError, match="at least one strength"):
        sweep(tiny_model, vecs[0], layers=[0], alphas=[], measures=m, intended="kl")


def test_sweep_shows_progress_over_prompt_batches(capsys, result):
    # The fixture's sweep ran under this test's capture: 18 tokens a forward is 3 prompts of
    # width 6 (effect: 8 prompts, 3 batches) and 2 of width 8 (kl, loss: 4 prompts, 2 each).
    err = capsys.readouterr().err
    assert "steering sweep" in err and "7/7" in err


def test_the_sweep_is_a_result_with_sel_ci_and_a_registered_view(result):
    from interp.core.result import Result, Values
    from interp.viz.steering import plot_steering_sweep

    _, res = result
    assert isinstance(res, Result) and res.axes == ("measure", "layer", "alpha")
    assert res.labels["layer"] == ["L0", "L1"] and res.labels["alpha"] == ["0", "1", "-3"]
    assert res.shape == (3, 2, 3) and res.mean.shape == (3, 2, 3)
    assert res.n_prompts == {"effect": 8, "kl": 4, "loss": 4}
    with pytest.raises(ValueError, match="different numbers of prompts"):
        _ = res.n_samples
    one = res.sel(measure="loss")
    assert isinstance(one, Values) and torch.equal(one.values, res.values["loss"])
    assert one.meta["metric"] == "loss" and one.axes == ("layer", "alpha")
    cell = res.sel(measure="kl", layer="L1", alpha=["0", "-3"])
    assert cell.axes == ("alpha",) and torch.equal(cell.values, res.values["kl"][:, 1][:, [0, 2]])
    assert cell.meta["fixed"] == {"measure": "kl", "layer": "L1"}
    smaller = res.sel(layer=["L1"], alpha=[2, 1])
    assert isinstance(smaller, SteeringSweep) and smaller.layers == [1]
    assert smaller.alphas == [-3.0, 1.0]
    assert torch.equal(smaller.values["effect"], res.values["effect"][:, [1]][:, :, [2, 1]])
    assert smaller.best().layer == 1
    with pytest.raises(ValueError, match="select one measure too"):
        res.sel(layer="L1")
    with pytest.raises(ValueError, match="keeps its intended measure"):
        res.sel(measure=["kl"])
    with pytest.raises(ValueError, match="at least one entry of alpha"):
        res.sel(alpha=[])
    # ci(): the intended measure by default; the seed moves the interval, not the estimate
    assert torch.equal(res.ci().low, res.ci("effect").low)
    other = res.ci("loss", seed=1)
    torch.testing.assert_close(other.estimate, res.ci("loss").estimate)
    assert not torch.equal(other.low, res.ci("loss").low)
    assert type(res).plot is Result.plot
    assert res.plot().to_dict() == plot_steering_sweep(res).to_dict()


def test_load_reads_a_sweep_saved_before_the_format_field(result, tmp_path):
    _, res = result
    d = res.save(tmp_path / "sweep")
    info = json.loads((d / "sweep.json").read_text())
    assert info.pop("format") == "mechscope.steering_sweep/1"
    (d / "sweep.json").write_text(json.dumps(info))
    back = SteeringSweep.load(d)
    assert torch.equal(back.values["kl"], res.values["kl"]) and back.seed == res.seed
    (d / "sweep.json").write_text(json.dumps({**info, "format": "mechscope.scrub_result/1"}))
    with pytest.raises(ValueError, match="does not hold a steering sweep"):
        SteeringSweep.load(d)
