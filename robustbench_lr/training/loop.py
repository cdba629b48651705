"""Reproducible training: SGD/AdamW, cosine schedule with warm-up, light augmentation, adversarial training, resume,
DDP.

Everything random derives from the seed: the initial weights (`torch.manual_seed(seed)`), the epoch's shuffle
(`DistributedSampler(seed=seed).set_epoch(e)`, also with one process), every example's augmentation (a table
drawn from `numpy.random.default_rng([seed, epoch])` and indexed by example) and the inner attack's random starts
(per step and example). So the same command twice gives the same weights (same machine and thread count:
`provenance.py`), a resumed run equals an uninterrupted one, and N torchrun processes see exactly the examples
and augmentations of one process with the same global batch (each rank crafts the adversarial examples of its
own shard).

Output in `out_dir`: `model.safetensors` (+ `best.safetensors` for adversarial training) and `model.json` (see
checkpoint.py) when finished, and `last.pt` (training/state.py) while unfinished.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from .. import distributed as D
from ..checkpoint import read_meta, save_checkpoint
from ..data import load_dataset
from ..errors import UserError
from ..models import create_model, model_info
from ..progress import bar
from ..utils import seed_everything
from .adversarial import InnerAttack, better, robust_check, selection_indices
from .batches import apply_augment, augment_table, evaluate, iterate, subset
from .config import TrainConfig, normalized_identity
from .state import LAST, cpu_state, prepare, save_last

log = logging.getLogger(__name__)


@dataclass
class Run:
    """The state of one training run while it trains."""

    cfg: TrainConfig
    out: Path
    ctx: D.DistContext
    train_ds: Any
    test_ds: Any
    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    steps_per_epoch: int
    per_rank: int
    inner: InnerAttack | None = None
    check: tuple[torch.Tensor, torch.Tensor] | None = None  # the robust check's held-out examples (x, y)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start_epoch: int = 0


def fit(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True,
        stop_after: int | None = None, command: str | None = None) -> dict[str, Any]:
    """Train `cfg.model` and write a checkpoint to `out_dir`; returns the model.json written (or found).

    Args:
        cfg: the run.
        out_dir: output directory (created only once the inputs are validated).
        resume: continue an unfinished run from its last epoch, or return a finished one unchanged.
        progress: show progress (rank 0 only): a bar per epoch on a terminal, a log line per epoch otherwise.
        stop_after: stop after this many epochs of this call without writing the final model (tests use it
            to simulate an interrupted run).
        command: the command line, recorded in model.json.
    """
    cfg.validate()
    cfg = cfg.resolved()
    out = Path(out_dir)
    state, saved = prepare(cfg, out, resume)
    if state == "done":
        return _finished(cfg, out)
    ctx = D.init_distributed(cfg.device)
    try:
        run = _setup(cfg, out, ctx, saved)
        epochs_run, t_start = 0, time.perf_counter()
        for epoch in range(run.start_epoch, cfg.epochs):
            _epoch(run, epoch, progress and ctx.is_main)
            epochs_run += 1
            if stop_after is not None and epochs_run >= stop_after and epoch + 1 < cfg.epochs:
                log.info("stopping after %d epoch(s) as asked; resume with --resume", epochs_run)
                return {"stopped_after_epoch": epoch + 1}
        return _finish(run, command, epochs_run, time.perf_counter() - t_start)
    finally:
        D.cleanup()


def _finished(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    meta = read_meta(out)
    if normalized_identity(meta.get("training", {}).get("identity")) != cfg.identity():
        raise UserError(f"{out} holds a finished model trained with a different configuration; choose another --out.")
    log.info("%s is already trained (held-out accuracy %.2f%%); nothing to do.", out,
             100 * meta["metrics"]["test_accuracy"])
    return meta


def _setup(cfg: TrainConfig, out: Path, ctx: D.DistContext, saved: dict[str, Any] | None) -> Run:
    """Data, model, optimizer, inner attack, and the saved state of a resumed run."""
    size = model_info(cfg.model).input_size[1]
    train_ds = load_dataset(cfg.dataset, "train", cfg.data_root, cfg.download, size, cfg.split_seed)
    test_ds = load_dataset(cfg.dataset, "test", cfg.data_root, False, size, cfg.split_seed)
    info = train_ds.info
    if cfg.train_limit is not None and cfg.train_limit < len(train_ds):
        train_ds = subset(train_ds, cfg.train_limit, cfg.split_seed)
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the number of processes ({ctx.world_size}).")
    per_rank = cfg.batch_size // ctx.world_size
    steps = (len(train_ds) // ctx.world_size) // per_rank
    if steps == 0:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the {len(train_ds)} training examples of "
                        f"{cfg.dataset}: with drop_last no batch would be left. Use --batch-size <= {len(train_ds)}.")
    seed_everything(cfg.seed)
    model = create_model(cfg.model, num_classes=info.num_classes, in_chans=info.input_size[0],
                         kernel_size=cfg.kernel_size, mean=list(info.mean), std=list(info.std), **cfg.model_kwargs)
    name, kwargs = model.model_name, model.model_kwargs
    if ctx.distributed:  # before the optimizer: the conversion creates new BatchNorm parameters
        model = D.convert_batchnorm(model, ctx.device)
    model.model_name, model.model_kwargs = name, kwargs
    model.to(ctx.device)
    opt = _optimizer(cfg, model)
    net = model if not ctx.distributed else nn.parallel.DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    run = Run(cfg, out, ctx, train_ds, test_ds, model, net, opt, steps, per_rank)
    if cfg.is_adversarial:
        run.inner = InnerAttack(cfg, steps)
        sel = torch.from_numpy(selection_indices(len(test_ds), cfg.robust_eval_n))
        run.check = (torch.stack([test_ds[int(i)][0] for i in sel]), torch.as_tensor(test_ds.labels)[sel])
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        run.start_epoch, run.history, run.best = int(saved["epoch"]), list(saved["history"]), saved.get("best")
        log.info("resuming %s at epoch %d/%d", out, run.start_epoch + 1, cfg.epochs)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.amp and ctx.device.type != "cuda":
        log.warning("--amp applies to CUDA only; training in fp32 on %s.", ctx.device)
    return run


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or pname.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _epoch(run: Run, epoch: int, progress: bool) -> None:
    """One epoch of training, then (adversarial training) the robust check, then last.pt."""
    cfg, ctx = run.cfg, run.ctx
    run.net.train()
    sampler = DistributedSampler(range(len(run.train_ds)), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    table = augment_table(cfg.dataset, len(run.train_ds), cfg.seed, epoch) if cfg.augment else None
    stats = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
    b = bar(progress, run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", "batch")
    t0 = time.perf_counter()
    batches = iterate(run.train_ds, idx, run.per_rank, ctx.device, cfg.num_workers, drop_last=True)
    for step, (x, y, bidx) in enumerate(batches):
        loss, logits = _step(run, epoch * run.steps_per_epoch + step, x if table is None else
                             apply_augment(x, bidx, table), y, bidx)
        with torch.no_grad():
            stats += torch.stack([loss.detach().double() * y.numel(), (logits.argmax(1) == y).sum().double(),
                                  torch.tensor(float(y.numel()), dtype=torch.float64, device=ctx.device)])
        if b is not None:
            b.update(1)
            b.set_postfix(loss=f"{stats[0].item() / stats[2].item():.3f}",
                          acc=f"{100 * stats[1].item() / stats[2].item():.1f}%", refresh=False)
    D.all_reduce_sum(stats, ctx)
    entry = {"epoch": epoch + 1, "train_loss": stats[0].item() / stats[2].item(),
             "train_accuracy": stats[1].item() / stats[2].item(), "seconds": time.perf_counter() - t0,
             "images": stats[2].item()}
    if run.inner is not None:
        entry.update(_robust_epoch_check(run, epoch))
        if b is not None:
            b.set_postfix(loss=f"{entry['train_loss']:.3f}", acc=f"{100 * entry['train_accuracy']:.1f}%",
                          rob=f"{100 * entry['robust_accuracy']:.1f}%", refresh=False)
    if b is not None:
        b.close()
    run.history.append(entry)
    if ctx.is_main:
        save_last(run.out / LAST, _plain_state(run), run.opt, epoch + 1, cfg, run.history, run.best)
    D.barrier(ctx)


def _step(run: Run, gstep: int, x: torch.Tensor, y: torch.Tensor, bidx: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = run.cfg
    total = cfg.epochs * run.steps_per_epoch
    for g in run.opt.param_groups:
        g["lr"] = lr_at(gstep, total, int(round(cfg.warmup_epochs * run.steps_per_epoch)), cfg.lr)
    amp = cfg.amp and run.ctx.device.type == "cuda"
    if run.inner is None:
        with torch.autocast(run.ctx.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = run.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    else:
        x_adv = run.inner.craft(run.model, x, y, bidx, gstep)
        loss, logits = run.inner.loss(run.net, x, x_adv, y, amp, cfg.label_smoothing)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), cfg.grad_clip)
    run.opt.step()
    return loss, logits


def _robust_epoch_check(run: Run, epoch: int) -> dict[str, Any]:
    """PGD robust accuracy on the held-out selection examples; keeps the best epoch's weights."""
    x, y = run.check
    clean, rob, n = robust_check(run.model, x, y, run.cfg, max(run.per_rank, 128), run.ctx)
    acc = rob / n if n else float("nan")
    if better(acc, run.best):
        run.best = {"epoch": epoch + 1, "robust_accuracy": acc, "clean_accuracy": clean / n if n else float("nan"),
                    "model": _plain_state(run)}
    return {"robust_accuracy": acc, "check_clean_accuracy": clean / n if n else float("nan"), "check_n": n}


def _plain_state(run: Run) -> dict[str, torch.Tensor]:
    """The weights with plain BatchNorm names (DDP converts them), on CPU."""
    if not run.ctx.distributed:
        return cpu_state(run.model)
    return cpu_state(D.unwrap_batchnorm(copy.deepcopy(run.model)))


def _finish(run: Run, command: str | None, epochs_run: int, seconds: float) -> dict[str, Any]:
    """Held-out accuracy of the last (and best) weights, then the checkpoint."""
    cfg, ctx = run.cfg, run.ctx
    last = run.model if not ctx.distributed else D.unwrap_batchnorm(copy.deepcopy(run.model))
    last.model_name, last.model_kwargs = run.model.model_name, run.model.model_kwargs
    bs = max(run.per_rank, 256)
    correct, total = evaluate(last, run.test_ds, bs, ctx.device, ctx, cfg.num_workers)
    images = sum(h["images"] for h in run.history[-epochs_run:]) if epochs_run else 0.0
    metrics: dict[str, Any] = {
        "test_accuracy": correct / total, "test_correct": correct, "test_total": total, "weights": "last",
        "train_loss": run.history[-1]["train_loss"], "train_accuracy": run.history[-1]["train_accuracy"],
        "epochs": cfg.epochs, "epochs_run_this_call": epochs_run, "train_seconds_this_run": seconds,
        "images_per_second": images / seconds if seconds > 0 else None, "history": run.history}
    if run.best is not None:
        best_model = copy.deepcopy(last)
        best_model.load_state_dict(run.best["model"])
        bc, _ = evaluate(best_model, run.test_ds, bs, ctx.device, ctx, cfg.num_workers)
        metrics.update(last_test_accuracy=correct / total, test_accuracy=bc / total, test_correct=bc, weights="best",
                       best_epoch=run.best["epoch"], best_robust_accuracy=run.best["robust_accuracy"])
        run.best["test_accuracy"] = bc / total
    meta: dict[str, Any] = {}
    if ctx.is_main:
        info = run.train_ds.info
        d = {k: v for k, v in info.to_dict().items() if k not in ("split", "n", "extra")}
        meta = save_checkpoint(run.out, last.cpu(), {
            "dataset": {**d, "train_split": "train", "test_split": "test", "train_n": len(run.train_ds),
                        "test_n": len(run.test_ds)},
            "training": {"config": cfg.to_dict(), "identity": cfg.identity(), "adversarial": cfg.adversarial_meta(),
                         "world_size": ctx.world_size, "device": str(ctx.device), "command": command},
            "metrics": metrics,
        }, best=run.best)
        (run.out / LAST).unlink(missing_ok=True)
        log.info("held-out accuracy of %s on %s: %.2f%% (%s weights)", cfg.model, cfg.dataset,
                 100 * metrics["test_accuracy"], metrics["weights"])
    D.barrier(ctx)
    return meta
