"""Figures of the learned geometry priors of LR layers (the paper's figure of learned k x k priors).

The geometry term of Eq. 2 is an additive logit bias geo_g(dy, dx) per group (from `geometry_prior()`).
Figures show by default its softmax over the k x k window, softmax_window(geo_g): the aggregation weights
the layer would use if the appearance term were constant and no cell were masked. `logits=True` shows the
raw logits instead (softmax is shift-invariant, so only their differences matter).

- `plot_geometry_priors(model, layer)`: one k x k map per group of one layer.
- `plot_prior_evolution(model)`: one row per LR layer: the mean prior over groups, its standard deviation
  over groups, and each group's normalised entropy H / ln(k*k) (1 = uniform, 0 = one cell; the axis zooms onto the
  values, so read its ticks).

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


def plot_geometry_priors(model: nn.Module, layer: str | None = None, *, logits: bool = False,
                         max_groups: int = 64, ax: Axes | None = None) -> Figure:
    """The learned k x k geometry prior of every group of LR layer `layer` (None: the first): softmax over
    the window of `geometry_prior()` (default) or the raw logits (`logits=True`). One colour scale for all
    groups; rows are dy, columns dx, '+' the centre. `ax` is accepted for API symmetry and ignored.
    Returns the figure."""
    name, mod = resolve_layer(model, layer, "learned geometry priors")
    maps = prior_maps(mod, logits)
    if maps is None:
        raise UserError(f"layer {name} of {model_label(model)} has no geometry term (geometry=None), so it has "
                        f"no learned prior; pick another layer or use --kind weights.")
    g_all, k = maps.shape[0], maps.shape[1]
    maps = maps[:max_groups]
    g = maps.shape[0]
    rows, cols = D.grid_shape(g, 8)
    fig = D.new_figure(max(3.4, 1.5 * cols + 1.2), 1.5 * rows + 1.0)
    gs = fig.add_gridspec(rows, cols)
    vmin, vmax = (float(maps.min()), float(maps.max())) if logits else (0.0, float(maps.max()))
    axes, im = [], None
    for i in range(g):
        a = fig.add_subplot(gs[i // cols, i % cols])
        im = D.heatmap(a, maps[i], vmin, vmax, title=f"group {i}")
        axes.append(a)
    D.offset_ticks(axes[(rows - 1) * cols if rows > 1 else 0], k)
    D.add_colorbar(fig, im, axes, "logit" if logits else "softmax weight")
    what = "raw logits geo(dy, dx)" if logits else "softmax over the window of geo(dy, dx)"
    more = f", first {g} of {g_all} groups" if g < g_all else ""
    D.suptitle(fig, f"{model_label(model)} {name}: learned geometry prior, {what}\n(k={k}, "
                    f"{mod.geometry} geometry{more})")
    return fig


def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of (G, n) probabilities (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -t.sum(-1)


def plot_prior_evolution(model: nn.Module, *, ax: Axes | None = None) -> Figure:
    """How the learned priors change with depth: one row per LR layer with the mean over groups of the
    softmax prior, its standard deviation over groups, and every group's entropy normalised by ln(k*k)
    (1 = uniform over the window, lower = more peaked). `ax` is accepted for API symmetry and ignored.
    Returns the figure."""
    from matplotlib.ticker import MaxNLocator

    layers = lr_layers(model)
    if not layers:
        raise no_lr_layers_error(model, "learned geometry priors")
    maps = {n: prior_maps(m) for n, m in layers.items()}
    if all(v is None for v in maps.values()):
        raise UserError(f"no LR layer of {model_label(model)} has a geometry term (geometry=None), so there are "
                        f"no learned priors to show.")
    n = len(layers)
    fig = D.new_figure(7.0, 1.65 * n + 0.8)
    gs = fig.add_gridspec(n, 3, width_ratios=[1, 1, 2.2])
    for i, (name, m) in enumerate(maps.items()):
        a0, a1, a2 = (fig.add_subplot(gs[i, j]) for j in range(3))
        if m is None:
            for a in (a0, a1):
                D.hide(a)
            a2.text(0.5, 0.5, f"{name}: no geometry term", ha="center", va="center", fontsize=D.FONT,
                    transform=a2.transAxes)
            a2.set_xticks([])
            a2.set_yticks([])
            continue
        g, k = m.shape[0], m.shape[1]
        mean, std = m.mean(0), m.std(0)
        im0 = D.heatmap(a0, mean, 0.0, float(mean.max()), title="mean prior" if i == 0 else None)
        pairs = [(a0, im0)]
        if g > 1:
            im1 = D.heatmap(a1, std, 0.0, float(std.max()) or 1e-12, cmap="magma", centre=False)
            pairs.append((a1, im1))
        else:
            D.hide(a1)
            a1.text(0.5, 0.5, "one group:\nno spread", ha="center", va="center", fontsize=D.FONT,
                    transform=a1.transAxes)
        if i == 0:
            a1.set_title("std over groups", fontsize=D.FONT)
        for a, im in pairs:
            cb = fig.colorbar(im, ax=a, shrink=0.85, aspect=12, pad=0.03)
            cb.ax.tick_params(labelsize=D.FONT - 2)
            cb.formatter.set_powerlimits((-2, 3))
            cb.ax.yaxis.get_offset_text().set_fontsize(D.FONT - 2)
        a0.set_ylabel(f"{name}\nk={k}, G={g}", fontsize=D.FONT, rotation=0, ha="right", va="center")
        h = _entropy(m.reshape(g, -1)) / math.log(k * k) if k > 1 else np.zeros(g)
        a2.plot(np.arange(g), h, "o", ms=3, color="C0")
        a2.axhline(float(h.mean()), color="C1", lw=1, ls="--", label=f"mean {h.mean():.3f}")
        low = float(h.min())
        a2.set_ylim(max(0.0, low - 0.15 * (1.0 - low) - 0.005), 1.0 + 0.1 * (1.0 - low) + 0.002)
        a2.set_xlim(-0.5, max(g - 0.5, 0.5))
        if g <= 16:
            a2.set_xticks(range(g))
        else:
            a2.xaxis.set_major_locator(MaxNLocator(integer=True))
        a2.tick_params(labelsize=D.FONT - 1)
        a2.legend(fontsize=D.FONT - 1, loc="lower right", frameon=False)
        if i == 0:
            a2.set_title("entropy / ln(k*k) per group", fontsize=D.FONT)
        if i == n - 1:
            a2.set_xlabel("group", fontsize=D.FONT)
    D.suptitle(fig, f"{model_label(model)}: learned geometry priors by layer (softmax over the window)")
    return fig


__all__ = ["plot_geometry_priors", "plot_prior_evolution", "prior_maps"]
