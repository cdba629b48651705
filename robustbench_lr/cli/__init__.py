"""Command line: `robustbench-lr COMMAND ...` (also `python -m robustbench_lr COMMAND ...`).

Each command lives in its own module exposing `register(subparsers)`, which adds a subparser whose
`func(args) -> int` runs it. User errors (`UserError`) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys

from ..errors import UserError

# Command modules, in the order `--help` lists them.
COMMANDS: tuple[str, ...] = ("models", "train", "evaluate", "report", "visualize", "sweep", "demo")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="robustbench-lr",
        description="Adversarial and geometric robustness of Local Relation Networks and their baselines.",
    )
    parser.add_argument("--version", action="version", version=f"robustbench-lr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "robustbench-lr " + " ".join(shlex.quote(a) for a in argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"robustbench-lr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustbench-lr {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
