"""Reproducible training: SGD/AdamW, cosine schedule with warm-up, light augmentation, resume, DDP.

Everything random derives from the seed: the initial weights (`torch.manual_seed(seed)`), the epoch's
shuffle (`DistributedSampler(seed=seed).set_epoch(e)`, also with one process) and every example's
augmentation (a table drawn from `numpy.random.default_rng([seed, epoch])` and indexed by example).
So the same command twice gives the same weights, a resumed run equals an uninterrupted one, and N
torchrun processes see exactly the examples and augmentations of one process with the same global batch.

Output in `out_dir`: `model.safetensors` + `model.json` (see checkpoint.py) when finished, and `last.pt`
(weights, optimizer state and epoch; written atomically after every epoch, read back with
`weights_only=True`) while unfinished.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed as D
from .checkpoint import META, save_checkpoint
from .data import DATASETS, TensorImageDataset, load_dataset
from .errors import UserError, check_choice
from .models import create_model, model_info
from .utils import atomic_write, seed_everything

log = logging.getLogger(__name__)
OPTIMIZERS = ("sgd", "adamw")
LAST = "last.pt"


@dataclass
class TrainConfig:
    """A training run. Learning rate and weight decay default per optimizer (AdamW 3e-3 / 0.05, SGD 0.1 / 5e-4).

    The default recipe (AdamW, batch 64) is the one both tiny families train stably with on mnist5k: with SGD at
    lr 0.1 the LR-Nets' squared-difference logits occasionally diverge.

    Attributes:
        model: registry name.
        dataset: 'mnist5k' | 'cifar10' | 'imagefolder'.
        epochs: number of epochs (>= 1).
        batch_size: global batch size (split evenly over torchrun processes).
        lr: peak learning rate after warm-up.
        optimizer: 'adamw' (default) or 'sgd' (Nesterov momentum 0.9).
        weight_decay: decoupled for AdamW, L2 for SGD; not applied to BN and biases.
        warmup_epochs: linear warm-up length (may be fractional).
        grad_clip: clip the global gradient norm to this value (None: off).
        train_limit: train on this many examples of the train split (a subset fixed by split_seed; quick runs).
        augment: random translation (MNIST: +-2 px; CIFAR: 4-px pad-and-crop and flips; folders: flips).
        seed: seed of initialisation, shuffling and augmentation.
        kernel_size: k of the model's spatial operators (None: the model's default).
        model_kwargs: further create_model arguments (e.g. channel_sharing, width).
        data_root, download, split_seed: dataset location and options.
        amp: bf16 autocast on CUDA (ignored on CPU).
        device: 'auto' | 'cpu' | 'cuda'.
        num_workers: DataLoader workers for folder datasets.
    """

    model: str
    dataset: str = "mnist5k"
    epochs: int = 15
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    train_limit: int | None = None
    augment: bool = True
    seed: int = 0
    kernel_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    download: bool = False
    split_seed: int = 0
    amp: bool = False
    device: str = "auto"
    num_workers: int = 0

    def resolved(self) -> TrainConfig:
        """A copy with optimizer-dependent defaults filled in."""
        lr = self.lr if self.lr is not None else (0.1 if self.optimizer == "sgd" else 3e-3)
        wd = self.weight_decay if self.weight_decay is not None else (5e-4 if self.optimizer == "sgd" else 0.05)
        return dataclasses.replace(self, lr=lr, weight_decay=wd)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (a resumed run must match them)."""
        d = self.resolved().to_dict()
        for k in ("device", "num_workers", "data_root", "download"):
            d.pop(k)
        return normalized_identity(d)


    def validate(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        model_info(self.model)  # unknown names raise with suggestions
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise UserError(f"--epochs must be an integer >= 1; got {self.epochs!r}.")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UserError(f"--batch-size must be an integer >= 1; got {self.batch_size!r}.")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number; got {self.lr!r}.")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0; got {self.weight_decay!r}.")
        if self.warmup_epochs < 0:
            raise UserError(f"--warmup-epochs must be >= 0; got {self.warmup_epochs!r}.")
        if self.train_limit is not None and (isinstance(self.train_limit, bool) or not isinstance(self.train_limit, int)
                                             or self.train_limit < 1):
            raise UserError(f"--train-limit must be a positive integer; got {self.train_limit!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"--grad-clip must be > 0; got {self.grad_clip!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1); got {self.label_smoothing!r}.")


def normalized_identity(identity: dict[str, Any] | None) -> dict[str, Any]:
    """`identity` with an unset kernel size replaced by the model's default, so that `--kernel-size 7` and no
    option on a k=7 model are the same run (stored identities of older runs compare the same way)."""
    d = dict(identity or {})
    if d.get("kernel_size") is None and d.get("model"):
        from .models import model_info

        d["kernel_size"] = model_info(d["model"]).kernel_size
    return d


# ------------------------------------------------------------------------------------------------ batches


def iterate(ds: Any, indices: Tensor, batch_size: int, device: torch.device, num_workers: int = 0,
            drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield (images in [0, 1] on `device`, labels, dataset indices) for `indices` in order, `batch_size` at a time."""
    if isinstance(ds, TensorImageDataset):
        n = len(indices)
        stop = n - n % batch_size if drop_last else n
        for s in range(0, stop, batch_size):
            idx = indices[s: s + batch_size]
            x, y = ds.batch(idx)
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx
        return
    chunks = [indices[s: s + batch_size] for s in range(0, len(indices), batch_size)]
    if drop_last and chunks and len(chunks[-1]) < batch_size:
        chunks.pop()
    loader = DataLoader(ds, batch_sampler=[c.tolist() for c in chunks], num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    for idx, (x, y) in zip(chunks, loader):
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx


def augment_table(dataset: str, n: int, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Per-example augmentation parameters of one epoch, a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    pad = {"mnist5k": 2, "cifar10": 4}.get(dataset, 0)
    flip = dataset != "mnist5k"  # never flip digits
    return {"pad": np.array(pad), "dy": rng.integers(0, 2 * pad + 1, n), "dx": rng.integers(0, 2 * pad + 1, n),
            "flip": (rng.random(n) < 0.5) & flip}


def apply_augment(x: Tensor, idx: Tensor, table: dict[str, np.ndarray]) -> Tensor:
    """Translate by (dy - pad, dx - pad) with zero fill, then flip, per example. x: (B, C, H, W) in [0, 1]."""
    pad = int(table["pad"])
    i = idx.cpu().numpy()
    b, c, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.as_tensor(table["dy"][i], device=x.device)
        dx = torch.as_tensor(table["dx"][i], device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    flips = torch.as_tensor(table["flip"][i], device=x.device)
    if bool(flips.any()):
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, ds: Any, batch_size: int, device: torch.device, ctx: D.DistContext | None = None,
             num_workers: int = 0) -> tuple[int, int]:
    """(correct, total) over the whole split; with torchrun each rank takes every world_size-th example."""
    ctx = ctx or D.DistContext(0, 1, 0, device)
    model.eval()
    idx = torch.arange(ctx.rank, len(ds), ctx.world_size)
    correct = torch.zeros(2, dtype=torch.long, device=device)
    for x, y, _ in iterate(ds, idx, batch_size, device, num_workers):
        correct[0] += (model(x).argmax(1) == y).sum()
        correct[1] += y.numel()
    D.all_reduce_sum(correct, ctx)
    return int(correct[0]), int(correct[1])


# ------------------------------------------------------------------------------------------------ training
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _save_last(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, cfg: TrainConfig,
               history: list[dict[str, float]]) -> None:
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
             "epoch": epoch, "identity": cfg.identity(), "history": history}
    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")


def prepare(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool) -> str:
    """Check the output directory before any work: returns 'fresh', 'resume' or 'done'."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory.")
    finished = (out / META).is_file()
    unfinished = (out / LAST).is_file()
    if finished:
        if not resume:
            raise UserError(f"{out} already holds a finished model; pass --resume to reuse it, or choose another --out.")
        return "done"
    if unfinished and not resume:
        raise UserError(f"{out} holds an unfinished run ({LAST}); pass --resume to continue it, or choose another --out.")
    return "resume" if unfinished else "fresh"


def fit(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
        stop_after: int | None = None, command: str | None = None) -> dict[str, Any]:
    """Train `cfg.model` and write a checkpoint to `out_dir`; returns the model.json written (or found).

    Args:
        cfg: the run.
        out_dir: output directory (created only once the inputs are validated).
        resume: continue an unfinished run from its last epoch, or return a finished one unchanged.
        progress: show a progress bar (rank 0 only).
        stop_after: stop after this many epochs of this call without writing the final model (tests use it
            to simulate an interrupted run).
        command: the command line, recorded in model.json.
    """
    cfg.validate()
    cfg = cfg.resolved()
    ctx = D.init_distributed(cfg.device)
    try:
        return _fit(cfg, Path(out_dir), resume, progress and ctx.is_main, stop_after, command, ctx)
    finally:
        D.cleanup()


def _fit(cfg: TrainConfig, out: Path, resume: bool, progress: bool, stop_after: int | None, command: str | None,
         ctx: D.DistContext) -> dict[str, Any]:
    from .checkpoint import read_meta

    state = prepare(cfg, out, resume)
    if state == "done":
        meta = read_meta(out)
        if normalized_identity(meta.get("training", {}).get("identity")) != cfg.identity():
            raise UserError(f"{out} holds a finished model trained with a different configuration; choose another --out.")
        log.info("%s is already trained (held-out accuracy %.2f%%); nothing to do.", out,
                 100 * meta["metrics"]["test_accuracy"])
        return meta

    device = ctx.device
    train_ds = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download, _image_size(cfg), cfg.split_seed)
    test_ds = load_dataset(cfg.dataset, "test", cfg.data_root, False, _image_size(cfg), cfg.split_seed)
    info = train_ds.info
    if cfg.train_limit is not None and cfg.train_limit < len(train_ds):
        train_ds = subset(train_ds, cfg.train_limit, cfg.split_seed)
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({ctx.world_size}).")
    per_rank = cfg.batch_size // ctx.world_size
    steps_per_epoch = (len(train_ds) // ctx.world_size) // per_rank
    if steps_per_epoch == 0:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(train_ds)} training examples of "
                        f"{cfg.dataset}: with drop_last no batch would be left. Use --batch-size <= {len(train_ds)}.")

    seed_everything(cfg.seed)
    model = create_model(cfg.model, num_classes=info.num_classes, in_chans=info.input_size[0],
                         kernel_size=cfg.kernel_size, mean=list(info.mean), std=list(info.std), **cfg.model_kwargs)
    name, kwargs = model.model_name, model.model_kwargs
    if ctx.distributed:  # before the optimizer: the conversion creates new BatchNorm parameters
        model = D.convert_batchnorm(model, device)
    model.to(device)
    opt: torch.optim.Optimizer
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)

    start_epoch, history = 0, []
    if state == "resume":
        saved = torch.load(out / LAST, map_location="cpu", weights_only=True)
        saved_id, want = normalized_identity(saved.get("identity")), cfg.identity()
        if saved_id != want:
            diff = sorted(k for k in set(saved_id) | set(want) if saved_id.get(k) != want.get(k))
            raise UserError(f"cannot resume {out}: the unfinished run used different settings ({', '.join(diff)}).")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        start_epoch, history = int(saved["epoch"]), list(saved["history"])
        log.info("resuming %s at epoch %d/%d", out, start_epoch + 1, cfg.epochs)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)

    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(range(len(train_ds)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    amp = cfg.amp and device.type == "cuda"
    if cfg.amp and not amp:
        log.warning("--amp applies to CUDA only; training in fp32 on %s.", device)
    t_start = time.perf_counter()
    epochs_run = 0
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        sampler.set_epoch(epoch)
        idx = torch.tensor(list(sampler), dtype=torch.long)
        table = augment_table(cfg.dataset, len(train_ds), cfg.seed, epoch) if cfg.augment else None
        stats = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        bar = _bar(progress, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        t0 = time.perf_counter()
        for step, (x, y, bidx) in enumerate(iterate(train_ds, idx, per_rank, device, cfg.num_workers, drop_last=True)):
            gstep = epoch * steps_per_epoch + step
            for g in opt.param_groups:
                g["lr"] = lr_at(gstep, total_steps, warmup, cfg.lr)
            if table is not None:
                x = apply_augment(x, bidx, table)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                stats += torch.stack([loss.detach().double() * y.numel(), (logits.argmax(1) == y).sum().double(),
                                      torch.tensor(float(y.numel()), dtype=torch.float64, device=device)])
            if bar is not None:
                seen = (step + 1) * cfg.batch_size
                bar.update(1)
                bar.set_postfix(loss=f"{stats[0].item() / stats[2].item():.3f}",
                                acc=f"{100 * stats[1].item() / stats[2].item():.1f}%",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        D.all_reduce_sum(stats, ctx)
        if bar is not None:
            bar.close()
        history.append({"epoch": epoch + 1, "train_loss": stats[0].item() / stats[2].item(),
                        "train_accuracy": stats[1].item() / stats[2].item(),
                        "seconds": time.perf_counter() - t0, "images": stats[2].item()})
        epochs_run += 1
        if ctx.is_main:
            _save_last(out / LAST, model if not ctx.distributed else D.unwrap_batchnorm(_copy(net.module)), opt,
                       epoch + 1, cfg, history)
        D.barrier(ctx)
        if stop_after is not None and epochs_run >= stop_after and epoch + 1 < cfg.epochs:
            log.info("stopping after %d epoch(s) as asked; resume with --resume", epochs_run)
            return {"stopped_after_epoch": epoch + 1}

    train_seconds = time.perf_counter() - t_start
    eval_model = model if not ctx.distributed else D.unwrap_batchnorm(_copy(net.module))
    eval_model.model_name, eval_model.model_kwargs = name, kwargs
    correct, total = evaluate(eval_model, test_ds, max(per_rank, 256), device, ctx, cfg.num_workers)
    images = sum(h["images"] for h in history[-epochs_run:]) if epochs_run else 0.0
    metrics = {
        "test_accuracy": correct / total, "test_correct": correct, "test_total": total,
        "train_loss": history[-1]["train_loss"], "train_accuracy": history[-1]["train_accuracy"],
        "epochs": cfg.epochs, "epochs_run_this_call": epochs_run, "train_seconds_this_run": train_seconds,
        "images_per_second": images / train_seconds if train_seconds > 0 else None,
        "history": history,
    }
    meta: dict[str, Any] = {}
    if ctx.is_main:
        meta = save_checkpoint(out, eval_model.cpu(), {
            "dataset": _dataset_meta(info, len(train_ds), len(test_ds)),
            "training": {"config": cfg.to_dict(), "identity": cfg.identity(), "world_size": ctx.world_size,
                         "device": str(device), "command": command},
            "metrics": metrics,
        })
        (out / LAST).unlink(missing_ok=True)
        log.info("held-out accuracy of %s on %s: %.2f%% (%d/%d)", name, cfg.dataset, 100 * correct / total, correct,
                 total)
    D.barrier(ctx)
    return meta


def subset(ds: Any, n: int, seed: int) -> Any:
    """`n` examples of `ds` chosen by a permutation seeded with `seed` (kept in dataset order)."""
    idx = np.sort(np.random.default_rng([seed, 0x51]).permutation(len(ds))[:n])
    if isinstance(ds, TensorImageDataset):
        t = torch.from_numpy(idx)
        return TensorImageDataset(ds.images[t], ds.labels[t], dataclasses.replace(ds.info, n=n))
    sub = torch.utils.data.Subset(ds, idx.tolist())
    sub.info = dataclasses.replace(ds.info, n=n)
    return sub


def _dataset_meta(info: Any, train_n: int, test_n: int) -> dict[str, Any]:
    d = info.to_dict()
    for k in ("split", "n", "extra"):
        d.pop(k, None)
    return {**d, "train_split": "train", "test_split": "test", "train_n": train_n, "test_n": test_n}


def _copy(m: nn.Module) -> nn.Module:
    import copy

    c = copy.deepcopy(m)
    for attr in ("model_name", "model_kwargs"):
        if hasattr(m, attr):
            setattr(c, attr, getattr(m, attr))
    return c


def _image_size(cfg: TrainConfig) -> int:
    return model_info(cfg.model).input_size[1]


def _bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
