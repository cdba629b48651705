"""What every runner shares: the models of a run, the fixed evaluation examples, fingerprints and seeds.

A run evaluates several models on the *same* examples (the first n of a fixed permutation of the test split),
so every comparison between models is paired. A `ModelSource` is one model of a run: a checkpoint directory
(its model.json read once, here) or, for any other nn.Module, an external model (see `runners.external`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserError, check_positive_int

from ..data import EVAL_PERMUTATION_SEED as SUBSET_SEED
from ..data import eval_permutation


def eval_indices(n_split: int, n: int) -> np.ndarray:
    """The first n examples of a fixed permutation (seed 0) of the split: the same for every model and run."""
    return eval_permutation(n_split)[:n]


def fingerprint(*parts: Any) -> str:
    """A short hash of everything a saved cell depends on (a changed setting invalidates the saved progress)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cell_seed(seed: int, eps: float, first: int) -> int:
    """Seed of one attacked batch: reproducible across runs and resumes."""
    return (seed * 1_000_003 + int(round(eps * 1e6)) * 7919 + first) % (2**31 - 1)


def model_labels(paths: list[str]) -> list[str]:
    """Short unique labels for checkpoints: their directory names, suffixed with #k when they repeat."""
    names = []
    for p in paths:
        path = Path(p).expanduser()
        if path.name in ("model.json", "model.safetensors"):
            path = path.parent
        names.append(path.resolve().name)
    return unique_labels(names)


def unique_labels(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for n in names:
        counts[n] = counts.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}#{counts[n]}")
    return out


@dataclass
class ModelSource:
    """One model of a run.

    Attributes:
        label: its name in every table.
        path: the checkpoint directory (or the external factory spec).
        meta: its description: a checkpoint's parsed model.json, or the synthesised description of an external
            model (model name, dataset, sha256 of its weights, `external: True`).
        loader: builds the model on a device (None: load the checkpoint at `path`).
    """

    label: str
    path: str
    meta: dict[str, Any]
    loader: Callable[[torch.device], nn.Module] | None = field(default=None, repr=False)

    def load(self, device: torch.device) -> nn.Module:
        if self.loader is not None:
            return self.loader(device)
        from ..checkpoint import load_model

        return load_model(self.path, device=device, meta=self.meta)


def checkpoint_sources(paths: list[str]) -> list[ModelSource]:
    """Read every checkpoint's model.json once (fails early on a missing, foreign or incomplete checkpoint)."""
    from ..checkpoint import read_meta

    return [ModelSource(lab, str(p), read_meta(p)) for lab, p in zip(model_labels(list(paths)), paths)]


@dataclass
class EvalSet:
    """The models and the examples they are evaluated on (the same for every model)."""

    sources: list[ModelSource]
    dataset: str
    split_seed: int | None
    input_size: list[int]
    num_classes: int
    indices: np.ndarray  # positions in the test split
    x: torch.Tensor  # (n, C, H, W) in [0, 1]
    y: torch.Tensor  # (n,)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.sources]

    @property
    def metas(self) -> list[dict[str, Any]]:
        return [s.meta for s in self.sources]


def shared_dataset(sources: list[ModelSource], dataset: str | None) -> tuple[str, int | None, list[int], int]:
    """(dataset, split seed, input size, classes) common to every model; a mismatch is a UserError."""
    if not sources:
        raise UserError("give at least one --checkpoint (or --external model).")
    names = {s.meta["dataset"]["name"] for s in sources}
    if dataset is not None:
        wrong = [s for s in sources if s.meta["dataset"]["name"] != dataset]
        if wrong:
            raise UserError(f"model {wrong[0].path} was trained on {wrong[0].meta['dataset']['name']!r}, not on "
                            f"--dataset {dataset!r}.")
    elif len(names) > 1:
        raise UserError(f"the models were trained on different datasets ({', '.join(sorted(names))}); evaluate them "
                        f"separately.")
    split_seeds = {s.meta["dataset"].get("split_seed") for s in sources if not s.meta.get("external")}
    if len(split_seeds) > 1:
        raise UserError("the checkpoints use different split seeds of the dataset; their test examples differ.")
    sizes = {tuple(s.meta["dataset"]["input_size"]) for s in sources}
    if len(sizes) > 1:
        raise UserError(f"the models take different input sizes ({', '.join(map(str, sorted(sizes)))}).")
    classes = {int(s.meta["dataset"]["num_classes"]) for s in sources}
    if len(classes) > 1:
        raise UserError(f"the models have different numbers of classes ({', '.join(map(str, sorted(classes)))}).")
    split_seed = split_seeds.pop() if split_seeds else 0
    return dataset or names.pop(), split_seed, list(sizes.pop()), classes.pop()


def test_split_size(dataset: str, data_root: str | None, input_size: list[int], split_seed: int | None) -> int:
    """Number of examples in a dataset's test split (loads it; cheap for mnist5k and cifar10)."""
    from ..data import load_dataset

    return len(load_dataset(dataset, "test", data_root, False, image_size=int(input_size[-1]),
                            split_seed=split_seed if split_seed is not None else 0))


def load_eval_set(sources: list[ModelSource], dataset: str | None, data_root: str | None, n: int) -> EvalSet:
    """Check the models share a dataset and split and load the first n examples of a fixed permutation of its test
    split. Raises UserError for a mismatch or an n larger than the split."""
    from ..data import load_dataset

    check_positive_int("--n", n)
    dname, split_seed, size, num_classes = shared_dataset(sources, dataset)
    test = load_dataset(dname, "test", data_root, False, image_size=int(size[-1]),
                        split_seed=split_seed if split_seed is not None else 0)
    if n > len(test):
        raise UserError(f"--n {n} is larger than the {len(test)} examples of the {dname} test split.")
    idx = eval_indices(len(test), n)
    x = torch.stack([test[int(i)][0] for i in idx])  # (n, C, H, W) in [0, 1]
    y = torch.as_tensor([int(test.labels[int(i)]) for i in idx], dtype=torch.long)
    return EvalSet(sources, dname, split_seed, size, num_classes, idx, x, y)


__all__ = ["EvalSet", "ModelSource", "SUBSET_SEED", "cell_seed", "checkpoint_sources", "eval_indices", "fingerprint",
           "dataset_description", "load_eval_set", "model_labels", "shared_dataset", "test_split_size",
           "unique_labels"]


def dataset_description(name: str, data_root: str | None, image_size: int = 224,
                        n_probe: int = 2) -> tuple[dict[str, Any], torch.Tensor]:
    """(the 'dataset' entry a model description needs, a few test images to probe a model with)."""
    from ..data import load_dataset

    test = load_dataset(name, "test", data_root, False, image_size=image_size)
    info = test.info
    probe = torch.stack([test[i][0] for i in range(min(n_probe, len(test)))])
    return {"name": name, "input_size": list(info.input_size), "num_classes": info.num_classes,
            "split_seed": info.split_seed}, probe
