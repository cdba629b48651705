"""`robustbench-lr visualize`: one figure of a checkpoint's LR layers or captum attributions, written to --out.

    robustbench-lr visualize --checkpoint DIR --index 3 --layer stages.1.0.spatial --pixel 3,3 --out fig.png
    robustbench-lr visualize --checkpoint DIR --list-layers

Kinds (robustbench_lr.viz): weights (plot_pixel_weights, default), overlay (plot_weights_overlay), priors
(plot_geometry_priors), evolution (plot_prior_evolution), shift (plot_attention_shift) and attributions
(plot_attributions, any model). shift and attributions attack test image --index with the attack registry
(--attack pgd, --eps per dataset by default, --steps 10). The figure is written atomically (a temporary file
in the same directory, then a rename), PNG or PDF by the extension of --out, and its path is printed.
Every check on the arguments runs before the attack and the figure, so bad input leaves no file.
"""

from __future__ import annotations

import argparse
import logging
from fractions import Fraction
from pathlib import Path

import torch

from ..errors import UserError

log = logging.getLogger(__name__)

KINDS = ("weights", "overlay", "priors", "evolution", "shift", "attributions")
LR_KINDS = ("weights", "overlay", "priors", "evolution", "shift")
FORMATS = {".png": "png", ".pdf": "pdf"}
DEFAULT_EPS = {("mnist5k", "linf"): 0.1, ("mnist5k", "l2"): 1.0, ("cifar10", "linf"): 8 / 255,
               ("cifar10", "l2"): 0.5, ("imagefolder", "linf"): 4 / 255, ("imagefolder", "l2"): 1.0}


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


def parse_eps(text: str) -> float:
    try:
        eps = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot parse --eps {text!r}; use a number or a fraction such as 8/255.") from None
    if eps <= 0:
        raise UserError(f"--eps must be > 0; got {text!r}.")
    return eps


def _out_path(text: str | None) -> tuple[Path, str]:
    if not text:
        raise UserError("give --out FILE.png (or .pdf) for the figure, or --list-layers to list the LR layers.")
    out = Path(text).expanduser()
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UserError(f"--out {out}: the extension must be .png or .pdf (it picks the format).")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'fig.png'}.")
    return out, fmt


def list_layers(model: torch.nn.Module, input_size: tuple[int, ...]) -> str:
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


def _adversarial(model: torch.nn.Module, x: torch.Tensor, y: int, args: argparse.Namespace, dataset: str,
                 num_classes: int) -> torch.Tensor:
    from ..attacks.registry import AttackSpec, build_attack, random_targets
    from ..attacks.sweep import prepare_for_attack

    spec = AttackSpec(args.attack, norm=args.norm, steps=args.steps)
    eps = parse_eps(args.eps) if args.eps is not None else DEFAULT_EPS.get((dataset, spec.norm))
    if eps is None:
        raise UserError(f"give --eps for dataset {dataset!r} and norm {spec.norm}.")
    prepare_for_attack(model)
    atk = build_attack(spec, model, eps, num_classes, args.seed)
    yy = torch.tensor([y], device=x.device)
    targets = random_targets(yy, num_classes, args.seed).to(x.device) if spec.targeted == "random" else None
    torch.manual_seed(args.seed)
    log.info("attacking test image %d with %s (%s, eps=%g, %d steps)", args.index, spec.name, spec.norm, eps,
             spec.steps)
    return atk(x[None], yy, targets)[0].detach()


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, read_meta
    from ..utils import atomic_write, resolve_device
    from ..viz import geometry as G
    from ..viz import layers as L

    meta = read_meta(args.checkpoint)
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device=device)
    input_size = tuple(int(v) for v in meta["dataset"]["input_size"])
    if args.list_layers:
        print(list_layers(model, input_size))
        return 0

    # ---- every check before any work
    out, fmt = _out_path(args.out)
    pixel = parse_pixel(args.pixel)
    if args.index < 0:
        raise UserError(f"--index must be >= 0; got {args.index}.")
    if args.kind in LR_KINDS:
        what = "learned geometry priors" if args.kind in ("priors", "evolution") else "pairwise weights"
        if not L.lr_layers(model):
            raise L.no_lr_layers_error(model, what)
        if args.kind != "evolution":
            name, _ = L.resolve_layer(model, args.layer, what)
            if args.kind != "priors":
                G.resolve_pixel(G.layer_geometry(model, input_size)[name], pixel)
    if args.kind == "attributions":
        from ..viz.attributions import check_methods

        methods = check_methods(args.methods)

    # ---- the image (and its attacked version)
    x = y = x_adv = None
    if args.kind not in ("priors", "evolution"):
        from ..data import load_dataset

        dname = args.dataset or meta["dataset"]["name"]
        ds = load_dataset(dname, "test", args.data_root, image_size=int(input_size[-1]),
                          split_seed=meta["dataset"].get("split_seed") or 0)
        if args.index >= len(ds):
            raise UserError(f"--index {args.index} is out of range: the {dname} test split has {len(ds)} images "
                            f"(0..{len(ds) - 1}).")
        x, y = ds[args.index]
        x = x.to(device)
        if args.kind in ("shift", "attributions"):
            x_adv = _adversarial(model, x, int(y), args, dname, int(meta["dataset"]["num_classes"]))

    # ---- the figure
    from .. import viz

    if args.kind == "weights":
        fig = viz.plot_pixel_weights(model, x, args.layer, pixel)
    elif args.kind == "overlay":
        fig = viz.plot_weights_overlay(model, x, args.layer, pixel)
    elif args.kind == "priors":
        fig = viz.plot_geometry_priors(model, args.layer, logits=args.logits)
    elif args.kind == "evolution":
        fig = viz.plot_prior_evolution(model)
    elif args.kind == "shift":
        fig = viz.plot_attention_shift(model, x, x_adv, args.layer, pixel)
    else:
        target = int(y) if args.target is None else args.target
        fig = viz.plot_attributions(model, x, x_adv, target, methods, n_steps=args.n_steps, window=args.window,
                                    seed=args.seed)
    atomic_write(out, lambda fh: fig.savefig(fh, format=fmt, dpi=args.dpi), mode="wb")
    print(out)
    return 0


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
    p.add_argument("--index", type=int, default=0, help="image index in the test split (default 0)")
    p.add_argument("--out", default=None, metavar="FILE", help="figure file, .png or .pdf")
    p.add_argument("--attack", default="pgd", help="attack for shift/attributions (default pgd)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", default=None, help="attack strength, fractions allowed (default: 0.1 on mnist5k, "
                                               "8/255 on cifar10, 4/255 on imagefolder for linf)")
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
