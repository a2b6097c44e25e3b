"""``python -m interp.viz.screenshots``: PNGs of each view for the docs, by headless Chromium.

Writes ``feature_browser.png``, ``feature_dashboard.png`` and ``attention.png`` into ``--out``
(default ``docs/img``) and the HTML pages they show into ``--pages``; with ``--circuits
runs/demo/circuits.html``, only ``circuit_dashboard.png``; with ``--attribution``, only
``attribution_graph.png`` and ``attribution_supernode.png`` (add ``--transcoders DIR`` for
SmolLM2's Paris graph with a trained set; the default is the toy model with random transcoders). Features come from ``--sae`` over
``--store`` (a trained SAE reads best; default: the demo's); attention from SmolLM2-135M on a
sentence said twice, at the head with the highest induction score.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("interp.viz.screenshots")

PROMPT = "The old king gave his sword to the young queen. The old king gave his sword to the young queen."


def _induction_head(view: Any) -> tuple[int, int]:
    """The head that attends most from each token of the repeat to the token after its first
    occurrence (the induction pattern)."""
    n = len(view.tokens)
    half = (n - 1) // 2  # BOS, then the sentence twice
    q = torch.arange(1 + half + 1, n)
    k = q - half + 1
    scores = view.patterns[:, q, k].mean(-1)
    return view.heads[int(scores.argmax())]


def _shoot(b: Any, url: str, png: Path) -> None:
    """Load ``url`` in browser ``b``, refuse a page that did not render cleanly, save its top."""
    page = b.load(url)
    if page.console_errors or page.ready_ms is None:
        raise RuntimeError(f"{url} did not render cleanly: {page}")
    b.evaluate("window.scrollTo(0, 0)")
    b.screenshot(png)


def run(args: argparse.Namespace) -> list[Path]:
    from interp.models import load_model
    from interp.viz.attention import attention_view
    from interp.viz.chromium import Browser
    from interp.viz.demo import demo_views
    from interp.viz.feature_data import collect
    from interp.viz.features import FeatureDashboard
    from interp.viz.html import save_html
    from saes.sae import SAE

    out = Path(args.out)
    model: Any = load_model("smollm2-135m")
    sae_dir = Path(args.sae)
    sae = SAE.load(sae_dir / "final" if (sae_dir / "final" / "cfg.json").exists() else sae_dir)
    pages = Path(args.pages)
    [browser_html] = demo_views(
        sae, args.store, pages, model=model, max_latents=args.latents, n_batches=args.n_batches
    )
    from interp.store import ActivationStore

    data = collect(
        sae, ActivationStore(args.store), latents=[args.latent], model=model,
        n_batches=args.n_batches,
    )  # fmt: skip
    dashboard_html = save_html(
        pages / "feature_dashboard.html", FeatureDashboard(data, args.latent)
    )
    view = attention_view(model, PROMPT, layers=range(model.cfg.n_layers))
    layer, head = _induction_head(view)
    attn_html = save_html(pages / "attention.html", view, title="Attention patterns")
    with Browser(width=1280, height=900) as b:
        for html, name, url_hash in [
            (browser_html, "feature_browser.png", f"#features-latent-{args.latent}"),
            (attn_html, "attention.png", f"#attn-L{layer}H{head}"),
        ]:
            _shoot(b, html.resolve().as_uri() + url_hash, out / name)
    with Browser(width=1280, height=1700) as b:
        _shoot(b, dashboard_html.resolve().as_uri(), out / "feature_dashboard.png")
    log.info("induction head L%dH%d; screenshots in %s", layer, head, out)
    return [out / n for n in ("feature_browser.png", "feature_dashboard.png", "attention.png")]


def circuits(html: Path, out: Path) -> Path:
    """The top of the demo's circuit dashboard (the IOI residual sweep, position by position)."""
    from interp.viz.chromium import Browser

    with Browser(width=1280, height=1000) as b:
        _shoot(b, html.resolve().as_uri(), out / "circuit_dashboard.png")
    return out / "circuit_dashboard.png"


def paris_graph(model: Any, transcoders: Any) -> Any:
    """The study's Paris graph (:mod:`interp.circuits.study`): "The capital of France is" →
    " Paris", at most 512 feature rows, position 0 an error node whole."""
    from interp.circuits.attribute import attribute, target_tokens
    from interp.circuits.study import PARIS

    (target,) = target_tokens(model, [PARIS[1]])
    return attribute(
        model, model.to_tokens(PARIS[0])[0], transcoders, targets=[target],
        max_feature_nodes=512, batch_size=32, skip_position_0=True,
    )  # fmt: skip


def screenshot_groups(view: Any) -> list[list[str]]:
    """Two supernodes by a fixed rule (not by meaning): the pruned features of the first
    transcoder layer at the next-to-last position, and of the last layer at the last position."""
    from interp.viz.attribution_data import token_label

    d = view.data()
    n, layers, last = d["nodes"], d["transcoder_layers"], len(d["tokens"]) - 1
    groups = []
    for layer, pos in ((min(layers), last - 1), (max(layers), last)):
        ids = [i for i, k, lay, p in zip(n["id"], n["kind"], n["layer"], n["pos"], strict=True)
               if k == 1 and lay == layer and p == pos]  # fmt: skip
        if ids:
            groups.append([f"L{layer} features at '{token_label(d['tokens'][pos])}'", *ids])
    return groups


def attribution(out: Path, pages: Path, transcoders: str | None = None) -> list[Path]:
    """``attribution_graph.png``, the view hovering and pinning its most influential feature, and
    ``attribution_supernode.png``, the :func:`screenshot_groups` merged, the first pinned.

    With ``transcoders`` (a set folder, ``python -m saes.transcoders``): the Paris graph of
    SmolLM2-135M, pruned at the defaults (0.8 / 0.98), without dashboards. Without: a real graph of
    the 2-layer toy model with random TopK transcoders (CI has no trained set), with dashboards
    from a small store of random contexts."""
    from interp.viz.attribution import AttributionView, save_with_dashboards
    from interp.viz.chromium import Browser

    if transcoders is None:
        view = _toy_view()
        html = save_with_dashboards(view, pages / "attribution")
    else:
        from interp.models import load_model
        from saes.transcoder import load_transcoders

        model: Any = load_model("smollm2-135m")
        graph = paris_graph(model, load_transcoders(model, transcoders))
        view = AttributionView(graph)
        view.title = f"Attribution graph · {graph.prompt!r} → ' Paris' · SmolLM2-135M, transcoders"
        html = view.save(pages / "attribution" / "graph.html")
    n = view.data()["nodes"]
    top = max((i for i, k in enumerate(n["kind"]) if k == 1), key=lambda i: n["infl"][i])
    groups = screenshot_groups(view)
    log.info("supernodes for the screenshot: %s", [(g[0], len(g) - 1) for g in groups])
    api = "document.getElementById('attribution').mechscope"
    shots = [(out / "attribution_graph.png", f"{api}.pin({n['id'][top]!r})")]
    if groups:
        setup = f"{api}.importGroups({json.dumps(groups)}); {api}.pin({json.dumps(groups[0][0])})"
        shots.append((out / "attribution_supernode.png", setup))
    rows = view.graph.n_layers + 2  # the page's plot height, as attribution_assets sets it
    with Browser(width=1400, height=min(1200, max(520, 190 + 36 * rows)) + 180) as b:
        for png, script in shots:
            page = b.load(html)
            if page.console_errors or page.ready_ms is None:
                raise RuntimeError(f"{html} did not render cleanly: {page}")
            b.evaluate(script)
            b.evaluate("new Promise(r => setTimeout(r, 300))")
            b.screenshot(png)
    return [png for png, _ in shots]


def _toy_view() -> Any:
    import tempfile

    from interp.store import ActivationStore
    from interp.viz.attribution import attribution_view
    from interp.viz.attribution_sample import toy_graph, toy_transcoders
    from interp.viz.sample import ToyTokenizer, toy_model

    model = toy_model()
    tcs = toy_transcoders(model)
    graph = toy_graph([1, 2, 4, 11, 3, 10, 2, 12], model=model, transcoders=tcs)  # " king" twice
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, 50, (16,), generator=g) for _ in range(32)]
    with tempfile.TemporaryDirectory() as tmp:
        hooks = [f"blocks.{layer}.ln2.hook_normalized" for layer in tcs]
        store = ActivationStore.write(Path(tmp), model, hooks, contexts, context_size=16)
        view = attribution_view(graph, tcs, store, model=model, tokenizer=ToyTokenizer(),
                                batch_size=128, progress=False)  # fmt: skip
    view.title = "Attribution graph (toy model, random transcoders)"
    return view


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interp.viz.screenshots", description=__doc__)
    parser.add_argument("--sae", default="runs/demo/sae_l15")
    parser.add_argument("--store", default="runs/demo/store_l15")
    parser.add_argument("--latent", type=int, default=0, help="the latent shown")
    parser.add_argument("--latents", type=int, default=200, help="latents in the browser")
    parser.add_argument("--n-batches", type=int, default=16)
    parser.add_argument("--out", default="docs/img")
    parser.add_argument("--pages", default="runs/viz_screenshots", help="where the HTML goes")
    parser.add_argument(
        "--circuits", default=None, help="only screenshot this circuit dashboard (circuits.html)"
    )
    parser.add_argument(
        "--attribution", action="store_true", help="only the attribution-graph view's screenshots"
    )
    parser.add_argument(
        "--transcoders", default=None,
        help="with --attribution: a transcoder set folder; draws SmolLM2's Paris graph (default: "
        "the toy model with random transcoders)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.transcoders is not None and not args.attribution:
        parser.error("--transcoders goes with --attribution")
    if args.transcoders is not None and not Path(args.transcoders).is_dir():
        parser.error(
            f"--transcoders {args.transcoders}: no such folder (python -m saes.transcoders)"
        )
    if args.attribution:
        for path in attribution(Path(args.out), Path(args.pages), args.transcoders):
            print(path)
        return
    if args.circuits:
        print(circuits(Path(args.circuits), Path(args.out)))
        return
    for path in run(args):
        print(path)


if __name__ == "__main__":
    main()
