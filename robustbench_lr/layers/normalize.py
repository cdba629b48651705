"""Input normalization as model buffers, so every model takes [0, 1] pixels.

Status: standard practice (RobustBench model zoo); attacks and deformations never see normalized tensors. The
per-dataset statistics live with the datasets (`robustbench_lr.data`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor


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
