"""Benchmark of the exhaustive rotation x translation grid attack (Engstrom et al.) on one checkpoint.

    python -m robustbench_lr.bench deform --checkpoint DIR [--n 1000] [--device auto] [--chunk-size N]

It runs `deform.adversarial_sweep(method="grid")` at max_rotation 30 deg (translation 3 px per axis,
grid 5 x 5 x 31 = 775 transforms, black canvas) on the first N test images of the evaluation subset
(`evaluate.eval_indices`, the same for every model) and prints:
    seconds            wall time of the whole sweep (clean pass, attack, bound checks, fp32 re-check)
    attack_seconds     the attack itself (the sweep row's `seconds`)
    forwards           (example, transform) forwards the attack actually ran, with early stop
    forwards_no_stop   what the exhaustive grid costs without early stop: transforms x attacked examples
                       (and transforms x N, in brackets, if clean-wrong examples were attacked too)
    saving             forwards_no_stop / forwards
    images_per_s       forwards / attack_seconds (warped images classified per second)
    est_no_stop_s      forwards_no_stop / images_per_s: the time the attack would take without early stop
    accuracy           grid-robust accuracy (n_correct / N), with clean accuracy for reference
The default chunk size (pairs per forward) is 256 on CPU (the fastest batch for the small MNIST models on two
cores) and 4096 on CUDA. The floor this suite commits to: lrnet_tiny, 1000 MNIST images, 2 CPU cores,
<= 300 s.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import pandas as pd
import torch

from ._timing import environment

log = logging.getLogger(__name__)
FLOOR_SECONDS = 300.0


def bench_grid(checkpoint: str, n: int = 1000, device: str | torch.device = "cpu", chunk_size: int | None = None,
               max_rotation: float = 30.0, translation_per_degree: float = 0.1, shape: tuple[int, ...] = (5, 5, 31),
               order: str = "likely-first", fill: str = "zeros", data_root: str | None = None) -> dict[str, object]:
    """Run the grid sweep once and return its figures (see the module docstring)."""
    from ..attacks import prepare_for_attack
    from ..checkpoint import load_model
    from ..data import load_dataset
    from ..deform import engstrom_bounds, grid_transforms
    from ..errors import UserError, check_positive_int
    from ..runners.common import eval_indices
    from ..runners.deform_sweep import adversarial_sweep
    from ..utils import resolve_device

    check_positive_int("--n", n)
    device = resolve_device(device)
    chunk = chunk_size or (4096 if device.type == "cuda" else 256)
    model = prepare_for_attack(load_model(checkpoint, device=device).to(device))
    meta = model.checkpoint_meta
    ds = load_dataset(meta["dataset"]["name"], "test", data_root=data_root)
    if n > len(ds):
        raise UserError(f"--n {n} is larger than the test split ({len(ds)} images).")
    idx = eval_indices(len(ds), n)
    x, y = ds.batch(torch.as_tensor(idx))
    n_tr = len(grid_transforms(engstrom_bounds(max_rotation, translation_per_degree), shape, order))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    rows, min_bound = adversarial_sweep(model, x, y, "grid", [max_rotation], seed=0, batch_size=chunk, device=device,
                                        translation_per_degree=translation_per_degree, shape=tuple(shape),
                                        order=order, fill=fill)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - t0
    r = rows[0]
    fwd = r["forward_evals"]
    no_stop = n_tr * r["n_attacked"]
    ips = fwd / r["seconds"] if r["seconds"] > 0 else float("nan")
    return {
        "model": meta["model"]["name"], "checkpoint": str(checkpoint), "n": n, "transforms": n_tr,
        "grid": "x".join(map(str, shape)), "max_rotation": max_rotation,
        "max_translation": translation_per_degree * max_rotation, "order": order, "chunk_size": chunk,
        "seconds": total, "attack_seconds": r["seconds"], "n_attacked": r["n_attacked"], "forwards": fwd,
        "forwards_no_stop": no_stop, "forwards_no_stop_all": n_tr * n, "saving": no_stop / fwd if fwd else float("nan"),
        "images_per_s": ips, "est_no_stop_s": no_stop / ips if ips == ips and ips > 0 else float("nan"),
        "clean_accuracy": r["n_clean_correct"] / n, "accuracy": r["n_correct"] / n,
        "fooled": int(np.isfinite(min_bound).sum() - (min_bound == 0).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench deform", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory (model.json + model.safetensors)")
    ap.add_argument("--n", type=int, default=1000, help="test images (first N of the evaluation subset)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--chunk-size", type=int, default=None, help="(example, transform) pairs per forward")
    ap.add_argument("--max-rotation", type=float, default=30.0)
    ap.add_argument("--translation-per-degree", type=float, default=0.1)
    ap.add_argument("--shape", default="5,5,31", help="n_x,n_y,n_rotations")
    ap.add_argument("--order", default="likely-first", help="grid search order: likely-first or natural")
    ap.add_argument("--fill", default="zeros")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--csv", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    from ..utils import resolve_device, write_csv_atomic

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("robustbench_lr").setLevel(logging.WARNING)
    device = resolve_device(args.device)
    res = bench_grid(args.checkpoint, args.n, device, args.chunk_size, args.max_rotation,
                     args.translation_per_degree, tuple(int(v) for v in args.shape.split(",")), args.order,
                     args.fill, args.data_root)
    env = environment(device)
    print("# grid spatial attack benchmark: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"# {res['model']} ({res['checkpoint']}), N={res['n']}, grid {res['grid']} = {res['transforms']} transforms, "
          f"+-{res['max_rotation']:g} deg, +-{res['max_translation']:g} px, order={res['order']}, "
          f"chunk={res['chunk_size']} pairs/forward, fill={args.fill}")
    print(f"seconds          {res['seconds']:.1f}   (attack {res['attack_seconds']:.1f})")
    print(f"forwards         {res['forwards']:,}   (early stop; {res['n_attacked']} clean-correct examples attacked)")
    print(f"forwards_no_stop {res['forwards_no_stop']:,}   (transforms x attacked; x all N: "
          f"{res['forwards_no_stop_all']:,})   saving x{res['saving']:.2f}")
    print(f"images_per_s     {res['images_per_s']:.0f}   (est. {res['est_no_stop_s']:.0f} s without early stop)")
    print(f"accuracy         {res['accuracy']:.4f}   (clean {res['clean_accuracy']:.4f}; {res['fooled']} fooled)")
    if device.type == "cpu" and res["n"] == 1000 and res["transforms"] == 775:
        verdict = "meets" if res["seconds"] <= FLOOR_SECONDS else "MISSES"
        print(f"floor            {verdict} <= {FLOOR_SECONDS:.0f} s for 1000 images on CPU "
              f"({env['threads']} threads): {res['seconds']:.1f} s")
    if args.csv:
        write_csv_atomic(pd.DataFrame([res]), args.csv)
    return 0
