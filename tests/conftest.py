"""Shared fixtures. Tests run on CPU with tiny shapes; `gpu` tests are skipped without a CUDA device."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("KINETO_LOG_LEVEL", "5")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two small checkpoints on mnist5k (a conv and an LR net at width 0.25, 2 epochs: about 80% and 60% held-out
    accuracy), trained once per session in about 10 s."""
    from robustbench_lr.training import TrainConfig, fit

    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for label, model in (("conv", "resnet_tiny"), ("lr", "lrnet_tiny")):
        cfg = TrainConfig(model=model, epochs=2, batch_size=32, model_kwargs={"width": 0.25}, device="cpu")
        fit(cfg, root / label, progress=False)
        out[label] = str(root / label)
    return out
