"""GloRe, CNL and MS-SAR (reconstruction) as layers and as zoo members (resnet26_*, resnet26_cifar_*,
resnet_tiny_*): gradients, identity at init, shapes, parameter/MAC counts, options and errors."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustbench_lr import create_model, list_models, model_info
from robustbench_lr.cli import main
from robustbench_lr.cli.models import conv_counterpart, zoo_table
from robustbench_lr.layers.cnl import CrossLayerNonLocal2d, FeatureTap, TapStore
from robustbench_lr.layers.glore import GloRe2d
from robustbench_lr.layers.mssar import MSSAR2d
from robustbench_lr.models import zoo
from robustbench_lr.models.context_zoo import cnl_positions, glore_positions
from robustbench_lr.models.profile import count_macs, count_params
from robustbench_lr.models.resnet import Bottleneck

FAMILIES = ("glore", "cnl", "mssar")
BASES = ("resnet26", "resnet26_cifar", "resnet_tiny")
NEW = [f"{b}_{f}" for f in FAMILIES for b in BASES]
MODULES = (GloRe2d, CrossLayerNonLocal2d, MSSAR2d)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny shapes: one intra-op thread is as fast, and immune to the OpenMP stalls of a busy 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _light(name: str) -> dict:
    """Builder arguments that keep a test fast: ResNet-26 layouts at a quarter width (tests/test_models.py
    runs every registered model at full width)."""
    return {"width": 0.25} if name.startswith("resnet26") else {}


def _input(name: str, n: int = 2) -> torch.Tensor:
    c, h, w = model_info(name).input_size
    side = 64 if h >= 224 else h  # fully convolutional: 64 px reaches every stage of the 224-px layouts
    return torch.rand(n, c, side, side)


def _added(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, MODULES)]


def _strip(model: nn.Module) -> nn.Module:
    """A copy with every added module removed (taps and after-block modules -> Identity, attach -> None)."""
    model = copy.deepcopy(model)
    for stage in model.stages:
        for i, mod in enumerate(stage):
            if isinstance(mod, (*MODULES, FeatureTap)):
                stage[i] = nn.Identity()
            elif isinstance(mod, Bottleneck):
                mod.attach = None
    return model


# --------------------------------------------------------------------------------------------- registry
def test_new_models_are_registered_with_their_family_and_base_defaults():
    for name in NEW:
        assert name in list_models()
        info, base = model_info(name), model_info(conv_counterpart(name))
        assert info.family == name.rsplit("_", 1)[1] and info.spatial == "conv"
        assert (info.input_size, info.num_classes, info.kernel_size) == (base.input_size, base.num_classes,
                                                                         base.kernel_size)
    assert {conv_counterpart(f"resnet26_cifar_{f}") for f in FAMILIES} == {"resnet26_cifar"}
    assert conv_counterpart("resnet26") is None and conv_counterpart("lrnet26") is None


@pytest.mark.parametrize("name", NEW)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    # A zero gate (GloRe/CNL BN gamma = 0, MS-SAR alpha = 0, a block's last BN gamma = 0) gives exactly zero
    # gradients to everything behind it, by design. zero_init_residual=False also opens the context gates
    # (zero_init_context follows it unless given), so every parameter must receive a gradient here.
    model = create_model(name, num_classes=7, zero_init_residual=False, **_light(name))
    assert all(not m.zero_init for m in _added(model))
    out = model(_input(name))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_default_init_trains_every_parameter_after_a_few_steps(family):
    # From the default (identity) init only the gates get gradients at first; after a few SGD steps the
    # gates are open and every parameter receives a gradient.
    model = create_model(f"resnet_tiny_{family}")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing[:5]


@pytest.mark.parametrize("name", NEW)
def test_added_modules_are_exact_identities_at_init(name):
    # zero_init_residual=False keeps the residual branches alive (so MS-SAR gates non-zero inputs), while
    # zero_init_context=True gives the added modules their default zero-gate init.
    model = create_model(name, zero_init_residual=False, zero_init_context=True, **_light(name))
    seen = []

    def check(mod, inp, out):
        seen.append(type(mod).__name__)
        assert torch.equal(out, inp[0]) and inp[0].abs().sum() > 0

    mods = _added(model)
    assert mods
    handles = [m.register_forward_hook(check) for m in mods]
    x = _input(name)
    out = model(x)
    for h in handles:
        h.remove()
    assert len(seen) == len(mods)
    assert torch.equal(out, _strip(model)(x))  # the same network without the modules, bit for bit
    # and the default build (zero_init_residual=True) zero-initialises the gates as well
    assert all(m.zero_init for m in _added(create_model(name, **_light(name))))


def test_taps_leave_nothing_behind_and_survive_deepcopy_and_meta():
    model = create_model("resnet_tiny_cnl")
    cnl = _added(model)[0]
    taps = [m for m in model.modules() if isinstance(m, FeatureTap)]
    assert len(taps) == 2 and all(t.store is cnl.store for t in taps)
    model(torch.rand(2, 1, 28, 28))
    assert len(cnl.store) == 0  # no activation outlives the forward pass
    clone = copy.deepcopy(model)
    c_cnl = _added(clone)[0]
    assert c_cnl.store is not cnl.store
    assert all(t.store is c_cnl.store for t in clone.modules() if isinstance(t, FeatureTap))
    assert torch.equal(clone.eval()(torch.ones(1, 1, 28, 28)), model.eval()(torch.ones(1, 1, 28, 28)))
    assert count_macs(model, (1, 28, 28)) > 0


# ---------------------------------------------------------------------------------------- placements
def test_glore_placement_rule_reproduces_the_official_r50_config():
    assert glore_positions((3, 4, 6, 3)) == [(1, 0), (1, 2), (2, 0), (2, 2), (2, 4)]  # (2,3): res3 1,3; res4 1,3,5
    assert glore_positions((3, 4, 6, 3), "res4") == [(2, 0), (2, 2), (2, 4)]  # (0,3)
    assert glore_positions((2, 2, 2, 2)) == [(1, 0), (2, 0)]  # R26: (1,1)


def test_cnl_placement_rule_reproduces_the_official_r50_config():
    query, resp = cnl_positions((3, 4, 6, 3))
    assert query == (3, 1)  # res5 block 2
    assert resp == [(1, 1), (1, 3), (2, 1), (2, 3), (2, 5)]  # res3 blocks 2, 4; res4 blocks 2, 4, 6
    assert cnl_positions((2, 2, 2, 2)) == ((3, 0), [(1, 1), (2, 1)])
    assert cnl_positions((2, 2, 2, 2), "all")[1] == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_resnet26_placements_and_sizes():
    g = create_model("resnet26_glore")
    units = _added(g)
    assert [(u.channels, u.mid) for u in units] == [(512, 128), (1024, 256)]
    assert isinstance(g.stages[1][1], GloRe2d) and isinstance(g.stages[2][1], GloRe2d)
    res4_only = _added(create_model("resnet26_glore", glore_placement="res4"))
    assert [(u.channels, u.mid) for u in res4_only] == [(1024, 256)]
    c = create_model("resnet26_cnl")
    (cnl,) = _added(c)
    assert c.stages[3][1] is cnl and isinstance(c.stages[3][2], Bottleneck)  # before res5's last block
    assert (cnl.query_channels, cnl.response_channels, cnl.inter_channels) == (2048, (512, 1024), 256)
    assert len(_added(create_model("resnet26_cnl", cnl_responses="all"))[0].response_channels) == 4
    m = create_model("resnet26_mssar")
    blocks = [b for b in m.modules() if isinstance(b, Bottleneck)]
    assert all(isinstance(b.attach, MSSAR2d) and b.attach.channels == b.conv3.out_channels for b in blocks)


def test_tiny_variants_follow_zoo_tiny():
    n = len(zoo.TINY.layers)
    g = create_model("resnet_tiny_glore")
    assert len(_added(g)) == len(glore_positions(zoo.TINY.layers))
    (cnl,) = _added(create_model("resnet_tiny_cnl"))
    assert cnl.query_channels == zoo.TINY.out_channels[-1]
    assert cnl.response_channels == tuple(zoo.TINY.out_channels[s] for s, _ in cnl_positions(zoo.TINY.layers)[1])
    assert n >= 2


def test_width_and_module_options_pass_through_and_are_recorded():
    m = create_model("resnet26_cifar_glore", width=0.25, glore_normalize=True, num_classes=5)
    assert all(u.normalize for u in _added(m)) and m.fc.out_features == 5
    assert m(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    c = create_model("resnet_tiny_cnl", cnl_joint_softmax=True, cnl_legacy_reshape=True, cnl_reduction=4)
    (cnl,) = _added(c)
    assert cnl.joint_softmax and cnl.legacy_reshape and cnl.inter_channels == cnl.query_channels // 4
    s = create_model("resnet_tiny_mssar", mssar_scales=[3, 5], mssar_score="spatial", in_chans=3)
    assert all(g.scales == (3, 5) and g.score == "spatial" for g in _added(s))
    assert s.model_kwargs["mssar_scales"] == [3, 5] and s.model_kwargs["mssar_score"] == "spatial"
    rebuilt = create_model(s.model_name, **s.model_kwargs)  # what a checkpoint does
    assert rebuilt.state_dict().keys() == s.state_dict().keys()
    assert create_model("resnet_tiny_glore").model_kwargs["glore_placement"] == "res3+res4"


# ------------------------------------------------------------------------------------ layer shapes
@pytest.mark.parametrize("size", [28, 32, 224])
def test_layer_shapes_at_image_sizes(size):
    # 224 at tiny channel counts; the CNL sees its query and responses at 1/16, 1/4 and 1/8 of the image
    # size, as in a ResNet (res5 query, res3/res4 responses).
    x = torch.randn(2, 16, size, size + 3)  # non-square on purpose
    glore = GloRe2d(16, 4, zero_init=False)
    assert glore(x).shape == x.shape and torch.isfinite(glore(x)).all()
    for score in ("channel", "spatial"):
        gate = MSSAR2d(16, reduction=4, score=score, zero_init=False)
        assert gate(x).shape == x.shape
        assert gate.scores(x).shape == (2, 16 if score == "channel" else 1, size, size + 3)
    q = torch.randn(2, 32, math.ceil(size / 16), math.ceil(size / 15))
    r = [torch.randn(2, 8, math.ceil(size / 4), math.ceil(size / 4)), torch.randn(2, 16, size // 8, size // 8)]
    for joint in (False, True):
        cnl = CrossLayerNonLocal2d(32, [8, 16], joint_softmax=joint, zero_init=False)
        out = cnl(q, r)
        assert out.shape == q.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------- GloRe
@pytest.mark.parametrize("channels,mid,hw,params,gmacs", [(1024, 256, 14, 1.64e6, 0.41), (512, 128, 28, 0.41e6, 0.32)])
def test_glore_unit_counts_at_r50_sizes(channels, mid, hw, params, gmacs):
    # docs/papers.md §2.2: one res4 unit ~1.64M params / ~0.41 GMAC, one res3 unit ~0.41M / ~0.32 GMAC (224 px)
    unit = GloRe2d(channels, mid)
    assert abs(count_params(unit) - params) / params < 0.05
    assert abs(count_macs(unit, (channels, hw, hw)) / 1e9 - gmacs) / gmacs < 0.05


def test_glore_matches_the_formula():
    unit = GloRe2d(6, 3, zero_init=False).double().eval()
    with torch.no_grad():
        for p in unit.parameters():
            p.normal_()
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    state = torch.einsum("sc,ncl->nsl", unit.conv_state.weight[:, :, 0, 0], x.flatten(2)) \
        + unit.conv_state.bias[:, None]
    b = torch.einsum("kc,ncl->nkl", unit.conv_proj.weight[:, :, 0, 0], x.flatten(2)) + unit.conv_proj.bias[:, None]
    v = state @ b.transpose(1, 2)  # (N, C', nodes)
    a = unit.gcn.node_conv.weight[:, :, 0]  # (nodes, nodes)
    h = torch.relu(v + torch.einsum("jk,nsk->nsj", a, v) + unit.gcn.node_conv.bias)  # (I + A) V
    z = torch.einsum("ts,nsk->ntk", unit.gcn.state_conv.weight[:, :, 0], h)
    y = (z @ b).reshape(2, 6, 4, 5)
    ref = x + unit.bn(unit.conv_extend(y))
    torch.testing.assert_close(unit(x), ref)


def test_glore_normalize_scales_the_node_features_by_one_over_hw():
    x = torch.randn(2, 8, 5, 3)
    caught = {}
    for normalize in (False, True):
        torch.manual_seed(1)
        unit = GloRe2d(8, 4, normalize=normalize)
        h = unit.gcn.register_forward_hook(lambda m, i, o, key=normalize: caught.__setitem__(key, i[0]))
        unit(x)
        h.remove()
    torch.testing.assert_close(caught[True] * 15, caught[False])


# ----------------------------------------------------------------------------------------------- CNL
def _cnl_reference(cnl: CrossLayerNonLocal2d, q: torch.Tensor, rs: list[torch.Tensor], legacy: bool) -> torch.Tensor:
    n, _, h, w = q.shape
    d = cnl.inter_channels
    emb = lambda conv, t: torch.einsum("dc,ncl->ndl", conv.weight[:, :, 0, 0], t.flatten(2))  # noqa: E731
    theta = emb(cnl.theta, q)  # (N, d, Lq)
    logits = [torch.einsum("ndq,ndr->nqr", theta, emb(phi, r)) / math.sqrt(d) for phi, r in zip(cnl.phi, rs)]
    if cnl.joint_softmax:
        attn = torch.cat(logits, -1).softmax(-1).split([a.shape[-1] for a in logits], -1)
    else:
        attn = [a.softmax(-1) for a in logits]
    out = q
    for a, g, bn, r in zip(attn, cnl.g, cnl.bns, rs):
        o = torch.einsum("nqr,ndr->nqd", a, emb(g, r))  # (N, Lq, d): O_i = A_i g_i^T
        o = o.reshape(n, d, h, w) if legacy else o.transpose(1, 2).reshape(n, d, h, w)
        out = out + bn(cnl.w_z(o))
    return out


def _cnl_pair(**kw):
    clean = CrossLayerNonLocal2d(16, [8, 12], reduction=4, zero_init=False, **kw).eval()
    with torch.no_grad():
        for p in clean.parameters():
            p.normal_(std=0.3)
    legacy = CrossLayerNonLocal2d(16, [8, 12], reduction=4, legacy_reshape=True, zero_init=False, **kw).eval()
    legacy.load_state_dict(clean.state_dict())
    return clean, legacy


@pytest.mark.parametrize("joint", [False, True])
def test_cnl_clean_and_legacy_reshape_match_their_formulas_and_differ(joint):
    clean, legacy = _cnl_pair(joint_softmax=joint)
    q = torch.randn(2, 16, 3, 5)  # non-square query
    rs = [torch.randn(2, 8, 6, 10), torch.randn(2, 12, 4, 4)]
    out_c, out_l = clean(q, rs), legacy(q, rs)
    assert out_c.shape == out_l.shape == q.shape
    assert not torch.allclose(out_c, out_l, atol=1e-3)
    torch.testing.assert_close(out_c, _cnl_reference(clean, q, rs, legacy=False), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_l, _cnl_reference(legacy, q, rs, legacy=True), rtol=1e-4, atol=1e-4)


def test_cnl_joint_softmax_normalises_over_all_responses():
    per, _ = _cnl_pair()
    joint = CrossLayerNonLocal2d(16, [8, 12], reduction=4, joint_softmax=True, zero_init=False).eval()
    joint.load_state_dict(per.state_dict())
    q, rs = torch.randn(2, 16, 3, 5), [torch.randn(2, 8, 6, 10), torch.randn(2, 12, 4, 4)]
    a_per, a_joint = per.attention_maps(q, rs), joint.attention_maps(q, rs)
    assert [a.shape for a in a_per] == [(2, 15, 60), (2, 15, 16)] == [a.shape for a in a_joint]
    for a in a_per:
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 15))
    torch.testing.assert_close(sum(a.sum(-1) for a in a_joint), torch.ones(2, 15))
    assert not torch.allclose(per(q, rs), joint(q, rs), atol=1e-3)


def test_cnl_reads_the_tap_store_and_counts_its_matrix_products():
    store = TapStore()
    cnl = CrossLayerNonLocal2d(16, [8], reduction=4, store=store, keys=["r"])
    tap = FeatureTap(store, "r")
    r = torch.randn(1, 8, 6, 6)
    assert tap(r) is r and len(store) == 1
    q = torch.randn(1, 16, 3, 3)
    assert torch.equal(cnl(q), q) and len(store) == 0  # identity at init; the entry was consumed
    with pytest.raises(RuntimeError, match="FeatureTap"):
        cnl(q)
    # the matrix products beyond the 1x1 convs: 2 * d * Lq * Lr (logits and aggregation)
    cnl(q, [r])
    assert cnl.extra_macs((16, 3, 3)) == 2 * 4 * 9 * 36


# -------------------------------------------------------------------------------------------- MS-SAR
def test_mssar_open_gate_is_the_plain_recalibration():
    gate = MSSAR2d(32, zero_init=False)
    x = torch.randn(2, 32, 9, 7)
    s = gate.scores(x)
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(gate(x), x * s)
    assert torch.equal(MSSAR2d(32)(x), x)


def test_mssar_depthwise_kernels_make_it_spatially_asymmetric():
    # Pooling and 1x1 convs commute with a horizontal flip; only the per-scale depthwise kernels can break
    # the symmetry: symmetric kernels keep flip-equivariance, a one-sided kernel does not.
    gate = MSSAR2d(4, scales=(3, 7), reduction=None, zero_init=False)
    x = torch.randn(1, 4, 11, 11)
    flip = lambda t: t.flip(-1)  # noqa: E731
    with torch.no_grad():
        for dw in gate.asym:
            dw.weight.fill_(1.0)
    torch.testing.assert_close(gate(flip(x)), flip(gate(x)))
    with torch.no_grad():
        for dw in gate.asym:
            dw.weight.zero_()
            dw.weight[:, :, 1, 0] = 1.0  # only the left neighbour region
    assert not torch.allclose(gate(flip(x)), flip(gate(x)), atol=1e-4)


def test_mssar_dilation_follows_the_scale():
    gate = MSSAR2d(16, scales=(3, 7, 15))
    assert [dw.dilation for dw in gate.asym] == [(1, 1), (3, 3), (7, 7)]
    assert [dw.dilation for dw in MSSAR2d(16, dilated=False).asym] == [(1, 1)] * 3
    assert gate.reduced_channels == 1 and MSSAR2d(64).reduced_channels == 4


# -------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,arg", [
    (lambda: GloRe2d(0, 4), "channels"),
    (lambda: GloRe2d(16, -1), "mid"),
    (lambda: GloRe2d(16, 4, normalize="yes"), "normalize"),
    (lambda: CrossLayerNonLocal2d(16, []), "response_channels"),
    (lambda: CrossLayerNonLocal2d(16, [8], reduction=0), "reduction"),
    (lambda: CrossLayerNonLocal2d(16, [8], reduction=32), "reduction"),
    (lambda: CrossLayerNonLocal2d(16, [8], joint_softmax=1), "joint_softmax"),
    (lambda: CrossLayerNonLocal2d(16, [8], legacy_reshape=None), "legacy_reshape"),
    (lambda: MSSAR2d(16, scales=(3, 4)), "scales"),
    (lambda: MSSAR2d(16, scales=()), "scales"),
    (lambda: MSSAR2d(16, reduction=0), "reduction"),
    (lambda: MSSAR2d(16, kernel_size=2), "kernel_size"),
    (lambda: MSSAR2d(16, score="pixel"), "score"),
    (lambda: create_model("resnet_tiny_glore", glore_placement="res5"), "glore_placement"),
    (lambda: create_model("resnet_tiny_glore", glore_normalize="no"), "glore_normalize"),
    (lambda: create_model("resnet_tiny_cnl", cnl_responses="some"), "cnl_responses"),
    (lambda: create_model("resnet_tiny_cnl", cnl_reduction=0), "cnl_reduction"),
    (lambda: create_model("resnet_tiny_cnl", cnl_reduction=1024), "cnl_reduction"),
    (lambda: create_model("resnet_tiny_cnl", cnl_joint_softmax="x"), "cnl_joint_softmax"),
    (lambda: create_model("resnet_tiny_mssar", mssar_score="x"), "mssar_score"),
    (lambda: create_model("resnet_tiny_mssar", mssar_scales=[2]), "mssar_scales"),
    (lambda: create_model("resnet_tiny_mssar", mssar_kernel_size=4), "mssar_kernel_size"),
    (lambda: create_model("resnet_tiny_mssar", glore_normalize=True), "glore_normalize"),
    (lambda: create_model("resnet_tiny_cnl", zero_init_context="yes"), "zero_init_context"),
    (lambda: create_model("resnet_tiny_glore", channel_sharing=4), "channel_sharing"),
])
def test_bad_arguments_raise_value_errors_naming_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match="16"):
        GloRe2d(16, 4)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="response 0"):
        CrossLayerNonLocal2d(16, [8])(torch.randn(1, 16, 3, 3), [torch.randn(1, 4, 3, 3)])


# ------------------------------------------------------------------------------- MACs and the CLI
@pytest.fixture(scope="module")
def resnet_table() -> pd.DataFrame:
    return zoo_table("resnet*").set_index("model")


@pytest.mark.parametrize("name", NEW)
def test_params_and_macs_exceed_the_base(name, resnet_table):
    row, base = resnet_table.loc[name], resnet_table.loc[conv_counterpart(name)]
    assert row["GMACs"] > base["GMACs"] and row["params_M"] > base["params_M"]
    assert row["d_GMACs"] == pytest.approx(row["GMACs"] - base["GMACs"]) and row["d_GMACs"] > 0
    assert row["d_params_%"] == pytest.approx(100 * row["d_params_M"] / base["params_M"])


def test_overhead_columns_are_numeric_and_blank_for_bases(resnet_table):
    df = resnet_table
    assert {"d_params_M", "d_params_%", "d_GMACs", "d_GMACs_%"} <= set(df.columns)
    assert all(pd.api.types.is_float_dtype(df[c]) for c in ("d_params_M", "d_params_%", "d_GMACs", "d_GMACs_%"))
    for base in BASES:
        assert df.loc[base, ["d_params_M", "d_params_%", "d_GMACs", "d_GMACs_%"]].isna().all()
    # the GloRe units of resnet26_glore: one res3 (0.41M) and one res4 (1.64M) unit at R50's sizes
    assert df.loc["resnet26_glore", "d_params_M"] == pytest.approx(0.41 + 1.64, rel=0.05)


def test_models_command_lists_the_new_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in NEW:
        assert name in out
    assert "d_GMACs" in out and "d_params_M" in out
