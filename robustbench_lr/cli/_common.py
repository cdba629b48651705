"""What several commands share: model-shaping options, external models (--external), list parsing, and the
terminal summaries."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import UserError

MODEL_OPTIONS = ("channel_sharing", "appearance", "geometry", "border", "width")


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs -> kwargs; values are parsed as JSON when possible (4, 0.5, true, "x", [1,2])."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"expected KEY=VALUE; got {pair!r}.")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def add_model_options(p: argparse.ArgumentParser, kernel_size: bool = True) -> None:
    """Model-shaping options shared by the commands that build models."""
    if kernel_size:
        p.add_argument("--kernel-size", type=int, default=None, help="k of every spatial operator (odd)")
    p.add_argument("--channel-sharing", type=int, default=None, help="LR: channels sharing one aggregation (m)")
    p.add_argument("--appearance", default=None, help="LR: sqdiff | absdiff | dot | none")
    p.add_argument("--geometry", default=None, help="LR: mlp | table | none")
    p.add_argument("--border", default=None, help="LR: mask | zeros")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (e.g. 0.5)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other create_model argument, e.g. --model-arg stem_kernel_size=5 (repeatable)")


def model_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    kw = parse_model_args(args.model_arg)
    for name in MODEL_OPTIONS:
        v = getattr(args, name)
        if v is not None:
            kw[name] = None if isinstance(v, str) and v.lower() == "none" else v
    return kw


def add_adversarial_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The training threat model. `train` names its budget --eps / --norm; `sweep kernel-size` and `demo`, whose
    --eps is the evaluation's, name it --train-eps / --train-norm (prefix 'train-')."""
    p.add_argument("--adversarial", default="none", metavar="METHOD",
                   help="none (default) | fgsm-rs (fast AT) | pgd (Madry PGD-AT) | trades")
    p.add_argument(f"--{prefix}eps", dest="train_eps", default=None,
                   help="training budget, fractions allowed (default: the dataset's standard, 0.3 on mnist5k)")
    p.add_argument(f"--{prefix}norm", dest="train_norm", default="linf", help="linf | l2 (the training threat model)")
    p.add_argument("--attack-steps", type=int, default=None, help="inner attack steps (default 7; fgsm-rs: 1)")
    p.add_argument("--trades-beta", type=float, default=6.0, help="TRADES' robustness weight (default 6)")
    p.add_argument("--eps-warmup-epochs", type=float, default=2.0,
                   help="epochs over which eps ramps linearly from 0 (default 2)")
    p.add_argument("--robust-eval-n", type=int, default=500, help="held-out examples of the per-epoch robust check")


def adversarial_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields from the adversarial options."""
    from ..attacks.threat import parse_eps

    eps = None
    if args.train_eps is not None:
        vals = parse_eps(args.train_eps)
        if len(vals) != 1:
            raise UserError(f"the training eps takes one value; got {args.train_eps!r}.")
        eps = vals[0]
    return {"adversarial": args.adversarial, "eps": eps, "norm": args.train_norm, "attack_steps": args.attack_steps,
            "trades_beta": args.trades_beta, "eps_warmup_epochs": args.eps_warmup_epochs,
            "robust_eval_n": args.robust_eval_n}


class ExternalAction(argparse.Action):
    """--external SPEC starts a model; --weights / --name / --normalize that follow it describe it."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, opt: str | None = None
                 ) -> None:
        models = getattr(ns, "external", None) or []
        if self.dest == "external":
            models.append({"factory": value})
        elif not models:
            parser.error(f"{opt} describes the --external model before it: give --external first")
        else:
            models[-1][self.dest] = value
        ns.external = models


def sources_from(args: argparse.Namespace) -> list[Any]:
    """The checkpoints, then the external models, in the order given (dataset from --dataset or the checkpoints)."""
    from ..runners.common import checkpoint_sources, dataset_description
    from ..runners.external import ExternalModel, external_source

    sources = checkpoint_sources(list(args.checkpoint))
    externals = getattr(args, "external", None) or []
    if not sources and not externals:
        raise UserError("give at least one --checkpoint DIR or --external FACTORY.")
    if externals:
        name = args.dataset or (sources[0].meta["dataset"]["name"] if sources else None)
        if name is None:
            raise UserError("--external models need --dataset (e.g. --dataset mnist5k).")
        size = int(sources[0].meta["dataset"]["input_size"][-1]) if sources else 224
        meta, probe = dataset_description(name, args.data_root, size)
        for e in externals:
            spec = ExternalModel(e["factory"], e.get("weights"), e.get("name"), _normalize(e.get("normalize")))
            sources.append(external_source(spec, meta, probe))
    from ..runners.common import unique_labels

    for src, label in zip(sources, unique_labels([s.label for s in sources])):
        src.label = label
    return sources


def _normalize(text: str | None) -> tuple[list[float], list[float]] | None:
    if text is None:
        return None
    try:
        mean, std = (([float(v) for v in part.split(",")]) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--normalize {text!r}: write MEAN[,MEAN,MEAN]/STD[,STD,STD], e.g. 0.1307/0.3081.") from None
    return mean, std


def add_external_options(p: argparse.ArgumentParser) -> None:
    """--checkpoint's companion: --external FACTORY, each followed by its --weights / --name / --normalize."""
    p.add_argument("--external", action=ExternalAction, metavar="FACTORY",
                   help="any nn.Module: 'package.module:factory' (called without arguments) or 'torchvision:NAME' "
                        "(built with the dataset's classes); repeatable, mixed freely with --checkpoint")
    p.add_argument("--weights", action=ExternalAction, metavar="FILE",
                   help="weights of the --external before it: .safetensors, or a state dict (torch.load with "
                        "weights_only=True; other pickles are refused)")
    p.add_argument("--name", action=ExternalAction, metavar="LABEL", help="label of the --external before it")
    p.add_argument("--normalize", action=ExternalAction, metavar="MEAN/STD",
                   help="the --external before it expects normalised inputs, e.g. 0.4914,0.4822,0.4465/"
                        "0.247,0.2435,0.2616 (put inside, so attacks still see [0, 1] pixels)")


def parse_numbers(text: str, option: str, kind: type = float) -> list[Any]:
    """'3,5,7' -> [3, 5, 7] (ints must be integral)."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"{option}: cannot parse {part!r}; give numbers separated by commas.") from None
        if kind is int:
            if v != int(v):
                raise UserError(f"{option}: {part!r} is not an integer.")
            v = int(v)
        out.append(v)
    return out


def print_hygiene(hyg: Any) -> None:
    """One line of counts and one line per warn / fail, naming the model, the check, the attack it exercised and
    the eps (the terminal summary of every evaluating command)."""
    if hyg is None or hyg.empty:
        print("\nhygiene checks: none were run")
        return
    counts = hyg["status"].value_counts().to_dict()
    print(f"\nhygiene checks: {counts.get('pass', 0)} pass, {counts.get('warn', 0)} warn, {counts.get('fail', 0)} fail")
    for _, r in hyg[hyg["status"] != "pass"].iterrows():
        eps = "" if r["eps"] != r["eps"] else f" at eps {r['eps']:g}"
        attack = r.get("attack")
        on = f" [{attack}]" if isinstance(attack, str) and attack else ""
        print(f"  {str(r['status']).upper():4s} {r['model']}: {r['check']}{on}{eps} ({r['detail']}; "
              f"value {r['value']:.4g})")


def print_written(out: Any, names: list[str]) -> None:
    print(f"\nwrote {out}/" + ", ".join(names))
