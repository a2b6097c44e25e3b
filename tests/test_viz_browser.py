"""interp.viz pages opened in headless Chromium: no console errors, not blank, hostile tokens shown
as text with no alert, and the browser's index, search and navigation working.

Skipped only where Chromium is not installed (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from interp.viz import (
    AttentionView,
    FeatureBrowser,
    FeatureDashboard,
    Text,
    attention_view,
    collect,
    save_html,
)
from interp.viz.chromium import Browser, find_chromium
from interp.viz.png import pixel_std
from interp.viz.sample import HOSTILE, toy_setup

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (apt-get install -y chromium); CI installs it",
)
BLANK_STD = 2.0  # a page that drew nothing has a pixel standard deviation near 0


@pytest.fixture(scope="module")
def browser():
    with Browser(width=1280, height=900) as b:
        yield b


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_setup(tmp_path_factory.mktemp("vizb") / "store", d_sae=40)


@pytest.fixture(scope="module")
def data(toy):
    return collect(toy.sae, toy.store, model=toy.model, tokenizer=toy.tokenizer, batch_size=64)


def open_clean(browser, path):
    page = browser.load(path)
    assert page.console_errors == []
    assert page.dialogs == []  # alert(1) never ran
    assert page.requests == []  # nothing fetched from the network
    assert page.ready_ms is not None  # every view finished its first render
    return page


def test_the_check_tells_a_blank_page_from_a_drawn_one(browser, tmp_path):
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    browser.load(tmp_path / "blank.html")
    assert pixel_std(browser.screenshot(scale=0.5)) < 0.5
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>alert(1); console.error('x'); undefinedName()</script>")
    page = browser.load(bad)
    assert page.dialogs == ["alert: 1"] and len(page.console_errors) == 2


def test_feature_browser_renders_hostile_tokens_as_text(browser, data, tmp_path):
    path = save_html(tmp_path / "features.html", FeatureBrowser(data), title=HOSTILE[7])
    open_clean(browser, path)
    assert pixel_std(browser.screenshot(scale=0.5)) > BLANK_STD
    assert browser.evaluate("document.title") == HOSTILE[7]
    browser.evaluate("document.getElementById('features').mechscope.goto(20)")
    texts = browser.evaluate(
        "[...document.querySelectorAll('#features .ms-tok, #features .ms-tokcell')]"
        ".map(e => e.textContent)"
    )
    assert HOSTILE[7] in texts  # shown as the literal string ...
    assert browser.evaluate("document.querySelectorAll('#features script').length") == 0
    assert (
        browser.evaluate("document.querySelectorAll('#features b').length") == 0
    )  # ... not markup
    shaded = browser.evaluate(
        "[...document.querySelectorAll('#features .ms-tok[data-act]')]"
        ".filter(e => Number(e.dataset.act) > 0 && e.style.background && e.title.includes('activation')).length"
    )
    assert shaded > 10  # tokens shaded by activation, the value in the hover text


def test_feature_browser_index_search_and_navigation(browser, data, tmp_path):
    path = save_html(tmp_path / "nav.html", FeatureBrowser(data))
    open_clean(browser, path)
    api = "document.getElementById('features').mechscope"
    assert browser.evaluate(f"{api}.current()") == 0 and browser.evaluate(f"{api}.order()") == list(
        range(40)
    )
    # sort by density (descending first), by clicking the column header
    browser.evaluate("document.querySelector('#features th[data-key=density]').click()")
    by_density = sorted(data.features, key=lambda i: (-data.features[i]["density"], i))
    assert browser.evaluate(f"{api}.order()") == by_density
    first_row = browser.evaluate("document.querySelector('#features tbody tr td').textContent")
    assert first_row == str(by_density[0])
    # search by id, then step to the next latent in density order
    browser.evaluate(
        "const s = document.querySelector('#features input[type=search]'); s.value = '17';"
        "s.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))"
    )
    assert browser.evaluate(f"{api}.current()") == 17
    assert "Latent 17" in browser.evaluate(
        "document.querySelector('#features .ms-feature h3').textContent"
    )
    browser.evaluate("document.querySelector('#features .ms-navbar button:nth-child(2)').click()")
    assert browser.evaluate(f"{api}.current()") == by_density[by_density.index(17) + 1]
    # an id out of range is a message on the page, not an error
    assert browser.evaluate(f"{api}.goto(40)") is False
    msg = browser.evaluate("document.querySelector('#features .ms-msg').textContent")
    assert msg == "latent 40 is out of range: this SAE has latents 0\u201339"
    # a nearest-latent link opens that latent
    browser.evaluate("document.querySelector('#features .ms-nn a').click()")
    target = data.features[by_density[by_density.index(17) + 1]]["nn"][0][0]
    browser.evaluate("new Promise(r => setTimeout(r, 50))")
    assert browser.evaluate(f"{api}.current()") == target
    assert browser.evaluate("document.querySelectorAll('.ms-error').length") == 0


def test_dashboard_figures_and_attention_on_one_page(browser, data, toy, tmp_path):
    hostile_fig = go.Figure(
        go.Bar(x=[HOSTILE[7], HOSTILE[8]], y=[1, 2]), layout={"title": {"text": HOSTILE[7]}}
    )
    attn = attention_view(toy.model, torch.tensor([1, 7, 8, 9, 2, 7, 8]), layers=[0, 1])
    labelled = AttentionView([HOSTILE[7], HOSTILE[8], "c"], [(0, 0)], torch.eye(3)[None])
    path = save_html(
        tmp_path / "mixed.html", Text("three kinds of view"), FeatureDashboard(data, 3),
        FeatureDashboard(data, 20), hostile_fig, attn, labelled,
    )  # fmt: skip
    open_clean(browser, path)
    assert pixel_std(browser.screenshot(scale=0.5)) > BLANK_STD
    assert browser.evaluate("document.querySelectorAll('.js-plotly-plot').length") == 3
    assert "dead latent" in browser.evaluate("document.getElementById('feature-3').textContent")
    # token labels reach plotly escaped: shown exactly, <b> not read as bold, &amp; not decoded
    ticks = browser.evaluate(
        "[...document.querySelectorAll('[data-mechscope=attention]')].map(v =>"
        " [...v.querySelectorAll('.xtick text')].map(t => t.textContent))"
    )
    assert ticks[0][:2] == ["0: #1", "1: #7"]
    assert ticks[1] == [f"0: {HOSTILE[7]}", f"1: {HOSTILE[8]}", "2: c"]
    # a circuit view can switch the attention view to a head
    assert browser.evaluate("mechscope.showHead(1, 2)") is True
    title = browser.evaluate(
        "document.querySelector('[data-mechscope=attention] .gtitle').textContent"
    )
    assert title == "Attention pattern L1H2"
    assert browser.evaluate("document.querySelectorAll('.ms-error').length") == 0


def test_demo_feature_browser_opens_clean(browser, toy, tmp_path):
    from interp.viz import demo_views

    toy.sae.save(tmp_path / "sae")
    [path] = demo_views(tmp_path / "sae", toy.store.path, tmp_path / "out", model=toy.model)
    assert path == tmp_path / "out" / "feature_browser.html"
    open_clean(browser, path)
    assert pixel_std(browser.screenshot(scale=0.5)) > BLANK_STD
    rows = browser.evaluate("document.querySelectorAll('#features tbody tr').length")
    assert rows == toy.sae.cfg.d_sae
    # the histogram has one bar per bin up to the last non-empty one, heights from the counts
    browser.evaluate("document.getElementById('features').mechscope.goto(20)")
    bars = browser.evaluate(
        "[...document.querySelectorAll('#features .ms-bar')].map(b => Number(b.getAttribute('height')))"
    )
    counts = __import__("json").loads(
        browser.evaluate("document.getElementById('features-f20').textContent")
    )["hist"]["counts"]
    last = max(j for j, c in enumerate(counts) if c)
    assert len(bars) == last + 1
    assert [b > 0 for b in bars] == [c > 0 for c in counts[: last + 1]]
    assert max(bars) == bars[counts.index(max(counts))]
