"""Reseed variance: train one configuration under N seeds, report every metric as mean ± a t
interval over seeds, and say whether two configurations differ by more than seed noise.

    python -m saes.sweep --arch topk --seeds 5 [--compare batchtopk] [--config FILE.json]
                         [world and training flags of python -m saes.synthetic_bench]

Each seed changes the SAE's initialisation and the order of the synthetic data (the world, i.e.
the true features, stays fixed). With per-seed values v₁..v_n (mean v̄, sample SD s)::

    interval  v̄ ± t_{1−α/2, n−1} · s / √n                                    (α = 1 − level)
    MDD       (t_{1−α/2, 2n−2} + t_{power, 2n−2}) · s · √(2/n)
              the smallest true difference between two configurations of n seeds each that a
              two-sided two-sample t test at α = 0.05 detects with power 0.8 (normal-theory
              approximation to the noncentral t; s is this configuration's seed SD)
    Welch     d = v̄_a − v̄_b, se = √(s_a²/n_a + s_b²/n_b), ν by Welch–Satterthwaite,
              interval d ± t_{1−α/2, ν} · se; "exceeds seed noise" when it excludes 0

One seed cannot give an interval: asking for one is an error before any training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from saes.seeds import Comparison, SeedSummary, SweepError, compare, summarize

__all__ = ["Comparison", "SeedSummary", "SweepError", "compare", "main", "summarize"]


# ---- command line --------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from saes import synthetic_bench as sb

    p = argparse.ArgumentParser(prog="python -m saes.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="JSON file of flag values (names as below, '-' as '_')")
    p.add_argument("--arch", default="topk", help="architecture to sweep (default topk)")
    p.add_argument("--compare", default=None, help="a second architecture, compared by Welch")
    p.add_argument("--trainer", choices=("mechscope", "saelens"), default="mechscope")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--no-interval", action="store_true", help="report values only (any seeds)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    sb.add_world_args(p)
    args = p.parse_args(argv)
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            p.error(f"--config {args.config}: {err}")
        unknown = sorted(set(loaded) - set(vars(args)))
        if unknown:
            p.error(f"--config has unknown keys {unknown}; valid: {sorted(vars(args))}")
        p.set_defaults(**loaded)
        args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.seeds < 2 and not args.no_interval:
        raise SweepError(
            f"--seeds {args.seeds} cannot give an interval over seeds: use --seeds 3 or more, or "
            "--no-interval for the values of a single run"
        )
    for arch in filter(None, (args.arch, args.compare)):
        sb.check_arch(arch)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the sweep, print a table (and JSON with ``--json``), and return the result."""
    from saes import synthetic_bench as sb

    args = _parse(argv)
    model = sb.build_world(args)
    archs = [a for a in (args.arch, args.compare) if a]
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in archs}
    for seed in range(args.seeds):
        replay = sb.draw(model, args, seed)
        for arch in archs:
            runs[arch].append(sb.train_and_score(args.trainer, arch, model, replay, args, seed))
    result: dict[str, Any] = {"world": sb.world_info(model, args), "trainer": args.trainer}
    result["runs"] = runs
    if not args.no_interval:
        result["summary"] = {
            a: {m: summarize([r[m] for r in runs[a]])._asdict() for m in sb.METRICS} for a in archs
        }
        if args.compare:
            result["comparison"] = {}
            for m in sb.METRICS:
                c = compare([r[m] for r in runs[args.arch]], [r[m] for r in runs[args.compare]])
                result["comparison"][m] = {**c._asdict(), "exceeds_noise": c.exceeds_noise}
    _print(result, args)
    if args.json:
        print(json.dumps(result))
    sys.stdout.flush()
    return result


def _print(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(sb_header(r))
    for arch, rows in r["runs"].items():
        for i, row in enumerate(rows):
            vals = "  ".join(f"{m}={row[m]:.4g}" for m in _metrics())
            print(f"{args.trainer} {arch} seed {i}: {vals}")
    for arch, summ in r.get("summary", {}).items():
        print(
            f"\n{arch}, {args.seeds} seeds: mean ± 95% t interval half-width (MDD at α=0.05, power 0.8)"
        )
        for m, s in summ.items():
            ss = SeedSummary(**s)
            print(f"  {m:20s} {ss!s:>22s}   sd {ss.sd:.3g}   MDD {ss.mdd:.3g}")
    for m, c in r.get("comparison", {}).items():
        verdict = "exceeds seed noise" if c["exceeds_noise"] else "within seed noise"
        print(
            f"{args.arch} − {args.compare} {m:20s} {c['diff']:+.4g} "
            f"[{c['low']:+.4g}, {c['high']:+.4g}]  Welch t={c['t']:.3g} df={c['df']:.3g} "
            f"p={c['p']:.3g}: {verdict}"
        )


def sb_header(r: dict[str, Any]) -> str:
    w = r["world"]
    return (
        f"sweep on sae_lens.synthetic data: {w['num_features']} features, d {w['hidden_dim']}, "
        f"true L0 {w['true_l0']:.2f}; trainer {r['trainer']}"
    )


def _metrics() -> tuple[str, ...]:
    from saes.synthetic_bench import METRICS

    return METRICS


if __name__ == "__main__":
    try:
        main()
    except SweepError as err:
        sys.exit(f"error: {err}")
