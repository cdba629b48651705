"""Model zoo: every registered model, its parameter counts, and the registry's errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from robustbench_lr import create_model, list_models, model_info
from robustbench_lr.layers import LocalRelation2d
from robustbench_lr.models.profile import count_macs, count_params

ALL = list_models()


def _small_input(name: str, n: int = 2) -> torch.Tensor:
    c, h, w = model_info(name).input_size
    # ImageNet layouts are fully convolutional: 64 px exercises every stage at a fraction of the cost.
    side = 64 if h >= 224 else h
    return torch.rand(n, c, side, side)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    # zero_init_residual=False: with zero-initialised last BNs the residual branches get exactly zero grads.
    model = create_model(name, num_classes=7, zero_init_residual=False)
    x = _small_input(name)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_normalization_inside_and_in_state_dict(name):
    model = create_model(name)
    sd = model.state_dict()
    assert "normalize.mean" in sd and "normalize.std" in sd
    assert sd["normalize.mean"].numel() == model_info(name).input_size[0]


@pytest.mark.parametrize("name,target", [("resnet26", 16.0e6), ("lrnet26", 14.7e6), ("lrnet50", 23.3e6)])
def test_imagenet_parameter_counts_within_2_percent(name, target):
    n = count_params(create_model(name, num_classes=1000))
    assert abs(n - target) / target < 0.02, n


def test_macs_are_at_flop_parity():
    # papers.md §1.3: LR-Net-26 keeps ResNet-26's compute (~2.3 GMAC at 224 px)
    r = count_macs(create_model("resnet26"), (3, 224, 224))
    lr = count_macs(create_model("lrnet26"), (3, 224, 224))
    assert 2.2e9 < r < 2.5e9 and 2.2e9 < lr < 2.5e9


@pytest.mark.parametrize("k", [3, 5, 9])
def test_kernel_size_reaches_every_spatial_operator(k):
    lr = create_model("lrnet_tiny", kernel_size=k)
    assert {m.kernel_size for m in lr.modules() if isinstance(m, LocalRelation2d)} == {k}
    conv = create_model("resnet_tiny", kernel_size=k)
    spatial = [m for m in conv.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert spatial and {m.kernel_size for m in spatial} == {(k, k)}


def test_lr_options_are_plain_arguments():
    model = create_model("lrnet_tiny", channel_sharing=4, appearance="dot", border="zeros", geometry="table")
    layers = [m for m in model.modules() if isinstance(m, LocalRelation2d)]
    assert layers and all(m.channel_sharing == 4 and m.appearance == "dot" and m.border == "zeros"
                          and m.geometry == "table" for m in layers)
    assert model.model_kwargs["channel_sharing"] == 4


def test_lrnet26_widths_round_up_to_channel_sharing():
    model = create_model("lrnet26")
    assert model.spec.widths == (104, 200, 400, 800)


def test_list_models_pattern():
    assert list_models("lrnet*") == sorted(n for n in ALL if n.startswith("lrnet"))
    assert "resnet_tiny" in list_models("*tiny")


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="lrnet_tiny"):
        create_model("lrnet_tine")


def test_wrong_input_channels_raise():
    model = create_model("resnet_tiny")
    with pytest.raises(ValueError, match="in_chans=1"):
        model(torch.rand(1, 3, 28, 28))


def test_even_kernel_size_raises():
    with pytest.raises(ValueError, match="kernel_size"):
        create_model("lrnet_tiny", kernel_size=4)


def test_lr_option_on_conv_model_raises():
    with pytest.raises(ValueError, match="channel_sharing"):
        create_model("resnet_tiny", channel_sharing=4)


def test_in_chans_three_works_for_tiny():
    model = create_model("lrnet_tiny", in_chans=3)
    assert model(torch.rand(1, 3, 28, 28)).shape == (1, 10)
