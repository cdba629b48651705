"""MSSAR2d: a RECONSTRUCTION of multi-scale spatially-asymmetric recalibration (MS-SAR).

Paper: Yan Wang, Lingxi Xie, Siyuan Qiao, Ya Zhang, Wenjun Zhang, Alan Yuille. "Multi-scale Spatially-
Asymmetric Recalibration for Image Classification", ECCV 2018. https://arxiv.org/abs/1804.00787

Status: NOT the paper's method. The paper's formula, scales, coordinate sets, placement and
initialisation could not be recovered (docs/papers.md §4.2: only the abstract and the first paragraphs of
the introduction were available). This module implements the hypothesis of docs/papers.md §4.3, which only
agrees with what the abstract says: each neuron's importance is computed from regions around it, at
several scales, with weights that depend on the direction of the offset (spatially asymmetric), and is
multiplied onto the response, at a small cost. Do not report results of this module as "MS-SAR" without
that caveat.

The reconstruction, on a residual branch X (C x H x W), before the shortcut addition (SE placement):

    Z    = ReLU(W_r X)                                  1x1 conv C -> C / r (SE-style reduction; r = None: Z = X)
    R_s  = AvgPool_{s x s, stride 1}(Z)                 region descriptors at each scale s ("coordinate sets")
    D_s  = DWConv_{k x k, dilation delta_s}(R_s)        a learned depthwise kernel per scale: a region's weight
                                                        depends on its offset from the neuron (asymmetric)
    S    = sigmoid( W_f [D_s1, D_s2, ...] + b_f )       = sigmoid(sum_s W_f,s D_s + b_f); C or 1 channel(s)
    Y    = X * (1 + alpha * (S - 1))                    alpha: one learned scalar, 0 at init

Choices (all arguments, defaults in brackets): scales [(3, 7, 15)], reduction r [16], depthwise kernel k
[3], score shape ['channel': C x H x W, or 'spatial': 1 x H x W], dilation delta_s [s // 2 for s > 1, so the
k x k taps read neighbouring, half-overlapping regions instead of near-identical ones shifted by one
pixel; `dilated=False` gives delta = 1, the literal §4.3 sketch]. Average pooling counts only in-image
pixels (count_include_pad=False), and the depthwise kernels zero-pad.

Cost: the per-pixel 1x1 convs cost about C^2 / 16 + |S| C^2 / 16 MACs per position, so with the defaults a gate on
every block of ResNet-26 adds +2.8M params (+17.5%) and +0.42 GMAC (+17.8%) at 224 px: more than the
abstract's "small fractions" (and more than the brief's "a few % of a block" estimate). score='spatial'
with reduction=32 brings it to +0.35M / +0.05 GMAC.

Initialisation (the paper's is unknown): alpha = 0 makes the module an exact identity (Y == X bit for bit),
like the zero-gamma BNs of GloRe and CNL, so inserting it leaves a pretrained or freshly initialised
network unchanged; training moves alpha away from 0 and the gate towards the plain recalibration
Y = X * S (alpha = 1, which is also what `zero_init=False` starts from). A zero-initialised final conv
inside the sigmoid could not do this (sigmoid(0) = 1/2 halves the branch), and a 2 * sigmoid gate would
change the gate's range; interpolating with a zero scalar keeps the SE-style (0, 1) score and costs one
parameter. With alpha = 0 only alpha receives a gradient on the first step (as with any zero gate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, check_bool, check_choice, check_odd_kernel

SCORE_SHAPES = ("channel", "spatial")


class MSSAR2d(nn.Module):
    """Multi-scale, spatially-asymmetric recalibration gate (reconstruction, see the module docstring).

    Args:
        channels: C, input and output channels.
        scales: odd sizes s of the stride-1 average pools (the region scales), default (3, 7, 15).
        reduction: r of the SE-style 1x1 reduction C -> max(1, C // r) before pooling; None or 1 pools X
            itself. Default 16.
        kernel_size: k, odd size of the per-scale depthwise kernel, default 3.
        score: 'channel' (one score per channel and position, C x H x W; default) or 'spatial' (one per
            position, 1 x H x W, broadcast over channels).
        dilated: dilate scale s's depthwise kernel by max(1, s // 2) (default) or not at all.
        zero_init: start with alpha = 0 (exact identity; default) or alpha = 1 (plain gate Y = X * S).

    Shape:
        input (N, C, H, W) -> output (N, C, H, W); any H, W >= 1.
    """

    def __init__(self, channels: int, scales: Sequence[int] = (3, 7, 15), reduction: int | None = 16,
                 kernel_size: int = 3, score: str = "channel", *, dilated: bool = True,
                 zero_init: bool = True) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise UserError(f"channels must be a positive integer; got {channels!r}.")
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or len(scales) == 0:
            raise UserError(f"scales must be a non-empty list of odd integers (e.g. [3, 7, 15]); got {scales!r}.")
        for s in scales:
            check_odd_kernel("scales", s)
        if len(set(scales)) != len(scales):
            raise UserError(f"scales must not repeat a scale; got {list(scales)!r}.")
        if reduction is not None and (isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1):
            raise UserError(f"reduction must be a positive integer or None; got {reduction!r}.")
        check_odd_kernel("kernel_size", kernel_size)
        check_choice("score", score, SCORE_SHAPES)
        check_bool("dilated", dilated)
        check_bool("zero_init", zero_init)

        self.channels = channels
        self.scales = tuple(int(s) for s in scales)
        self.reduction = reduction
        self.kernel_size = kernel_size
        self.score = score
        self.dilated = dilated
        self.zero_init = zero_init
        if reduction is None or reduction == 1:
            self.reduce = None
            cr = channels
        else:
            cr = max(1, channels // reduction)
            self.reduce = nn.Sequential(nn.Conv2d(channels, cr, 1, bias=True), nn.ReLU(inplace=True))
        self.reduced_channels = cr
        self.pools = nn.ModuleList(nn.AvgPool2d(s, stride=1, padding=s // 2, count_include_pad=False)
                                   for s in self.scales)
        dw: list[nn.Module] = []
        for s in self.scales:
            dil = max(1, s // 2) if dilated else 1
            dw.append(nn.Conv2d(cr, cr, kernel_size, padding=dil * (kernel_size // 2), dilation=dil, groups=cr,
                                bias=False))
        self.asym = nn.ModuleList(dw)
        # One 1x1 conv over the concatenated scales == the sum over scales of one 1x1 conv per scale.
        self.fuse = nn.Conv2d(cr * len(self.scales), channels if score == "channel" else 1, 1, bias=True)
        self.alpha = nn.Parameter(torch.zeros(()))
        self.reset_parameters_()

    def reset_parameters_(self) -> None:
        """alpha = 0 (exact identity) or 1 (`zero_init=False`); the score head's bias at zero. The convs keep
        the model's generic He initialisation (or PyTorch's default when used standalone)."""
        with torch.no_grad():
            self.alpha.fill_(0.0 if self.zero_init else 1.0)
        nn.init.zeros_(self.fuse.bias)

    def extra_repr(self) -> str:
        return (f"{self.channels}, scales={self.scales}, reduction={self.reduction}, "
                f"kernel_size={self.kernel_size}, score={self.score!r}, dilated={self.dilated}, "
                f"zero_init={self.zero_init}")

    def scores(self, x: Tensor) -> Tensor:
        """The sigmoid score S, (N, C, H, W) or (N, 1, H, W), before the alpha interpolation."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(f"MSSAR2d expects a (N, {self.channels}, H, W) input; got shape {tuple(x.shape)}.")
        z = self.reduce(x) if self.reduce is not None else x  # (N, Cr, H, W)
        regions = [dw(pool(z)) for pool, dw in zip(self.pools, self.asym)]  # each (N, Cr, H, W)
        return torch.sigmoid(self.fuse(torch.cat(regions, dim=1)))  # (N, C or 1, H, W)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scores(x)
        return x * (1 + self.alpha * (s - 1))  # alpha = 0: exactly x; alpha = 1: x * s

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """Nothing beyond the convolutions: pooling, the sigmoid and the gating product are not counted
        (models.profile's convention for pooling and elementwise work)."""
        return 0


__all__ = ["MSSAR2d", "SCORE_SHAPES"]
