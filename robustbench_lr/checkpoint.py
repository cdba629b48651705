"""Checkpoints: `model.safetensors` (weights) + `model.json` (everything needed to rebuild and trust them).

`model.json` holds the model name and kwargs, the dataset and its split seed, the training config, the
metrics, package versions, the git commit (if the package runs from a checkout) and the sha256 of the
weights file. `load_model` rebuilds the model from the JSON, checks the hash, then loads the weights with
safetensors (no pickle is ever read), refusing any missing, unexpected or mis-shaped tensor.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError
from .utils import write_json_atomic

FORMAT = "robustbench-lr/checkpoint-1"
WEIGHTS = "model.safetensors"
META = "model.json"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of what produced a result: python, torch, torchvision, numpy and this package."""
    import numpy
    import torchvision

    from . import __version__

    return {"robustbench_lr": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__}


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


def _resolve(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a path to its model.json / model.safetensors -> the directory."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (META, WEIGHTS):
        p = p.parent
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist.")
    if not (p / META).is_file():
        hint = " (an unfinished training run: continue it with `robustbench-lr train ... --resume`)" \
            if (p / "last.pt").is_file() else ""
        raise UserError(f"{p} is not a finished checkpoint: {META} is missing{hint}.")
    if not (p / WEIGHTS).is_file():
        raise UserError(f"checkpoint {p}: {WEIGHTS} is missing.")
    return p


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed model.json of a checkpoint directory."""
    p = _resolve(path)
    try:
        meta = json.loads((p / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p / META} is not valid JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise UserError(f"{p / META} is not a robustbench-lr checkpoint description (format {FORMAT!r}).")
    return meta


def save_checkpoint(out_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write model.safetensors then model.json (both atomically); returns the JSON written.

    `meta` must hold 'dataset', 'training' and 'metrics'; the model name/kwargs, versions, git commit,
    creation time and weights hash are added here.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT, "model": getattr(model, "model_name", "")})
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, out / WEIGHTS)
    full = {
        "format": FORMAT,
        "model": {"name": model.model_name, "kwargs": model.model_kwargs},
        **meta,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": digest,
    }
    write_json_atomic(out / META, full)
    return full


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", check_hash: bool = True) -> nn.Module:
    """Rebuild a model from a checkpoint directory (or its model.json) and load its weights.

    The returned model is in eval mode and carries `.checkpoint_meta` (the parsed model.json) and
    `.checkpoint_path`. Raises `UserError` if the weights' sha256 differs from the JSON's, if the file is
    not valid safetensors, or if any tensor is missing, unexpected or of the wrong shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import create_model

    p = _resolve(path)
    meta = read_meta(p)
    wpath = p / WEIGHTS
    if check_hash:
        digest = sha256_file(wpath)
        if digest != meta.get("weights_sha256"):
            raise UserError(f"{wpath} does not match the sha256 recorded in {p / META} (recorded "
                            f"{str(meta.get('weights_sha256'))[:12]}..., file {digest[:12]}...): the weights were "
                            f"changed or corrupted.")
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{wpath} is not a readable safetensors file ({exc}).") from None
    spec = meta["model"]
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except TypeError as exc:
        raise UserError(f"{p / META}: cannot build model {spec.get('name')!r} from its kwargs ({exc}).") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k, got, want = shapes[0]
            parts.append(f"tensor {k!r} has shape {got} in {WEIGHTS} but the model described by {META} expects "
                         f"{want}" + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
        if missing:
            parts.append(f"missing tensors: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected tensors: {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
        raise UserError(f"checkpoint {p}: {META} and {WEIGHTS} do not match: " + "; ".join(parts) + ".")
    model.load_state_dict(state, strict=True)
    model.eval()
    model.checkpoint_meta = meta
    model.checkpoint_path = str(p)
    return model.to(device)
