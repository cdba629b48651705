"""`robustbench-lr demo`: the main job, end to end on the embedded dataset (or real data with options).

1. trains an LR-Net (k=7) and its ResNet twin (k=3), or the `--model`s given (e.g. the five families:
   --model resnet_tiny --model lrnet_tiny --model resnet_tiny_glore --model resnet_tiny_cnl
   --model resnet_tiny_mssar), clean or with `--adversarial pgd|trades|fgsm-rs`; a finished checkpoint is reused,
   an unfinished one resumed;
2. runs FGSM and PGD eps sweeps with the hygiene checks, on the same test examples;
3. runs a random rotation sweep and the worst-of-k spatial attack (Engstrom et al.);
4. draws the pairwise weights, geometry priors, attention shift under attack and captum attributions of an
   example the attack fools (the same for every model where one exists), at the eps where the models differ
   most (`runners.figures.informative_eps`), and measures the attention drift of every LR layer;
5. writes OUT/report.pdf (and the tables next to it) and prints its path.

Every input is checked before the first model trains. Every stage saves its progress in OUT, so a re-run reuses
finished work. `--device cuda` and `--dataset cifar10 --data-root PATH` switch to real scale (lrnet26_cifar /
resnet26_cifar).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from ._common import add_adversarial_options, adversarial_kwargs, print_hygiene

PRESETS: dict[str, dict[str, Any]] = {
    "mnist5k": {"models": [("lrnet_tiny", 7), ("resnet_tiny", 3)], "epochs": 15, "rotate": (0, 10, 20, 30),
                "wok": (10, 20, 30), "width": None},
    "cifar10": {"models": [("lrnet26_cifar", 7), ("resnet26_cifar", 3)], "epochs": 30, "rotate": (0, 10, 20, 30),
                "wok": (10, 20, 30), "width": 0.5},
}


def _stage(msg: str) -> float:
    print(f"== {msg}", flush=True)
    return time.perf_counter()


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the demo will do, validated before any work (a bad input trains nothing)."""
    from ..attacks.threat import default_eps, validate_eps
    from ..models import model_info
    from ..results.rundir import checkpoint_dir
    from ..runners import DeformRequest, EvalConfig
    from ..runners.common import test_split_size
    from ..training import TrainConfig

    if args.dataset not in PRESETS and args.dataset != "imagefolder":
        raise UserError(f"--dataset {args.dataset!r}: the demo runs on {', '.join(PRESETS)} (or imagefolder).")
    preset = PRESETS.get(args.dataset, PRESETS["cifar10"])
    models = preset["models"]
    if args.model:
        for name in args.model:
            model_info(name)  # unknown names fail here, with close matches
        if len(set(args.model)) != len(args.model):
            raise UserError(f"--model: each model once, got {', '.join(args.model)}.")
        models = [(name, None) for name in args.model]  # each model at its own default kernel size
    width = args.width or preset["width"]
    jobs = []
    for name, k in models:
        tc = TrainConfig(model=name, dataset=args.dataset, epochs=args.epochs or preset["epochs"], kernel_size=k,
                         seed=args.seed, model_kwargs={"width": width} if width else {}, data_root=args.data_root,
                         download=args.download, device=args.device, train_limit=args.train_limit,
                         **adversarial_kwargs(args))
        tc.validate()
        jobs.append((name, k, tc, checkpoint_dir(args.out, f"{name}_k{k}" if k else name)))
    size = list(model_info(models[0][0]).input_size)
    n_split = test_split_size(args.dataset, args.data_root, size, 0)
    if args.n > n_split:
        raise UserError(f"--n {args.n} is larger than the {n_split} examples of the {args.dataset} test split.")
    eps = validate_eps(default_eps(args.dataset, "linf"), "linf", tuple(size))
    EvalConfig(attacks=("fgsm", "pgd"), steps=args.steps, n_check=args.check_n, batch_size=args.batch_size).specs()
    requests = (DeformRequest("rotate", preset["rotate"], draws=args.draws), DeformRequest("worst-of-k", preset["wok"]))
    for r in requests:
        r.validate()
    return {"jobs": jobs, "eps": eps, "requests": requests}


def run(args: argparse.Namespace) -> int:
    from ..results import check_out_dir, store_for
    from ..runners import checkpoint_sources

    plan = _plan(args)
    out = check_out_dir(args.out)
    t_all, store = time.perf_counter(), store_for(out)
    sources = checkpoint_sources(_train(args, plan["jobs"]))  # every model.json read once, for every stage
    ev, ev_meta = _evaluate(args, sources, plan["eps"], store)
    dv, dv_meta = _deform(args, sources, plan["requests"], store)
    t0 = _stage("4/5 pairwise weights, priors, attention shift, attributions")
    figs, drift = _figures(args, sources, ev, plan["eps"])
    print(f"   {len(figs)} figures, {time.perf_counter() - t0:.0f} s")
    meta = {"command": args.command_line, **ev_meta, "deformations": dv_meta["deformations"]}
    return _report(args, out, [ev, dv], drift, figs, meta, time.perf_counter() - t_all)


def _train(args: argparse.Namespace, jobs: list[tuple[str, Any, Any, Path]]) -> list[str]:
    from ..results.table import training_label
    from ..training import fit

    names = ", ".join(n for n, *_ in jobs)
    t0 = _stage(f"1/5 training {names} on {args.dataset} ({jobs[0][2].epochs} epochs, "
                f"{jobs[0][2].adversarial if jobs[0][2].is_adversarial else 'clean'})")
    checkpoints = []
    for name, k, tc, ck in jobs:
        meta = fit(tc, ck, resume=True, progress=not args.quiet)
        k = k or meta["model"]["kwargs"].get("kernel_size") or "default"
        print(f"   {name} (k={k}, {training_label(meta)}): held-out accuracy "
              f"{100 * meta['metrics']['test_accuracy']:.2f}%", flush=True)
        checkpoints.append(str(ck))
    print(f"   {time.perf_counter() - t0:.0f} s")
    return checkpoints


def _evaluate(args: argparse.Namespace, sources: list[Any], eps: list[float], store: Any
              ) -> tuple[Any, dict[str, Any]]:
    from ..results import collect
    from ..runners import EvalConfig, evaluation_rows, plan_evaluation

    t0 = _stage(f"2/5 FGSM and PGD sweeps on {args.n} test examples, with hygiene checks")
    plan = plan_evaluation(EvalConfig(checkpoints=tuple(s.path for s in sources), attacks=("fgsm", "pgd"),
                                      eps=tuple(eps), steps=args.steps, n=args.n, seed=args.seed, dataset=args.dataset,
                                      data_root=args.data_root, device=args.device, n_check=args.check_n,
                                      batch_size=args.batch_size), sources=sources)
    tables = collect(evaluation_rows(plan, store, progress=not args.quiet))
    print(f"   {time.perf_counter() - t0:.0f} s")
    return tables, plan.meta()


def _deform(args: argparse.Namespace, sources: list[Any], requests: Any, store: Any
            ) -> tuple[Any, dict[str, Any]]:
    from ..results import collect
    from ..runners import DeformConfig, deformation_rows, plan_deformations

    t0 = _stage("3/5 random rotations and the worst-of-k spatial attack")
    plan = plan_deformations(DeformConfig(checkpoints=tuple(s.path for s in sources), requests=tuple(requests),
                                          n=args.n, seed=args.seed, batch_size=args.batch_size, device=args.device,
                                          dataset=args.dataset, data_root=args.data_root), sources=sources)
    tables = collect(deformation_rows(plan, store, progress=not args.quiet))
    print(f"   {time.perf_counter() - t0:.0f} s")
    return tables, plan.meta()


def _figures(args: argparse.Namespace, sources: list[Any], ev: Any, eps_list: list[float]
             ) -> tuple[list[dict[str, Any]], list[Any]]:
    from ..runners.figures import FigureConfig, figure_items, informative_eps

    cfg = FigureConfig(checkpoints=tuple(s.path for s in sources), eps=informative_eps(ev.results, eps_list),
                       steps=args.steps, seed=args.seed, n=min(args.n, 64), index=args.index, dataset=args.dataset,
                       data_root=args.data_root, device=args.device)
    figs, rows = [], []
    for row in figure_items(cfg, sources=sources):
        (figs if row.table == "figure" else rows).append(row.values if row.table == "figure" else row)
    return figs, rows


def _report(args: argparse.Namespace, out: Path, parts: list[Any], drift: list[Any], figs: list[dict[str, Any]],
            meta: dict[str, Any], seconds: float) -> int:
    from ..report import build_report
    from ..results import collect, concat, write_figures, write_run
    from ..results.rundir import REPORT_PDF

    t0 = _stage("5/5 report")
    tables = concat([*parts, collect(drift)])
    write_figures(out, figs)
    write_run(out, tables, {**meta, "seconds": seconds})
    rep = build_report([out], out / REPORT_PDF)
    print(f"   {time.perf_counter() - t0:.0f} s")
    print_hygiene(tables.hygiene)
    print(f"\ndone in {seconds + time.perf_counter() - t0:.0f} s. Report: {rep['pdf']}")
    if rep["failed_checks"]:
        print(f"warning: {rep['failed_checks']} hygiene check(s) failed (page 1 of the report).")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: train, attack, deform, visualise, report (minutes on a CPU)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (embedded, default) | cifar10")
    p.add_argument("--model", action="append", default=None, metavar="NAME",
                   help="repeatable; models to compare at their default kernel sizes (default: lrnet_tiny k=7 and "
                        "resnet_tiny k=3 on mnist5k, lrnet26_cifar and resnet26_cifar on cifar10)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true", help="allow downloading CIFAR-10 into --data-root")
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=None, help="default: 15 (mnist5k), 30 (cifar10)")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (default: 0.5 for cifar10)")
    p.add_argument("--train-limit", type=int, default=None, help="train on a subset (quick runs)")
    p.add_argument("--n-examples", "--n", dest="n", type=int, default=1000, help="test examples attacked")
    p.add_argument("--steps", type=int, default=20, help="PGD steps")
    p.add_argument("--draws", type=int, default=3, help="random draws per rotation angle")
    p.add_argument("--check-n", type=int, default=200, help="examples of the hygiene checks")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--index", type=int, default=None,
                   help="test-split index of the example shown in the figures (default: the first evaluation "
                        "example the attack fools for every model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress")
    add_adversarial_options(p, prefix="train-")
    p.set_defaults(func=run)
