"""Parameter and multiply-accumulate counts of a model at a given input size.

MACs count one multiply-add per weight use: convolutions (1-D and 2-D) and linear layers, plus whatever a
module reports through `extra_macs(input_shape) -> int` for work its child convs/linears do not cover
(the local relation layer's logits and aggregation, (C + G) * k^2 per output pixel, papers.md §1.5; the
matrix products of context modules). This is the convention of the LR-Net paper's "FLOPs" column
(ResNet-50 ~ 4.1 G). BatchNorm, ReLU, pooling and softmax are not counted. The forward runs on the meta
device, so nothing is computed.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single (C, H, W) image."""
    total = 0

    def conv_hook(mod: nn.Module, inp, out) -> None:
        nonlocal total
        total += out[0].numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    def linear_hook(mod: nn.Linear, inp, out) -> None:
        nonlocal total
        total += mod.in_features * mod.out_features

    def extra_hook(mod: nn.Module, inp, out) -> None:
        nonlocal total
        total += int(mod.extra_macs(tuple(inp[0].shape[1:])))

    meta = copy.deepcopy(model).to("meta")
    handles = []
    for mod in meta.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        if callable(getattr(mod, "extra_macs", None)):
            handles.append(mod.register_forward_hook(extra_hook))
    meta.eval()
    with torch.no_grad():
        meta(torch.zeros(1, *input_size, device="meta"))
    for h in handles:
        h.remove()
    return total
