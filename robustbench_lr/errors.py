"""Error types shared by the library and the CLI.

`UserError` marks a problem with what the user asked for (a bad argument, a missing file, a corrupt
checkpoint). It subclasses `ValueError`, so library callers can catch it as such; the CLI prints its
message on one line, without a traceback, and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """Bad input from the user: printed without a traceback by the CLI."""


def suggest(value: object, allowed: Iterable[object], cutoff: float = 0.6) -> str:
    """' Did you mean 'x', 'y'?' for the close matches of a string among `allowed`, else ''."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [a for a in allowed if isinstance(a, str)], n=3, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise `UserError` naming `name`, the allowed values and close matches if `value` is not among them."""
    allowed = list(allowed)
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise UserError(f"{name}={value!r} is not supported; allowed values: {shown}.{suggest(value, allowed)}")


def check_odd_kernel(name: str, k: object) -> int:
    """Validate an odd, positive integer kernel size and return it."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise UserError(f"{name} must be an odd integer >= 1 (e.g. 3, 5, 7, 9); got {k!r}.")
    return k


def check_positive_int(name: str, value: object) -> int:
    """Validate an integer >= 1 (bools rejected) and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer; got {value!r}.")
    return value


def check_bool(name: str, value: object) -> bool:
    """Validate a bool and return it."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False; got {value!r}.")
    return value
