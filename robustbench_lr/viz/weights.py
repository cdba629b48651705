"""Figures of the pairwise aggregation weights of one LR layer at one output pixel.

- `plot_pixel_weights`: the k x k softmax weights of every group as small heatmaps, next to the input with
  the pixel's cell and window marked.
- `plot_weights_overlay`: the same weights drawn on the input image, each window cell as a coloured square
  of the size of its grid step (cumulative stride, see `viz.layers`).
- `plot_attention_shift`: the pixel's weights on a clean and an adversarial image, and their difference,
  per group, with the per-group Jensen-Shannon divergence.

Status: working on the repository's LR models (tested on lrnet_tiny). Weights come from
`LocalRelation2d.aggregation_weights` on the layer's real input (captured with a forward hook), so they are
exactly what the layer aggregates with (appearance + geometry terms, softmax over the window). Window cells
outside the input map (weight exactly 0 under border='mask') are drawn light grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError
from . import _draw as D
from .geometry import LayerGeometry, layer_geometry, resolve_pixel
from .layers import aggregation_weights, as_batch, eval_mode, model_label, resolve_layer

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _setup(model: nn.Module, x: Tensor, layer: str | None, pixel: Sequence[int] | None
           ) -> tuple[str, LayerGeometry, tuple[int, int]]:
    name, _ = resolve_layer(model, layer)
    geom = layer_geometry(model, tuple(x.shape[1:]))[name]
    return name, geom, resolve_pixel(geom, pixel)


def _inside(geom: LayerGeometry, pixel: tuple[int, int]) -> np.ndarray | None:
    """(k, k) bool of in-map window cells under border='mask'; None under 'zeros' (every cell is weighted)."""
    return geom.inside(pixel).numpy() if geom.border == "mask" else None


def pixel_weights(model: nn.Module, x: Tensor, layer: str, pixel: tuple[int, int]) -> Tensor:
    """Weights (N, G, k, k) of output pixel (row, col) of `layer` on images x (N, C, H, W)."""
    w = aggregation_weights(model, x, layer)  # (N, G, k*k, Ho, Wo)
    k = int(round(w.shape[2] ** 0.5))
    return w[:, :, :, pixel[0], pixel[1]].reshape(w.shape[0], w.shape[1], k, k).cpu()


def plot_pixel_weights(model: nn.Module, image: Tensor, layer: str | None = None,
                       pixel: Sequence[int] | None = None, *, max_groups: int = 32,
                       ax: Axes | None = None) -> Figure:
    """The k x k softmax weights of every group of LR layer `layer` at output pixel `pixel` = (row, col) on
    that layer's output grid, for one image (C, H, W) in [0, 1]; plus the input with the pixel marked.

    `layer` None means the first LR layer, `pixel` None the grid's centre. At most `max_groups` groups are
    drawn (the first ones). Heatmaps share one colour scale [0, max weight]; rows are dy, columns dx.
    `ax` is accepted for API symmetry and ignored (the figure has several panels).
    Returns a `matplotlib.figure.Figure`.
    """
    x = as_batch(image, model)[:1]
    name, geom, pixel = _setup(model, x, layer, pixel)
    w = pixel_weights(model, x, name, pixel)[0].numpy()  # (G, k, k)
    g_all = w.shape[0]
    w = w[:max_groups]
    g, k = w.shape[0], w.shape[1]
    rows, cols = D.grid_shape(g, 6)
    fig = D.new_figure(*D.fit_page(max(6.5, 2.9 + 1.45 * cols + 0.7), max(3.2, 1.5 * rows + 0.9)))
    left, right = fig.subfigures(1, 2, width_ratios=[2.9, 1.45 * cols + 0.7])
    ax_img = left.add_subplot(1, 1, 1)
    D.show_image(ax_img, x[0], f"input; pixel ({pixel[0]}, {pixel[1]}) of {name}\ncell solid, {k}x{k} window dashed")
    D.mark_pixel(ax_img, geom, pixel)
    inside = _inside(geom, pixel)
    vmax = float(w.max()) or 1.0
    gs = right.add_gridspec(rows, cols)
    axes, im = [], None
    for i in range(g):
        a = right.add_subplot(gs[i // cols, i % cols])
        im = D.heatmap(a, w[i], 0.0, vmax, inside=inside, title=f"group {i}")
        axes.append(a)
    D.offset_ticks(axes[(rows - 1) * cols if rows > 1 else 0], k)
    D.add_colorbar(right, im, axes, "softmax weight (red dotted: uniform 1/k\u00b2)", uniform=1.0 / (k * k))
    more = f" (first {g} shown)" if g < g_all else ""
    D.suptitle(fig, f"{model_label(model)} {name}: aggregation weights at output pixel ({pixel[0]}, {pixel[1]})\n"
                    f"k={k}, stride {geom.stride}, {g_all} group{'s' if g_all > 1 else ''}{more}; rows dy, columns dx; "
                    f"+: centre"
                    + ("; grey: outside the map" if inside is not None and not inside.all() else ""))
    return fig


def _overlay(ax, x: Tensor, geom: LayerGeometry, pixel: tuple[int, int], w: np.ndarray, norm, cmap,
             alpha: float, title: str) -> None:
    """Image with each in-map window cell painted with its weight's colour (a square of side in_stride)."""
    from matplotlib.patches import Rectangle

    D.show_image(ax, x.mean(0, keepdim=True), title)  # grey background, so the colours read on RGB images too
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    flat = w.reshape(-1)
    for (yy, xx, inside), v in zip(geom.window(pixel), flat):
        if geom.border == "mask" and not inside:
            continue
        x0, y0, bw, bh = geom.box((yy, xx), geom.in_stride)
        ax.add_patch(Rectangle((x0, y0), bw, bh, facecolor=cmap(norm(v)), edgecolor="none", alpha=alpha))
    D.mark_pixel(ax, geom, pixel, window=False, colour="white")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def plot_weights_overlay(model: nn.Module, image: Tensor, layer: str | None = None,
                         pixel: Sequence[int] | None = None, *, max_groups: int = 8, alpha: float = 0.65,
                         ax: Axes | None = None) -> Figure:
    """The weights of `plot_pixel_weights` drawn on the input image at image scale: window cell (dy, dx) of
    output pixel (row, col) is the input-map position (row * stride + dy, col * stride + dx), painted as the
    in_stride x in_stride square centred on image pixel (position * in_stride) (see `viz.layers`).

    One panel per group (the first `max_groups`), preceded by the mean over groups when there are several;
    the pixel's own output cell is outlined in white; the image is drawn in grey (channel mean) underneath.
    `ax` (only with a single panel) draws into a given axes.
    Returns the figure.
    """
    import matplotlib as mpl

    x = as_batch(image, model)[:1]
    name, geom, pixel = _setup(model, x, layer, pixel)
    w = pixel_weights(model, x, name, pixel)[0].numpy()  # (G, k, k)
    g_all = w.shape[0]
    panels = [("mean over groups", w.mean(0))] if g_all > 1 else []
    panels += [(f"group {i}", w[i]) for i in range(min(g_all, max_groups))]
    cmap = mpl.colormaps[D.WEIGHT_CMAP]
    norm = mpl.colors.Normalize(0.0, float(w.max()) or 1.0)
    if ax is not None and len(panels) == 1:
        _overlay(ax, x[0], geom, pixel, panels[0][1], norm, cmap, alpha, panels[0][0])
        return ax.figure
    rows, cols = D.row_grid(len(panels), 5)  # mean + 8 groups: 2 x 5, under half a page
    side = min(2.6, (D.PAGE_WIDTH - 0.8) / cols)  # in: one panel, as wide as the page allows
    fig = D.new_figure(*D.fit_page(max(5.0, side * cols + 0.8), (side + 0.1) * rows + 0.9))
    gs = fig.add_gridspec(rows, cols)
    axes = []
    for i, (title, wi) in enumerate(panels):
        a = fig.add_subplot(gs[i // cols, i % cols])
        _overlay(a, x[0], geom, pixel, wi, norm, cmap, alpha, title)
        axes.append(a)
    D.add_colorbar(fig, mpl.cm.ScalarMappable(norm=norm, cmap=cmap), axes, "softmax weight")
    more = f" (first {max_groups} of {g_all} groups)" if g_all > max_groups else ""
    D.suptitle(fig, f"{model_label(model)} {name}: weights of output pixel ({pixel[0]}, {pixel[1]}) on the "
                    f"image{more}\n"
                    f"k={geom.kernel_size}; window cell = {geom.in_stride}x{geom.in_stride} px, output cell = "
                    f"{geom.out_stride}x{geom.out_stride} px (outlined); grid position p is centred on pixel "
                    f"p*stride")
    return fig


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> list[int]:
    with eval_mode(model):
        return model(x).argmax(1).tolist()


def _shift_top(fig: Figure, model: nn.Module, geom: LayerGeometry, pixel: tuple[int, int], xc: Tensor, xa: Tensor,
               pred: list[int]) -> None:
    top = fig  # a subfigure of the page-wide figure
    axes = top.subplots(1, 3)
    for a, img, title in zip(axes[:2], (xc, xa), (f"clean: prediction {pred[0]}", f"adversarial: prediction {pred[1]}")):
        D.show_image(a, img, title)
        D.mark_pixel(a, geom, pixel)
    D.perturbation_panel(top, axes[2], xc, xa)
    D.mark_pixel(axes[2], geom, pixel, colour="black")


def plot_attention_shift(model: nn.Module, x_clean: Tensor, x_adv: Tensor, layer: str | None = None,
                         pixel: Sequence[int] | None = None, *, max_groups: int = 8,
                         ax: Axes | None = None) -> Figure:
    """The weights of one output pixel on the clean and the adversarial image and their difference
    (adversarial - clean): one column per group (the first `max_groups`), titled with the group's Jensen-Shannon
    divergence (nats); above them both images (with the model's predictions, the pixel's cell and window marked)
    and the perturbation with its colour scale. Images are (C, H, W) in [0, 1]. Page-wide. Returns the figure.
    """
    from .drift import js_divergence

    xc, xa = as_batch(x_clean, model, "x_clean")[:1], as_batch(x_adv, model, "x_adv")[:1]
    if xc.shape != xa.shape:
        raise UserError(f"x_clean and x_adv must have the same shape; got {tuple(xc.shape)} and {tuple(xa.shape)}.")
    x = torch.cat([xc, xa])
    name, geom, pixel = _setup(model, x, layer, pixel)
    w = pixel_weights(model, x, name, pixel)  # (2, G, k, k)
    g_all, k = w.shape[1], w.shape[2]
    g = min(g_all, max_groups)
    js = js_divergence(w[0].reshape(g_all, -1), w[1].reshape(g_all, -1)).numpy()  # (G,)
    w = w.numpy()
    inside = _inside(geom, pixel)
    cell = (D.PAGE_WIDTH - 1.0) / max(g, 4)  # in: side of one window panel
    fig = D.new_figure(D.PAGE_WIDTH, 2.4 + 3 * cell + 0.75 + 0.7)
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4, 3 * cell + 0.75])
    _shift_top(top, model, geom, pixel, xc[0], xa[0], _predict(model, x))
    _shift_grid(bottom, w[:, :g], js[:g], inside, k)
    more = f", first {g} of {g_all} groups" if g < g_all else ""
    D.suptitle(fig, f"{model_label(model)} {name}, output pixel ({pixel[0]}, {pixel[1]}): weights, clean vs "
                    f"adversarial{more}\nwindows: rows dy, columns dx, +: centre; mean JS over groups {float(js.mean()):.3g} nats "
                    f"(max ln 2 = 0.693)"
                    + ("; grey: outside the map" if inside is not None and not inside.all() else ""))
    return fig


def _shift_grid(sub, w: np.ndarray, js: np.ndarray, inside: np.ndarray | None, k: int) -> None:
    """Rows clean / adversarial / difference, one column per group; one colour bar per kind."""
    g = w.shape[1]
    vmax = float(w.max()) or 1.0
    diff = w[1] - w[0]
    dmax = float(np.abs(diff).max()) or 1e-12
    gs = sub.add_gridspec(3, max(g, 4))
    w_axes, d_axes, im_w, im_d = [], [], None, None
    for i in range(g):
        for j, lab in enumerate(("clean", "adversarial")):
            a = sub.add_subplot(gs[j, i])
            im_w = D.heatmap(a, w[j, i], 0.0, vmax, inside=inside,
                             title=f"group {i}\nJS {js[i]:.2g}" if j == 0 else None)
            w_axes.append(a)
            if i == 0:
                a.set_ylabel(lab, fontsize=D.FONT)
        a = sub.add_subplot(gs[2, i])
        im_d = D.heatmap(a, diff[i], -dmax, dmax, inside=inside, cmap=D.DIFF_CMAP)
        d_axes.append(a)
        if i == 0:
            a.set_ylabel("adv - clean", fontsize=D.FONT)
    D.add_colorbar(sub, im_w, w_axes, "softmax weight")
    D.add_colorbar(sub, im_d, d_axes, "difference")


__all__ = ["pixel_weights", "plot_attention_shift", "plot_pixel_weights", "plot_weights_overlay"]
