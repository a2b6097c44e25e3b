"""``python -m interp.viz.bench``: how big a 1,000-latent feature browser is and how fast it opens.

1. An activation store: ``--store DIR`` (with ``--sae DIR``), or else SmolLM2-135M's layer
   ``--layer`` residual stream over ``--tokens`` tokens of Shakespeare, written under ``--out``
   (reused when it is already there).
2. An SAE: ``--sae DIR``, or else a random TopK SAE (``--d-sae``, k 32, seeded; b_dec the data
   mean), whose latents fire on a realistic spread of densities.
3. ``collect`` the dashboard data of the first ``--latents`` latents and write the browser with
   ``save_html``; report the file size and the time each step took.
4. Open the file ``--repeats`` times in headless Chromium, each time in a fresh browser process
   (no warm cache), and report time-to-open: from the navigate command to the page's first full
   render (index table and the first latent's dashboard drawn), by Chromium's clock
   (``ready_ms``) and by ours (``wall_ms``). Also the time to switch to another latent.

Targets (issue 8): opens in < 2 s, file < 20 MB.

``--case attribution`` (issue 15) times the attribution-graph view instead: see
:func:`attribution_case`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from interp._io import atomic_write_json

log = logging.getLogger("interp.viz.bench")


def _store_and_sae(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from interp.models import load_model
    from interp.store import ActivationStore
    from saes.config import SAEConfig
    from saes.sae import SAE

    model: Any = load_model(args.model)
    if args.store is not None:
        store = ActivationStore(args.store)
    else:
        from interp.corpus import shakespeare

        store = ActivationStore.write(
            Path(args.out) / f"store_l{args.layer}", model,
            f"blocks.{args.layer}.hook_resid_post", shakespeare(),
            max_tokens=args.tokens, context_size=128, forward_max_tokens=1024,
        )  # fmt: skip
    if args.sae is not None:
        sae = SAE.load(args.sae)
    else:
        sae = SAE(SAEConfig(d_in=store.d(), d_sae=args.d_sae, activation="topk", k=32), seed=0)
        with torch.no_grad():
            sample: Any = next(store.batches(4096, seed=0))
            sample = sample.float()
            sae.b_dec.copy_(sample.mean(0))
    return model, store, sae


def _open_times(path: Path, repeats: int, goto: int) -> dict[str, Any]:
    from interp.viz.chromium import Browser

    ready, wall, switch, errors = [], [], [], []
    for _ in range(repeats):
        with Browser() as browser:
            page = browser.load(path)
            errors += page.console_errors + page.dialogs + page.requests
            if page.ready_ms is None:
                raise RuntimeError(f"{path} never finished its first render: {page}")
            ready.append(page.ready_ms)
            wall.append(page.wall_ms)
            switch.append(
                browser.evaluate(
                    "(() => { const t = performance.now();"
                    f" document.getElementById('features').mechscope.goto({goto});"
                    " return performance.now() - t; })()"
                )
            )
    return {
        "ready_ms": [round(x) for x in ready],
        "wall_ms": [round(x) for x in wall],
        "switch_latent_ms": [round(x, 1) for x in switch],
        "ready_ms_median": round(statistics.median(ready)),
        "wall_ms_median": round(statistics.median(wall)),
        "wall_ms_max": round(max(wall)),
        "console_errors": errors,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from interp.viz.feature_data import collect
    from interp.viz.features import FeatureBrowser
    from interp.viz.html import save_html

    t = time.perf_counter()
    model, store, sae = _store_and_sae(args)
    setup_s = time.perf_counter() - t
    latents = list(range(min(args.latents, sae.cfg.d_sae)))
    t = time.perf_counter()
    data = collect(sae, store, latents=latents, model=model, n_batches=args.n_batches)
    collect_s = time.perf_counter() - t
    out = Path(args.out) / f"feature_browser_{len(latents)}.html"
    t = time.perf_counter()
    save_html(out, FeatureBrowser(data), title=f"{len(latents)} latents · {data.hook}")
    save_s = time.perf_counter() - t
    result = {
        "latents": len(latents),
        "d_sae": sae.cfg.d_sae,
        "store_rows_read": data.n_rows,
        "hook": data.hook,
        "file": str(out),
        "file_mb": round(out.stat().st_size / 1e6, 2),
        "setup_s": round(setup_s, 1),
        "collect_s": round(collect_s, 1),
        "save_html_s": round(save_s, 2),
        **_open_times(out, args.repeats, latents[len(latents) // 2]),
        "targets": {"open_s": 2.0, "file_mb": 20.0},
        "torch_threads": torch.get_num_threads(),
    }
    result["meets_targets"] = result["wall_ms_max"] < 2000 and result["file_mb"] < 20
    atomic_write_json(Path(args.out) / "bench.json", result)
    return result


def attribution_case(args: argparse.Namespace) -> dict[str, Any]:
    """``--case attribution``: the attribution-graph view of a pruned graph of ``--nodes`` nodes
    and ``--edges`` edges (:func:`interp.viz.attribution_sample.synthetic_graph`), opened
    ``--repeats`` times in fresh Chromium processes, beside a page holding only plotly.js and a
    two-point figure (plotly's own start-up, which the graph's time includes); then the time to
    pin the node with the most edges."""
    import plotly.graph_objects as go

    from interp.viz.attribution import AttributionView
    from interp.viz.attribution_sample import synthetic_graph
    from interp.viz.chromium import Browser
    from interp.viz.html import save_html

    graph, pruned = synthetic_graph(args.nodes, args.edges)
    out = Path(args.out) / f"attribution_{args.nodes}_{args.edges}.html"
    t = time.perf_counter()
    view = AttributionView(graph, pruned=pruned, webgl=args.webgl)
    view.save(out)
    save_s = time.perf_counter() - t
    base = save_html(Path(args.out) / "plotly_only.html", go.Figure(go.Scatter(x=[0, 1], y=[0, 1])))
    n = view.data()["nodes"]
    busiest = max(range(len(n["id"])), key=lambda i: n["n_in"][i] + n["n_out"][i])
    wall: list[float] = []
    ready: list[float] = []
    base_wall: list[float] = []
    pin_ms: list[float] = []
    errors: list[str] = []
    for _ in range(args.repeats):
        for path, into in ((out, wall), (base, base_wall)):
            with Browser() as browser:
                page = browser.load(path)
                errors += page.console_errors + page.dialogs + page.requests
                if page.ready_ms is None:
                    raise RuntimeError(f"{path} never finished its first render: {page}")
                into.append(page.wall_ms)
                if path == out:
                    ready.append(page.ready_ms)
                    pin_ms.append(browser.evaluate(
                        "(() => { const t = performance.now(); document.getElementById('attribution')"
                        f".mechscope.pin({json.dumps(n['id'][busiest])}); return performance.now() - t; }})()"
                    ))  # fmt: skip
    result = {
        "case": "attribution", "nodes": len(n["id"]), "edges": len(view.data()["edges"]["w"]),
        "webgl": args.webgl, "file": str(out), "file_mb": round(out.stat().st_size / 1e6, 2),
        "save_html_s": round(save_s, 2), "wall_ms": [round(x) for x in wall],
        "ready_ms": [round(x) for x in ready], "plotly_only_wall_ms": [round(x) for x in base_wall],
        "wall_ms_median": round(statistics.median(wall)), "wall_ms_max": round(max(wall)),
        "plotly_only_wall_ms_median": round(statistics.median(base_wall)),
        "pin_busiest_ms": [round(x, 1) for x in pin_ms], "console_errors": errors,
        "targets": {"open_s": 2.0}, "load_average": list(os.getloadavg()),
    }  # fmt: skip
    result["meets_targets"] = result["wall_ms_max"] < 2000
    atomic_write_json(Path(args.out) / "bench_attribution.json", result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m interp.viz.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--latents", type=int, default=1000)
    parser.add_argument("--store", type=Path, default=None, help="an existing activation store")
    parser.add_argument("--sae", type=Path, default=None, help="a saved SAE (default: random)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32_768)
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--n-batches", type=int, default=None, help="store batches to scan")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/viz_bench"))
    parser.add_argument("--case", choices=("features", "attribution"), default="features")
    parser.add_argument("--nodes", type=int, default=1000, help="attribution case: nodes")
    parser.add_argument("--edges", type=int, default=10_000, help="attribution case: edges")
    parser.add_argument("--webgl", action="store_true", help="attribution case: scattergl")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    result = attribution_case(args) if args.case == "attribution" else run(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
