"""The summary figure: robust accuracy vs eps of every model on one axis, with 95% Clopper-Pearson bands.

- Attacks run at a list of eps (FGSM, PGD, AutoAttack, ...): per model the per-example worst case over every
  attack of the run (the results' 'worst-case' rows; the attack itself when only one ran), at those eps only,
  drawn as markers joined by straight lines (nothing is known between two eps of the list); where several
  runs measured one model at one eps, the lowest of their rows;
- minimal-norm attacks (FMN, DDN, ALMA; outcomes with a `min_norm` column): per model the full curve on a fine
  eps grid, accuracy(eps) = the fraction of examples with min_norm > eps (clean-wrong examples have min_norm 0),
  with a Clopper-Pearson band at every grid point, drawn dashed. With several minimal-norm attacks an
  example's norm is its smallest over them.

eps 0 is the clean accuracy. Status: working; tested on synthetic outcomes (tests/test_report_figures.py).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from ..viz import _draw as D
from .labels import strength_label

GRID_POINTS = 241
MIN_NORM_ATTACKS = ("fmn", "ddn", "alma")


def clopper_pearson_arrays(k: np.ndarray, n: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `results.stats.clopper_pearson`: exact intervals of k (array) successes out of n."""
    k = np.asarray(k, float)
    a = 1.0 - level
    with np.errstate(invalid="ignore"):
        lo = np.where(k <= 0, 0.0, stats.beta.ppf(a / 2, k, n - k + 1))
        hi = np.where(k >= n, 1.0, stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def min_norm_curves(outcomes: pd.DataFrame, norm: str, eps_max: float, points: int = GRID_POINTS
                    ) -> dict[str, pd.DataFrame]:
    """model -> DataFrame(eps, accuracy, ci_low, ci_high, n) from the minimal-norm outcomes of `norm` on a grid
    of `points` eps in [0, eps_max] (an example is robust at eps iff its min_norm > eps)."""
    if outcomes is None or outcomes.empty or "min_norm" not in outcomes:
        return {}
    o = outcomes[(outcomes["norm"].astype(object).fillna("") == norm) & outcomes["min_norm"].notna()]
    o = o[o["attack"].isin(MIN_NORM_ATTACKS)] if o["attack"].isin(MIN_NORM_ATTACKS).any() else o
    grid = np.linspace(0.0, float(eps_max), points)
    out = {}
    for model, g in o.groupby("model", sort=False):
        key = "dataset_index" if "dataset_index" in g and g["dataset_index"].notna().all() else "example"
        norms = g.groupby(key)["min_norm"].min().to_numpy(float)  # the strongest minimal-norm attack per example
        n = len(norms)
        k = (norms[None, :] > grid[:, None]).sum(1)
        lo, hi = clopper_pearson_arrays(k, n)
        out[str(model)] = pd.DataFrame({"eps": grid, "accuracy": k / n, "ci_low": lo, "ci_high": hi, "n": n})
    return out


def _picked_rows(results: pd.DataFrame, norm: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of `norm` at eps > 0 the summary draws (the worst case over the attacks, or the single attack),
    every run's row kept, and the names of those attacks."""
    r = results[results["family"] == norm]
    attacks = [a for a in dict.fromkeys(r["attack"]) if a != "worst-case"]
    pick = "worst-case" if len(attacks) > 1 and (r["attack"] == "worst-case").any() else attacks[0] if attacks else None
    if pick is None:
        return r.iloc[:0], []
    return r[(r["attack"] == pick) & (r["eps"] > 0)], attacks


def grid_worst_case(results: pd.DataFrame, norm: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows (model, eps, accuracy, ci_low, ci_high) of the worst case over the attacks of `norm` at their eps
    (the clean row at eps 0), and the names of those attacks."""
    rows, attacks = _picked_rows(results, norm)
    if not attacks:
        return pd.DataFrame(), []
    # several runs of one model at one eps (e.g. the same models under differently masked attacks): the lowest of
    # their rows, so that each model is one curve (see `several_runs_at_one_eps`)
    rows = rows.sort_values("accuracy", kind="stable").drop_duplicates(["model", "eps"])
    clean = results[(results["family"] == "clean") & results["model"].isin(rows["model"])].drop_duplicates("model")
    cols = ["model", "eps", "accuracy", "ci_low", "ci_high"]
    both = pd.concat([clean.assign(eps=0.0)[cols], rows[cols]], ignore_index=True)
    order = {m: i for i, m in enumerate(dict.fromkeys(results["model"]))}  # the models in the results' order
    both = both.assign(_o=both["model"].map(order)).sort_values(["_o", "eps"], kind="stable")
    return both.drop(columns="_o"), attacks


def several_runs_at_one_eps(results: pd.DataFrame, norm: str) -> bool:
    """Whether some model has more than one worst-case (or single-attack) row of `norm` at one eps."""
    rows, _ = _picked_rows(results, norm)
    return bool(rows.duplicated(["model", "eps"]).any())


def robustness_curves(results: pd.DataFrame, outcomes: pd.DataFrame | None, norm: str) -> Figure | None:
    """The summary figure of one norm (see the module docstring); None when the results have no attack of it."""
    from .figures import COLORS, finish, line

    worst, attacks = grid_worst_case(results, norm)
    if worst.empty:
        return None
    eps_max = float(worst["eps"].max())
    curves = min_norm_curves(outcomes, norm, eps_max) if outcomes is not None else {}
    fig = Figure(figsize=(D.PAGE_WIDTH, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(worst["model"]))
    what = "worst case of " + ", ".join(attacks) if len(attacks) > 1 else attacks[0]
    for i, m in enumerate(models):
        c = COLORS[i % len(COLORS)]
        s = worst[worst["model"] == m]
        line(ax, s["eps"], s["accuracy"], s["ci_low"], s["ci_high"], m, c)
        if m in curves:
            f = curves[m]
            line(ax, f["eps"], f["accuracy"], f["ci_low"], f["ci_high"], f"{m}: minimal-norm, every eps", c,
                 marker="", ls="--", lw=1.3)
    D.style_axis(ax, None, strength_label("eps", norm), "robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(0, eps_max * 1.02)
    detail = f"solid: {what}"
    if curves:
        detail += "; dashed: minimal-norm attacks at every eps"
    detail = textwrap.fill(detail + "; 95% Clopper-Pearson bands", 80)  # a long attack list wraps, not clips
    return finish(fig, [ax], f"Robust accuracy vs eps ({norm}), every model\n{detail}")


__all__ = ["clopper_pearson_arrays", "grid_worst_case", "min_norm_curves", "robustness_curves",
           "several_runs_at_one_eps"]
