"""`robustbench-lr train`: train a zoo model on a dataset and write a checkpoint directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> kwargs; values are parsed as JSON when possible (4, 0.5, true, "x", [1,2])."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--model-arg expects KEY=VALUE; got {pair!r}.")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_model_options(p: argparse.ArgumentParser, kernel_size: bool = True) -> None:
    """Model-shaping options shared by the commands that build models."""
    if kernel_size:
        p.add_argument("--kernel-size", type=int, default=None, help="k of every spatial operator (odd)")
    p.add_argument("--channel-sharing", type=int, default=None, help="LR: channels sharing one aggregation (m)")
    p.add_argument("--appearance", default=None, help="LR: sqdiff | absdiff | dot | none")
    p.add_argument("--geometry", default=None, help="LR: mlp | table | none")
    p.add_argument("--border", default=None, help="LR: mask | zeros")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (e.g. 0.5)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other create_model argument, e.g. --model-arg stem_kernel_size=5 (repeatable)")


def model_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    kw = parse_model_args(args.model_arg)
    for name in ("channel_sharing", "appearance", "geometry", "border", "width"):
        v = getattr(args, name)
        if v is not None:
            kw[name] = None if isinstance(v, str) and v.lower() == "none" else v
    return kw


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, fit

    cfg = TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                      warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                      grad_clip=args.grad_clip, train_limit=args.train_limit, augment=not args.no_augment, seed=args.seed, kernel_size=args.kernel_size,
                      model_kwargs=model_kwargs_from(args), data_root=args.data_root, download=args.download,
                      split_seed=args.split_seed, amp=args.amp, device=args.device, num_workers=args.num_workers)
    command = args.command_line
    meta = fit(cfg, args.out, resume=args.resume, progress=not args.quiet, command=command)
    if meta:
        m = meta["metrics"]
        print(f"held-out accuracy: {100 * m['test_accuracy']:.2f}% ({m['test_correct']}/{m['test_total']}) "
              f"-> {args.out}/model.safetensors")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and write model.safetensors + model.json",
                       description="Train a zoo model. Example: robustbench-lr train --model lrnet_tiny "
                                   "--dataset mnist5k --epochs 6 --kernel-size 7 --out runs/lr7")
    p.add_argument("--model", required=True, help="registry name (see `robustbench-lr models`)")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (embedded) | cifar10 | imagefolder")
    p.add_argument("--data-root", default=None, help="folder of cifar10 / imagefolder data")
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR-10 into --data-root")
    p.add_argument("--split-seed", type=int, default=0, help="seed of mnist5k's stratified split (default 0)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 3e-3 AdamW, 0.1 SGD)")
    p.add_argument("--optimizer", default="adamw", help="adamw | sgd")
    p.add_argument("--weight-decay", type=float, default=None, help="default: 0.05 AdamW, 5e-4 SGD")
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: off)")
    p.add_argument("--train-limit", type=int, default=None, help="train on a fixed subset of N examples (quick runs)")
    p.add_argument("--no-augment", action="store_true", help="disable random translation/flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading workers (folder datasets)")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out (or reuse a finished one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=run)
