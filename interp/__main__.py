"""``python -m interp replay RUN_DIR``: make a saved artifact again and compare its numbers.

Exit status 0 when every number agrees within the tolerance, 1 when one differs, 2 when the
artifact cannot be replayed (no recipe, an argument that was user code, a data file gone or
changed, a different model).
"""

from __future__ import annotations

import argparse
import sys

from interp._cli import command_parser, run_command


def _replay(args: argparse.Namespace) -> int:
    from interp.replay import replay

    model = None
    if args.model is not None:
        from interp.models import load_model

        model = load_model(args.model, backend=args.backend)
    report = replay(args.run_dir, model=model, atol=args.atol, rtol=args.rtol)
    print(report.table())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser, sub = command_parser("python -m interp", __doc__)
    p = sub.add_parser("replay", help="rerun a saved artifact and compare old and new numbers")
    p.add_argument("run_dir", help="a folder with run.json (a saved result, vectors or sweep)")
    p.add_argument(
        "--model",
        help="the model, where the artifact's was built in code (checked by weight fingerprint)",
    )
    p.add_argument("--backend", choices=("hooked", "bridge"), default=None)
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    p.set_defaults(run=_replay)
    args = parser.parse_args(argv)
    from interp.recipe import NotReplayableError

    return run_command(args, (NotReplayableError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
