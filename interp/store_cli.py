"""``python -m interp.store``: write, inspect and verify activation stores from the shell.

    python -m interp.store write runs/store_l15 --model smollm2-135m --hook blocks.15.hook_resid_post \\
        --tokens 65536 [--corpus shakespeare | --corpus notes.txt ...] [--context-size 128]
    python -m interp.store info runs/store_l15
    python -m interp.store verify runs/store_l15

``write`` resumes a killed store with the same arguments and refuses different ones. A corpus is
``shakespeare`` (the offline text) or one or more UTF-8 text files, one document each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interp._cli import command_parser, run_command

__all__ = ["main"]

_DTYPES = ("float32", "float16", "bfloat16")


def _corpus(specs: list[str]) -> Any:
    from interp.corpus import shakespeare, texts_corpus

    if specs == ["shakespeare"]:
        return shakespeare()
    missing = [s for s in specs if not Path(s).is_file()]
    if missing:
        raise SystemExit(
            f"error: corpus {missing[0]!r} is neither 'shakespeare' nor a text file; pass "
            "--corpus shakespeare or paths to UTF-8 .txt files"
        )
    names = "+".join(Path(s).name for s in specs)
    return texts_corpus((Path(s).read_text(encoding="utf-8") for s in specs), name=names)


def _write(args: argparse.Namespace) -> int:
    import torch

    from interp.hooks import resolve_hooks
    from interp.models import load_model
    from interp.store import ActivationStore

    model = load_model(args.model)
    resolve_hooks(model, args.hook)  # a misspelt hook fails here, before the corpus is read
    store = ActivationStore.write(
        args.path,
        model,
        args.hook,
        _corpus(args.corpus),
        context_size=args.context_size,
        max_tokens=args.tokens,
        forward_max_tokens=args.forward_max_tokens,
        shard_tokens=args.shard_tokens,
        dtype=getattr(torch, args.dtype),
        model_name=args.model,
    )
    print(
        f"{store!r}\nwrote {args.path} (open it with interp.store.ActivationStore({args.path!r}))"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from interp.store import ActivationStore

    store = ActivationStore(args.path)
    m = store.manifest
    size = sum(f.stat().st_size for f in Path(args.path).rglob("*") if f.is_file())
    rows = [
        ("path", str(args.path)),
        ("complete", str(store.complete)),
        ("model", str(m["model"].get("name"))),
        ("hooks", ", ".join(f"{h} (d={store.d(h)})" for h in store.hooks)),
        ("rows", f"{len(store):,}"),
        ("shards", str(len(store.shards))),
        ("context size", str(m["context_size"])),
        ("dtype", m["dtype"]),
        ("data", str(m["data"].get("name"))),
        ("on disk", f"{size / 2**20:.1f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from interp.store import ActivationStore

    store = ActivationStore(args.path)
    store.verify()
    print(f"{args.path}: all {len(store.shards)} shards match their sha256")
    return 0


def main(argv: list[str] | None = None) -> int:
    p, sub = command_parser("python -m interp.store", __doc__)
    w = sub.add_parser("write", help="write (or resume) a store")
    w.add_argument("path", type=Path)
    w.add_argument("--model", required=True, help="smollm2-135m, toy-induction or a local folder")
    w.add_argument("--hook", required=True, nargs="+", help="hook names or globs")
    w.add_argument("--corpus", nargs="+", default=["shakespeare"])
    w.add_argument("--tokens", type=int, default=None, help="stop after this many tokens")
    w.add_argument("--context-size", type=int, default=128)
    w.add_argument(
        "--forward-max-tokens",
        type=int,
        default=1024,
        help="tokens per forward pass (contexts per forward = this // --context-size, at least 1)",
    )
    w.add_argument("--shard-tokens", type=int, default=65536)
    w.add_argument("--dtype", choices=_DTYPES, default="float32")
    w.set_defaults(run=_write)
    for name, fn, text in (
        ("info", _info, "describe a store"),
        ("verify", _verify, "check sha256"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("path", type=Path)
        s.set_defaults(run=fn)
    args = p.parse_args(argv)
    from interp.store import StoreError

    return run_command(args, (ValueError, FileNotFoundError, TypeError, StoreError))
