"""The robust comparison's summary: one table per model, means over training seeds, paired tests, training curves.

    python analyses/robust_training_summary.py runs/analyses/robust_training reports/robust_training

Reads OUT/checkpoints/<model>_<method>_s<seed>/model.json (training history) and the run directories
OUT/{attacks,attacks_apgd,attacks_apgd_low_lr,attacks_apgd_low_rn,attacks_aa,deform}; writes into REPORT:
- summary.csv: per model and measurement, the accuracy with its counts (n_correct / n_total) and 95% Clopper-Pearson interval;
- summary.md: the per-model table, the family means over seeds with their range, the paired McNemar tests of
  lrnet_tiny against resnet_tiny (same method, same seed, same examples), and the AutoAttack subset against the
  full AutoAttack where both ran;
- training_curves.png (also OUT/training/, a run directory that `robustbench-lr report` takes): per epoch the
  PGD-10 robust accuracy and the clean accuracy on the training's held-out check, per model.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustbench_lr.results import collect, load_runs, write_figures, write_run
from robustbench_lr.results.stats import clopper_pearson, paired_comparisons

ATTACK_RUNS = ("attacks", "attacks_apgd", "attacks_apgd_low_lr", "attacks_apgd_low_rn", "attacks_aa")
RUNS = (*ATTACK_RUNS, "deform")
SUBSET = "autoattack[apgd-ce+apgd-t]"


def parse_label(label: str) -> tuple[str, str, int]:
    """'resnet_tiny_pgd_s0' -> ('resnet_tiny', 'pgd', 0)."""
    m = re.fullmatch(r"(.+)_(pgd|trades|fgsm-rs|none)_s(\d+)", label)
    return (m.group(1), m.group(2), int(m.group(3))) if m else (label, "", 0)


def measurements(root: Path) -> pd.DataFrame:
    """One row per (model, measurement) with counts; the deformations keep their worst strength per kind."""
    dirs = [root / r for r in RUNS if (root / r / "results.csv").is_file()]
    r = load_runs(dirs).results.copy()
    r["run"] = r["run"] if "run" in r else ""
    keep = (r["family"] == "clean") | (r["param_value"] > 0)
    r = r[keep & (r["family"] != "diagnostic")]
    r["measurement"] = np.where(r["family"] == "clean", "clean",
                                r["perturbation"].astype(str) + " " + r["param_value"].map(lambda v: f"{v:g}"))
    # the clean row appears in every run on the same examples: keep the first
    r = r.drop_duplicates(["model", "measurement"])
    parts = [parse_label(m) for m in r["model"]]
    r["family_name"], r["method"], r["seed"] = zip(*parts)
    cols = ["model", "family_name", "method", "seed", "measurement", "n_correct", "n_total", "accuracy", "ci_low",
            "ci_high"]
    return r[cols].reset_index(drop=True)


def worst_all_per_example(root: Path, eps_list: tuple[float, ...] = (0.1, 0.2, 0.3)) -> pd.DataFrame:
    """Per model, eps and example (dataset_index): robust under every attack that ran at that eps in any attack run
    (PGD-50, targeted PGD-50, the APGD pair and, where it ran, the full official AutoAttack), from the runs'
    outcomes on the same examples."""
    runs = [root / r for r in ATTACK_RUNS if (root / r / "outcomes.csv").is_file()]
    if not runs:
        return pd.DataFrame()
    tables = load_runs(runs)
    res, o = tables.results, tables.outcomes
    o = o[~o["attack"].isin(["clean", "worst-case"])]
    parts = []
    for eps in eps_list:
        ran = res[np.isclose(res["param_value"], eps) & (res["family"] == "linf")][["model", "attack"]].drop_duplicates()
        per = o.merge(ran, on=["model", "attack"]).groupby(["model", "dataset_index"]).agg(
            clean=("clean_correct", "all"), min_eps=("min_eps", "min")).reset_index()
        per["robust"] = per["clean"] & (per["min_eps"] > eps)
        parts.append(per.assign(eps=eps))
    return pd.concat(parts, ignore_index=True)


def overall_worst_case(per: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model and eps under the per-example worst case over every attack (worst-case-all)."""
    if per.empty:
        return pd.DataFrame()
    g = per.groupby(["model", "eps"])["robust"].agg(n_correct="sum", n_total="size").reset_index()
    g["measurement"] = [f"worst-case-all {e:g}" for e in g["eps"]]
    g["accuracy"] = g["n_correct"] / g["n_total"]
    lo_hi = [clopper_pearson(int(k), int(n)) for k, n in zip(g["n_correct"], g["n_total"])]
    g["ci_low"], g["ci_high"] = [a for a, _ in lo_hi], [b for _, b in lo_hi]
    parts = [parse_label(m) for m in g["model"]]
    g["family_name"], g["method"], g["seed"] = zip(*parts)
    return g


def paired_worst_all(per: pd.DataFrame) -> pd.DataFrame:
    """Exact McNemar tests of lrnet_tiny against resnet_tiny (same method, variant and seed) under worst-case-all."""
    if per.empty:
        return pd.DataFrame()
    rows = []
    models = sorted(per["model"].unique())
    for lr in models:
        a = parse_label(lr)
        fam, var = _split_variant(a[0])
        if fam != "lrnet_tiny":
            continue
        rn = f"resnet_tiny{'-' + var if var else ''}_{a[1]}_s{a[2]}"
        if rn not in models:
            continue
        for eps, g in per[per["model"].isin([lr, rn])].groupby("eps"):
            w = g.pivot(index="dataset_index", columns="model", values="robust").dropna().astype(bool)
            t = paired_comparisons({lr: w[lr].to_numpy(), rn: w[rn].to_numpy()}).iloc[0]
            rows.append({"method": a[1] + (f" ({var})" if var else ""), "seed": a[2], "attack": "worst-case-all",
                         "eps": eps, "n": t["n"], "lrnet_correct": t["correct_a"], "resnet_correct": t["correct_b"],
                         "lr_only": t["a_only"], "resnet_only": t["b_only"], "mcnemar_p": t["mcnemar_p"]})
    return pd.DataFrame(rows)


def training_history(root: Path) -> pd.DataFrame:
    rows = []
    for mj in sorted((root / "checkpoints").glob("*/model.json")):
        meta = json.loads(mj.read_text())
        m = meta["metrics"]
        for h in m["history"]:
            rows.append({"model": mj.parent.name, "epoch": h["epoch"], "robust_check": h.get("robust_accuracy"),
                         "clean_check": h.get("check_clean_accuracy"), "train_accuracy": h["train_accuracy"],
                         "seconds": h["seconds"], "threads": meta.get("provenance", {}).get("torch_threads")})
    return pd.DataFrame(rows)


def curves_figure(hist: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    colours = {"resnet_tiny": "#d62728", "lrnet_tiny": "#1f77b4", "resnet_tiny_glore": "#2ca02c",
               "resnet_tiny_cnl": "#9467bd", "resnet_tiny_mssar": "#8c564b", "lrnet_tiny-warm4": "#17becf",
               "lrnet_tiny-lr1e-3": "#bcbd22", "lrnet_tiny-convstem": "#e377c2",
               "resnet_tiny-warm4": "#ff7f0e"}
    for i, (key, title) in enumerate([("robust_check", "PGD-10 robust accuracy at eps 0.3 (held-out check)"),
                                      ("clean_check", "clean accuracy (same held-out check)")]):
        ax = fig.add_subplot(1, 2, i + 1)
        for model, g in hist.groupby("model", sort=True):
            fam, method, seed = parse_label(model)
            ax.plot(g["epoch"], 100 * g[key], color=colours.get(fam, "grey"),
                    ls={"pgd": "-", "trades": "--"}.get(method, ":"), marker="o" if seed == 0 else "s", ms=3,
                    label=f"{fam} {method} s{seed}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if i == 1:
            ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.suptitle("Training on mnist5k, Linf eps 0.3 (solid: PGD-AT, dashed: TRADES; "
                 "eps ramp over epochs 1-2, -warm4: 1-4)", fontsize=10)
    return fig


def seed_means(meas: pd.DataFrame) -> pd.DataFrame:
    g = meas.groupby(["family_name", "method", "measurement"], sort=False)["accuracy"]
    out = g.agg(mean="mean", min="min", max="max", seeds="size").reset_index()
    return out


def _split_variant(family: str) -> tuple[str, str]:
    """'lrnet_tiny-warm4' -> ('lrnet_tiny', 'warm4'); 'lrnet_tiny' -> ('lrnet_tiny', '')."""
    base, _, var = family.partition("-")
    return base, var


def paired_lr_vs_resnet(root: Path) -> pd.DataFrame:
    """McNemar tests lrnet_tiny vs resnet_tiny, same method and seed, from the runs' paired tables."""
    p = load_runs([root / r for r in RUNS if (root / r / "paired.csv").is_file()]).paired
    if p.empty:
        return p
    rows = []
    for _, r in p.iterrows():
        a, b = parse_label(str(r["model_a"])), parse_label(str(r["model_b"]))
        (fa, va), (fb, vb) = _split_variant(a[0]), _split_variant(b[0])
        if {fa, fb} == {"lrnet_tiny", "resnet_tiny"} and va == vb and a[1:] == b[1:]:
            lr_first = fa == "lrnet_tiny"
            rows.append({"method": a[1] + (f" ({va})" if va else ""), "seed": a[2], "attack": r["attack"],
                         "eps": r["eps"], "n": r["n"],
                         "lrnet_correct": r["correct_a"] if lr_first else r["correct_b"],
                         "resnet_correct": r["correct_b"] if lr_first else r["correct_a"],
                         "lr_only": r["a_only"] if lr_first else r["b_only"],
                         "resnet_only": r["b_only"] if lr_first else r["a_only"], "mcnemar_p": r["mcnemar_p"]})
    return pd.DataFrame(rows).drop_duplicates(["method", "seed", "attack", "eps"])


def _pct(a: float) -> str:
    return "" if pd.isna(a) else f"{100 * a:.1f}"


def write_markdown(report: Path, meas: pd.DataFrame, hist: pd.DataFrame, paired: pd.DataFrame) -> str:
    eps = ("0.1", "0.2", "0.3")
    order = [m for m in ["clean", *[f"pgd {e}" for e in eps], *[f"pgd-random-target {e}" for e in eps],
                         *[f"{SUBSET} {e}" for e in eps], "autoattack 0.3", *[f"worst-case {e}" for e in eps],
                         *[f"worst-case-all {e}" for e in eps], "rotate 15", "rotate 30", "worst-of-k 30"]
             if m in set(meas["measurement"])]
    wide = meas.pivot(index="model", columns="measurement", values="accuracy")[order].map(_pct)
    best = hist.loc[hist.groupby("model")["robust_check"].idxmax(), ["model", "epoch"]].set_index("model")["epoch"]
    secs = hist.groupby("model")["seconds"].sum().round(0).astype(int)
    wide.insert(0, "best epoch", best)
    wide.insert(1, "train s", secs)
    means = seed_means(meas)
    means = means[means["measurement"].isin(order)]
    mean_wide = means.assign(cell=[f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" if s > 1 else f"{100 * m:.1f}"
                                   for m, lo, hi, s in zip(means["mean"], means["min"], means["max"], means["seeds"])])
    mean_wide = mean_wide.pivot(index=["family_name", "method"], columns="measurement", values="cell")[order]
    text = ["# Robust training on mnist5k: per-model results",
            "", "Accuracy (%) on the same N held-out digits (n in summary.csv). `train s`: training wall time "
            "on a shared 2-core machine (other jobs ran beside it; not a benchmark, see reports/benchmarks.md). "
            "Columns: clean; untargeted PGD-50; targeted PGD-50 (random wrong class); "
            f"`{SUBSET}`: the official AutoAttack's APGD-CE and APGD-T only (pyautoattack; at 0.1 and 0.2 only "
            "on the lrnet_tiny models and the resnet_tiny PGD-AT / TRADES models); `autoattack`: the "
            "full official standard AutoAttack (PGD-AT and TRADES, seed 0, of resnet_tiny and lrnet_tiny only); `worst-case`: per "
            "example over PGD-50 and targeted PGD-50; "
            "`worst-case-all`: per example over every attack that ran at that eps, the full AutoAttack included "
            "(so at 0.1 and 0.2 PGD-50 only for the GloRe, CNL, MS-SAR and resnet_tiny-warm4 models); "
            "rotate 15 / 30: rotation by exactly 15 / 30 degrees with a random sign per example, accuracy over 3 draws; "
            "`worst-of-k 30`: "
            "Engstrom's worst of 10 draws in +-30 degrees x +-3 px.", "",
            wide.reset_index().to_markdown(index=False), "",
            "## Means over training seeds [min, max]", "", mean_wide.reset_index().to_markdown(index=False), ""]
    if not paired.empty:
        key = paired[(paired["attack"] == "clean") | ((paired["attack"] == "worst-case-all") & (paired["eps"] > 0))]
        key = key.sort_values(["method", "seed", "attack", "eps"])
        text += ["## lrnet_tiny vs resnet_tiny, paired (same method, seed and examples; exact McNemar)", "",
                 "Clean accuracy and the per-example worst case over every attack (worst-case-all; every attack and eps: "
                 "paired_lr_vs_resnet.csv).", "", key.to_markdown(index=False, floatfmt=".3g"), ""]
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("report")
    args = ap.parse_args()
    root, report = Path(args.out), Path(args.report)
    report.mkdir(parents=True, exist_ok=True)
    meas, hist, paired = measurements(root), training_history(root), paired_lr_vs_resnet(root)
    per = worst_all_per_example(root)
    worst = overall_worst_case(per)
    if not worst.empty:
        meas = pd.concat([meas, worst[meas.columns]], ignore_index=True)
    paired = pd.concat([paired, paired_worst_all(per)], ignore_index=True)
    meas.to_csv(report / "summary.csv", index=False)
    paired.to_csv(report / "paired_lr_vs_resnet.csv", index=False)
    hist.to_csv(report / "training_history.csv", index=False)
    fig = curves_figure(hist)
    fig.savefig(report / "training_curves.png", dpi=120)
    write_run(root / "training", collect([]), {"command": "python analyses/robust_training_summary.py " + args.out})
    write_figures(root / "training", [{"file": "training_curves.png", "title": "Robust training curves",
                                       "caption": "Per epoch: PGD-10 robust accuracy at eps 0.3 and clean accuracy "
                                                  "on the 500-digit held-out check used to keep the best epoch.",
                                       "figure": curves_figure(hist)}])
    (report / "summary.md").write_text(write_markdown(report, meas, hist, paired))
    print((report / "summary.md").read_text())


if __name__ == "__main__":
    main()
