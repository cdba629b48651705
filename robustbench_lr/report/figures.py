"""Curves of the report, drawn from the tidy results table; every function returns a matplotlib Figure.

- `eps_curves`: robust accuracy vs eps, one panel per attack, one line per model, 95% interval bands;
- `deform_curves`: accuracy vs deformation strength, one panel per deformation;
- `kernel_curves`: accuracy vs kernel size per model family (mean over seeds, band over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results.stats import t_interval

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _grid(n: int, width: float = 3.4, height: float = 2.8, max_cols: int = 3) -> tuple[Figure, list]:
    cols = min(max_cols, max(1, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.4), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _line(ax, x, y, lo, hi, label: str, color: str) -> None:
    ax.plot(x, 100 * np.asarray(y), marker="o", ms=3.5, lw=1.6, label=label, color=color)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
        ax.fill_between(np.asarray(x)[ok], 100 * lo[ok], 100 * hi[ok], color=color, alpha=0.18, lw=0)


def _finish(fig: Figure, axes: list, title: str) -> Figure:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def _style_accuracy_axis(ax, title: str, xlabel: str) -> None:
    """Title, labels, a 0-100 % y range and a light grid for one accuracy panel."""
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("accuracy (%)", fontsize=8)
    ax.set_ylim(-2, 102)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _accuracy_panels(r: pd.DataFrame, panel: str, x: str, xlabel: Callable[[pd.DataFrame], str],
                     title: str) -> Figure:
    """One panel per value of column `panel`, one line per model: accuracy (%) vs column `x` with the rows'
    interval bands; xlabel(rows of the panel) names the x axis."""
    models = list(dict.fromkeys(r["model"]))
    panels = list(dict.fromkeys(r[panel]))
    fig, axes = _grid(len(panels))
    for ax, name in zip(axes, panels):
        sub = r[r[panel] == name]
        for i, m in enumerate(models):
            s = sub[sub["model"] == m].sort_values(x)
            if not s.empty:
                _line(ax, s[x], s["accuracy"], s["ci_low"], s["ci_high"], m, COLORS[i % len(COLORS)])
        _style_accuracy_axis(ax, name, xlabel(sub))
    return _finish(fig, axes, title)


def eps_curves(results: pd.DataFrame, norm: str) -> Figure | None:
    """Robust accuracy (%) vs eps for every attack of one norm (bands: 95% Clopper-Pearson)."""
    r = results[results["family"] == norm]
    if r.empty:
        return None
    return _accuracy_panels(r, "attack", "eps", lambda _: f"eps ({norm})",
                            f"Robust accuracy vs eps ({norm}), 95% intervals")


def deform_curves(results: pd.DataFrame) -> Figure | None:
    """Accuracy (%) vs strength for every deformation (bands: the row's 95% interval)."""
    r = results[results["family"] == "deform"]
    if r.empty:
        return None
    return _accuracy_panels(r, "perturbation", "param_value", lambda sub: str(sub["param_name"].iloc[0]),
                            "Accuracy vs deformation strength, 95% intervals")


def kernel_curves(results: pd.DataFrame, columns: list[tuple[str, str, float]]) -> Figure | None:
    """Accuracy (%) vs kernel size per model family; `columns`: (label, perturbation, strength) panels,
    perturbation 'clean' for clean accuracy. Lines: mean over training seeds; bands: t-interval over seeds."""
    if "kernel_size" not in results.columns or results["kernel_size"].nunique() < 2 or not columns:
        return None
    names = list(dict.fromkeys(results["model_name"]))
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
                ks.append(k)
                mean.append(g["accuracy"].mean())
                a, b = t_interval(g["accuracy"].to_numpy()) if len(g) > 1 else (g["ci_low"].iloc[0], g["ci_high"].iloc[0])
                lo.append(a)
                hi.append(b)
            _line(ax, ks, mean, lo, hi, name, COLORS[i % len(COLORS)])
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("kernel size k", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ks_all = sorted(results["kernel_size"].dropna().unique())
        ax.set_xticks(ks_all)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, "Accuracy and robustness vs kernel size (mean over seeds)")
