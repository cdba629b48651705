"""`robustbench-lr sweep deform|kernel-size`: deformation sweeps, and kernel-size sweeps that train as they go.

    robustbench-lr sweep deform --checkpoint runs/lr7 --checkpoint runs/conv3 --deform rotate \\
        --strengths 0,10,20,30 --draws 5 --out runs/rot
    robustbench-lr sweep deform --checkpoint runs/lr7 --external mypkg.nets:small_cnn --weights cnn.safetensors \\
        --name cnn --deform rotate --out runs/rot2
    robustbench-lr sweep kernel-size --model lrnet_tiny --model resnet_tiny --kernel-sizes 3,5,7,9 \\
        --dataset mnist5k --epochs 15 --seeds 0,1,2 --attack pgd --eps 0,0.05,0.1 \\
        --deform rotate=0,15,30 --out runs/ks

A deformation is NAME or NAME=s1,s2,... (its own strengths); --strengths applies to the names without their own.
Random deformations: rotate (degrees), translate (pixels), scale (factor), elastic (alpha, pixels), offset
(brightness offset, [0, 1] units); spatial attacks: worst-of-k, grid, affine-pgd (max rotation in degrees,
translation 0.1 px per degree) and flow (max flow, pixels).

The kernel-size sweep trains each (model, k, seed) into OUT/checkpoints/<model>_k<k>_s<seed> (a finished
checkpoint is reused, an unfinished one resumed; --adversarial trains them robustly), evaluates all models of a
seed together on the same examples (so models are compared with paired tests), and writes one table with a
kernel_size column, plus summary.csv with the mean and spread over seeds.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import UserError
from ._common import (add_adversarial_options, add_external_options, add_model_options, adversarial_kwargs,
                      model_kwargs_from, parse_model_args, parse_numbers, print_hygiene, print_written, sources_from)

DEFAULT_STRENGTHS = {"rotate": "0,10,20,30", "translate": "0,1,2,3", "scale": "1,0.9,0.8,1.1,1.2",
                     "elastic": "0,1,2,4", "offset": "0,0.01,0.02,0.05", "worst-of-k": "10,20,30",
                     "grid": "10,20,30", "affine-pgd": "10,20,30", "flow": "0.25,0.5,1"}


def parse_deforms(items: list[str], strengths: str | None, draws: int, options: list[str]) -> list[Any]:
    """['rotate', 'grid=10,30'] -> validated DeformRequests (own strengths, else --strengths, else defaults)."""
    from ..attacks.threat import parse_eps
    from ..runners import DeformRequest

    opts = parse_model_args(options)
    out = []
    for item in items:
        name, _, own = item.partition("=")
        name = name.strip()
        text = own or strengths or DEFAULT_STRENGTHS.get(name)
        if text is None:
            DeformRequest(name, (1.0,)).validate()  # raises the unknown-name error with suggestions
            raise UserError(f"give --strengths for {name!r}.")
        vals = parse_eps(text) if "/" in text else parse_numbers(text, "--strengths")
        req = DeformRequest(name, tuple(vals), draws, dict(opts))
        req.validate()
        out.append(req)
    return out


def run_deform(args: argparse.Namespace) -> int:
    from ..results import check_out_dir, collect, store_for, write_run
    from ..runners import DeformConfig, deformation_rows, plan_deformations

    requests = parse_deforms(args.deform, args.strengths, args.draws, args.option)
    cfg = DeformConfig(checkpoints=tuple(args.checkpoint), requests=tuple(requests), n=args.n, seed=args.seed,
                       batch_size=args.batch_size, device=args.device, dataset=args.dataset, data_root=args.data_root)
    plan = plan_deformations(cfg, sources_from(args))  # checkpoints, then --external models
    out = check_out_dir(args.out)
    t0 = time.perf_counter()
    tables = collect(deformation_rows(plan, store_for(out), progress=not args.quiet))
    names = write_run(out, tables, {"command": args.command_line, **plan.meta(), "seconds": time.perf_counter() - t0})
    _print_deform(tables.results)
    print_written(out, names)
    return 0


def _print_deform(r: Any) -> None:
    import pandas as pd

    r = r[r["family"] == "deform"]
    table = r.pivot_table(index="model", columns=[r["perturbation"], r["param_value"]], values="accuracy",
                          aggfunc="first", sort=False)
    with pd.option_context("display.width", 160):
        print("accuracy (%) under deformations, same examples for every model:")
        print((100 * table).round(1).to_string())


def kernel_config(args: argparse.Namespace) -> Any:
    from ..attacks.threat import parse_eps
    from ..runners import KernelSizeConfig

    train = {"epochs": args.epochs, "batch_size": args.train_batch_size, "lr": args.lr, "optimizer": args.optimizer,
             "train_limit": args.train_limit, "model_kwargs": model_kwargs_from(args), **adversarial_kwargs(args)}
    requests = parse_deforms(args.deform, args.strengths, args.draws, args.option) if args.deform else []
    return KernelSizeConfig(
        models=tuple(args.model), kernel_sizes=tuple(parse_numbers(args.kernel_sizes, "--kernel-sizes", int)),
        seeds=tuple(parse_numbers(args.seeds, "--seeds", int)), dataset=args.dataset, data_root=args.data_root,
        device=args.device, train=train, attacks=tuple(args.attack or ()), norm=args.norm,
        eps=tuple(parse_eps(args.eps)) if args.eps else None, steps=args.steps, eval_seed=args.eval_seed,
        hygiene=not args.no_hygiene, n_check=args.check_n, requests=tuple(requests), n=args.n,
        batch_size=args.batch_size)


def run_kernel_size(args: argparse.Namespace) -> int:
    from ..results import check_out_dir, collect, kernel_summary, store_for, write_run
    from ..runners import kernel_size_rows, plan_kernel_size
    from ..training import fit

    plan = plan_kernel_size(kernel_config(args), args.out)  # every job validated before any training
    _check_n(args)
    out = check_out_dir(args.out)
    t0 = time.perf_counter()
    for i, job in enumerate(plan.jobs, 1):
        print(f"[{i}/{len(plan.jobs)}] {job.model} k={job.kernel_size} seed={job.seed} -> {job.out}", flush=True)
        fit(job.config, job.out, resume=True, progress=not args.quiet)
    tables = collect(kernel_size_rows(plan, store_for(out), progress=not args.quiet))
    summary = kernel_summary(tables.results)
    names = write_run(out, tables, {"command": args.command_line, **plan.meta(), "seconds": time.perf_counter() - t0},
                      extra={"summary": summary})
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print("\nmean accuracy (%) over seeds [min, max]:")
        print(summary_display(summary).to_string(index=False))
    print_hygiene(tables.hygiene)
    print_written(out, names)
    return 0


def _check_n(args: argparse.Namespace) -> None:
    """--n against the test split, before any training."""
    from ..models import model_info
    from ..runners.common import test_split_size

    size = list(model_info(args.model[0]).input_size)
    n_split = test_split_size(args.dataset, args.data_root, size, 0)
    if args.n > n_split:
        raise UserError(f"--n {args.n} is larger than the {n_split} examples of the {args.dataset} test split.")


def summary_display(summary: Any) -> Any:
    s = summary.copy()
    s["cell"] = s["perturbation"] + "@" + s["param_value"].map(lambda v: f"{v:g}")
    s.loc[s["family"] == "clean", "cell"] = "clean"
    s["value"] = [f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" for a, lo, hi in zip(s["mean"], s["min"], s["max"])]
    return s.pivot_table(index=["model_name", "kernel_size"], columns="cell", values="value", aggfunc="first",
                         sort=False).reset_index()


def _common(q: argparse.ArgumentParser) -> None:
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="deformation sweeps and kernel-size sweeps", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="sweep_kind", metavar="KIND", required=True)
    d = ss.add_parser("deform", help="accuracy under deformations and spatial attacks",
                      description="Example: robustbench-lr sweep deform --checkpoint runs/lr7 --deform rotate "
                                  "--strengths 0,10,20,30 --draws 5 --out runs/rot")
    d.add_argument("--checkpoint", action="append", default=[], metavar="DIR")
    add_external_options(d)
    d.add_argument("--seed", type=int, default=0, help="seed of the random draws (the same for every model)")
    _common(d)
    d.set_defaults(func=run_deform)

    k = ss.add_parser("kernel-size", help="train and evaluate models over kernel sizes and seeds")
    k.add_argument("--model", action="append", default=[])
    k.add_argument("--kernel-sizes", default="3,5,7,9")
    k.add_argument("--seeds", default="0")
    k.add_argument("--epochs", type=int, default=15)
    k.add_argument("--train-batch-size", type=int, default=64)
    k.add_argument("--lr", type=float, default=None)
    k.add_argument("--optimizer", default="adamw")
    k.add_argument("--train-limit", type=int, default=None)
    k.add_argument("--attack", action="append", default=None)
    k.add_argument("--norm", default="linf", help="linf | l2 (the evaluation's attacks)")
    k.add_argument("--eps", default=None, help="the evaluation's eps list (default per dataset)")
    k.add_argument("--steps", type=int, default=20)
    k.add_argument("--eval-seed", type=int, default=0, help="seed of attacks and deformation draws")
    k.add_argument("--no-hygiene", action="store_true")
    k.add_argument("--check-n", type=int, default=100)
    _common(k)
    add_model_options(k, kernel_size=False)
    add_adversarial_options(k, prefix="train-")
    k.set_defaults(func=run_kernel_size, dataset="mnist5k")
