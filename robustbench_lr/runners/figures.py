"""The model figures a report needs: pairwise weights, priors, attention shift under attack, attributions, and the
attention drift of every LR layer.

`figure_items(cfg, sources)` yields `Row('figure', item)` and `Row('results', drift row)`. An item is
{'file', 'title', 'caption', 'figure' (a matplotlib Figure), 'model', 'kind', 'index', 'fooled',
'shared_example', 'attack', 'norm', 'eps', 'steps', 'seed', 'layer'}: everything `visualize --run` needs to redraw
it (the caller writes the items with `results.write_figures`, which keeps every field but the Figure in
figures.json). Drift rows carry the attack's norm and steps.

The example shown is, by default, the same for every model: the first example of the shared evaluation subset
that is clean-correct and that the attack fools for every model, so the models' figures show one image and a
figure titled "attention shift under attack" shows an attack that worked. Where no example is fooled for every
model, each model shows its own first fooled example, and the captions say so. `index` overrides the choice; a
figure of an example the attack did not fool says so in its title and caption.

`informative_eps(results, eps)` is the eps of the demo's figures: where the models differ most under PGD.

Status: working; the choice of the example is tested in tests/test_figures_i14.py and tests/test_viz.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..attacks.prepare import prepare_for_attack
from ..attacks.registry import AttackSpec, build_attack
from ..results.table import Row
from ..utils import resolve_device
from .common import EvalSet, ModelSource, checkpoint_sources, load_eval_set


@dataclass(frozen=True)
class FigureConfig:
    """Which models, which attack (PGD at `eps` in pixel values of [0, 1] under `norm`, `steps` iterations, attack
    seed `seed`) and which example: `index` is a test-split index (None: the first example of the `n`-example
    evaluation subset that the attack fools for every model; see the module docstring)."""

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
class Attacked:
    """One model's attacked evaluation batch: adversarial images and softmax probabilities, clean and adversarial."""

    x_adv: torch.Tensor  # (n, C, H, W) in [0, 1]
    p_clean: torch.Tensor  # (n, classes)
    p_adv: torch.Tensor  # (n, classes)

    def fooled(self, y: torch.Tensor) -> torch.Tensor:
        """(n,) bool: clean-correct and adversarially wrong."""
        return (self.p_clean.argmax(1) == y) & (self.p_adv.argmax(1) != y)

    def example(self, i: int, y: torch.Tensor, indices: Sequence[int]) -> Example:
        pc, pa = self.p_clean[i], self.p_adv[i]
        return Example(i, int(indices[i]), int(y[i]), int(pc.argmax()), float(pc.max()), int(pa.argmax()),
                       float(pa.max()))


def attack_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str, steps: int,
                 seed: int, num_classes: int, device: torch.device) -> Attacked:
    """PGD (`steps` iterations, bound `eps` in pixel values of [0, 1] under `norm`) on the whole batch."""
    atk = build_attack(AttackSpec("pgd", norm=norm, steps=steps), model, eps, num_classes, seed)
    x_adv = atk(x.to(device), y.to(device), None, torch.arange(len(x))).detach().cpu()
    with torch.no_grad():
        pc, pa = model(x.to(device)).softmax(1).cpu(), model(x_adv.to(device)).softmax(1).cpu()
    return Attacked(x_adv, pc, pa)


def position_of(indices: Sequence[int], index: int | None) -> int | None:
    """The batch position of test-split index `index` (None stays None); ValueError if it is not in the batch."""
    if index is None:
        return None
    hits = [i for i, d in enumerate(list(indices)) if int(d) == int(index)]
    if not hits:
        raise ValueError(f"test example {index} is not in the attacked batch")
    return hits[0]


def shared_positions(attacked: list[Attacked], y: torch.Tensor, pos: int | None = None) -> tuple[list[int], bool]:
    """The batch position of the example each model shows, and whether it is one example for all of them.

    `pos` (a forced choice) for every model; else the first example that is clean-correct and fooled for every
    model; else (none is) each model's own first fooled example (`choose_example`)."""
    if pos is not None:
        return [int(pos)] * len(attacked), True
    every = torch.stack([a.fooled(y) for a in attacked]).all(0)
    hits = every.nonzero().flatten()
    if len(hits):
        return [int(hits[0])] * len(attacked), True
    own = [choose_example(a.p_clean, a.p_adv, y) for a in attacked]
    return own, len(set(own)) == 1


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
    """One model: attack the batch with PGD and pick the example to show: the first fooled one, or test-split
    index `index` (which must be among `indices`)."""
    att = attack_batch(model, x, y, eps=eps, norm=norm, steps=steps, seed=seed, num_classes=num_classes,
                       device=device)
    i = shared_positions([att], y, position_of(indices, index))[0][0]
    return Selection(att.x_adv, att.example(i, y, indices), x[i], att.x_adv[i])


def informative_eps(results: pd.DataFrame, eps: Sequence[float], attack: str = "pgd") -> float:
    """The eps of a report's model figures: the eps > 0 where the models' accuracies under `attack` differ most
    (the most informative one), else (no spread, or no results) the middle of the positive `eps`.

    Args:
        results: the run's tidy results table (columns attack, eps, accuracy).
        eps: the eps of the run, in pixel values of [0, 1].
    """
    positive = sorted(float(e) for e in eps if e > 0)
    if not positive:
        raise ValueError("the figures need an eps > 0")
    r = results[(results["attack"] == attack) & (results["eps"] > 0)] if "attack" in results else results.iloc[:0]
    spread = r.groupby("eps")["accuracy"].agg(lambda a: a.max() - a.min())
    return float(spread.idxmax()) if not spread.empty and spread.max() > 0 else positive[len(positive) // 2]


def _choice_note(index: int | None, same: bool, n_models: int) -> str:
    """The caption's sentence on how the example was chosen."""
    if index is not None:
        return f"Test example {index}, chosen by index."
    if not same:
        return ("No example of the evaluation subset is fooled for every model, so each model shows its own first "
                "fooled example: the models' figures show different images.")
    if n_models > 1:
        return "The same example for every model: the first of the evaluation subset that the attack fools for all."
    return "The first example of the evaluation subset that the attack fools."


def figure_items(cfg: FigureConfig, sources: list[ModelSource] | None = None) -> Iterator[Row]:
    """Yield the figure items and attention-drift rows of every model (see the module docstring); `sources`
    (from `checkpoint_sources`) avoids reading the checkpoints' model.json again."""
    srcs = list(sources) if sources is not None else checkpoint_sources(list(cfg.checkpoints))
    device = resolve_device(cfg.device)
    es = load_eval_set(srcs, cfg.dataset, cfg.data_root, cfg.n)
    x, y, indices = with_example(es, cfg.index, cfg.data_root)
    attack = f"PGD-{cfg.steps} {cfg.norm} eps={cfg.eps:g}"
    from .. import viz

    models = [prepare_for_attack(src.load(device)) for src in srcs]
    attacked = [attack_batch(m, x, y, eps=cfg.eps, norm=cfg.norm, steps=cfg.steps, seed=cfg.seed,
                             num_classes=es.num_classes, device=device) for m in models]
    positions, same = shared_positions(attacked, y, position_of(indices, cfg.index))
    note = _choice_note(cfg.index, same, len(srcs))
    record = {"attack": "pgd", "norm": cfg.norm, "eps": float(cfg.eps), "steps": int(cfg.steps),
              "seed": int(cfg.seed), "shared_example": same}
    for src, model, att, i in zip(srcs, models, attacked, positions):
        ex = att.example(i, y, indices)
        for item in _model_figures(model, src, x[i], att.x_adv[i], ex, attack, note):
            yield Row("figure", {**item, **record})
        if viz.lr_layers(model):
            n = len(es.y)
            for row in viz.attention_drift(model, x[:n], att.x_adv[:n], attack="pgd", eps=cfg.eps, label=src.label):
                yield Row("results", {**row, "model_name": src.meta["model"]["name"], "norm": cfg.norm,
                                      "steps": int(cfg.steps)})


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
                   attack: str, note: str) -> list[dict[str, Any]]:
    """The figure items of one model (image x (C, H, W) and its adversarial version); `note` (how the example was
    chosen) ends the caption of every figure that shows the example."""
    from .. import viz
    from ..viz.layers import figure_layer

    label, name = src.label, src.meta["model"]["name"]
    desc = ex.describe(attack)
    tag = "" if ex.fooled else " (example NOT fooled)"
    figs: list[tuple[str, str, Any, str]] = []
    layer = figure_layer(model)  # the third LR layer; None without LR layers
    if layer is not None:
        geo = viz.layer_geometry(model)[layer]
        what = (f"{label} ({name}), layer {layer}: {geo.kernel_size}x{geo.kernel_size} window, stride {geo.stride}, "
                f"{geo.groups} groups")
        first = desc.split(",")[0]
        figs += [
            ("weights", f"Pairwise weights: {label}", viz.plot_pixel_weights(model, x, layer),
             f"{what}; softmax weights of every group at the centre output pixel of {first}. {note}"),
            ("overlay", f"Pairwise weights on the image: {label}", viz.plot_weights_overlay(model, x, layer),
             f"{what}; the same weights of {first} mapped to image scale through the network's strides. {note}"),
            ("priors", f"Learned geometry priors: {label}", viz.plot_geometry_priors(model, layer),
             f"{what}; softmax over the window of each group's learned prior."),
            ("evolution", f"Priors across layers: {label}", viz.plot_prior_evolution(model),
             f"{label} ({name}): mean prior, spread over groups and normalised entropy per LR layer."),
            ("shift", f"Attention shift under attack: {label}{tag}", viz.plot_attention_shift(model, x, x_adv, layer),
             f"{what}; {desc}: clean vs adversarial weights at the centre pixel. {note}"),
        ]
    figs.append(("attributions", f"Attributions (captum): {label}{tag}",
                 viz.plot_attributions(model, x, x_adv, ex.label),
                 f"{label} ({name}); {desc}: IntegratedGradients, Saliency, GradientShap and Occlusion of the true "
                 f"class on the clean and the adversarial image. {note}"))
    return [{"file": f"{label}_{key}.png", "title": title, "caption": cap, "figure": fig, "model": label,
             "kind": key, "index": ex.dataset_index, "fooled": ex.fooled, "layer": layer}
            for key, title, fig, cap in figs]


__all__ = ["Attacked", "Example", "FigureConfig", "attack_batch", "choose_example", "figure_items", "informative_eps",
           "select_example", "shared_positions"]
