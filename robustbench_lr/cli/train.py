"""`robustbench-lr train`: train a zoo model on a dataset (clean or adversarially) and write a checkpoint directory."""

from __future__ import annotations

import argparse

from ._common import add_adversarial_options, add_model_options, adversarial_kwargs, model_kwargs_from


def config_from(args: argparse.Namespace):  # noqa: ANN201 (TrainConfig, imported lazily)
    from ..training import TrainConfig

    return TrainConfig(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                       warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
                       train_limit=args.train_limit, augment=not args.no_augment, seed=args.seed,
                       kernel_size=args.kernel_size, model_kwargs=model_kwargs_from(args), data_root=args.data_root,
                       download=args.download, split_seed=args.split_seed, amp=args.amp, device=args.device,
                       num_workers=args.num_workers, **adversarial_kwargs(args))


def run(args: argparse.Namespace) -> int:
    from ..results import check_out_dir
    from ..results.table import training_label
    from ..training import fit

    cfg = config_from(args)
    cfg.validate()
    out = check_out_dir(args.out)
    meta = fit(cfg, out, resume=args.resume, progress=not args.quiet, command=args.command_line)
    if meta:
        m = meta["metrics"]
        line = f"held-out accuracy: {100 * m['test_accuracy']:.2f}% ({m['test_correct']}/{m['test_total']})"
        if "best_epoch" in m:
            line += (f"; best-robust epoch {m['best_epoch']} of {m['epochs']} (PGD robust accuracy "
                     f"{100 * m['best_robust_accuracy']:.1f}% on the held-out check), kept as best.safetensors")
        print(f"{line} [{training_label(meta)}] -> {out}/model.safetensors")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (clean or adversarially) and write model.safetensors + model.json",
                       description="Train a zoo model. Examples: robustbench-lr train --model lrnet_tiny "
                                   "--dataset mnist5k --epochs 6 --kernel-size 7 --out runs/lr7; robustbench-lr train "
                                   "--model resnet_tiny --adversarial pgd --eps 0.3 --out runs/conv_at")
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
    p.add_argument("--warmup-epochs", type=float, default=0.5, help="learning-rate warm-up (epochs)")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default: off)")
    p.add_argument("--train-limit", type=int, default=None, help="train on a fixed subset of N examples (quick runs)")
    p.add_argument("--no-augment", action="store_true", help="disable random translation/flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (training step and inner attack)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading workers (folder datasets)")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run in --out (or reuse a finished one)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    add_model_options(p)
    add_adversarial_options(p)
    p.set_defaults(func=run)
