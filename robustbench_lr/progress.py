"""Progress reporting: a tqdm bar on a terminal, one log line per finished bar otherwise.

When stderr (where tqdm draws) is a terminal, `bar(...)` is a tqdm bar with a total, a rate and an ETA. When it is
not (a log file, CI, `nohup`, a captured pipe), per-batch redraws would flood the log with carriage returns, so
the bar is silent while it runs and logs a single line when it closes ("epoch 3/8: 62 batch in 41.2 s
(1.5 batch/s); loss=0.41 acc=88.1%"): one line per epoch, per (model, attack, eps) cell or per (model,
deformation). Callers create one bar per such cell, with its total, and update it as work is done (per batch or
chunk), so a terminal shows a live ETA while a log gets one line per cell.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("robustbench_lr")


class LogBar:
    """tqdm's interface (update, set_postfix, close), logging one summary line on close."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.closed = False

    def update(self, k: int = 1) -> None:
        self.n += k

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        self.postfix = kw

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        dt = time.perf_counter() - self.t0
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        rate = f" ({self.n / dt:.1f} {self.unit}/s)" if dt > 0 and self.n else ""
        extra = "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items()) if self.postfix else ""
        log.info("%s: %s %s in %.1f s%s%s", self.desc, done, self.unit, dt, rate, extra)

    def __enter__(self) -> LogBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def interactive() -> bool:
    """Whether progress is drawn live: stderr, where tqdm writes, is a terminal."""
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


def bar(enabled: bool, total: int | None, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A progress bar (tqdm on a terminal, `LogBar` otherwise), or None when progress is off.

    Args:
        enabled: False gives None (no progress at all).
        total: the units of work the bar will see (gives tqdm its ETA), or None when unknown.
        desc: what the bar counts, e.g. "conv pgd eps=0.1"; also the start of the log line off a terminal.
        unit: the unit of `total` ("batch", "ex", ...).
        leave: keep the finished tqdm bar on screen.
    """
    if not enabled:
        return None
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LogBar(total, desc, unit)


__all__ = ["LogBar", "bar", "interactive"]
