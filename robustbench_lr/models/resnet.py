"""One residual skeleton for ResNets and LR-Nets: the k x k spatial operator is a field.

Papers: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (bottleneck ResNet);
Hu et al., "Local Relation Networks for Image Recognition", ICCV 2019 (LR-Net = this skeleton with
every k x k conv replaced by a local relation layer, stem included).

Status: the bottleneck layout and the ResNet-26 / LR-Net-26 / LR-Net-50 stage widths follow
docs/papers.md §1.3-1.4. The LR stem (1x1 conv, then a 7x7 LR layer) and LR-Net's widths 100/200/400/800
are recollected [R] there and reproduce the verified parameter totals; 100 is rounded up to 104 so the
width divides by channel_sharing m = 8. The stride of a downsampling block sits in its spatial operator
(for LR: the query grid), as in ResNet v1.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, check_odd_kernel
from ..layers.factory import create_spatial


@dataclass(frozen=True)
class ResNetSpec:
    """Architecture of the skeleton.

    Attributes:
        layers: bottleneck blocks per stage.
        widths: bottleneck width per stage (channels of the spatial operator).
        out_channels: output channels per stage.
        strides: stride of the first block of each stage.
        stem: 'imagenet' (stride-2 stem + 3x3 max-pool, /4) or 'small' (stride 1, no pool; 28-32 px inputs).
        stem_width: channels after the stem.
        spatial: 'conv' or 'lr' (any name in layers.SPATIAL_OPS).
        kernel_size: k of every spatial operator of the stages.
        stem_kernel_size: k of the stem's spatial operator; None means 7 for 'imagenet' stems and
            `kernel_size` for 'small' stems (so a kernel-size sweep changes every operator of a small net).
        stem_stride: stride of the stem's spatial operator; None means 2 for 'imagenet' stems, 1 for 'small'.
        stem_spatial: the stem's operator, 'conv' or 'lr'; None means `spatial` (an LR-Net's stem is then a 1x1
            conv followed by an LR layer; 'conv' gives an LR-Net a k x k conv stem, the fragility ablation).
    """

    layers: tuple[int, ...]
    widths: tuple[int, ...]
    out_channels: tuple[int, ...]
    strides: tuple[int, ...]
    stem: str = "imagenet"
    stem_width: int = 64
    spatial: str = "conv"
    kernel_size: int = 3
    stem_kernel_size: int | None = None
    stem_stride: int | None = None
    stem_spatial: str | None = None


def conv_bn_relu(cin: int, cout: int, k: int = 1, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class Bottleneck(nn.Module):
    """1x1 reduce -> BN/ReLU -> k x k spatial op (stride) -> BN/ReLU -> 1x1 expand -> BN -> + shortcut -> ReLU.

    `attach` (optional) is a module applied to the residual branch before the addition (e.g. a
    recalibration such as SE or MS-SAR); it must map (N, out, H, W) to the same shape.
    """

    def __init__(self, cin: int, width: int, cout: int, stride: int, spatial: str, kernel_size: int,
                 spatial_kwargs: dict[str, Any], attach: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.spatial = create_spatial(spatial, width, kernel_size, stride, **spatial_kwargs)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.attach = attach
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, width, H, W)
        out = self.relu(self.bn2(self.spatial(out)))  # (N, width, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, cout, H/s, W/s)
        if self.attach is not None:
            out = self.attach(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


# A hook that may return a module to run after block `b` of stage `s` (0-based) given its output channels,
# bottleneck width and output stride; used by context modules such as GloRe.
AfterBlock = Callable[[int, int, int, int], "nn.Module | None"]
# A hook that may return the `attach` module of block `b` of stage `s` given (out channels, width).
AttachHook = Callable[[int, int, int, int], "nn.Module | None"]


class ResNet(nn.Module):
    """Residual network over [0, 1] pixels; normalization happens inside (`self.normalize`).

    Args:
        spec: the architecture.
        num_classes: classifier outputs.
        in_chans: input channels (1 or 3).
        mean, std: per-channel statistics of [0, 1] pixels for the inner normalization.
        spatial_kwargs: extra arguments for every spatial operator (e.g. LR's channel_sharing).
        zero_init_residual: zero the last BN gamma of each block, so blocks start as identities.
        after_block: optional hook inserting a module after a block (see `AfterBlock`).
        attach: optional hook giving each block a module on its residual branch (see `AttachHook`).
    """

    def __init__(self, spec: ResNetSpec, num_classes: int, in_chans: int, mean: Sequence[float],
                 std: Sequence[float], spatial_kwargs: dict[str, Any] | None = None, zero_init_residual: bool = True,
                 after_block: AfterBlock | None = None, attach: AttachHook | None = None) -> None:
        super().__init__()
        from ..layers.normalize import InputNormalize

        if in_chans not in (1, 3):
            raise UserError(f"in_chans must be 1 or 3; got {in_chans!r}.")
        if len(mean) != in_chans or len(std) != in_chans:
            raise UserError(f"mean/std must have in_chans={in_chans} entries; got {len(mean)} and {len(std)}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UserError(f"num_classes must be an integer >= 2; got {num_classes!r}.")
        if not (len(spec.layers) == len(spec.widths) == len(spec.out_channels) == len(spec.strides)):
            raise UserError("layers, widths, out_channels and strides must have one entry per stage.")
        check_odd_kernel("kernel_size", spec.kernel_size)
        spatial_kwargs = dict(spatial_kwargs or {})
        self.spec = spec
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.normalize = InputNormalize(mean, std)

        stem_k = spec.stem_kernel_size or (7 if spec.stem == "imagenet" else spec.kernel_size)
        check_odd_kernel("stem_kernel_size", stem_k)
        sw = spec.stem_width
        stride0 = spec.stem_stride or (2 if spec.stem == "imagenet" else 1)
        if spec.stem not in ("imagenet", "small"):
            raise UserError(f"stem must be 'imagenet' or 'small'; got {spec.stem!r}.")
        stem_op = spec.stem_spatial or spec.spatial
        if stem_op == "conv":
            stem: list[nn.Module] = conv_bn_relu(in_chans, sw, stem_k, stride0)
        else:  # relational stem: key/query from raw pixels are too weak, so lift with a 1x1 conv first
            stem = [*conv_bn_relu(in_chans, sw, 1), create_spatial(stem_op, sw, stem_k, stride0, **spatial_kwargs),
                    nn.BatchNorm2d(sw), nn.ReLU(inplace=True)]
        if spec.stem == "imagenet":
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)

        stages: list[nn.Module] = []
        cin = sw
        for s, (n_blocks, width, cout, stride) in enumerate(zip(spec.layers, spec.widths, spec.out_channels,
                                                                 spec.strides)):
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                st = stride if b == 0 else 1
                extra = attach(s, b, cout, width) if attach is not None else None
                blocks.append(Bottleneck(cin, width, cout, st, spec.spatial, spec.kernel_size, spatial_kwargs, extra))
                cin = cout
                after = after_block(s, b, cout, width) if after_block is not None else None
                if after is not None:
                    blocks.append(after)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        if zero_init_residual:
            for mod in self.modules():
                if isinstance(mod, Bottleneck):
                    nn.init.zeros_(mod.bn3.weight)
        # Context modules re-apply their own (e.g. zero-gate) initialisation after the generic one.
        for mod in self.modules():
            if mod is not self and hasattr(mod, "reset_parameters_") and callable(mod.reset_parameters_):
                mod.reset_parameters_()

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for inputs the model cannot take (wrong rank or channel count)."""
        if x.dim() != 4:
            raise UserError(f"model expects a 4-D (N, C, H, W) batch of [0, 1] pixels; got shape {tuple(x.shape)}.")
        if x.shape[1] != self.in_chans:
            raise UserError(f"model expects in_chans={self.in_chans} input channels but the batch has "
                            f"{x.shape[1]} (shape {tuple(x.shape)}).")

    def forward_features(self, x: Tensor) -> Tensor:
        """Final feature map (N, num_features, h, w) of [0, 1] pixels."""
        self.check_input(x)
        x = self.stem(self.normalize(x))
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.pool(x), 1))  # (N, num_classes)
