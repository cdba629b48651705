"""Getting a model ready for attacks, and the fp32 predictions that decide whether an example is fooled.

Status: plain PyTorch. Attacks never see normalised tensors: the models take [0, 1] pixels and normalise inside.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def prepare_for_attack(model: nn.Module) -> nn.Module:
    """Eval mode and frozen parameters (attacks then compute input gradients only); returns the model."""
    model.eval()
    model.requires_grad_(False)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device | str) -> Tensor:
    """argmax predictions (n,) on CPU of images x (n, C, H, W) in [0, 1], fp32, in batches."""
    out = []
    for s in range(0, len(x), batch_size):
        with torch.autocast(torch.device(device).type, enabled=False):
            out.append(model(x[s: s + batch_size].to(device).float()).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


__all__ = ["predict", "prepare_for_attack"]
