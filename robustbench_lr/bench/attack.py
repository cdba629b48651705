"""Benchmark: PGD-step throughput of an LR-Net and its ResNet twin, side by side in one process.

    python -m robustbench_lr.bench attack [--configs 0.25x16,0.25x64,1x16] [--tiny 16,64] [--rounds 20]
        [--rounds-full-width 4] [--steps 5] [--threads N] [--device auto] [--csv FILE]

Every configuration (width x batch) builds `lrnet26_cifar` and `resnet26_cifar` (freshly initialised:
throughput does not depend on the weights), prepares both for attack (eval mode, frozen parameters) and
times a StreamingPGD run (Linf, eps 8/255, `--steps` steps, early stop off, so every image costs every step)
on the same random batch, alternating LR, ResNet, LR, ... for `--rounds` rounds after one warm-up run each.
The step time is the run's wall time / steps (a step = forward, input gradient, sign step, projection).
Full-width configurations (width >= 1) take `--rounds-full-width` rounds (minutes per round on 2 cores).
`--tiny` adds `lrnet_tiny` vs `resnet_tiny` at those batch sizes, compared per GMAC as well. `--floor` adds
a third model to every round: the LR-Net with each LocalRelation2d replaced by the identity on its output
grid, i.e. what the rest of the LR-Net costs; `ratio floor / ResNet` bounds what any LR kernel can reach.

Each round also times one no_grad forward of the batch per model (`fwd_ms`: what query-only attacks such as
Square pay; `fwd_ratio` in the ratio rows is the forward-only throughput ratio).
For each configuration it prints the step time (min and median over rounds), images/s from both, GMACs
per image (models.profile.count_macs, which does not count the LR key/query 1x1 convs; the column
`GMACs+qk` adds them) and GMAC/s, then the LR / ResNet ratios of images/s and of GMAC/s by the minimum and
by the median. The minimum is the least disturbed round of a shared machine; the median says what a
user waits. The load average (1 min) at the start and end of each configuration is printed with it.

On CUDA, --amp (bf16 autocast), --channels-last and --compile switch on the throughput options of
StreamingPGD (not measured on a GPU by this suite so far).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn

from ._timing import environment

CIFAR_PAIR = ("lrnet26_cifar", "resnet26_cifar")
TINY_PAIR = ("lrnet_tiny", "resnet_tiny")


@dataclass(frozen=True)
class Config:
    pair: tuple[str, str]
    width: float
    batch: int
    rounds: int


def key_query_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs of the LR layers' key and query 1x1 convs for one image (count_macs omits them: they are not
    module calls), as computed: keys on the input grid, queries on the full grid then subsampled."""
    from ..layers import LocalRelation2d

    total = 0

    def hook(mod: LocalRelation2d, inp, out) -> None:
        nonlocal total
        if mod.query is not None:
            _, c, h, w = inp[0].shape
            total += c * 2 * mod.groups * h * w

    meta = copy.deepcopy(model).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, LocalRelation2d)]
    with torch.no_grad():
        meta.eval()(torch.zeros(1, *input_size, device="meta"))
    for h in handles:
        h.remove()
    return total


class _Subsample(nn.Module):
    """Stands in for a LocalRelation2d in the `--floor` model: the identity on the layer's output grid."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


def strip_lr(model: nn.Module) -> nn.Module:
    """`model` with every LocalRelation2d replaced by `_Subsample` (in place): what the rest of the network
    costs, i.e. the throughput an LR-Net would reach if its LR layers were free."""
    from ..layers import LocalRelation2d

    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, LocalRelation2d):
                setattr(mod, child_name, _Subsample(child.stride))
    return model


FLOOR = " (LR layers -> identity)"


def _build(name: str, width: float, device: torch.device, channels_last: bool) -> tuple[nn.Module, float, float]:
    from ..attacks import prepare_for_attack
    from ..models import create_model, model_info
    from ..models.profile import count_macs

    base = name.removesuffix(FLOOR)
    model = create_model(base, width=width)
    if base != name:
        model = strip_lr(model)
    size = model_info(base).input_size
    gmacs = count_macs(model, size) / 1e9
    gmacs_qk = gmacs + key_query_macs(model, size) / 1e9
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return prepare_for_attack(model), gmacs, gmacs_qk


def _runner(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, args: argparse.Namespace):
    from ..attacks.pgd import StreamingPGD

    eps = 8 / 255
    ids = torch.arange(len(x))

    def run() -> float:
        pgd = StreamingPGD(model, "linf", eps, 2.5 * eps / steps, steps, early_stop=False, batch_size=len(x),
                           amp=args.amp, channels_last=args.channels_last, compile=args.compile)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pgd(x, y, ids)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps

    return run


def _forward_runner(model: nn.Module, x: torch.Tensor):
    """Seconds of one no_grad forward of the batch (what a query-only attack such as Square pays)."""

    def run() -> float:
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return run


def bench_config(cfg: Config, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Rows of one configuration, measured interleaved: one per model (LR, ResNet[, floor]), then the ratio
    rows (LR / ResNet[, floor / ResNet])."""
    from ..models import model_info

    torch.manual_seed(0)
    c, h, w = model_info(cfg.pair[0]).input_size
    x = torch.rand(cfg.batch, c, h, w, device=device)
    y = torch.randint(0, 10, (cfg.batch,), device=device)
    names = [*cfg.pair, cfg.pair[0] + FLOOR] if getattr(args, "floor", False) else list(cfg.pair)
    built = {name: _build(name, cfg.width, device, args.channels_last) for name in names}
    runs = {name: _runner(built[name][0], x, y, args.steps, args) for name in names}
    fwds = {name: _forward_runner(built[name][0], x) for name in names}
    load0 = os.getloadavg()[0]
    for name in names:  # warm-up (and compilation)
        runs[name]()
        fwds[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    ftimes: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(cfg.rounds):
        for name in names:
            times[name].append(runs[name]())
            ftimes[name].append(fwds[name]())
    load1 = os.getloadavg()[0]
    rows = [_row(cfg, name, times[name], ftimes[name], built[name], (c, h, w), f"{load0:.1f}-{load1:.1f}")
            for name in names]
    rows.append(_ratio(rows[0], rows[1], "ratio LR / ResNet"))
    if len(names) > 2:
        rows.append(_ratio(rows[2], rows[1], "ratio floor / ResNet"))
    return rows


def _row(cfg: Config, name: str, t: list[float], ft: list[float], built: tuple, chw: tuple, load: str) -> dict:
    _, gmacs, gmacs_qk = built
    c, h, w = chw
    tmin, tmed = min(t), statistics.median(t)
    return {"config": f"w{cfg.width:g} b{cfg.batch}", "model": name, "shape": f"{cfg.batch}x{c}x{h}x{w}",
            "rounds": cfg.rounds, "step_ms_min": 1e3 * tmin, "step_ms_median": 1e3 * tmed,
            "img_s_min": cfg.batch / tmin, "img_s_median": cfg.batch / tmed, "GMACs": gmacs, "GMACs+qk": gmacs_qk,
            "GMAC_s_min": gmacs * cfg.batch / tmin, "fwd_ms_min": 1e3 * min(ft),
            "fwd_ms_median": 1e3 * statistics.median(ft), "load": load}


def _ratio(a: dict, b: dict, label: str) -> dict:
    """Throughput ratios a / b (images/s, GMAC/s and forward-only images/s; min and median)."""
    return {"config": a["config"], "model": label, "shape": a["shape"], "rounds": a["rounds"],
            "img_s_min": a["img_s_min"] / b["img_s_min"], "img_s_median": a["img_s_median"] / b["img_s_median"],
            "GMAC_s_min": a["GMAC_s_min"] / b["GMAC_s_min"],
            "GMAC_s_median": (a["GMACs"] * a["img_s_median"]) / (b["GMACs"] * b["img_s_median"]),
            "fwd_ratio_min": b["fwd_ms_min"] / a["fwd_ms_min"],
            "fwd_ratio_median": b["fwd_ms_median"] / a["fwd_ms_median"], "load": a["load"]}


def configs(args: argparse.Namespace) -> list[Config]:
    out = []
    for item in filter(None, args.configs.split(",")):
        width, batch = item.lower().split("x")
        rounds = args.rounds_full_width if float(width) >= 1 else args.rounds
        out.append(Config(CIFAR_PAIR, float(width), int(batch), rounds))
    for batch in filter(None, args.tiny.split(",")):
        out.append(Config(TINY_PAIR, 1.0, int(batch), args.rounds))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench attack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="0.25x16,0.25x64,1x16", help="WIDTHxBATCH of the CIFAR pair, comma-separated")
    ap.add_argument("--tiny", default="16,64", help="batch sizes of lrnet_tiny vs resnet_tiny ('' for none)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rounds-full-width", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps per timed run")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="also time the LR-Net with its LR layers replaced by the identity (what the rest costs)")
    ap.add_argument("--csv", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    from ..utils import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    env = environment(device)
    print("# PGD-step throughput: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# StreamingPGD Linf 8/255, {args.steps} steps per timed run, early stop off, random batch, fresh models, "
          f"eval + frozen parameters; LR and ResNet alternate within each round; amp={args.amp}, "
          f"channels_last={args.channels_last}, compile={args.compile}")
    rows = []
    for cfg in configs(args):
        new = bench_config(cfg, device, args)
        n_rows = len(new)
        rows += new
        with pd.option_context("display.width", 250, "display.max_columns", 20):
            print(pd.DataFrame(rows[-n_rows:]).to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
        print()
    if args.csv:
        from ..utils import write_csv_atomic

        write_csv_atomic(pd.DataFrame(rows), args.csv)
    return 0
