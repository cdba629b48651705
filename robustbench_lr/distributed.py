"""torchrun support: process-group setup, rank-0-only writes, and BatchNorm over the global batch.

`torchrun --nproc-per-node N -m robustbench_lr COMMAND ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
commands call `init_distributed` and get NCCL on CUDA and gloo on CPU. PyTorch's SyncBatchNorm only runs
on GPUs, so on CPU `convert_batchnorm` swaps in `CrossRankBatchNorm2d`, which all-reduces the batch sums
(differentiably), so N processes train exactly like one process with the same global batch (up to the
order of floating-point sums).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from .utils import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    if not launched_by_torchrun():
        return DistContext(0, 1, 0, resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    log.debug("rank %d/%d on %s", rank, world, dev)
    return DistContext(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    """Sum a tensor over ranks (in place; returns it)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every rank (any backend, CPU included)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        local = torch.cat([xf.sum((0, 2, 3)), xf.square().sum((0, 2, 3)),
                           xf.new_tensor([x.numel() / c])])  # (2C + 1,)
        tot = all_reduce(local)  # differentiable sum over ranks
        n = tot[-1]
        mean = tot[:c] / n
        var = (tot[c:2 * c] / n - mean.square()).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - mom).add_(mom * mean)
                self.running_var.mul_(1 - mom).add_(mom * var * n / (n - 1).clamp_min(1.0))
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Global-batch BatchNorm for data-parallel training: SyncBatchNorm on CUDA, CrossRankBatchNorm2d on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def swap(mod: nn.Module) -> nn.Module:
        if type(mod) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
            new.load_state_dict(mod.state_dict())
            return new
        for name, child in mod.named_children():
            setattr(mod, name, swap(child))
        return mod

    return swap(model)


def unwrap_batchnorm(model: nn.Module) -> nn.Module:
    """Turn SyncBatchNorm / CrossRankBatchNorm2d back into plain BatchNorm2d (for saving and evaluation)."""

    def swap(mod: nn.Module) -> nn.Module:
        if isinstance(mod, (nn.SyncBatchNorm, CrossRankBatchNorm2d)):
            new = nn.BatchNorm2d(mod.num_features, mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
            new.load_state_dict(mod.state_dict())
            return new.to(next(iter(mod.state_dict().values())).device)
        for name, child in mod.named_children():
            setattr(mod, name, swap(child))
        return mod

    return swap(model)


__all__ = ["DistContext", "init_distributed", "cleanup", "barrier", "all_reduce_sum", "broadcast_object",
           "CrossRankBatchNorm2d", "convert_batchnorm", "unwrap_batchnorm"]
