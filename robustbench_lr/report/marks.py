"""Which value of a report column is marked as best, decided by a significance test, never by the raw maximum.

A column is one attack at one strength (or one deformation strength, or one kernel-size panel), with one accuracy
per model. Marks:

- `BEST_MARK` ('*', bold in the PDF): the best model is significantly better than every other model of the
  column (p < `ALPHA` against each);
- `TIED_MARK` ('†'): no single model is; the tied group is the best model and every model not significantly
  below it; every member of the group gets the mark.
- no mark: a column of one model, or where every model has the same accuracy (nothing to single out).

The test: the exact McNemar test of the paired outcomes on the same examples (`bundle.paired`, matched on
attack, norm, strength and pair group) where the run has one; otherwise (random deformations: t-intervals over
draws; kernel-size sweeps: t-intervals over seeds) two models differ only if their 95% intervals do not overlap.
No correction for multiple comparisons is applied (the caption of each table says so).

Status: working; tested on synthetic columns (tests/test_report_marks.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

BEST_MARK = "*"
TIED_MARK = "\u2020"  # dagger
ALPHA = 0.05
RULE_MCNEMAR = "mcnemar"
RULE_INTERVALS = "intervals"

PValue = Callable[[str, str], "float | None"]


def _intervals_separate(a: pd.Series, b: pd.Series) -> bool:
    """True when the 95% intervals of a (the better) and b do not overlap (NaN bounds: no claim)."""
    vals = [float(a["ci_low"]), float(b["ci_high"])]
    if any(math.isnan(v) for v in vals):
        return False
    return vals[0] > vals[1]


def column_marks(sub: pd.DataFrame, pvalue: PValue | None = None, alpha: float = ALPHA
                 ) -> tuple[dict[str, str], set[str]]:
    """Marks of one column.

    Args:
        sub: one row per model with columns model, accuracy, ci_low, ci_high (accuracies in [0, 1]).
        pvalue: pvalue(a, b) -> the paired test's p-value of models a and b, or None where no paired test
            exists (then their intervals decide).
        alpha: significance level.

    Returns:
        ({model: mark}, rules): the models that get a mark, and the rules that decided ('mcnemar' for the
        comparisons with a paired test, 'intervals' for the others; empty for a column of fewer than two models,
        which gets no mark). A column where every model has the same accuracy gets no mark either.
    """
    sub = sub.dropna(subset=["accuracy"])
    if len(sub) < 2:
        return {}, set()
    acc = sub["accuracy"].to_numpy(float)
    if np.allclose(acc, acc[0], rtol=0, atol=1e-12):  # all equal: no best model and no group to single out
        return {}, {RULE_MCNEMAR if pvalue is not None else RULE_INTERVALS}
    best = sub.loc[sub["accuracy"].idxmax()]
    tied, rules = [str(best["model"])], set()
    for _, other in sub.iterrows():
        if other["model"] == best["model"]:
            continue
        if np.isclose(other["accuracy"], best["accuracy"], rtol=0, atol=1e-12):
            tied.append(str(other["model"]))  # the same accuracy is never a significant difference
            continue
        p = pvalue(str(best["model"]), str(other["model"])) if pvalue is not None else None
        if p is not None and not math.isnan(p):
            rules.add(RULE_MCNEMAR)
            below = p < alpha
        else:
            rules.add(RULE_INTERVALS)
            below = _intervals_separate(best, other)
        if not below:
            tied.append(str(other["model"]))
    if len(tied) == 1:
        return {tied[0]: BEST_MARK}, rules
    return {m: TIED_MARK for m in tied}, rules


def paired_lookup(paired: pd.DataFrame | None, outcomes: pd.DataFrame | None, attack: str, norm: str,
                  eps: float) -> PValue | None:
    """pvalue(a, b) from the exact McNemar tests of `paired` at (attack, norm, eps), for models a and b in the
    same pair group (from `outcomes`); None when `paired` holds no test of that cell at all."""
    if paired is None or paired.empty:
        return None
    norm_col = paired["norm"].astype(object).fillna("").astype(str)
    cell = paired[(paired["attack"] == attack) & (norm_col == (norm or "")) & np.isclose(paired["eps"], eps)]
    if cell.empty:
        return None
    group_col = cell["pair_group"].astype(object).fillna("").astype(str) if "pair_group" in cell else \
        pd.Series("", cell.index)
    groups = _pair_groups(outcomes, attack)

    def pvalue(a: str, b: str) -> float | None:
        ga, gb = groups.get(a), groups.get(b)
        if groups and (ga is None or ga != gb):
            return None  # not evaluated on the same examples: no paired test
        pair = ((cell["model_a"] == a) & (cell["model_b"] == b)) | ((cell["model_a"] == b) & (cell["model_b"] == a))
        hit = cell[pair & (group_col == ga)] if ga is not None else cell[pair]
        return float(hit["mcnemar_p"].iloc[0]) if len(hit) else None

    return pvalue


def _pair_groups(outcomes: pd.DataFrame | None, attack: str) -> dict[str, str]:
    """model -> its pair group for `attack` ('clean': any attack) in the outcomes table ('' when unset)."""
    if outcomes is None or outcomes.empty or "pair_group" not in outcomes:
        return {}
    o = outcomes if attack == "clean" else outcomes[outcomes["attack"] == attack]
    o = o.drop_duplicates("model")
    return dict(zip(o["model"].astype(str), o["pair_group"].astype(object).fillna("").astype(str)))


def rule_text(rules: set[str], alpha: float = ALPHA) -> str:
    """The sentence of a table's note that says what the marks mean and which test decided them."""
    how = []
    if RULE_MCNEMAR in rules:
        how.append(f"the exact McNemar test on the same examples, p < {alpha:g} against each other model")
    if RULE_INTERVALS in rules:
        how.append("non-overlapping 95% intervals (no paired test exists for these cells)")
    test = " or ".join(how) or "no comparison (one model)"
    return (f"Marks per column: bold {BEST_MARK} = the best model, significantly better than every other model "
            f"({test}); {TIED_MARK} = no model is: the best model and every model not significantly below it "
            f"(tied); no mark where every model has the same accuracy. No correction for the number of tests.")


__all__ = ["ALPHA", "BEST_MARK", "TIED_MARK", "column_marks", "paired_lookup", "rule_text"]
