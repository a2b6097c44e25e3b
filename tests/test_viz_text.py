"""User and model strings in every view kind: shown as text, never markup, never ``&quot;``;
odd Unicode (lone surrogates) saved as U+FFFD instead of crashing ``save_html``.

One page holds every view kind (patching heatmap and slider, attribution bars, component graph,
attention, feature dashboard, scrubbing tree and comparison, steering sweep, steering study
figure) so the headless-Chromium check opens a single page.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from interp.patching.result import PatchResult
from interp.scrubbing.result import ScrubComparison, ScrubResult
from interp.stats import bootstrap_ci
from interp.steering.read import Accuracy
from interp.steering.study import DirectionResult
from interp.steering.sweeps import SteeringSweep
from interp.viz import AttentionView, Dashboard, FeatureDashboard, FigureView, Text, save_html
from interp.viz.chromium import Browser, find_chromium
from interp.viz.feature_data import FeatureData
from interp.viz.graph import plot_graph
from interp.viz.page import esc, script_safe_json
from interp.viz.text import clean_text, plotly_plain, plotly_text

BOLD, LINK, QUOTED, AMP, SCRIPT = (
    "<b>bold</b>",
    '<a href="http://x">link</a>',
    '"quoted"',
    "&amp;",
    "<script>alert(1)</script>",
)
HOSTILE = [BOLD, LINK, QUOTED, AMP, SCRIPT]


def _patch(axes, shape, labels, metric, method="patch_sweep"):
    g = torch.Generator().manual_seed(len(shape))
    return PatchResult(
        torch.randn(3, *shape, generator=g), axes, labels, metric, method, "z", "resample",
        "denoise", torch.ones(3), torch.zeros(3),
    )  # fmt: skip


def _scrub(name, s):
    g = torch.Generator().manual_seed(0)
    clean, random = torch.rand(8, generator=g), 2 + torch.rand(8, generator=g)
    nodes = [
        {"id": 0, "parent": None, "node": s[1], "feature": s[2], "path": [s[1]], "classes": 2,
         "pool": 3.0},
        {"id": 1, "parent": 0, "node": s[3], "feature": s[4], "path": [s[1], s[3]]},
    ]  # fmt: skip
    return ScrubResult(name, {}, "loss", clean, (clean + random) / 2, random, nodes)


def hostile_views(s: list[str]) -> dict[str, Any]:
    """One view (or figure) of each kind, every user or model string taken from ``s``."""
    five = [s[i % len(s)] for i in range(5)]
    heat = _patch(("layer", "pos"), (2, 5), {"layer": ["L0", "L1"], "pos": five}, s[0])
    slider = _patch(
        ("layer", "head", "pos"), (2, 2, 5),
        {"layer": ["L0", "L1"], "head": ["H0", "H1"], "pos": five}, s[0],
    )  # fmt: skip
    bars = _patch(("sender",), (5,), {"sender": five}, s[0], method="attribution_patch")
    edges = _patch(
        ("edge",), (3,), {"edge": ["embed->L0H1.q", "L0H1->L1H0.v", "L1H0->logits"]}, s[0]
    )
    attention = AttentionView(five, [(0, 0)], torch.softmax(torch.randn(1, 5, 5), -1))
    ex = [0, 2, 1, [0, 1, 2, 3, 4], [0.1, 0.9, 0.3, 0.0, 0.5]]
    record = {"id": 0, "density": 0.5, "n_active": 4, "n_rows": 8, "max": 0.9, "mean": 0.4,
              "hist": {"w": 0.1, "counts": [1, 2, 1]}, "top": [ex], "bands": [],
              "logits": {"pos": [[0, 1.0], [1, 0.5]], "neg": [[2, -1.0]]}, "nn": []}  # fmt: skip
    features = FeatureData(s[0], 1, 8, {0: record}, dict(enumerate(five)))
    sweep = SteeringSweep(
        [1, 2], [1.0, 2.0], {s[0]: torch.randn(4, 2, 2), s[1]: torch.rand(4, 2, 2)},
        {s[0]: torch.zeros(4), s[1]: torch.zeros(4)}, {s[0]: "custom", s[1]: "kl"}, s[0],
        "increase", n_resamples=50,
    )  # fmt: skip
    acc = {1: Accuracy(bootstrap_ci(torch.rand(6)), None), 2: Accuracy(bootstrap_ci(torch.rand(6)), None)}  # fmt: skip
    study = DirectionResult(s[0], {}, {s[1]: acc}, sweep)
    return {
        "patching heatmap": heat.plot(),
        "patching slider": slider.plot(),
        "attribution": bars.plot(),
        "component graph": plot_graph(edges),
        "attention": attention,
        "features": FeatureDashboard(features, 0),
        "scrubbing plot": _scrub(s[0], five).plot(),
        "scrub comparison": ScrubComparison([_scrub(s[0], five), _scrub(s[1], five)]).plot(),
        "steering sweep": sweep.plot(),
        "steering study": study.accuracy_figure(),
        "text": Text(s[2], heading=s[0]),
    }


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _strings(v)


def test_plotly_text_escapes_markup_only():
    assert plotly_text(BOLD) == "&lt;b&gt;bold&lt;/b&gt;"
    assert plotly_text(QUOTED) == QUOTED  # plotly does not decode &quot;: leave " as it is
    assert plotly_text(AMP) == "&amp;amp;"
    assert plotly_text("a\ud800b") == "a\ufffdb"
    for s in [*HOSTILE, "<br>x", "a &mu; b", "x\ud83d\ude00"]:
        assert plotly_plain(plotly_text(s)) == clean_text(s)
    assert plotly_plain("Layer <b>15</b><br>features &amp; more") == "Layer 15 features & more"


def test_clean_text_joins_pairs_and_replaces_strays():
    assert clean_text("\ud83d\ude00") == "\U0001f600"
    assert clean_text("\udc00\ud800x") == "\ufffd\ufffdx"
    assert clean_text(12) == "12"
    assert "\ufffd" in esc("a\ud800") and "\ufffd" in script_safe_json({"k": "a\ud800"})


def test_every_figure_gets_strings_as_plotly_text():
    figures = {k: v for k, v in hostile_views(HOSTILE).items() if hasattr(v, "to_plotly_json")}
    assert len(figures) == 8
    wrong = []
    for kind, fig in figures.items():
        joined = "\n".join(_strings(fig.to_plotly_json()))
        wrong += [f"{kind}: {raw!r} reaches plotly as markup" for raw in (BOLD, LINK, SCRIPT)
                  if raw in joined]  # fmt: skip
        wrong += [f"{kind}: a quote would show as &quot;"] if "&quot;" in joined else []
        wrong += [] if plotly_text(BOLD) in joined else [f"{kind}: the string is not shown"]
    assert wrong == []


def test_figure_headings_are_the_text_plotly_shows(tmp_path):
    fig = hostile_views(HOSTILE)["patching heatmap"]
    view = FigureView(fig)
    assert f"· {BOLD} ·" in view.title  # the metric, not "&lt;b&gt;" escaped again in the <h2>
    page = save_html(tmp_path / "p.html", Text("x"), fig).read_text()
    assert re.search(r"<h2>[^<]* &lt;b&gt;bold&lt;/b&gt; ·", page) and "&amp;lt;" not in page


def test_a_lone_surrogate_anywhere_saves_as_replacement_characters(tmp_path):
    odd = ["a\ud800", "\udfffb", "c\ud800d", "\ud83d", "e\ude00"]
    views = hostile_views(odd)
    path = save_html(tmp_path / "odd.html", *views.values(), title="title \ud800")
    text = path.read_bytes().decode("utf-8")  # strict: raises on anything not UTF-8
    assert "\ufffd" in text and "title \ufffd" in text
    blocks = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', text)
    assert blocks and not any(re.search(r"\\ud[89a-f]", b, re.I) for b in blocks)  # no escapes
    board = Dashboard(*views.values(), title="\ud800")
    assert "\ufffd" in board.save(tmp_path / "board.html").read_bytes().decode("utf-8")


_VISIBLE_TEXT = """(() => {
  const out = [], walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const tag = n.parentNode.nodeName.toLowerCase();
    if (tag !== 'script' && tag !== 'style') out.push(n.textContent);
  }
  return out.join('\\n');
})()"""


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed; CI installs it")
def test_hostile_strings_in_every_view_render_as_literal_text(tmp_path):
    views = hostile_views(HOSTILE)
    path = Dashboard(*views.values(), title=BOLD).save(tmp_path / "hostile.html")
    with Browser(width=1200, height=900) as browser:
        page = browser.load(path)
        assert page.console_errors == [] and page.dialogs == [] and page.requests == []
        n_plots = sum(k not in ("features", "text") for k in views)
        assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == n_plots
        # no element made from a string: no <b>, no link to x, no bold tspan, no extra script
        made = browser.evaluate(
            "[document.querySelectorAll('b, strong').length,"
            " document.querySelectorAll('a[href=\"http://x\"], svg a').length,"
            " [...document.querySelectorAll('tspan')].filter(t =>"
            "   /bold/.test(t.getAttribute('style') || '')).length,"
            " [...document.querySelectorAll('script')].filter(s => s.textContent === 'alert(1)').length]"
        )
        assert made == [0, 0, 0, 0]
        # each plot shows the string literally (titles, ticks or legends)
        per_plot = browser.evaluate(
            "[...document.querySelectorAll('.js-plotly-plot')].map(p => p.textContent)"
        )
        assert all(BOLD in t for t in per_plot), [t[:80] for t in per_plot if BOLD not in t]
        shown = browser.evaluate(_VISIBLE_TEXT)
        for s in HOSTILE:
            assert s in shown, f"{s!r} is not shown as text"
        assert "&quot;" not in shown and "&amp;amp;" not in shown and "&lt;" not in shown
        tokens = browser.evaluate(
            "[...document.querySelectorAll('.ms-tok')].map(e => e.textContent)"
        )
        assert tokens == HOSTILE
