"""Benchmark of the local relation aggregation against the reference and against convolutions.

    python -m robustbench_lr.bench layer [--kernel-sizes 7,3,5,9] [--device auto] [--rounds 10 --calls 5]

For each k it times, in one process and interleaved, the LR aggregation (`impl` default and reference,
inputs x, q, key and the geometry table), a depthwise k x k conv and a dense 3x3 conv on the same x
(N=8, C=64, 32x32, m=8 by default), in three modes:
    train       fwd+bwd, gradients for every input and weight;
    input_grad  fwd+bwd, gradients for the activations only (weights frozen, as in attacks);
    forward     forward under no_grad.
It prints median times with p10-p90, ratios taken within the run, and the peak memory of one call.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from ..layers import lr_ops
from ._timing import environment, interleaved, peak_memory

log = logging.getLogger(__name__)
MODES = ("train", "input_grad", "forward")


def _make_fns(k: int, n: int, c: int, h: int, w: int, m: int, mode: str, impls: tuple[str, ...],
              device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    g = c // m
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape: int, grad: bool) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(grad)

    act_grad = mode != "forward"
    w_grad = mode == "train"
    x = rnd(n, c, h, w, grad=act_grad)
    q = rnd(n, g, h, w, grad=act_grad)
    key = rnd(n, g, h, w, grad=act_grad)
    geo = rnd(g, k * k, grad=w_grad)
    w_dw = rnd(c, 1, k, k, grad=w_grad)
    w_3 = rnd(c, c, 3, 3, grad=w_grad)
    dy = torch.randn(n, c, h, w, generator=gen).to(device=device, dtype=dtype)

    def run(f: Callable[[], torch.Tensor]) -> Callable[[], object]:
        if mode == "forward":
            def call() -> object:
                with torch.no_grad():
                    return f()
        else:
            def call() -> object:
                f().backward(dy)
                for t in (x, q, key, geo, w_dw, w_3):
                    t.grad = None
        return call

    fns: dict[str, Callable[[], object]] = {}
    for impl in impls:
        name = lr_ops.resolve_impl(impl, device)
        fns[f"lr[{name}]"] = run(lambda name=name: lr_ops.local_relation(
            x, q, key, geo, kernel_size=k, appearance="sqdiff", border="mask", groups=g, impl=name))
    fns[f"dwconv{k}x{k}"] = run(lambda: F.conv2d(x, w_dw, padding=k // 2, groups=c))
    fns["conv3x3"] = run(lambda: F.conv2d(x, w_3, padding=1))
    return fns


def bench_layer(kernel_sizes: tuple[int, ...] = (7, 3, 5, 9), n: int = 8, c: int = 64, h: int = 32, w: int = 32,
                m: int = 8, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                impls: tuple[str, ...] = ("auto", "reference"), modes: tuple[str, ...] = MODES, rounds: int = 5,
                calls: int = 3) -> pd.DataFrame:
    """Rows (k, mode, method, median_ms, p10_ms, p90_ms, peak_mb, x_dwconv, x_conv3x3, x_reference)."""
    device = torch.device(device)
    rows = []
    for k in kernel_sizes:
        for mode in modes:
            fns = _make_fns(k, n, c, h, w, m, mode, impls, device, dtype)
            times = interleaved(fns, device, rounds=rounds, calls=calls)
            peaks = {name: peak_memory(fn, device) for name, fn in fns.items()}
            ref = next((nm for nm in fns if nm == "lr[reference]"), None)
            for name, t in times.items():
                rows.append({
                    "k": k, "mode": mode, "method": name, "median_ms": 1e3 * t.median,
                    "p10_ms": 1e3 * t.quantile(0.1), "p90_ms": 1e3 * t.quantile(0.9), "peak_mb": peaks[name] / 2**20,
                    "x_dwconv": t.median / times[f"dwconv{k}x{k}"].median,
                    "x_conv3x3": t.median / times["conv3x3"].median,
                    "ref_speedup": (times[ref].median / t.median) if ref else float("nan"),
                    "mem_vs_ref": (peaks[name] / peaks[ref]) if ref and peaks[ref] else float("nan"),
                })
            log.info("k=%d %s done", k, mode)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench layer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-sizes", default="7,3,5,9")
    ap.add_argument("--shape", default="8,64,32,32", help="N,C,H,W")
    ap.add_argument("--channel-sharing", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--impls", default="auto,reference", help="LR implementations to time")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--csv", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    from ..utils import resolve_device, write_csv_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n, c, h, w = (int(v) for v in args.shape.split(","))
    df = bench_layer(tuple(int(v) for v in args.kernel_sizes.split(",")), n, c, h, w, args.channel_sharing, device,
                     getattr(torch, args.dtype), tuple(args.impls.split(",")), tuple(args.modes.split(",")),
                     args.rounds, args.calls)
    env = environment(device)
    print("# local relation layer benchmark: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# shape N,C,H,W={n},{c},{h},{w}  m={args.channel_sharing}  dtype={args.dtype}  "
          f"rounds={args.rounds} x calls={args.calls} (interleaved); appearance=sqdiff, border=mask")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.csv:
        write_csv_atomic(df, args.csv)
    return 0
