"""The model figures a report needs: pairwise weights, priors, attention shift under attack, attributions, and the
attention drift of every LR layer.

`figure_items(cfg)` yields `Row('figure', item)` and `Row('results', drift row)`, where an item is
{'file', 'title', 'caption', 'figure' (a matplotlib Figure), 'model', 'kind', 'index', 'fooled'}; the caller
writes the items (`results.write_figures`) and hands the other rows to `results.collect`. The example shown is, by default, the first example of the shared
evaluation subset that the attack fools for that model (clean-correct, adversarially wrong), so a figure
titled "attention shift under attack" shows an attack that worked; `index` overrides the choice, and a figure
of an example the attack did not fool says so in its title and caption.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..attacks.prepare import prepare_for_attack
from ..attacks.registry import AttackSpec, build_attack
from ..results.table import Row
from ..utils import resolve_device
from .common import EvalSet, ModelSource, checkpoint_sources, load_eval_set


@dataclass(frozen=True)
class FigureConfig:
    """Which models, which attack (PGD at `eps`, `steps` iterations) and which example: `index` is a test-split
    index (None: the first example of the evaluation subset that the attack fools)."""

    checkpoints: tuple[str, ...]
    eps: float
    norm: str = "linf"
    steps: int = 20
    seed: int = 0
    n: int = 64
    index: int | None = None
    dataset: str | None = None
    data_root: str | None = None
    device: str = "auto"


@dataclass
class Example:
    """The example a model's figures show, and what the attack did to it."""

    position: int  # in the attacked batch
    dataset_index: int
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float

    @property
    def fooled(self) -> bool:
        return self.clean_pred == self.label and self.adv_pred != self.label

    def describe(self, attack: str) -> str:
        verdict = "fooled" if self.fooled else "NOT fooled"
        return (f"test example {self.dataset_index} (label {self.label}), {attack}: {verdict}; prediction "
                f"{self.clean_pred} at {100 * self.clean_conf:.0f}% clean, {self.adv_pred} at "
                f"{100 * self.adv_conf:.0f}% adversarial")


def choose_example(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                   index: int | None = None) -> int:
    """Position of the first fooled example (clean-correct, adversarially wrong); `index` if given; else 0."""
    if index is not None:
        return int(index)
    fooled = (logits_clean.argmax(1) == y) & (logits_adv.argmax(1) != y)
    hits = fooled.nonzero().flatten()
    return int(hits[0]) if len(hits) else 0


@dataclass
class Selection:
    """The attacked evaluation batch of one model and the example its figures show."""

    x_adv: torch.Tensor  # (n, C, H, W): adversarial versions of the evaluation batch
    example: Example
    x: torch.Tensor  # (C, H, W): the example shown
    x_ex_adv: torch.Tensor  # (C, H, W): its adversarial version


def select_example(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, indices: Any, *, eps: float, norm: str,
                   steps: int, seed: int, num_classes: int, device: torch.device,
                   index: int | None = None) -> Selection:
    """Attack the batch with PGD and pick the example to show: the first fooled one, or test-split index `index`
    (which must be among `indices`)."""
    atk = build_attack(AttackSpec("pgd", norm=norm, steps=steps), model, eps, num_classes, seed)
    x_adv = atk(x.to(device), y.to(device), None, torch.arange(len(x))).detach().cpu()
    with torch.no_grad():
        pc, pa = model(x.to(device)).softmax(1).cpu(), model(x_adv.to(device)).softmax(1).cpu()
    pos = None
    if index is not None:
        hits = [i for i, d in enumerate(list(indices)) if int(d) == int(index)]
        if not hits:
            raise ValueError(f"test example {index} is not in the attacked batch")
        pos = hits[0]
    i = choose_example(pc, pa, y, pos)
    ex = Example(i, int(indices[i]), int(y[i]), int(pc[i].argmax()), float(pc[i].max()), int(pa[i].argmax()),
                 float(pa[i].max()))
    return Selection(x_adv, ex, x[i], x_adv[i])


def figure_items(cfg: FigureConfig, sources: list[ModelSource] | None = None) -> Iterator[Row]:
    """Yield the figure items and attention-drift rows of every model (see the module docstring)."""
    srcs = list(sources) if sources is not None else checkpoint_sources(list(cfg.checkpoints))
    device = resolve_device(cfg.device)
    es = load_eval_set(srcs, cfg.dataset, cfg.data_root, cfg.n)
    x, y, indices = with_example(es, cfg.index, cfg.data_root)
    attack = f"PGD-{cfg.steps} {cfg.norm} eps={cfg.eps:g}"
    from .. import viz

    for src in srcs:
        model = prepare_for_attack(src.load(device))
        sel = select_example(model, x, y, indices, eps=cfg.eps, norm=cfg.norm, steps=cfg.steps, seed=cfg.seed,
                             num_classes=es.num_classes, device=device, index=cfg.index)
        for item in _model_figures(model, src, sel.x, sel.x_ex_adv, sel.example, attack):
            yield Row("figure", item)
        if viz.lr_layers(model):
            n = len(es.y)
            for row in viz.attention_drift(model, x[:n], sel.x_adv[:n], attack="pgd", eps=cfg.eps, label=src.label):
                yield Row("results", {**row, "model_name": src.meta["model"]["name"]})


def with_example(es: EvalSet, index: int | None, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The evaluation batch, with test example `index` appended when it is not already in it."""
    indices = [int(i) for i in es.indices]
    if index is None or index in indices:
        return es.x, es.y, indices
    from ..data import load_dataset
    from ..errors import UserError

    test = load_dataset(es.dataset, "test", data_root, False, image_size=int(es.input_size[-1]),
                        split_seed=es.split_seed if es.split_seed is not None else 0)
    if not 0 <= index < len(test):
        raise UserError(f"--index {index} is out of range: the {es.dataset} test split has {len(test)} images "
                        f"(0..{len(test) - 1}).")
    xi, yi = test[index]
    return torch.cat([es.x, xi[None]]), torch.cat([es.y, torch.tensor([int(yi)])]), [*indices, index]


def _model_figures(model: torch.nn.Module, src: ModelSource, x: torch.Tensor, x_adv: torch.Tensor, ex: Example,
                   attack: str) -> list[dict[str, Any]]:
    from .. import viz

    label, name = src.label, src.meta["model"]["name"]
    desc = ex.describe(attack)
    tag = "" if ex.fooled else " (example NOT fooled)"
    figs: list[tuple[str, str, Any, str]] = []
    layers = viz.lr_layers(model)
    if layers:
        names = list(layers)
        layer = names[min(len(names) - 1, 2)]  # a layer early enough to be readable on the image
        geo = viz.layer_geometry(model)[layer]
        what = (f"{label} ({name}), layer {layer}: {geo.kernel_size}x{geo.kernel_size} window, stride {geo.stride}, "
                f"{geo.groups} groups")
        first = desc.split(",")[0]
        figs += [
            ("weights", f"Pairwise weights: {label}", viz.plot_pixel_weights(model, x, layer),
             f"{what}; softmax weights of every group at the centre output pixel of {first}."),
            ("overlay", f"Pairwise weights on the image: {label}", viz.plot_weights_overlay(model, x, layer),
             f"{what}; the same weights mapped to image scale through the network's strides."),
            ("priors", f"Learned geometry priors: {label}", viz.plot_geometry_priors(model, layer),
             f"{what}; softmax over the window of each group's learned prior."),
            ("evolution", f"Priors across layers: {label}", viz.plot_prior_evolution(model),
             f"{label} ({name}): mean prior, spread over groups and normalised entropy per LR layer."),
            ("shift", f"Attention shift under attack: {label}{tag}", viz.plot_attention_shift(model, x, x_adv, layer),
             f"{what}; {desc}: clean vs adversarial weights at the centre pixel."),
        ]
    figs.append(("attributions", f"Attributions (captum): {label}{tag}",
                 viz.plot_attributions(model, x, x_adv, ex.label),
                 f"{label} ({name}); {desc}: IntegratedGradients, Saliency, GradientShap and Occlusion of the true "
                 f"class on the clean and the adversarial image."))
    return [{"file": f"{label}_{key}.png", "title": title, "caption": cap, "figure": fig, "model": label,
             "kind": key, "index": ex.dataset_index, "fooled": ex.fooled} for key, title, fig, cap in figs]


__all__ = ["Example", "FigureConfig", "choose_example", "figure_items"]
