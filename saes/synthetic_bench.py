"""Feature recovery on ``sae_lens.synthetic`` data: mechscope's trainer vs SAELens's, side by side.

    python -m saes.synthetic_bench [--features 512] [--d 64] [--l0 8] [--seeds 3]
                                   [--archs topk,batchtopk,jumprelu] [--samples 204800] ...

One synthetic world (SAELens's ``SyntheticModel``: a linear firing profile scaled to L0, a
hierarchy of mutually exclusive children, a low-rank correlation, magnitude noise). Per seed the
feature activations are drawn once (``saes.synthetic.Replay``) and both trainers read those same
batches through SAELens's ``SyntheticActivationIterator`` (mechscope's ``Trainer``) and
``train_toy_sae`` (SAELens): same samples, batch, lr, k, initial JumpReLU threshold and bandwidth;
each library's defaults otherwise (initialisation, aux-k, decoder norms, BatchTopK threshold
rule). JumpReLU differs on purpose: mechscope trains θ directly (its default
``jumprelu_threshold_param="direct"``, as SAELens 6) with its own L0 coefficient
(``--mechscope-l0-coefficient``, set for L0 ≈ k on a development world), since the two
coefficients act on differently scaled codes.
Seeds set the SAE initialisation and the data order; which trainer runs first alternates. Wall
time is the training call alone, at one torch thread by default; ``data_s`` is the time the same
batches take to produce alone (inside both walls), so the ratio is also given without it;
``cpu_s`` is the call's CPU time, which other processes on a shared machine do not inflate. Both
trained SAEs are scored by ``saes.synthetic.evaluate_synthetic`` as SAELens inference SAEs
(mechscope's through ``saes.interop.to_saelens``, SAELens's through its own
``save_inference_model``), on the same held-out rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["METRICS", "main", "train_and_score"]

METRICS = ("mcc", "f1", "l0", "explained_variance", "wall_s", "data_s", "cpu_s")
_ARCHS = ("topk", "batchtopk", "jumprelu", "matryoshka_batchtopk")
_WORLD_SEED = (
    12_345  # far from the SAE seeds: SAELens seeds its dictionary as mechscope seeds an SAE
)
_EVAL_SEED = 10_000


def available_archs() -> tuple[str, ...]:
    """The architectures both trainers have here (Matryoshka once ``saes.config`` knows it)."""
    from saes.config import ACTIVATION_NAMES

    return tuple(a for a in _ARCHS if a in ACTIVATION_NAMES)


def check_arch(arch: str) -> None:
    import difflib

    have = available_archs()
    if arch not in have:
        close = difflib.get_close_matches(arch, _ARCHS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close and close[0] in have else ""
        raise SystemExit(f"error: architecture {arch!r} is not available; choose from {have}{hint}")


def add_world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", type=int, default=512, help="true features (default 512)")
    p.add_argument("--d", type=int, default=64, help="hidden dim, the SAE's d_in (default 64)")
    p.add_argument("--l0", type=float, default=8.0, help="expected active features per row")
    p.add_argument("--hierarchy-roots", type=int, default=16, help="trees (0: no hierarchy)")
    p.add_argument("--branching", type=int, default=4, help="children per tree root")
    p.add_argument("--correlation-rank", type=int, default=16, help="0: independent features")
    p.add_argument("--d-sae", type=int, default=None, help="latents (default: --features)")
    p.add_argument("--k", type=int, default=None, help="TopK/BatchTopK k (default: round(l0))")
    p.add_argument("--samples", type=int, default=204_800, help="training rows per run")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--l0-coefficient", type=float, default=1.0,
        help="SAELens's JumpReLU L0 coefficient (its default; its L0 stays near 16 at 1, 2 or 4 "
        "in the default budget: Adam moves its threshold by at most ~lr a step)",
    )  # fmt: skip
    p.add_argument(
        "--mechscope-l0-coefficient", type=float, default=0.2,
        help="mechscope's JumpReLU L0 coefficient (default 0.2: inference L0 about k=8, chosen "
        "on a development world, not the benchmark's: world seed 777, SAE seeds 100-101)",
    )  # fmt: skip
    p.add_argument("--jumprelu-threshold", type=float, default=0.01, help="initial threshold")
    p.add_argument("--jumprelu-bandwidth", type=float, default=0.05)
    p.add_argument("--eval-samples", type=int, default=20_000)
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for both trainers (default 1: at 2 on a shared 2-core machine the "
        "walls varied 16-218 s for the same 1.5-6 s of work)",
    )  # fmt: skip


def build_world(args: argparse.Namespace) -> Any:
    from saes.synthetic import build_synthetic_model, synthetic_config

    if args.samples < args.batch:
        raise SystemExit(f"error: --samples {args.samples} is less than one --batch {args.batch}")
    k = args.k if args.k is not None else max(1, round(args.l0))
    d_sae = args.d_sae or args.features
    if not 1 <= k < d_sae:
        raise SystemExit(f"error: k={k} must satisfy 1 <= k < d_sae={d_sae}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = synthetic_config(
        num_features=args.features, hidden_dim=args.d, l0=args.l0,
        hierarchy_roots=args.hierarchy_roots, branching=args.branching,
        correlation_rank=args.correlation_rank, seed=_WORLD_SEED,
    )  # fmt: skip
    return build_synthetic_model(cfg)


def world_info(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    with torch.random.fork_rng():
        torch.manual_seed(_EVAL_SEED)
        _, feat = model.sample_with_features(8192)
    return {
        "num_features": model.cfg.num_features,
        "hidden_dim": model.cfg.hidden_dim,
        "target_l0": args.l0,
        "true_l0": float((feat > 0).sum(1).float().mean()),
        "hierarchy_roots": args.hierarchy_roots,
        "branching": args.branching,
        "correlation_rank": args.correlation_rank,
        "d_sae": args.d_sae or args.features,
        "k": args.k if args.k is not None else max(1, round(args.l0)),
        "samples": args.samples,
        "batch": args.batch,
        "lr": args.lr,
        "l0_coefficient": {
            "saelens": args.l0_coefficient,
            "mechscope": args.mechscope_l0_coefficient,
        },
    }


def draw(model: Any, args: argparse.Namespace, seed: int) -> Any:
    from saes.synthetic import Replay

    return Replay(model, args.samples // args.batch, args.batch, seed=seed)


def data_pass_s(model: Any, replay: Any, args: argparse.Namespace) -> float:
    """Seconds to produce one run's batches alone: the data cost inside both trainers' walls."""
    from sae_lens.synthetic import SyntheticActivationIterator

    it = SyntheticActivationIterator(model.feature_dict, replay.rewind(), args.batch)
    t0 = time.perf_counter()
    for _ in range(len(replay)):
        next(it)
    return time.perf_counter() - t0


def _mechscope(arch: str, model: Any, replay: Any, args: argparse.Namespace, seed: int) -> Any:
    from sae_lens.synthetic import SyntheticActivationIterator

    from saes.config import SAEConfig, TrainConfig
    from saes.interop import to_saelens
    from saes.sae import SAE
    from saes.trainer import Trainer

    info = world_info_small(args)
    extra: dict[str, Any] = {}
    if arch == "matryoshka_batchtopk":
        extra["matryoshka_widths"] = _widths(info["d_sae"])
    sae = SAE(
        SAEConfig(
            d_in=args.d, d_sae=info["d_sae"], activation=arch, k=info["k"],  # type: ignore[arg-type]
            jumprelu_init_threshold=args.jumprelu_threshold,
            jumprelu_bandwidth=args.jumprelu_bandwidth,
            **extra,
        ),
        seed=seed,
    )  # fmt: skip
    cfg = TrainConfig(
        total_steps=args.samples // args.batch, batch_size=args.batch, lr=args.lr,
        sparsity_coefficient=args.mechscope_l0_coefficient if arch == "jumprelu" else 0.0,
        mixed_precision=False, seed=seed,
    )  # fmt: skip
    data = SyntheticActivationIterator(model.feature_dict, replay.rewind(), args.batch)
    trainer = Trainer(cfg, sae, data, device="cpu", progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit()
    return to_saelens(sae), time.perf_counter() - t0, time.process_time() - c0


def _saelens(arch: str, model: Any, replay: Any, args: argparse.Namespace, seed: int) -> Any:
    import sae_lens as sl
    from sae_lens.synthetic import train_toy_sae

    info = world_info_small(args)
    common = {"d_in": args.d, "d_sae": info["d_sae"], "device": "cpu", "dtype": "float32"}
    if arch == "jumprelu":
        sae_cfg: Any = sl.JumpReLUTrainingSAEConfig(
            jumprelu_init_threshold=args.jumprelu_threshold,
            jumprelu_bandwidth=args.jumprelu_bandwidth,
            l0_coefficient=args.l0_coefficient, **common,
        )  # fmt: skip
        cls: Any = sl.JumpReLUTrainingSAE
    elif arch == "matryoshka_batchtopk":
        sae_cfg = sl.MatryoshkaBatchTopKTrainingSAEConfig(
            k=info["k"], matryoshka_widths=_widths(info["d_sae"]), **common
        )
        cls = sl.MatryoshkaBatchTopKTrainingSAE
    else:
        name = {"topk": "TopK", "batchtopk": "BatchTopK"}[arch]
        sae_cfg = getattr(sl, f"{name}TrainingSAEConfig")(k=info["k"], **common)
        cls = getattr(sl, f"{name}TrainingSAE")
    torch.manual_seed(seed)
    sae = cls(sae_cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    train_toy_sae(
        sae, model.feature_dict, replay.rewind(), training_samples=args.samples,
        batch_size=args.batch, lr=args.lr,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        inference = sl.SAE.load_from_disk(tmp, device="cpu")
    return inference, wall, cpu


def _widths(d_sae: int) -> list[int]:
    return [d_sae // 8, d_sae // 4, d_sae // 2, d_sae]


def world_info_small(args: argparse.Namespace) -> dict[str, int]:
    return {
        "d_sae": args.d_sae or args.features,
        "k": args.k if args.k is not None else max(1, round(args.l0)),
    }


def train_and_score(
    trainer: str, arch: str, model: Any, replay: Any, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Train one SAE with ``trainer`` (mechscope or saelens) and score it on held-out rows;
    ``data_s`` is the same batches produced alone, just before (part of ``wall_s``); ``cpu_s``
    is the training call's CPU time (the wall less the time other processes held the CPU)."""
    from sae_lens.synthetic import mean_correlation_coefficient

    from saes.synthetic import evaluate_synthetic

    fn = _mechscope if trainer == "mechscope" else _saelens
    data_s = data_pass_s(model, replay, args)
    sae, wall, cpu = fn(arch, model, replay, args, seed)
    ev = evaluate_synthetic(sae, model, n_samples=args.eval_samples, seed=_EVAL_SEED)
    sl_mcc = mean_correlation_coefficient(
        sae.W_dec.detach(), model.feature_dict.feature_vectors.detach()
    )
    return {**ev.to_dict(), "wall_s": wall, "data_s": data_s, "cpu_s": cpu, "saelens_mcc": sl_mcc}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m saes.synthetic_bench", description=__doc__.split("\n\n")[0]
    )
    add_world_args(p)
    p.add_argument("--seeds", type=int, default=3, help="seeds per trainer and architecture")
    p.add_argument("--archs", default=None, help="comma-separated (default: all available)")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f"--seeds {args.seeds}: intervals over seeds need at least 2 (3 or more advised)")
    args.arch_list = args.archs.split(",") if args.archs else list(available_archs())
    for a in args.arch_list:
        check_arch(a)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and one JSON line, and return the result."""
    for var in ("WANDB_MODE", "TQDM_DISABLE"):
        os.environ.setdefault(var, "disabled" if var == "WANDB_MODE" else "1")
    logging.getLogger("sae_lens").setLevel(logging.WARNING)
    args = _parse(argv)
    t_start = time.perf_counter()
    model = build_world(args)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        a: {"mechscope": [], "saelens": []} for a in args.arch_list
    }
    for seed in range(args.seeds):
        replay = draw(model, args, seed)
        for i, arch in enumerate(args.arch_list):
            order = ["mechscope", "saelens"]
            for trainer in order if (seed + i) % 2 == 0 else order[::-1]:
                row = train_and_score(trainer, arch, model, replay, args, seed)
                runs[arch][trainer].append(row)
                print(f"seed {seed} {arch:22s} {trainer:9s} " + _brief(row), flush=True)
    result = _result(model, args, runs, time.perf_counter() - t_start)
    _print_table(result)
    print(json.dumps(result))
    sys.stdout.flush()
    return result


def _brief(row: dict[str, Any]) -> str:
    return " ".join(f"{m}={row[m]:.4g}" for m in (*METRICS, "precision", "recall", "absorbed"))


def _result(model: Any, args: argparse.Namespace, runs: Any, wall: float) -> dict[str, Any]:
    from saes.seeds import compare, summarize

    out: dict[str, Any] = {
        "bench": "sae_synthetic_feature_recovery",
        "world": world_info(model, args),
        "seeds": args.seeds,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "wall_s": wall,
        "archs": {},
    }
    for arch, by in runs.items():
        entry: dict[str, Any] = {"runs": by}
        for trainer, rows in by.items():
            entry[trainer] = {
                m: summarize([r[m] for r in rows])._asdict()
                for m in (*METRICS, "precision", "recall", "saelens_f1", "absorbed")
            }
        ours, theirs = by["mechscope"], by["saelens"]
        entry["mcc_diff"] = compare([r["mcc"] for r in ours], [r["mcc"] for r in theirs])._asdict()
        wall_ratio = entry["mechscope"]["wall_s"]["mean"] / entry["saelens"]["wall_s"]["mean"]
        entry["wall_ratio"] = wall_ratio
        entry["wall_ratio_without_data"] = _mean_less_data(ours) / _mean_less_data(theirs)
        entry["cpu_ratio"] = entry["mechscope"]["cpu_s"]["mean"] / entry["saelens"]["cpu_s"]["mean"]
        entry["goal_met"] = (
            entry["mechscope"]["mcc"]["mean"] >= entry["saelens"]["mcc"]["mean"]
            and wall_ratio <= 0.5
        )
        entry["mcc_agrees_with_saelens"] = max(
            abs(r["mcc"] - r["saelens_mcc"]) for rows in by.values() for r in rows
        )
        out["archs"][arch] = entry
    return out


def _mean_less_data(rows: list[dict[str, Any]]) -> float:
    return sum(r["wall_s"] - r["data_s"] for r in rows) / len(rows)


def _print_table(r: dict[str, Any]) -> None:
    w = r["world"]
    print(
        f"\nsae_lens.synthetic world: {w['num_features']} features, d {w['hidden_dim']}, "
        f"target L0 {w['target_l0']} (measured {w['true_l0']:.2f}), {w['hierarchy_roots']} trees "
        f"x {w['branching']} mutually exclusive children, correlation rank "
        f"{w['correlation_rank']}. SynthSAEBench-16k is d 768, 16,384 features, L0 25: this is a "
        f"smaller size that runs on this CPU."
    )
    print(
        f"SAEs: d_sae {w['d_sae']}, k {w['k']}; {w['samples']:,} training rows in batches of "
        f"{w['batch']}, lr {w['lr']}; {r['seeds']} seeds each; mean ± 95% t interval half-width; "
        f"torch threads {r['torch_threads']} (cpu_count {r['cpu_count']})"
    )
    cols = METRICS
    print(f"{'arch':22s} {'trainer':9s} " + " ".join(f"{c:>18s}" for c in cols))
    for arch, e in r["archs"].items():
        for trainer in ("mechscope", "saelens"):
            cells = " ".join(f"{str(_summ(e[trainer][c])):>18s}" for c in cols)
            print(f"{arch:22s} {trainer:9s} {cells}")
        d = e["mcc_diff"]
        noise = "exceeds" if d["low"] > 0 or d["high"] < 0 else "within"
        print(
            f"{'':22s} MCC mechscope − SAELens {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
            f"(Welch; {noise} seed noise); wall ratio {e['wall_ratio']:.2f} "
            f"({e['wall_ratio_without_data']:.2f} without the shared data pass; CPU-time ratio "
            f"{e['cpu_ratio']:.2f}); goal "
            f"(MCC ≥ SAELens at ≤ ½ wall time) {'met' if e['goal_met'] else 'NOT met'}; "
            f"mechscope MCC vs SAELens's mean_correlation_coefficient max |Δ| "
            f"{e['mcc_agrees_with_saelens']:.1e}"
        )
    print(f"total wall time {r['wall_s']:.0f} s")


def _summ(s: dict[str, Any]) -> Any:
    from saes.seeds import SeedSummary

    return SeedSummary(**s)


if __name__ == "__main__":
    main()
