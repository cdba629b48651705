"""Model registry: `register_model`, `create_model(name, **kwargs)`, `list_models(pattern)`.

A registered entry is a function `fn(**kwargs) -> nn.Module` plus a `ModelInfo` describing its defaults.
`create_model` fills in the defaults, builds the model and attaches `model.model_name` and
`model.model_kwargs` (the resolved, JSON-serialisable arguments), which is all a checkpoint needs to
rebuild it.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import UserError, suggest


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo tells about a model before building it.

    Attributes:
        name: registry name.
        family: operator family shown in tables ('conv', 'lr', or a context module such as 'glore').
        spatial: spatial operator of the skeleton ('conv' | 'lr').
        kernel_size: default k of the spatial operator.
        input_size: default (C, H, W) input.
        num_classes: default number of classes.
        description: one line.
        defaults: the default keyword arguments passed to the builder.
    """

    name: str
    family: str
    spatial: str
    kernel_size: int
    input_size: tuple[int, int, int]
    num_classes: int
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}


def register_model(info: ModelInfo) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under `info.name`."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if info.name in _MODELS:
            raise RuntimeError(f"model {info.name!r} registered twice")
        _MODELS[info.name] = (fn, info)
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard `pattern` (e.g. 'lrnet*'), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def _lookup(name: str) -> tuple[Callable[..., nn.Module], ModelInfo]:
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}.{suggest(name, _MODELS, cutoff=0.5)} Run `robustbench-lr models` to "
                        f"list them.")
    return _MODELS[name]


def model_info(name: str) -> ModelInfo:
    """The `ModelInfo` of a registered model (unknown names raise with close matches)."""
    return _lookup(name)[1]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(e) for e in v]
    if isinstance(v, list):
        return [_jsonable(e) for e in v]
    if isinstance(v, dict):
        return {k: _jsonable(e) for k, e in v.items()}
    return v


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None,
                 kernel_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see `list_models`).
        num_classes: classifier outputs (default: the entry's).
        in_chans: input channels, 1 or 3 (default: the entry's).
        kernel_size: k of every spatial operator (conv: k x k convs; LR: k x k windows).
        **kwargs: further builder arguments, e.g. `channel_sharing`, `appearance`, `width`, `mean`, `std`.

    Returns:
        The model, taking [0, 1] pixels (N, in_chans, H, W) and returning logits (N, num_classes).
    """
    fn, info = _lookup(name)
    resolved: dict[str, Any] = dict(info.defaults)
    resolved["num_classes"] = info.num_classes if num_classes is None else num_classes
    resolved["in_chans"] = info.input_size[0] if in_chans is None else in_chans
    resolved["kernel_size"] = info.kernel_size if kernel_size is None else kernel_size
    resolved.update(kwargs)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(resolved) - set(params))
        if unknown:
            raise UserError(f"model {name!r} does not take {', '.join(unknown)}; "
                            f"its arguments are: {', '.join(sorted(params))}.")
    model = fn(**resolved)
    model.model_name = name
    model.model_kwargs = _jsonable(resolved)
    return model
