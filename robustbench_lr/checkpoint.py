"""Checkpoints: `model.safetensors` (the last epoch's weights), `best.safetensors` (adversarial training: the
best-robust epoch's weights) and `model.json` (everything needed to rebuild and trust them).

`model.json` holds the model name and kwargs, the dataset and its split seed, the training config and threat
model, the metrics, the provenance (versions, git commit, device, torch threads) and, per weights file, its
sha256. The hash is a function of the tensors alone (`weights_sha256`: names, dtypes, shapes and bytes, in
sorted name order), so identical weights give the identical hash whatever the file's metadata or key order.
`load_model` rebuilds the model from the JSON, checks the hash, then loads the weights with safetensors (no
pickle is ever read), refusing any missing, unexpected or mis-shaped tensor. It loads the best-robust weights
when there are any (and says so), the last ones otherwise; `which='last'` asks for the last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError, check_choice
from .utils import atomic_write, write_json_atomic

log = logging.getLogger(__name__)
FORMAT = "robustbench-lr/checkpoint-1"
WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
META = "model.json"
HASH_METHOD = "tensors-sha256-v1"
REQUIRED = {"model": ("name",), "dataset": ("name", "input_size", "num_classes")}


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order: a function of the weights
    alone."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a path to its model.json / model.safetensors -> the directory."""
    p = Path(path).expanduser()
    if p.is_file() and p.name in (META, WEIGHTS, BEST):
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
    """The parsed and checked model.json of a checkpoint directory (UserError naming what is wrong)."""
    p = _resolve(path)
    try:
        meta = json.loads((p / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p / META} is not valid JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{p / META} is not a robustbench-lr checkpoint description (format {FORMAT!r}).")
    for key, subkeys in REQUIRED.items():
        if not isinstance(meta.get(key), dict):
            raise UserError(f"{p / META} lacks the required key {key!r}; the checkpoint is incomplete (retrain it).")
        missing = [s for s in subkeys if s not in meta[key]]
        if missing:
            raise UserError(f"{p / META} lacks the required key {key}.{missing[0]}; the checkpoint is incomplete "
                            f"(retrain it).")
    if not isinstance(meta.get("weights_sha256"), str):
        raise UserError(f"{p / META} lacks the required key 'weights_sha256'; the checkpoint is incomplete.")
    return meta


def _write_weights(path: Path, state: dict[str, torch.Tensor], name: str) -> str:
    from safetensors.torch import save

    blob = save(state, metadata={"format": FORMAT, "model": name})
    atomic_write(path, lambda fh: fh.write(blob), mode="wb")
    return weights_sha256(state)


def save_checkpoint(out_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any],
                    best: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write model.safetensors (and best.safetensors), then model.json, all atomically; returns the JSON written.

    `meta` must hold 'dataset', 'training' and 'metrics'; the model name/kwargs, provenance and weights hashes
    are added here. `best` = {'model': state dict, 'epoch', 'robust_accuracy', ...} of the best-robust epoch.
    """
    from .provenance import provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = {"last": {"file": WEIGHTS, "sha256": _write_weights(out / WEIGHTS, state, model.model_name)}}
    if best is not None:
        info = {k: v for k, v in best.items() if k != "model"}
        weights["best"] = {"file": BEST, **info,
                           "sha256": _write_weights(out / BEST, dict(best["model"]), model.model_name)}
    prov = provenance(meta.get("training", {}).get("device", "cpu"))
    full = {"format": FORMAT, "model": {"name": model.model_name, "kwargs": model.model_kwargs}, **meta,
            "versions": prov["versions"], "git_commit": prov["git_commit"], "created": prov["created"],
            "provenance": prov, "weights_hash_method": HASH_METHOD, "weights_sha256": weights["last"]["sha256"],
            "weights": weights}
    write_json_atomic(out / META, full)
    return full


def _verify(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any], recorded: str | None) -> None:
    if meta.get("weights_hash_method") == HASH_METHOD:
        digest = weights_sha256(state)
    else:  # checkpoints written before the tensor hash recorded the file's sha256
        digest = _file_sha256(path)
    if digest != recorded:
        raise UserError(f"{path} does not match the sha256 recorded in {path.parent / META} (recorded "
                        f"{str(recorded)[:12]}..., weights {digest[:12]}...): the weights were changed or corrupted.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc}).") from None


def _check_fits(p: Path, model: nn.Module, state: dict[str, torch.Tensor], fname: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        k, got, want = shapes[0]
        parts.append(f"tensor {k!r} has shape {got} in {fname} but the model described by {META} expects "
                     f"{want}" + (f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"missing tensors: {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        parts.append(f"unexpected tensors: {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    raise UserError(f"checkpoint {p}: {META} and {fname} do not match: " + "; ".join(parts) + ".")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", check_hash: bool = True,
               meta: dict[str, Any] | None = None, which: str = "auto") -> nn.Module:
    """Rebuild a model from a checkpoint directory (or its model.json) and load its weights.

    Args:
        path: the checkpoint directory.
        device: where to put the model.
        check_hash: verify the weights against the sha256 recorded in model.json.
        meta: the already parsed model.json (skips reading it again).
        which: 'auto' (the best-robust weights of an adversarially trained model, else the last), 'best' or 'last'.

    The returned model is in eval mode and carries `.checkpoint_meta`, `.checkpoint_path` and `.checkpoint_weights`
    ('best' or 'last'). Raises `UserError` if the weights' sha256 differs from the JSON's, if the file is not valid
    safetensors, or if any tensor is missing, unexpected or of the wrong shape.
    """
    from .models import create_model

    check_choice("which", which, ("auto", "best", "last"))
    p = _resolve(path)
    meta = meta if meta is not None else read_meta(p)
    entries = meta.get("weights") or {"last": {"file": WEIGHTS, "sha256": meta.get("weights_sha256")}}
    if which == "best" and "best" not in entries:
        raise UserError(f"checkpoint {p} has no best-robust weights (it was not trained adversarially).")
    chosen = "best" if which in ("auto", "best") and "best" in entries else "last"
    entry = entries[chosen]
    wpath = p / entry["file"]
    state = _read_weights(wpath) if wpath.is_file() else None
    if state is None:
        raise UserError(f"checkpoint {p}: {entry['file']} is missing.")
    if check_hash:
        _verify(wpath, state, meta, entry.get("sha256"))
    spec = meta["model"]
    try:
        model = create_model(spec["name"], **spec.get("kwargs", {}))
    except TypeError as exc:
        raise UserError(f"{p / META}: cannot build model {spec.get('name')!r} from its kwargs ({exc}).") from None
    _check_fits(p, model, state, entry["file"])
    model.load_state_dict(state, strict=True)
    model.eval()
    model.checkpoint_meta, model.checkpoint_path, model.checkpoint_weights = meta, str(p), chosen
    if chosen == "best":
        log.info("%s: loaded the best-robust weights (epoch %s of %s, robust accuracy %.1f%% in training's check); "
                 "which='last' loads the last epoch", p.name, entry.get("epoch"), meta.get("training", {})
                 .get("config", {}).get("epochs"), 100 * float(entry.get("robust_accuracy", float("nan"))))
    return model.to(device)


__all__ = ["BEST", "META", "WEIGHTS", "load_model", "read_meta", "save_checkpoint", "weights_sha256"]
