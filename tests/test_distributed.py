"""torchrun: 2 CPU processes (gloo) train like 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from robustbench_lr.checkpoint import load_model, read_meta


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", KINETO_LOG_LEVEL="5")
    env.pop("WORLD_SIZE", None)
    return env


def _pair(tmp_path, name: str, args: list[str]) -> tuple[dict, dict]:
    one, two = tmp_path / f"{name}1", tmp_path / f"{name}2"
    single = subprocess.run([sys.executable, "-m", "robustbench_lr", "train", *args, "--out", str(one)],
                            capture_output=True, text=True, env=_env(), timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "robustbench_lr", "train", *args, "--out", str(two)],
                           capture_output=True, text=True, env=_env(), timeout=600)
    assert multi.returncode == 0, multi.stderr[-2000:]
    # rank 0 alone wrote the output: the two finished files, no leftovers
    expected = ["model.json", "model.safetensors"] + (["best.safetensors"] if "--adversarial" in args else [])
    assert sorted(p.name for p in two.iterdir()) == sorted(expected)
    return read_meta(one), read_meta(two)


BASE = ["--model", "resnet_tiny", "--device", "cpu", "--quiet", "--batch-size", "32"]


@pytest.mark.slow
def test_torchrun_steps_equal_single_process_steps(tmp_path):
    # 4 optimisation steps: same examples, augmentations and global-batch BatchNorm => same weights up to
    # float summation order. (Over many steps a float-order difference can flip the ReLU of a constant
    # MNIST background for a whole channel at once, so only the accuracy is compared for long runs.)
    one, two = _pair(tmp_path, "short", [*BASE, "--width", "0.25", "--epochs", "1", "--train-limit", "128"])
    assert two["training"]["world_size"] == 2 and one["training"]["world_size"] == 1
    m1, m2 = load_model(tmp_path / "short1"), load_model(tmp_path / "short2")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        if p1.is_floating_point():
            assert torch.allclose(p1, p2, rtol=1e-4, atol=1e-5), name


@pytest.mark.slow
def test_torchrun_accuracy_matches_single_process(tmp_path):
    one, two = _pair(tmp_path, "long", [*BASE, "--width", "0.5", "--epochs", "3", "--train-limit", "1024"])
    acc1, acc2 = one["metrics"]["test_accuracy"], two["metrics"]["test_accuracy"]
    assert acc1 > 0.25, acc1  # a run that learned something (chance is 0.10)
    assert abs(acc1 - acc2) <= 0.02, (acc1, acc2)
    assert load_model(tmp_path / "long2").num_classes == 10


@pytest.mark.slow
def test_torchrun_adversarial_training_equals_single_process(tmp_path):
    """PGD-AT under torchrun: each rank crafts the adversarial examples of its own shard, with the random start of
    each example seeded by its dataset index, so 2 processes craft what 1 process crafts and train to the same
    weights (up to float summation order), and the per-epoch robust check (summed over ranks) agrees."""
    adv = ["--adversarial", "pgd", "--eps", "0.1", "--attack-steps", "2", "--robust-eval-n", "32"]
    one, two = _pair(tmp_path, "adv", [*BASE, "--width", "0.25", "--epochs", "1", "--train-limit", "128", *adv])
    assert one["training"]["adversarial"]["method"] == two["training"]["adversarial"]["method"] == "pgd"
    h1, h2 = one["metrics"]["history"][0], two["metrics"]["history"][0]
    assert h1["check_n"] == h2["check_n"] == 32
    assert abs(h1["robust_accuracy"] - h2["robust_accuracy"]) <= 1 / 32, (h1, h2)
    m1, m2 = load_model(tmp_path / "adv1"), load_model(tmp_path / "adv2")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        if p1.is_floating_point():
            assert torch.allclose(p1, p2, rtol=1e-4, atol=1e-5), name
