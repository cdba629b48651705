"""Benchmarks of issue 15: the layer bench (whole LocalRelation2d rows, min and median ratios, targets), the
attack bench (configurations, key/query MACs, one interleaved configuration) and the PGD-step profile
(attribution of forward and backward ops to parts of the network). Tiny shapes; no timed assertions."""

from __future__ import annotations

import argparse
import math

import pandas as pd
import pytest
import torch

from robustbench_lr.bench import attack, layer, profile
from robustbench_lr.layers import LocalRelation2d
from robustbench_lr.models import create_model


def test_layer_bench_times_the_whole_module_with_both_estimators():
    df = layer.bench_layer((3,), n=1, c=16, h=8, w=8, m=8, impls=("auto",), modes=("forward", "input_grad"),
                           rounds=2, calls=1)
    for mode in ("forward", "input_grad"):
        methods = set(df[df["mode"] == mode].method)
        assert {"layer", "dwconv3x3", "conv3x3"} <= methods and any(m.startswith("lr[") for m in methods)
    assert (df.min_ms <= df.median_ms).all()
    c3 = df[df.method == "conv3x3"]
    assert (c3.x_conv3x3 == 1.0).all() and (c3.x_conv3x3_min == 1.0).all()
    row = df[(df.method == "layer") & (df["mode"] == "forward")].iloc[0]
    assert math.isclose(row.x_conv3x3_min, row.min_ms / float(c3[c3["mode"] == "forward"].min_ms.iloc[0]))


def test_target_verdicts(capsys):
    rows = [{"k": 7, "mode": "train", "method": "layer", "x_dwconv": 1.1, "x_dwconv_min": 1.0},
            {"k": 7, "mode": "forward", "method": "layer", "x_conv3x3": 2.5, "x_conv3x3_min": 1.9},
            {"k": 7, "mode": "input_grad", "method": "layer", "x_conv3x3": 1.3, "x_conv3x3_min": 1.2}]
    layer.print_targets(pd.DataFrame(rows))
    out = capsys.readouterr().out.splitlines()
    assert out[-3].endswith("met") and out[-2].endswith("met by min only") and out[-1].endswith("missed")


def test_key_query_macs_count_the_fused_projection():
    model = create_model("lrnet_tiny")
    counted = attack.key_query_macs(model, (1, 28, 28))  # before the hooks below (a deep copy would keep them)
    expected = 0

    def hook(mod, inp, out):
        nonlocal expected
        _, c, h, w = inp[0].shape
        expected += c * 2 * mod.groups * h * w

    for mod in model.modules():
        if isinstance(mod, LocalRelation2d):
            mod.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    assert expected > 0 and counted == expected
    assert attack.key_query_macs(create_model("resnet_tiny"), (1, 28, 28)) == 0


def test_attack_configs():
    args = argparse.Namespace(configs="0.25x16,1x8", tiny="16", rounds=7, rounds_full_width=2)
    cfgs = attack.configs(args)
    assert [(c.pair, c.width, c.batch, c.rounds) for c in cfgs] == [
        (attack.CIFAR_PAIR, 0.25, 16, 7), (attack.CIFAR_PAIR, 1.0, 8, 2), (attack.TINY_PAIR, 1.0, 16, 7)]


@pytest.mark.slow
def test_attack_bench_one_configuration_interleaved():
    args = argparse.Namespace(steps=1, amp=False, channels_last=False, compile=False)
    rows = attack.bench_config(attack.Config(attack.TINY_PAIR, 1.0, 4, 2), torch.device("cpu"), args)
    a, b, ratio = rows
    assert (a["model"], b["model"], ratio["model"]) == ("lrnet_tiny", "resnet_tiny", "ratio LR / ResNet")
    assert a["step_ms_min"] <= a["step_ms_median"] and a["shape"] == "4x1x28x28"
    assert math.isclose(ratio["img_s_min"], a["img_s_min"] / b["img_s_min"])
    assert math.isclose(ratio["GMAC_s_min"], a["GMAC_s_min"] / b["GMAC_s_min"])
    assert a["GMACs+qk"] > a["GMACs"] and b["GMACs+qk"] == b["GMACs"]
    assert math.isclose(ratio["fwd_ratio_min"], b["fwd_ms_min"] / a["fwd_ms_min"])


def test_floor_model_has_no_lr_layers_and_keeps_shapes():
    lr = create_model("lrnet_tiny").eval()
    floor = attack.strip_lr(create_model("lrnet_tiny")).eval()
    assert not any(isinstance(m, LocalRelation2d) for m in floor.modules())
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert floor(x).shape == lr(x).shape == (2, 10)


@pytest.mark.parametrize("name", ["lrnet_tiny", "resnet_tiny"])
def test_profile_attributes_forward_and_backward(name):
    model = create_model(name).eval().requires_grad_(False)
    step = profile.pgd_step_fn(model, torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    rows = profile.profile_step(step, model, steps=1, by_size=False)
    assert all(r["fwd"] >= 0 and r["bwd"] >= 0 and r["copy"] <= r["fwd"] + r["bwd"] + 1e-9 for r in rows.values())
    if name == "lrnet_tiny":
        for part in ("LR: aggregation", "LR: key/query conv", "LR: output 1x1 conv", "conv 1x1", "BatchNorm"):
            assert rows[part]["fwd"] > 0 and rows[part]["bwd"] > 0, part  # backward found by sequence number
        assert "LR: geometry prior" not in rows  # frozen: the table was computed once, in the warm-up
        assert "conv kxk (spatial)" not in rows
    else:
        assert rows["conv kxk (spatial)"]["bwd"] > 0 and not any(k.startswith("LR") for k in rows)
    # the scopes are removed again: the module is a plain model afterwards
    assert not any(hasattr(m, "_forward_pre_hooks") and m._forward_pre_hooks for m in model.modules())
    assert not any("_qk" in vars(m) or "geometry_prior" in vars(m) for m in model.modules())
