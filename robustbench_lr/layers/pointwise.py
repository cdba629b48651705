"""1x1 convolutions as matrix products on the CPU (the local relation layer's key/query and output convs).

oneDNN's CPU convolution is slow on the small 1x1 shapes of a local relation layer at CIFAR sizes: measured
on the development machine (2 cores, torch 2.14.1, batch 16, forward + input gradient), 16 -> 4 channels at
32x32 took 15.8 ms as a conv and 0.10 ms as a batched matmul, 32 -> 8 0.44 vs 0.26 ms, 104 -> 26 at 16x16
0.57 vs 0.45 ms (reports/benchmarks.md, "Profile of one PGD step"). A 1x1 conv is exactly
y[n] = W x[n] + b with x[n] viewed as (C, H*W), so the matmul computes the same function (same
parameters, same gradients); only the summation order, and so the last bits of fp32, differ.

Status: used for NCHW-contiguous CPU inputs; other layouts and devices keep F.conv2d (cuDNN has no such
pathology, and nothing here was measured on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def pointwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.conv2d(x, weight, bias) for a (Co, C, 1, 1) weight, stride 1: (N, C, H, W) -> (N, Co, H, W)."""
    if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or weight.shape[-2:] != (1, 1):
        return F.conv2d(x, weight, bias)
    n, c, h, w = x.shape
    co = weight.shape[0]
    wm = weight.reshape(co, c).expand(n, co, c)
    xm = x.view(n, c, h * w)
    if bias is None:
        y = torch.bmm(wm, xm)
    else:
        y = torch.baddbmm(bias.view(1, co, 1).expand(n, co, h * w), wm, xm)
    return y.view(n, co, h, w)


class PointwiseConv2d(nn.Conv2d):
    """nn.Conv2d(C, Co, 1) whose CPU forward is `pointwise_conv`; parameters, state-dict keys and module
    type (MAC counting hooks) are those of the plain conv."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return pointwise_conv(x, self.weight, self.bias)


__all__ = ["PointwiseConv2d", "pointwise_conv"]
