"""Benchmark: ``python -m interp.scrubbing.bench [--samples 1000] [--threads 1]``.

Scrubs a ten-claim induction hypothesis on the toy model with 1,000 samples and reports the
forward passes (model calls and sequences pushed through), the time, and the result.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from interp.scrubbing.api import scrub
from interp.scrubbing.induction import POSITION, bench_hypothesis
from interp.scrubbing.metrics import next_token_loss
from interp.toy import load_toy_induction, repeated_random_tokens


def run(samples: int = 1000, dataset: int = 2000, seed: int = 0) -> dict[str, object]:
    model = load_toy_induction()
    tokens = repeated_random_tokens(dataset, 20, generator=torch.Generator().manual_seed(1))
    hyp = bench_hypothesis()
    t0 = time.perf_counter()
    res = scrub(model, tokens, hyp, next_token_loss(POSITION), n_samples=samples, seed=seed)
    seconds = time.perf_counter() - t0
    rc = res.recovered_ci()
    return {
        "claims": len(hyp.claims()),
        "instances": len(res.nodes),
        "samples": samples,
        "dataset_rows": dataset,
        "forwards": res.meta["forwards"],
        "rows": res.meta["rows"],
        "seconds": round(seconds, 2),
        "threads": torch.get_num_threads(),
        "recovered": [round(rc.estimate, 4), round(rc.low, 4), round(rc.high, 4)],
    }


def _main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m interp.scrubbing.bench")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--dataset", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args.samples, args.dataset), indent=2))


if __name__ == "__main__":
    _main()
