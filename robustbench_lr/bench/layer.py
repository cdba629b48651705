"""Benchmark of the local relation aggregation against the reference and against convolutions.

    python -m robustbench_lr.bench layer [--kernel-sizes 7,3,5,9] [--device auto] [--rounds 10 --calls 5]

For each k it times, in one process and interleaved, the LR aggregation (`impl` default and reference,
inputs x, q, key and the geometry table), the whole `LocalRelation2d` module (`layer`: key/query 1x1
projection, geometry MLP, aggregation and the output 1x1 conv, bias off as in the models), a depthwise
k x k conv and a dense 3x3 conv on the same x (N=8, C=64, 32x32, m=8 by default), in four modes:
    train       fwd+bwd, gradients for every input and weight;
    input_grad  fwd+bwd, gradients for the activations only (weights frozen, as in attacks);
    forward     forward under no_grad;
    forward_grad  forward with every input requiring grad (the graph is built, nothing is back-propagated).
In `train` the module's parameters require grad, in the other modes they are frozen (as in attacks). The
no_grad forward must not be slower than the forward with grad (docs/performance.md saw that trap on the
unfold path); the bench prints that ratio per method. It prints median and minimum times with p10-p90,
ratios to the convs taken within the run by both estimators (`x_conv3x3` medians, `x_conv3x3_min` minima),
and the peak memory of one call.

On CUDA it also measures the device copy bandwidth in the same run (a 1 GiB `copy_`, bytes read plus
written per second; docs/performance.md §8.5) and adds, for the forward rows, the achieved bandwidth
`fwd_GBps` = ideal bytes / median time and `fwd_bw_frac` = that / copy bandwidth. Ideal bytes read and
write every tensor once: LR (C + G)(H W + Ho Wo) N elem_size, i.e. (2C + 2G) H W N elem_size at stride 1
(x and key read, q read, y written); the convs 2 C H W N elem_size plus their weights. Times include the
launch overhead (synchronise around each call), so small shapes understate the kernels' bandwidth; use
e.g. `--shape 256,64,32,32 --impls triton,shift,reference` for the roofline comparison.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from ..layers import LocalRelation2d, lr_ops
from ._timing import environment, interleaved, peak_memory

log = logging.getLogger(__name__)
MODES = ("train", "input_grad", "forward", "forward_grad")


def _make_fns(k: int, n: int, c: int, h: int, w: int, m: int, mode: str, impls: tuple[str, ...],
              device: torch.device, dtype: torch.dtype, with_layer: bool = True) -> dict[str, Callable[[], object]]:
    g = c // m
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape: int, grad: bool) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_(grad)

    act_grad = mode != "forward"
    w_grad = mode in ("train", "forward_grad")
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
        elif mode == "forward_grad":
            def call() -> object:
                return f()
        else:
            def call() -> object:
                f().backward(dy)
                for t in (x, q, key, geo, w_dw, w_3):
                    t.grad = None
                if with_layer:
                    layer.zero_grad(set_to_none=True)
        return call

    fns: dict[str, Callable[[], object]] = {}
    for impl in impls:
        name = lr_ops.resolve_impl(impl, device)
        fns[f"lr[{name}]"] = run(lambda name=name: lr_ops.local_relation(
            x, q, key, geo, kernel_size=k, appearance="sqdiff", border="mask", groups=g, impl=name))
    if with_layer:
        torch.manual_seed(0)
        layer = LocalRelation2d(c, k, m, bias=False).to(device=device, dtype=dtype).requires_grad_(mode == "train")
        fns["layer"] = run(lambda: layer(x))
    fns[f"dwconv{k}x{k}"] = run(lambda: F.conv2d(x, w_dw, padding=k // 2, groups=c))
    fns["conv3x3"] = run(lambda: F.conv2d(x, w_3, padding=1))
    return fns


def copy_bandwidth(device: torch.device, nbytes: int = 2**30, reps: int = 10) -> float:
    """Device copy bandwidth in GB/s: 2 * nbytes (read + write) over the median time of `dst.copy_(src)`."""
    device = torch.device(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times) / 1e9


def ideal_forward_bytes(method: str, k: int, n: int, c: int, h: int, w: int, m: int, elem: int,
                        stride: int = 1) -> float:
    """Bytes a forward must move at least: each input read once, the output written once."""
    if method.startswith("lr[") or method == "layer":
        g = c // m
        ho, wo = lr_ops.output_size(h, w, stride)
        return float((c + g) * (h * w + ho * wo) * n * elem)  # x, key read; q read, y written
    weights = c * k * k if method.startswith("dwconv") else c * c * 9
    return float((2 * c * h * w * n + weights) * elem)


def _rows(k: int, mode: str, times: dict, peaks: dict) -> list[dict]:
    """One row per method: times (ms), peak memory and ratios to the convs and the reference (medians, minima)."""
    ref = "lr[reference]" if "lr[reference]" in times else None
    dw, c3 = times[f"dwconv{k}x{k}"], times["conv3x3"]
    rows = []
    for name, t in times.items():
        rows.append({
            "k": k, "mode": mode, "method": name, "median_ms": 1e3 * t.median, "min_ms": 1e3 * t.min,
            "p10_ms": 1e3 * t.quantile(0.1), "p90_ms": 1e3 * t.quantile(0.9), "peak_mb": peaks[name] / 2**20,
            "x_dwconv": t.median / dw.median, "x_dwconv_min": t.min / dw.min,
            "x_conv3x3": t.median / c3.median, "x_conv3x3_min": t.min / c3.min,
            "ref_speedup": (times[ref].median / t.median) if ref else float("nan"),
            "mem_vs_ref": (peaks[name] / peaks[ref]) if ref and peaks[ref] else float("nan"),
        })
    return rows


def bench_layer(kernel_sizes: tuple[int, ...] = (7, 3, 5, 9), n: int = 8, c: int = 64, h: int = 32, w: int = 32,
                m: int = 8, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                impls: tuple[str, ...] = ("auto", "reference"), modes: tuple[str, ...] = MODES, rounds: int = 5,
                calls: int = 3, with_layer: bool = True) -> pd.DataFrame:
    """Rows (k, mode, method, median_ms, min_ms, p10_ms, p90_ms, peak_mb, x_dwconv[_min], x_conv3x3[_min],
    ref_speedup, mem_vs_ref), on CUDA also fwd_GBps and fwd_bw_frac (NaN outside the forward mode) and
    df.attrs["copy_GBps"]. Method `layer` is the whole LocalRelation2d."""
    device = torch.device(device)
    copy_gbps = copy_bandwidth(device) if device.type == "cuda" else None
    elem = torch.empty((), dtype=dtype).element_size()
    rows = []
    for k in kernel_sizes:
        for mode in modes:
            fns = _make_fns(k, n, c, h, w, m, mode, impls, device, dtype, with_layer)
            times = interleaved(fns, device, rounds=rounds, calls=calls)
            peaks = {name: peak_memory(fn, device) for name, fn in fns.items()}
            new = _rows(k, mode, times, peaks)
            if copy_gbps is not None:  # CUDA only: the CPU table keeps its columns
                for row in new:
                    gbps = (ideal_forward_bytes(row["method"], k, n, c, h, w, m, elem) / (row["median_ms"] / 1e3) / 1e9
                            if mode == "forward" else float("nan"))
                    row.update({"fwd_GBps": gbps, "fwd_bw_frac": gbps / copy_gbps})
            rows += new
            log.info("k=%d %s done", k, mode)
    df = pd.DataFrame(rows)
    if copy_gbps is not None:
        df.attrs["copy_GBps"] = copy_gbps
    return df


TARGETS = (  # (mode, method, reference, bound): the performance issue's targets at k = 7
    ("train", "layer", "dwconv7x7", 1.2),
    ("forward", "layer", "conv3x3", 2.0),
    ("input_grad", "aggregation", "conv3x3", 1.0),  # the 1.56x of the issue was the aggregation's
    ("input_grad", "layer", "conv3x3", 1.0),
)


def _target_rows(df: pd.DataFrame, mode: str, method: str) -> pd.DataFrame:
    """Rows of `method` at k = 7: 'layer' is the whole module, 'aggregation' the default fast kernel
    (the first lr[...] row that is not the reference)."""
    sel = df[(df.k == 7) & (df["mode"] == mode)]
    if method == "aggregation":
        return sel[sel.method.str.startswith("lr[") & (sel.method != "lr[reference]")].head(1)
    return sel[sel.method == method]


def print_targets(df: pd.DataFrame) -> None:
    """The targets of the issue, by both estimators, where the run has the rows."""
    print("\n# targets (k=7): ratio by min / by median")
    for mode, method, ref, bound in TARGETS:
        sel = _target_rows(df, mode, method)
        if sel.empty:
            continue
        col = "x_dwconv" if ref.startswith("dwconv") else "x_conv3x3"
        r_min, r_med = float(sel[col + "_min"].iloc[0]), float(sel[col].iloc[0])
        verdict = "met" if max(r_min, r_med) <= bound else ("met by min only" if r_min <= bound else "missed")
        name = f"{mode} {sel.method.iloc[0]}"
        print(f"{name:22s} <= {bound:g}x {ref}: {r_min:.2f} / {r_med:.2f}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench layer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-sizes", default="7,3,5,9")
    ap.add_argument("--shape", default="8,64,32,32", help="N,C,H,W")
    ap.add_argument("--channel-sharing", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--impls", default="auto,reference", help="LR implementations to time")
    ap.add_argument("--no-layer", action="store_true", help="skip the whole-module rows")
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
                     args.rounds, args.calls, not args.no_layer)
    env = environment(device)
    print("# local relation layer benchmark: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# shape N,C,H,W={n},{c},{h},{w}  m={args.channel_sharing}  dtype={args.dtype}  "
          f"rounds={args.rounds} x calls={args.calls} (interleaved); appearance=sqdiff, border=mask")
    if "copy_GBps" in df.attrs:
        print(f"# measured copy bandwidth {df.attrs['copy_GBps']:.0f} GB/s (1 GiB copy_, read + write); "
              "fwd_bw_frac = ideal forward bytes / median time / copy bandwidth")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    modes = set(df["mode"])
    if {"forward", "forward_grad"} <= modes:
        piv = df.pivot_table(index=["k", "method"], columns="mode", values="median_ms", sort=False)
        print("\n# forward under no_grad / forward with grad (must be <= 1 within noise)")
        for (k, method), r in piv.iterrows():
            print(f"k={k} {method:14s} {r['forward'] / r['forward_grad']:.2f}")
    print_targets(df)
    if args.csv:
        write_csv_atomic(df, args.csv)
    return 0
