"""Benchmark: where one PGD step of a model spends its time, by part of the network (torch.profiler).

    python -m robustbench_lr.bench profile [--models lrnet26_cifar,resnet26_cifar] [--width 0.25] [--batch 16]
        [--steps 10] [--by-size] [--threads N]

One PGD step is what an attack pays per iteration: a forward and the gradient of the summed cross-entropy
with respect to the input only (model.eval(), parameters frozen). The step is profiled `--steps` times per
model (after warm-up) and the profiler's self CPU time of every op is attributed to a part of the network:

    conv kxk (spatial)     the k x k convolutions (ResNet's 3x3; the stem's 7x7 where there is one)
    conv 1x1               bottleneck reduce/expand, downsample and stem 1x1 convolutions
    LR: key/query conv     the fused key + query 1x1 conv of each LocalRelation2d, its slicing and the
                           backward of both
    LR: geometry prior     the geometry MLP (or table) evaluated for the layer
    LR: aggregation        the aggregation kernel (forward and backward) and its layout copies
    LR: output 1x1 conv    the trailing 1x1 conv of each LocalRelation2d
    BatchNorm, ReLU        as named
    other                  input normalisation, residual adds, pooling, classifier and loss

Forward ops are attributed by module scope (record_function scopes opened by forward hooks); backward ops
through the autograd sequence number that links each backward node to the forward op that created it.
`copy/fill ms` is the part of a row spent in copy_, fill_, zero_, cat and clone (layout conversions and
zero-initialised buffers). Times include the profiler's overhead (a few microseconds per op), so the table
is for shares; step times are the interleaved `min`/`median` of plain unprofiled steps over `--rounds`.
With `--by-size`, LR and conv rows are split by the spatial size of their input.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._timing import environment

log = logging.getLogger(__name__)
SCOPE = "scope::"
COPY_OPS = ("aten::copy_", "aten::fill_", "aten::zero_", "aten::cat", "aten::clone", "aten::zeros",
            "aten::zeros_like")
ORDER = ("conv kxk (spatial)", "conv 1x1", "LR: key/query conv", "LR: geometry prior", "LR: aggregation",
         "LR: output 1x1 conv", "BatchNorm", "ReLU", "other")


def pgd_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One attack step's gradient work: d sum CE(model(x), y) / d x (parameters must be frozen)."""

    def step() -> torch.Tensor:
        xa = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        return g

    return step


def _size(args: tuple) -> str:
    t = args[0] if args and isinstance(args[0], torch.Tensor) else None
    return f" @{t.shape[-2]}x{t.shape[-1]}" if t is not None and t.dim() == 4 else ""


def _install_scopes(model: nn.Module, by_size: bool) -> Callable[[], None]:
    """Forward hooks (and method wrappers on LocalRelation2d) opening profiler scopes; returns an undo."""
    from ..layers import LocalRelation2d

    handles, patched, stack = [], [], []

    def label_of(mod: nn.Module, parent_lr: bool) -> str | None:
        if isinstance(mod, LocalRelation2d):
            return "LR: aggregation"
        if isinstance(mod, nn.Conv2d):
            if parent_lr:
                return "LR: output 1x1 conv"
            return "conv 1x1" if max(mod.kernel_size) == 1 else "conv kxk (spatial)"
        if isinstance(mod, nn.BatchNorm2d):
            return "BatchNorm"
        if isinstance(mod, nn.ReLU):
            return "ReLU"
        return None

    def enter(label: str, args: tuple) -> None:
        rf = torch.profiler.record_function(SCOPE + label + (_size(args) if by_size else ""))
        rf.__enter__()
        stack.append(rf)

    def leave() -> None:
        stack.pop().__exit__(None, None, None)

    lr_children = {id(m.proj) for m in model.modules() if isinstance(m, LocalRelation2d)}
    for mod in model.modules():
        label = label_of(mod, id(mod) in lr_children)
        if label is None:
            continue
        handles.append(mod.register_forward_pre_hook(lambda m, a, label=label: enter(label, a)))
        handles.append(mod.register_forward_hook(lambda m, a, o: leave()))
        if isinstance(mod, LocalRelation2d):
            qk = "_qk" if hasattr(mod, "_qk") else "_embed"  # older versions project inside _embed
            for meth, lab in ((qk, "LR: key/query conv"), ("geometry_prior", "LR: geometry prior")):
                orig = getattr(mod, meth)

                def wrapped(*a, _orig=orig, _lab=lab, **kw):
                    enter(_lab, a)
                    try:
                        return _orig(*a, **kw)
                    finally:
                        leave()

                setattr(mod, meth, wrapped)
                patched.append((mod, meth))

    def undo() -> None:
        for h in handles:
            h.remove()
        for mod, meth in patched:
            delattr(mod, meth)

    return undo


def _scope_of(ev) -> str | None:
    while ev is not None:
        if ev.name.startswith(SCOPE):
            return ev.name[len(SCOPE):]
        ev = ev.cpu_parent
    return None


def _root(ev):
    while ev.cpu_parent is not None:
        ev = ev.cpu_parent
    return ev


def attribute(events, steps: int) -> dict[str, dict[str, float]]:
    """{row: {"fwd": ms, "bwd": ms, "copy": ms}} per step from profiler FunctionEvents."""
    # Ops that create no autograd node carry the number the next node will get, so the last forward op
    # (in start order) with a given number is the one whose backward node has it.
    fwd_scope: dict[int, str] = {}
    for ev in sorted(events, key=lambda e: e.time_range.start):
        if ev.sequence_nr >= 0 and not _root(ev).name.startswith("autograd::engine"):
            fwd_scope[ev.sequence_nr] = _scope_of(ev) or "other"
    rows: dict[str, dict[str, float]] = defaultdict(lambda: {"fwd": 0.0, "bwd": 0.0, "copy": 0.0})
    for ev in events:
        if ev.name.startswith(SCOPE):
            continue
        root = _root(ev)
        if root.name.startswith("autograd::engine"):
            row, part = fwd_scope.get(root.sequence_nr, "other"), "bwd"
        else:
            row, part = _scope_of(ev) or "other", "fwd"
        ms = ev.self_cpu_time_total / 1e3 / steps
        rows[row][part] += ms
        if ev.name in COPY_OPS:
            rows[row]["copy"] += ms
    return dict(rows)


def profile_step(step: Callable[[], object], model: nn.Module, steps: int,
                 by_size: bool) -> dict[str, dict[str, float]]:
    """Attributed per-step times of `step` (see `attribute`)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    from torch.profiler import ProfilerActivity, profile

    undo = _install_scopes(model, by_size)
    try:
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    finally:
        undo()
    return attribute(prof.events(), steps)


def step_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call, interleaved round-robin (one call of each per round)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def _row_key(name: str) -> tuple[int, str]:
    base = name.split(" @")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def format_table(rows: dict[str, dict[str, float]]) -> list[str]:
    total = sum(r["fwd"] + r["bwd"] for r in rows.values()) or 1.0
    lines = [f"{'part':34s} {'fwd ms':>8s} {'bwd ms':>8s} {'total':>8s} {'share':>6s} {'copy/fill ms':>12s}"]
    for name in sorted(rows, key=_row_key):
        r = rows[name]
        t = r["fwd"] + r["bwd"]
        lines.append(f"{name:34s} {r['fwd']:8.2f} {r['bwd']:8.2f} {t:8.2f} {100 * t / total:5.1f}% {r['copy']:12.2f}")
    lines.append(f"{'total (profiled)':34s} {sum(r['fwd'] for r in rows.values()):8.2f} "
                 f"{sum(r['bwd'] for r in rows.values()):8.2f} {total:8.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lrnet26_cifar,resnet26_cifar")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="profiled steps per model")
    ap.add_argument("--rounds", type=int, default=20, help="unprofiled interleaved rounds for the step times")
    ap.add_argument("--by-size", action="store_true", help="split rows by the input's spatial size")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    from ..models import create_model, model_info

    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models.split(",")
    torch.manual_seed(0)
    models, fns = {}, {}
    for name in names:
        model = create_model(name, width=args.width).eval().requires_grad_(False)  # = attacks.prepare_for_attack
        c, h, w = model_info(name).input_size
        x = torch.rand(args.batch, c, h, w)
        y = torch.randint(0, 10, (args.batch,))
        models[name], fns[name] = model, pgd_step_fn(model, x, y)
    times = step_times(fns, args.rounds)
    env = environment(torch.device("cpu"))
    print("# PGD-step profile: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# width {args.width}, batch {args.batch}, input gradient only (eval, frozen parameters); "
          f"{args.steps} profiled steps per model, step times over {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in names:
        t = times[name]
        print(f"\n## {name}: step min {1e3 * min(t):.2f} ms, median {1e3 * statistics.median(t):.2f} ms")
        for line in format_table(profile_step(fns[name], models[name], args.steps, args.by_size)):
            print(line)
    if len(names) == 2:
        a, b = names
        print(f"\nthroughput ratio {a} / {b}: min {min(times[b]) / min(times[a]):.3f}, "
              f"median {statistics.median(times[b]) / statistics.median(times[a]):.3f}")
    return 0
