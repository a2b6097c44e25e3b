"""``python -m interp.demo``: the main job on the embedded default, end to end and offline.

1. Load the offline SmolLM2-135M-Instruct (converted once, then cached).
2. Cache one layer's residual stream over Shakespeare into an on-disk ActivationStore (resumable:
   run it again and it continues where it stopped, or returns at once when complete).
3. Print a summary: rows, shards, bytes, throughput, a spot check of stored rows against a fresh
   forward pass, and a first look at what the layer carries.
4. Train a TopK SAE on that store and evaluate it on held-out plays: L0, explained variance,
   CE loss recovered with the SAE spliced into the model, dead and dense latents.
5. The toy induction model: its induction and previous-token heads, found from attention patterns.
6. A feature browser for the SAE (``feature_browser.html``).
7. Circuits: the IOI patching study on SmolLM2 and the induction study on the toy model, with a
   circuit dashboard (``circuits.html``): heatmaps with CIs, attribution vs exact, edge graph.
8. Steering: the steering study on SmolLM2.
9. Feature circuits: MLP transcoders at a few layers (trained quickly once, cached under
   ``$MECHSCOPE_CACHE/transcoders/``; every other MLP is an error node), the attribution graph
   of "The capital of France is" -> " Paris", pruned, scored, tested by interventions, its top
   features patched as cells (France -> Italy), and the view ``attribution_graph.html``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("interp.demo")

STAGES = (
    "load SmolLM2",
    "activation store",
    "SAE training and eval",
    "toy induction model",
    "feature browser",
    "circuit studies",
    "steering study",
    "feature circuits",
)

# The feature-circuit stage's transcoders: small and quickly trained (about a minute a layer on
# this CPU), enough to build and test a graph, too weak to read features off (docs/circuits.md).
CIRCUIT_LAYERS = (0, 3, 6)
TRANSCODER_ARGS = ("--d-sae", "2048", "--k", "32", "--train-tokens", "16384", "--eval-tokens",
                   "1024", "--epochs", "2")  # fmt: skip
NODE_THRESHOLD = 0.9
PARIS, ITALY = "The capital of France is", "The capital of Italy is"


class _Timer:
    """Numbered stage banners as the demo goes, and a table of stage times at the end."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self.current: str | None = None
        self.start = time.perf_counter()
        self.t = self.start

    def stage(self, name: str) -> None:
        self._close()
        self.current = name
        print(f"\n[{STAGES.index(name) + 1}/{len(STAGES)}] {name} ...", flush=True)

    def _close(self) -> None:
        now = time.perf_counter()
        if self.current:
            self.times.append((self.current, now - self.t))
        self.t, self.current = now, None

    def report(self) -> None:
        self._close()
        print("\n== stage times")
        for name, secs in self.times:
            print(f"  {name:<24} {secs:7.0f} s")
        print(f"  {'total':<24} {time.perf_counter() - self.start:7.0f} s")


def _store_summary(model: Any, store_path: Path, layer: int, tokens: int) -> None:
    from interp.cache import cache_activations
    from interp.corpus import shakespeare
    from interp.store import ActivationStore

    hook = f"blocks.{layer}.hook_resid_post"
    t = time.perf_counter()
    store = ActivationStore.write(
        store_path,
        model,
        hook,
        shakespeare(),
        max_tokens=tokens,
        context_size=128,
        forward_max_tokens=1024,
        progress=True,
    )
    seconds = time.perf_counter() - t
    size = sum(f.stat().st_size for f in store_path.rglob("*") if f.is_file())
    print(f"\n== ActivationStore at {store_path}")
    print(
        f"hook {hook}: {len(store):,} rows x d={store.d()} ({store.manifest['dtype']}), "
        f"{len(store.shards)} shards, {size / 2**20:.1f} MiB on disk"
    )
    print(
        f"written in {seconds:.1f} s ({len(store) / max(seconds, 1e-9):,.0f} tokens/s; 0 s means it was already complete)"
    )
    print(
        f"data: {store.manifest['data']['name']} sha256 {str(store.manifest['data'].get('sha256'))[:16]}..., "
        f"model fingerprint {store.manifest['model']['fingerprint'][:16]}..."
    )
    store.verify()
    print("all shard checksums verified")

    # Spot check: the stored rows of one context equal a fresh forward pass.
    batch = store.rows(torch.arange(127))
    context = store.context(int(batch.seq_ids[0]))
    fresh = cache_activations(model, context[None], hook, positions=slice(1, None))[hook][0]
    err = (fresh - batch.acts.float()).abs().max().item()
    print(
        f"stored rows vs fresh forward on context {int(batch.seq_ids[0])}: max |diff| = {err:.2e}"
    )

    acts: Any = next(store.batches(8192, seed=0, with_meta=True))
    norms = acts.acts.float().norm(dim=-1)
    print(
        f"residual norm over a shuffled batch: mean {norms.mean():.1f}, std {norms.std():.1f}, max {norms.max():.1f}"
    )
    top = norms.topk(5).indices
    tok = model.tokenizer
    words = [repr(tok.decode([int(acts.token_ids[i])])) for i in top]
    print("tokens with the largest residual norm:", ", ".join(words))


def _sae_summary(model: Any, out: Path, layer: int, steps: int) -> None:
    from interp.corpus import shakespeare
    from interp.store import ActivationStore
    from saes.evals import evaluate
    from saes.run import train_run
    from saes.sae import SAE

    hook = f"blocks.{layer}.hook_resid_post"
    run_dir = out / f"sae_l{layer}"
    cfg = {
        "run_dir": str(run_dir),
        "sae": {"d_sae": 2304, "activation": "topk", "k": 32},
        "train": {
            "total_steps": steps,
            "batch_size": 1024,
            "lr": 1e-3,
            "lr_warmup_steps": 20,
            "lr_decay_steps": steps // 5,
            "log_every": 25,
            "checkpoint_every": 100,
            "dead_after_tokens": 100_000,
        },
        "data": {"store": str(out / f"store_l{layer}")},
    }
    t = time.perf_counter()
    if not (run_dir / "final" / "sae.safetensors").exists():
        train_run(cfg, resume=(run_dir / "checkpoints" / "latest").exists(), progress=True)
    sae = SAE.load(run_dir / "final")
    print(
        f"\n== TopK SAE (d_sae {sae.cfg.d_sae}, k {sae.cfg.k}) on {hook}: {steps} steps x 1024 vectors, "
        f"{time.perf_counter() - t:.0f} s -> {run_dir}"
    )
    held_out = ActivationStore.write(
        out / f"heldout_l{layer}",
        model,
        hook,
        shakespeare(first_doc=36),
        max_tokens=8192,
        context_size=128,
        forward_max_tokens=1024,
    )
    report = evaluate(sae, held_out, model, batch_size=2048, n_ce_contexts=16)
    r, ce = report.reconstruction, report.ce
    print(
        f"held-out plays ({len(held_out):,} tokens): L0 {r.l0:.1f}, explained variance {r.explained_variance:.3f}, "
        f"cosine {r.cosine_similarity:.3f}, dead {r.dead_fraction:.1%}, dense {r.dense_fraction:.1%}"
    )
    if ce is not None:
        print(
            f"CE loss: clean {ce.ce_clean:.3f}, with SAE {ce.ce_sae:.3f}, zero-ablated {ce.ce_zero:.3f} nats "
            f"-> loss recovered {ce.loss_recovered:.3f}; KL(clean || SAE) {ce.kl_sae:.3f}"
        )


def _toy_summary() -> None:
    from interp.models import load_model
    from interp.toy import head_scores, induction_loss, repeated_random_tokens

    model: Any = load_model("toy-induction")
    g = torch.Generator().manual_seed(1234)
    cfg = model.cfg
    tokens = repeated_random_tokens(64, (cfg.n_ctx - 1) // 2, vocab=cfg.d_vocab, bos=0, generator=g)
    scores = head_scores(model, tokens)
    loss = induction_loss(model, tokens)
    print("\n== Toy 2-layer attention-only model (interp/assets/toy_induction)")
    (il, ih), ind = scores.best_induction()
    (pl, ph), prev = scores.best_previous_token()
    print(
        f"best induction head L{il}H{ih} (score {ind:.2f}); best previous-token head L{pl}H{ph} (score {prev:.2f})"
    )
    print(f"loss on the first repeat {loss.first:.2f} nats, on the second {loss.second:.3f} nats")


def _feature_browser(model: Any, out: Path, layer: int) -> None:
    from interp.viz import demo_views

    page, sae = out / "feature_browser.html", out / f"sae_l{layer}" / "final" / "sae.safetensors"
    if page.exists() and page.stat().st_mtime > sae.stat().st_mtime:  # built from this SAE
        print(f"\n== feature browser (reused; delete it to rebuild): {page}")
        return
    t = time.perf_counter()
    paths = demo_views(
        out / f"sae_l{layer}", out / f"store_l{layer}", out, model=model, n_batches=16
    )
    print(f"\n== feature browser ({time.perf_counter() - t:.0f} s): {', '.join(map(str, paths))}")


def _circuits(model: Any, out: Path) -> None:
    from interp.patching.study import STUDY_FILE, StudyResult, induction_study, ioi_study
    from interp.viz import save_html

    t = time.perf_counter()
    runs = {
        "ioi": lambda: ioi_study(model, n_prompts=16, quick=True),
        "induction": induction_study,
    }
    studies = []
    for key, run in runs.items():
        folder = out / "circuits" / key
        if (folder / STUDY_FILE).exists():  # a complete study from an earlier run
            study = StudyResult.load(folder)
            print(f"\n(reused from {folder}; delete it to recompute)")
        else:
            study = run()
            study.save(folder)
        print(study.summary())
        studies.append(study)
    figs = [f for s in studies for f in s.figures()]
    path = save_html(out / "circuits.html", *figs, title="mechscope circuits")
    print(f"circuit dashboard ({time.perf_counter() - t:.0f} s): {path}")


def _steering(model: Any, out: Path) -> None:
    from interp.steering.study import run_study

    folder = out / "steering"
    if (folder / "run.json").exists() and (folder / "summary.txt").exists():  # run.json: last
        print((folder / "summary.txt").read_text().rstrip())
        print(f"(reused from {folder}; delete it to recompute)")
        return
    t = time.perf_counter()
    study = run_study(model, quick=True)
    print("\n" + study.summary())
    study.save(folder)
    print(f"steering study ({time.perf_counter() - t:.0f} s) -> {folder}")


def _demo_transcoders(model: Any, layers: tuple[int, ...]) -> tuple[Path, dict[int, Any]]:
    """The stage's transcoder set, trained by ``python -m saes.transcoders`` where missing."""
    from interp._io import read_json
    from interp.models import cache_root
    from saes import transcoders as script
    from saes.transcoder import load_transcoders

    # "-2": trained without position 0 (saes.transcoders default since 2026-12-07); a set made
    # under the older rule stays where it is and is not mixed in.
    folder = cache_root() / "transcoders" / "smollm2-135m-demo-2"
    quality = folder / script.QUALITY
    done = read_json(quality)["layers"] if quality.exists() else {}
    todo = [layer for layer in layers if str(layer) not in done]
    if todo:
        argv = ["--layers", ",".join(map(str, todo)), "--out", str(folder), *TRANSCODER_ARGS]
        if script.main(argv) != 0:
            raise RuntimeError(f"python -m saes.transcoders {' '.join(argv)} failed")
    else:
        print(f"(transcoders reused from {folder}; delete it to retrain)")
    table = read_json(quality)["layers"]
    for layer in layers:
        r = table[str(layer)]
        print(
            f"layer {layer} transcoder: L0 {r['l0']:.1f}, FVU {r['fvu']:.3f}, CE loss recovered "
            f"{100 * r['ce_loss_recovered']:.1f}%, dead {100 * r['dead_fraction']:.1f}%"
        )
    return folder, load_transcoders(model, folder, layers=list(layers))


def _feature_circuits(model: Any, out: Path, layers: tuple[int, ...] = CIRCUIT_LAYERS) -> None:
    from interp.circuits import AttributionGraph, attribute, node_influence, target_tokens
    from interp.circuits.cells import patch_features
    from interp.circuits.validate import check_interventions, feature_nodes
    from interp.metrics import logit_diff
    from interp.viz import AttributionView

    t = time.perf_counter()
    _, tcs = _demo_transcoders(model, layers)
    others = [i for i in range(model.cfg.n_layers) if i not in tcs]
    print(f"transcoders at layers {sorted(tcs)}; the other {len(others)} MLPs are error nodes")
    folder, page = out / "feature_circuits" / "paris", out / "attribution_graph.html"
    paris, rome = target_tokens(model, [" Paris", " Rome"])
    if (folder / "graph.json").exists() and page.exists():
        g = AttributionGraph.load(folder, model=model)
        print(f"(graph reused from {folder}; delete it to rebuild)")
    else:
        g = attribute(model, PARIS, tcs, targets=[paris],
                      max_feature_nodes=256, batch_size=32)  # fmt: skip
        g.save(folder, overwrite=True)
    replacement, completeness = g.scores()
    infl = node_influence(g.adjacency, g.logit_weights)
    share = [float(infl[a:b].sum() / infl.sum()) for a, b in
             ((0, g.n_features), (g.error_start, g.token_start), (g.token_start, g.logit_start))]  # fmt: skip
    print(
        f"\n== attribution graph {g.prompt!r} -> ' Paris' (p = {float(g.logit_probabilities[0]):.3f})"
        f": {g.n_features} feature nodes of {len(g.active_features)} active, {g.n_errors} error "
        f"nodes, {len(g.tokens)} tokens; {int((g.adjacency != 0).sum()):,} edges; "
        f"{g.backward_passes} backward passes, {g.seconds:.1f} s"
    )
    print(
        f"replacement score {replacement:.3f}, completeness {completeness:.3f}; influence on the "
        f"logit: features {share[0]:.3f}, error nodes {share[1]:.3f}, tokens {share[2]:.3f}"
    )
    # With most MLPs error nodes, circuit-tracer's node threshold (0.8) can keep no feature at
    # all; the view uses 0.9, and says so.
    for threshold in (0.8, NODE_THRESHOLD):
        p = g.prune(threshold, 0.98)
        print(
            f"pruned at node threshold {threshold} (edges 0.98): {int(p.node_mask.sum())} nodes "
            f"({int(p.node_mask[: g.n_features].sum())} features), {int(p.edge_mask.sum()):,} edges"
        )
    pruned = p
    top = infl[: g.n_features].argsort(descending=True)[:5]
    acts = g.activation_values[g.selected_features]
    print("top features by influence on the logit:")
    for i in top.tolist():
        layer, pos, f = g.feature_table[i].tolist()
        print(
            f"  F{layer}.{f}@{pos} ({g.token_strings[pos]!r}): activation {float(acts[i]):.2f}, "
            f"influence {float(infl[i]):.4f}"
        )
    chk = check_interventions(model, g, tcs, n=10, fraction=0.1)
    print(
        f"10% ablations of the 10 most influential features, predicted vs measured change of the "
        f"logit: r = {chk.correlation_replacement:.3f} (replacement model), "
        f"{chk.correlation_frozen:.3f} (real model, attention and norms frozen), "
        f"{chk.correlation_real:.3f} (real model)"
    )
    # Cells: the graph's 5 most influential features from the first position where the prompts
    # differ (before it both runs are the same, so a cell there changes nothing).
    clean, corrupt = model.to_tokens(PARIS), model.to_tokens(ITALY)
    first = int((clean != corrupt).int().argmax())
    keep = g.feature_table[:, 1] >= first
    cells = infl[: g.n_features].masked_fill(~keep, -1).argsort(descending=True)[:5]
    mask = torch.zeros(g.n_features, dtype=torch.bool)
    mask[cells] = True
    nodes = feature_nodes(g, mask)
    metric = functools.partial(logit_diff, correct=paris, incorrect=rome)
    res = patch_features(model, clean, corrupt, metric, features=nodes, transcoders=tcs,
                         direction="noise")  # fmt: skip
    print(
        f"noising each of {len(nodes)} graph features with its value on {ITALY!r} "
        f"(logit ' Paris' - ' Rome'; clean {float(res.clean[0]):.3f}, corrupt "
        f"{float(res.corrupt[0]):.3f}): "  # type: ignore[index]
        + ", ".join(
            f"{lab} {float(v):.3f}"
            for lab, v in zip(res.labels["feature"], res.values[0], strict=True)
        )
    )
    title = f"The capital of France is -> Paris (node threshold {NODE_THRESHOLD})"
    path = AttributionView(g, pruned=pruned, title=title).save(page)
    print(f"attribution graph view ({time.perf_counter() - t:.0f} s): {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m interp.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", type=int, default=65_536, help="tokens of Shakespeare to cache")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--sae-steps", type=int, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from interp.models import load_model

    timer = _Timer()
    timer.stage("load SmolLM2")
    t = time.perf_counter()
    model: Any = load_model("smollm2-135m")
    cfg = model.cfg
    print(
        f"== {cfg.model_name}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads "
        f"({cfg.n_key_value_heads} KV), vocab {cfg.d_vocab}; loaded in {time.perf_counter() - t:.1f} s"
    )
    prompt = "The capital of France is"
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=4, do_sample=False, verbose=False)
    print(f"{prompt!r} -> {out!r}")
    timer.stage("activation store")
    _store_summary(model, args.out / f"store_l{args.layer}", args.layer, args.tokens)
    timer.stage("SAE training and eval")
    _sae_summary(model, args.out, args.layer, args.sae_steps)
    timer.stage("toy induction model")
    _toy_summary()
    timer.stage("feature browser")
    _feature_browser(model, args.out, args.layer)
    timer.stage("circuit studies")
    _circuits(model, args.out)
    timer.stage("steering study")
    _steering(model, args.out)
    timer.stage("feature circuits")
    _feature_circuits(model, args.out)
    timer.report()


if __name__ == "__main__":
    main()
