"""``python -m interp.viz browser RUN_DIR``: a feature browser for a trained SAE, from the shell.

    python -m interp.viz browser runs/sae_l15 [--store runs/store_l15] [--model smollm2-135m]
        [--latents 1000] [--batches 16] [--out runs/sae_l15]

The store defaults to the one the run trained on (its ``config.json``); ``--model`` adds each
latent's logit effects and token strings. Writes ``OUT/feature_browser.html``, one offline file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp._cli import command_parser, run_command

__all__ = ["main"]


def _store_of(run_dir: Path) -> Path:
    from interp._io import read_json

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a training run directory (no config.json): pass --store STORE "
            "and a folder holding a saved SAE"
        )
    store = read_json(cfg_path).get("data", {}).get("store")
    if not store:
        raise ValueError(
            f"the run in {run_dir} trained on a stream, not a store: pass --store STORE "
            "(write one with `python -m interp.store write`)"
        )
    return Path(store)


def _browser(args: argparse.Namespace) -> int:
    from interp.viz.demo import demo_views

    store = args.store or _store_of(args.run_dir)
    model = None
    if args.model:
        from interp.models import load_model

        model = load_model(args.model)
    out = args.out or (args.run_dir if args.run_dir.is_dir() else Path("."))
    (path,) = demo_views(
        args.run_dir, store, out, model=model, max_latents=args.latents, n_batches=args.batches
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, offline")
    return 0


def main(argv: list[str] | None = None) -> int:
    p, sub = command_parser("python -m interp.viz", __doc__)
    b = sub.add_parser("browser", help="feature browser for a saved SAE or a training run")
    b.add_argument("run_dir", type=Path, help="a training run directory or a saved SAE folder")
    b.add_argument("--store", type=Path, default=None)
    b.add_argument("--model", default=None, help="smollm2-135m, toy-induction or a local folder")
    b.add_argument("--latents", type=int, default=1000, help="the first N latents")
    b.add_argument("--batches", type=int, default=None, help="store batches to scan (default all)")
    b.add_argument("--out", type=Path, default=None, help="folder for feature_browser.html")
    b.set_defaults(run=_browser)
    args = p.parse_args(argv)
    from interp.store import StoreError
    from saes.sae import SAELoadError

    return run_command(args, (ValueError, FileNotFoundError, StoreError, SAELoadError))


if __name__ == "__main__":
    raise SystemExit(main())
