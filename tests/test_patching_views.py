"""Patching figures: what they show, and that a page of them opens clean in headless Chromium."""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch

from interp.patching import edge_patch, patch_sweep
from interp.patching.result import PatchResult
from interp.viz import save_html
from interp.viz.chromium import Browser, find_chromium
from interp.viz.graph import plot_graph
from interp.viz.png import pixel_std

HOSTILE = "<script>alert(1)</script>"


def _toy():
    """toy-induction (a HookedTransformer, TL 3) or, on TL 4, toy-induction-llama: the same task
    on a Llama bridge. These tests are about the figures, not about which toy computes them."""
    from interp.models import hooked_available, load_toy_llama
    from interp.toy import load_toy_induction

    return load_toy_induction() if hooked_available() else load_toy_llama("bridge")


@pytest.fixture(scope="module")
def results():
    from interp.toy import repeated_random_tokens

    model = _toy()
    g = torch.Generator().manual_seed(0)
    clean = repeated_random_tokens(6, 4, generator=g)
    corrupt = clean.clone()
    corrupt[:, 1:5] = torch.randint(1, model.cfg.d_vocab, (6, 4), generator=g)

    def metric(logits):
        return logits[:, -2].log_softmax(-1).gather(1, clean[:, -1:])[:, 0]

    heads = patch_sweep(model, clean, corrupt, metric, site="z", over=("layer", "head"))
    by_pos = patch_sweep(model, clean, corrupt, metric, site="z", over=("layer", "pos", "head"))
    resid = patch_sweep(model, clean, corrupt, metric, site="resid_pre")
    resid.labels["pos"] = [HOSTILE] + resid.labels["pos"][1:]
    edges = edge_patch(model, clean, corrupt, metric)
    return heads, by_pos, resid, edges


def test_heatmap_carries_means_and_cis(results):
    heads = results[0]
    fig = heads.plot()
    (trace,) = fig.data
    assert trace.type == "heatmap"
    torch.testing.assert_close(torch.tensor(trace.z), heads.mean)
    ci = heads.ci()
    assert f"[{float(ci.low[1, 7]):.4g}, {float(ci.high[1, 7]):.4g}]" in trace.customdata[1][7]
    assert trace.zmid == pytest.approx(float(heads.corrupt.mean()))  # no effect = white


def test_three_axes_get_a_slider_and_labels_are_escaped(results):
    _, by_pos, resid, _ = results
    fig = by_pos.plot()
    assert len(fig.data) == by_pos.shape[0] and len(fig.layout.sliders[0].steps) == by_pos.shape[0]
    assert [t.visible for t in fig.data] == [True] + [False] * (by_pos.shape[0] - 1)
    assert "&lt;script&gt;" in resid.plot().layout.xaxis.ticktext[0]


def test_edge_bars_and_graph(results):
    edges = results[3]
    fig = edges.plot(top=10)
    bars = fig.data[0]
    assert bars.type == "bar" and list(bars.x) == list(range(10))
    effect = (edges.mean - edges.corrupt.mean()).abs()
    biggest = edges.labels["edge"][int(effect.argmax())]
    assert fig.layout.xaxis.ticktext[0] == html.escape(biggest.replace("->", "→"), quote=False)
    assert html.escape(biggest, quote=False) in bars.customdata[0]  # the whole label on hover
    assert all(len(t) <= 24 for t in fig.layout.xaxis.ticktext)  # short tick labels
    graph = plot_graph(edges, top=12)
    lines = [t for t in graph.data if t.mode == "lines" and t.x[0] is not None]
    assert len(lines) == 12
    with pytest.raises(ValueError, match="edge results"):
        plot_graph(results[0])


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed; CI installs it")
def test_circuit_page_opens_clean_in_chromium(results, tmp_path):
    heads, by_pos, resid, edges = results
    path = save_html(
        tmp_path / "circuits.html",
        heads.plot(),
        by_pos.plot(),
        resid.plot(),
        edges.plot(),
        plot_graph(edges),
        title=HOSTILE,
    )
    with Browser(width=1200, height=900) as browser:
        page = browser.load(path)
        assert page.console_errors == [] and page.dialogs == [] and page.requests == []
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 5
        assert pixel_std(browser.screenshot(scale=0.5)) > 2.0
        ticks = browser.evaluate(
            "[...document.querySelectorAll('.xtick text')].map(t => t.textContent)"
        )
        assert HOSTILE in ticks  # shown as text, not run


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed; CI installs it")
def test_a_click_on_a_head_shows_its_attention_pattern(results, tmp_path):
    from interp.viz import attention_view

    heads = results[0]
    attn = attention_view(_toy(), torch.tensor([0, 5, 6, 7, 5, 6, 7]))
    path = save_html(tmp_path / "linked.html", heads.plot(), attn)
    with Browser(width=1200, height=900) as browser:
        page = browser.load(path)
        assert page.console_errors == []
        browser.evaluate(
            "document.querySelector('.ms-figure').emit('plotly_click', {points: [{x: 7, y: 1}]})"
        )
        title = browser.evaluate(
            "document.querySelector('[data-mechscope=attention] .gtitle').textContent"
        )
        assert title == "Attention pattern L1H7"


def test_dashboard_shows_linked_views_inline(results, tmp_path):
    from interp.viz import Dashboard, attention_view

    heads, _, resid, _ = results
    attn = attention_view(_toy(), torch.tensor([0, 5, 6, 7, 5, 6, 7]))
    board = Dashboard(heads.plot(), resid.plot(), attn, title=HOSTILE)
    inline = board._repr_html_()
    assert inline.startswith('<iframe srcdoc="') and "<script>alert" not in inline
    assert html.unescape(inline.split('srcdoc="', 1)[1].split('" sandbox', 1)[0]) == board.html
    assert board.save(tmp_path / "b.html").read_text() == board.html
    with pytest.raises(ValueError, match="nothing to draw"):
        Dashboard()


def _result(axes, labels, values):
    return PatchResult(
        values, axes, labels, "logit_diff", "patch_sweep", "z", "resample", "denoise",
        torch.ones(values.shape[0]), torch.zeros(values.shape[0]),
    )  # fmt: skip


def test_positions_with_the_same_token_stay_distinct_columns():
    tokens = [" When", " to", " Mary", " to", " to"]  # the IOI template has " to" twice
    values = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    res = _result(("layer", "pos"), {"layer": ["L0", "L1"], "pos": tokens}, values)
    fig = res.plot()
    (trace,) = fig.data
    assert len(set(trace.x)) == 5  # five columns, not three
    last = list(trace.x).index(max(trace.x))  # the rightmost column holds the last position
    torch.testing.assert_close(torch.tensor(trace.z)[:, last], res.mean[:, -1])
    assert list(fig.layout.xaxis.ticktext) == tokens


def test_a_sweep_at_one_position_plots_as_layer_by_head():
    values = torch.randn(3, 2, 4, 1, generator=torch.Generator().manual_seed(1))
    labels = {"layer": ["L0", "L1"], "head": [f"H{h}" for h in range(4)], "pos": ["14 'END'"]}
    res = _result(("layer", "head", "pos"), labels, values)
    fig = res.plot()
    assert len(fig.data) == 1 and not fig.layout.sliders  # no slider over one position
    assert np.asarray(fig.data[0].z).shape == (2, 4)
    torch.testing.assert_close(torch.tensor(fig.data[0].z), res.mean[..., 0])
    assert list(fig.layout.yaxis.ticktext) == ["L0", "L1"]
    assert "at pos 14 'END'" in fig.layout.title.text  # the position is not lost
    assert fig.layout.meta["mechscope_click"] == "head"
    one = _result(("layer", "pos"), {"layer": ["L3"], "pos": ["0"]}, torch.randn(3, 1, 1)).plot()
    assert one.data[0].type == "bar" and "at layer L3" in one.layout.title.text  # one axis stays


def test_the_readme_head_sweep_at_the_last_position_plots_one_heatmap():
    from interp.toy import repeated_random_tokens

    model = _toy()
    g = torch.Generator().manual_seed(0)
    clean = repeated_random_tokens(4, 4, generator=g)
    corrupt = clean.flip(0)

    def metric(logits):
        return logits[:, -1, 0]

    heads = patch_sweep(
        model, clean, corrupt, metric, site="z", over=("layer", "head", "pos"), positions=[-1]
    )
    fig = heads.plot()
    assert len(fig.data) == 1 and not fig.layout.sliders
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    assert np.asarray(fig.data[0].z).shape == shape


def test_component_graph_has_layer_ticks_and_a_sign_legend(results):
    graph = plot_graph(results[3], top=12)
    ticks = list(graph.layout.xaxis.ticktext)
    assert ticks[0] == "embed" and ticks[-1] == "logits" and "L0" in ticks and "MLP0" in ticks
    assert list(graph.layout.xaxis.tickvals) == [float(i) for i in range(len(ticks))]
    legend = [t.name for t in graph.data if t.x[0] is None]
    assert len(legend) == 2 and "raises" in legend[0] and "lowers" in legend[1]
    assert all(t.startswith("H") or t == "MLP" for t in graph.layout.yaxis.ticktext)
