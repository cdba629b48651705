"""Batches for training and evaluation: in-memory or DataLoader iteration, per-example augmentation, subsets.

Every example's augmentation is a table drawn from `numpy.random.default_rng([seed, epoch])` and indexed by the
example's position, so it does not depend on batching, resuming or the number of torchrun processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from .. import distributed as D
from ..data import TensorImageDataset


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


def subset(ds: Any, n: int, seed: int) -> Any:
    """`n` examples of `ds` chosen by a permutation seeded with `seed` (kept in dataset order)."""
    idx = np.sort(np.random.default_rng([seed, 0x51]).permutation(len(ds))[:n])
    if isinstance(ds, TensorImageDataset):
        t = torch.from_numpy(idx)
        return TensorImageDataset(ds.images[t], ds.labels[t], dataclasses.replace(ds.info, n=n))
    sub = torch.utils.data.Subset(ds, idx.tolist())
    sub.info = dataclasses.replace(ds.info, n=n)
    return sub
