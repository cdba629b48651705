"""Measurement helpers for the benchmarks: interleaved timing and peak memory.

Protocol (docs/performance.md §8): all methods run in one process on the same inputs, warmed up, then in
R rounds that call every method M times in turn, so drift and noise hit all of them alike. Ratios are
taken between the medians, and between the minima, of the same run (on a shared machine the minimum is the
least disturbed call, the median what a user waits). Peak memory is the CUDA allocator's peak on GPU; on CPU it is the
peak of live bytes allocated during one call, reconstructed from the profiler's memory events.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    """Per-call wall times in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples)
        return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device, rounds: int = 10, calls: int = 5,
                warmup: int = 2) -> dict[str, Timing]:
    """Time every function `rounds * calls` times, interleaved round-robin, after `warmup` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    out = {name: Timing([]) for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls):
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                out[name].samples.append(time.perf_counter() - t0)
    return out


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated during one call of `fn`, above what was live before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda t: t[0],
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def environment(device: torch.device) -> dict[str, str]:
    """What the figures depend on: device, threads, versions."""
    env = {"torch": torch.__version__, "device": str(device), "threads": str(torch.get_num_threads())}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        try:
            with open("/proc/cpuinfo") as fh:
                names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
            env["cpu"] = names[0] if names else "unknown"
        except OSError:
            env["cpu"] = "unknown"
    return env
