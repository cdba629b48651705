"""`robustbench-lr visualize`: any one figure of the report, alone, written to --out.

    robustbench-lr visualize --checkpoint DIR --layer stages.1.0.spatial --pixel 3,3 --out fig.png
    robustbench-lr visualize --checkpoint DIR --kind shift --index 459 --out shift.png
    robustbench-lr visualize --checkpoint DIR --kind shift --run RUN_DIR --out shift.png   # as in RUN's report
    robustbench-lr visualize --run RUN_DIR --kind summary --out summary.png
    robustbench-lr visualize --checkpoint DIR --list-layers

Model kinds (robustbench_lr.viz, need --checkpoint): weights (plot_pixel_weights, default), overlay
(plot_weights_overlay), priors (plot_geometry_priors), evolution (plot_prior_evolution), shift
(plot_attention_shift) and attributions (plot_attributions, any model). Their defaults are the report's
(`runners.figures`): the layer `viz.layers.figure_layer` (the third LR layer), PGD with the report's 20 steps, the
image the first of the 64-example evaluation subset that the attack fools, unless --index (a test-split index)
names one; a figure of an example the attack did not fool says so in its title. The eps: without --run, the
dataset's default figure eps (attacks.threat: 0.1 on mnist5k, 8/255 on cifar10, linf); with --run RUN_DIR, the
report's choice (the demo takes the eps where the models differ most, `runners.figures.informative_eps`). With
--run the example, eps, norm, steps, seed and layer all default to those recorded for the same model's figure
in RUN_DIR's figures/figures.json, so the figure is the report's (the report shows one example for every model
where the attack fools one for all; alone, a figure without --run picks that model's own first fooled one).

Curve kinds (report.figures, need --run RUN_DIR, repeatable): summary (robust accuracy vs eps of every model on
one axis), eps-curves, deform-curves, kernel-curves, drawn exactly as in the report.

--eps is validated as `evaluate` validates it. Every check runs before the attack and the figure, so bad input
leaves no file; the figure is written atomically, PNG or PDF by the extension of --out, and its path is printed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import UserError

log = logging.getLogger(__name__)

MODEL_KINDS = ("weights", "overlay", "priors", "evolution", "shift", "attributions")
CURVE_KINDS = ("summary", "eps-curves", "deform-curves", "kernel-curves")
KINDS = MODEL_KINDS + CURVE_KINDS
LR_KINDS = ("weights", "overlay", "priors", "evolution", "shift")
EXAMPLE_KINDS = ("weights", "overlay", "shift", "attributions")
FORMATS = {".png": "png", ".pdf": "pdf"}
FIGURE_SUBSET = 64  # the report's figures choose their example among the first 64 evaluation examples
FIGURE_STEPS = 20  # PGD steps of the report's figures (runners.figures.FigureConfig.steps, the demo's --steps)


def parse_pixel(text: str | None) -> tuple[int, int] | None:
    """'14,14' -> (14, 14); None stays None (the grid's centre)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--pixel must be ROW,COL on the layer's output grid (e.g. 3,3); got {text!r}.") from None
    return row, col


def figure_eps(text: str | None, dataset: str, norm: str, input_size: tuple[int, ...]) -> float:
    """The attack strength of a figure: --eps (validated as `evaluate` validates it), else the dataset's figure
    default (attacks.threat.EPS_DEFAULTS)."""
    from ..attacks.threat import default_eps, parse_eps, validate_eps

    vals = parse_eps(text) if text is not None else default_eps(dataset, norm, "figure")
    if len(vals) != 1:
        raise UserError(f"--eps takes one value for a figure; got {text!r}.")
    eps = validate_eps(vals, norm, input_size)[0]
    if eps <= 0:
        raise UserError(f"--eps must be > 0 for a figure of an attack; got {text!r}.")
    return eps


def _out_path(text: str | None) -> tuple[Path, str]:
    from ..results import check_out_file

    if not text:
        raise UserError("give --out FILE.png (or .pdf) for the figure, or --list-layers to list the LR layers.")
    out = check_out_file(text, tuple(FORMATS))
    return out, FORMATS[out.suffix.lower()]


def list_layers(model: Any, input_size: tuple[int, ...]) -> str:
    """The table printed by --list-layers."""
    from ..viz.geometry import layer_geometry
    from ..viz.layers import lr_layers, no_lr_layers_error

    if not lr_layers(model):
        return f"(no LR layers) {no_lr_layers_error(model)}"
    geo = layer_geometry(model, input_size)
    head = f"{'layer':<24} {'k':>3} {'stride':>6} {'groups':>6} {'input':>8} {'output':>8} {'cum.stride':>10}"
    lines = [f"LR layers of {getattr(model, 'model_name', '?')} for {input_size[-2]}x{input_size[-1]} inputs "
             f"(--pixel is ROW,COL on the output grid):", head]
    for g in geo.values():
        lines.append(f"{g.name:<24} {g.kernel_size:>3} {g.stride:>6} {g.groups:>6} "
                     f"{g.in_grid[0]:>3}x{g.in_grid[1]:<4} {g.out_grid[0]:>3}x{g.out_grid[1]:<4} {g.out_stride:>10}")
    return "\n".join(lines)


def _checks(args: argparse.Namespace, model: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Every check on the arguments, before any attack or figure."""
    from ..attacks.threat import check_norm
    from ..viz import geometry as G
    from ..viz import layers as L

    input_size = tuple(int(v) for v in meta["dataset"]["input_size"])
    out, fmt = _out_path(args.out)
    pixel = parse_pixel(args.pixel)
    if args.index is not None and args.index < 0:
        raise UserError(f"--index must be >= 0; got {args.index}.")
    if args.attack != "pgd":
        raise UserError(f"--attack {args.attack!r}: figures use PGD (the report's attack).")
    norm = check_norm(args.norm or "linf")
    if args.steps is None:
        args.steps = FIGURE_STEPS
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1; got {args.steps}.")
    eps = figure_eps(args.eps, args.dataset or meta["dataset"]["name"], norm, input_size)
    if args.kind in LR_KINDS:
        what = "learned geometry priors" if args.kind in ("priors", "evolution") else "pairwise weights"
        if not L.lr_layers(model):
            raise L.no_lr_layers_error(model, what)
        if args.kind != "evolution":
            name, _ = L.resolve_layer(model, args.layer, what)
            if args.kind != "priors":
                G.resolve_pixel(G.layer_geometry(model, input_size)[name], pixel)
    methods = None
    if args.kind == "attributions":
        from ..viz.attributions import check_methods

        methods = check_methods(args.methods)
    return {"out": out, "fmt": fmt, "pixel": pixel, "eps": eps, "norm": norm, "methods": methods}


def _example(args: argparse.Namespace, model: Any, src: Any, c: dict[str, Any], device: Any) -> Any:
    """The example of the figure (as the report chooses it) and its adversarial version."""
    from ..attacks import prepare_for_attack
    from ..runners.common import load_eval_set
    from ..runners.figures import select_example, with_example

    es = load_eval_set([src], args.dataset, args.data_root, FIGURE_SUBSET)
    x, y, indices = with_example(es, args.index, args.data_root)
    sel = select_example(prepare_for_attack(model), x, y, indices, eps=c["eps"], norm=c["norm"], steps=args.steps,
                         seed=args.seed, num_classes=es.num_classes, device=device, index=args.index)
    log.info("%s", sel.example.describe(f"PGD-{args.steps} {c['norm']} eps={c['eps']:g}"))
    return sel


def run(args: argparse.Namespace) -> int:
    from ..utils import atomic_write

    if args.kind in CURVE_KINDS and not args.list_layers:
        c = {**_out(args), "norm": None}
        fig = curve_figure(args.kind, args.run, args.norm)
    else:
        fig, c = _model_figure(args)
        if fig is None:
            return 0
    atomic_write(c["out"], lambda fh: fig.savefig(fh, format=c["fmt"], dpi=args.dpi), mode="wb")
    print(c["out"])
    return 0


def _out(args: argparse.Namespace) -> dict[str, Any]:
    out, fmt = _out_path(args.out)
    return {"out": out, "fmt": fmt}


def _model_figure(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """A figure of one checkpoint (None after --list-layers), with the report's defaults."""
    from ..runners.common import checkpoint_sources
    from ..utils import resolve_device

    if not args.checkpoint:
        raise UserError(f"--kind {args.kind} draws a model: give --checkpoint DIR (the report's curves, "
                        f"{', '.join(CURVE_KINDS)}, take --run RUN_DIR instead).")
    src = checkpoint_sources([args.checkpoint])[0]
    device = resolve_device(args.device)
    model = src.load(device)
    if args.list_layers:
        print(list_layers(model, tuple(int(v) for v in src.meta["dataset"]["input_size"])))
        return None, {}
    if args.run:
        apply_run_defaults(args, src.label)
    if args.seed is None:
        args.seed = 0
    if args.layer is None and args.kind in LR_KINDS:
        from ..viz.layers import figure_layer

        args.layer = figure_layer(model)
    c = _checks(args, model, src.meta)
    sel = _example(args, model, src, c, device) if args.kind in EXAMPLE_KINDS else None
    fig = _figure(args, model, sel, c)
    if sel is not None:
        describe_example(fig, sel.example, f"PGD-{args.steps} {c['norm']} eps={c['eps']:g}")
    return fig, c


def describe_example(fig: Any, ex: Any, attack: str) -> None:
    """Add the example and what the attack did to it to the figure's title (the report says it in the caption):
    '... (example NOT fooled)' when the attack did not fool it, as the report's titles do."""
    from ..viz import _draw as D

    old = fig._suptitle.get_text() if fig._suptitle is not None else ""
    tag = "" if ex.fooled else "\n(example NOT fooled)"
    D.suptitle(fig, (old + "\n" if old else "") + ex.describe(attack) + tag)


def curve_figure(kind: str, run_dirs: list[str] | None, norm: str | None) -> Any:
    """One of the report's curves from run directories, drawn as `report.build_report` draws it."""
    from ..attacks.threat import check_norm
    from ..report import figures as F
    from ..results import load_runs

    if not run_dirs:
        raise UserError(f"--kind {kind} draws the report's curve from run directories: give --run RUN_DIR.")
    b = load_runs(run_dirs)
    norms = [n for n in ("linf", "l2") if (b.results["family"] == n).any()]
    n = check_norm(norm) if norm else (norms[0] if norms else "linf")
    if kind in ("summary", "eps-curves") and n not in norms:
        raise UserError(f"--kind {kind}: the runs have no {n} attack results"
                        + (f" (they have {', '.join(norms)}; use --norm)." if norms else "."))
    fig = {"summary": lambda: F.robustness_curves(b.results, b.outcomes, n),
           "eps-curves": lambda: F.eps_curves(b.results, n),
           "deform-curves": lambda: F.deform_curves(b.results),
           "kernel-curves": lambda: F.kernel_curves(b.results, F.kernel_columns(b.results))}[kind]()
    if fig is None:
        what = {"deform-curves": "deformation results", "kernel-curves": "kernel-size sweep (two or more k per model)"}
        raise UserError(f"--kind {kind}: the runs hold no {what.get(kind, 'results')} to draw.")
    return fig


RUN_FIELDS = ("index", "eps", "steps", "norm", "layer", "seed")  # what a figure record gives `visualize --run`


def apply_run_defaults(args: argparse.Namespace, label: str) -> None:
    """Fill --index, --eps, --steps, --norm, --layer and --seed (those not given) from the report figure of model
    `label` in the run directories' figures.json, so `visualize` redraws the report's figure. The record's
    fields decide; runs written before the records had them fall back to the figure's caption."""
    from ..results import load_runs

    items = [f for f in load_runs(args.run).figures if str(f.get("model")) == label]
    if not items:
        raise UserError(f"--run: {', '.join(args.run)} has no report figures of {label} (figures/figures.json); "
                        f"drop --run or give the run directory of that model's report.")
    item = next((f for f in items if f.get("kind") == args.kind), items[0])
    found = {**_caption_fields(str(item.get("caption", ""))),
             **{k: item[k] for k in RUN_FIELDS if item.get(k) is not None}}
    cast = {"index": int, "eps": str, "steps": int, "norm": str, "layer": str, "seed": int}
    for key, value in found.items():
        if getattr(args, key, None) is None:
            setattr(args, key, cast[key](value))


def _caption_fields(text: str) -> dict[str, str]:
    """eps, steps, norm and layer named in an older run's caption ('layer L: ...', 'PGD-20 linf eps=0.1')."""
    import re

    attack = re.search(r"PGD-(\d+) (linf|l2) eps=([0-9.eE+-]+)", text)
    layer = re.search(r"layer (\S+):", text)
    out = dict(zip(("steps", "norm", "eps"), attack.groups())) if attack else {}
    return {**out, **({"layer": layer.group(1)} if layer else {})}


def _figure(args: argparse.Namespace, model: Any, sel: Any, c: dict[str, Any]) -> Any:
    from .. import viz

    x = sel.x.to(next(model.parameters()).device) if sel is not None else None
    if args.kind == "weights":
        return viz.plot_pixel_weights(model, x, args.layer, c["pixel"])
    if args.kind == "overlay":
        return viz.plot_weights_overlay(model, x, args.layer, c["pixel"])
    if args.kind == "priors":
        return viz.plot_geometry_priors(model, args.layer, logits=args.logits)
    if args.kind == "evolution":
        return viz.plot_prior_evolution(model)
    x_adv = sel.x_ex_adv.to(x.device)
    if args.kind == "shift":
        return viz.plot_attention_shift(model, x, x_adv, args.layer, c["pixel"])
    target = sel.example.label if args.target is None else args.target
    return viz.plot_attributions(model, x, x_adv, target, c["methods"], n_steps=args.n_steps, window=args.window,
                                 seed=args.seed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visualize", help="any figure of the report alone: LR weights, priors, attention shift, "
                                         "attributions, the summary and other curves",
                       description="Draw one figure of the report: of a checkpoint, the pairwise weights of an LR "
                                   "layer at one output pixel (weights, overlay), its learned geometry priors "
                                   "(priors, evolution), the weights' shift under an attack (shift), or captum "
                                   "attributions clean vs adversarial (attributions; any model); of run "
                                   "directories, the report's curves (summary, eps-curves, deform-curves, "
                                   "kernel-curves).")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="checkpoint directory (model kinds)")
    p.add_argument("--run", action="append", default=None, metavar="RUN_DIR",
                   help="run directory (repeatable): the data of the curve kinds, and the defaults (example, eps, "
                        "steps, layer) of a model kind, taken from that run's report figures")
    p.add_argument("--kind", choices=KINDS, default="weights",
                   help="which figure (default: weights); model kinds: " + ", ".join(MODEL_KINDS)
                        + "; the report's curves: " + ", ".join(CURVE_KINDS))
    p.add_argument("--list-layers", action="store_true",
                   help="print the LR layers (k, stride, groups, grids for the checkpoint's input size) and exit")
    p.add_argument("--layer", default=None,
                   help="LR layer name from --list-layers (default: the report's, the third LR layer)")
    p.add_argument("--pixel", default=None, metavar="ROW,COL",
                   help="output pixel on the layer's grid (default: its centre)")
    p.add_argument("--index", type=int, default=None,
                   help="test-split index of the image (default: the first evaluation example PGD fools, as in the "
                        "report)")
    p.add_argument("--out", default=None, metavar="FILE", help="figure file, .png or .pdf")
    p.add_argument("--attack", default="pgd", help="attack of the figures (pgd)")
    p.add_argument("--norm", default=None, help="linf | l2 (default linf; curves: the runs' first norm)")
    p.add_argument("--eps", default=None,
                   help="attack strength in pixel values of [0, 1], fractions allowed. Default without --run: the "
                        "dataset's figure eps (0.1 on mnist5k, 8/255 on cifar10, for linf); with --run: the eps of "
                        "that run's report figures (the demo's choice: where the models differ most)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"attack iterations (default {FIGURE_STEPS}, as the report's figures)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the attack and of GradientShap (default 0; with --run, the report's)")
    p.add_argument("--methods", default="IntegratedGradients,Saliency,GradientShap,Occlusion",
                   help="captum methods for --kind attributions (comma list)")
    p.add_argument("--target", type=int, default=None, help="class to attribute (default: the true label)")
    p.add_argument("--n-steps", type=int, default=16, help="IntegratedGradients steps (default 16)")
    p.add_argument("--window", type=int, default=None, help="Occlusion window side (default min(H, W) // 7)")
    p.add_argument("--logits", action="store_true", help="priors: show raw logits instead of the softmax")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    p.set_defaults(func=run)
