"""Report tables built from the tidy results: numeric long form (CSV/JSON) and a formatted display form.

Every table is a `ReportTable`: `data` keeps numbers (accuracy and interval bounds as floats in [0, 1]);
`display` is what the PDF, Markdown and LaTeX show (percentages with 95% intervals, the best value of each
column marked with *). Which value is "best" is decided on the numbers: the highest accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..results.table import fmt_strength

BEST_MARK = "*"
MATRIX_MODELS = 4  # above this many models the hygiene table is drawn as a model x check matrix


@dataclass
class ReportTable:
    """One table of the report.

    Attributes:
        name: file stem (e.g. 'summary_linf').
        title: heading in the PDF.
        data: numeric long table (one row per cell).
        display: formatted wide table (strings), as shown.
        note: one line under the table (what the marks mean, the interval method).
    """

    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    note: str = ""
    best: dict[str, str] = field(default_factory=dict)
    groups: list[list[str]] | None = None  # display column groups laid out as separate blocks in the PDF


def fmt_acc(acc: float, lo: float, hi: float) -> str:
    """'45.2 [41.1, 49.3]' (percent), or '-' for a missing value."""
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "-"
    if lo is None or math.isnan(lo):
        return f"{100 * acc:.1f}"
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def model_order(results: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(results["model"]))


def _wide(cells: pd.DataFrame, columns: list[str], rows: list[str], name: str, title: str, note: str) -> ReportTable:
    """cells: model, column, accuracy, ci_low, ci_high -> ReportTable with the best per column marked."""
    disp = pd.DataFrame(index=rows, columns=columns, dtype=object)
    best = {}
    for col in columns:
        sub = cells[cells["column"] == col]
        if sub.empty:
            continue
        top = sub["accuracy"].max()
        winners = sub[np.isclose(sub["accuracy"], top)]["model"].tolist()
        if len(sub) > 1 and len(winners) < len(sub):
            best[col] = ", ".join(winners)
        for _, r in sub.iterrows():
            mark = BEST_MARK if (len(sub) > 1 and r["model"] in winners and len(winners) < len(sub)) else ""
            disp.loc[r["model"], col] = fmt_acc(r["accuracy"], r["ci_low"], r["ci_high"]) + mark
    disp = disp.fillna("-")
    disp.index.name = "model"
    data = cells[["model", "column", "accuracy", "ci_low", "ci_high"]].reset_index(drop=True)
    return ReportTable(name, title, data, disp.reset_index(), note, best)


def attack_summary(results: pd.DataFrame, norm: str) -> ReportTable | None:
    """Clean accuracy, then robust accuracy per attack and eps (and the per-example worst case) for one norm."""
    r = results[(results["family"].isin(["clean", norm]))]
    if r.empty or not (r["family"] == norm).any():
        return None
    r = r[(r["attack"] == "clean") | (r["eps"] > 0)]
    cells = r.assign(column=np.where(r["attack"] == "clean", "clean",
                                     r["attack"] + " " + r["eps"].map(fmt_strength)))
    cells = cells.drop_duplicates(["model", "column"])
    cols = list(dict.fromkeys(["clean"] + [c for c in cells["column"] if c != "clean"]))
    note = (f"Accuracy (%) on the same examples, {norm} threat model; 95% Clopper-Pearson intervals in brackets; "
            f"{BEST_MARK} marks the best model of a column. 'worst-case' counts an example as robust only if every "
            f"attack of the run failed on it.")
    t = _wide(cells, cols, model_order(r), f"summary_{norm}", f"Robust accuracy under {norm} attacks", note)
    t.groups = _groups_by_prefix(cols)
    return t


def _groups_by_prefix(cols: list[str], max_cols: int = 6) -> list[list[str]]:
    """Column blocks for the PDF: one per perturbation (the text before the strength), at most max_cols wide."""
    groups: dict[str, list[str]] = {}
    for c in cols:
        groups.setdefault(c.rsplit(" ", 1)[0], []).append(c)
    out = []
    for g in groups.values():
        out += [g[i: i + max_cols] for i in range(0, len(g), max_cols)]
    return out


def deform_summary(results: pd.DataFrame) -> ReportTable | None:
    """Accuracy per deformation and strength (random draws averaged; adversarial per bound)."""
    r = results[results["family"] == "deform"]
    if r.empty:
        return None
    cells = r.assign(column=r["perturbation"] + " " + r["param_value"].map(fmt_strength))
    cols = list(dict.fromkeys(cells["column"]))
    methods = sorted(set(r.get("ci_method", pd.Series(dtype=str)).dropna()))
    note = (f"Accuracy (%) under deformations; intervals: {', '.join(methods) or 'none'} (t-over-draws: a t-interval "
            f"over independent random draws). {BEST_MARK} marks the best model of a column.")
    t = _wide(cells, cols, model_order(r), "summary_deform", "Accuracy under deformations", note)
    t.groups = _groups_by_prefix(cols)
    return t


def kernel_summary(results: pd.DataFrame, perturbations: list[tuple[str, float]] | None = None) -> ReportTable | None:
    """Mean accuracy over seeds per (model family, kernel size) for clean and selected perturbations."""
    if not is_kernel_sweep(results):
        return None
    r = results[results["family"] != "drift"].copy()
    r["column"] = np.where(r["family"] == "clean", "clean", r["perturbation"] + " " + r["param_value"].map(fmt_strength))
    if perturbations:
        keep = {"clean"} | {f"{p} {fmt_strength(v)}" for p, v in perturbations}
        r = r[r["column"].isin(keep)]
    g = r.groupby(["model_name", "kernel_size", "column"], sort=False)
    agg = g.agg(accuracy=("accuracy", "mean"), sd=("accuracy", "std"), seeds=("accuracy", "size")).reset_index()
    agg["ci_low"], agg["ci_high"] = np.nan, np.nan
    for i, row in agg.iterrows():
        sub = g.get_group((row["model_name"], row["kernel_size"], row["column"]))
        if len(sub) >= 2:
            from ..results.stats import t_interval

            agg.at[i, "ci_low"], agg.at[i, "ci_high"] = t_interval(sub["accuracy"].to_numpy())
        else:
            agg.at[i, "ci_low"], agg.at[i, "ci_high"] = sub["ci_low"].iloc[0], sub["ci_high"].iloc[0]
    agg["model"] = agg["model_name"] + " k=" + agg["kernel_size"].astype(int).astype(str)
    cols = list(dict.fromkeys(agg["column"]))
    rows = list(dict.fromkeys(agg.sort_values(["model_name", "kernel_size"])["model"]))
    nseeds = int(agg["seeds"].max())
    note = (f"Mean accuracy (%) over {nseeds} training seed(s) per model and kernel size; brackets: a t-interval over "
            f"seeds (Clopper-Pearson with one seed). {BEST_MARK}: best row of a column.")
    t = _wide(agg, cols, rows, "summary_kernel_size", "Accuracy and robustness vs kernel size", note)
    t.data = agg.rename(columns={"sd": "sd_over_seeds"})
    return t


def is_kernel_sweep(results: pd.DataFrame) -> bool:
    """True when some model appears with two or more kernel sizes (models that merely differ in k are not)."""
    if "kernel_size" not in results.columns:
        return False
    return bool((results.groupby("model_name")["kernel_size"].nunique() >= 2).any())


def hygiene_table(hyg: pd.DataFrame) -> ReportTable | None:
    if hyg is None or hyg.empty:
        return None
    cols = ["model", "check", "status", "value", "threshold", "n", "detail"]
    d = hyg[[c for c in cols if c in hyg.columns]].copy()
    disp = d.copy()
    disp["status"] = disp["status"].str.upper()
    disp["value"] = disp["value"].map(lambda v: f"{v:.3g}")
    disp["threshold"] = disp["threshold"].map(lambda v: f"{v:.3g}")
    n_fail = int((d["status"] == "fail").sum())
    n_warn = int((d["status"] == "warn").sum())
    note = f"{len(d)} checks: {len(d) - n_fail - n_warn} pass, {n_warn} warn, {n_fail} fail."
    if d["model"].nunique() > MATRIX_MODELS:  # many models: one row per model, one column per check
        cell = disp["status"].where(disp["status"] == "PASS", disp["status"] + " " + disp["value"])
        disp = (pd.DataFrame({"model": d["model"], "check": d["check"], "cell": cell})
                .pivot_table(index="model", columns="check", values="cell", aggfunc="first", sort=False)
                .fillna("-").reset_index())
        disp.columns.name = None
        note += (" One row per model, one column per check: the status, with the value when it is not a pass "
                 "(the details of every warn and fail are listed above; the CSV of this table has every row).")
    return ReportTable("hygiene", "Evaluation-hygiene checks (Carlini et al. 2019)", d.reset_index(drop=True),
                       disp.reset_index(drop=True), note)


def paired_table(paired: pd.DataFrame, alpha: float = 0.05) -> ReportTable | None:
    if paired is None or paired.empty:
        return None
    d = paired.copy()
    d = d[(d["attack"] != "clean") & (d["eps"] > 0)] if ((d["attack"] != "clean") & (d["eps"] > 0)).any() else d
    # pairs with no discordant example (the same outcome on every example, e.g. both at 0%) carry no evidence:
    # the PDF leaves them out and says how many; the CSV keeps every pair
    same = (d["a_only"] == 0) & (d["b_only"] == 0)
    shown = d[~same] if (~same).any() else d
    disp = pd.DataFrame({
        "attack": shown["attack"], "eps": shown["eps"].map(fmt_strength), "A": shown["model_a"], "B": shown["model_b"],
        "acc A - B (pt)": (100 * shown["accuracy_diff"]).map(lambda v: f"{v:+.1f}"),
        "A only / B only": shown["a_only"].astype(int).astype(str) + " / " + shown["b_only"].astype(int).astype(str),
        "McNemar p": shown["mcnemar_p"].map(lambda p: f"{p:.2g}"),
        "": np.where(shown["mcnemar_p"] < alpha, "significant", ""),
    })
    note = (f"Exact McNemar tests on the same examples (two-sided binomial test of the discordant pairs); "
            f"'significant' at p < {alpha} without correction for the number of tests.")
    if len(shown) < len(d):
        note += (f" {len(d) - len(shown)} comparison(s) with no discordant example (identical outcomes on every "
                 f"example, p = 1) are left out here; the CSV file of this table keeps every pair.")
    return ReportTable("paired", "Paired comparisons between models", d.reset_index(drop=True),
                       disp.reset_index(drop=True), note)
