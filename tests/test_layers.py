"""LocalRelation2d: equivalence of the fast path with the unfold reference, gradients, semantics, errors."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from robustbench_lr.layers import LocalRelation2d, lr_ops

APPEARANCES = ["sqdiff", "absdiff", "dot", None]
BORDERS = ["mask", "zeros"]
FAST_IMPLS = [name for name in lr_ops.IMPLS if name != "reference"]


def _inputs(n, c, g, h, w, k, s, appearance, geo_on, dtype=torch.float64):
    ho, wo = lr_ops.output_size(h, w, s)
    x = torch.randn(n, c, h, w, dtype=dtype, requires_grad=True)
    q = torch.randn(n, g, ho, wo, dtype=dtype, requires_grad=True) if appearance else None
    key = torch.randn(n, g, h, w, dtype=dtype, requires_grad=True) if appearance else None
    geo = torch.randn(g, k * k, dtype=dtype, requires_grad=True) if geo_on else None
    return x, q, key, geo


CASES = [c for c in itertools.product(APPEARANCES, BORDERS, [1, 3, 5], [1, 2], [True, False])
         if not (c[0] is None and not c[4])]


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("appearance,border,k,stride,geo_on", CASES)
def test_fast_matches_reference_fp64(impl, appearance, border, k, stride, geo_on):
    n, c, g, h, w = 2, 8, 2, 7, 6
    x, q, key, geo = _inputs(n, c, g, h, w, k, stride, appearance, geo_on)
    ins = [t for t in (x, q, key, geo) if t is not None]
    kw = dict(kernel_size=k, stride=stride, appearance=appearance, border=border, groups=g)
    y_ref = lr_ops.local_relation(x, q, key, geo, impl="reference", **kw)
    y = lr_ops.local_relation(x, q, key, geo, impl=impl, **kw)
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, ins, gy)
    g_new = torch.autograd.grad(y, ins, gy)
    assert (y - y_ref).abs().max().item() < 1e-10
    for a, b in zip(g_new, g_ref):
        assert (a - b).abs().max().item() < 1e-10


@pytest.mark.parametrize("impl", FAST_IMPLS)
@pytest.mark.parametrize("appearance,border", list(itertools.product(APPEARANCES, BORDERS)))
def test_gradcheck(impl, appearance, border):
    n, c, g, h, w, k, s = 1, 4, 2, 5, 4, 3, 1
    x, q, key, geo = _inputs(n, c, g, h, w, k, s, appearance, True)
    ins = tuple(t for t in (x, q, key, geo) if t is not None)

    def f(*args):
        it = iter(args)
        xx = next(it)
        qq = next(it) if appearance else None
        kk = next(it) if appearance else None
        gg = next(it)
        return lr_ops.local_relation(xx, qq, kk, gg, kernel_size=k, stride=s, appearance=appearance,
                                     border=border, groups=g, impl=impl)

    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-7)


def test_input_grad_only_skips_geometry_grad():
    layer = LocalRelation2d(16, 3, 8).double().requires_grad_(False)
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in layer.parameters())


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("stride", [1, 2])
def test_weights_are_a_distribution(border, stride):
    layer = LocalRelation2d(16, 5, 8, border=border, stride=stride)
    w = layer.aggregation_weights(torch.rand(2, 16, 9, 7))
    ho, wo = layer.output_size(9, 7)
    assert w.shape == (2, 2, 25, ho, wo)
    assert (w >= 0).all()
    assert torch.allclose(w.sum(2), torch.ones(()), atol=1e-6)


def test_masked_border_gives_exactly_zero_weight_outside():
    k, h, w = 5, 6, 7
    r = k // 2
    wm = LocalRelation2d(8, k, 8, border="mask").aggregation_weights(torch.rand(1, 8, h, w))[0, 0]  # (k*k, H, W)
    wz = LocalRelation2d(8, k, 8, border="zeros").aggregation_weights(torch.rand(1, 8, h, w))[0, 0]
    for o in range(k * k):
        dy, dx = o // k - r, o % k - r
        for i in range(h):
            for j in range(w):
                outside = not (0 <= i + dy < h and 0 <= j + dx < w)
                if outside:
                    assert wm[o, i, j] == 0.0
                    assert wz[o, i, j] > 0.0  # zero padding lets the padded cells into the softmax
                else:
                    assert wm[o, i, j] > 0.0


@pytest.mark.parametrize("k,stride", [(3, 1), (5, 1), (7, 1), (5, 2)])
def test_receptive_field_is_exactly_k_by_k(k, stride):
    layer = LocalRelation2d(16, k, 8, stride=stride).double()
    h = w = 15
    x = torch.randn(1, 16, h, w, dtype=torch.float64, requires_grad=True)
    i, j = 3, 4  # output pixel, away from borders at both strides
    layer(x)[0, :, i, j].sum().backward()
    support = x.grad.abs().sum(1)[0] > 0  # (H, W)
    r = k // 2
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[i * stride - r: i * stride + r + 1, j * stride - r: j * stride + r + 1] = True
    assert torch.equal(support, expected)


@pytest.mark.parametrize("appearance", APPEARANCES)
def test_translation_equivariance_away_from_borders(appearance):
    layer = LocalRelation2d(16, 5, 8, appearance=appearance).double()
    x = torch.randn(1, 16, 16, 16, dtype=torch.float64)
    dy, dx = 2, 3
    y = layer(x)
    y_shift = layer(torch.roll(x, (dy, dx), dims=(2, 3)))
    r = 2
    core = (slice(None), slice(None), slice(r + dy, 16 - r), slice(r + dx, 16 - r))
    shifted = torch.roll(y, (dy, dx), dims=(2, 3))
    assert torch.allclose(y_shift[core], shifted[core], atol=1e-12)


@pytest.mark.parametrize("border,include_pad", [("mask", False), ("zeros", True)])
def test_no_appearance_no_geometry_is_a_box_filter(border, include_pad):
    # Known answer: uniform weights over the window = average pooling (mask: over in-image cells only).
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    for impl in lr_ops.IMPLS:
        y = lr_ops.local_relation(x, None, None, torch.zeros(2, 9, dtype=torch.float64), kernel_size=3, stride=1,
                                  appearance=None, border=border, groups=2, impl=impl)
        ref = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=include_pad)
        assert torch.allclose(y, ref, atol=1e-12), impl


def test_geometry_table_only_is_a_shared_depthwise_conv_inside():
    # Known answer: weights softmax(table) at every interior pixel, i.e. a depthwise conv with that kernel.
    k, g, m = 3, 2, 4
    table = torch.randn(g, k * k, dtype=torch.float64)
    x = torch.randn(1, g * m, 8, 8, dtype=torch.float64)
    y = lr_ops.local_relation(x, None, None, table, kernel_size=k, appearance=None, border="mask", groups=g)
    kernel = torch.softmax(table, 1).view(g, 1, k, k).repeat_interleave(m, 0)
    ref = F.conv2d(x, kernel, padding=1, groups=g * m)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-12)


def test_geometry_prior_shapes():
    assert LocalRelation2d(32, 7, 8, geometry="mlp").geometry_prior().shape == (4, 49)
    assert LocalRelation2d(32, 7, 8, geometry="table").geometry_prior().shape == (4, 49)
    assert LocalRelation2d(32, 7, 8, geometry=None).geometry_prior() is None


def test_stride_output_size():
    layer = LocalRelation2d(8, 3, 8, stride=2)
    assert layer(torch.rand(2, 8, 9, 10)).shape == (2, 8, 5, 5)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kernel_size=4), "kernel_size"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=-3), "kernel_size"),
    (dict(channels=12), "channel_sharing"),
    (dict(appearance="cosine"), "appearance"),
    (dict(geometry="spline"), "geometry"),
    (dict(border="reflect"), "border"),
    (dict(impl="cuda-magic"), "impl"),
])
def test_bad_arguments_raise_clear_value_error(kwargs, needle):
    args = dict(channels=16, kernel_size=3, channel_sharing=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle) as exc:
        LocalRelation2d(**args)
    msg = str(exc.value)
    if needle in ("appearance", "geometry", "border"):
        assert "allowed values" in msg


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match="channels=16 but the input has 3"):
        LocalRelation2d(16, 3, 8)(torch.rand(1, 3, 8, 8))


# --------------------------------------------------------------------------------------------------
# The C kernel's paths (issue 15): channel groups of 8 and others, strides 1-3, maps narrower and wider than
# one 16-pixel chunk and smaller than the window, row blocks, strided query views, the fused key/query path
# of LocalRelation2d, the geometry-prior cache and the matmul 1x1 convs. fp64 against the unfold reference.
# --------------------------------------------------------------------------------------------------
from robustbench_lr.layers import lr_cpu  # noqa: E402
from robustbench_lr.layers.pointwise import PointwiseConv2d, pointwise_conv  # noqa: E402

needs_kernel = pytest.mark.skipif(not lr_cpu.available(), reason="the C kernel did not compile here")


def _check_against_reference(x, q, key, geo, impl="cpu", **kw):
    ins = [t for t in (x, q, key, geo) if t is not None]
    y_ref = lr_ops.local_relation(x, q, key, geo, impl="reference", **kw)
    y = lr_ops.local_relation(x, q, key, geo, impl=impl, **kw)
    gy = torch.randn_like(y_ref)
    assert (y - y_ref).abs().max().item() < 1e-10
    for a, b in zip(torch.autograd.grad(y, ins, gy), torch.autograd.grad(y_ref, ins, gy)):
        assert (a - b).abs().max().item() < 1e-10


KERNEL_CASES = [  # (n, c, g, h, w, k, stride): m = c / g
    (2, 16, 2, 9, 11, 7, 1),   # m = 8 (register path), odd map
    (2, 16, 2, 9, 11, 7, 2),
    (1, 16, 1, 5, 4, 7, 1),    # map smaller than the window
    (1, 8, 1, 3, 3, 7, 2),     # 3x3 map, 7x7 window, stride 2
    (2, 16, 2, 4, 37, 5, 1),   # wider than one 16-pixel chunk: one row per block, ragged last chunk
    (1, 16, 2, 7, 35, 3, 2),   # Wo = 18 >= 16 at stride 2
    (1, 32, 2, 6, 7, 5, 1),    # m = 16
    (2, 6, 2, 8, 9, 5, 3),     # m = 3, stride 3
    (1, 8, 8, 6, 5, 3, 1),     # m = 1
    (1, 8, 1, 1, 1, 7, 1),     # 1x1 map
]


@needs_kernel
@pytest.mark.parametrize("appearance", APPEARANCES)
@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("case", KERNEL_CASES)
def test_kernel_paths_match_reference_fp64(case, border, appearance):
    n, c, g, h, w, k, s = case
    torch.manual_seed(hash(case) % 1000)
    x, q, key, geo = _inputs(n, c, g, h, w, k, s, appearance, True)
    _check_against_reference(x, q, key, geo, kernel_size=k, stride=s, appearance=appearance, border=border, groups=g)


@needs_kernel
@pytest.mark.parametrize("block", [16, 40, 4096])
def test_row_blocks_of_any_size_agree(block, monkeypatch):
    # narrow maps pack several rows per block; BLOCK sets how many (16 -> one row, 40 -> several blocks)
    monkeypatch.setattr(lr_cpu, "BLOCK", block)
    x, q, key, geo = _inputs(2, 16, 2, 13, 5, 7, 1, "sqdiff", True)
    _check_against_reference(x, q, key, geo, kernel_size=7, stride=1, appearance="sqdiff", border="mask", groups=2)


@needs_kernel
def test_strided_query_and_key_views_need_no_copy():
    # views of one (N, 2G, H, W) tensor, as the fused projection produces them
    n, c, g, h, w, k, s = 2, 16, 2, 9, 8, 5, 2
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    qk = torch.randn(n, 2 * g, h, w, dtype=torch.float64, requires_grad=True)
    geo = torch.randn(g, k * k, dtype=torch.float64, requires_grad=True)
    kw = dict(kernel_size=k, stride=s, appearance="dot", border="zeros", groups=g)
    y = lr_ops.local_relation(x, qk[:, :g, ::s, ::s], qk[:, g:], geo, impl="cpu", **kw)
    y_ref = lr_ops.local_relation(x, qk[:, :g, ::s, ::s], qk[:, g:], geo, impl="reference", **kw)
    y_fused = lr_cpu.local_relation_fused(x, qk, geo, **kw)
    gy = torch.randn_like(y)
    g_ref = torch.autograd.grad(y_ref, (x, qk, geo), gy)
    for out in (y, y_fused):
        assert (out - y_ref).abs().max().item() < 1e-10
        for a, b in zip(torch.autograd.grad(out, (x, qk, geo), gy), g_ref):
            assert (a - b).abs().max().item() < 1e-10


def _layer_pair(stride, appearance, geometry, border="mask", k=5, c=16, m=8):
    torch.manual_seed(3)
    fast = LocalRelation2d(c, k, m, appearance=appearance, geometry=geometry, border=border, stride=stride).double()
    ref = LocalRelation2d(c, k, m, appearance=appearance, geometry=geometry, border=border, stride=stride,
                          impl="reference").double()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@needs_kernel
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("appearance,geometry", [("sqdiff", "mlp"), ("absdiff", "table"), ("dot", None),
                                                 (None, "mlp")])
def test_module_fast_path_matches_reference_in_every_gradient(stride, appearance, geometry):
    fast, ref = _layer_pair(stride, appearance, geometry)
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64, requires_grad=True)
    y, y_ref = fast(x), ref(x)
    assert (y - y_ref).abs().max().item() < 1e-10
    gy = torch.randn_like(y)
    params = [p for _, p in sorted(fast.named_parameters())]
    params_ref = [p for _, p in sorted(ref.named_parameters())]
    g_fast = torch.autograd.grad(y, [x, *params], gy)
    g_ref = torch.autograd.grad(y_ref, [x, *params_ref], gy)
    for a, b in zip(g_fast, g_ref):
        assert (a - b).abs().max().item() < 1e-10


@needs_kernel
def test_module_input_gradient_with_frozen_parameters_matches_reference():
    fast, ref = _layer_pair(2, "sqdiff", "mlp", k=7)
    fast.requires_grad_(False)
    ref.requires_grad_(False)
    x = torch.randn(3, 16, 11, 10, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(3, 16, 6, 5, dtype=torch.float64)
    (dx,) = torch.autograd.grad(fast(x), x, gy)
    (dx_ref,) = torch.autograd.grad(ref(x), x, gy)
    assert (dx - dx_ref).abs().max().item() < 1e-10


@needs_kernel
def test_result_does_not_depend_on_the_thread_count():
    x, q, key, geo = _inputs(4, 16, 2, 12, 20, 7, 1, "sqdiff", True, dtype=torch.float32)
    kw = dict(kernel_size=7, stride=1, appearance="sqdiff", border="mask", groups=2, impl="cpu")
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            y = lr_ops.local_relation(x, q, key, geo, **kw)
            outs.append((y, *torch.autograd.grad(y.square().sum(), (x, q, key, geo))))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@needs_kernel
def test_fp32_kernel_agrees_with_fp64_at_a_model_shape():
    x, q, key, geo = _inputs(2, 32, 4, 16, 16, 7, 1, "sqdiff", True)
    kw = dict(kernel_size=7, stride=1, appearance="sqdiff", border="mask", groups=4)
    y64 = lr_ops.local_relation(x, q, key, geo, impl="reference", **kw)
    y32 = lr_ops.local_relation(*(t.float() for t in (x, q, key, geo)), impl="cpu", **kw)
    assert (y32.double() - y64).abs().max().item() < 1e-5 * max(1.0, y64.abs().max().item())


def test_kernel_size_beyond_the_cell_table_falls_back():
    x, q, key, geo = _inputs(1, 8, 1, 3, 4, 33, 1, "sqdiff", True)
    _check_against_reference(x, q, key, geo, kernel_size=33, stride=1, appearance="sqdiff", border="mask", groups=1)


def test_geometry_prior_is_cached_only_while_frozen():
    layer = LocalRelation2d(16, 5, 8).double()
    calls = []
    layer.geometry_mlp.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    layer(x)
    layer(x)
    assert len(calls) == 2  # parameters require grad: recomputed, and the gradient reaches the MLP
    layer(x).sum().backward()
    assert layer.geometry_mlp[0].weight.grad is not None
    layer.requires_grad_(False)
    t1 = layer.geometry_prior()
    t2 = layer.geometry_prior()
    assert t1 is t2 and len(calls) == 4  # computed once for the frozen layer
    with torch.no_grad():
        layer.geometry_mlp[2].bias.add_(1.0)  # in-place update: the table must follow
    t3 = layer.geometry_prior()
    assert len(calls) == 5 and torch.allclose(t3, t1 + 1.0)
    other = LocalRelation2d(16, 5, 8).double().requires_grad_(False)
    layer.load_state_dict(other.state_dict())
    assert torch.allclose(layer.geometry_prior(), other.geometry_prior())


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_is_the_1x1_conv(bias):
    x = torch.randn(3, 12, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 12, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True) if bias else None
    ins = [t for t in (x, w, b) if t is not None]
    y, y_ref = pointwise_conv(x, w, b), F.conv2d(x, w, b)
    assert (y - y_ref).abs().max().item() < 1e-12
    gy = torch.randn_like(y)
    for a, c in zip(torch.autograd.grad(y, ins, gy), torch.autograd.grad(y_ref, ins, gy)):
        assert (a - c).abs().max().item() < 1e-12
    xl = x.detach().contiguous(memory_format=torch.channels_last)  # other layouts keep F.conv2d
    assert (pointwise_conv(xl, w, b) - y_ref).abs().max().item() < 1e-12
    conv = PointwiseConv2d(12, 6, bias=bias).double()
    assert isinstance(conv, torch.nn.Conv2d) and set(conv.state_dict()) == ({"weight", "bias"} if bias else {"weight"})
    assert (conv(x) - F.conv2d(x, conv.weight, conv.bias)).abs().max().item() < 1e-12


# --------------------------------------------------------------------------------------------------
# Softmax temperature: w = softmax(Phi(q, k) / T + geo), checked against the logits written out here (unfold,
# no lr_ops helper) in fp64 for every implementation, forward and every gradient.
# --------------------------------------------------------------------------------------------------
from robustbench_lr.errors import UserError  # noqa: E402
from robustbench_lr.layers.local_relation import implementations  # noqa: E402


def _explicit_layer(layer: LocalRelation2d, x: torch.Tensor, temperature: float) -> torch.Tensor:
    n, c, h, w = x.shape
    k, s, g = layer.kernel_size, layer.stride, layer.groups
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    q = F.conv2d(x, layer.query.weight, layer.query.bias, stride=s).unsqueeze(2)  # (N, G, 1, Ho, Wo)
    key = F.conv2d(x, layer.key.weight, layer.key.bias)
    kunf = F.unfold(key, k, padding=k // 2, stride=s).view(n, g, k * k, ho, wo)  # zero-padded keys ('zeros')
    diff = q - kunf
    phi = {"sqdiff": -diff * diff, "absdiff": -diff.abs(), "dot": q * kunf}[layer.appearance]
    logits = phi / temperature
    geo = layer.geometry_prior()
    if geo is not None:
        logits = logits + geo.view(1, g, k * k, 1, 1)
    if layer.border == "mask":
        inside = F.unfold(torch.ones(1, 1, h, w, dtype=x.dtype), k, padding=k // 2, stride=s).view(1, 1, k * k, ho, wo)
        logits = logits.masked_fill(inside < 0.5, float("-inf"))
    wts = torch.softmax(logits, dim=2)
    xunf = F.unfold(x, k, padding=k // 2, stride=s).view(n, g, c // g, k * k, ho, wo)
    agg = (wts.unsqueeze(2) * xunf).sum(3).reshape(n, c, ho, wo)
    return F.conv2d(agg, layer.proj.weight, layer.proj.bias)


@pytest.mark.parametrize("impl", implementations())
@pytest.mark.parametrize("appearance,geometry,border,stride", [
    ("sqdiff", "mlp", "mask", 1), ("sqdiff", "table", "zeros", 2), ("absdiff", "mlp", "mask", 2),
    ("absdiff", None, "zeros", 1), ("dot", "mlp", "zeros", 1), ("dot", "table", "mask", 2)])
def test_temperature_divides_the_appearance_logits(impl, appearance, geometry, border, stride):
    temperature = 2.5
    torch.manual_seed(11)
    layer = LocalRelation2d(16, 5, 8, appearance=appearance, geometry=geometry, border=border, stride=stride,
                            impl=impl, temperature=temperature).double()
    if layer.geometry_table is not None:
        torch.nn.init.normal_(layer.geometry_table)
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64, requires_grad=True)
    y, y_ref = layer(x), _explicit_layer(layer, x, temperature)
    assert (y - y_ref).abs().max().item() < 1e-10
    gy = torch.randn_like(y)
    ins = [x, *(p for _, p in sorted(layer.named_parameters()))]
    for a, b in zip(torch.autograd.grad(y, ins, gy), torch.autograd.grad(y_ref, ins, gy)):
        assert (a - b).abs().max().item() < 1e-10
    # and it is not the T = 1 layer
    assert (y - _explicit_layer(layer, x, 1.0)).abs().max().item() > 1e-3
    wts = layer.aggregation_weights(x)
    assert torch.allclose(wts.sum(2), torch.ones_like(wts.sum(2)))


def test_temperature_one_is_the_default_layer_bit_for_bit():
    torch.manual_seed(0)
    a = LocalRelation2d(16, 5, 8)
    b = LocalRelation2d(16, 5, 8, temperature=1.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 9, 9)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_temperature_raises(bad):
    with pytest.raises(UserError, match="temperature"):
        LocalRelation2d(16, 3, 8, temperature=bad)


def test_create_model_passes_the_temperature():
    from robustbench_lr.models import create_model

    torch.manual_seed(0)
    hot = create_model("lrnet_tiny", temperature=4)
    plain = create_model("lrnet_tiny")
    plain.load_state_dict(hot.state_dict())
    layers = [m for m in hot.modules() if isinstance(m, LocalRelation2d)]
    assert layers and all(m.temperature == 4.0 for m in layers)
    x = torch.rand(2, 1, 28, 28)
    hot.eval(), plain.eval()
    assert not torch.allclose(hot(x), plain(x))
