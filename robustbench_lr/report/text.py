"""Data-driven paragraphs for the report: every sentence is computed from the tables, never hand-written.

A difference between models is called significant only with a paired test (exact McNemar, p < 0.05) or, where
no paired test exists (random deformations, seeds of a kernel-size sweep), with non-overlapping 95% intervals.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .labels import strength_label, strength_unit
from .tables import fmt_acc, fmt_strength

ALPHA = 0.05


def _pct(r: pd.Series) -> str:
    return f"{fmt_acc(r['accuracy'], r['ci_low'], r['ci_high'])}%"


def _overlap(a: pd.Series, b: pd.Series) -> bool:
    if any(math.isnan(float(v)) for v in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])):
        return True
    return not (a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])


def _paired_p(paired: pd.DataFrame | None, attack: str, eps: float, a: str, b: str, norm: str | None = None
              ) -> float | None:
    if paired is None or paired.empty:
        return None
    same_norm = (paired["norm"].astype(object).fillna("") == norm) if norm is not None else True
    m = paired[(paired["attack"] == attack) & np.isclose(paired["eps"], eps) & same_norm
               & (((paired["model_a"] == a) & (paired["model_b"] == b)) | ((paired["model_a"] == b) & (paired["model_b"] == a)))]
    return float(m["mcnemar_p"].iloc[0]) if len(m) else None


def _verdict(p: float | None, a: pd.Series, b: pd.Series) -> str:
    if p is not None:
        word = "significant" if p < ALPHA else "not significant"
        return f"exact McNemar p = {p:.2g}, {word} at {ALPHA}"
    return "95% intervals do not overlap" if not _overlap(a, b) else "95% intervals overlap, so no difference is claimed"


def describe_attacks(results: pd.DataFrame, paired: pd.DataFrame | None, norm: str) -> list[str]:
    """One paragraph on clean accuracy and one per attack (at the eps where the models differ most)."""
    out = []
    clean = results[results["family"] == "clean"].drop_duplicates("model")
    if not clean.empty:
        n = int(clean["n_total"].iloc[0])
        parts = [f"{r['model']} ({r['model_name']}, k={int(r['kernel_size'])}) {_pct(r)}" for _, r in clean.iterrows()]
        out.append(f"Clean accuracy on the same {n} test examples: " + "; ".join(parts) + ".")
    r = results[(results["family"] == norm) & (results["eps"] > 0)]
    for atk in dict.fromkeys(r["attack"]):
        s = r[r["attack"] == atk]
        spread = s.groupby("eps")["accuracy"].agg(lambda v: v.max() - v.min())
        if spread.empty:
            continue
        eps = float(spread.idxmax()) if spread.max() > 0 else float(sorted(s["eps"].unique())[len(s["eps"].unique()) // 2])
        at = s[np.isclose(s["eps"], eps)].sort_values("accuracy", ascending=False)
        best = at.iloc[0]
        text = f"{atk} ({norm}) at eps = {fmt_strength(eps)}: {best['model']} keeps {_pct(best)}"
        if len(at) > 1:
            comps = []
            for _, o in at.iloc[1:].iterrows():
                p = _paired_p(paired, atk, eps, best["model"], o["model"], norm)
                diff = 100 * (best["accuracy"] - o["accuracy"])
                comps.append(f"{o['model']} {_pct(o)} (difference {diff:+.1f} pt; {_verdict(p, best, o)})")
            text += " versus " + "; ".join(comps)
        mono = all((g.sort_values("eps")["accuracy"].diff().dropna() <= 1e-12).all() for _, g in s.groupby("model"))
        text += ". Accuracy falls monotonically with eps for every model." if mono else \
            ". Accuracy is not monotone in eps for some model: see the hygiene checks."
        out.append(text)
    return out


def describe_deform(results: pd.DataFrame, paired: pd.DataFrame | None = None) -> list[str]:
    """One sentence per deformation at its largest strength: the exact McNemar test of a spatial attack's paired
    outcomes where the run has one, else (random draws) whether the 95% intervals overlap."""
    out = []
    r = results[results["family"] == "deform"]
    for pert in dict.fromkeys(r["perturbation"]):
        s = r[r["perturbation"] == pert]
        top = float(s["param_value"].max())
        at = s[np.isclose(s["param_value"], top)].sort_values("accuracy", ascending=False)
        name = str(s["param_name"].iloc[0])
        what = strength_label(name).split(" (")[0]
        best = at.iloc[0]
        text = f"{pert} at the largest {what}, {fmt_strength(top)}{strength_unit(name)}: {best['model']} {_pct(best)}"
        if len(at) > 1:
            text += " versus " + "; ".join(
                f"{o['model']} {_pct(o)} ({_verdict(_paired_p(paired, pert, top, best['model'], o['model']), best, o)})"
                for _, o in at.iloc[1:].iterrows())
        out.append(text + ".")
    return out


def describe_kernel(results: pd.DataFrame, columns: list[tuple[str, str, float]]) -> list[str]:
    """Per model family and panel: accuracy at the smallest vs the largest kernel size, over seeds."""
    from ..results.stats import t_interval

    out = []
    if "kernel_size" not in results.columns or results["kernel_size"].nunique() < 2:
        return out
    ks = sorted(results["kernel_size"].dropna().unique())
    for label, pert, strength in columns:
        sel = results[results["family"] == "clean"] if pert == "clean" else \
            results[(results["perturbation"] == pert) & np.isclose(results["param_value"], strength)]
        parts = []
        for name, g in sel.groupby("model_name", sort=False):
            rows = {}
            for k in (ks[0], ks[-1]):
                gk = g[g["kernel_size"] == k]
                if gk.empty:
                    continue
                lo, hi = t_interval(gk["accuracy"].to_numpy()) if len(gk) > 1 else (gk["ci_low"].iloc[0], gk["ci_high"].iloc[0])
                rows[k] = pd.Series({"accuracy": gk["accuracy"].mean(), "ci_low": lo, "ci_high": hi})
            if len(rows) == 2:
                a, b = rows[ks[0]], rows[ks[-1]]
                change = "higher" if b["accuracy"] > a["accuracy"] else "lower"
                claim = "intervals do not overlap" if not _overlap(a, b) else "intervals overlap: no claim of a change"
                parts.append(f"{name}: {_pct(a)} at k={int(ks[0])}, {_pct(b)} at k={int(ks[-1])} ({change}; {claim})")
        if parts:
            out.append(f"{label}: " + "; ".join(parts) + ".")
    return out


def describe_hygiene(hyg: pd.DataFrame | None) -> list[str]:
    if hyg is None or hyg.empty:
        return ["No hygiene checks were run for these results: treat the robust accuracies with caution."]
    bad = hyg[hyg["status"] != "pass"]
    if bad.empty:
        return [f"All {len(hyg)} hygiene checks passed for {hyg['model'].nunique()} model(s): deterministic forward "
                f"passes, finite non-zero input gradients, an unbounded attack reaching chance, accuracy monotone in "
                f"eps, iterative attacks at least as strong as FGSM, no gain from doubling the steps, and random noise "
                f"weaker than the attack."]
    lines = [f"{len(bad)} of {len(hyg)} hygiene checks did not pass:"]
    for _, r in bad.iterrows():
        lines.append(f"{r['status'].upper()} {r['model']} / {r['check']}: {r['detail']} (value {r['value']:.3g}, "
                     f"threshold {r['threshold']:.3g}).")
    return lines
