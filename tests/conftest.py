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
