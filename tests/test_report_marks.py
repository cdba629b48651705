"""The best-value marks of the report's tables (report.marks, report.tables) on synthetic columns: '*' only where
a paired test (or, without one, non-overlapping intervals) finds the best model better than every other model."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_lr.report import tables as T
from robustbench_lr.report.marks import BEST_MARK, TIED_MARK, column_marks, paired_lookup, rule_text
from robustbench_lr.results.stats import clopper_pearson, mcnemar_exact


def _col(accs: dict[str, float], n: int = 300) -> pd.DataFrame:
    rows = []
    for m, a in accs.items():
        lo, hi = clopper_pearson(round(a * n), n)
        rows.append({"model": m, "accuracy": a, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def _p(table: dict[frozenset, float]):
    return lambda a, b: table.get(frozenset((a, b)))


def test_no_star_without_a_significant_paired_difference():
    sub = _col({"a": 0.053, "b": 0.023})
    marks, rules = column_marks(sub, _p({frozenset("ab"): 0.13}))
    assert marks == {"a": TIED_MARK, "b": TIED_MARK} and rules == {"mcnemar"}
    marks, _ = column_marks(sub, _p({frozenset("ab"): 0.01}))
    assert marks == {"a": BEST_MARK}


def test_three_models_star_needs_significance_against_each():
    sub = _col({"a": 0.60, "b": 0.55, "c": 0.30})
    marks, _ = column_marks(sub, _p({frozenset("ab"): 0.20, frozenset("ac"): 1e-6, frozenset("bc"): 1e-5}))
    assert marks == {"a": TIED_MARK, "b": TIED_MARK}  # c is significantly below the best: not in the tied group
    marks, _ = column_marks(sub, _p({frozenset("ab"): 0.04, frozenset("ac"): 1e-6, frozenset("bc"): 1e-5}))
    assert marks == {"a": BEST_MARK}


def test_without_a_paired_test_intervals_decide():
    marks, rules = column_marks(_col({"a": 0.60, "b": 0.55}))  # 300 examples: the intervals overlap
    assert marks == {"a": TIED_MARK, "b": TIED_MARK} and rules == {"intervals"}
    marks, _ = column_marks(_col({"a": 0.90, "b": 0.40}))
    assert marks == {"a": BEST_MARK}
    assert column_marks(_col({"a": 0.5}))[0] == {}  # one model: nothing to compare
    assert "McNemar" in rule_text({"mcnemar"}) and "non-overlapping" in rule_text({"intervals"})


def _synthetic(p_fgsm: float, counts: dict[str, tuple[int, int]]):
    """Results and paired tables of two models under FGSM at eps 0.2 and 0.3 on the same 300 examples."""
    rows, paired = [], []
    for m, (k_clean, k_adv) in counts.items():
        rows.append({"model": m, "family": "clean", "perturbation": "clean", "attack": "clean", "eps": 0.0,
                     "n_total": 300, "n_correct": k_clean, "training_method": "clean"})
        for eps, k in ((0.2, k_adv), (0.3, k_adv // 2)):
            rows.append({"model": m, "family": "linf", "perturbation": "fgsm", "attack": "fgsm", "norm": "linf",
                         "eps": eps, "n_total": 300, "n_correct": k, "steps": 1, "step_size": eps,
                         "implementation": "torchattacks 3.5.1", "training_method": "clean"})
    for eps, p in ((0.2, p_fgsm), (0.3, 0.54)):
        paired.append({"attack": "fgsm", "norm": "linf", "eps": eps, "pair_group": None, "model_a": "a",
                       "model_b": "b", "mcnemar_p": p})
    paired.append({"attack": "clean", "norm": None, "eps": 0.0, "pair_group": None, "model_a": "a", "model_b": "b",
                   "mcnemar_p": 0.8})
    res = pd.DataFrame(rows)
    res["accuracy"] = res["n_correct"] / res["n_total"]
    res["ci_low"], res["ci_high"] = zip(*[clopper_pearson(k, n) for k, n in zip(res["n_correct"], res["n_total"])])
    return res, pd.DataFrame(paired)


@pytest.mark.parametrize("p_fgsm", [0.13, 0.04])
def test_attack_table_marks_follow_the_paired_test(p_fgsm):
    res, paired = _synthetic(p_fgsm, {"a": (280, 16), "b": (281, 7)})
    t = T.attack_summary(res, "linf", paired)
    row = t.display.set_index("model")
    assert list(t.display.columns) == ["attack", "model", "clean", "eps 0.2", "eps 0.3"]
    # eps 0.3: p = 0.54, so no star; the tied group is marked
    assert not any(str(v).endswith(BEST_MARK) for v in t.display["eps 0.3"])
    assert all(str(v).endswith(TIED_MARK) for v in t.display["eps 0.3"])
    star_02 = [str(v).endswith(BEST_MARK) for v in row["eps 0.2"]]
    assert star_02 == ([True, False] if p_fgsm < 0.05 else [False, False])
    assert not any(str(v).endswith(BEST_MARK) for v in t.display["clean"])  # p = 0.8
    assert "exact McNemar" in t.note and TIED_MARK in t.note
    assert "1 step of size eps" in t.note and "torchattacks 3.5.1" in t.note  # the settings next to the table
    assert set(t.data["mark"]) <= {"best", "tied", "none"}


def test_the_worst_case_is_left_out_when_one_attack_ran():
    res, paired = _synthetic(0.13, {"a": (280, 16), "b": (281, 7)})
    worst = res[res["family"] == "linf"].assign(attack="worst-case", perturbation="worst-case")
    t = T.attack_summary(pd.concat([res, worst], ignore_index=True), "linf", paired)
    assert set(t.display["attack"]) == {"fgsm"}


def test_paired_lookup_matches_the_pair_group():
    paired = pd.DataFrame([
        {"attack": "pgd", "norm": "linf", "eps": 0.1, "pair_group": "train_seed=0", "model_a": "a", "model_b": "b",
         "mcnemar_p": 0.01},
        {"attack": "pgd", "norm": "linf", "eps": 0.1, "pair_group": "train_seed=1", "model_a": "a", "model_b": "b",
         "mcnemar_p": 0.9}])
    outcomes = pd.DataFrame({"model": ["a", "b", "c"], "attack": "pgd", "pair_group": ["train_seed=1"] * 2 + ["x"]})
    pv = paired_lookup(paired, outcomes, "pgd", "linf", 0.1)
    assert pv("a", "b") == 0.9 and pv("b", "a") == 0.9
    assert pv("a", "c") is None  # not on the same examples: no paired test
    assert paired_lookup(paired, outcomes, "pgd", "l2", 0.1) is None


def test_deformation_tables_say_which_interval_each_column_has():
    base = {"family": "deform", "n_total": 300}
    rows = []
    for m, accs in (("a", (0.93, 0.84, 0.66)), ("b", (0.94, 0.92, 0.87))):
        rows.append({**base, "model": m, "perturbation": "rotate", "param_name": "degrees", "param_value": 0.0,
                     "accuracy": accs[0], "ci_low": 0.9, "ci_high": 0.96, "ci_method": "clopper-pearson", "draws": 1})
        rows.append({**base, "model": m, "perturbation": "rotate", "param_name": "degrees", "param_value": 10.0,
                     "n_total": 900, "accuracy": accs[1], "ci_low": accs[1] - 0.01, "ci_high": accs[1] + 0.01,
                     "ci_method": "t-over-draws", "draws": 3})
        rows.append({**base, "model": m, "perturbation": "worst-of-k", "param_name": "max_rotation",
                     "param_value": 10.0, "accuracy": accs[2], "ci_low": accs[2] - 0.05, "ci_high": accs[2] + 0.05,
                     "ci_method": "clopper-pearson"})
        rows.append({"model": m, "family": "clean", "perturbation": "clean", "n_total": 300, "accuracy": accs[0],
                     "ci_low": 0.9, "ci_high": 0.96})
    paired = pd.DataFrame([{"attack": "worst-of-k", "norm": None, "eps": 10.0, "pair_group": None, "model_a": "a",
                            "model_b": "b", "mcnemar_p": 1e-10}])
    outcomes = pd.DataFrame({"model": ["a", "b"], "attack": "worst-of-k", "pair_group": None})
    rot, wok = T.deform_summaries(pd.DataFrame(rows), paired, outcomes)
    assert list(rot.display.columns) == ["model", "0\u00b0", "10\u00b0"]
    assert "t-interval over the 3 random draws" in rot.note and "Clopper-Pearson" in rot.note
    assert "rotation (degrees)" in rot.note and "non-overlapping" in rot.note
    assert str(rot.display.set_index("model").loc["b", "10\u00b0"]).endswith(BEST_MARK)  # intervals apart
    # the spatial attack gets its bound-0 column from the clean accuracy, and McNemar marks
    assert list(wok.display.columns) == ["model", "0\u00b0", "10\u00b0"]
    assert "clean accuracy" in wok.note and "maximum rotation (degrees)" in wok.note
    assert str(wok.display.set_index("model").loc["b", "10\u00b0"]).endswith(BEST_MARK)
    assert "McNemar" in wok.note


def test_mcnemar_of_the_issue_is_not_significant():
    """The report's own numbers behind the issue: FGSM eps 0.2 had 13 vs 4 discordant examples at p ~ 0.05 and
    the issue's run p = 0.13; a p-value above 0.05 must never yield a star."""
    p = mcnemar_exact(9, 3)
    assert p > 0.05
    marks, _ = column_marks(_col({"a": 0.05, "b": 0.03}), lambda a, b: p)
    assert BEST_MARK not in marks.values()


def test_a_column_where_every_model_has_the_same_value_has_no_mark():
    """Equal accuracies (e.g. every model at 0% at a large eps) single out no model: no '*' and no dagger."""
    for pvalue in (None, _p({frozenset("ab"): 1.0, frozenset("ac"): 1.0, frozenset("bc"): 1.0})):
        marks, rules = column_marks(_col({"a": 0.0, "b": 0.0, "c": 0.0}), pvalue)
        assert marks == {} and rules
    res, paired = _synthetic(0.13, {"a": (280, 0), "b": (280, 0)})  # the same clean count, 0% under FGSM
    t = T.attack_summary(res, "linf", paired)
    for col in ("clean", "eps 0.2", "eps 0.3"):
        assert not any(str(v).endswith((BEST_MARK, TIED_MARK)) for v in t.display[col]), col
    assert set(t.data["mark"]) == {"none"}
    assert "same accuracy" in t.note
