"""Input normalization as model buffers, so every model takes [0, 1] pixels.

Status: standard practice (RobustBench model zoo); attacks and deformations never see normalized tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

# Per-dataset channel statistics of [0, 1] pixels.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InputNormalize(nn.Module):
    """(x - mean) / std with per-channel buffers carried in the state dict.

    Args:
        mean: per-channel means of [0, 1] pixels (length = in_chans).
        std: per-channel standard deviations (length = in_chans), all > 0.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} entries but std has {len(std)}.")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive; got {tuple(std)}.")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, " \
               f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"
