"""Where an LR layer's grids sit on the input image: `LayerGeometry` and `layer_geometry(model, input_size)`.

Used by the figures to mark an output pixel and to paint its window on the image, and by
`robustbench-lr visualize --list-layers`.

Stride mapping (status: derived for this repository's skeleton; checked on lrnet_tiny by the tests, which
move one image pixel and find the change centred where this mapping says). Every operator of the skeleton
is 'same'-padded with an odd kernel and subsamples at `::s` (strided convs, max-pool 3/2/1, LR's strided
query grid), so grid position p of a map with cumulative stride S is centred on image pixel p * S. S is
measured rather than read from the modules: a forward pass on a zero image of side `PROBE_SIDE` (a multiple
of every power-of-two stride up to 64) gives S = PROBE_SIDE / grid side exactly; a second pass at the real
input size gives the grids. A model whose probe fails or is not exact falls back to the real-size ratio
rounded to a power of two (logged). On the figures, position p is drawn as the S x S square centred on
image pixel p * S, so one grid's cells tile the plane; with ceil-sized grids (28 px at S = 8 gives 4
positions centred on pixels 0, 8, 16, 24) a strip at the bottom/right edge of the image belongs to no cell.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError
from .layers import eval_mode, lr_layers, model_device, model_label

log = logging.getLogger(__name__)

PROBE_SIDE = 64


@dataclass(frozen=True)
class LayerGeometry:
    """Where one LR layer's grids sit on an H x W input image.

    Attributes:
        name: module name.
        kernel_size, stride, groups, border: the layer's k, own stride, G and border rule.
        image_size: (H, W) of the image.
        in_grid, out_grid: (h, w) of the layer's input and output maps.
        in_stride: cumulative stride S of the input map (its position p is centred on image pixel p * S).
        out_stride: in_stride * stride, the same for the output map.
    """

    name: str
    kernel_size: int
    stride: int
    groups: int
    border: str
    image_size: tuple[int, int]
    in_grid: tuple[int, int]
    out_grid: tuple[int, int]
    in_stride: int
    out_stride: int

    def check_pixel(self, pixel: Sequence[int]) -> tuple[int, int]:
        """Validate an output-grid pixel (row, col); raises `UserError` giving the grid size."""
        try:
            row, col = (int(v) for v in pixel)
        except (TypeError, ValueError):
            raise UserError(f"pixel must be (row, col) on layer {self.name}'s output grid; got {pixel!r}.") from None
        h, w = self.out_grid
        if not (0 <= row < h and 0 <= col < w):
            raise UserError(f"pixel ({row}, {col}) is outside layer {self.name}'s {h} x {w} output grid (for a "
                            f"{self.image_size[0]} x {self.image_size[1]} input): use rows 0..{h - 1} and "
                            f"columns 0..{w - 1}.")
        return row, col

    def centre_pixel(self) -> tuple[int, int]:
        return self.out_grid[0] // 2, self.out_grid[1] // 2

    def window(self, pixel: Sequence[int]) -> list[tuple[int, int, bool]]:
        """The k*k window cells of output pixel (row, col) on the input map, row-major over (dy, dx):
        (input row, input col, inside the input map)."""
        row, col = pixel
        r = self.kernel_size // 2
        h, w = self.in_grid
        cells = []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = row * self.stride + dy, col * self.stride + dx
                cells.append((y, x, 0 <= y < h and 0 <= x < w))
        return cells

    def inside(self, pixel: Sequence[int]) -> Tensor:
        """(k, k) bool: window cells of `pixel` that fall inside the input map."""
        k = self.kernel_size
        return torch.tensor([c[2] for c in self.window(pixel)]).view(k, k)

    def coverage(self) -> Tensor:
        """(k, k) float in [0, 1]: for each window offset (dy, dx), the fraction of the layer's output pixels
        whose window cell at that offset falls inside the input map (1: always, 0: never). A 7x7 window on a
        4x4 map at stride 1 reaches its corner offsets (+-3, +-3) from 1 of the 16 output pixels only."""
        r, k = self.kernel_size // 2, self.kernel_size

        def along(n_out: int, n_in: int) -> Tensor:
            pos = torch.arange(n_out)[:, None] * self.stride + torch.arange(-r, r + 1)[None, :]  # (n_out, k)
            return ((pos >= 0) & (pos < n_in)).double().mean(0)

        fy, fx = along(self.out_grid[0], self.in_grid[0]), along(self.out_grid[1], self.in_grid[1])
        return (fy[:, None] * fx[None, :]).reshape(k, k)

    @staticmethod
    def box(pos: Sequence[int], stride: int) -> tuple[float, float, float, float]:
        """(x0, y0, width, height) in imshow coordinates (pixel centres at integers) of grid position
        (row, col) of a map with cumulative stride `stride`: the stride x stride square centred on
        image pixel (row * stride, col * stride)."""
        row, col = pos
        return col * stride - stride / 2, row * stride - stride / 2, float(stride), float(stride)

    def out_box(self, pixel: Sequence[int]) -> tuple[float, float, float, float]:
        return self.box(pixel, self.out_stride)

    def window_box(self, pixel: Sequence[int]) -> tuple[float, float, float, float]:
        """The footprint of the whole k x k window on the image (not clipped)."""
        row, col = pixel
        r, s = self.kernel_size // 2, self.in_stride
        x0, y0, _, _ = self.box((row * self.stride - r, col * self.stride - r), s)
        return x0, y0, float(self.kernel_size * s), float(self.kernel_size * s)

    def describe(self) -> str:
        return (f"{self.name}: k={self.kernel_size} stride={self.stride} groups={self.groups} input "
                f"{self.in_grid[0]}x{self.in_grid[1]} -> output {self.out_grid[0]}x{self.out_grid[1]} "
                f"(cumulative stride {self.out_stride})")


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model was trained on: the checkpoint's dataset, else the registry's default."""
    meta = getattr(model, "checkpoint_meta", None)
    if isinstance(meta, dict) and meta.get("dataset", {}).get("input_size"):
        return tuple(int(v) for v in meta["dataset"]["input_size"])  # type: ignore[return-value]
    try:
        from ..models import model_info

        return tuple(model_info(model_label(model)).input_size)  # type: ignore[return-value]
    except UserError:
        raise UserError(f"cannot tell the input size of {model_label(model)}; pass input_size=(C, H, W).") from None


@torch.no_grad()
def _grids(model: nn.Module, size: tuple[int, int, int]) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    layers = lr_layers(model)
    shapes: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    handles = [m.register_forward_hook(
        lambda mod, args, out, n=n: shapes.__setitem__(n, (tuple(args[0].shape[-2:]), tuple(out.shape[-2:]))))
        for n, m in layers.items()]
    try:
        with eval_mode(model):
            model(torch.zeros(1, *size, device=model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return shapes


_GEOMETRY_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_geometry(model: nn.Module, input_size: Sequence[int] | None = None) -> dict[str, LayerGeometry]:
    """`LayerGeometry` of every LR layer for inputs of `input_size` ((C, H, W) or (H, W); default: the
    model's), in `lr_layers` order. Probes the model twice (see the module docstring); the answer depends on
    the architecture only and is cached per model and size."""
    if not lr_layers(model):
        return {}
    if input_size is None:
        input_size = default_input_size(model)
    key = tuple(int(v) for v in input_size)
    cached = _GEOMETRY_CACHE.get(model, {})
    if key not in cached:
        cached = _GEOMETRY_CACHE.setdefault(model, {})
        cached[key] = _layer_geometry(model, key)
    return dict(cached[key])


def _layer_geometry(model: nn.Module, size: tuple[int, ...]) -> dict[str, LayerGeometry]:
    layers = lr_layers(model)
    if len(size) == 2:
        size = (int(getattr(model, "in_chans", 3)), *size)
    c, hh, ww = size
    real = _grids(model, (c, hh, ww))
    strides: dict[str, int] = {}
    try:
        probe = _grids(model, (c, PROBE_SIDE, PROBE_SIDE))
        for n, ((ih, iw), _) in probe.items():
            if PROBE_SIDE % ih or PROBE_SIDE % iw or ih != iw:
                raise ValueError(f"grid {ih}x{iw} does not divide the probe")
            strides[n] = PROBE_SIDE // ih
    except Exception as exc:  # noqa: BLE001 (any failure of the probe falls back to the real-size ratios)
        log.warning("stride probe at %d px failed (%s); using real-size ratios rounded to powers of two", PROBE_SIDE,
                    exc)
        strides = {n: 2 ** round(math.log2(max(hh / ih, 1.0))) for n, ((ih, _), _) in real.items()}
    out: dict[str, LayerGeometry] = {}
    for n, mod in layers.items():
        if n not in real:
            continue  # a layer the forward pass does not use
        in_grid, out_grid = real[n]
        s_in = strides[n]
        if -(-hh // s_in) != in_grid[0] or -(-ww // s_in) != in_grid[1]:
            log.warning("layer %s: cumulative stride %d does not give its %s input grid on a %dx%d image; the "
                        "overlay may be offset", n, s_in, in_grid, hh, ww)
        out[n] = LayerGeometry(n, mod.kernel_size, mod.stride, mod.groups, mod.border, (hh, ww), in_grid, out_grid,
                               s_in, s_in * mod.stride)
    return out


def resolve_pixel(geom: LayerGeometry, pixel: Sequence[int] | None) -> tuple[int, int]:
    """`pixel` checked against the layer's output grid (None: its centre)."""
    return geom.centre_pixel() if pixel is None else geom.check_pixel(pixel)


__all__ = ["LayerGeometry", "PROBE_SIDE", "default_input_size", "layer_geometry", "resolve_pixel"]
