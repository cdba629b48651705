"""Curves of the report, drawn from the tidy results table; every function returns a matplotlib Figure (or None
when the results hold nothing to draw), page-wide and in the package's one style (`viz._draw`: the report
places figures at their own size, so the fonts print at their point sizes).

- `robustness_curves(results, outcomes, norm)`: the summary figure, every model on one axis (see
  `summary_curve`);
- `eps_curves`: robust accuracy vs eps, one panel per attack (the worst case is the summary figure's), one line
  per model, 95% Clopper-Pearson bands;
- `deform_curves`: accuracy vs deformation strength, one panel per deformation, axes labelled with their units;
  a spatial attack's curve starts at bound 0 with the clean accuracy;
- `kernel_curves`: accuracy vs kernel size per model family (mean over seeds, t-interval band over seeds), one
  panel per column of `tables.kernel_columns` (clean first, titles with the strength and its unit).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results.stats import t_interval
from ..viz import _draw as D
from .labels import strength_label
from .summary_curve import robustness_curves
from .tables import deform_rows, kernel_columns

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
ACC_LABEL = "accuracy (%)"
__all__ = ["COLORS", "deform_curves", "eps_curves", "kernel_columns", "kernel_curves", "robustness_curves"]


def _grid(n: int, max_cols: int = 3, height: float = 2.55) -> tuple[Figure, list]:
    """A page-wide figure of n panels, at most `max_cols` per row; room at the bottom for the legend."""
    cols = min(max_cols, max(1, n))
    rows = math.ceil(n / cols)
    width = D.PAGE_WIDTH if cols > 1 else 0.62 * D.PAGE_WIDTH
    fig = Figure(figsize=(width, height * rows + 0.75), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def line(ax, x, y, lo, hi, label: str, color: str, **kw) -> None:
    """Accuracy (fractions, drawn in %) with its interval band."""
    ax.plot(x, 100 * np.asarray(y, float), marker=kw.pop("marker", "o"), ms=3.5, lw=kw.pop("lw", 1.6),
            label=label, color=color, **kw)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
        ax.fill_between(np.asarray(x, float)[ok], 100 * lo[ok], 100 * hi[ok], color=color, alpha=0.16, lw=0)


def finish(fig: Figure, axes: list, title: str) -> Figure:
    """One legend under the panels (every model once) and the figure title."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=min(4, len(seen)),
                   fontsize=D.SMALL, frameon=False)
    fig.suptitle(title, fontsize=D.TITLE)
    return fig


def _accuracy_axis(ax, title: str, xlabel: str) -> None:
    D.style_axis(ax, title, xlabel, ACC_LABEL)
    ax.set_ylim(-2, 102)


def _accuracy_panels(r: pd.DataFrame, panel: str, x: str, xlabel: Callable[[pd.DataFrame], str],
                     title: str) -> Figure:
    """One panel per value of column `panel`, one line per model: accuracy (%) vs column `x` with the rows'
    interval bands; xlabel(rows of the panel) names the x axis (with its unit)."""
    models = list(dict.fromkeys(r["model"]))
    panels = list(dict.fromkeys(r[panel]))
    fig, axes = _grid(len(panels))
    for ax, name in zip(axes, panels):
        sub = r[r[panel] == name]
        for i, m in enumerate(models):
            s = sub[sub["model"] == m].sort_values(x)
            if not s.empty:
                line(ax, s[x], s["accuracy"], s["ci_low"], s["ci_high"], m, COLORS[i % len(COLORS)])
        _accuracy_axis(ax, name, xlabel(sub))
    return finish(fig, axes, title)


def eps_curves(results: pd.DataFrame, norm: str) -> Figure | None:
    """Robust accuracy (%) vs eps for every attack of one norm (bands: 95% Clopper-Pearson over examples); the
    per-example worst case is left to `robustness_curves`. eps 0 is the clean accuracy."""
    r = results[(results["family"] == norm) & (results["attack"] != "worst-case")]
    if r.empty:
        return None
    clean = results[results["family"] == "clean"].drop_duplicates("model")
    if not (r["eps"] == 0).any() and len(clean):
        r = pd.concat([clean.assign(attack=a, eps=0.0) for a in dict.fromkeys(r["attack"])] + [r], ignore_index=True)
    return _accuracy_panels(r, "attack", "eps", lambda _: strength_label("eps", norm),
                            f"Robust accuracy vs eps per attack ({norm}), 95% Clopper-Pearson bands")


def deform_curves(results: pd.DataFrame) -> Figure | None:
    """Accuracy (%) vs strength for every deformation (bands: the row's 95% interval: t over random draws, or
    Clopper-Pearson over examples); x axes labelled with the strength and its unit."""
    r = deform_rows(results)
    if r.empty:
        return None
    return _accuracy_panels(r, "perturbation", "param_value", lambda sub: strength_label(str(sub["param_name"].iloc[0])),
                            "Accuracy vs deformation strength, 95% intervals")


def kernel_curves(results: pd.DataFrame, columns: list[tuple[str, str, float]]) -> Figure | None:
    """Accuracy (%) vs kernel size per model family; `columns`: (label, perturbation, strength) panels,
    perturbation 'clean' for clean accuracy. Lines: mean over training seeds; bands: t-interval over seeds."""
    if "kernel_size" not in results.columns or results["kernel_size"].nunique() < 2 or not columns:
        return None
    names = list(dict.fromkeys(results["model_name"]))
    ks_all = sorted(results["kernel_size"].dropna().unique())
    fig, axes = _grid(len(columns))
    for ax, (label, pert, strength) in zip(axes, columns):
        if pert == "clean":
            sel = results[results["family"] == "clean"]
        else:
            sel = results[(results["perturbation"] == pert) & np.isclose(results["param_value"], strength)]
        for i, name in enumerate(names):
            s = sel[sel["model_name"] == name]
            if s.empty:
                continue
            ks, mean, lo, hi = [], [], [], []
            for k, g in s.groupby("kernel_size"):
                a, b = t_interval(g["accuracy"].to_numpy()) if len(g) > 1 else (g["ci_low"].iloc[0], g["ci_high"].iloc[0])
                ks.append(k)
                mean.append(g["accuracy"].mean())
                lo.append(a)
                hi.append(b)
            line(ax, ks, mean, lo, hi, name, COLORS[i % len(COLORS)])
        D.style_axis(ax, label, "kernel size k (cells)", ACC_LABEL)
        ax.set_xticks(ks_all)
    return finish(fig, axes, "Accuracy and robustness vs kernel size (mean over seeds, 95% t-interval bands)")
