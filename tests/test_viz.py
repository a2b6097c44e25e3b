"""interp.viz without a browser: the data behind the views, escaping, atomic writes, bad input."""

from __future__ import annotations

import json
import re
import struct
import zlib

import numpy as np
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
    to_html,
)
from interp.viz.feature_data import nearest_latents
from interp.viz.page import script_safe_json
from interp.viz.png import decode_png
from interp.viz.sample import HOSTILE, toy_setup


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_setup(tmp_path_factory.mktemp("viz") / "store")


@pytest.fixture(scope="module")
def data(toy):
    return collect(toy.sae, toy.store, model=toy.model, tokenizer=toy.tokenizer, batch_size=50)


def test_every_token_of_every_window_has_the_sae_activation_from_the_store(toy, data):
    store, sae = toy.store, toy.sae
    with torch.no_grad():
        all_rows = store.rows(np.arange(len(store)))
        acts = sae.encode(all_rows.acts.float())
    where = {
        (int(s), int(p)): i
        for i, (s, p) in enumerate(zip(all_rows.seq_ids, all_rows.positions, strict=True))
    }
    checked = 0
    for latent, rec in data.features.items():
        examples = rec["top"] + [e for b in rec["bands"] for e in b["ex"]]
        for seq, pos, focus, ids, vals in examples:
            ctx = store.context(seq).tolist()
            start = pos - focus
            assert ids == ctx[start : start + len(ids)]
            for j, v in enumerate(vals):
                expected = float(acts[where[seq, start + j], latent])
                assert v == pytest.approx(expected, rel=1e-3, abs=1e-6)
                checked += 1
            assert vals[focus] > 0  # the example's own token is where the latent fired
    assert checked > 500


def test_records_carry_stats_logits_and_neighbours(toy, data):
    assert sorted(data.features) == list(range(24)) and data.n_rows == len(toy.store)
    dead = data.features[3]
    assert dead["n_active"] == 0 and dead["top"] == [] and dead["bands"] == []
    live = data.features[20]
    assert live["max"] == pytest.approx(live["top"][0][4][live["top"][0][2]], rel=1e-3)
    assert sum(live["hist"]["counts"]) == live["n_active"]
    assert len(live["logits"]["pos"]) == 10 and live["logits"]["pos"][0][1] > 0
    assert live["logits"]["neg"][0][1] < 0
    assert data.vocab[7] == HOSTILE[7]
    # neighbours: the brute-force decoder cosine ranking
    w = toy.sae.W_dec.detach() / toy.sae.W_dec.detach().norm(dim=-1, keepdim=True)
    cos = w @ w.T
    cos.fill_diagonal_(-2)
    nn = nearest_latents(toy.sae, [5], 4)[5]
    assert [i for i, _ in nn] == cos[5].topk(4).indices.tolist()
    assert [c for _, c in nn] == pytest.approx(cos[5].topk(4).values.tolist(), abs=1e-3)


def test_hostile_strings_never_reach_the_page_as_markup(data, tmp_path):
    fig = go.Figure(go.Bar(x=[HOSTILE[7]], y=[1]), layout={"title": HOSTILE[8]})
    out = save_html(
        tmp_path / "p.html", FeatureBrowser(data), fig, Text(HOSTILE[7], heading=HOSTILE[8]),
        title=HOSTILE[7],
    )  # fmt: skip
    page = out.read_text()
    assert "alert(1)" in page  # the data is there ...
    assert "<script>alert(1)" not in page and "</script><b>" not in page  # ... but never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the page title and the Text view
    # each JSON block parses back to the original strings
    blocks = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', page, re.S)
    vocab = dict(blocks)["features-vocab"]
    assert json.loads(vocab)["7"] == HOSTILE[7] and json.loads(vocab)["8"] == HOSTILE[8]
    assert json.loads(script_safe_json({"s": "\u2028</script>"}))["s"] == "\u2028</script>"


def test_one_self_contained_file_with_plotly_inlined_once(data, toy, tmp_path):
    attn = attention_view(toy.model, torch.tensor([1, 7, 8, 9, 2]), layers=[1])
    figs = [go.Figure(go.Scatter(y=[1, 2])), go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))]
    page = to_html(FeatureDashboard(data, 20), attn, *figs)
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:300]) == 1 and page.count("window.PlotlyConfig") == 1
    assert len(re.findall(r"<script[^>]*\bsrc=", page)) == 0  # nothing loaded from elsewhere
    assert "default-src 'none'" in page  # and the page may not fetch anything
    # feature pages alone need no plotly.js at all
    assert "window.PlotlyConfig" not in to_html(FeatureBrowser(data))


def test_results_with_a_plot_method_are_accepted(tmp_path):
    class Sweep:
        def plot(self):
            return go.Figure(go.Heatmap(z=[[0, 1]]), layout={"title": "patching sweep"})

    page = to_html(Sweep())
    assert "patching sweep" in page and "mechscope.plot(" in page


def test_unknown_objects_are_refused_and_nothing_is_written(data, tmp_path):
    path = tmp_path / "out.html"
    with pytest.raises(
        TypeError, match=r"argument 2 is a builtins.int.*expected an interp.viz view"
    ):
        save_html(path, FeatureBrowser(data), 42)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    path.write_text("previous")

    class Broken:
        def plot(self):
            return "not a figure"

    with pytest.raises(TypeError, match=r"Broken.plot\(\) returned a str"):
        save_html(path, Broken())
    with pytest.raises(ValueError, match="nothing to draw"):
        save_html(path)
    assert path.read_text() == "previous"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.html"]  # no temporary left


def test_a_view_that_fails_while_rendering_leaves_no_file(tmp_path):
    class Failing(Text):
        def render(self, page):
            raise RuntimeError("boom")

    path = tmp_path / "f.html"
    with pytest.raises(RuntimeError, match="boom"):
        save_html(path, Text("fine"), Failing())
    assert list(tmp_path.iterdir()) == []


def test_latent_ids_out_of_range_are_clear_errors(toy, data):
    with pytest.raises(IndexError, match=r"latent id\(s\) \[24\] out of range.*d_sae=24.*0\.\.23"):
        collect(toy.sae, toy.store, latents=[1, 24])
    with pytest.raises(IndexError, match=r"latent 99 is out of range.*0\.\.23"):
        FeatureDashboard(data, 99)
    part = collect(toy.sae, toy.store, latents=[1, 2], batch_size=50)
    with pytest.raises(KeyError, match="latent 5 was not collected; these were: 1, 2"):
        FeatureBrowser(part, latents=[5])
    with pytest.raises(KeyError, match="not in this browser"):
        FeatureBrowser(data, latents=[1, 2]).dashboard(9)
    page = to_html(FeatureBrowser(part, latents=[2, 1, 2]))  # a repeated id: shown once
    assert page.count('id="features-f2"') == 1


def test_an_empty_store_is_a_clear_error(toy, tmp_path):
    from interp.store import ActivationStore

    empty = ActivationStore.write(
        tmp_path / "empty", toy.model, "blocks.1.hook_resid_post", [], context_size=12
    )
    out = tmp_path / "never.html"
    with pytest.raises(ValueError, match="holds no rows: write activations into it first"):
        save_html(out, FeatureBrowser(collect(toy.sae, empty)))
    assert not out.exists()


def test_attention_view_holds_the_model_patterns(toy):
    toks = torch.tensor([1, 7, 8, 9, 2, 7])
    view = attention_view(toy.model, toks, heads=[(0, 1), (1, 3)])
    _, cache = toy.model.run_with_cache(toks[None])
    assert torch.allclose(view.pattern(1, 3), cache["blocks.1.attn.hook_pattern"][0, 3])
    assert torch.allclose(view.pattern(0, 1), cache["blocks.0.attn.hook_pattern"][0, 1])
    assert view.tokens[0] == "#1"  # no tokenizer on the toy model: ids
    fig = view.figure(1, 3)
    assert fig.data[0].z.shape == (6, 6)
    with pytest.raises(KeyError, match="head L0H0 is not in this view; it holds L0H1, L1H3"):
        view.pattern(0, 0)
    with pytest.raises(ValueError, match=r"heads \['L2H0'\] are not in this model.*layers 0\.\.1"):
        attention_view(toy.model, toks, heads=[(2, 0)])
    with pytest.raises(ValueError, match="patterns must be"):
        AttentionView(["a", "b"], [(0, 0)], torch.zeros(1, 3, 3))
    page = to_html(AttentionView(["<b>", HOSTILE[7]], [(0, 0)], torch.eye(2)[None]))
    assert '<a id="attn-L0H0">' in page and "<script>alert(1)" not in page


def test_jupyter_repr_is_the_page_in_a_sandboxed_iframe(data):
    html = FeatureDashboard(data, 20)._repr_html_()
    assert html.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in html
    assert "<script>" not in html  # the whole page is an escaped attribute value


def _png(img: np.ndarray, filters: list[int]) -> bytes:
    """A PNG with the given filter type on each row (the spec's filters, applied here)."""
    h, w, c = img.shape
    raw, prev = b"", np.zeros(w * c, np.int64)
    for y in range(h):
        row = img[y].reshape(-1).astype(np.int64)
        left = np.concatenate([np.zeros(c, np.int64), row[:-c]])
        upleft = np.concatenate([np.zeros(c, np.int64), prev[:-c]])
        f = filters[y % len(filters)]
        if f == 0:
            out = row
        elif f == 1:
            out = row - left
        elif f == 2:
            out = row - prev
        elif f == 3:
            out = row - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            out = row - pred
        raw += bytes([f]) + (out % 256).astype(np.uint8).tobytes()
        prev = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    head = struct.pack(">IIBBBBB", w, h, 8, {3: 2, 4: 6}[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [3, 4])
def test_png_decoder_undoes_every_filter(channels):
    img = np.random.default_rng(0).integers(0, 256, (10, 7, channels), dtype=np.uint8)
    assert np.array_equal(decode_png(_png(img, [0, 1, 2, 3, 4])), img)


def test_a_browser_that_fails_to_start_leaves_no_process_or_profile():
    import shutil

    from interp.viz.chromium import Browser, BrowserError

    browser = Browser(shutil.which("true"), timeout=10)  # exits at once, answering nothing
    with pytest.raises(BrowserError, match="exited"), browser:
        pass
    assert browser._proc is None and browser._profile is None
