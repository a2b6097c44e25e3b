"""``python -m interp.bench {cache,patching,store-read} [options]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    from interp.bench import cache as cache_bench
    from interp.bench import patching as patching_bench
    from interp.bench import store_read as store_read_bench

    cache_bench.add_arguments(
        sub.add_parser("cache", help="selective-cache overhead and store write throughput")
    )
    patching_bench.add_arguments(
        sub.add_parser("patching", help="residual patching sweep vs transformer_lens.patching")
    )
    store_read_bench.add_arguments(
        sub.add_parser("store-read", help="activation-store read throughput, old reader vs new")
    )
    sub_child = sub.add_parser("_store_child", help=argparse.SUPPRESS)
    cache_bench.add_child_arguments(sub_child)
    args = parser.parse_args(argv)
    if args.name == "cache":
        return cache_bench.run(args)
    if args.name == "patching":
        return patching_bench.run(args)
    if args.name == "store-read":
        return store_read_bench.run(args)
    return cache_bench.run_child(args)


if __name__ == "__main__":
    sys.exit(main())
