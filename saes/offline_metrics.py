"""``python -m saes.offline_metrics``: SAEBench-class metrics of SAEs on a real model, offline.

    python -m saes.offline_metrics --sae RUN_OR_FOLDER [RUN_OR_FOLDER ...] [--store HELD_OUT]
                                   [--plays 32 34 ...] [--lines 60] [--json]

Per SAE: first-letter absorption (:mod:`saes.absorption`), k-sparse probing (:mod:`saes.probing`)
on one-vs-rest "which play is this line from" tasks (lines mean-pooled) and on token properties
(one row per token), every task balanced 50/50 (chance 0.5), the full-residual probe as baseline, and with ``--store`` the core
reconstruction metrics of :mod:`saes.evals` on a held-out store. Several SAEs (seeds of one
configuration) add mean ± 95% t interval over them (``saes.sweep.summarize``). All SAEs must read
the same hook of the same model: activations are computed once and shared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["main", "resolve_sae", "summarize_seeds"]

KS = (1, 2, 5, 20)


def resolve_sae(path: str | Path) -> Path:
    """The folder holding ``sae.safetensors``: ``path`` itself or a run's ``final``."""
    p = Path(path)
    for cand in (p, p / "final"):
        if (cand / "sae.safetensors").is_file():
            return cand
    raise FileNotFoundError(
        f"no SAE at {p}: expected a folder with sae.safetensors, or a training run with "
        "final/sae.safetensors (train it first, e.g. python -m saes train)"
    )


def summarize_seeds(values: Sequence[float]) -> dict[str, float]:
    """Mean, SD and 95% t interval over seeds (``saes.sweep.summarize``).

    >>> s = summarize_seeds([1.0, 2.0, 3.0]); round(s["low"], 3), round(s["high"], 3)
    (-0.484, 4.484)
    """
    from saes.seeds import summarize

    s = summarize(values)
    return {"mean": s.mean, "sd": s.sd, "n": s.n, "low": s.low, "high": s.high}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _split(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)) < (2 * n) // 3


def _tasks(
    model: Any, hook: str, saes: list[Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per SAE, k-sparse probing accuracies and the residual baseline on every task."""
    from interp.steering.data import shakespeare_passages
    from saes.probing import fit_probe, k_sparse_probe, pooled_activations, token_property_rows

    rows = shakespeare_passages(
        args.lines * len(args.plays), plays=args.plays, lines=args.passage_lines
    )
    names = sorted({p for p, _ in rows})
    texts = [t for _, t in rows]
    play = torch.tensor([names.index(p) for p, _ in rows])
    resid, pooled = pooled_activations(model, hook, texts, saes)
    out: list[dict[str, Any]] = [{} for _ in saes]
    for j, name in enumerate(names):
        keep = _balanced((play == j).long(), args.seed)  # as many other-play lines as this play's
        y, tr = (play[keep] == j).long(), _split(len(keep), args.seed)
        x = resid[keep]
        base = fit_probe(x[tr], y[tr]).accuracy(x[~tr], y[~tr])
        for i, f in enumerate(pooled):
            res = k_sparse_probe(f[keep][tr], y[tr], f[keep][~tr], y[~tr], KS)
            acc = {f"k={k}": a for k, a in res.accuracy.items()}
            out[i][f"play={name}"] = {"baseline": base, **acc}
    for prop in args.token_properties:
        x, y = token_property_rows(model, hook, texts[: args.token_lines], prop)
        keep = _balanced(y, args.seed)
        x, y = x[keep], y[keep]
        tr = _split(len(y), args.seed)
        base = fit_probe(x[tr], y[tr]).accuracy(x[~tr], y[~tr])
        for i, sae in enumerate(saes):
            with torch.no_grad():
                f = sae.encode(x).float()
            res = k_sparse_probe(f[tr], y[tr], f[~tr], y[~tr], KS)
            out[i][f"token={prop}"] = {
                "baseline": base,
                **{f"k={k}": a for k, a in res.accuracy.items()},
            }
    return out


def _balanced(y: torch.Tensor, seed: int) -> torch.Tensor:
    """Row indices with as many positives as negatives (the larger class subsampled)."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = (y == 1).nonzero()[:, 0], (y == 0).nonzero()[:, 0]
    n = min(len(pos), len(neg))
    if n < 6:
        raise ValueError(
            f"token task has {len(pos)} positive and {len(neg)} negative tokens: too few"
        )
    return torch.cat(
        [
            pos[torch.randperm(len(pos), generator=g)[:n]],
            neg[torch.randperm(len(neg), generator=g)[:n]],
        ]
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from saes.probing import TOKEN_PROPERTIES

    p = argparse.ArgumentParser(
        prog="python -m saes.offline_metrics", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--sae", nargs="+", required=True, help="SAE folders or training runs (several: seeds)"
    )
    p.add_argument("--model", default=None, help="model name (default: the SAE's metadata)")
    p.add_argument("--hook", default=None, help="hook (default: the SAE's metadata)")
    p.add_argument("--store", default=None, help="held-out ActivationStore for core metrics")
    p.add_argument("--plays", type=int, nargs="+", default=[32, 34, 26], help="play indices (2-5)")
    p.add_argument("--lines", type=int, default=60, help="passages per play (default 60)")
    p.add_argument("--passage-lines", type=int, default=2, help="verse lines per passage")
    p.add_argument("--token-lines", type=int, default=40, help="lines for the token tasks")
    p.add_argument("--token-properties", nargs="*", default=sorted(TOKEN_PROPERTIES))
    p.add_argument("--words-per-letter", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the train/held-out splits")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = p.parse_args(argv)
    if not 2 <= len(args.plays) <= 5:
        p.error(f"--plays takes 2 to 5 plays; got {len(args.plays)}")
    for prop in args.token_properties:
        if prop not in TOKEN_PROPERTIES:
            p.error(f"unknown --token-properties {prop!r}; choose from {sorted(TOKEN_PROPERTIES)}")
    try:
        args.sae = [resolve_sae(s) for s in args.sae]
    except FileNotFoundError as err:
        p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Compute, print (a table, or JSON with ``--json``) and return the metrics."""
    from interp.models import load_model
    from saes.absorption import first_letter_absorption, spelling_activations
    from saes.sae import SAE

    args = _parse(argv)
    saes = [SAE.load(p).eval() for p in args.sae]
    meta = saes[0].cfg.metadata
    hook, name = args.hook or meta.get("hook"), args.model or meta.get("model")
    if not hook or not name:
        raise SystemExit("error: the SAE's metadata names no hook/model: pass --hook and --model")
    if bad := [
        str(p)
        for p, s in zip(args.sae, saes, strict=True)
        if s.cfg.metadata.get("hook", hook) != hook
    ]:
        raise SystemExit(f"error: {bad} read another hook than {hook}: compare SAEs of one hook")
    t0 = time.perf_counter()
    model = load_model(name)
    acts = spelling_activations(model, hook, words_per_letter=args.words_per_letter, seed=args.seed)
    runs: list[dict[str, Any]] = [{"sae": str(p)} for p in args.sae]
    for run, sae in zip(runs, saes, strict=True):
        ab = first_letter_absorption(model, sae, hook, acts=acts, seed=args.seed)
        run["absorption"] = {k: v for k, v in ab.to_dict().items() if k != "per_letter"}
        run["absorption_per_letter"] = ab.per_letter
    for run, probing in zip(runs, _tasks(model, hook, saes, args), strict=True):
        run["probing"] = probing
        ks = [v for v in probing.values()]
        run["probing_mean"] = {key: sum(t[key] for t in ks) / len(ks) for key in ks[0]}
    if args.store:
        from interp.store import ActivationStore
        from saes.evals import evaluate_reconstruction

        store = ActivationStore(args.store)
        for run, sae in zip(runs, saes, strict=True):
            rec = evaluate_reconstruction(sae, store.batches(2048, hook=hook))
            run["core"] = {
                k: getattr(rec, k)
                for k in ("l0", "explained_variance", "cosine_similarity", "dead_fraction")
            }
    result: dict[str, Any] = {
        "model": name, "hook": hook, "plays": args.plays, "seconds": time.perf_counter() - t0, "runs": runs,
    }  # fmt: skip
    if len(runs) > 1:
        flat = [
            _flatten({k: r[k] for k in ("absorption", "probing_mean", "core") if k in r})
            for r in runs
        ]
        result["seeds"] = {k: summarize_seeds([f[k] for f in flat]) for k in flat[0]}
    print(json.dumps(result, default=float) if args.json else _table(result))
    sys.stdout.flush()
    return result


def _table(r: dict[str, Any]) -> str:
    lines = [f"{r['model']} {r['hook']}: {len(r['runs'])} SAE(s), {r['seconds']:.0f} s"]
    for run in r["runs"]:
        ab, pm = run["absorption"], run["probing_mean"]
        lines.append(
            f"{run['sae']}: absorption fraction {ab['mean_absorption_fraction']:.3f}, full "
            f"{ab['full_absorption_rate']:.3f}, letter probe acc {ab['probe_accuracy']:.3f}; probing "
            + ", ".join(f"{k} {v:.3f}" for k, v in pm.items())
            + (
                f"; L0 {run['core']['l0']:.1f}, EV {run['core']['explained_variance']:.3f}"
                if "core" in run
                else ""
            )
        )
    for k, s in r.get("seeds", {}).items():
        half = (s["high"] - s["low"]) / 2 if math.isfinite(s["high"]) else math.nan
        lines.append(f"  {k:40s} {s['mean']:.4f} ± {half:.4f} (95% t, {s['n']} seeds)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
