"""`robustbench-lr sweep deform|kernel-size`: deformation sweeps, and kernel-size sweeps that train as they go.

    robustbench-lr sweep deform --checkpoint runs/lr7 --checkpoint runs/conv3 --deform rotate \\
        --strengths 0,10,20,30 --draws 5 --out runs/rot
    robustbench-lr sweep kernel-size --model lrnet_tiny --model resnet_tiny --kernel-sizes 3,5,7,9 \\
        --dataset mnist5k --epochs 15 --seeds 0,1,2 --attack pgd --eps 0,0.05,0.1 \\
        --deform rotate=0,15,30 --out runs/ks

A deformation is NAME or NAME=s1,s2,... (its own strengths); --strengths applies to the names without their own.
Random deformations: rotate (degrees), translate (pixels), scale (factor), elastic (alpha, pixels); spatial attacks:
worst-of-k, grid, affine-pgd (max rotation in degrees, translation 0.1 px per degree) and flow (max flow, pixels).

The kernel-size sweep trains each (model, k, seed) into OUT/checkpoints/<model>_k<k>_s<seed> (a finished
checkpoint is reused, an unfinished one resumed), evaluates all models of a seed together on the same examples
(so models are compared with paired tests), and writes one table with a kernel_size column, plus summary.csv
with the mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..utils import write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_STRENGTHS = {"rotate": "0,10,20,30", "translate": "0,1,2,3", "scale": "1,0.9,0.8,1.1,1.2",
                     "elastic": "0,1,2,4", "worst-of-k": "10,20,30", "grid": "10,20,30", "affine-pgd": "10,20,30",
                     "flow": "0.25,0.5,1"}


def parse_deforms(items: list[str], strengths: str | None, draws: int, options: list[str]) -> list[Any]:
    """['rotate', 'grid=10,30'] -> DeformRequests (own strengths, else --strengths, else the defaults)."""
    from ..evaluate import parse_eps
    from ..evaluate_deform import DeformRequest
    from .train import parse_model_args

    opts = parse_model_args(options)
    out = []
    for item in items:
        name, _, own = item.partition("=")
        name = name.strip()
        text = own or strengths or DEFAULT_STRENGTHS.get(name)
        if text is None:
            DeformRequest(name, [1.0]).validate()  # raises the unknown-name error with suggestions
            raise UserError(f"give --strengths for {name!r}.")
        req = DeformRequest(name, parse_eps(text) if "/" in text else _floats(text), draws, dict(opts))
        req.validate()
        out.append(req)
    return out


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot parse strengths {text!r}; give numbers separated by commas.") from None


def _write_eval(out: Path, ev: Any, command: str, extra: dict[str, Any] | None = None) -> None:
    from ..checkpoint import package_versions

    write_csv_atomic(ev.results, out / "results.csv")
    write_csv_atomic(ev.paired, out / "paired.csv")
    write_csv_atomic(ev.hygiene, out / "hygiene.csv")
    write_csv_atomic(ev.outcomes, out / "outcomes.csv")
    write_json_atomic(out / "run.json", {"command": command, **ev.meta, "versions": package_versions(),
                                         **(extra or {})})


def run_deform(args: argparse.Namespace) -> int:
    from ..evaluate_deform import run_deformations
    from .evaluate import FileStore

    if not args.checkpoint:
        raise UserError("give at least one --checkpoint DIR.")
    requests = parse_deforms(args.deform, args.strengths, args.draws, args.option)
    out = Path(args.out)
    t0 = time.perf_counter()
    ev = run_deformations(list(args.checkpoint), requests, n=args.n, seed=args.seed, batch_size=args.batch_size,
                          device=args.device, dataset=args.dataset, data_root=args.data_root,
                          store=FileStore(out / "state"), progress=not args.quiet)
    _write_eval(out, ev, args.command_line, {"seconds": time.perf_counter() - t0})
    r = ev.results
    table = r.pivot_table(index="model", columns=[r["perturbation"], r["param_value"]], values="accuracy",
                          aggfunc="first", sort=False)
    with pd.option_context("display.width", 160):
        print("accuracy (%) under deformations, same examples for every model:")
        print((100 * table).round(1).to_string())
    print(f"\nwrote {out}/results.csv, paired.csv, outcomes.csv, run.json")
    return 0


def run_kernel_size(args: argparse.Namespace) -> int:
    from ..attacks.threat import validate_eps
    from ..evaluate import EvalConfig, parse_eps, run_evaluation
    from ..evaluate_deform import run_deformations
    from ..models import model_info
    from ..results import finalize
    from ..train import TrainConfig, fit
    from .evaluate import DEFAULT_EPS, FileStore
    from .train import model_kwargs_from

    if not args.model:
        raise UserError("give at least one --model.")
    for m in args.model:
        model_info(m)
    ks = [int(k) for k in _floats(args.kernel_sizes)] if args.kernel_sizes else []
    for k in ks:
        if k < 1 or k % 2 == 0:
            raise UserError(f"--kernel-sizes: kernel sizes must be odd integers >= 1; got {k}.")
    if not ks:
        raise UserError("give --kernel-sizes, e.g. 3,5,7,9.")
    seeds = [int(s) for s in _floats(args.seeds)]
    requests = parse_deforms(args.deform, args.strengths, args.draws, args.option) if args.deform else []
    attacks = list(args.attack or [])
    eps_text = args.eps or DEFAULT_EPS.get((args.dataset, args.norm))
    eval_cfg = dict(attacks=attacks, norm=args.norm, eps=parse_eps(eps_text) if attacks else [0.0], steps=args.steps,
                    n=args.n, batch_size=args.batch_size, seed=args.eval_seed, dataset=args.dataset,
                    data_root=args.data_root, device=args.device, hygiene=not args.no_hygiene, n_check=args.check_n)
    if attacks:  # validate attacks and eps before any training
        specs = EvalConfig(checkpoints=["-"], **eval_cfg).specs()
        validate_eps(eval_cfg["eps"], specs[0].norm, model_info(args.model[0]).input_size)
    train_kw = model_kwargs_from(args)
    out = Path(args.out)
    t0 = time.perf_counter()
    by_seed: dict[int, list[str]] = {}
    jobs = [(m, k, s) for s in seeds for m in args.model for k in ks]
    for i, (m, k, s) in enumerate(jobs, 1):
        ck = out / "checkpoints" / f"{m}_k{k}_s{s}"
        cfg = TrainConfig(model=m, dataset=args.dataset, epochs=args.epochs, batch_size=args.train_batch_size,
                          lr=args.lr, optimizer=args.optimizer, seed=s, kernel_size=k, model_kwargs=dict(train_kw),
                          data_root=args.data_root, train_limit=args.train_limit, device=args.device)
        print(f"[{i}/{len(jobs)}] {m} k={k} seed={s} -> {ck}", flush=True)
        fit(cfg, ck, resume=True, progress=not args.quiet)
        by_seed.setdefault(s, []).append(str(ck))
    frames, paired, hyg, outc = [], [], [], []
    store = FileStore(out / "state")
    for s, cks in by_seed.items():
        if attacks:
            ev = run_evaluation(EvalConfig(checkpoints=cks, **eval_cfg), store=store, progress=not args.quiet)
        else:  # clean accuracy only: an eps of 0 costs no attack
            ev = run_evaluation(EvalConfig(checkpoints=cks, **{**eval_cfg, "attacks": ["fgsm"], "eps": [0.0],
                                                               "hygiene": False}), store=store)
            ev.results = ev.results[ev.results["attack"] == "clean"]
        frames.append(ev.results)
        paired.append(ev.paired.assign(train_seed=s))
        hyg.append(ev.hygiene)
        outc.append(ev.outcomes)
        if requests:
            dv = run_deformations(cks, requests, n=args.n, seed=args.eval_seed, batch_size=args.batch_size,
                                  device=args.device, dataset=args.dataset, data_root=args.data_root, store=store,
                                  progress=not args.quiet)
            frames.append(dv.results)
            paired.append(dv.paired.assign(train_seed=s))
            outc.append(dv.outcomes)
    cat = lambda fs: pd.concat([f for f in fs if f is not None and not f.empty], ignore_index=True) \
        if any(f is not None and not f.empty for f in fs) else pd.DataFrame()  # noqa: E731
    results = finalize(cat(frames))
    summary = kernel_summary(results)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(results, out / "results.csv")
    write_csv_atomic(cat(paired), out / "paired.csv")
    write_csv_atomic(cat(hyg), out / "hygiene.csv")
    write_csv_atomic(cat(outc), out / "outcomes.csv")
    write_csv_atomic(summary, out / "summary.csv")
    from ..checkpoint import package_versions

    write_json_atomic(out / "run.json", {
        "command": args.command_line, "models": args.model, "kernel_sizes": ks, "seeds": seeds,
        "dataset": args.dataset, "epochs": args.epochs, "config": {**eval_cfg, "seed": args.eval_seed},
        "deformations": [r.__dict__ for r in requests], "versions": package_versions(),
        "seconds": time.perf_counter() - t0, "split": "test"})
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print("\nmean accuracy (%) over seeds [min, max]:")
        print(summary_display(summary).to_string(index=False))
    print(f"\nwrote {out}/results.csv (one row per model, k, seed and perturbation), summary.csv, paired.csv")
    return 0


def kernel_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, min and max over training seeds per (model, k, perturbation, strength)."""
    r = results[results["family"] != "drift"]
    g = r.groupby(["model_name", "kernel_size", "family", "perturbation", "param_name", "param_value"], sort=False)
    return g["accuracy"].agg(mean="mean", sd="std", min="min", max="max", seeds="size").reset_index()


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    s["cell"] = s["perturbation"] + "@" + s["param_value"].map(lambda v: f"{v:g}")
    s.loc[s["family"] == "clean", "cell"] = "clean"
    s["value"] = [f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" for a, lo, hi in zip(s["mean"], s["min"], s["max"])]
    wide = s.pivot_table(index=["model_name", "kernel_size"], columns="cell", values="value", aggfunc="first",
                         sort=False).reset_index()
    return wide


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="deformation sweeps and kernel-size sweeps", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="sweep_kind", metavar="KIND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--deform", action="append", default=[], metavar="NAME[=S1,S2]",
                       help="deformation or spatial attack (repeatable)")
        q.add_argument("--strengths", default=None, help="strengths for deformations without their own")
        q.add_argument("--draws", type=int, default=5, help="random draws per strength")
        q.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="a deformation option (e.g. k=10, sigma=4, steps=20)")
        q.add_argument("--n-examples", "--n", dest="n", type=int, default=1000, help="test examples (fixed subset)")
        q.add_argument("--batch-size", type=int, default=256)
        q.add_argument("--dataset", default=None)
        q.add_argument("--data-root", default=None)
        q.add_argument("--device", default="auto")
        q.add_argument("--out", required=True)
        q.add_argument("--quiet", action="store_true")

    d = ss.add_parser("deform", help="accuracy under deformations and spatial attacks",
                      description="Example: robustbench-lr sweep deform --checkpoint runs/lr7 --deform rotate "
                                  "--strengths 0,10,20,30 --draws 5 --out runs/rot")
    d.add_argument("--checkpoint", action="append", default=[], metavar="DIR")
    d.add_argument("--seed", type=int, default=0, help="seed of the random draws (the same for every model)")
    common(d)
    d.set_defaults(func=run_deform)

    k = ss.add_parser("kernel-size", help="train and evaluate models over kernel sizes and seeds")
    from .train import add_model_options

    k.add_argument("--model", action="append", default=[])
    k.add_argument("--kernel-sizes", default="3,5,7,9")
    k.add_argument("--seeds", default="0")
    k.add_argument("--epochs", type=int, default=15)
    k.add_argument("--train-batch-size", type=int, default=64)
    k.add_argument("--lr", type=float, default=None)
    k.add_argument("--optimizer", default="adamw")
    k.add_argument("--train-limit", type=int, default=None)
    k.add_argument("--attack", action="append", default=None)
    k.add_argument("--norm", default="linf")
    k.add_argument("--eps", default=None)
    k.add_argument("--steps", type=int, default=20)
    k.add_argument("--eval-seed", type=int, default=0, help="seed of attacks and deformation draws")
    k.add_argument("--no-hygiene", action="store_true")
    k.add_argument("--check-n", type=int, default=100)
    common(k)
    add_model_options(k, kernel_size=False)
    k.set_defaults(func=run_kernel_size, dataset="mnist5k")
