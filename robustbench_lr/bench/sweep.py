"""Benchmark: an eps sweep with early stopping against independent runs at each eps.

    python -m robustbench_lr.bench sweep --checkpoint runs/floor_lr --checkpoint runs/floor_conv \\
        --eps 0,0.05,0.1,0.2,0.3 --steps 20 --n 1000

For every checkpoint it runs PGD once as a sweep (ascending eps, only still-robust examples attacked, every
example dropped as soon as it is fooled) and compares it, on the same examples, with two kinds of independent
runs at every eps (all clean-correct examples, a fresh run per eps):
    plain   torchattacks' PGD as a user would run it: every step for every example (early stop off);
    indep   the same StreamingPGD as the sweep, with per-example early stop, but a fresh run per eps.
`plain` is the baseline the suite is measured against (the sweep must cost >= 3x fewer gradient evaluations);
`indep` isolates what the ascending-eps bookkeeping alone saves. Per eps it prints the robust accuracies with
95% intervals, the exact McNemar test of "sweep robust, other not" vs the reverse (the sweep must never be
higher beyond noise) and the gradient evaluations of each.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

import pandas as pd
import torch

from ..attacks.registry import AttackSpec
from ..attacks import parse_eps, prepare_for_attack
from ..results.stats import clopper_pearson, mcnemar_exact
from ..runners.common import checkpoint_sources, load_eval_set
from ..runners.eps_sweep import SweepState, run_sweep
from ._timing import environment

log = logging.getLogger(__name__)


def bench_sweep(checkpoint: str, eps: list[float], steps: int, n: int, batch_size: int, device: torch.device,
                seed: int = 0, early_stop: bool = True, norm: str = "linf") -> pd.DataFrame:
    es = load_eval_set(checkpoint_sources([checkpoint]), None, None, n)
    model = prepare_for_attack(es.sources[0].load(device))
    spec = AttackSpec("pgd", norm=norm, steps=steps, early_stop=early_stop)
    kw = dict(num_classes=es.num_classes, seed=seed, batch_size=batch_size, device=device)
    sw = run_sweep(model, es.x, es.y, spec, eps, **kw)
    others = {"indep": spec}
    if early_stop:
        others["plain"] = replace(spec, early_stop=False)
    rows = []
    for r in sw.rows:
        e = r["eps"]
        a = sw.correct_at(e)
        lo_s, hi_s = clopper_pearson(int(a.sum()), n)
        row = {"model": es.labels[0], "eps": e, "sweep_acc": a.mean(), "sweep_ci": f"[{lo_s:.3f}, {hi_s:.3f}]",
               "sweep_grad_evals": r["grad_evals"]}
        for key, sp in others.items():
            # an independent run attacks every clean-correct example at this eps (eps = 0 needs no attack)
            ind = run_sweep(model, es.x, es.y, sp, [e], state=SweepState.fresh(sw.clean_correct), **kw)
            b = ind.correct_at(e)
            lo_i, hi_i = clopper_pearson(int(b.sum()), n)
            only_sweep, only_ind = int((a & ~b).sum()), int((~a & b).sum())
            row.update({f"{key}_acc": b.mean(), f"{key}_ci": f"[{lo_i:.3f}, {hi_i:.3f}]",
                        f"sweep_only_vs_{key}": only_sweep, f"{key}_only": only_ind,
                        f"mcnemar_p_{key}": mcnemar_exact(only_sweep, only_ind),
                        f"{key}_grad_evals": ind.rows[0]["grad_evals"]})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustbench_lr.bench sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", required=True)
    ap.add_argument("--eps", default=None, help="default: the dataset's eps sweep (attacks.threat.EPS_DEFAULTS)")
    ap.add_argument("--norm", default="linf")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-early-stop", action="store_true", help="torchattacks' PGD (every step for every example)")
    args = ap.parse_args(argv)
    from ..utils import resolve_device

    device = resolve_device(args.device)
    if args.eps is None:
        from ..attacks.threat import default_eps

        eps = default_eps(checkpoint_sources(args.checkpoint[:1])[0].meta["dataset"]["name"], args.norm)
    else:
        eps = parse_eps(args.eps)
    print("# eps sweep vs independent runs: " + ", ".join(f"{k}={v}" for k, v in environment(device).items()))
    print(f"# PGD-{args.steps} {args.norm}, step 2.5*eps/steps, random start, early stop "
          f"{'off (torchattacks)' if args.no_early_stop else 'on (StreamingPGD)'}; n={args.n}; eps={eps}")
    for ck in args.checkpoint:
        df = bench_sweep(ck, eps, args.steps, args.n, args.batch_size, device, early_stop=not args.no_early_stop,
                         norm=args.norm)
        with pd.option_context("display.width", 320, "display.max_columns", 40):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        tot_s = int(df["sweep_grad_evals"].sum())
        for key, what in (("plain", "torchattacks-style runs (no early stop)"),
                          ("indep", "runs with per-example early stop")):
            if f"{key}_grad_evals" not in df:
                continue
            tot = int(df[f"{key}_grad_evals"].sum())
            higher = df[(df[f"sweep_only_vs_{key}"] > df[f"{key}_only"]) & (df[f"mcnemar_p_{key}"] < 0.05)]
            print(f"{df['model'].iloc[0]}: gradient evaluations sweep {tot_s} vs {len(eps)} independent {what} "
                  f"{tot}: {tot / max(1, tot_s):.2f}x fewer; sweep accuracy significantly above theirs at "
                  f"{len(higher)} of {len(df)} eps (exact McNemar, p < 0.05)")
        print()
    return 0
