"""Dispatch `python -m robustbench_lr.bench NAME ...` to the benchmark module NAME."""

from __future__ import annotations

import importlib
import logging
import sys

from . import BENCHES


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHES:
        names = ", ".join(sorted(BENCHES))
        msg = f"usage: python -m robustbench_lr.bench {{{names}}} [options]"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown benchmark {argv[0]!r}; choose one of: {names}", file=sys.stderr)
            print(msg, file=sys.stderr)
            return 2
        print(msg)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return importlib.import_module(BENCHES[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
