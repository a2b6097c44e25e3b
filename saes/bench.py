"""Training throughput: mechscope's TopK ``Trainer.train_step`` vs SAELens's TopK ``SAETrainer``.

    python -m saes.bench [--steps 10] [--warmup 2] [--d-in 576] [--d-sae 4608] [--k 32] [--batch 4096]

Both trainers run in the same process on the same fixed batches held in memory, interleaved step
by step (which one goes first alternates), with warm-up steps excluded; the table reports medians.
Matched settings: Adam with the same lr and betas, gradient clipping at norm 1, fp32 without
autocast, no W&B, a constant lr. The aux-k loss is off in both by default (coefficient 0 and no
latent can count as dead); ``--aux`` turns it on in both with the same definition of dead (did not
fire in the previous step), k_aux = d_in // 2 and coefficient 1/32. Each library keeps its own
default TopK formulation otherwise: mechscope's unit-norm decoder (gradient projection and
renormalisation every step), SAELens's ``rescale_acts_by_decoder_norm=True``. ``--saelens-sparse``
uses SAELens's ``use_sparse_activations=True`` (sparse COO decode); it needs
``rescale_acts_by_decoder_norm=False`` (with both, SAELens 6.54's backward raises
``NotImplementedError: aten::view`` on SparseCPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["main"]

_TARGET = 2.0
_NEVER = 10**15  # a dead-latent window no run reaches: the aux-k branch never runs


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m saes.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed steps per trainer (default 10)")
    p.add_argument(
        "--warmup", type=int, default=2, help="untimed steps per trainer first (default 2)"
    )
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096, help="activation vectors per step")
    p.add_argument("--n-batches", type=int, default=4, help="distinct batches held in memory")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    p.add_argument(
        "--aux", action="store_true", help="aux-k loss on in both (default: off in both)"
    )
    p.add_argument(
        "--saelens-sparse", action="store_true", help="SAELens use_sparse_activations=True"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.n_batches < 1:
        p.error("--steps must be >= 1, --warmup >= 0, --n-batches >= 1")
    return args


def _mechscope_step(args: argparse.Namespace) -> Callable[[torch.Tensor], None]:
    from saes.config import SAEConfig, TrainConfig
    from saes.sae import SAE
    from saes.trainer import Trainer

    sae = SAE(
        SAEConfig(d_in=args.d_in, d_sae=args.d_sae, activation="topk", k=args.k), seed=args.seed
    )
    cfg = TrainConfig(
        total_steps=10**9,
        batch_size=args.batch,
        lr=args.lr,
        aux_coefficient=1 / 32 if args.aux else 0.0,
        # dead = not fired in the previous step (aux on), or never (aux off)
        dead_after_tokens=args.batch if args.aux else _NEVER,
        grad_clip_norm=1.0,
        mixed_precision=False,
        seed=args.seed,
    )
    trainer = Trainer(cfg, sae, iter(()), device="cpu", progress=False)

    def step(x: torch.Tensor) -> None:
        trainer.train_step(x)

    return step


def _saelens_step(args: argparse.Namespace) -> Callable[[torch.Tensor], None]:
    from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(args.seed)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=args.d_in,
            d_sae=args.d_sae,
            k=args.k,
            aux_loss_coefficient=1 / 32 if args.aux else 0.0,
            use_sparse_activations=args.saelens_sparse,
            rescale_acts_by_decoder_norm=not args.saelens_sparse,  # see the module docstring
            dtype="float32",
            device="cpu",
        )
    )
    cfg = SAETrainerConfig(
        total_training_samples=10**9 * args.batch,
        train_batch_size_samples=args.batch,
        lr=args.lr,
        lr_end=args.lr,  # constant schedule (SAETrainer asserts lr_end is set)
        device="cpu",
        autocast=False,
        # SAELens: dead = n_forward_passes_since_fired > window; 0 = not fired in the previous step
        dead_feature_window=0 if args.aux else _NEVER,
        feature_sampling_window=_NEVER,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(()))

    def step(x: torch.Tensor) -> None:
        trainer.step(x)  # what SAETrainer.fit runs per batch, minus W&B logging
        trainer.n_training_steps += 1

    return step


def _summary(times: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(times)
    return {
        "median_step_s": med,
        "min_step_s": min(times),
        "steps_per_s": 1 / med,
        "vectors_per_s": batch / med,
        "step_times_s": [round(t, 4) for t in times],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table and one JSON line, and return the results.
    ``synthetic`` as the first argument runs :mod:`saes.synthetic_bench` instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synthetic"]:
        from saes.synthetic_bench import main as synthetic_main

        return synthetic_main(argv[1:])
    args = _parse(argv)
    for var, val in (
        ("WANDB_MODE", "disabled"),
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
    ):
        os.environ.setdefault(var, val)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    data = [torch.randn(args.batch, args.d_in, generator=gen) for _ in range(args.n_batches)]
    runners = {
        "mechscope Trainer.train_step": _mechscope_step(args),
        "SAELens SAETrainer.step": _saelens_step(args),
    }
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    for i in range(args.warmup + args.steps):
        x = data[i % len(data)]
        order = names if i % 2 == 0 else names[::-1]  # alternate who runs first
        for name in order:
            t0 = time.perf_counter()
            runners[name](x)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times[name].append(dt)
    wall = time.perf_counter() - t_start

    ours, theirs = (_summary(times[n], args.batch) for n in names)
    ratio = ours["vectors_per_s"] / theirs["vectors_per_s"]
    result = {
        "bench": "sae_topk_train_throughput",
        "d_in": args.d_in,
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "aux_loss": "on in both" if args.aux else "off in both",
        "saelens_sparse_activations": args.saelens_sparse,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "mechscope": ours,
        "saelens": theirs,
        "ratio_mechscope_over_saelens": ratio,
        "target_ratio": _TARGET,
        "target_met": ratio >= _TARGET,
        "wall_s": wall,
    }
    _print_table(result)
    print(json.dumps(result))
    sys.stdout.flush()
    return result


def _print_table(r: dict[str, Any]) -> None:
    print(
        f"SAE TopK training throughput: d_in={r['d_in']} d_sae={r['d_sae']} k={r['k']} "
        f"batch={r['batch']} | torch threads={r['torch_threads']} (cpu_count {r['cpu_count']}) | "
        f"{r['steps']} timed steps each after {r['warmup']} warm-up, interleaved, medians"
    )
    print(
        f"aux-k loss {r['aux_loss']}; Adam, same lr, grad clip 1.0, fp32; "
        f"SAELens sparse activations: {r['saelens_sparse_activations']}"
    )
    print(f"{'trainer':30s} {'median s/step':>13s} {'steps/s':>8s} {'vectors/s':>10s}")
    for label, key in (
        ("mechscope Trainer.train_step", "mechscope"),
        ("SAELens SAETrainer.step", "saelens"),
    ):
        s = r[key]
        print(
            f"{label:30s} {s['median_step_s']:13.3f} {s['steps_per_s']:8.3f} {s['vectors_per_s']:10.0f}"
        )
    verdict = "met" if r["target_met"] else "NOT met"
    print(
        f"ratio mechscope/SAELens: {r['ratio_mechscope_over_saelens']:.2f}x "
        f"(target >= {r['target_ratio']:.0f}x: {verdict})"
    )


if __name__ == "__main__":
    main()
