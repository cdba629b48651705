"""Figures of the learned geometry priors of LR layers (the paper's figure of learned k x k priors).

The geometry term of Eq. 2 is an additive logit bias geo_g(dy, dx) per group (from `geometry_prior()`).
Figures show by default its softmax over the k x k window, softmax_window(geo_g): the aggregation weights
the layer would use if the appearance term were constant and no cell were masked. `logits=True` shows the
raw logits instead (softmax is shift-invariant, so only their differences matter).

- `plot_geometry_priors(model, layer)`: one k x k map per group of one layer.
- `plot_prior_evolution(model)`: one row per LR layer: the mean prior over groups, its standard deviation
  over groups, and each group's normalised entropy H / ln(k*k) (1 = uniform, 0 = one cell; one y scale for every
  layer, zoomed onto the values, so read its ticks).

A prior can put its mass on offsets the layer almost never uses: a 7x7 window on a 4x4 map reaches its corner
offsets from 1 of 16 output pixels. Offsets outside the input map for most output pixels (`COVERED`,
`LayerGeometry.coverage`) are drawn grey, the colour scale spans the other offsets, and the titles give the prior
mass on the grey ones.

Status: working for geometry='mlp' and 'table' layers; layers without a geometry term are reported.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError
from . import _draw as D
from .layers import lr_layers, model_label, no_lr_layers_error, resolve_layer

COVERED = 0.5  # offsets inside the input map for fewer than this fraction of the output pixels are drawn grey

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@torch.no_grad()
def prior_maps(mod: nn.Module, logits: bool = False) -> np.ndarray | None:
    """(G, k, k) softmax-over-window prior (or raw logits) of an LR layer; None without a geometry term."""
    geo = mod.geometry_prior()  # (G, k*k)
    if geo is None:
        return None
    geo = geo.detach().double().cpu()
    vals = geo if logits else torch.softmax(geo, dim=-1)
    k = mod.kernel_size
    return vals.reshape(geo.shape[0], k, k).numpy()


def prior_coverage(model: nn.Module, name: str) -> tuple[np.ndarray | None, str]:
    """((k, k) bool of the offsets inside the input map for at least `COVERED` of the output pixels, or None
    when the geometry cannot be probed; a description of the input map, e.g. '4x4 input map')."""
    from .geometry import layer_geometry

    try:
        geo = layer_geometry(model)[name]
    except (UserError, KeyError):
        return None, ""
    cov = geo.coverage().numpy()
    return (cov >= COVERED), f"{geo.in_grid[0]}x{geo.in_grid[1]} input map, stride {geo.stride}"


def _grey_note(inside: np.ndarray | None, where: str) -> str:
    if inside is None or inside.all():
        return ""
    return (f"grey: offsets outside the {where.split(',')[0]} for more than {100 * (1 - COVERED):.0f}% of the output "
            f"pixels (they aggregate nothing there)")


def plot_geometry_priors(model: nn.Module, layer: str | None = None, *, logits: bool = False,
                         max_groups: int = 64, ax: Axes | None = None) -> Figure:
    """The learned k x k geometry prior of every group of LR layer `layer` (None: the first): softmax over
    the window of `geometry_prior()` (default) or the raw logits (`logits=True`). One colour scale for all
    groups; rows are dy, columns dx, '+' the centre. Offsets that fall outside the layer's input map for most of
    its output pixels (a 7x7 window on a 4x4 map) are grey, and each group's title gives the prior mass on
    them. `ax` is accepted for API symmetry and ignored. Returns the figure."""
    name, mod = resolve_layer(model, layer, "learned geometry priors")
    maps = prior_maps(mod, logits)
    if maps is None:
        raise UserError(f"layer {name} of {model_label(model)} has no geometry term (geometry=None), so it has "
                        f"no learned prior; pick another layer or use --kind weights.")
    g_all, k = maps.shape[0], maps.shape[1]
    maps = maps[:max_groups]
    g = maps.shape[0]
    inside, where = prior_coverage(model, name)
    shown = maps[:, inside] if inside is not None and inside.any() else maps.reshape(g, -1)
    rows, cols = D.row_grid(g, 4) if g <= 16 else D.grid_shape(g, 8)  # 8 groups: 2 x 4, half a page
    fig = D.new_figure(*D.fit_page(max(4.0, 1.45 * cols + 1.3), 1.6 * rows + 1.1))
    gs = fig.add_gridspec(rows, cols)
    vmin, vmax = (float(shown.min()), float(shown.max())) if logits else (0.0, float(shown.max()))
    axes, im = [], None
    for i in range(g):
        a = fig.add_subplot(gs[i // cols, i % cols])
        title = f"group {i}"
        if inside is not None and not inside.all() and not logits:
            title += f": {100 * float(maps[i][~inside].sum()):.0f}% on grey"
        im = D.heatmap(a, maps[i], vmin, vmax, inside=inside, title=title)
        axes.append(a)
    D.offset_ticks(axes[(rows - 1) * cols if rows > 1 else 0], k)
    D.add_colorbar(fig, im, axes, "logit" if logits else "softmax weight")
    what = "raw logits geo(dy, dx)" if logits else "softmax over the window of geo(dy, dx)"
    more = f", first {g} of {g_all} groups" if g < g_all else ""
    grey = _grey_note(inside, where)
    D.suptitle(fig, f"{model_label(model)} {name}: learned geometry prior, {what}\n(k={k}, {mod.geometry} geometry"
                    f"{', ' + where if where else ''}{more})" + (f"\n{grey}" if grey else ""))
    return fig


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of (G, n) probabilities (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -t.sum(-1)


def _colorbar(fig: Figure, im, ax, label: str) -> None:
    """A narrow colour bar for one small heatmap; label at D.FONT and ticks at D.SMALL, as `_draw.add_colorbar`."""
    cb = fig.colorbar(im, ax=ax, shrink=0.9, aspect=10, pad=0.03)
    cb.set_label(label, fontsize=D.FONT, labelpad=1)
    cb.ax.tick_params(labelsize=D.SMALL)
    cb.formatter.set_powerlimits((-2, 3))
    cb.ax.yaxis.get_offset_text().set_fontsize(D.SMALL)


def _entropies(maps: dict[str, np.ndarray | None]) -> tuple[dict[str, np.ndarray], tuple[float, float]]:
    """Normalised entropy per group of every layer, and one y range for all of them."""
    h = {n: (_entropy(m.reshape(m.shape[0], -1)) / math.log(m.shape[1] ** 2) if m.shape[1] > 1
             else np.zeros(m.shape[0])) for n, m in maps.items() if m is not None}
    low = min(float(v.min()) for v in h.values())
    return h, (max(0.0, low - 0.08 * (1.0 - low) - 0.005), 1.0 + 0.06 * (1.0 - low) + 0.002)


def _evolution_row(fig: Figure, gs, i: int, n: int, model: nn.Module, name: str, m: np.ndarray, h: np.ndarray,
                   ylim: tuple[float, float]) -> None:
    """One layer: mean prior (grey where mostly outside the map), spread over groups, entropies."""
    from matplotlib.ticker import MaxNLocator

    a0, a1, a2 = (fig.add_subplot(gs[i, j]) for j in range(3))
    g, k = m.shape[0], m.shape[1]
    mean, std = m.mean(0), m.std(0)
    inside, where = prior_coverage(model, name)
    vis = mean[inside] if inside is not None and inside.any() else mean
    _colorbar(fig, D.heatmap(a0, mean, 0.0, float(vis.max()), inside=inside, title="mean prior" if i == 0 else None),
              a0, "weight")
    if g > 1:
        svis = std[inside] if inside is not None and inside.any() else std
        _colorbar(fig, D.heatmap(a1, std, 0.0, float(svis.max()) or 1e-12, inside=inside, cmap="magma",
                                 centre=False), a1, "std of weight")
    else:
        D.hide(a1)
        a1.text(0.5, 0.5, "one group:\nno spread", ha="center", va="center", fontsize=D.SMALL, transform=a1.transAxes)
    if i == 0:
        a1.set_title("std over groups", fontsize=D.FONT)
    label = f"{name}\nk={k}, G={g}" + (f"\n{where.split(',')[0]}" if where else "")
    if inside is not None and not inside.all():
        label += f"\n{100 * float(mean[~inside].sum()):.0f}% of the mean\nprior on grey"
    a0.set_ylabel(label, fontsize=D.SMALL, rotation=0, ha="right", va="center")
    a2.plot(np.arange(g), h, "o", ms=3, color="C0")
    a2.axhline(float(h.mean()), color="C1", lw=1, ls="--", label=f"mean {h.mean():.3f}")
    a2.set_ylim(*ylim)
    a2.set_xlim(-0.5, max(g - 0.5, 0.5))
    a2.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    D.style_axis(a2, "entropy / ln(k\u00b2), 1 = uniform" if i == 0 else None,
                 "group" if i == n - 1 else None)
    a2.legend(fontsize=D.SMALL, loc="lower right", frameon=False)


def plot_prior_evolution(model: nn.Module, *, ax: Axes | None = None) -> Figure:
    """How the learned priors change with depth: one row per LR layer with the mean over groups of the
    softmax prior, its standard deviation over groups (both grey where the offset lies outside the layer's input
    map for most output pixels), and every group's entropy normalised by ln(k*k) (1 = uniform over the window,
    lower = more peaked), on one y scale for all layers. `ax` is accepted for API symmetry and ignored.
    Returns the figure."""
    layers = lr_layers(model)
    if not layers:
        raise no_lr_layers_error(model, "learned geometry priors")
    maps = {n: prior_maps(m) for n, m in layers.items()}
    if all(v is None for v in maps.values()):
        raise UserError(f"no LR layer of {model_label(model)} has a geometry term (geometry=None), so there are "
                        f"no learned priors to show.")
    n = len(layers)
    fig = D.new_figure(*D.fit_page(D.PAGE_WIDTH, 1.45 * n + 0.9))
    gs = fig.add_gridspec(n, 3, width_ratios=[1, 1, 2.0])
    h, ylim = _entropies(maps)
    for i, (name, m) in enumerate(maps.items()):
        if m is None:
            for j in range(3):
                a = fig.add_subplot(gs[i, j])
                D.hide(a)
            a.text(0.5, 0.5, f"{name}: no geometry term", ha="center", va="center", fontsize=D.FONT,
                   transform=a.transAxes)
            continue
        _evolution_row(fig, gs, i, n, model, name, m, h[name], ylim)
    D.suptitle(fig, f"{model_label(model)}: learned geometry priors by layer (softmax over the window); grey: offsets "
                    f"outside the layer's input map for more than {100 * (1 - COVERED):.0f}% of its output pixels")
    return fig


__all__ = ["COVERED", "plot_geometry_priors", "plot_prior_evolution", "prior_coverage", "prior_maps"]
