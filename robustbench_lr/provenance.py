"""Provenance: what produced a result (package versions, git commit, device, threads, the reproducibility scope).

Used by checkpoints (model.json), run directories (run.json) and the report alike, so every artefact states the
same facts the same way.

What reproduces bit for bit (measured, tests/test_train.py): the same command with the same seed, on the same
machine, with the same number of torch threads, gives identical weights and identical attack results. A
different thread count changes the order of floating-point sums in the CPU convolutions (oneDNN) and hence the
weights (about 1e-2 after one epoch of lrnet_tiny), so single-seed numbers do not transfer exactly between
machines: compare results over training seeds. `reproducibility()` states this next to every result.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

VERSION_PACKAGES = ("torch", "torchvision", "numpy", "torchattacks", "pyautoattack", "adv-lib", "captum")


def package_versions() -> dict[str, str]:
    """Versions of what produced a result: python, this package and its numerical dependencies (installed ones)."""
    from . import __version__

    out = {"robustbench_lr": __version__, "python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """HEAD of the checkout the package runs from ('+dirty' if modified), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device | str) -> str:
    """'cpu (x86_64, 2 torch threads)' or 'cuda:0 (NVIDIA H200)'."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"{dev} ({platform.machine()}, {torch.get_num_threads()} torch threads)"


def reproducibility(device: torch.device | str) -> str:
    """The scope within which the numbers of a run reproduce exactly."""
    dev = torch.device(device)
    what = f"{torch.get_num_threads()} torch threads" if dev.type == "cpu" else f"the same GPU model ({dev})"
    return (f"bit-identical for the same command and seeds on the same machine with {what}; other thread counts "
            f"or devices change floating-point sums, so compare results over seeds")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Everything a result file records about where it came from ('auto' is resolved)."""
    from .utils import resolve_device

    device = resolve_device(device if isinstance(device, torch.device) or device == "auto" or
                            str(device).startswith(("cpu", "cuda")) else "cpu")
    return {"versions": package_versions(), "git_commit": git_commit(), "device": str(torch.device(device)),
            "device_description": device_description(device), "torch_threads": torch.get_num_threads(),
            "reproducibility": reproducibility(device), "created": now()}


__all__ = ["device_description", "git_commit", "now", "package_versions", "provenance", "reproducibility"]
