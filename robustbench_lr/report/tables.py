"""Report tables built from the tidy results: numeric long form (CSV/JSON) and a formatted display form.

Every table is a `ReportTable`: `data` keeps numbers (accuracy and interval bounds as floats in [0, 1], and the
mark of each cell); `display` is what the PDF, Markdown and LaTeX show (percentages with 95% intervals and the
marks of `report.marks`: bold * only where the best model is significantly better than every other model of
the column, a dagger on the tied group otherwise).

- `attack_summary(results, norm, paired, outcomes)`: one long table per norm, one row per (attack, model) and
  one aligned column per eps (clean accuracy first), the attacks' settings in its note;
- `deform_summaries(results, paired, outcomes)`: one table per deformation, one column per strength, its note
  saying which interval each column has (t over random draws, or Clopper-Pearson over examples);
- `kernel_columns(results)` and `kernel_summary(results, columns)`: the kernel-size section's columns (clean
  first, labels with units) and its table;
- `hygiene_table`, `paired_table`.

Status: working; the marks are tested on synthetic columns (tests/test_report_marks.py), the tables end to end
by tests/test_report.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..results.table import fmt_strength
from .labels import ATTACK_PARAMS, column_label, settings_text, strength_label, strength_unit, training_text
from .marks import BEST_MARK, TIED_MARK, column_marks, paired_lookup, rule_text

MATRIX_MODELS = 4  # above this many models the hygiene table is drawn as a model x check matrix
MARK_NAMES = {BEST_MARK: "best", TIED_MARK: "tied", "": "none"}
__all__ = ["BEST_MARK", "TIED_MARK", "ReportTable", "attack_summary", "deform_rows", "deform_summaries", "fmt_acc",
           "fmt_strength", "hygiene_table", "kernel_columns", "kernel_summary", "paired_table"]


@dataclass
class ReportTable:
    """One table of the report.

    Attributes:
        name: file stem (e.g. 'summary_linf').
        title: heading in the PDF.
        data: numeric long table (one row per cell).
        display: formatted wide table (strings), as shown.
        note: the caption under the table (what the marks mean, the interval method, the settings).
        best: column -> the marked models (for the text).
        groups: display column groups laid out as separate blocks in the PDF (None: by width).
        keys: how many leading display columns identify a row (repeated in every block; a change of the first
            one starts a new group of rows).
    """

    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    note: str = ""
    best: dict[str, str] = field(default_factory=dict)
    groups: list[list[str]] | None = None
    keys: int = 1


def fmt_acc(acc: float, lo: float, hi: float) -> str:
    """'45.2 [41.1, 49.3]' (percent), or '-' for a missing value."""
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "-"
    if lo is None or math.isnan(lo):
        return f"{100 * acc:.1f}"
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def model_order(results: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(results["model"]))


def _marked(sub: pd.DataFrame, pvalue, rules: set[str]) -> dict[str, str]:
    marks, used = column_marks(sub, pvalue)
    rules |= used
    return marks


def _cell(r: pd.Series, mark: str) -> str:
    return fmt_acc(r["accuracy"], r["ci_low"], r["ci_high"]) + mark


def _training_note(results: pd.DataFrame, models: list[str]) -> str:
    if "training_method" not in results:
        return ""
    t = results.drop_duplicates("model").set_index("model")["training_method"]
    return " Models: " + "; ".join(f"{m}: {training_text(t.get(m))}" for m in models) + "."


def _cells_frame(rows: list[dict]) -> pd.DataFrame:
    cols = ["group", "model", "column", "strength", "accuracy", "ci_low", "ci_high", "ci_method", "mark"]
    return pd.DataFrame(rows, columns=cols)


def attack_summary(results: pd.DataFrame, norm: str, paired: pd.DataFrame | None = None,
                   outcomes: pd.DataFrame | None = None) -> ReportTable | None:
    """Clean and robust accuracy of every model under every attack of one norm, one row per (attack, model)
    and one column per eps; the per-example worst case as one more attack when two or more attacks ran."""
    r = results[results["family"].isin(["clean", norm])]
    adv = r[(r["family"] == norm) & (r["eps"] > 0)]
    if adv.empty:
        return None
    attacks = [a for a in dict.fromkeys(adv["attack"]) if a != "worst-case"]
    if len(attacks) >= 2 and (adv["attack"] == "worst-case").any():
        attacks.append("worst-case")  # with one attack the worst case repeats it
    models, eps_list = model_order(r), sorted(adv["eps"].unique())
    clean = r[r["family"] == "clean"].drop_duplicates("model")
    rules: set[str] = set()
    clean_marks = _marked(clean, paired_lookup(paired, outcomes, "clean", "", 0.0), rules)
    cols = ["clean"] + [f"eps {fmt_strength(e)}" for e in eps_list]
    rows, disp = [], []
    for atk in attacks:
        line = {m: {"attack": atk, "model": m} for m in models}
        for _, c in clean.iterrows():
            line[c["model"]]["clean"] = _cell(c, clean_marks.get(c["model"], ""))
            rows.append(_row(atk, c, "clean", 0.0, clean_marks))
        for e, col in zip(eps_list, cols[1:]):
            sub = adv[(adv["attack"] == atk) & np.isclose(adv["eps"], e)].drop_duplicates("model")
            marks = _marked(sub, paired_lookup(paired, outcomes, atk, norm, float(e)), rules)
            for _, c in sub.iterrows():
                line[c["model"]][col] = _cell(c, marks.get(c["model"], ""))
                rows.append(_row(atk, c, col, float(e), marks))
        disp += [line[m] for m in models if len(line[m]) > 2]
    display = pd.DataFrame(disp, columns=["attack", "model", *cols]).fillna("-")
    n = int(clean["n_total"].iloc[0]) if len(clean) else int(adv["n_total"].iloc[0])
    note = (f"Accuracy (%) of each model on the same {n} test examples, {norm} threat model; brackets: 95% "
            f"Clopper-Pearson intervals over the examples. " + rule_text(rules) + " Attack settings: "
            + "; ".join(_attack_settings(adv, a) for a in attacks if a != "worst-case") + ".")
    if "worst-case" in attacks:
        note += " worst-case: an example counts as robust only if every attack above failed on it."
    note += _training_note(results, models)
    data = _cells_frame(rows)
    return ReportTable(f"summary_{norm}", f"Robust accuracy under {norm} attacks",
                       data.rename(columns={"group": "attack"}), display, note, _best(data), keys=2)


def _row(group: str, c: pd.Series, col: str, strength: float, marks: dict[str, str]) -> dict:
    mark = marks.get(c["model"], "")
    return {"group": group, "model": c["model"], "column": col, "strength": strength, "accuracy": c["accuracy"],
            "ci_low": c["ci_low"], "ci_high": c["ci_high"], "ci_method": c.get("ci_method", ""),
            "mark": MARK_NAMES[mark]}


def _best(data: pd.DataFrame) -> dict[str, str]:
    """'<group> <column>' -> the marked models of that column."""
    d = data.assign(k=(data["group"].astype(str) + " " + data["column"]).str.strip())
    return {k: ", ".join(g.loc[g["mark"] != "none", "model"]) for k, g in d.groupby("k", sort=False)
            if (g["mark"] != "none").any()}


def _attack_settings(adv: pd.DataFrame, attack: str) -> str:
    """The settings of `attack` at its largest eps (the step size scales with eps), from its results row."""
    rows = adv[adv["attack"] == attack].sort_values("eps")
    return settings_text(rows.iloc[-1].to_dict()) if len(rows) else attack


def deform_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The deformation rows of the results; a spatial attack (bounds such as max_rotation) without a bound-0 row
    gets one from the clean row of the same model on the same examples (bound 0 allows no deformation, so its
    accuracy is the clean accuracy), marked `from_clean`."""
    r = results[results["family"] == "deform"].assign(from_clean=False)
    clean = results[results["family"] == "clean"].drop_duplicates("model")
    parts = []
    for pert, s in r.groupby("perturbation", sort=False):
        pname = str(s["param_name"].iloc[0])
        z = clean[clean["model"].isin(s["model"]) & clean["n_total"].isin(s["n_total"])]
        if pname in ATTACK_PARAMS and not np.isclose(s["param_value"], 0).any() and len(z):
            s = pd.concat([z.assign(family="deform", perturbation=pert, param_name=pname, param_value=0.0,
                                    from_clean=True), s], ignore_index=True)
        parts.append(s)
    return pd.concat(parts, ignore_index=True) if parts else r


def deform_summaries(results: pd.DataFrame, paired: pd.DataFrame | None = None,
                     outcomes: pd.DataFrame | None = None) -> list[ReportTable]:
    """One table per deformation: one row per model, one column per strength. Random deformations have a
    t-interval over draws (Clopper-Pearson where a single draw ran, e.g. the identity strength); spatial attacks
    a Clopper-Pearson interval over examples and paired McNemar marks; their 0 column is the clean accuracy."""
    r = deform_rows(results)
    return [_deform_table(r[r["perturbation"] == p], paired, outcomes) for p in dict.fromkeys(r["perturbation"])]


def _deform_table(s: pd.DataFrame, paired: pd.DataFrame | None, outcomes: pd.DataFrame | None) -> ReportTable:
    pert, pname = str(s["perturbation"].iloc[0]), str(s["param_name"].iloc[0])
    has_outcomes = outcomes is not None and not outcomes.empty and bool((outcomes["attack"] == pert).any())
    adversarial = has_outcomes or pname in ATTACK_PARAMS
    s = s.assign(ci_method=s["ci_method"].astype(object).fillna("")) if "ci_method" in s else s.assign(ci_method="")
    models, values = model_order(s), sorted(s["param_value"].unique())
    unit = strength_unit(pname)
    cols = [f"{fmt_strength(v)}{unit}" for v in values]
    rules: set[str] = set()
    rows, line = [], {m: {"model": m} for m in models}
    for v, col in zip(values, cols):
        sub = s[np.isclose(s["param_value"], v)].drop_duplicates("model")
        pv = None
        if has_outcomes:
            pv = paired_lookup(paired, outcomes, "clean", "", 0.0) if sub["from_clean"].all() else \
                paired_lookup(paired, outcomes, pert, "", float(v))
        marks = _marked(sub, pv, rules)
        for _, c in sub.iterrows():
            line[c["model"]][col] = _cell(c, marks.get(c["model"], ""))
            rows.append(_row(pert, c, col, float(v), marks))
    display = pd.DataFrame([line[m] for m in models], columns=["model", *cols]).fillna("-")
    note = (f"Accuracy (%) under {pert}; columns: {strength_label(pname)}. "
            + _interval_note(s, adversarial, unit) + " " + rule_text(rules))
    data = _cells_frame(rows)
    random = "draws" in s and bool((s["draws"].fillna(1) > 1).any())
    kind = "spatial attack" if adversarial else "random draws" if random else "deterministic"
    return ReportTable(f"summary_deform_{pert}", f"Accuracy under deformations: {pert} ({kind})",
                       data.rename(columns={"group": "perturbation"}), display, note, _best(data))


def _interval_note(s: pd.DataFrame, adversarial: bool, unit: str) -> str:
    """Which interval each column of a deformation table has."""
    draws = s["draws"].fillna(1).astype(int) if "draws" in s else pd.Series(1, index=s.index)
    n = int((s["n_total"] // draws.clip(lower=1)).iloc[0])
    if adversarial:
        zero = (f"; the 0{unit} column is the clean accuracy on the same examples (bound 0 allows no deformation)"
                if s["from_clean"].any() else "")
        return f"Brackets: 95% Clopper-Pearson intervals over the {n} examples (one outcome per example){zero}."
    by_t = s[s["ci_method"] == "t-over-draws"]
    by_cp = s[s["ci_method"] != "t-over-draws"]
    parts = []
    if len(by_t):
        draws = sorted({int(d) for d in by_t["draws"].dropna()}) if "draws" in by_t else []
        where = ", ".join(f"{fmt_strength(v)}{unit}" for v in sorted(by_t["param_value"].unique()))
        parts.append(f"columns {where}: 95% t-interval over the {'/'.join(map(str, draws)) or 'several'} random "
                     f"draws on the same examples (it reflects the draws, not the sampling of the examples)")
    if len(by_cp):
        where = ", ".join(f"{fmt_strength(v)}{unit}" for v in sorted(by_cp["param_value"].unique()))
        parts.append(f"columns {where}: one draw (the result cannot vary), 95% Clopper-Pearson interval over the "
                     f"examples")
    return "Brackets: " + "; ".join(parts) + "."


def kernel_columns(res: pd.DataFrame) -> list[tuple[str, str, float]]:
    """The columns (panels) of the kernel-size section, as (label, perturbation, strength): clean accuracy first,
    then each perturbation at the strength where the models differ most (the most informative one); the
    per-example worst case only when two or more other attacks of its norm ran (with one it repeats that one).
    Labels carry the strength and its unit ('rotate 30\u00b0', 'pgd linf eps 0.02')."""
    if not is_kernel_sweep(res):
        return []
    cols = [("clean accuracy", "clean", 0.0)]
    for pert, g in res[~res["family"].isin(["clean", "drift"])].groupby("perturbation", sort=False):
        g = g[g["param_value"] > 0]
        if g.empty or (pert == "worst-case" and _attacks_of(res, str(g["family"].iloc[0])) < 2):
            continue
        spread = g.groupby("param_value")["accuracy"].agg(lambda a: a.max() - a.min())
        v = float(spread.idxmax())
        norm = str(g["family"].iloc[0]) if g["family"].iloc[0] in ("linf", "l2") else ""
        cols.append((column_label(str(pert), str(g["param_name"].iloc[0]), v, norm), str(pert), v))
    return cols


def _attacks_of(res: pd.DataFrame, family: str) -> int:
    """How many attacks other than the per-example worst case ran under threat model `family`."""
    return res.loc[(res["family"] == family) & (res["perturbation"] != "worst-case"), "perturbation"].nunique()


def _kernel_cells(results: pd.DataFrame, columns: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Mean accuracy and its interval per (model family, kernel size, column): a t-interval over training seeds
    (the row's own interval with one seed)."""
    from ..results.stats import t_interval

    parts = []
    for label, pert, v in columns:
        sel = results[results["family"] == "clean"] if pert == "clean" else \
            results[(results["perturbation"] == pert) & np.isclose(results["param_value"], v)]
        parts.append(sel.assign(column=label))
    r = pd.concat(parts, ignore_index=True)
    rows = []
    for (name, k, col), sub in r.groupby(["model_name", "kernel_size", "column"], sort=False):
        acc = sub["accuracy"].to_numpy()
        lo, hi = t_interval(acc) if len(sub) >= 2 else (sub["ci_low"].iloc[0], sub["ci_high"].iloc[0])
        rows.append({"model_name": name, "kernel_size": k, "column": col, "accuracy": acc.mean(),
                     "sd_over_seeds": sub["accuracy"].std(), "seeds": len(sub), "ci_low": lo, "ci_high": hi})
    agg = pd.DataFrame(rows)
    agg["model"] = agg["model_name"] + " k=" + agg["kernel_size"].astype(int).astype(str)
    return agg


def kernel_summary(results: pd.DataFrame, columns: list[tuple[str, str, float]] | None = None
                   ) -> ReportTable | None:
    """Mean accuracy over seeds per (model family, kernel size) in the columns of `kernel_columns` (clean
    first; the same labels as the figure's panels); marks by non-overlapping t-intervals over seeds."""
    columns = kernel_columns(results) if columns is None else columns
    if not is_kernel_sweep(results) or not columns:
        return None
    agg = _kernel_cells(results[results["family"] != "drift"], columns)
    cols = [c for c, _, _ in columns if (agg["column"] == c).any()]
    rows = list(dict.fromkeys(agg.sort_values(["model_name", "kernel_size"])["model"]))
    disp = pd.DataFrame(index=rows, columns=cols, dtype=object)
    rules: set[str] = set()
    agg["mark"] = "none"
    for col in cols:
        sub = agg[agg["column"] == col]
        marks = _marked(sub, None, rules)
        for i, row in sub.iterrows():
            disp.loc[row["model"], col] = _cell(row, marks.get(row["model"], ""))
            agg.at[i, "mark"] = MARK_NAMES[marks.get(row["model"], "")]
    disp = disp.fillna("-")
    disp.index.name = "model"
    attacked = set(results.loc[results["family"].isin(["linf", "l2"]), "perturbation"])
    eps = " eps: the attack's bound in pixel values in [0, 1]." if any(p in attacked for _, p, _ in columns) else ""
    note = (f"Mean accuracy (%) over {int(agg['seeds'].max())} training seed(s) per model and kernel size; each "
            f"strength column at the strength where the models differ most.{eps} Brackets: a 95% t-interval over "
            f"seeds (Clopper-Pearson over examples with one seed). " + rule_text(rules))
    return ReportTable("summary_kernel_size", "Accuracy and robustness vs kernel size", agg, disp.reset_index(),
                       note, _best(agg.assign(group="")))


def is_kernel_sweep(results: pd.DataFrame) -> bool:
    """True when some model appears with two or more kernel sizes (models that merely differ in k are not)."""
    if "kernel_size" not in results.columns:
        return False
    return bool((results.groupby("model_name")["kernel_size"].nunique() >= 2).any())


def hygiene_table(hyg: pd.DataFrame) -> ReportTable | None:
    if hyg is None or hyg.empty:
        return None
    cols = ["model", "check", "attack", "status", "value", "threshold", "n", "detail"]
    d = hyg[[c for c in cols if c in hyg.columns]].copy()
    disp = d.copy()
    if "attack" in disp:
        disp["attack"] = disp["attack"].astype(object).fillna("").astype(str)
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
                       disp.reset_index(drop=True), note, keys=1 if "detail" not in disp else 2)


MAX_PAIRED_ROWS = 150  # paired rows the PDF lists for every attack before it keeps only the worst case


def paired_table(paired: pd.DataFrame, alpha: float = 0.05) -> ReportTable | None:
    if paired is None or paired.empty:
        return None
    d = paired.copy()
    d = d[(d["attack"] != "clean") & (d["eps"] > 0)] if ((d["attack"] != "clean") & (d["eps"] > 0)).any() else d
    # pairs with no discordant example (the same outcome on every example, e.g. both at 0%) carry no evidence:
    # the PDF leaves them out and says how many; the CSV keeps every pair
    same = (d["a_only"] == 0) & (d["b_only"] == 0)
    shown = d[~same] if (~same).any() else d
    # many models make every (pair, attack, eps) too many pages: keep the per-example worst case in the PDF
    many = len(shown) > MAX_PAIRED_ROWS and (shown["attack"] == "worst-case").any()
    n_before = len(shown)
    if many:
        shown = shown[shown["attack"] == "worst-case"]
    disp = pd.DataFrame({
        "attack": shown["attack"], "eps / bound": shown["eps"].map(fmt_strength), "A": shown["model_a"],
        "B": shown["model_b"],
        "acc A - B (pt)": (100 * shown["accuracy_diff"]).map(lambda v: f"{v:+.1f}"),
        "A only / B only": shown["a_only"].astype(int).astype(str) + " / " + shown["b_only"].astype(int).astype(str),
        "McNemar p": shown["mcnemar_p"].map(lambda p: f"{p:.2g}"),
        "": np.where(shown["mcnemar_p"] < alpha, "significant", ""),
    })
    note = (f"Exact McNemar tests on the same examples (two-sided binomial test of the discordant pairs); "
            f"'significant' at p < {alpha} without correction for the number of tests.")
    if n_before < len(d):
        note += (f" {len(d) - n_before} comparison(s) with no discordant example (identical outcomes on every "
                 f"example, p = 1) are left out here; the CSV file of this table keeps every pair.")
    if many:
        note += (f" With {n_before} comparisons the PDF shows only those of the per-example worst case over the "
                 f"attacks ({len(shown)}); the CSV file of this table has every attack.")
    return ReportTable("paired", "Paired comparisons between models", d.reset_index(drop=True),
                       disp.reset_index(drop=True), note)
