"""robustbench-lr: adversarial and geometric robustness of Local Relation Networks and their baselines.

Public API: `create_model`, `list_models`, `model_info`, `load_model`, and `benchmark` (evaluate any nn.Module).
Names are imported on first use, so `import robustbench_lr` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {"create_model": "models", "list_models": "models", "model_info": "models", "load_model": "checkpoint",
         "benchmark": "benchmark"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robustbench_lr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
