"""`robustbench-lr evaluate`: attack sweeps over eps for one or more models, written to a run directory --out.

The files of the run directory are those of `results.rundir` (results, paired, hygiene and outcomes tables,
run.json, state/ for resuming, adv/ with --save-adv).
"""

from __future__ import annotations

import argparse
import time

from ._common import add_external_options, print_hygiene, print_written, sources_from


def config_from(args: argparse.Namespace):  # noqa: ANN201 (EvalConfig, imported lazily)
    from ..attacks.threat import parse_eps
    from ..runners import EvalConfig

    return EvalConfig(checkpoints=tuple(args.checkpoint), attacks=tuple(args.attack or ["fgsm", "pgd"]),
                      norm=args.norm, eps=tuple(parse_eps(args.eps)) if args.eps else None, steps=args.steps,
                      restarts=args.restarts, step_size=args.step_size, random_start=not args.no_random_start,
                      min_norm_steps=args.min_norm_steps, aa_version=args.aa_version,
                      aa_attacks=tuple(args.aa_attacks.split(",")) if args.aa_attacks else None,
                      aa_few_classes=args.aa_few_classes,
                      mask=args.mask, mask_threshold=args.mask_threshold,
                      n=args.n, batch_size=args.batch_size, seed=args.seed, dataset=args.dataset,
                      data_root=args.data_root, device=args.device, hygiene=not args.no_hygiene, n_check=args.check_n)


def run(args: argparse.Namespace) -> int:
    from .. import distributed as D
    from ..results import AdvSaver, check_out_dir, collect, store_for, summary_table, write_run
    from ..runners import evaluation_rows, plan_evaluation

    plan = plan_evaluation(config_from(args), sources_from(args))  # every input checked: nothing attacked yet
    out = check_out_dir(args.out)
    ctx = D.init_distributed(args.device)
    try:
        t0 = time.perf_counter()
        saver = AdvSaver(out, f".rank{ctx.rank}" if ctx.distributed else "") if args.save_adv else None
        tables = collect(evaluation_rows(plan, store_for(out), progress=not args.quiet, on_adv=saver, ctx=ctx,
                                         after_cell=saver.flush if saver else None))
        if saver:
            saver.flush()
        if not ctx.is_main:
            return 0
        names = write_run(out, tables, {"command": args.command_line, **plan.meta(ctx.world_size),
                                        "seconds": time.perf_counter() - t0})
        _print_summary(tables, summary_table)
        print_written(out, names)
    finally:
        D.cleanup()
    return 0


def _print_summary(tables, summary_table) -> None:  # noqa: ANN001
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 40):
        print("robust accuracy (%), same examples for every model:")
        print(summary_table(tables.results).to_string())
    print_hygiene(tables.hygiene)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="attack sweeps over eps with hygiene checks and statistics",
                       description="Evaluate checkpoints under attacks over a list of eps, on the same examples. "
                                   "Example: robustbench-lr evaluate --checkpoint runs/lr7 --checkpoint runs/conv3 "
                                   "--attack fgsm --attack pgd --norm linf --eps 0,0.05,0.1,0.2,0.3 --steps 20 "
                                   "--n 1000 --out runs/eval1")
    p.add_argument("--checkpoint", action="append", default=[], metavar="DIR", help="checkpoint directory (repeat)")
    add_external_options(p)
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help="repeatable; see the README's attack table (default: fgsm and pgd)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", default=None, help="comma list, fractions allowed (e.g. 0,2/255,8/255); default per dataset")
    p.add_argument("--steps", type=int, default=None,
                   help="iterations of PGD/APGD (default 20); minimal-norm attacks take --min-norm-steps and "
                        "AutoAttack its reference settings")
    p.add_argument("--min-norm-steps", type=int, default=None,
                   help="iterations of the minimal-norm attacks fmn, ddn, alma (default 1000, AttackBench's; adv-lib's "
                        "own defaults are FMN 10, DDN 100, ALMA 1000); --steps does not change them")
    p.add_argument("--aa-version", default="standard", help="official AutoAttack version: standard | plus | rand")
    p.add_argument("--aa-attacks", default=None, metavar="A,B",
                   help="run only these of the version's attacks, e.g. apgd-ce,apgd-t (labelled as a subset in "
                        "every table; the default runs them all)")
    p.add_argument("--aa-few-classes", default="error", metavar="error|fallback",
                   help="official AutoAttack on fewer than 4 classes, where its DLR-loss attacks cannot run (APGD-T "
                        "needs 4 classes, APGD-DLR 3): 'error' (default) stops before any attack; 'fallback' runs "
                        "the version without them (standard: APGD-CE, FAB-T, Square) and the hygiene row "
                        "autoattack:too_few_classes warns and names what was dropped")
    p.add_argument("--mask", default=None, help="PGD perturbs only the 'background' (clean pixels <= "
                                               "--mask-threshold in every channel) or the 'foreground'")
    p.add_argument("--mask-threshold", type=float, default=0.0, help="pixel value separating the mask's regions")
    p.add_argument("--restarts", type=int, default=1, help="random restarts of PGD/APGD")
    p.add_argument("--step-size", type=float, default=2.5, help="PGD step as a multiple of eps/steps")
    p.add_argument("--no-random-start", action="store_true", help="PGD starts at the clean image (deterministic)")
    p.add_argument("--n-examples", "--n", dest="n", type=int, default=1000,
                   help="examples of the test split (a fixed seeded subset); under torchrun write --n-examples, "
                        "since torchrun reads --n as an abbreviation of its own options")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and random targets")
    p.add_argument("--dataset", default=None, help="must match the checkpoints' dataset (default: theirs)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--save-adv", action="store_true", help="also save the adversarial examples (safetensors)")
    p.add_argument("--no-hygiene", action="store_true", help="skip the hygiene checks")
    p.add_argument("--check-n", type=int, default=200, help="clean-correct examples used by the hygiene checks")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=run)
