"""Train a set of MLP transcoders, one per layer, for a model:
``python -m saes.transcoders [--model smollm2-135m] [--layers 0,5,10] [--out DIR]``.

One pass of the model over Shakespeare caches the MLP input and output
(``blocks.L.ln2.hook_normalized``, ``blocks.L.hook_mlp_out``) of every layer still to train, as
many layers per pass as ``--cache-gb`` holds (bfloat16; the forward stops after the pass's last
layer). Then, layer by layer, the shared :class:`~saes.trainer.Trainer` trains a TopK transcoder
on shuffled pairs of those rows, and :func:`saes.evals.ce_loss_recovered` and
:func:`saes.evals.evaluate_reconstruction` measure it on held-out contexts (text after the
training text). Position 0 of every context (the BOS, where SmolLM2 and many models keep an
input-independent attention sink of huge norm) is left out of the training and evaluation rows
and left unspliced in the CE loss, as SAE practice does; ``--keep-position-0`` keeps it. In an
attribution graph that position is an error node (:func:`interp.circuits.attribute`'s
``skip_position_0``). A layer's result does not depend on how many layers share its pass. Each layer
is saved as ``OUT/layer_LL/`` (written beside, then renamed) and the quality table,
``quality.json`` and ``quality.md``, is rewritten after each layer, so a killed run keeps what it
finished and a rerun skips finished layers. ``OUT`` defaults to
``$MECHSCOPE_CACHE/transcoders/<model>/``; read the set back with
:func:`saes.transcoder.load_transcoders`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Iterator, Sequence
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

__all__ = ["cache_pairs", "main", "plan_passes", "train_layer", "train_set"]

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


def plan_passes(
    layers: Sequence[int], n_rows: int, d_model: int, max_bytes: float, per_pass: int | None = None
) -> list[list[int]]:
    """Split ``layers`` into forward passes whose cached pairs (``n_rows`` tokens × input and
    output × ``d_model`` × 2 bytes per layer) fit ``max_bytes``, at most ``per_pass`` layers each.

    >>> plan_passes([1, 2, 4, 5, 7], n_rows=1000, d_model=64, max_bytes=600_000)
    [[1, 2], [4, 5], [7]]
    """
    per_layer = n_rows * 2 * d_model * 2
    if per_layer > max_bytes:
        raise ConfigError(
            f"one layer's cached pairs take {per_layer / 1e9:.2f} GB ({n_rows:,} train + eval "
            f"tokens × 2 hooks × {d_model} × 2 bytes), over --cache-gb {max_bytes / 1e9:g}: "
            f"raise --cache-gb or lower --train-tokens / --eval-tokens"
        )
    k = int(max_bytes // per_layer)
    k = k if per_pass is None else min(k, per_pass)
    return [list(layers[i : i + k]) for i in range(0, len(layers), k)]


def cache_pairs(
    model: Any, layers: Sequence[int], tokens: Tensor, max_tokens: int, *, first: int = 0
) -> dict[int, tuple[Tensor, Tensor]]:
    """Each layer's MLP input and output rows ``[n, d_model]`` (bfloat16) at positions ``first``
    onward of each context, one pass for all layers: a forward per chunk of ``max_tokens``,
    stopping after the last layer."""
    from interp.cache import cache_activations
    from interp.core.forward import rows_for

    hooks = [h for layer in layers for h in mlp_hooks(layer)]
    rows: dict[str, Tensor] = {}
    n_rows = len(tokens) * (tokens.shape[1] - first)
    at = 0
    for chunk in tokens.split(rows_for(max_tokens, tokens.shape[1])):
        cache = cache_activations(
            model, chunk, hooks, positions=slice(first, None), dtype=torch.bfloat16, device="cpu"
        )
        for h in hooks:  # filled in place: no second copy from concatenating the chunks
            act = cache[h].flatten(0, 1)
            if h not in rows:
                rows[h] = torch.empty(n_rows, act.shape[-1], dtype=act.dtype)
            rows[h][at : at + len(act)] = act
        at += len(act)
    return {layer: (rows[mlp_hooks(layer)[0]], rows[mlp_hooks(layer)[1]]) for layer in layers}


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
    model: Any,
    layer: int,
    train_tokens: Tensor,
    eval_tokens: Tensor,
    args: argparse.Namespace,
    *,
    pairs: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> tuple[Transcoder, dict[str, Any]]:
    """One layer's transcoder and its row of the quality table. ``pairs``: the layer's train and
    eval rows ``(x, y, eval_x, eval_y)`` from :func:`cache_pairs`; cached here when not given."""
    from interp.models import model_fingerprint
    from saes.evals import ce_loss_recovered, evaluate_reconstruction
    from saes.trainer import Trainer

    start = time.perf_counter()
    first = _first(args)
    if pairs is None:
        pairs = (
            *cache_pairs(model, [layer], train_tokens, args.forward_tokens, first=first)[layer],
            *cache_pairs(model, [layer], eval_tokens, args.forward_tokens, first=first)[layer],
        )
    x, y, ex, ey = pairs
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
    rec = evaluate_reconstruction(
        tc, zip(ex.float().split(4096), ey.float().split(4096), strict=True)
    )
    # Dropped from training, position 0 stays unspliced here too (its MLP output is kept), as it
    # is an error node in a graph; kept, it is spliced unless it holds the BOS (the default).
    ce = ce_loss_recovered(
        model, tc, mlp_hooks(layer)[1], eval_tokens, max_tokens=args.forward_tokens,
        skip_bos=True if first else None,
    )  # fmt: skip
    row = {
        "layer": layer, "l0": rec.l0, "fvu": rec.fvu, "ce_loss_recovered": ce.loss_recovered,
        "kl": ce.kl_sae, "dead_fraction": rec.dead_fraction, "train_tokens": len(x),
        "eval_tokens": rec.n_tokens, "wall_s": time.perf_counter() - start,
        "cache_s": cached - start, "train_s": trained - cached, "steps": steps,
        "ce_clean": ce.ce_clean, "ce_spliced": ce.ce_sae, "ce_zero_ablated": ce.ce_zero,
        "kl_zero_ablated": ce.kl_zero,
    }  # fmt: skip
    return cast(Transcoder, tc), row


def _first(args: argparse.Namespace) -> int:
    """The first position of each context in the rows: 1 unless ``--keep-position-0``."""
    return 0 if getattr(args, "keep_position_0", False) else 1


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


def train_set(
    model: Any,
    layers: Sequence[int],
    train_tokens: Tensor,
    eval_tokens: Tensor,
    out: Path,
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Train ``layers`` into the set at ``out``, skipping finished ones unless ``args.redo``; the
    quality table, by layer. Pending layers are cached ``plan_passes`` at a time; each finished
    layer is saved and tabulated before the next starts."""
    settings = {k: getattr(args, k) for k in ("model", "d_sae", "k", "epochs", "batch_size", "lr",
                                               "context_size", "seed")}  # fmt: skip
    settings["position_0"] = "kept" if _first(args) == 0 else "dropped"
    old = read_json(out / QUALITY) if (out / QUALITY).exists() else {}
    table = old.get("layers", {})
    was = old.get("settings", {}).get("position_0", "kept")  # sets before the option kept it
    if table and was != settings["position_0"]:
        raise ConfigError(
            f"{out} holds layers trained with position 0 {was}; this run has it "
            f"{settings['position_0']}: use another --out (a set is one rule)"
        )
    todo = []
    for layer in layers:
        if not args.redo and (out / layer_dirname(layer)).is_dir() and str(layer) in table:
            load_transcoders(model, out, layers=[layer])  # a finished layer of this model
            print(f"layer {layer}: already in {out}, skipped (--redo retrains)")
        else:
            todo.append(layer)
    n_rows = train_tokens.numel() + eval_tokens.numel()
    passes = plan_passes(
        todo, n_rows, int(model.cfg.d_model), args.cache_gb * 1e9, args.layers_per_pass
    )
    for group in passes:
        start = time.perf_counter()
        first = _first(args)
        train = cache_pairs(model, group, train_tokens, args.forward_tokens, first=first)
        held = cache_pairs(model, group, eval_tokens, args.forward_tokens, first=first)
        cache_s = (time.perf_counter() - start) / len(group)  # each layer's share of the pass
        for layer in group:
            pairs = (*train.pop(layer), *held.pop(layer))  # popped: freed once trained
            tc, row = train_layer(model, layer, train_tokens, eval_tokens, args, pairs=pairs)
            row["cache_s"], row["wall_s"] = cache_s, row["wall_s"] + cache_s
            row["layers_per_pass"] = len(group)
            save_to_set(tc, out, layer)
            table[str(layer)] = row
            rows = [table[k] for k in sorted(table, key=int)]
            atomic_write_json(out / QUALITY, {"settings": settings, "layers": table})
            atomic_write_bytes(out / "quality.md", markdown(rows, settings).encode())
            print(
                f"layer {layer}: L0 {row['l0']:.1f}, FVU {row['fvu']:.3f}, CE recovered "
                f"{100 * row['ce_loss_recovered']:.1f}%, KL {row['kl']:.4f}, dead "
                f"{100 * row['dead_fraction']:.1f}%, {row['wall_s']:.0f} s (cache {cache_s:.0f} s "
                f"as 1/{len(group)} of a pass, train {row['train_s']:.0f} s)",
                flush=True,
            )
    return table


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
    p.add_argument("--cache-gb", type=float, default=4.0,
                   help="memory for the cached pairs of one pass (bfloat16)")  # fmt: skip
    p.add_argument("--layers-per-pass", type=int, help="at most this many layers per pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-position-0", action="store_true",
                   help="train and evaluate on position 0 of each context too (default: dropped)")  # fmt: skip
    p.add_argument("--redo", action="store_true", help="retrain layers already in the folder")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    if args.cache_gb <= 0 or (args.layers_per_pass is not None and args.layers_per_pass < 1):
        p.error("--cache-gb must be > 0 and --layers-per-pass >= 1")
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
        n_rows = (n_train + n_eval) * args.context_size
        plan_passes([0], n_rows, int(model.cfg.d_model), args.cache_gb * 1e9)  # fits one layer?
        train_toks, eval_toks = _contexts(model, args.context_size, n_train, n_eval)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        train_set(model, layers, train_toks, eval_toks, out, args)
    except ConfigError as err:  # a folder trained under the other position-0 rule
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"saved under {out}: load with saes.transcoder.load_transcoders(model, {str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
