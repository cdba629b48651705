"""Benchmark: one training step of an LR-Net and its ResNet twin, side by side in one process.

    python -m robustbench_lr.bench train [--pair lrnet26,resnet26] [--size 224] [--batch 64] [--width 1]
        [--rounds 10] [--threads N] [--device auto] [--amp] [--channels-last] [--csv FILE]

What a user pays to train (clean training; adversarial training multiplies it by the attack's steps, which
`bench attack` measures). A step is: forward in train mode on a random batch of [0, 1] pixels, cross-entropy
against random labels, backward, SGD with momentum and weight decay, gradients set to None. Both models
are freshly initialised (the time does not depend on the weights), warmed up by two steps each, then timed
alternately, one step each per round, for `--rounds` rounds. It prints the step time (min and median over
rounds), images/s, GMACs per image (forward, `models.profile.count_macs`), the peak memory of one step
(CUDA allocator peak; on CPU the profiler's live bytes, skipped at 224 px and above: it costs minutes
there) and the first / second ratio of images/s by the minimum and by the median.

`--size` sets the input's height and width (default: the first model's native size); `--amp` runs the
forward and loss under bf16 autocast on CUDA (parameters and optimizer stay fp32), `--channels-last` puts
models and inputs in NHWC. Neither was measured on a GPU by this suite so far.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._timing import _sync, environment, peak_memory

CPU_MEMORY_MAX_PIXELS = 128 * 128  # above this input size the CPU memory profile of a step is skipped


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], float]:
    """A closure running one SGD training step of `model` on (x, y); returns the loss (synchronises)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-5)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp and x.is_cuda else contextlib.nullcontext

    def step() -> float:
        with autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _build(name: str, width: float, size: int | None, batch: int, device: torch.device, channels_last: bool,
           seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float, tuple[int, int, int]]:
    from ..models import create_model, model_info
    from ..models.profile import count_macs

    torch.manual_seed(seed)
    model = create_model(name, width=width)
    c, h, w = model_info(name).input_size
    if size is not None:
        h = w = size
    gmacs = count_macs(model, (c, h, w)) / 1e9
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, c, h, w, generator=gen)
    y = torch.randint(0, model.num_classes, (batch,), generator=gen)
    model, x, y = model.to(device), x.to(device), y.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, y, gmacs, (c, h, w)


def run(pair: tuple[str, str], width: float, size: int | None, batch: int, rounds: int, device: torch.device,
        amp: bool = False, channels_last: bool = False, memory: bool | None = None) -> list[dict]:
    """Rows: one per model, then the ratio row (first / second). `memory=None` measures the peak memory on
    CUDA always and on CPU below `CPU_MEMORY_MAX_PIXELS`."""
    built = {name: _build(name, width, size, batch, device, channels_last) for name in pair}
    steps = {name: make_step(b[0], b[1], b[2], amp) for name, b in built.items()}
    load0 = os.getloadavg()[0]
    for name in pair:
        for _ in range(2):
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(rounds):
        for name in pair:
            _sync(device)
            t0 = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    load1 = os.getloadavg()[0]
    rows = []
    for name in pair:
        _, x, _, gmacs, (c, h, w) = built[name]
        want_mem = memory if memory is not None else (device.type == "cuda" or h * w <= CPU_MEMORY_MAX_PIXELS)
        peak = peak_memory(steps[name], device) / 2**20 if want_mem else float("nan")
        t = times[name]
        rows.append({"model": name, "width": width, "shape": f"{batch}x{c}x{h}x{w}", "rounds": rounds,
                     "amp": amp, "channels_last": channels_last, "step_ms_min": 1e3 * min(t),
                     "step_ms_median": 1e3 * statistics.median(t), "img_s_min": batch / min(t),
                     "img_s_median": batch / statistics.median(t), "GMACs_fwd": gmacs, "peak_mb": peak,
                     "load": f"{load0:.1f}-{load1:.1f}"})
    a, b = rows
    rows.append({"model": f"ratio {a['model']} / {b['model']}", "width": width, "shape": a["shape"],
                 "rounds": rounds, "amp": amp, "channels_last": channels_last,
                 "img_s_min": a["img_s_min"] / b["img_s_min"], "img_s_median": a["img_s_median"] / b["img_s_median"],
                 "peak_mb": a["peak_mb"] / b["peak_mb"], "load": a["load"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    ap.add_argument("--pair", default="lrnet26,resnet26", help="two registered models, comma-separated")
    ap.add_argument("--size", type=int, default=None, help="input height = width in pixels (default: native)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier of both models")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for forward and loss (CUDA only)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--csv", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    from ..errors import UserError, suggest
    from ..models import list_models
    from ..results import check_out_file
    from ..utils import resolve_device

    pair = tuple(p.strip() for p in args.pair.split(",") if p.strip())
    if len(pair) != 2:
        ap.error(f"--pair needs two models separated by a comma; got {args.pair!r}")
    for name in pair:
        if name not in list_models():
            ap.error(f"unknown model {name!r}.{suggest(name, list_models())}")
    if args.batch < 1 or args.rounds < 1 or (args.size is not None and args.size < 8) or args.width <= 0:
        ap.error("--batch and --rounds must be >= 1, --size >= 8 and --width > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.csv:  # refused before the timing, not after it
            check_out_file(args.csv, (".csv",), option="--csv")
    except UserError as exc:
        ap.error(str(exc))
    env = environment(device)
    print("# training-step throughput: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# SGD step (train mode, cross-entropy, backward, momentum 0.9), random batch, fresh models, the two "
          f"alternating each round; amp={args.amp}, channels_last={args.channels_last}")
    rows = run(pair, args.width, args.size, args.batch, args.rounds, device, args.amp, args.channels_last)  # type: ignore[arg-type]
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    if args.csv:
        from ..utils import write_csv_atomic

        write_csv_atomic(pd.DataFrame(rows), args.csv)
    return 0
