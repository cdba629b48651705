"""Spatial operators by name, so a residual skeleton can swap its k x k operator with one field.

Every factory maps (channels, kernel_size, stride, **kwargs) to a module C -> C with a 'same'-padded,
stride-`stride` output. Register more with `register_spatial`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..errors import UserError, check_choice, check_odd_kernel
from .local_relation import LocalRelation2d

SpatialFactory = Callable[..., nn.Module]
SPATIAL_OPS: dict[str, SpatialFactory] = {}
# Keyword arguments each operator accepts beyond (channels, kernel_size, stride).
SPATIAL_KWARGS: dict[str, frozenset[str]] = {}


def register_spatial(name: str, kwargs: frozenset[str] = frozenset()) -> Callable[[SpatialFactory], SpatialFactory]:
    """Decorator: register `fn(channels, kernel_size, stride, **kwargs)` under `name`."""

    def deco(fn: SpatialFactory) -> SpatialFactory:
        SPATIAL_OPS[name] = fn
        SPATIAL_KWARGS[name] = kwargs
        return fn

    return deco


@register_spatial("conv")
def conv_spatial(channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    """k x k convolution C -> C, no bias (a BatchNorm follows)."""
    check_odd_kernel("kernel_size", kernel_size)
    return nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


LR_KWARGS = frozenset({"channel_sharing", "appearance", "geometry", "border", "geometry_hidden",
                       "geometry_input", "impl", "temperature"})


@register_spatial("lr", LR_KWARGS)
def lr_spatial(channels: int, kernel_size: int, stride: int = 1, **kwargs) -> nn.Module:
    """LocalRelation2d C -> C (its trailing 1x1 conv without bias: a BatchNorm follows)."""
    return LocalRelation2d(channels, kernel_size, stride=stride, bias=False, **kwargs)


def create_spatial(name: str, channels: int, kernel_size: int, stride: int = 1, **kwargs) -> nn.Module:
    """Build the spatial operator `name`; unknown names or keyword arguments raise a clear error."""
    check_choice("spatial", name, sorted(SPATIAL_OPS))
    extra = set(kwargs) - SPATIAL_KWARGS[name]
    if extra:
        allowed = ", ".join(sorted(SPATIAL_KWARGS[name])) or "none"
        raise UserError(f"spatial operator {name!r} does not take {', '.join(sorted(extra))}; "
                        f"its options are: {allowed}.")
    return SPATIAL_OPS[name](channels, kernel_size, stride, **kwargs)
