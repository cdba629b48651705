"""`robustbench-lr demo`: the main job, end to end on the embedded dataset (or real data with options).

1. trains an LR-Net (k=7) and its ResNet twin (k=3), or the `--model`s given (e.g. the five families:
   --model resnet_tiny --model lrnet_tiny --model resnet_tiny_glore --model resnet_tiny_cnl
   --model resnet_tiny_mssar); a finished checkpoint is reused, an unfinished one resumed;
2. runs FGSM and PGD eps sweeps with the hygiene checks, on the same test examples;
3. runs a random rotation sweep and the worst-of-k spatial attack (Engstrom et al.);
4. draws the pairwise weights, geometry priors, attention shift under attack and captum attributions, and
   measures the attention drift of every LR layer;
5. writes OUT/report.pdf (and the tables next to it) and prints its path.

Every stage saves its progress in OUT, so a re-run reuses finished work. `--device cuda` and
`--dataset cifar10 --data-root PATH` switch to real scale (lrnet26_cifar / resnet26_cifar).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import UserError
from ..utils import atomic_write, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "mnist5k": {"models": [("lrnet_tiny", 7), ("resnet_tiny", 3)], "epochs": 15, "eps": "0,0.05,0.1,0.2,0.3",
                "rotate": "0,10,20,30", "wok": "10,20,30", "width": None},
    "cifar10": {"models": [("lrnet26_cifar", 7), ("resnet26_cifar", 3)], "epochs": 30,
                "eps": "0,1/255,2/255,4/255,8/255", "rotate": "0,10,20,30", "wok": "10,20,30", "width": 0.5},
}


def _stage(msg: str) -> float:
    print(f"== {msg}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from ..evaluate import EvalConfig, parse_eps, run_evaluation
    from ..evaluate_deform import DeformRequest, run_deformations
    from ..report import build_report
    from ..train import TrainConfig, fit
    from .evaluate import FileStore

    if args.dataset not in PRESETS and args.dataset != "imagefolder":
        raise UserError(f"--dataset {args.dataset!r}: the demo runs on {', '.join(PRESETS)}.")
    preset = PRESETS.get(args.dataset, PRESETS["cifar10"])
    out = Path(args.out)
    t_all = time.perf_counter()
    store = FileStore(out / "state")
    epochs = args.epochs or preset["epochs"]
    kw = {"width": args.width or preset["width"]} if (args.width or preset["width"]) else {}
    models = preset["models"]
    if args.model:
        from ..models import model_info

        for name in args.model:
            model_info(name)  # unknown names fail here, with close matches, before any work
        if len(set(args.model)) != len(args.model):
            raise UserError(f"--model: each model once, got {', '.join(args.model)}.")
        models = [(name, None) for name in args.model]  # each model at its own default kernel size

    t0 = _stage(f"1/5 training {', '.join(m for m, _ in models)} on {args.dataset} ({epochs} epochs)")
    checkpoints = []
    for model, k in models:
        ck = out / "checkpoints" / (f"{model}_k{k}" if k else model)
        meta = fit(TrainConfig(model=model, dataset=args.dataset, epochs=epochs, kernel_size=k, seed=args.seed,
                               model_kwargs=dict(kw), data_root=args.data_root, download=args.download,
                               device=args.device, train_limit=args.train_limit), ck, resume=True,
                   progress=not args.quiet)
        k = k or meta["model"]["kwargs"].get("kernel_size") or "default"
        print(f"   {model} (k={k}): held-out accuracy {100 * meta['metrics']['test_accuracy']:.2f}%", flush=True)
        checkpoints.append(str(ck))
    print(f"   {time.perf_counter() - t0:.0f} s")

    t0 = _stage(f"2/5 FGSM and PGD sweeps on {args.n} test examples, with hygiene checks")
    eps = parse_eps(preset["eps"])
    ev = run_evaluation(EvalConfig(checkpoints=checkpoints, attacks=["fgsm", "pgd"], eps=eps, steps=args.steps,
                                   n=args.n, seed=args.seed, dataset=args.dataset, data_root=args.data_root,
                                   device=args.device, n_check=args.check_n, batch_size=args.batch_size),
                        store=store, progress=not args.quiet)
    print(f"   {time.perf_counter() - t0:.0f} s")

    t0 = _stage("3/5 random rotations and the worst-of-k spatial attack")
    dv = run_deformations(checkpoints, [DeformRequest("rotate", [float(v) for v in preset["rotate"].split(",")],
                                                      draws=args.draws),
                                        DeformRequest("worst-of-k", [float(v) for v in preset["wok"].split(",")])],
                          n=args.n, seed=args.seed, batch_size=args.batch_size, device=args.device,
                          dataset=args.dataset, data_root=args.data_root, store=store, progress=not args.quiet)
    print(f"   {time.perf_counter() - t0:.0f} s")

    t0 = _stage("4/5 pairwise weights, priors, attention shift, attributions")
    labels = ev.meta["labels"]
    drift_rows, manifest = make_figures(checkpoints, labels, ev, out / "figures", args)
    print(f"   {len(manifest)} figures, {time.perf_counter() - t0:.0f} s")

    t0 = _stage("5/5 report")
    from ..results import finalize

    results = finalize(pd.concat([ev.results, dv.results, pd.DataFrame(drift_rows)], ignore_index=True))
    write_csv_atomic(results, out / "results.csv")
    write_csv_atomic(pd.concat([ev.paired, dv.paired], ignore_index=True), out / "paired.csv")
    write_csv_atomic(ev.hygiene, out / "hygiene.csv")
    write_csv_atomic(pd.concat([ev.outcomes, dv.outcomes], ignore_index=True), out / "outcomes.csv")
    from ..checkpoint import package_versions

    ck_meta = {lab: {"path": c, "sha256": m["weights_sha256"], "model": m["model"]}
               for lab, c, m in zip(labels, checkpoints, _metas(checkpoints))}
    write_json_atomic(out / "run.json", {"command": args.command_line, **ev.meta, "versions": package_versions(),
                                         "deformations": dv.meta["config"]["requests"], "checkpoints": ck_meta,
                                         "seconds": time.perf_counter() - t_all})
    rep = build_report([out], out / "report.pdf")
    print(f"   {time.perf_counter() - t0:.0f} s")
    print(f"\ndone in {time.perf_counter() - t_all:.0f} s. Report: {rep['pdf']}")
    if rep["failed_checks"]:
        print(f"warning: {rep['failed_checks']} hygiene check(s) failed (page 1 of the report).")
    return 0


def _metas(checkpoints: list[str]) -> list[dict[str, Any]]:
    from ..checkpoint import read_meta

    return [read_meta(c) for c in checkpoints]


def make_figures(checkpoints: list[str], labels: list[str], ev: Any, folder: Path, args: argparse.Namespace
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Draw the model figures into `folder` (PNG + figures.json) and return (drift rows, manifest)."""
    from ..attacks.registry import AttackSpec, build_attack
    from ..attacks.sweep import prepare_for_attack
    from ..checkpoint import load_model
    from ..evaluate import load_eval_set
    from ..utils import resolve_device
    from .. import viz

    device = resolve_device(args.device)
    es = load_eval_set(checkpoints, args.dataset, args.data_root, min(args.n, 64))
    eps_all = sorted(e for e in ev.meta["eps"] if e > 0)
    # the eps at which the models differ most: where attention shift is worth looking at
    r = ev.results[(ev.results["attack"] == "pgd") & (ev.results["eps"] > 0)]
    spread = r.groupby("eps")["accuracy"].agg(lambda a: a.max() - a.min())
    eps = float(spread.idxmax()) if not spread.empty else eps_all[len(eps_all) // 2]
    folder.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, str]] = []
    drift_rows: list[dict[str, Any]] = []
    x, y = es.x, es.y
    i = 0  # the first example of the evaluation set
    for label, ck in zip(labels, checkpoints):
        model = prepare_for_attack(load_model(ck, device=device))
        name = model.checkpoint_meta["model"]["name"]
        atk = build_attack(AttackSpec("pgd", steps=args.steps), model, eps, es.num_classes, args.seed)
        x_adv = atk(x.to(device), y.to(device), None, torch.arange(len(x))).detach().cpu()
        with torch.no_grad():
            pred_adv = int(model(x_adv[i: i + 1].to(device)).argmax(1))
        layers = viz.lr_layers(model)
        desc = f"test example {int(es.indices[i])} (label {int(y[i])}), PGD-{args.steps} eps={eps:g} (prediction {pred_adv})"
        figs: list[tuple[str, str, Any, str]] = []
        if layers:
            names = list(layers)
            layer = names[min(len(names) - 1, 2)]  # a layer early enough to be readable on the image
            geo = viz.layer_geometry(model)[layer]
            what = (f"{label} ({name}), layer {layer}: {geo.kernel_size}x{geo.kernel_size} window, stride {geo.stride}, "
                    f"{geo.groups} groups")
            figs += [
                ("weights", f"Pairwise weights: {label}", viz.plot_pixel_weights(model, x[i], layer),
                 f"{what}; softmax weights of every group at the centre output pixel of {desc.split(',')[0]}."),
                ("overlay", f"Pairwise weights on the image: {label}", viz.plot_weights_overlay(model, x[i], layer),
                 f"{what}; the same weights mapped to image scale through the network's strides."),
                ("priors", f"Learned geometry priors: {label}", viz.plot_geometry_priors(model, layer),
                 f"{what}; softmax over the window of each group's learned prior."),
                ("evolution", f"Priors across layers: {label}", viz.plot_prior_evolution(model),
                 f"{label} ({name}): mean prior, spread over groups and normalised entropy per LR layer."),
                ("shift", f"Attention shift under attack: {label}",
                 viz.plot_attention_shift(model, x[i], x_adv[i], layer),
                 f"{what}; {desc}: clean vs adversarial weights at the centre pixel."),
            ]
            drift_rows += viz.attention_drift(model, x, x_adv, attack="pgd", eps=eps, label=label)
        figs.append(("attributions", f"Attributions (captum): {label}",
                     viz.plot_attributions(model, x[i], x_adv[i], int(y[i])),
                     f"{label} ({name}); {desc}: IntegratedGradients, Saliency, GradientShap and Occlusion of the "
                     f"true class on the clean and the adversarial image."))
        for key, title, fig, caption in figs:
            fname = f"{label}_{key}.png"
            atomic_write(folder / fname, lambda fh, fig=fig: fig.savefig(fh, format="png", dpi=130), mode="wb")
            manifest.append({"file": fname, "title": title, "caption": caption})
    names = {lab: m["model"]["name"] for lab, m in zip(labels, es.metas)}
    for row in drift_rows:
        row["model_name"] = names[row["model"]]
    write_json_atomic(folder / "figures.json", manifest)
    return drift_rows, manifest


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

