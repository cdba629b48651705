"""Command line: `robustbench-lr COMMAND ...` (also `python -m robustbench_lr COMMAND ...`).

Each command lives in its own module exposing `register(subparsers)`, which adds a subparser whose
`func(args) -> int` runs it: parse the arguments, build a config, validate everything (inputs, then the output
location) before any training or attacking, run a runner, hand its rows to `results`, print. User errors
(`UserError`) print one line and exit 2, without a traceback; Ctrl-C at any point (start-up included) prints one
line and exits 130. Command modules import the heavy libraries (torch, ...) only inside their functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable

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
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Refuse abbreviated options in every (sub)command: otherwise `demo --eps 0.1` silently matches
    `--eps-warmup-epochs`, and a typo'd option is taken for another one instead of being refused."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    for noisy in ("matplotlib", "PIL", "fontTools"):  # e.g. matplotlib's one-off "generated new fontManager"
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None, on_start: Callable[[], object] | None = None) -> int:
    from ..errors import UserError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "robustbench-lr " + " ".join(shlex.quote(a) for a in argv)
    _logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if on_start is not None:
        on_start()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"robustbench-lr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a Ctrl-C during a lazy import can surface as another exception
        if _caused_by_interrupt(exc):
            raise KeyboardInterrupt from None
        raise


def _caused_by_interrupt(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _interrupted_while_starting(signum: int, frame: object) -> None:
    # While the libraries load, a KeyboardInterrupt can surface as another exception (e.g. a RuntimeError out of
    # a class body of pandas); nothing has been written yet, so leave at once with one line.
    sys.stderr.write("robustbench-lr: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    """Console-script entry point: Ctrl-C anywhere (also while the libraries load) is one line, exit 130.

    Until the command starts, Ctrl-C exits immediately; while it runs, it raises KeyboardInterrupt as usual, so
    temporary files are removed on the way out (atomic writes) and finished cells stay saved.
    """
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        code = main(on_start=lambda: signal.signal(signal.SIGINT, previous))
    except KeyboardInterrupt:
        print("robustbench-lr: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
