"""Region masks for region-restricted attacks: perturb only the background or only the foreground of an image.

Used by the region-masked PGD ablation (does a model's vulnerability live on the digit strokes or on the empty
background?). On MNIST the background is exactly 0, so `background` with threshold 0 selects it exactly.

Status: plain PyTorch; the mask is computed from the clean image only, never from the adversarial one.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import UserError, check_choice

REGIONS = ("background", "foreground")


def check_region(region: str | None, threshold: float) -> None:
    """Raise UserError unless `region` is None or one of REGIONS and `threshold` is a number in [0, 1)."""
    if region is None:
        return
    check_choice("mask", region, REGIONS)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"mask_threshold must be a number in [0, 1); got {threshold!r}.")


def region_mask(x: Tensor, region: str, threshold: float = 0.0) -> Tensor:
    """The pixels an attack may change: (n, 1, H, W) of 0.0 / 1.0 in x's dtype, broadcast over channels.

    Args:
        x: clean images (n, C, H, W) in [0, 1].
        region: 'background' = pixels whose clean value is <= threshold in every channel; 'foreground' = the rest.
        threshold: pixel value in [0, 1) (0.0: MNIST's exactly-zero background).
    """
    check_region(region, threshold)
    bg = (x <= threshold).all(dim=1, keepdim=True)  # (n, 1, H, W)
    keep = bg if region == "background" else ~bg
    return keep.to(x.dtype)


__all__ = ["REGIONS", "check_region", "region_mask"]
