"""Datasets: the embedded mnist5k split, CIFAR-10 and image folders written in their real on-disk formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from robustbench_lr.data import DATASETS, load_dataset, mnist5k_split_indices


def test_mnist5k_stratified_deterministic_split():
    tr, te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(tr), len(te)) == (4000, 1000)
    assert tr.labels.bincount().tolist() == [400] * 10 and te.labels.bincount().tolist() == [100] * 10
    a_tr, a_te = mnist5k_split_indices(0)
    assert len(set(a_tr) & set(a_te)) == 0 and len(set(a_tr) | set(a_te)) == 5000
    b_tr, _ = mnist5k_split_indices(0)
    c_tr, _ = mnist5k_split_indices(1)
    assert np.array_equal(a_tr, b_tr) and not np.array_equal(a_tr, c_tr)
    x, y = tr[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    assert tr.info.class_names == tuple(str(i) for i in range(10)) and tr.info.input_size == (1, 28, 28)
    assert tr.info.split_seed == 0


def _write_cifar(root, n_train=6, n_test=4):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n, offset):
        data = np.zeros((n, 3072), dtype=np.uint8)
        data[:, :1024], data[:, 1024:2048], data[:, 2048:] = 10, 20, 30  # R, G, B planes
        data[:, 0] = np.arange(n) + offset
        return {b"batch_label": b"x", b"labels": [int(v) for v in rng.integers(0, 10, n)], b"data": data,
                b"filenames": [b"f%d" % i for i in range(n)]}

    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as fh:
            pickle.dump(batch(n_train, 10 * i), fh, protocol=2)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump(batch(n_test, 200), fh, protocol=2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n_train}, fh, protocol=2)


def test_cifar10_reads_the_python_batch_format(tmp_path):
    _write_cifar(tmp_path)
    tr = load_dataset("cifar10", "train", tmp_path)
    te = load_dataset("cifar10", "test", tmp_path)
    assert len(tr) == 30 and len(te) == 4
    x, _ = tr[0]
    assert x.shape == (3, 32, 32)
    # channel planes are R, G, B in that order (CHW), and pixel (0, 0) carries the running index
    assert x[1, 5, 5].item() == pytest.approx(20 / 255) and x[2, 5, 5].item() == pytest.approx(30 / 255)
    assert x[0, 0, 0].item() == pytest.approx(10 / 255)
    assert tr.info.class_names[3] == "cat" and tr.info.num_classes == 10 and tr.info.input_size == (3, 32, 32)


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    _write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(ValueError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", "test", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("setup,needle", [("missing", "does not exist"), ("empty", "is empty"), ("none", "needs --data-root")])
def test_cifar10_missing_data_says_how_to_get_it(tmp_path, setup, needle):
    root = {"missing": tmp_path / "nope", "empty": tmp_path, "none": None}[setup]
    with pytest.raises(ValueError, match=needle) as exc:
        load_dataset("cifar10", "train", root)
    assert "--download" in str(exc.value)


def test_cifar10_incomplete_folder(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        load_dataset("cifar10", "train", tmp_path)


def _write_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 24)):
    from PIL import Image

    for split in ("train", "val"):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = np.full((*size, 3), 40 + 100 * ci, dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_imagefolder_resizes_and_crops_to_the_model_size(tmp_path):
    _write_folder(tmp_path)
    tr = load_dataset("imagefolder", "train", tmp_path, image_size=16)
    te = load_dataset("imagefolder", "test", tmp_path, image_size=16)
    assert len(tr) == 6 and len(te) == 6
    x, y = te[5]
    assert x.shape == (3, 16, 16) and y == 1
    assert x.mean().item() == pytest.approx(140 / 255, abs=1e-2)
    assert tr.info.class_names == ("cat", "dog") and tr.info.input_size == (3, 16, 16)


def test_imagefolder_without_train_folder_cannot_train(tmp_path):
    _write_folder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "train")
    with pytest.raises(ValueError, match="train"):
        load_dataset("imagefolder", "train", tmp_path)


def test_unknown_dataset_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed values") as exc:
        load_dataset("mnist", "train")
    assert all(name in str(exc.value) for name in DATASETS)
