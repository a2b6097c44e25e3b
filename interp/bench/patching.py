"""Residual-stream patching sweep: mechscope vs ``transformer_lens.patching``, same run.

``python -m interp.bench patching [--backend hooked|bridge] [--prompts 8] [--model smollm2-135m]
[--json out.json]``; ``--model random`` is the random GPT-2-small-shaped case of
:mod:`interp.bench.patching_random` (its own options, ``--backend both`` too).

Both sides run a denoising ``resid_pre`` sweep over every layer × position of IOI prompts with
the same metric (mean IO − S logit difference at the last position); the results must agree.
mechscope is timed twice: with ``logits_at=-1`` (the metric reads only the last position, so the
unembedding elsewhere is skipped) and without it (logits everywhere, like TransformerLens).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    from interp.bench import patching_random

    p.add_argument("--model", default="smollm2-135m", help="a model name, or random (issue 18)")
    p.add_argument(
        "--backend",
        choices=("hooked", "bridge", "both"),
        default=None,
        help="model class (default: as load_model; both: --model random only)",
    )
    p.add_argument("--prompts", type=int, default=None, help="default 8 (IOI), 16 (random)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--skip-tl", action="store_true", help="skip the TransformerLens side")
    p.add_argument("--json", default=None, help="also write the numbers here")
    patching_random.add_arguments(p)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    if args.model == "random":
        from interp.bench import patching_random

        return patching_random.run(args)
    if args.backend == "both":
        raise SystemExit("--backend both: only with --model random")
    args.prompts = args.prompts or 8
    import transformer_lens.patching as tlp

    from interp.ioi import ioi_prompts
    from interp.metrics import logit_diff
    from interp.models import load_model
    from interp.patching import attribution_patch, patch_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.core.adapter import adapt

    model = load_model(args.model, backend=args.backend)
    model.eval()
    backend = adapt(model).backend
    batch = ioi_prompts(model, args.prompts, seed=0)
    n, n_pos = batch.clean.shape
    n_layers = adapt(model).spec.n_layers

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, batch.io, batch.s, pos=-1)

    def sweep(**kw: Any) -> Any:
        return patch_sweep(
            model, batch.clean, batch.corrupt, metric, site="resid_pre", over=("layer", "pos"), **kw
        )

    sweep(layers=[n_layers - 1], logits_at=-1)  # warm-up
    # Attribution over every head (all positions) in forward-equivalents: its time over the
    # time of one plain forward of the same prompts.
    # Each the best of three runs, so a busy machine's stalls do not set the ratio.
    with torch.no_grad():
        model(batch.clean)
        t_fwd = min(_timed(lambda: model(batch.clean))[1] for _ in range(3))
    t_attr = min(
        _timed(
            lambda: attribution_patch(
                model,
                batch.clean,
                batch.corrupt,
                metric,
                site="z",
                over=("layer", "head"),
                logits_at=-1,
            )
        )[1]
        for _ in range(3)
    )
    fast, t_fast = _timed(lambda: sweep(logits_at=-1))
    full, t_full = _timed(lambda: sweep())
    generic, t_generic = _timed(lambda: sweep(logits_at=-1, fast=False))
    out: dict[str, Any] = {
        "model": args.model,
        "backend": backend,
        "prompts": n,
        "positions": n_pos,
        "layers": n_layers,
        "cells": n_layers * n_pos,
        "threads": torch.get_num_threads(),
        "forward_s": round(t_fwd, 3),
        "attribution_all_heads_s": round(t_attr, 3),
        "attribution_forward_equivalents": round(t_attr / t_fwd, 2),
        "mechscope_s": round(t_fast, 3),
        "mechscope_all_logits_s": round(t_full, 3),
        "mechscope_generic_s": round(t_generic, 3),
        "fast_vs_all_logits_max_abs_diff": float((fast.mean - full.mean).abs().max()),
        "fast_vs_generic_max_abs_diff": float((fast.mean - generic.mean).abs().max()),
    }
    if not args.skip_tl:
        with torch.no_grad():
            _, cache = model.run_with_cache(batch.clean)
            ref, t_tl = _timed(
                lambda: tlp.get_act_patch_resid_pre(
                    model, batch.corrupt, cache, lambda lg: metric(lg).mean()
                )
            )
        diff = float((fast.mean - ref.cpu()).abs().max())
        out.update(
            transformer_lens_s=round(t_tl, 3),
            speedup=round(t_tl / t_fast, 2),
            speedup_all_logits=round(t_tl / t_full, 2),
            speedup_generic=round(t_tl / t_generic, 2),
            max_abs_diff_vs_tl=diff,
            max_abs_diff_all_logits_vs_tl=float((full.mean - ref.cpu()).abs().max()),
        )
    for k, v in out.items():
        print(f"{k:>32}: {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0
