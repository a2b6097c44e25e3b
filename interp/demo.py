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
"""

from __future__ import annotations

import argparse
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
)


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
    timer.report()


if __name__ == "__main__":
    main()
