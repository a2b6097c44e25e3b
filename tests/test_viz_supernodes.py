"""Supernodes in the attribution-graph view, drawn merged: the drawn edges against the same
aggregation computed here from the graph's adjacency, node counts, escaped names, expand /
collapse, ungroup restoring the drawing exactly, pinning, import/export, and bad groups refused.

Browser tests are skipped only where Chromium is not installed (as in test_viz_browser.py).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from interp.circuits.export import node_id, to_viewer_json
from interp.viz.attribution import AttributionView
from interp.viz.attribution_data import EDGE_BINS, check_supernodes
from interp.viz.attribution_sample import synthetic_graph, toy_graph, toy_transcoders
from interp.viz.chromium import Browser, find_chromium
from interp.viz.sample import toy_model
from tests.conftest import HOOKED, NEEDS_HOOKED

HOSTILE_NAME = "<img src=x onerror=alert(1)> &amp; <b>bold</b>"  # plotly would read <b>, &amp;
API = "document.getElementById('attribution').mechscope"
PLOT = "document.querySelector('#attribution .js-plotly-plot')"
no_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (apt-get install -y chromium); CI installs it",
)


@pytest.fixture(scope="module", params=["synthetic", "toy"])
def toy(request):
    """A synthetic graph (runs without HookedTransformer) and a real one of the toy model."""
    if request.param == "synthetic":
        return synthetic_graph(90, 500, n_layers=4, n_pos=6, n_errors=8)
    if not HOOKED:
        pytest.skip(NEEDS_HOOKED)
    return real_graph()


def real_graph():
    """Out of the fixture's body, so that the synthetic case is not marked ``hooked``."""
    model = toy_model()
    graph = toy_graph([1, 7, 8, 9, 3, 7, 8, 2], model=model, transcoders=toy_transcoders(model))
    return graph, graph.prune()


@pytest.fixture(scope="module")
def groups(toy):
    """Two supernodes: three features, one feeding another (an edge among members), and two
    token embeddings (their edges to shared targets are summed)."""
    graph, pruned = toy
    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    feats = [i for i in keep if i < graph.n_features]
    em = pruned.edge_mask
    a = max(feats, key=lambda i: int(em[feats, i].sum()))  # most edges into other features
    b = next(t for t in feats if em[t, a])
    c = next(f for f in feats if f not in (a, b))
    toks = [i for i in keep if graph.token_start <= i < graph.logit_start][1:3]
    return [
        [HOSTILE_NAME, *(node_id(graph, i) for i in (a, b, c))],
        ["tokens 1–2", *(node_id(graph, i) for i in toks)],
    ]


def reference(graph, pruned, groups):
    """The merged edges computed from the adjacency: {(source, target): (sum, n members)}, edges
    among members per supernode, and the largest |weight| (the bins' scale)."""
    owner = {m: g[0] for g in groups for m in g[1:]}
    dst, src = pruned.edge_mask.nonzero(as_tuple=True)
    sums: dict[tuple[str, str], list[float]] = {}
    inner: Counter[str] = Counter()
    for t, s in zip(dst.tolist(), src.tolist(), strict=True):
        a, b = (owner.get(node_id(graph, i), node_id(graph, i)) for i in (s, t))
        if a == b:
            inner[a] += 1
            continue
        acc = sums.setdefault((a, b), [0.0, 0, 0.0])
        w = float(graph.adjacency[t, s])
        acc[0], acc[1], acc[2] = acc[0] + w, acc[1] + 1, acc[2] + abs(w)
    big = float(graph.adjacency[dst, src].abs().max())
    return sums, inner, big


def norm(groups):
    return [[g[0], *sorted(g[1:])] for g in groups]


def bin_of(w: float, big: float) -> int:
    return (4 if w < 0 else 0) + int(
        torch.bucketize(torch.tensor(abs(w) / big), torch.tensor(EDGE_BINS))
    )


def test_bad_groups_are_refused_with_close_matches(toy, groups):
    graph, pruned = toy
    ids = [node_id(graph, i) for i in pruned.node_mask.nonzero()[:, 0].tolist()]
    assert check_supernodes({"qParams": {"supernodes": groups}}, ids) == groups
    typo = groups[0][1][:-1] + "9"
    with pytest.raises(
        ValueError, match=rf"node '{typo}' is not in the pruned graph; did you mean '"
    ):
        AttributionView(graph, pruned=pruned, supernodes=[["x", typo]])
    with pytest.raises(ValueError, match="is in supernodes 'a' and 'b': a node joins one only"):
        check_supernodes([["a", ids[0]], ["b", ids[0]]], ids)
    with pytest.raises(ValueError, match="listed twice in supernode 'a'"):
        check_supernodes([["a", ids[0], ids[0]]], ids)
    with pytest.raises(ValueError, match="two supernodes are named 'a'"):
        check_supernodes([["a", ids[0]], ["a", ids[1]]], ids)
    with pytest.raises(ValueError, match=r"expected \[name, node_id, ...\]"):
        check_supernodes([[ids[0]]], ids)
    with pytest.raises(ValueError, match="expected .*got str"):
        check_supernodes("France", ids)
    view = AttributionView(graph, pruned=pruned, supernodes={"supernodes": groups})
    assert view.data()["supernodes"] == groups


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
    # errors raised by later interactions, and anything fetched after the load
    browser.evaluate(
        "window.__errs = []; window.addEventListener('error', e => __errs.push(String(e.message)));"
        "const ce = console.error; console.error = (...a) => { __errs.push(a.join(' ')); ce(...a); };"
        "window.alert = m => __errs.push('alert: ' + m)"  # a name run as markup would call it
    )
    return page


def still_clean(browser):
    assert browser.evaluate("window.__errs") == []
    fetched = browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))] == []
    assert browser.evaluate("document.querySelectorAll('#attribution img').length") == 0


def drawing(browser):
    """Every trace's points and styles, to compare drawings."""
    return browser.evaluate(
        f"JSON.stringify({PLOT}.data.map(t => [t.x, t.y, t.opacity, t.text, t.marker && t.marker.opacity,"
        " t.marker && t.marker.line && t.marker.line.width, t.marker && t.marker.size]))"
    )


def drawn_edges(browser):
    return {(s, t): (w, b) for s, t, w, b in browser.evaluate(f"{API}.drawn()")["edges"]}


@no_chromium
def test_merged_edges_are_the_sums_computed_from_the_graph(browser, toy, groups, tmp_path):
    graph, pruned = toy
    view = AttributionView(graph, pruned=pruned)
    ids = view.data()["nodes"]["id"]
    open_clean(browser, view.save(tmp_path / "merge.html"))
    before = drawing(browser)
    unmerged = drawn_edges(browser)
    browser.evaluate(f"window.__x = {PLOT}.data.map(t => t.x)")
    for name, *members in groups:
        browser.evaluate(f"{API}.select({json.dumps(members)})")
        assert browser.evaluate(f"{API}.group({json.dumps(name)})") is True
    sums, inner, big = reference(graph, pruned, groups)
    got = drawn_edges(browser)
    assert got.keys() == sums.keys()
    assert any(n > 1 for _, n, _ in sums.values())  # some drawn edges really are sums
    assert (HOSTILE_NAME, "tokens 1–2") in got or ("tokens 1–2", HOSTILE_NAME) in got
    for k, (w, n, mass) in sums.items():
        # the page's weights are rounded to 4 digits before they are summed
        assert got[k][0] == pytest.approx(w, rel=1e-3, abs=1e-3 * mass + 1e-9)
        r = abs(w) / big
        if n > 1 and all(abs(r - c) > 1e-3 for c in EDGE_BINS):
            assert got[k][1] == bin_of(w, big)
    # nodes: members hidden, one point per supernode, labelled with its name as text
    n_points = browser.evaluate(
        f"{PLOT}.data.filter(t => t.customdata).reduce((s, t) => s + t.x.filter(v => v !== null).length, 0)"
    )
    assert n_points == len(ids) - sum(len(g) - 1 for g in groups) + len(groups)
    labels = browser.evaluate(
        "[...document.querySelectorAll('#attribution .textpoint text')].map(t => t.textContent)"
    )
    assert HOSTILE_NAME in labels and "tokens 1–2" in labels
    hover = browser.evaluate(f"{PLOT}.data[{API}.superTrace()].hovertext[0]")
    assert f"{inner[HOSTILE_NAME]} edges among members not drawn" in hover
    assert inner[HOSTILE_NAME] >= 1
    assert "feature L" in hover and "&lt;img" in hover  # escaped for plotly
    # only the traces whose points changed were given new points (one restyle, no rebuild)
    new_points = browser.evaluate(f"{PLOT}.data.map((t, i) => t.x !== window.__x[i])")
    moved = [
        a[:2] != b[:2]
        for a, b in zip(json.loads(before), json.loads(drawing(browser)), strict=True)
    ]
    assert new_points == moved and 0 < sum(moved) < len(moved) - 2
    # expand one, then all; collapse again; ungroup: the first drawing exactly
    assert browser.evaluate(f"{API}.merge({json.dumps(HOSTILE_NAME)}, false)") is True
    assert HOSTILE_NAME not in {k for e in drawn_edges(browser) for k in e}
    assert browser.evaluate(f"{API}.mergeAll(false)") is True
    assert drawn_edges(browser) == unmerged and drawing(browser) == before  # groups kept
    assert browser.evaluate(f"{API}.mergeAll(true)") is True
    assert drawn_edges(browser) == got
    assert browser.evaluate(f"{API}.ungroup(1)") and browser.evaluate(f"{API}.ungroup(0)")
    assert drawing(browser) == before
    assert drawn_edges(browser) == unmerged
    still_clean(browser)


@no_chromium
def test_pinning_a_supernode_shows_its_summed_edges(browser, toy, groups, tmp_path):
    graph, pruned = toy
    view = AttributionView(graph, pruned=pruned, supernodes=groups)  # merged at open
    open_clean(browser, view.save(tmp_path / "pin.html"))
    sums, _, _ = reference(graph, pruned, groups)
    assert drawn_edges(browser).keys() == sums.keys()
    assert browser.evaluate(f"{API}.pin({json.dumps(HOSTILE_NAME)})") is True
    assert browser.evaluate(f"{API}.pinned()") == HOSTILE_NAME
    mine = [w for (s, t), (w, _, _) in sums.items() if HOSTILE_NAME in (s, t)]
    segs = browser.evaluate(
        f"{API}.highlight().map(t => {PLOT}.data[t].x.filter(v => v === null).length)"
    )
    assert segs == [sum(w >= 0 for w in mine), sum(w < 0 for w in mine)] and len(mine) > 2
    side = browser.evaluate("document.querySelector('#attribution .ms-ag-side').textContent")
    assert f"supernode {HOSTILE_NAME}" in side and all(m in side for m in groups[0][1:])
    # expanding the pinned supernode unpins it; the members are drawn again
    browser.evaluate(f"{API}.merge(0, false)")
    assert browser.evaluate(f"{API}.pinned()") is None
    assert browser.evaluate(f"{API}.highlight().map(t => {PLOT}.data[t].x.length)") == [0, 0]
    still_clean(browser)


@no_chromium
def test_groups_export_and_import_recreate_the_merge(browser, toy, groups, tmp_path):
    graph, pruned = toy
    open_clean(
        browser, AttributionView(graph, pruned=pruned, supernodes=groups).save(tmp_path / "io.html")
    )
    merged = drawn_edges(browser)
    exported = json.loads(browser.evaluate(f"{API}.exportJSON()"))
    assert norm(exported["supernodes"]) == norm(groups)
    browser.evaluate(f"{API}.ungroup(0); {API}.ungroup(0)")
    assert browser.evaluate(f"{API}.groups()") == []
    assert browser.evaluate(f"{API}.importGroups({json.dumps(json.dumps(exported))})") == 2
    assert drawn_edges(browser) == merged
    # a viewer JSON (circuit-tracer's qParams.supernodes) with a node this graph does not have
    viewer = to_viewer_json(graph, "toy")
    viewer["qParams"]["supernodes"] = [["say", groups[1][1], "3_999_1"]]
    assert browser.evaluate(f"{API}.importGroups({json.dumps(viewer)})") == 1
    msg = browser.evaluate("document.querySelector('#attribution .ms-msg').textContent")
    assert msg == "imported 1 supernode; 1 node ids not in this graph skipped: 3_999_1"
    assert norm(browser.evaluate(f"{API}.groups()")) == norm(
        [groups[0], ["tokens 1–2", groups[1][2]], ["say", groups[1][1]]]
    )  # a node joins one supernode: the newest
    # bad files are a message on the page, not an error
    assert browser.evaluate(f"{API}.importGroups('{{nope')") is False
    msg = browser.evaluate("document.querySelector('#attribution .ms-msg').textContent")
    assert msg.startswith("not JSON")
    assert browser.evaluate(f"{API}.importGroups({{supernodes: [['no members']]}})") is False
    still_clean(browser)


def test_screenshot_groups_follow_their_rule(toy):
    from interp.viz.screenshots import screenshot_groups

    graph, pruned = toy
    view = AttributionView(graph, pruned=pruned)
    got = screenshot_groups(view)
    n, last = view.data()["nodes"], graph.n_pos - 1
    want = []
    layers = graph.transcoder_layers  # the first at the next-to-last token, the last at the last
    for layer, pos in ((min(layers), last - 1), (max(layers), last)):
        ids = [
            i for i, k, lay, p in zip(n["id"], n["kind"], n["layer"], n["pos"], strict=True)
            if k == 1 and lay == layer and p == pos
        ]  # fmt: skip
        if ids:
            want.append(ids)
    assert [g[1:] for g in got] == want and want
    assert all(g[0].startswith(f"L{g[1].split('_')[0]} features at '") for g in got)
    AttributionView(graph, pruned=pruned, supernodes=got)  # valid groups


def test_screenshot_cli_refuses_a_missing_transcoder_folder(tmp_path, capsys):
    from interp.viz.screenshots import main

    with pytest.raises(SystemExit):
        main(["--attribution", "--transcoders", str(tmp_path / "nope")])
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--transcoders", str(tmp_path)])
    assert "--transcoders goes with --attribution" in capsys.readouterr().err
