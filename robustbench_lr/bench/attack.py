"""Benchmark: attack throughput of an LR-Net and its ResNet twin, side by side in one process.

    python -m robustbench_lr.bench attack [--models lrnet26_cifar,resnet26_cifar] [--batch 32] [--steps 20]

Times PGD-20 (Linf, eps 8/255) on random CIFAR-sized images for freshly initialised models (throughput does not
depend on the weights), interleaved over rounds, and prints images/s per model and the LR / ResNet ratio.
Early stopping is off here, so every image costs all the steps and the rates compare the networks, not their
robustness. On CUDA, --amp (bf16 autocast), --channels-last and --compile switch on the throughput options of
StreamingPGD.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..attacks.pgd import StreamingPGD
from ..attacks.sweep import prepare_for_attack
from ..models import create_model, model_info
from ._timing import environment


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench attack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="lrnet26_cifar,resnet26_cifar")
    ap.add_argument("--width", type=float, default=1.0, help="width multiplier of the models")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    from ..utils import resolve_device

    device = resolve_device(args.device)
    names = args.models.split(",")
    torch.manual_seed(0)
    models = {}
    for name in names:
        m = create_model(name, width=args.width).to(device)
        if args.channels_last:
            m = m.to(memory_format=torch.channels_last)
        models[name] = prepare_for_attack(m)
    c, h, w = model_info(names[0]).input_size
    x = torch.rand(args.batch, c, h, w, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    ids = torch.arange(args.batch)
    eps = 8 / 255

    def run(name: str) -> float:
        pgd = StreamingPGD(models[name], "linf", eps, 2.5 * eps / args.steps, args.steps, early_stop=False,
                           batch_size=args.batch, amp=args.amp, channels_last=args.channels_last,
                           compile=args.compile)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pgd(x, y, ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for name in names:  # warm-up (and compilation)
        run(name)
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            times[name].append(run(name))
    env = environment(device)
    print("# attack throughput: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# PGD-{args.steps} Linf eps=8/255, batch {args.batch} of {c}x{h}x{w}, width {args.width}, early stop off, "
          f"amp={args.amp}, channels_last={args.channels_last}, compile={args.compile}; {args.rounds} rounds interleaved")
    rates = {}
    for name in names:
        med = statistics.median(times[name])
        rates[name] = args.batch / med
        print(f"{name:24s} {rates[name]:9.1f} images/s  (median {med:.3f} s per batch of {args.batch})")
    if len(names) == 2:
        a, b = names
        print(f"ratio {a} / {b}: {rates[a] / rates[b]:.3f}")
    return 0
