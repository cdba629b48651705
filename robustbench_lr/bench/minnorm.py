"""Benchmark: one minimal-norm attack (FMN, Linf) against the early-stopped PGD sweep, for a whole eps curve.

    python -m robustbench_lr.bench minnorm --checkpoint runs/floor_lr --checkpoint runs/floor_conv \\
        [--eps 0,0.05,0.1,0.2,0.3] [--n 1000] [--fmn-steps 1000] [--pgd-steps 20] [--batch-size 250] \\
        [--device auto] [--csv FILE]
    python -m robustbench_lr.bench minnorm --fresh resnet_tiny --n 16 --fmn-steps 20 --pgd-steps 5   # smoke run

Papers: Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm Constraints", NeurIPS 2021
(FMN, adv-lib's implementation); Madry et al. 2018 (PGD). Issue 13 asks what the curve costs each way.

Status: measures, changes nothing. For every model, on the same n test examples (the fixed evaluation subset):
    fmn   adv-lib's FMN-Linf run once (`attacks.registry.run_minimal_norm`, --fmn-steps, default 1000,
          AttackBench's); an example is robust at eps iff its smallest adversarial norm found is > eps;
    pgd   the suite's eps sweep (`runners.eps_sweep.run_sweep`): StreamingPGD-`--pgd-steps` (default 20) over the
          eps in ascending order, attacking only the still-robust examples, each dropped as soon as it is fooled.
Per eps it reports both robust accuracies with 95% Clopper-Pearson intervals and their paired agreement on the
same examples (the fraction with the same verdict, the examples robust under one attack only, and the exact
McNemar p of those two counts). Per model it reports each attack's cost: gradient evaluations (backward passes
through the model, per example) and forward passes, as counted by `attacks.counting.CountingModel` (clean
predictions and the fp32 re-check forwards excluded for both), and wall time (one run each, after a warm-up
forward and backward; FMN runs first). `--fresh NAME` evaluates an untrained zoo model on mnist5k instead of a
checkpoint: for a smoke run only (its numbers mean nothing). The eps default is the dataset's sweep
(`attacks.threat.EPS_DEFAULTS`: five values on mnist5k and cifar10, eps 0 included, which costs nothing).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..attacks import default_eps, parse_eps, prepare_for_attack
from ..attacks.registry import AttackSpec, run_minimal_norm
from ..results.stats import clopper_pearson, mcnemar_exact
from ..runners.common import ModelSource, checkpoint_sources, load_eval_set
from ..runners.eps_sweep import run_sweep
from ._timing import _sync, environment

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """One model's comparison: `curve` has one row per eps, `cost` one dict of counts and seconds."""

    curve: pd.DataFrame
    cost: dict[str, float | int | str]


def _warm_up(model: nn.Module, x: Tensor, device: torch.device) -> None:
    """Import adv-lib and make one forward and input-gradient pass, so neither attack's time includes a one-off
    set-up (adv-lib's import takes seconds; CUDA context, cuDNN autotuning)."""
    import adv_lib.attacks  # noqa: F401

    xb = x.to(device).clone().requires_grad_(True)
    with torch.enable_grad():
        model(xb).sum().backward()
    _sync(device)


def agreement_rows(model: str, eps: list[float], fmn_robust: dict[float, np.ndarray],
                   pgd_robust: dict[float, np.ndarray]) -> pd.DataFrame:
    """Per eps: both robust accuracies (fractions of all n) with 95% intervals, and their paired agreement."""
    rows = []
    for e in eps:
        a, b = fmn_robust[e], pgd_robust[e]
        n = len(a)
        fmn_only, pgd_only = int((a & ~b).sum()), int((~a & b).sum())
        (fl, fh), (pl, ph) = clopper_pearson(int(a.sum()), n), clopper_pearson(int(b.sum()), n)
        rows.append({"model": model, "eps": float(e), "n": n, "fmn_acc": float(a.mean()), "fmn_ci_low": fl,
                     "fmn_ci_high": fh, "pgd_acc": float(b.mean()), "pgd_ci_low": pl, "pgd_ci_high": ph,
                     "agree": float((a == b).mean()), "fmn_only_robust": fmn_only, "pgd_only_robust": pgd_only,
                     "mcnemar_p": mcnemar_exact(fmn_only, pgd_only)})
    return pd.DataFrame(rows)


def compare(label: str, model: nn.Module, x: Tensor, y: Tensor, num_classes: int, eps: list[float], *,
            fmn_steps: int, pgd_steps: int, batch_size: int, device: torch.device, seed: int = 0) -> Comparison:
    """FMN-Linf once and the PGD eps sweep on (x, y); `model` prepared with `prepare_for_attack`."""
    eps = sorted(float(e) for e in eps)
    _warm_up(model, x[:batch_size], device)
    t0 = time.perf_counter()
    fmn = run_minimal_norm(AttackSpec("fmn", norm="linf", steps=fmn_steps), model, x, y, batch_size=batch_size,
                           device=device, seed=seed)
    _sync(device)
    t_fmn = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep = run_sweep(model, x, y, AttackSpec("pgd", norm="linf", steps=pgd_steps), eps, num_classes=num_classes,
                      seed=seed, batch_size=batch_size, device=device)
    _sync(device)
    t_pgd = time.perf_counter() - t0
    curve = agreement_rows(label, eps, {e: fmn.robust_at(e) for e in eps}, {e: sweep.correct_at(e) for e in eps})
    pgd_grads = int(sum(r["grad_evals"] for r in sweep.rows))
    cost = {"model": label, "n": len(y), "n_eps": len(eps), "fmn_steps": fmn_steps, "fmn_grad_evals": fmn.grad_evals,
            "fmn_forwards": fmn.forwards, "fmn_seconds": t_fmn, "pgd_steps": pgd_steps, "pgd_grad_evals": pgd_grads,
            "pgd_forwards": int(sum(r["forward_evals"] for r in sweep.rows)), "pgd_seconds": t_pgd,
            "grad_ratio_fmn_over_pgd": fmn.grad_evals / max(1, pgd_grads)}
    return Comparison(curve, cost)


def fresh_source(name: str, seed: int = 0) -> ModelSource:
    """An untrained zoo model on mnist5k as a model of the benchmark (smoke runs: its numbers mean nothing)."""
    from ..models import create_model
    from ..runners.common import dataset_description
    from ..runners.external import module_source

    torch.manual_seed(seed)
    model = create_model(name).eval()
    meta, probe = dataset_description("mnist5k", None)
    return module_source(model, f"{name}-untrained", meta, probe, factory=f"untrained {name}")


def curve_display(curve: pd.DataFrame) -> pd.DataFrame:
    """The per-eps rows for reading: accuracies in % with their 95% intervals."""
    def pct(acc: pd.Series, lo: pd.Series, hi: pd.Series) -> list[str]:
        return [f"{100 * a:.1f} [{100 * l:.1f}, {100 * h:.1f}]" for a, l, h in zip(acc, lo, hi)]

    return pd.DataFrame({"model": curve["model"], "eps": curve["eps"], "n": curve["n"],
                         "FMN robust % [95% CI]": pct(curve["fmn_acc"], curve["fmn_ci_low"], curve["fmn_ci_high"]),
                         "PGD robust % [95% CI]": pct(curve["pgd_acc"], curve["pgd_ci_low"], curve["pgd_ci_high"]),
                         "agree %": (100 * curve["agree"]).round(1), "robust only under FMN": curve["fmn_only_robust"],
                         "robust only under PGD": curve["pgd_only_robust"], "McNemar p": curve["mcnemar_p"]})


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (floats to 4 significant digits)."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def run(sources: list[ModelSource], eps: list[float] | None, n: int, fmn_steps: int, pgd_steps: int,
        batch_size: int, device: torch.device, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-eps curve rows, per-model cost rows) of every model, each on the same n examples of its dataset."""
    curves, costs = [], []
    for src in sources:
        es = load_eval_set([src], None, None, n)
        model_eps = eps if eps is not None else default_eps(es.dataset, "linf")
        model = prepare_for_attack(src.load(device))
        log.info("%s: FMN-%d once and PGD-%d over eps %s on %d examples", src.label, fmn_steps, pgd_steps,
                 model_eps, n)
        c = compare(src.label, model, es.x, es.y, es.num_classes, model_eps, fmn_steps=fmn_steps,
                    pgd_steps=pgd_steps, batch_size=batch_size, device=device, seed=seed)
        curves.append(c.curve)
        costs.append(c.cost)
    return pd.concat(curves, ignore_index=True), pd.DataFrame(costs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench minnorm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="DIR", help="a checkpoint (repeatable)")
    ap.add_argument("--fresh", action="append", default=[], metavar="MODEL",
                    help="an untrained zoo model on mnist5k, e.g. resnet_tiny (smoke runs; repeatable)")
    ap.add_argument("--eps", default=None, help="comma list (default: the dataset's eps sweep)")
    ap.add_argument("--n", type=int, default=1000, help="test examples (the fixed evaluation subset)")
    ap.add_argument("--fmn-steps", type=int, default=1000, help="FMN iterations (default 1000, AttackBench's)")
    ap.add_argument("--pgd-steps", type=int, default=20, help="PGD iterations per eps (default 20)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--csv", default=None, help="also write the per-eps rows, with each model's costs, here")
    args = ap.parse_args(argv)
    from ..utils import resolve_device

    device = resolve_device(args.device)
    sources = checkpoint_sources(args.checkpoint) + [fresh_source(m, args.seed) for m in args.fresh]
    if not sources:
        ap.error("give at least one --checkpoint DIR or --fresh MODEL")
    curve, cost = run(sources, parse_eps(args.eps) if args.eps else None, args.n, args.fmn_steps, args.pgd_steps,
                      args.batch_size, device, args.seed)
    print("# FMN-Linf once vs the early-stopped PGD sweep: " + ", ".join(f"{k}={v}" for k, v in
                                                                         environment(device).items()))
    print(f"# n={args.n}, FMN {args.fmn_steps} steps, PGD {args.pgd_steps} steps per eps, seed {args.seed}\n")
    print("## Robust accuracy per eps, and agreement on the same examples\n")
    print(markdown(curve_display(curve)) + "\n")
    print("## Cost per model (gradient evaluations and forwards per example, summed; seconds of one run)\n")
    print(markdown(cost))
    if args.csv:
        from ..utils import write_csv_atomic

        write_csv_atomic(curve.merge(cost.drop(columns=["n"]), on="model"), args.csv)
    return 0


__all__ = ["Comparison", "agreement_rows", "compare", "curve_display", "fresh_source", "main", "markdown", "run"]
