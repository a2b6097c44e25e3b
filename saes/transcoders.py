"""Train a set of MLP transcoders, one per layer, for a model:
``python -m saes.transcoders [--model smollm2-135m] [--layers 0,5,10] [--out DIR]``.

Per layer: one pass of the model over Shakespeare caches the MLP's input and output
(``blocks.L.ln2.hook_normalized``, ``blocks.L.hook_mlp_out``; the forward stops after layer L),
the shared :class:`~saes.trainer.Trainer` trains a TopK transcoder on shuffled pairs of those
rows, and :func:`saes.evals.ce_loss_recovered` and :func:`saes.evals.evaluate_reconstruction`
measure it on held-out contexts (text after the training text). Each layer is saved as
``OUT/layer_LL/`` (written beside, then renamed) and the quality table, ``quality.json`` and
``quality.md``, is rewritten after each layer, so a killed run keeps what it finished and a rerun
skips finished layers. ``OUT`` defaults to ``$MECHSCOPE_CACHE/transcoders/<model>/``; read the
set back with :func:`saes.transcoder.load_transcoders`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from interp._io import atomic_write_bytes, atomic_write_json, read_json
from saes.config import ConfigError, SAEConfig, TrainConfig
from saes.transcoder import (
    Transcoder,
    layer_dirname,
    load_transcoders,
    mlp_hooks,
    mlp_metadata,
    save_to_set,
)

__all__ = ["main", "train_layer"]

QUALITY = "quality.json"
COLUMNS = ("layer", "l0", "fvu", "ce_loss_recovered", "kl", "dead_fraction", "train_tokens",
           "eval_tokens", "wall_s")  # fmt: skip


def _contexts(model: Any, context_size: int, n_train: int, n_eval: int) -> tuple[Tensor, Tensor]:
    """Training contexts, then held-out ones (the text that follows them)."""
    from interp.corpus import shakespeare, token_sequences

    seqs = itertools.islice(
        token_sequences(shakespeare(), model.tokenizer, context_size), n_train + n_eval
    )
    toks = torch.stack(list(seqs))
    if len(toks) < n_train + n_eval:
        raise ConfigError(
            f"the corpus gave {len(toks)} contexts of {context_size} tokens; asked for "
            f"{n_train} + {n_eval}: ask for fewer tokens"
        )
    return toks[:n_train], toks[n_train:]


def _cache_pairs(model: Any, layer: int, tokens: Tensor, max_tokens: int) -> tuple[Tensor, Tensor]:
    """MLP input and output rows ``[n, d_model]`` (bfloat16) of every token, one pass."""
    from interp.cache import cache_activations
    from interp.core.forward import rows_for

    hooks = list(mlp_hooks(layer))
    xs, ys = [], []
    for chunk in tokens.split(rows_for(max_tokens, tokens.shape[1])):
        cache = cache_activations(model, chunk, hooks, dtype=torch.bfloat16, device="cpu")
        xs.append(cache[hooks[0]].flatten(0, 1))
        ys.append(cache[hooks[1]].flatten(0, 1))
    return torch.cat(xs), torch.cat(ys)


def _shuffled(x: Tensor, y: Tensor, batch_size: int, seed: int) -> Any:
    """``skip -> iterator`` of (x, y) float32 batches, a seeded permutation per epoch."""

    def batches(skip: int) -> Iterator[tuple[Tensor, Tensor]]:
        per_epoch = len(x) // batch_size
        for epoch in itertools.count(skip // per_epoch):
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + epoch))
            first = skip - epoch * per_epoch if epoch == skip // per_epoch else 0
            for b in range(max(first, 0), per_epoch):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                yield x[idx].float(), y[idx].float()

    return batches


def train_layer(
    model: Any, layer: int, train_tokens: Tensor, eval_tokens: Tensor, args: argparse.Namespace
) -> tuple[Transcoder, dict[str, Any]]:
    """One layer's transcoder and its row of the quality table."""
    from interp.models import model_fingerprint
    from saes.evals import ce_loss_recovered, evaluate_reconstruction
    from saes.trainer import Trainer

    start = time.perf_counter()
    x, y = _cache_pairs(model, layer, train_tokens, args.forward_tokens)
    cached = time.perf_counter()
    meta = mlp_metadata(
        layer, model=args.model, fingerprint=model_fingerprint(model),
        model_class=type(model).__name__,
    )  # fmt: skip
    cfg = SAEConfig(d_in=x.shape[1], d_sae=args.d_sae, k=args.k, d_out=y.shape[1], metadata=meta)
    steps = math.ceil(args.epochs * len(x) / args.batch_size)
    train = TrainConfig(
        total_steps=steps, batch_size=args.batch_size, lr=args.lr, lr_decay_steps=steps // 5,
        dead_after_tokens=min(len(x), 1_000_000), log_every=max(1, steps // 20), seed=args.seed,
    )  # fmt: skip
    tc = Trainer(train, Transcoder(cfg, seed=args.seed), _shuffled(x, y, args.batch_size, 0),
                 device="cpu", progress=args.progress).fit()  # fmt: skip
    trained = time.perf_counter()
    ex, ey = _cache_pairs(model, layer, eval_tokens, args.forward_tokens)
    rec = evaluate_reconstruction(
        tc, zip(ex.float().split(4096), ey.float().split(4096), strict=True)
    )
    ce = ce_loss_recovered(
        model, tc, mlp_hooks(layer)[1], eval_tokens, max_tokens=args.forward_tokens
    )
    row = {
        "layer": layer, "l0": rec.l0, "fvu": rec.fvu, "ce_loss_recovered": ce.loss_recovered,
        "kl": ce.kl_sae, "dead_fraction": rec.dead_fraction, "train_tokens": len(x),
        "eval_tokens": rec.n_tokens, "wall_s": time.perf_counter() - start,
        "cache_s": cached - start, "train_s": trained - cached, "steps": steps,
        "ce_clean": ce.ce_clean, "ce_spliced": ce.ce_sae, "ce_zero_ablated": ce.ce_zero,
        "kl_zero_ablated": ce.kl_zero,
    }  # fmt: skip
    return cast(Transcoder, tc), row


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The quality table as Markdown."""
    head = ["layer", "L0", "FVU", "CE loss recovered", "KL (nats)", "dead", "train tokens",
            "eval tokens", "wall (s)"]  # fmt: skip
    lines = [
        f"Transcoders for {settings['model']}: "
        + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "model"),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['l0']:.1f} | {r['fvu']:.3f} | {100 * r['ce_loss_recovered']:.1f}% "
            f"| {r['kl']:.4f} | {100 * r['dead_fraction']:.1f}% | {r['train_tokens']:,} "
            f"| {r['eval_tokens']:,} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m saes.transcoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", help="comma-separated layers (default: every layer)")
    p.add_argument("--out", help="the set's folder (default $MECHSCOPE_CACHE/transcoders/MODEL)")
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--train-tokens", type=int, default=262_144, help="cached per layer")
    p.add_argument("--eval-tokens", type=int, default=8192, help="held out")
    p.add_argument("--context-size", type=int, default=128)
    p.add_argument("--epochs", type=float, default=4.0, help="passes over the cached tokens")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--forward-tokens", type=int, default=4096, help="tokens per model forward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--redo", action="store_true", help="retrain layers already in the folder")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    from interp.models import cache_root, load_model

    out = Path(args.out) if args.out else cache_root() / "transcoders" / args.model
    try:
        model = load_model(args.model)
        n = int(model.cfg.n_layers)
        layers = list(range(n)) if not args.layers else [int(s) for s in args.layers.split(",")]
        bad = [layer for layer in layers if not 0 <= layer < n]
        if bad:
            raise ConfigError(f"layers {bad} are not in {args.model}: it has layers 0-{n - 1}")
        SAEConfig(d_in=8, d_sae=args.d_sae, k=args.k)  # bad sizes fail before any forward
        n_train = -(-args.train_tokens // args.context_size)
        n_eval = -(-args.eval_tokens // args.context_size)
        train_toks, eval_toks = _contexts(model, args.context_size, n_train, n_eval)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    settings = {k: getattr(args, k) for k in ("model", "d_sae", "k", "epochs", "batch_size", "lr",
                                               "context_size", "seed")}  # fmt: skip
    table = read_json(out / QUALITY)["layers"] if (out / QUALITY).exists() else {}
    for layer in layers:
        if not args.redo and (out / layer_dirname(layer)).is_dir() and str(layer) in table:
            load_transcoders(model, out, layers=[layer])  # a finished layer of this model
            print(f"layer {layer}: already in {out}, skipped (--redo retrains)")
            continue
        tc, row = train_layer(model, layer, train_toks, eval_toks, args)
        save_to_set(tc, out, layer)
        table[str(layer)] = row
        rows = [table[k] for k in sorted(table, key=int)]
        atomic_write_json(out / QUALITY, {"settings": settings, "layers": table})
        atomic_write_bytes(out / "quality.md", markdown(rows, settings).encode())
        print(
            f"layer {layer}: L0 {row['l0']:.1f}, FVU {row['fvu']:.3f}, CE recovered "
            f"{100 * row['ce_loss_recovered']:.1f}%, KL {row['kl']:.4f}, dead "
            f"{100 * row['dead_fraction']:.1f}%, {row['wall_s']:.0f} s "
            f"(cache {row['cache_s']:.0f} s, train {row['train_s']:.0f} s)",
            flush=True,
        )
    print(f"saved under {out}: load with saes.transcoder.load_transcoders(model, {str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
