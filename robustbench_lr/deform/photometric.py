"""A photometric perturbation for the sweeps: a uniform brightness offset.

`offset(x, c)` adds c to every pixel and clips to [0, 1]. On MNIST's exactly-zero background a positive offset
lifts the whole background to c, which a relational aggregation with non-negative weights that sum to 1 (the LR
layer's softmax) passes through unchanged, while a convolution with a zero-mean kernel can cancel it: the
uniform-offset test of the LR fragility ablation (`analyses/lr_fragility_mnist5k.sh`). Registered in
`transforms.DEFORMATIONS` as 'offset' (strength 'offset', in [0, 1] pixel units, negative allowed,
deterministic).

Status: a plain clipped shift; no paper defines it as an attack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .transforms import DEFORMATIONS, Deformation


def offset(x: Tensor, c: float) -> Tensor:
    """x + c, clipped to [0, 1]; x (N, C, H, W) in [0, 1], c in [-1, 1]."""
    return (x + float(c)).clamp(0.0, 1.0)


def _sample_none(n: int, s: float, g: torch.Generator, h: int, w: int, o: dict[str, Any]) -> dict[str, Tensor]:
    return {}


def _render_offset(x: Tensor, s: float, p: dict[str, Tensor], fill: str, o: dict[str, Any]) -> Tensor:
    return offset(x, s)


DEFORMATIONS["offset"] = Deformation(
    "offset", "offset", allow_negative=True, identity=0.0, random=False, sample=_sample_none, render=_render_offset,
    max_abs=1.0, doc="uniform brightness offset: every pixel + offset, clipped to [0, 1] (deterministic)")

__all__ = ["offset"]
