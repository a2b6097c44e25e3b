"""Selective-cache overhead and activation-store write throughput on the offline model.

1. Forward with a selective cache of one hook per layer, divided by a plain forward (target <= 1.10),
   timed interleaved so drift in machine speed hits both alike. TransformerLens's ``run_with_cache``
   with the same names is timed in the same loop for reference.
2. Store writes of two corpus sizes, each in a fresh process so its peak RSS is its own: tokens/s
   and peak RSS; peak RSS must not grow with the number of tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--layer", type=int, default=6, help="layer whose resid_post the store holds")
    p.add_argument("--tokens", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--skip-store", action="store_true")


def add_child_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--out", required=True)


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_overhead(model: Any, tokens: torch.Tensor, repeats: int) -> dict[str, float]:
    from interp.cache import cache_activations

    names = [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    runs = {
        "plain": lambda: model(tokens),
        # the same work as the plain forward: every block, the unembedding, logits returned
        "mechscope": lambda: cache_activations(
            model, tokens, names, stop_early=False, return_type="logits"
        ),
        # what cache_activations does by default: stop after the last hooked block (here: skip the unembedding)
        "mechscope_default": lambda: cache_activations(model, tokens, names),
        "transformer_lens": lambda: model.run_with_cache(tokens, names_filter=names),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(repeats):
            for k, fn in runs.items():
                times[k].append(_timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "plain_s": med["plain"],
        "cached_s": med["mechscope"],
        "ratio": med["mechscope"] / med["plain"],
        "default_ratio": med["mechscope_default"] / med["plain"],
        "tl_run_with_cache_ratio": med["transformer_lens"] / med["plain"],
    }


class _RSSSampler:
    """Highest resident set size seen while the block runs (ru_maxrss would include model loading)."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> _RSSSampler:
        self.start = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def run_child(args: argparse.Namespace) -> int:
    from interp.corpus import shakespeare
    from interp.models import load_model
    from interp.store import ActivationStore

    model = load_model(args.model)
    t = time.perf_counter()
    with _RSSSampler() as rss:
        store = ActivationStore.write(
            args.out,
            model,
            f"blocks.{args.layer}.hook_resid_post",
            shakespeare(),
            max_tokens=args.tokens,
            context_size=128,
            forward_max_tokens=1024,
        )
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "tokens": len(store),
                "seconds": seconds,
                "tokens_per_s": len(store) / seconds,
                "peak_rss_mb": rss.peak / 2**20,
                "rss_before_write_mb": rss.start / 2**20,
                "max_rss_incl_load_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "shards": len(store.shards),
            }
        )
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from interp.corpus import shakespeare, token_sequences
    from interp.models import load_model

    torch.set_grad_enabled(False)
    model: Any = load_model(args.model)
    seqs = token_sequences(shakespeare(max_docs=2), model.tokenizer, args.seq)
    tokens = torch.stack([next(seqs) for _ in range(args.batch)])
    print(
        f"# interp.bench cache: {args.model}, batch {args.batch} x {args.seq} tokens, torch threads {torch.get_num_threads()}"
    )
    fo = forward_overhead(model, tokens, args.repeats)
    print(f"plain forward            {fo['plain_s'] * 1e3:8.1f} ms")
    print(
        f"selective cache forward  {fo['cached_s'] * 1e3:8.1f} ms   ratio {fo['ratio']:.3f}  (target <= 1.10; "
        f"one hook per layer, {model.cfg.n_layers} hooks)"
    )
    print(f"TL run_with_cache, same  ratio {fo['tl_run_with_cache_ratio']:.3f}")
    print(
        f"mechscope default        ratio {fo['default_ratio']:.3f}  (stops after the last hooked block: no unembedding)"
    )
    results: dict[str, Any] = {"forward": fo, "store": []}
    if not args.skip_store:
        del model
        for n in args.tokens:
            with tempfile.TemporaryDirectory() as d:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "interp.bench",
                        "_store_child",
                        "--model",
                        args.model,
                        "--layer",
                        str(args.layer),
                        "--tokens",
                        str(n),
                        "--out",
                        str(Path(d) / "store"),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results["store"].append(r)
            print(
                f"store write {r['tokens']:>8} tokens (layer {args.layer} resid_post, fp32): "
                f"{r['tokens_per_s']:8.0f} tokens/s, {r['seconds']:6.1f} s, peak RSS while writing "
                f"{r['peak_rss_mb']:6.0f} MB (before writing {r['rss_before_write_mb']:.0f} MB; with "
                f"model loading {r['max_rss_incl_load_mb']:.0f} MB), {r['shards']} shards"
            )
        if len(results["store"]) > 1:
            a, b = results["store"][0], results["store"][-1]
            print(
                f"peak RSS (while writing) ratio {b['tokens']} / {a['tokens']} tokens: {b['peak_rss_mb'] / a['peak_rss_mb']:.3f} "
                "(flat = does not grow with corpus size)"
            )
    print(json.dumps(results))
    return 0
