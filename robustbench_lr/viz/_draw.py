"""Drawing helpers shared by the figure modules: figures, images, k x k heatmaps and grid markers, and the one
figure style of the package (the report's curves use it too).

Figures are `matplotlib.figure.Figure` objects built without pyplot (no global state, nothing to close, no
display needed); `Figure.savefig` renders them with Agg (PNG) or the PDF backend.

Style: every figure is at most `PAGE_WIDTH` inches wide and at most `PAGE_HEIGHT` tall (the report's text block),
and the report places figures at their own size (never enlarged, shrunk only if too big), so the font sizes
below are the printed sizes in points: panel titles, axis and colour-bar labels `FONT`; tick labels, legends,
annotations and the offset axes of small k x k heatmaps `SMALL` (never less); figure titles `TITLE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from ..errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WEIGHT_CMAP = "viridis"
DIFF_CMAP = "RdBu_r"
OUTSIDE_COLOUR = "0.85"  # window cells outside the input map (weight exactly 0 under border='mask')
PIXEL_COLOUR = "#ff3b30"
FONT = 8.5  # panel titles, axis and colour-bar labels (pt, as printed)
SMALL = 7.5  # tick labels, legends, annotations (pt; nothing smaller)
TITLE = 10  # figure titles
PAGE_WIDTH = 7.0  # in: the report's text width (A4 less 1.5 cm margins)
PAGE_HEIGHT = 9.2  # in: the text height left under a heading and above a caption


def _pyplot_free_figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("figures need matplotlib: pip install matplotlib") from None
    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def new_figure(width: float, height: float) -> Figure:
    """An empty constrained-layout figure of `width` x `height` inches."""
    return _pyplot_free_figure(width, height)


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for n panels with at most `max_cols` columns."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


def row_grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, cols) for n panels in as few rows as `max_cols` columns allow, the columns then balanced (9 panels,
    5 columns: 2 x 5); page-wide figures of small panels stay short, so two fit on a report page."""
    rows = math.ceil(n / max(1, min(max_cols, n)))
    return rows, math.ceil(n / rows)


def to_numpy_image(x: Tensor) -> tuple[np.ndarray, str | None]:
    """(C, H, W) [0, 1] pixels -> an array for imshow and its colormap (gray for one channel)."""
    a = x.detach().float().cpu().clamp(0, 1).numpy()
    if a.shape[0] == 1:
        return a[0], "gray"
    return np.transpose(a[:3], (1, 2, 0)), None


def show_image(ax, x: Tensor, title: str | None = None) -> None:
    """Draw an image (C, H, W) in [0, 1] with pixel centres at integer coordinates, no ticks."""
    arr, cmap = to_numpy_image(x)
    ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=FONT)


def show_signed(ax, a: np.ndarray, vmax: float, title: str | None = None, cmap: str = DIFF_CMAP):
    """A signed map with a colour scale symmetric about 0; returns the image artist."""
    vmax = float(vmax) if vmax > 0 else 1e-12
    im = ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=FONT)
    return im


def heatmap(ax, w: np.ndarray, vmin: float, vmax: float, *, inside: np.ndarray | None = None,
            cmap: str = WEIGHT_CMAP, title: str | None = None, centre: bool = True):
    """A k x k map of window weights (rows dy, columns dx, from -r). Cells outside the input map (`inside`
    False) are drawn light grey; the centre cell (offset (0, 0)) is marked with a red '+'. Returns the artist."""
    import matplotlib as mpl

    k = w.shape[0]
    cm = mpl.colormaps[cmap].with_extremes(bad=OUTSIDE_COLOUR)
    data = np.ma.masked_array(w, mask=None if inside is None else ~inside)
    im = ax.imshow(data, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    r = k // 2
    if centre:
        colour = "black" if cmap == DIFF_CMAP else PIXEL_COLOUR
        ax.plot([r], [r], marker="+", color=colour, markersize=min(10.0, 60.0 / k), mew=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=FONT)
    return im


def offset_ticks(ax, k: int) -> None:
    """Label a k x k heatmap's axes with the offsets dx (columns) and dy (rows)."""
    r = k // 2
    ticks = [0, r, k - 1] if k > 1 else [0]
    ax.set_xticks(ticks, [str(t - r) for t in ticks], fontsize=SMALL)
    ax.set_yticks(ticks, [str(t - r) for t in ticks], fontsize=SMALL)
    ax.set_xlabel("dx (cells)", fontsize=SMALL, labelpad=1)
    ax.set_ylabel("dy (cells)", fontsize=SMALL, labelpad=1)
    ax.tick_params(length=2, pad=1)


def mark_pixel(ax, geom, pixel: Sequence[int], *, window: bool = True, colour: str = PIXEL_COLOUR) -> None:
    """Outline an output pixel's cell (solid) and its k x k window footprint (dashed) on an image axes,
    keeping the axes limits on the image."""
    from matplotlib.patches import Rectangle

    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    x0, y0, w, h = geom.out_box(pixel)
    ax.add_patch(Rectangle((x0, y0), w, h, fill=False, edgecolor=colour, linewidth=1.5))
    if window:
        x0, y0, w, h = geom.window_box(pixel)
        ax.add_patch(Rectangle((x0, y0), w, h, fill=False, edgecolor=colour, linewidth=1.0, linestyle="--"))
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)


def suptitle(fig, text: str) -> None:
    """A figure title, each line wrapped to the figure's width (about 14 characters per inch at this size)."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 13))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=TITLE)


def add_colorbar(fig, im, axes, label: str | None = None, uniform: float | None = None):
    """A colour bar for `axes`; `uniform` (e.g. 1 / k^2) draws the level of a uniform window as a red dotted line."""
    cb = fig.colorbar(im, ax=axes, shrink=0.9, aspect=25, pad=0.02)
    cb.ax.tick_params(labelsize=SMALL)
    if label:
        cb.set_label(label, fontsize=FONT)
    if uniform is not None and cb.vmin <= uniform <= cb.vmax:
        cb.ax.axhline(uniform, color=PIXEL_COLOUR, linestyle=":", linewidth=1.8)
    return cb


def perturbation_panel(fig, ax, xc: Tensor, xa: Tensor, title: str = "perturbation") -> None:
    """The perturbation x_adv - x_clean ((C, H, W); summed over channels) on a symmetric colour scale, with a
    colour bar in pixel values (images in [0, 1]) and its Linf and L2 norms in the title."""
    delta = (xa - xc).sum(0).cpu().numpy()
    linf, l2 = float((xa - xc).abs().max()), float((xa - xc).flatten().norm())
    im = show_signed(ax, delta, float(np.abs(delta).max()), f"{title}\nLinf {linf:.3g}, L2 {l2:.3g}")
    chans = " (sum over channels)" if xc.shape[0] > 1 else ""
    add_colorbar(fig, im, ax, f"adv - clean, pixel value{chans}")


def hide(ax) -> None:
    ax.set_axis_off()


def style_axis(ax, title: str | None = None, xlabel: str | None = None, ylabel: str | None = None) -> None:
    """The package's axis style: title, labels (with their units), tick labels and a light grid."""
    if title:
        ax.set_title(title, fontsize=FONT)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=FONT)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=FONT)
    ax.tick_params(labelsize=SMALL)
    ax.grid(alpha=0.3)


def fit_page(width: float, height: float) -> tuple[float, float]:
    """(width, height) in inches scaled down, keeping the aspect, to fit PAGE_WIDTH x PAGE_HEIGHT."""
    s = min(1.0, PAGE_WIDTH / width, PAGE_HEIGHT / height)
    return width * s, height * s
