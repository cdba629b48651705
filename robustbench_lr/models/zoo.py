"""The registered ResNet and LR-Net models (one skeleton, `spatial` = 'conv' or 'lr').

| name            | input     | stages          | widths (spatial op)         | default k |
|-----------------|-----------|-----------------|-----------------------------|-----------|
| resnet26        | 3x224x224 | 2,2,2,2         | 64/128/256/512              | 3         |
| lrnet26         | 3x224x224 | 2,2,2,2         | 104/200/400/800 (m=8)       | 7         |
| lrnet50         | 3x224x224 | 3,4,6,3         | 104/200/400/800 (m=8)       | 7         |
| resnet26_cifar  | 3x32x32   | 2,2,2,2, small stem, `width` multiplier | 64..512 | 3         |
| lrnet26_cifar   | 3x32x32   | as lrnet26, small stem, `width` multiplier  |        | 7         |
| resnet_tiny     | 1x28x28   | 1,2,2, stride-2 stem | 32/64/128 (outputs 64/128/256) | 3      |
| lrnet_tiny      | 1x28x28   | 1,2,2, stride-2 stem | 32/64/128 (outputs 64/128/256) | 7      |

Status: ImageNet layouts per docs/papers.md §1.3-1.4 (parameter totals checked by tests against the
verified 16.0M / 14.7M / 23.3M); LR widths are rounded up to a multiple of `channel_sharing`
(100 -> 104 for m = 8). Small-image and tiny variants are this project's own (no paper defines them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..errors import UserError
from ..data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD
from ._registry import ModelInfo, register_model
from .resnet import AfterBlock, AttachHook, ResNet, ResNetSpec

RESNET26 = ResNetSpec(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), out_channels=(256, 512, 1024, 2048),
                      strides=(1, 2, 2, 2), stem="imagenet", stem_width=64, spatial="conv", kernel_size=3)
LRNET26 = replace(RESNET26, widths=(100, 200, 400, 800), spatial="lr", kernel_size=7)
LRNET50 = replace(LRNET26, layers=(3, 4, 6, 3))
# Tiny: a stride-2 stem (28 -> 14 px), then stages at 14, 7 and 4 px; expansion 2 keeps the 1x1 convs cheap,
# and widths >= 32 leave >= 4 aggregation groups per LR layer at m = 8.
TINY = ResNetSpec(layers=(1, 2, 2), widths=(32, 64, 128), out_channels=(64, 128, 256), strides=(1, 2, 2),
                  stem="small", stem_width=32, stem_stride=2, spatial="conv", kernel_size=3)


def default_stats(in_chans: int, stem: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization defaults: MNIST for 1 channel, ImageNet for 224-px stems, CIFAR-10 otherwise."""
    if in_chans == 1:
        return MNIST_MEAN, MNIST_STD
    if stem == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return CIFAR10_MEAN, CIFAR10_STD


def scale_channels(c: int, width: float, multiple: int = 1) -> int:
    """`c * width` rounded to the nearest integer, then up to a multiple of `multiple` (LR: m)."""
    v = max(1, int(round(c * width)))
    return -(-v // multiple) * multiple


def build_resnet(spec: ResNetSpec, *, num_classes: int, in_chans: int, kernel_size: int, width: float = 1.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 zero_init_residual: bool = True, stem_kernel_size: int | None = None,
                 stem_spatial: str | None = None, after_block: AfterBlock | None = None,
                 attach: AttachHook | None = None, **spatial_kwargs: Any) -> ResNet:
    """Build the skeleton from a base spec.

    `width` multiplies every channel count; the channels of LR operators (bottleneck widths and the stem)
    are rounded up to a multiple of `channel_sharing`, so LR-Net's 100 becomes 104 for m = 8. `stem_spatial`
    ('conv' | 'lr', default: the skeleton's operator) swaps the stem's operator alone.
    """
    if stem_spatial is not None and stem_spatial not in ("conv", "lr"):
        raise UserError(f"stem_spatial must be 'conv' or 'lr'; got {stem_spatial!r}.")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise UserError(f"width must be a positive number; got {width!r}.")
    m = spatial_kwargs.get("channel_sharing", 8) if spec.spatial == "lr" else 1
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise UserError(f"channel_sharing must be a positive integer; got {m!r}.")
    spec = replace(
        spec, kernel_size=kernel_size, stem_kernel_size=stem_kernel_size, stem_spatial=stem_spatial,
        widths=tuple(scale_channels(c, width, m) for c in spec.widths),
        out_channels=tuple(scale_channels(c, width) for c in spec.out_channels),
        stem_width=scale_channels(spec.stem_width, width, m),
    )
    d_mean, d_std = default_stats(in_chans, spec.stem)
    return ResNet(spec, num_classes=num_classes, in_chans=in_chans, mean=tuple(mean or d_mean),
                  std=tuple(std or d_std), spatial_kwargs=spatial_kwargs, zero_init_residual=zero_init_residual,
                  after_block=after_block, attach=attach)


def _register(name: str, base: ResNetSpec, input_size: tuple[int, int, int], num_classes: int, description: str,
              family: str | None = None) -> None:
    info = ModelInfo(name=name, family=family or base.spatial, spatial=base.spatial, kernel_size=base.kernel_size,
                     input_size=input_size, num_classes=num_classes, description=description)

    def builder(num_classes: int, in_chans: int, kernel_size: int, width: float = 1.0,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                zero_init_residual: bool = True, stem_kernel_size: int | None = None,
                stem_spatial: str | None = None, **spatial_kwargs: Any) -> nn.Module:
        return build_resnet(base, num_classes=num_classes, in_chans=in_chans, kernel_size=kernel_size, width=width,
                            mean=mean, std=std, zero_init_residual=zero_init_residual,
                            stem_kernel_size=stem_kernel_size, stem_spatial=stem_spatial, **spatial_kwargs)

    builder.__name__ = name
    register_model(info)(builder)


_register("resnet26", RESNET26, (3, 224, 224), 1000, "bottleneck ResNet-26, ImageNet layout (16.0M params)")
_register("lrnet26", LRNET26, (3, 224, 224), 1000, "LR-Net-26, 7x7 local relation, m=8 (14.7M params)")
_register("lrnet50", LRNET50, (3, 224, 224), 1000, "LR-Net-50, 7x7 local relation, m=8 (23.3M params)")
_register("resnet26_cifar", replace(RESNET26, stem="small"), (3, 32, 32), 10,
          "ResNet-26 for 28-32 px inputs: stride-1 stem, no max-pool, `width` multiplier")
_register("lrnet26_cifar", replace(LRNET26, stem="small"), (3, 32, 32), 10,
          "LR-Net-26 for 28-32 px inputs: stride-1 stem, no max-pool, `width` multiplier")
_register("resnet_tiny", TINY, (1, 28, 28), 10, "3-block bottleneck ResNet that trains on a laptop CPU in a minute")
_register("lrnet_tiny", replace(TINY, spatial="lr", kernel_size=7), (1, 28, 28), 10,
          "3-block LR-Net (7x7, m=8) that trains on a laptop CPU in a minute or two")
