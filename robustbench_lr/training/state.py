"""The resumable training state `last.pt` of an unfinished run, and what a run directory holds before training.

`last.pt` (weights, optimizer state, epoch, history and the best-robust weights so far) is written atomically
after every epoch and read back with `torch.load(weights_only=True)`: nothing but tensors and plain containers
is ever unpickled, and an unreadable, truncated or foreign file is refused with one clear message naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..checkpoint import META
from ..errors import UserError
from ..utils import atomic_write
from .config import TrainConfig, normalized_identity

log = logging.getLogger(__name__)
LAST = "last.pt"
KEYS = ("model", "optimizer", "epoch", "identity", "history")


def save_last(path: Path, model_state: dict[str, torch.Tensor], opt: torch.optim.Optimizer, epoch: int,
              cfg: TrainConfig, history: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
    state = {"model": model_state, "optimizer": opt.state_dict(), "epoch": epoch, "identity": cfg.identity(),
             "history": history, "best": best}
    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")


def load_last(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The saved state of an unfinished run, checked against `cfg`; UserError if unreadable or different."""
    restart = (f"delete {path} and run the same command without --resume to start the training again "
               f"from epoch 1")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle refused by weights_only, I/O error, ...
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a readable training state ({reason}); {restart}.") from None
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        raise UserError(f"{path} is not a robustbench-lr training state (it lacks "
                        f"{', '.join(k for k in KEYS if not isinstance(state, dict) or k not in state)}); {restart}.")
    saved_id, want = normalized_identity(state.get("identity")), cfg.identity()
    if saved_id != want:
        diff = sorted(k for k in set(saved_id) | set(want) if saved_id.get(k) != want.get(k))
        raise UserError(f"cannot resume {path.parent}: the unfinished run used different settings "
                        f"({', '.join(diff)}).")
    return state


def prepare(cfg: TrainConfig, out: Path, resume: bool) -> tuple[str, dict[str, Any] | None]:
    """Check the output directory before any work: ('fresh' | 'resume' | 'done', the saved state to resume)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory.")
    if (out / META).is_file():
        if not resume:
            raise UserError(f"{out} already holds a finished model; pass --resume to reuse it, or choose another --out.")
        return "done", None
    if (out / LAST).is_file():
        if not resume:
            raise UserError(f"{out} holds an unfinished run ({LAST}); pass --resume to continue it, or choose another "
                            f"--out.")
        return "resume", load_last(out / LAST, cfg)
    return "fresh", None


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


__all__ = ["LAST", "cpu_state", "load_last", "prepare", "save_last"]
