"""Any nn.Module as a model of a run: a factory given by name, weights from a file, or a module in memory.

An external model is described like a checkpoint (`ModelSource.meta`, with `external: True`, the factory, the
weights file and the sha256 of its tensors), so reports, paired tests and sweeps treat it exactly like a zoo
model. It must map [0, 1] images (N, C, H, W) to logits (N, num_classes); a model that expects normalised inputs
gets `normalize=(mean, std)`, which puts the normalisation inside (attacks still see [0, 1] pixels).

Factories: 'package.module:callable' (called with no arguments) or 'torchvision:NAME' (a torchvision
architecture built with `num_classes` of the dataset and no pretrained weights). Weights: a safetensors file,
or a state dict read with `torch.load(weights_only=True)` (a pickle of anything else is refused, never run);
'state_dict' / 'model' wrappers and 'module.' prefixes are unwrapped; every key must fit.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from .common import ModelSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalModel:
    """An external model: `factory` ('pkg.mod:fn' or 'torchvision:NAME'), optional `weights` file, a `name` for
    the tables (default: the factory's last part), and `normalize` = (mean, std) if it expects normalised input."""

    factory: str
    weights: str | None = None
    name: str | None = None
    normalize: tuple[Sequence[float], Sequence[float]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.factory.replace(":", ".").rsplit(".", 1)[-1]


class Normalized(nn.Module):
    """(x - mean) / std before the wrapped model, so it takes [0, 1] pixels."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        from ..layers.normalize import InputNormalize

        self.normalize, self.model = InputNormalize(mean, std), model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def first_line(exc: BaseException) -> str:
    """'TypeName: first line of the message' (at most 200 characters), for one-line user errors."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def build_external(spec: ExternalModel, num_classes: int) -> nn.Module:
    """The module of a factory spec, in whatever mode the factory left it (UserError, naming the factory and the
    first line of the error, if it cannot be imported, raises while importing or raises when called)."""
    mod_name, sep, attr = spec.factory.partition(":")
    if not sep or not mod_name or not attr:
        raise UserError(f"--external {spec.factory!r}: write it as 'package.module:factory' or 'torchvision:NAME'.")
    if mod_name == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model(attr, weights=None, num_classes=num_classes, **spec.kwargs)
        except Exception as exc:  # unknown name (ValueError), bad kwargs (TypeError), anything its builder raises
            msg = f"--external {spec.factory!r}: torchvision cannot build {attr!r} ({first_line(exc)})."
            raise UserError(msg) from None
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"--external {spec.factory!r}: cannot import {mod_name!r} ({exc}).") from None
    except Exception as exc:  # the module itself is broken: SyntaxError, NameError, an ImportError inside, ...
        raise UserError(f"--external {spec.factory!r}: importing {mod_name!r} failed ({first_line(exc)}).") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"--external {spec.factory!r}: {mod_name} has no callable {attr!r}.")
    try:
        model = fn(**spec.kwargs)
    except Exception as exc:
        raise UserError(f"--external {spec.factory!r}: the factory raised {first_line(exc)}.") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--external {spec.factory!r}: the factory returned a {type(model).__name__}, not an nn.Module.")
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a weights-only torch file; anything else is a UserError."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--weights {p} does not exist.")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"--weights {p} is not a readable safetensors file ({exc}).") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain containers
        raise UserError(f"--weights {p} was refused: it is not a plain state dict that torch.load(weights_only=True) "
                        f"can read ({first_line(exc)}). Save the weights with torch.save(model.state_dict(), ...) or "
                        f"as safetensors.") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"--weights {p} does not hold a state dict (a mapping of names to tensors).")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Load a state dict strictly; a mismatch names the first offending key."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shape = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if shape:
        k = shape[0]
        raise UserError(f"--weights {path} does not fit the architecture: {k!r} has shape {tuple(state[k].shape)}, "
                        f"the model expects {tuple(want[k].shape)}.")
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise UserError(f"--weights {path} does not fit the architecture: first {what} "
                        f"({len(missing)} missing, {len(extra)} unexpected).")
    model.load_state_dict(state, strict=True)


def describe(label: str, factory: str, weights: str | None, model: nn.Module, dataset: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint-like description of an external model (what every results row and run.json records)."""
    from ..checkpoint import weights_sha256

    return {"external": True, "model": {"name": label, "kwargs": {}, "family": "external", "factory": factory},
            "weights_file": weights, "weights_sha256": weights_sha256(model.state_dict()), "dataset": dataset,
            "training": {"adversarial": {"method": "external"}}}


def check_output(model: nn.Module, x: torch.Tensor, num_classes: int, label: str) -> None:
    """The model maps (N, C, H, W) [0, 1] images to (N, num_classes) logits; warns on randomness or softmax."""
    try:
        with torch.no_grad():
            out = model(x)
            again = model(x)
    except Exception as exc:  # whatever the user's forward raises (shape errors, a wrong dtype, ...)
        msg = f"model {label!r} failed on a batch of {tuple(x.shape)} [0, 1] images ({first_line(exc)})."
        raise UserError(msg) from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(x), num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model {label!r} returned {shape} for a batch of {tuple(x.shape)}; it must return logits "
                        f"of shape (N, {num_classes}).")
    if not torch.equal(out, again):
        log.warning("model %s is not deterministic (two forward passes differ): evaluate randomised defences with "
                    "EoT (AutoAttack version 'rand'); the hygiene check 'deterministic' will fail", label)
    if bool(((out >= 0) & (out <= 1)).all()) and torch.allclose(out.sum(1), torch.ones(len(x)), atol=1e-4):
        log.warning("model %s seems to output probabilities (softmax); attacks need logits", label)


def module_source(model: nn.Module, label: str, dataset: dict[str, Any], probe: torch.Tensor, *,
                  factory: str = "<in-memory nn.Module>", weights: str | None = None,
                  normalize: tuple[Sequence[float], Sequence[float]] | None = None) -> ModelSource:
    """A ModelSource for a module: normalisation wrapped in, output checked on `probe`, train mode warned about."""
    if model.training:
        log.warning("model %s is in training mode; it is evaluated in eval mode (model.eval())", label)
    if normalize is not None:
        model = Normalized(model, *normalize).to(probe.device)
    model.eval()
    check_output(model, probe, int(dataset["num_classes"]), label)
    meta = describe(label, factory, weights, model, dataset)
    return ModelSource(label, factory, meta, loader=lambda device: model.to(device).eval())


def external_source(spec: ExternalModel, dataset: dict[str, Any], probe: torch.Tensor) -> ModelSource:
    """Build, load and check an external model against the dataset it is evaluated on.

    Factories build modules in training mode; the user never held this one, so it is put in eval mode here
    without the training-mode warning that `module_source` gives a module passed in by the user."""
    model = build_external(spec, int(dataset["num_classes"])).eval()
    if spec.weights:
        load_weights(model, read_weights(spec.weights), spec.weights)
    return module_source(model, spec.label, dataset, probe, factory=spec.factory, weights=spec.weights,
                         normalize=spec.normalize)


__all__ = ["ExternalModel", "Normalized", "build_external", "external_source", "first_line", "module_source",
           "read_weights"]
