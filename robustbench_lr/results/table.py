"""The tidy tables shared by every runner, analysis and the report, and how rows become them.

Runners yield `Row(table, values)`; `collect(rows)` turns them into a `RunTables` of four DataFrames. Raw numbers
only (counts as ints, rates and strengths as floats, never formatted strings).

`results` has one row per (model, perturbation, strength). Core columns:

| column          | meaning                                                                        |
|-----------------|--------------------------------------------------------------------------------|
| model           | model label (a checkpoint's directory name, or the --name of an external model) |
| model_name      | registry name; family_op the operator family (conv, lr, glore, cnl, mssar)     |
| kernel_size     | k of the model's spatial operators                                             |
| family          | 'clean' | 'linf' | 'l2' | 'deform' | 'drift'                                  |
| perturbation    | attack or deformation name ('pgd', 'rotate', 'worst-of-k', ...)                |
| param_name      | name of the strength ('eps', 'degrees', 'pixels', ...); param_value its value |
| n_total         | evaluated examples (x draws for random deformations)                           |
| n_correct       | still correctly classified                                                     |
| accuracy        | n_correct / n_total                                                            |
| ci_low, ci_high | 95% interval: Clopper-Pearson, or a t-interval over draws (ci_method says)     |

Attack rows keep their own columns (attack, norm, eps, steps, implementation, grad_evals, ...); deformation rows
add draws and their method's settings. `outcomes` has one row per (model, attack, example): clean correctness
and the smallest eps that fooled it (min_eps; +inf if none), from which every accuracy of the table, the paired
tests and the worst case can be recomputed. `paired` (exact McNemar tests between models on the same examples)
is derived here from `outcomes`, so no runner computes statistics. `hygiene` holds one row per check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .stats import clopper_pearson, paired_comparisons

FIRST = ["model", "model_name", "family_op", "kernel_size", "family", "perturbation", "param_name", "param_value",
         "attack", "norm", "eps", "n_total", "n_clean_correct", "n_correct", "accuracy", "ci_low", "ci_high",
         "ci_method"]
PAIRED_COLUMNS = ["attack", "norm", "eps", "pair_group", "model_a", "model_b", "n", "correct_a", "correct_b",
                  "a_only", "b_only", "accuracy_diff", "mcnemar_p"]
HYGIENE_COLUMNS = ["model", "check", "status", "value", "threshold", "n", "eps", "attack", "detail"]
OUTCOME_COLUMNS = ["model", "attack", "norm", "example", "dataset_index", "label", "clean_correct", "min_eps",
                   "target", "target_hit_eps", "pair_group"]
COLUMNS = {"results": FIRST, "paired": PAIRED_COLUMNS, "hygiene": HYGIENE_COLUMNS, "outcomes": OUTCOME_COLUMNS}
TABLES = tuple(COLUMNS)


class Row(NamedTuple):
    """One row of one of the run tables ('results', 'hygiene' or 'outcomes'), as yielded by the runners."""

    table: str
    values: dict[str, Any]


@dataclass
class RunTables:
    """The tables of one run: what `results.write_run` writes and `results.load_runs` reads back."""

    results: pd.DataFrame
    paired: pd.DataFrame
    hygiene: pd.DataFrame
    outcomes: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(name, getattr(self, name)) for name in TABLES]


def frame(rows: Iterable[dict[str, Any]], table: str) -> pd.DataFrame:
    """Rows -> DataFrame with the table's schema columns first (and every schema column, even with no rows)."""
    df = pd.DataFrame(list(rows))
    cols = COLUMNS[table]
    if df.empty:
        return pd.DataFrame(columns=cols)
    return df[[c for c in cols if c in df.columns] + [c for c in df.columns if c not in cols]]


def collect(rows: Iterable[Row]) -> RunTables:
    """Sort the rows of a run by table, finalise the results table and derive the paired tests from outcomes."""
    by_table: dict[str, list[dict[str, Any]]] = {t: [] for t in ("results", "hygiene", "outcomes")}
    for row in rows:
        if row.table not in by_table:
            raise ValueError(f"unknown table {row.table!r} (expected one of {', '.join(by_table)})")
        by_table[row.table].append(row.values)
    results = finalize(by_table["results"])
    outcomes = frame(by_table["outcomes"], "outcomes")
    return RunTables(results, paired_from_outcomes(results, outcomes), frame(by_table["hygiene"], "hygiene"),
                     outcomes)


def concat(parts: Iterable[RunTables]) -> RunTables:
    """Tables of several runs (or parts of one run) as one."""
    parts = list(parts)

    def cat(name: str) -> pd.DataFrame:
        frames = [getattr(p, name) for p in parts if not getattr(p, name).empty]
        return frame([], name) if not frames else pd.concat(frames, ignore_index=True)

    return RunTables(*(cat(name) for name in TABLES))


def finalize(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows -> the tidy results table: accuracy, a Clopper-Pearson interval where a counted row has none, ordered
    columns. Rows without counts (attention drift) keep NaN accuracy."""
    df = pd.DataFrame(rows).copy()
    if df.empty:
        return pd.DataFrame(columns=FIRST)
    counted = df["n_total"].notna() if "n_total" in df.columns else pd.Series(False, index=df.index)
    df["accuracy"] = (df["n_correct"] / df["n_total"]).where(counted) if counted.any() else np.nan
    if "ci_low" not in df.columns:
        df["ci_low"], df["ci_high"], df["ci_method"] = np.nan, np.nan, ""
    missing = df["ci_low"].isna() & counted
    for i in df.index[missing]:
        lo, hi = clopper_pearson(int(df.at[i, "n_correct"]), int(df.at[i, "n_total"]))
        df.at[i, "ci_low"], df.at[i, "ci_high"], df.at[i, "ci_method"] = lo, hi, "clopper-pearson"
    cols = list(df.columns)
    return df[[c for c in FIRST if c in cols] + [c for c in cols if c not in FIRST]]


def paired_from_outcomes(results: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Exact McNemar tests between every pair of models, at every (attack, norm, strength) of the results table
    for which two or more models have per-example outcomes in the same pair group (the same examples).

    An example is correct under an attack at strength s iff its min_eps > s; the 'clean' rows use clean_correct.
    """
    if outcomes.empty or results.empty:
        return frame([], "paired")
    out = outcomes.copy()
    out["pair_group"] = out["pair_group"].fillna("") if "pair_group" in out else ""
    parts = []
    clean_models = set(results.loc[results["family"] == "clean", "model"])
    for group, og in out.groupby("pair_group", sort=False):
        first = og.drop_duplicates(["model", "example"]).sort_values(["model", "example"], kind="stable")
        clean = {m: g["clean_correct"].to_numpy(bool) for m, g in first.groupby("model", sort=False)
                 if m in clean_models}
        parts.append(_paired_cell(clean, "clean", "", 0.0, group))
        cells = results[(results["family"] != "clean") & results["model"].isin(og["model"].unique())].copy()
        cells["norm"] = cells["norm"].fillna("") if "norm" in cells else ""
        for (attack, norm), cg in cells.groupby(["perturbation", "norm"], sort=False):
            sub = og[(og["attack"] == attack) & (og["norm"].fillna("") == norm)]
            if sub["model"].nunique() < 2:
                continue
            min_eps = {m: g.sort_values("example", kind="stable")["min_eps"].to_numpy(float)
                       for m, g in sub.groupby("model", sort=False)}
            for v in sorted(cg["param_value"].dropna().unique()):
                parts.append(_paired_cell({m: e > v for m, e in min_eps.items()}, attack, norm, float(v), group))
    parts = [p for p in parts if not p.empty]
    return frame([], "paired") if not parts else frame(pd.concat(parts, ignore_index=True).to_dict("records"),
                                                       "paired")


def _paired_cell(vectors: dict[str, np.ndarray], attack: str, norm: str, eps: float, group: str) -> pd.DataFrame:
    if len(vectors) < 2 or len({v.shape for v in vectors.values()}) != 1:
        return pd.DataFrame()
    df = paired_comparisons(vectors)
    df.insert(0, "pair_group", group)
    df.insert(0, "eps", eps)
    df.insert(0, "norm", norm)
    df.insert(0, "attack", attack)
    return df


def model_columns(label: str, path: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Identity columns of a model (from its model.json, or the description of an external model) for every row
    about it."""
    from ..models import model_info

    kw = meta["model"].get("kwargs", {})
    name = meta["model"]["name"]
    if meta.get("external"):
        family, k = meta["model"].get("family", "external"), kw.get("kernel_size")
    else:
        info = model_info(name)
        family, k = info.family, kw.get("kernel_size", info.kernel_size)
    training = meta.get("training", {})
    return {"model": label, "model_name": name, "family_op": family, "kernel_size": k,
            "model_kwargs": json.dumps(kw, sort_keys=True), "checkpoint": str(path),
            "checkpoint_sha256": meta["weights_sha256"], "dataset": meta["dataset"]["name"], "split": "test",
            "train_seed": training.get("config", {}).get("seed"),
            "training_method": training_label(meta), "external": bool(meta.get("external", False))}


def training_label(meta: dict[str, Any]) -> str:
    """'clean', 'PGD-AT linf eps 0.3', 'TRADES linf eps 0.3 beta 6', or 'external' (shown next to every model)."""
    if meta.get("external"):
        return "external"
    adv = meta.get("training", {}).get("adversarial") or {}
    method = adv.get("method", "none")
    if method in (None, "none"):
        return "clean"
    name = {"pgd": "PGD-AT", "fgsm-rs": "FGSM-RS (fast AT)", "trades": "TRADES"}.get(method, method)
    text = f"{name} {adv.get('norm', '')} eps {fmt_strength(float(adv.get('eps', 0)))}"
    if method == "trades":
        text += f" beta {adv.get('trades_beta'):g}"
    return text


def fmt_strength(v: float) -> str:
    """Short strength label: 0.0314 -> '8/255', 10.0 -> '10'; common fractions of 255 as 'k/255'."""
    if v == 0:
        return "0"
    k = v * 255
    if v < 0.1 and abs(k - round(k)) < 1e-6:  # CIFAR/ImageNet budgets such as 8/255
        return f"{int(round(k))}/255"
    return f"{v:.3g}"


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per model (rows) and attack@eps (columns), for the terminal."""
    df = results[results["family"].isin(["clean", "linf", "l2"])].copy()
    df["cell"] = np.where(df["attack"] == "clean", "clean", df["attack"] + "@" + df["eps"].map(fmt_strength))
    order = list(dict.fromkeys(df["cell"]))
    pv = df.pivot_table(index="model", columns="cell", values="accuracy", aggfunc="first", sort=False)
    return (100 * pv[[c for c in order if c in pv.columns]]).round(1)


def kernel_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max over training seeds per (model, k, perturbation, strength)."""
    r = results[results["family"] != "drift"]
    g = r.groupby(["model_name", "kernel_size", "family", "perturbation", "param_name", "param_value"], sort=False)
    return g["accuracy"].agg(mean="mean", sd="std", min="min", max="max", seeds="size").reset_index()
