"""``python -m saes train --config FILE [section.field=value ...] [--resume]`` and
``python -m saes eval RUN_DIR [--store HELD_OUT] [--json]``.

A config file is JSON with three sections and the run directory::

    {"run_dir": "runs/sae_l15",
     "sae":   {"d_sae": 4608, "activation": "topk", "k": 32},        # d_in defaults to the data's width
     "train": {"total_steps": 2000, "batch_size": 4096, "lr": 2e-4},
     "data":  {"store": "runs/demo/store_l15"}}

A transcoder run adds ``"transcoder": {"layer": 3}`` (it reads ``blocks.3.ln2.hook_normalized``
and predicts ``blocks.3.hook_mlp_out``; a store must hold both; docs/transcoders.md).

Overrides on the command line use dotted names and JSON values: ``train.lr=1e-3 sae.k=16``.
``eval`` prints a table (``--json``: the full report as JSON) and warns when it evaluates on the
training store, whose numbers are in-sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from saes.config import ConfigError
from saes.sae import SAELoadError
from saes.transcoder import TranscoderModelError, TranscoderSiteError

log = logging.getLogger("saes")


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        section, dot, field = key.partition(".")
        if not sep or not dot or section not in ("sae", "train", "data", "transcoder"):
            raise ConfigError(
                f"override {pair!r} must look like section.field=value with section sae, train, "
                "data or transcoder"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string such as a path
        out.setdefault(section, {})[field] = value
    return out


def load_run_config(path: str | None, overrides: list[str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"sae": {}, "train": {}, "data": {}}
    if path is not None:
        try:
            loaded = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
        unknown = set(loaded) - {"sae", "train", "data", "run_dir", "transcoder"}
        if unknown:
            raise ConfigError(
                f"unknown config sections {sorted(unknown)}; expected sae, train, data, run_dir "
                "and, for a transcoder, transcoder"
            )
        cfg.update(loaded)
    for section, fields in parse_overrides(overrides).items():
        cfg[section] = {**cfg.get(section, {}), **fields}
    if not cfg.get("run_dir"):
        raise ConfigError("the config needs a run_dir (where checkpoints, metrics and the SAE go)")
    return cfg


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """The headline numbers of an ``evaluate_run`` report as an aligned ``metric | value`` table."""
    rec, ce = report["reconstruction"], report.get("ce")
    where = "training store" if report.get("in_sample") else "held-out"
    rows = [
        ("hook", report["hook"]),
        *([("predicts (transcoder)", report["hook_out"])] if report.get("hook_out") else []),
        ("store", f"{report['store']} ({where})"),
        ("tokens evaluated", f"{rec['n_tokens']:,}"),
        ("L0 (active latents per token)", _num(rec["l0"], 2)),
        ("MSE (squared error per token)", _num(rec["mse"])),
        ("explained variance", _num(rec["explained_variance"])),
        ("FVU (1 - explained variance)", _num(rec["fvu"])),
        ("cosine similarity", _num(rec["cosine_similarity"])),
        ("dead latents", _pct(rec["dead_fraction"])),
        (
            f"dense latents (on > {100 * rec['dense_threshold']:g}% of tokens)",
            _pct(rec["dense_fraction"]),
        ),
    ]
    if ce is not None:
        rows += [
            ("CE contexts", str(ce["n_contexts"])),
            ("CE loss, clean (nats)", _num(ce["ce_clean"])),
            ("CE loss, SAE spliced (nats)", _num(ce["ce_sae"])),
            ("CE loss, zero-ablated (nats)", _num(ce["ce_zero"])),
            ("CE loss recovered", _pct(ce["loss_recovered"])),
            ("KL to clean, SAE spliced (nats)", _num(ce["kl_sae"])),
            ("KL to clean, zero-ablated (nats)", _num(ce["kl_zero"])),
        ]
    else:
        rows.append(("CE loss recovered", "skipped (--ce-contexts 0)"))
    rows.insert(0, ("metric", "value"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}} | {value}" for name, value in rows]
    lines.insert(1, "-" * width + "-+-" + "-" * max(len(v) for _, v in rows))
    return "\n".join(lines)


def _saved(run_dir: Path) -> str:
    final = str(run_dir / "final")
    return (
        f"saved the SAE to {final}\n"
        f"  load it:     from saes import SAE; sae = SAE.load({final!r})\n"
        f"  evaluate it: python -m saes eval {run_dir} --store HELD_OUT_STORE"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an SAE from a config file")
    train.add_argument("--config", help="JSON config file")
    train.add_argument(
        "--resume", action="store_true", help="continue from the run's latest checkpoint"
    )
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("overrides", nargs="*", help="section.field=value")
    ev = sub.add_parser("eval", help="evaluate a trained run")
    ev.add_argument("run_dir")
    ev.add_argument("--batches", type=int, default=8)
    ev.add_argument("--batch-size", type=int, default=4096)
    ev.add_argument(
        "--ce-contexts", type=int, default=32, help="contexts for CE loss recovered (0: skip)"
    )
    ev.add_argument(
        "--store", help="evaluate on this store (held-out data) instead of the training one"
    )
    ev.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from saes.run import evaluate_run, train_run

    try:
        if args.command == "train":
            cfg = load_run_config(args.config, args.overrides)
            train_run(cfg, resume=args.resume, progress=not args.no_progress)
            print(_saved(Path(cfg["run_dir"])))
        else:
            report = evaluate_run(
                args.run_dir,
                n_batches=args.batches,
                batch_size=args.batch_size,
                n_ce_contexts=args.ce_contexts,
                store_path=args.store,
            )
            if report["in_sample"]:
                print(
                    f"warning: evaluating on the training store {report['store']}: these numbers "
                    "are in-sample (the SAE was trained on these activations); pass --store with "
                    "a held-out store for numbers that generalise",
                    file=sys.stderr,
                )
            print(json.dumps(report, indent=2) if args.json else format_report(report))
    except (ConfigError, SAELoadError, TranscoderModelError, TranscoderSiteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
