"""What mechscope's ``python -m`` commands share: a parser with subcommands, and errors from bad
input printed as one ``error:`` line with exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def command_parser(prog: str, doc: str | None) -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser, parser.add_subparsers(dest="command", required=True)


def run_command(args: argparse.Namespace, errors: tuple[type[BaseException], ...]) -> int:
    """Run ``args.run(args)``; an error of the given kinds (bad input) is a one-line message."""
    try:
        return int(args.run(args))
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
