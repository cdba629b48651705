"""Input-gradient norms of the fragility ablation's models, and the summary table over seeds.

    python analyses/lr_fragility_figures.py runs/analyses/lr_fragility --n 500

Reads OUT/checkpoints/<variant>_s<seed> and the run directories OUT/s<seed>/{pgd_all,pgd_background,
pgd_foreground,offset}; writes
- OUT/gradients/: a run directory (results.csv with one 'diagnostic' row per model and gradient statistic, and
  figures/ with the gradient-norm figure) that `robustbench-lr report` takes like any other;
- OUT/summary.csv and OUT/summary.md: per variant and measurement, the mean accuracy over training seeds with
  its range (the seeds' values are in the CSV).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from robustbench_lr.attacks import prepare_for_attack
from robustbench_lr.results import collect, load_runs, write_figures, write_run
from robustbench_lr.results.table import Row, model_columns
from robustbench_lr.runners.common import checkpoint_sources, load_eval_set

ORDER = ["conv", "lr", "lr_convstem", "lr_fixed", "lr_temp4", "lr_zeros"]


def variant(label: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+)_s(\d+)", label)
    return (m.group(1), int(m.group(2))) if m else (label, 0)


def gradient_rows(root: Path, n: int) -> tuple[list[Row], pd.DataFrame]:
    """Per model: mean L1 / L2 norm of d CE / d x over the n digits, and the share of |grad| on the background."""
    dirs = sorted(p for p in (root / "checkpoints").iterdir() if (p / "model.json").is_file())
    srcs = checkpoint_sources([str(d) for d in dirs])
    es = load_eval_set(srcs, None, None, n)
    rows, stats = [], []
    for src in srcs:
        model = prepare_for_attack(src.load(torch.device("cpu")))
        x = es.x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), es.y, reduction="sum"), x)
        g = g.flatten(1)
        background = (es.x.flatten(1) == 0)
        share = float(((g.abs() * background).sum(1) / g.abs().sum(1).clamp_min(1e-30)).mean())
        v, s = variant(src.label)
        stat = {"variant": v, "seed": s, "l1": float(g.abs().sum(1).mean()), "l2": float(g.norm(dim=1).mean()),
                "background_share": share}
        stats.append(stat)
        for key in ("l1", "l2", "background_share"):
            rows.append(Row("results", {**model_columns(src.label, src.path, src.meta), "family": "diagnostic",
                                        "perturbation": "input_gradient", "param_name": key, "param_value": 0.0,
                                        "value": stat[key], "n_examples": n}))
    return rows, pd.DataFrame(stats)


def gradient_figure(stats: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    order = [v for v in ORDER if v in set(stats["variant"])] + sorted(set(stats["variant"]) - set(ORDER))
    for i, (key, label) in enumerate([("l1", "mean ||grad_x CE||_1 (per image)"),
                                      ("background_share", "share of |grad| on background pixels")]):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, v in enumerate(order):
            vals = stats.loc[stats["variant"] == v, key].to_numpy()
            ax.bar(j, vals.mean(), color="#1f77b4" if v != "conv" else "#d62728", alpha=0.6)
            ax.plot(np.full(len(vals), j), vals, "k.", ms=6)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=9)
        ax.set_ylabel(label, fontsize=9)
        if key == "l1":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Input-gradient norms on the same held-out digits (bars: mean over seeds; dots: seeds)", fontsize=10)
    return fig


def summary(root: Path) -> pd.DataFrame:
    """Mean accuracy over seeds per (variant, measurement)."""
    dirs = sorted(p for p in root.glob("s*/*") if (p / "results.csv").is_file())
    r = load_runs(dirs).results
    r = r[r["family"].isin(["clean", "linf", "deform"])].copy()
    r["variant"] = [variant(m)[0] for m in r["model"]]
    r["seed"] = [variant(m)[1] for m in r["model"]]
    r["measurement"] = np.where(r["family"] == "clean", "clean", r["perturbation"] + " " + r["param_value"].map(
        lambda v: f"{v:g}"))
    r = r[(r["family"] == "clean") | (r["param_value"] > 0)].drop_duplicates(["variant", "seed", "measurement"])
    g = r.groupby(["variant", "measurement"], sort=False)["accuracy"]
    out = g.agg(mean="mean", min="min", max="max", seeds="size").reset_index()
    out["per_seed"] = g.apply(lambda a: ",".join(f"{v:.3f}" for v in a)).to_numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    root = Path(args.out)
    rows, stats = gradient_rows(root, args.n)
    write_run(root / "gradients", collect(rows), {"command": "python analyses/lr_fragility_figures.py " + args.out})
    write_figures(root / "gradients", [{"file": "input_gradients.png", "title": "Input-gradient norms",
                                        "caption": "Mean L1 norm of the input gradient of the cross-entropy per "
                                                   "image (log scale) and its share on background pixels (clean "
                                                   f"value 0), on the first {args.n} held-out digits.",
                                        "figure": gradient_figure(stats)}])
    s = summary(root)
    s.to_csv(root / "summary.csv", index=False)
    wide = s.assign(cell=[f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" for a, lo, hi in
                          zip(s["mean"], s["min"], s["max"])]).pivot(index="variant", columns="measurement",
                                                                     values="cell")
    grads = stats.groupby("variant")[["l1", "background_share"]].mean()
    wide = wide.join(grads.rename(columns={"l1": "grad L1", "background_share": "grad on background"}))
    (root / "summary.md").write_text("Mean accuracy (%) over training seeds [min, max]; input-gradient statistics "
                                     "averaged over seeds.\n\n" + wide.reset_index().to_markdown(index=False) + "\n")
    print(wide.to_string())


if __name__ == "__main__":
    main()
