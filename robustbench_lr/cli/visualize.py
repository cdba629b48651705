"""`robustbench-lr visualize`: one figure of a checkpoint's LR layers or captum attributions, written to --out.

    robustbench-lr visualize --checkpoint DIR --layer stages.1.0.spatial --pixel 3,3 --out fig.png
    robustbench-lr visualize --checkpoint DIR --kind shift --index 459 --out shift.png
    robustbench-lr visualize --checkpoint DIR --list-layers

Kinds (robustbench_lr.viz): weights (plot_pixel_weights, default), overlay (plot_weights_overlay), priors
(plot_geometry_priors), evolution (plot_prior_evolution), shift (plot_attention_shift) and attributions
(plot_attributions, any model). The defaults are those of the report's figures (`runners.figures`): the image is
the first of the evaluation subset that PGD (--steps, --eps: the dataset's figure default) fools, unless --index
(a test-split index) names one; a figure of an example the attack did not fool says so in its title. --eps is
validated as `evaluate` validates it. Every check runs before the attack and the figure, so bad input leaves no
file; the figure is written atomically, PNG or PDF by the extension of --out, and its path is printed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import UserError

log = logging.getLogger(__name__)

KINDS = ("weights", "overlay", "priors", "evolution", "shift", "attributions")
LR_KINDS = ("weights", "overlay", "priors", "evolution", "shift")
EXAMPLE_KINDS = ("weights", "overlay", "shift", "attributions")
FORMATS = {".png": "png", ".pdf": "pdf"}
FIGURE_SUBSET = 64  # the report's figures choose their example among the first 64 evaluation examples


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
    norm = check_norm(args.norm)
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
    from ..runners.common import checkpoint_sources
    from ..utils import atomic_write, resolve_device

    src = checkpoint_sources([args.checkpoint])[0]
    device = resolve_device(args.device)
    model = src.load(device)
    if args.list_layers:
        print(list_layers(model, tuple(int(v) for v in src.meta["dataset"]["input_size"])))
        return 0
    c = _checks(args, model, src.meta)
    sel = _example(args, model, src, c, device) if args.kind in EXAMPLE_KINDS else None
    fig = _figure(args, model, sel, c)
    atomic_write(c["out"], lambda fh: fig.savefig(fh, format=c["fmt"], dpi=args.dpi), mode="wb")
    print(c["out"])
    return 0


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
    p = sub.add_parser("visualize", help="figures of LR weights, priors, attention shift and attributions",
                       description="Draw one figure of a checkpoint: the pairwise weights of an LR layer at one "
                                   "output pixel (weights, overlay), its learned geometry priors (priors, "
                                   "evolution), the weights' shift under an attack (shift), or captum "
                                   "attributions clean vs adversarial (attributions; any model).")
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--kind", choices=KINDS, default="weights", help="which figure (default: weights)")
    p.add_argument("--list-layers", action="store_true",
                   help="print the LR layers (k, stride, groups, grids for the checkpoint's input size) and exit")
    p.add_argument("--layer", default=None, help="LR layer name from --list-layers (default: the first)")
    p.add_argument("--pixel", default=None, metavar="ROW,COL",
                   help="output pixel on the layer's grid (default: its centre)")
    p.add_argument("--index", type=int, default=None,
                   help="test-split index of the image (default: the first evaluation example PGD fools, as in the "
                        "report)")
    p.add_argument("--out", default=None, metavar="FILE", help="figure file, .png or .pdf")
    p.add_argument("--attack", default="pgd", help="attack of the figures (pgd)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", default=None, help="attack strength, fractions allowed (default: the dataset's figure "
                                               "eps, 0.1 on mnist5k and 8/255 on cifar10 for linf)")
    p.add_argument("--steps", type=int, default=10, help="attack iterations (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack and of GradientShap")
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
