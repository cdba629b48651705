"""Finding the local relation layers of a model and capturing their inputs and aggregation weights.

Shows nothing itself: the figure modules build on these helpers (grid placement is in `viz.geometry`).

- `lr_layers(model)`: the `LocalRelation2d` modules, ordered and named as in `named_modules()`.
- `figure_layer(model)`: the layer the report's figures show (`runners.figures` and `visualize` default);
- `resolve_layer(model, name)`: one of them by name; unknown names raise `UserError` listing the valid ones
  (closest first), and a model without LR layers raises an error pointing to captum attributions.
- `capture_inputs(model, x, names)`: one forward pass with pre-hooks that record those layers' inputs; the
  pass stops as soon as the last of them is recorded.
- `aggregation_weights(model, x, layer)`: that layer's softmax weights (N, G, k*k, Ho, Wo) on image `x`.

Status: working on the repository's LR models (tested on lrnet_tiny).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, suggest
from ..layers.local_relation import LocalRelation2d


# ---------------------------------------------------------------------------------------------- finding layers
def lr_layers(model: nn.Module) -> dict[str, LocalRelation2d]:
    """The model's local relation layers, in `named_modules()` order (e.g. 'stem.3', 'stages.0.0.spatial').
    A conv model has none (empty dict)."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, LocalRelation2d)}


def figure_layer(model: nn.Module) -> str | None:
    """The LR layer the report's figures show by default: the third one (early enough that its window is
    readable on the image, deep enough to have learned structure), or the last of fewer; None without LR layers."""
    names = list(lr_layers(model))
    return names[min(len(names) - 1, 2)] if names else None


def model_label(model: nn.Module) -> str:
    """The registry name of a model built by `create_model`, else its class name."""
    return str(getattr(model, "model_name", type(model).__name__))


def no_lr_layers_error(model: nn.Module, what: str = "pairwise weights") -> UserError:
    """The error for asking a model without LR layers for `what`; it points to captum attributions."""
    name = model_label(model)
    kind = "a model without LocalRelation2d modules"
    try:
        from ..models import model_info

        kind = f"a {model_info(name).spatial} model"
    except (UserError, ImportError):
        pass
    return UserError(f"{name} has no local relation layers (it is {kind}), so it has no {what}; use --kind "
                     f"attributions (robustbench_lr.viz.plot_attributions) to compare it with captum.")


def resolve_layer(model: nn.Module, layer: str | None, what: str = "pairwise weights") -> tuple[str, LocalRelation2d]:
    """(name, module) of LR layer `layer` (None: the first one). Unknown names raise `UserError` listing the
    valid names, closest matches first; a model without LR layers raises `no_lr_layers_error`."""
    layers = lr_layers(model)
    if not layers:
        raise no_lr_layers_error(model, what)
    if layer is None:
        name = next(iter(layers))
        return name, layers[name]
    if layer in layers:
        return layer, layers[layer]
    raise UserError(f"{model_label(model)} has no local relation layer {layer!r}.{suggest(str(layer), layers, 0.5)} "
                    f"Valid layers: {', '.join(layers)}.")


# ---------------------------------------------------------------------------------------------- running the model
def model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def as_batch(x: Tensor, model: nn.Module | None = None, name: str = "image") -> Tensor:
    """(C, H, W) or (N, C, H, W) [0, 1] pixels -> (N, C, H, W) float on the model's device."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor of [0, 1] pixels; got {type(x).__name__}.")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise UserError(f"{name} must be (C, H, W) or (N, C, H, W); got shape {tuple(x.shape)}.")
    if model is not None:
        in_chans = getattr(model, "in_chans", None)
        if in_chans is not None and x.shape[1] != in_chans:
            raise UserError(f"{name} has {x.shape[1]} channels but {model_label(model)} takes {in_chans} "
                            f"(shape {tuple(x.shape)}).")
        x = x.to(model_device(model))
    return x.float()


class _Stop(Exception):
    """Raised by a capture hook once every wanted input is recorded, to skip the rest of the forward pass."""


class eval_mode:
    """Context manager: the model in eval mode inside, its previous mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was = model, model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was)


@torch.no_grad()
def capture_inputs(model: nn.Module, x: Tensor, names: Iterable[str]) -> dict[str, Tensor]:
    """Inputs of the named LR layers on `x` (N, C, H, W): {name: (N, C_l, H_l, W_l)}, in eval mode, without
    gradients. The forward pass stops once all are recorded."""
    layers = lr_layers(model)
    wanted = list(dict.fromkeys(names))
    for n in wanted:
        if n not in layers:
            resolve_layer(model, n)  # raises with the valid names
    got: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_mod: nn.Module, args: tuple[Tensor, ...]) -> None:
            got[name] = args[0].detach().clone()  # later in-place ops must not change it
            if len(got) == len(wanted):
                raise _Stop

        return hook

    for n in wanted:
        handles.append(layers[n].register_forward_pre_hook(make_hook(n)))
    try:
        with eval_mode(model):
            model(as_batch(x, model))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in wanted if n not in got]
    if missing:
        raise RuntimeError(f"layers {missing} did not run in the forward pass")
    return got


@torch.no_grad()
def aggregation_weights(model: nn.Module, x: Tensor, layer: str | None = None) -> Tensor:
    """Softmax weights (N, G, k*k, Ho, Wo) of LR layer `layer` (None: the first) on [0, 1] images `x`
    ((C, H, W) or (N, C, H, W)); the k*k axis runs over offsets (dy, dx) row-major from (-r, -r)."""
    name, mod = resolve_layer(model, layer)
    inp = capture_inputs(model, x, [name])[name]  # (N, C_l, H_l, W_l)
    return mod.aggregation_weights(inp).float()


def all_aggregation_weights(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """{layer name: (N, G, k*k, Ho, Wo)} for every LR layer, from one forward pass."""
    layers = lr_layers(model)
    if not layers:
        raise no_lr_layers_error(model)
    inputs = capture_inputs(model, x, list(layers))
    with torch.no_grad():
        return {n: layers[n].aggregation_weights(inputs[n]).float() for n in layers}


__all__ = ["aggregation_weights", "all_aggregation_weights", "as_batch", "capture_inputs", "eval_mode", "lr_layers",
           "model_device", "model_label", "no_lr_layers_error", "resolve_layer"]
