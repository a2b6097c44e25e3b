"""The attribution-graph view: its data against the graph and circuit-tracer's viewer JSON, bad
input, and in headless Chromium: no console errors or network, hostile and repeated tokens shown
as text in their own columns, click-to-pin, supernode JSON, hover dashboards and their links.

Browser tests are skipped only where Chromium is not installed (as in test_viz_browser.py).
"""

from __future__ import annotations

import doctest
import importlib
import json

import pytest
import torch

from interp.circuits.export import to_viewer_json
from interp.viz.attribution import AttributionView, attribution_view, save_with_dashboards
from interp.viz.attribution_data import token_label
from interp.viz.attribution_sample import synthetic_graph, toy_graph, toy_transcoders
from interp.viz.chromium import Browser, find_chromium
from interp.viz.sample import ToyTokenizer, toy_model

TOKENS = [1, 7, 8, 9, 3, 7, 8, 2]  # 7 and 8 repeat
HOSTILE = [
    "<script>alert(1)</script>", "</div>", "\"quoted' & <b>bold</b>", "\u202eevil", "", "   ",
    "<script>alert(1)</script>", "\u200b",
]  # fmt: skip
no_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (apt-get install -y chromium); CI installs it",
)


@pytest.fixture(scope="module")
def toy():
    model = toy_model()
    tcs = toy_transcoders(model)
    return model, tcs, toy_graph(TOKENS, HOSTILE, model=model, transcoders=tcs)


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.skip("Chromium is not installed")
    with Browser(width=1280, height=1000) as b:
        yield b


def open_clean(browser, path):
    page = browser.load(path)
    assert page.console_errors == [] and page.dialogs == [] and page.requests == []
    assert page.ready_ms is not None
    return page


@pytest.mark.parametrize("module", ["interp.viz.attribution", "interp.viz.attribution_data"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_data_is_the_pruned_graph_with_viewer_ids(toy):
    """Nodes, edges and weights against circuit-tracer's viewer JSON (interp.circuits.export)."""
    _, _, graph = toy
    d = AttributionView(graph).data()
    ref = to_viewer_json(graph, "toy")
    assert sorted(d["nodes"]["id"]) == sorted(n["node_id"] for n in ref["nodes"])
    ids = d["nodes"]["id"]
    got = {
        (ids[s], ids[t]): w
        for s, t, w in zip(*(d["edges"][k] for k in ("src", "dst", "w")), strict=True)
    }
    want = {(link["source"], link["target"]): link["weight"] for link in ref["links"]}
    assert got.keys() == want.keys() and len(got) > 50
    assert all(abs(got[k] - want[k]) <= 1e-3 * abs(want[k]) for k in want)
    # edge counts per node, and the sign × magnitude bin of each edge
    n_out = [sum(s == j for s in d["edges"]["src"]) for j in range(len(ids))]
    assert d["nodes"]["n_out"] == n_out
    w = torch.tensor(d["edges"]["w"])
    bins = torch.tensor(d["edges"]["bin"])
    assert torch.equal(bins >= 4, w < 0)
    assert int(bins[w.abs().argmax()]) % 4 == 3 and int(bins[w.abs().argmin()]) % 4 == 0
    # activations of feature nodes are the graph's
    feats = graph.feature_table.tolist()
    acts = graph.activation_values[graph.selected_features].tolist()
    by_id = {f"{lay}_{f}_{p}": a for (lay, p, f), a in zip(feats, acts, strict=True)}
    for nid, act in zip(ids, d["nodes"]["act"], strict=True):
        if nid in by_id:
            assert act == pytest.approx(by_id[nid], rel=1e-3)


def test_repeated_tokens_keep_their_own_columns(toy):
    _, _, graph = toy
    n = AttributionView(graph).data()["nodes"]
    emb = [(x, p) for x, p, k in zip(n["x"], n["pos"], n["kind"], strict=True) if k == 0]
    assert sorted(emb) == [(float(p), p) for p in range(len(TOKENS))]  # one column per position
    for x, p, k in zip(n["x"], n["pos"], n["kind"], strict=True):
        if k in (1, 2):  # features and errors inside their position's column
            assert p - 0.41 < x < p + 0.41
    assert {y for y, k in zip(n["y"], n["kind"], strict=True) if k == 3} == {graph.n_layers}


def test_token_labels_make_invisible_tokens_visible():
    assert [token_label(s) for s in HOSTILE[3:6]] == [
        "\u27e8U+202E\u27e9evil",
        "\u2205",
        "\u2423" * 3,
    ]
    assert token_label("<script>") == "<script>"  # escaping is the page's job, not the label's


def test_bad_input_is_refused_before_any_work(toy, monkeypatch):
    model, tcs, graph = toy
    with pytest.raises(TypeError, match="AttributionGraph"):
        AttributionView({"nodes": []})
    with pytest.raises(ValueError, match=r"layer\(s\) \[5\].*layers \[0, 1\]"):
        AttributionView(graph, features={5: None})
    with pytest.raises(ValueError, match="scheme 'javascript'"):
        AttributionView(graph, dashboard_url="javascript:alert({feature})")
    with pytest.raises(ValueError, match=r"fields \{layer\} and \{feature\}"):
        AttributionView(graph, dashboard_url="f_{latent}.html")
    with pytest.raises(ValueError, match="node_threshold"):
        AttributionView(graph, node_threshold=2.0)

    def boom(*a, **k):
        raise AssertionError("collect ran before the inputs were checked")

    monkeypatch.setattr("interp.viz.feature_data.collect", boom)
    with pytest.raises(ValueError, match=r"none given for \[1\]"):
        attribution_view(graph, {0: tcs[0]}, store=None, model=model)
    with pytest.raises(ValueError, match="no feature data"):
        save_with_dashboards(AttributionView(graph), "unused")


@no_chromium
def test_hostile_and_repeated_tokens_are_text_in_their_own_columns(browser, toy, tmp_path):
    _, _, graph = toy
    path = AttributionView(graph, title=HOSTILE[0]).save(tmp_path / "g.html")
    open_clean(browser, path)
    ticks = browser.evaluate(
        "[...document.querySelectorAll('[data-mechscope=attribution] .xtick text')]"
        ".map(t => t.textContent)"
    )
    assert ticks == [f"{p}: {token_label(s)}" for p, s in enumerate(HOSTILE)]  # 8, not merged
    assert browser.evaluate("document.title") == HOSTILE[0]
    assert (
        browser.evaluate("document.querySelectorAll('#attribution script, #attribution b').length")
        == 0
    )
    logits = browser.evaluate(
        "[...document.querySelectorAll('[data-mechscope=attribution] .textpoint text')]"
        ".map(t => t.textContent)"
    )
    assert sorted(logits) == sorted(
        f"{token_label(s)} (p={p:.3f})"
        for s, p in zip(graph.logit_strings, graph.logit_probabilities.tolist(), strict=True)
    )


@no_chromium
def test_click_pins_a_node_and_dims_the_rest(browser, toy, tmp_path):
    _, _, graph = toy
    view = AttributionView(graph)
    d = view.data()
    open_clean(browser, view.save(tmp_path / "pin.html"))
    n = d["nodes"]
    j = max(
        range(len(n["id"])), key=lambda i: n["n_in"][i] + n["n_out"][i] if n["kind"][i] == 1 else -1
    )
    api = "document.getElementById('attribution').mechscope"
    plot = "document.querySelector('#attribution .js-plotly-plot')"
    before = browser.evaluate(f"{api}.edgeTraces().map(t => {plot}.data[t].opacity)")
    assert min(before) >= 0.25
    browser.evaluate(  # a click on the node, as plotly reports it
        f"{plot}.emit('plotly_click', {{points: [{{customdata: {j}}}], event: {{}}}})"
    )
    assert browser.evaluate(f"{api}.pinned()") == n["id"][j]
    after = browser.evaluate(f"{api}.edgeTraces().map(t => {plot}.data[t].opacity)")
    assert after == [0.06] * len(before)
    segs = browser.evaluate(
        f"{api}.highlight().map(t => {plot}.data[t].x.filter(v => v === null).length)"
    )
    mine = [
        e for e in range(len(d["edges"]["w"])) if j in (d["edges"]["src"][e], d["edges"]["dst"][e])
    ]
    assert segs == [
        sum(d["edges"]["w"][e] >= 0 for e in mine),
        sum(d["edges"]["w"][e] < 0 for e in mine),
    ]
    dimmed = browser.evaluate(
        f"[].concat(...{plot}.data.filter(t => t.customdata).map(t => t.marker.opacity))"
    )
    near = {j} | {d["edges"]["src"][e] for e in mine} | {d["edges"]["dst"][e] for e in mine}
    assert dimmed.count(1) == len(near) and dimmed.count(0.15) == len(n["id"]) - len(near)
    side = browser.evaluate("document.querySelector('#attribution .ms-ag-side').textContent")
    assert n["id"][j] in side and f"in {n['n_in'][j]} · out {n['n_out'][j]}" in side
    browser.evaluate(f"{api}.unpin()")
    assert browser.evaluate(f"{api}.edgeTraces().map(t => {plot}.data[t].opacity)") == before


@no_chromium
def test_supernodes_are_grouped_by_hand_and_exported(browser, toy, tmp_path):
    _, _, graph = toy
    view = AttributionView(graph)
    ids = view.data()["nodes"]["id"]
    open_clean(browser, view.save(tmp_path / "groups.html"))
    api = "document.getElementById('attribution').mechscope"
    plot = "document.querySelector('#attribution .js-plotly-plot')"
    for j in (3, 1):  # shift-clicks, in any order
        browser.evaluate(
            f"{plot}.emit('plotly_click', {{points: [{{customdata: {j}}}], event: {{shiftKey: true}}}})"
        )
    assert browser.evaluate(f"{api}.group('')") is False  # a group needs a name
    browser.evaluate(
        "const b = document.querySelector('#attribution input'); b.value = '</li><b>say';"
        "b.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))"
    )
    browser.evaluate(f"{api}.select({json.dumps(ids[-2:])})")
    assert browser.evaluate(f"{api}.group('out')") is True
    exported = json.loads(browser.evaluate(f"{api}.exportJSON()"))
    assert exported == {
        "prompt": graph.prompt,
        "supernodes": [["</li><b>say", ids[1], ids[3]], ["out", *ids[-2:]]],
    }
    shown = browser.evaluate(
        "[...document.querySelectorAll('.ms-ag-groups li span')].map(s => s.textContent)"
    )
    assert shown == ["</li><b>say (2 nodes)", "out (2 nodes)"]
    assert browser.evaluate("document.querySelectorAll('.ms-ag-groups b').length") == 0
    assert (
        json.loads(browser.evaluate("document.querySelector('#attribution pre').textContent"))
        == exported
    )


@no_chromium
def test_hover_shows_the_feature_dashboard_and_links_to_it(browser, toy, tmp_path):
    from interp.store import ActivationStore

    model, tcs, graph = toy
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (12,), generator=g) for _ in range(12)]
    hooks = [f"blocks.{layer}.ln2.hook_normalized" for layer in tcs]
    store = ActivationStore.write(tmp_path / "store", model, hooks, contexts, context_size=12)
    view = attribution_view(
        graph, tcs, store, model=model, tokenizer=ToyTokenizer(), batch_size=64, progress=False
    )
    assert set(view.features) == {0, 1}
    path = save_with_dashboards(view, tmp_path / "out")
    open_clean(browser, path)
    n = view.data()["nodes"]
    j = n["kind"].index(1)
    plot = "document.querySelector('#attribution .js-plotly-plot')"
    browser.evaluate(f"{plot}.emit('plotly_hover', {{points: [{{customdata: {j}}}]}})")
    side = browser.evaluate("document.querySelector('#attribution .ms-ag-side').textContent")
    assert f"Latent {n['feature'][j]}" in side and "Top activations" in side and "promoted" in side
    href = browser.evaluate("document.querySelector('#attribution .ms-ag-side a').href")
    assert href.endswith(f"features_l{n['layer'][j]}.html#features-latent-{n['feature'][j]}")
    open_clean(browser, href)
    assert (
        browser.evaluate("document.getElementById('features').mechscope.current()")
        == n["feature"][j]
    )


@no_chromium
def test_a_thousand_node_graph_opens_clean(browser, tmp_path):
    graph, pruned = synthetic_graph(1000, 10_000)
    view = AttributionView(graph, pruned=pruned)
    open_clean(browser, view.save(tmp_path / "big.html"))
    n_drawn = browser.evaluate(
        "document.querySelector('#attribution .js-plotly-plot').data"
        ".filter(t => t.customdata).reduce((s, t) => s + t.x.length, 0)"
    )
    assert n_drawn == 1000
    segs = browser.evaluate(
        "const p = document.querySelector('#attribution .js-plotly-plot');"
        "document.getElementById('attribution').mechscope.edgeTraces()"
        ".reduce((s, t) => s + p.data[t].x.filter(v => v === null).length, 0)"
    )
    assert segs == 10_000


def test_a_graph_plots_itself_and_saves_as_html(tmp_path):
    from interp.viz import save_html
    from interp.viz.attribution import AttributionView
    from interp.viz.attribution_sample import synthetic_graph

    graph, pruned = synthetic_graph(n_nodes=120, n_edges=400)
    assert isinstance(graph.plot(pruned=pruned), AttributionView)
    path = save_html(tmp_path / "g.html", graph)  # pruned by influence at the defaults
    assert path.stat().st_size > 10_000 and "mechscope" in path.read_text()[:2000]
