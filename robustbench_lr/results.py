"""The tidy results table shared by every runner, analysis and the report.

One row per (model, perturbation, strength), raw numbers only (counts as ints, rates and strengths as floats,
never formatted strings). Core columns:

| column          | meaning                                                                        |
|-----------------|--------------------------------------------------------------------------------|
| model           | checkpoint label (its directory name)                                          |
| model_name      | registry name; family_op the operator family (conv, lr, glore, cnl, mssar)     |
| kernel_size     | k of the model's spatial operators                                             |
| family          | 'clean' | 'linf' | 'l2' | 'deform'                                           |
| perturbation    | attack or deformation name ('pgd', 'rotate', 'worst-of-k', ...)                |
| param_name      | name of the strength ('eps', 'degrees', 'pixels', ...); param_value its value |
| n_total         | evaluated examples (x draws for random deformations)                           |
| n_correct       | still correctly classified                                                     |
| accuracy        | n_correct / n_total                                                            |
| ci_low, ci_high | 95% interval: Clopper-Pearson, or a t-interval over draws (ci_method says)     |

Attack rows keep their own columns (attack, norm, eps, steps, grad_evals, ...); deformation rows add draws and
their method's settings. Runners return lists of dicts; `finalize` turns them into this table.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .stats import clopper_pearson

FIRST = ["model", "model_name", "family_op", "kernel_size", "family", "perturbation", "param_name", "param_value",
         "attack", "norm", "eps", "n_total", "n_clean_correct", "n_correct", "accuracy", "ci_low", "ci_high",
         "ci_method"]


def model_columns(label: str, path: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Identity columns of a checkpoint (from its model.json) for every row about it."""
    from .models import model_info

    kw = meta["model"].get("kwargs", {})
    info = model_info(meta["model"]["name"])
    return {"model": label, "model_name": meta["model"]["name"], "family_op": info.family,
            "kernel_size": kw.get("kernel_size", info.kernel_size), "model_kwargs": json.dumps(kw, sort_keys=True),
            "checkpoint": str(path), "checkpoint_sha256": meta["weights_sha256"],
            "dataset": meta["dataset"]["name"], "split": "test",
            "train_seed": meta.get("training", {}).get("config", {}).get("seed")}


def t_interval(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean +- t-quantile * standard error over independent draws (NaNs for fewer than 2 draws)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan, math.nan
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * se
    return max(0.0, m - h), min(1.0, m + h)


def finalize(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows -> the tidy table: accuracy, a Clopper-Pearson interval where a counted row has none, ordered columns.
    Rows without counts (attention drift) keep NaN accuracy."""
    df = pd.DataFrame(rows).copy()
    if df.empty:
        return df
    counted = df["n_total"].notna() if "n_total" in df.columns else pd.Series(False, index=df.index)
    df["accuracy"] = (df["n_correct"] / df["n_total"]).where(counted) if counted.any() else np.nan
    if "ci_low" not in df.columns:
        df["ci_low"], df["ci_high"], df["ci_method"] = np.nan, np.nan, ""
    missing = df["ci_low"].isna() & counted  # rows without counts (e.g. attention drift) get no interval
    for i in df.index[missing]:
        lo, hi = clopper_pearson(int(df.at[i, "n_correct"]), int(df.at[i, "n_total"]))
        df.at[i, "ci_low"], df.at[i, "ci_high"], df.at[i, "ci_method"] = lo, hi, "clopper-pearson"
    cols = list(df.columns)
    return df[[c for c in FIRST if c in cols] + [c for c in cols if c not in FIRST]]


def fmt_strength(v: float) -> str:
    """Short strength label: 0.0314 -> '0.031', 10.0 -> '10'; common fractions of 255 as 'k/255'."""
    if v == 0:
        return "0"
    k = v * 255
    if v < 0.1 and abs(k - round(k)) < 1e-6:  # CIFAR/ImageNet budgets such as 8/255
        return f"{int(round(k))}/255"
    return f"{v:.3g}"
