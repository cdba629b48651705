"""Deformations: differentiable warps, the registry, spatial attacks with bound checks, and the runners."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_lr.attacks import predict, prepare_for_attack
from robustbench_lr.checkpoint import load_model
from robustbench_lr.data import load_dataset
from robustbench_lr.deform import (
    DEFORMATIONS,
    SpatialBoundViolation,
    affine,
    affine_pgd,
    check_bounds,
    check_spatial,
    elastic,
    engstrom_bounds,
    flow,
    flow_bounds,
    flow_warp,
    get_deformation,
    grid,
    grid_transforms,
    rotate,
    scale,
    translate,
    worst_of_k,
)
from robustbench_lr.deform.spatial import _render_p
from robustbench_lr.errors import UserError
from robustbench_lr.runners.common import eval_indices
from robustbench_lr.runners.deform_sweep import adversarial_sweep, random_sweep
from robustbench_lr.results import finalize

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    te = load_dataset("mnist5k", "test")
    return te.batch(torch.as_tensor(eval_indices(len(te), 64)))


@pytest.fixture(scope="module")
def many():
    te = load_dataset("mnist5k", "test")
    return te.batch(torch.as_tensor(eval_indices(len(te), 320)))


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return {k: prepare_for_attack(load_model(v)) for k, v in tiny_checkpoints.items()}


def smooth_images(n=4, c=2, h=24, w=20, cells=(6, 5)):
    g = torch.Generator().manual_seed(1)
    z = torch.rand(n, c, *cells, generator=g)
    return F.interpolate(z, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- transforms
def test_identity_parameters_are_the_identity(data):
    x = torch.cat([data[0][:4], data[0][:4]])
    for out in (rotate(x, 0.0), translate(x, 0.0, 0.0), scale(x, 1.0), affine(x),
                elastic(x, 0.0, 4.0, torch.Generator().manual_seed(0)),
                flow_warp(x, torch.zeros(len(x), 2, 28, 28))):
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.allclose(out, x, atol=1e-5)
    xs = smooth_images()
    assert torch.allclose(rotate(xs, torch.zeros(4)), xs, atol=1e-5)  # non-square, per-example tensor


def test_rotate_back_restores_the_interior():
    x = smooth_images(h=32, w=32, cells=(4, 4))
    for a in (17.0, -30.0, 45.0):
        back = rotate(rotate(x, a), -a)
        err = (back - x)[..., 10:22, 10:22].abs()  # centre crop: never left the canvas
        assert err.max() < 0.03 and err.mean() < 0.006
        assert err.mean() < 0.1 * (rotate(x, a) - x)[..., 10:22, 10:22].abs().mean()


def test_conventions_directions_and_per_example_parameters():
    x = torch.zeros(1, 1, 9, 13)
    x[0, 0, 4, 9] = 1.0  # 3 px right of the centre (4, 6)
    assert (rotate(x, 90.0)[0, 0] > 0.5).nonzero().tolist() == [[1, 6]]  # counter-clockwise: now above
    assert (translate(x, 2.0, 1.0)[0, 0] > 0.5).nonzero().tolist() == [[5, 11]]  # right and down
    xs = smooth_images()
    angles, dx = torch.tensor([0.0, 10.0, -20.0, 35.0]), torch.tensor([1.5, -2.0, 0.0, 3.0])
    batched = affine(xs, angles, dx, -dx, torch.tensor([1.0, 0.9, 1.1, 1.2]), fill="border")
    for i in range(4):
        one = affine(xs[i:i + 1], float(angles[i]), float(dx[i]), float(-dx[i]), [1.0, 0.9, 1.1, 1.2][i],
                     fill="border")
        assert torch.allclose(batched[i:i + 1], one, atol=1e-6)
    # black canvas vs border fill: a shifted image has black (zeros) or replicated columns
    t0 = translate(xs, 5.0, 0.0)
    assert t0[..., :4].abs().max() == 0
    tb = translate(xs, 5.0, 0.0, fill="border")
    assert torch.allclose(tb[..., :4], xs[..., :1].expand(-1, -1, -1, 4), atol=1e-5)  # edge replicated


def test_warps_are_differentiable_and_stay_in_range():
    x = smooth_images()
    ang = torch.full((4,), 10.0, requires_grad=True)
    fl = torch.zeros(4, 2, 24, 20, requires_grad=True)
    alpha = torch.full((4,), 3.0, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    out = rotate(x, ang).sum() + flow_warp(x, fl + 0.3).sum() + elastic(x, alpha, 2.0, gen).sum()
    out.backward()
    for g in (ang.grad, fl.grad, alpha.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    for fill in ("zeros", "border", "reflection"):
        y = affine(torch.ones(8, 1, 16, 16), torch.linspace(-90, 90, 8), 1.3, -2.7, 0.7, fill=fill)
        assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rotate(x * 3.0, 10.0)


def test_elastic_is_reproducible_and_smooth():
    x = smooth_images()
    a = elastic(x, 3.0, 2.0, torch.Generator().manual_seed(5))
    b = elastic(x, 3.0, 2.0, torch.Generator().manual_seed(5))
    c = elastic(x, 3.0, 2.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    from robustbench_lr.deform.transforms import elastic_field, elastic_noise

    f = elastic_field(elastic_noise(2, 24, 20, torch.Generator().manual_seed(0)), 10.0, 3.0)
    assert f.abs().max() <= 10.0 and f.abs().max() > 0.1  # alpha bounds the displacement
    assert (f[..., 1:] - f[..., :-1]).abs().mean() < 0.3 * f.abs().mean()  # smoothed: neighbours agree


def test_random_deformations_stay_within_their_strength():
    g = torch.Generator().manual_seed(0)
    d = DEFORMATIONS["translate"]
    p = d.sample(256, 3.0, g, 28, 28, d.check_options({}))
    assert torch.allclose(torch.hypot(p["ux"], p["uy"]), torch.ones(256), atol=1e-6)  # shift length = pixels
    assert (p["ux"] < 0).any() and (p["uy"] < 0).any()  # random direction
    d = DEFORMATIONS["rotate"]
    p = d.sample(256, 20.0, g, 28, 28, d.check_options({}))
    assert set(p["sign"].tolist()) == {-1.0, 1.0}  # |angle| = degrees, random sign
    assert set(d.sample(8, 20.0, g, 28, 28, d.check_options({"sign": "fixed"}))["sign"].tolist()) == {1.0}
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 20] = 1.0  # 6.5 px right of the centre
    out = d.render(x, 90.0, {"sign": torch.ones(1)}, "zeros", {"sign": "fixed"})
    assert (out[0, 0] > 0.5).nonzero().tolist() == [[7, 14]]


def test_bad_input_raises_clear_errors():
    with pytest.raises(UserError, match=r"deformation='rotat'.*Did you mean 'rotate'"):  # a ValueError
        get_deformation("rotat")
    with pytest.raises(ValueError, match=r"elastic alpha must be >= 0"):
        DEFORMATIONS["elastic"].validate(-1.0)
    with pytest.raises(ValueError, match=r"translate pixels must be >= 0"):
        DEFORMATIONS["translate"].validate(-2)
    with pytest.raises(ValueError, match=r"scale factor must be > 0"):
        DEFORMATIONS["scale"].validate(0.0)
    with pytest.raises(ValueError, match=r"rotate degrees must lie in \[-180, 180\]"):
        DEFORMATIONS["rotate"].validate(181.0)
    assert DEFORMATIONS["rotate"].validate(-30) == -30.0
    with pytest.raises(ValueError, match=r"max_rotation \(degrees\) must be in \[0, 180\]"):
        engstrom_bounds(200.0)
    with pytest.raises(ValueError, match=r"max_flow"):
        flow_bounds(-0.5)
    with pytest.raises(ValueError, match=r"fill='black'.*allowed values"):
        rotate(smooth_images(), 3.0, fill="black")
    with pytest.raises(ValueError, match=r"unknown option 'sigmaa'.*sigma"):
        DEFORMATIONS["elastic"].check_options({"sigmaa": 2})


# ---------------------------------------------------------------------------------------------- attacks
def _clean_correct(model, x, y):
    keep = predict(model, x, 64, CPU) == y
    return x[keep], y[keep]


def _acc(model, xa, y):
    return float((predict(model, xa, 256, CPU) == y).float().mean())


def test_every_attack_respects_its_bounds_and_the_check_fails_loudly(models, data):
    model = models["lr"]
    x, y = data[0][:12], data[1][:12]
    results = {
        "worst-of-k": worst_of_k(model, x, y, max_rotation=20.0, k=4, seed=1),
        "grid": grid(model, x, y, max_rotation=20.0, scale_bound=0.1, shape=(3, 3, 5, 3), chunk_size=64),
        "affine-pgd": affine_pgd(model, x, y, max_rotation=20.0, steps=3, seed=1),
        "flow": flow(model, x, y, max_flow=0.5, steps=3, tau=0.05, seed=1),
    }
    for name, res in results.items():
        check_spatial(x, res.images, res.params, res.bounds, what=name)
        xa, params = res  # unpacks as (images, params)
        if name == "flow":
            assert params["flow"].abs().max() <= 0.5 + 1e-6
        else:
            b = res.bounds
            assert b.max_translation == pytest.approx(0.1 * 20.0)
            assert params["rotation"].abs().max() <= b.max_rotation + 1e-5
            assert params["tx"].abs().max() <= b.max_translation + 1e-5
            assert params["ty"].abs().max() <= b.max_translation + 1e-5
            assert (params["scale"] - 1).abs().max() <= b.scale_bound + 1e-5
        assert res.forward_evals >= len(x)
        assert (res.grad_evals > 0) == (name in ("affine-pgd", "flow"))
        assert not model.training
    # a deliberately out-of-bound transform is rejected, never clipped
    res = results["worst-of-k"]
    bad = {k: v.clone() for k, v in res.params.items()}
    bad["rotation"][3] = 20.5
    with pytest.raises(SpatialBoundViolation, match="rotation outside its bound"):
        check_bounds(bad, res.bounds)
    bad = {k: v.clone() for k, v in res.params.items()}
    bad["tx"][0] = 2.01
    with pytest.raises(SpatialBoundViolation, match="tx outside"):
        check_spatial(x, _render_p(x, torch.stack([bad[k] for k in ("rotation", "tx", "ty", "scale")], 1), "zeros"),
                      bad, res.bounds)
    fres = results["flow"]
    with pytest.raises(SpatialBoundViolation, match="flow outside"):
        check_bounds({"flow": fres.params["flow"] * 0 + 0.6}, fres.bounds)
    with pytest.raises(SpatialBoundViolation, match="not what its parameters produce"):
        check_spatial(x, rotate(x, 25.0), res.params, res.bounds)  # images that the params do not produce


def test_search_strength_ordering_random_vs_worst_of_k_vs_grid(models, many):
    model = models["conv"]
    x, y = _clean_correct(model, *many)
    assert len(x) >= 20
    r = 30.0
    gen = torch.Generator().manual_seed(0)
    rand_acc = np.mean([_acc(model, rotate(x, (torch.rand(len(x), generator=gen) * 2 - 1) * r), y) for _ in range(3)])
    wk = worst_of_k(model, x, y, max_rotation=r, translation_per_degree=0.0, k=10, seed=0)
    wk_acc = _acc(model, wk.images, y)
    assert wk_acc <= rand_acc
    wk2 = worst_of_k(model, x, y, max_rotation=r, k=10, seed=0)
    gr = grid(model, x, y, max_rotation=r, shape=(3, 3, 13), chunk_size=256)
    assert _acc(model, gr.images, y) <= _acc(model, wk2.images, y)
    assert gr.forward_evals <= gr.transforms_total == len(x) * 3 * 3 * 13


def test_grid_is_exhaustive_and_order_independent(models, data):
    model = models["lr"]
    x, y = data[0][:16], data[1][:16]
    b = engstrom_bounds(24.0)
    shape = (3, 3, 7)
    trs = grid_transforms(b, shape, order="natural").float()
    assert len(trs) == 63 and set(trs[:, 0].tolist()) == {-24.0, -16.0, -8.0, 0.0, 8.0, 16.0, 24.0}
    likely = grid_transforms(b, shape)
    assert float(likely[0, 0].abs()) == 24.0 and float(likely[0, 1].abs()) == pytest.approx(2.4)  # a corner
    # brute force: every transform for every example
    e = torch.arange(len(x)).repeat(len(trs))
    t = torch.arange(len(trs)).repeat_interleave(len(x))
    wrong = (predict(model, _render_p(x[e], trs[t], "zeros"), 256, CPU) != y[e]).view(len(trs), len(x)).any(0)
    outs = [grid(model, x, y, max_rotation=24.0, shape=shape, order=o, chunk_size=c)
            for o, c in (("likely-first", 40), ("natural", 40), ("natural", 1000))]
    for res in outs:
        assert torch.equal(res.fooled, wrong)
        assert torch.equal(predict(model, res.images, 256, CPU) != y, wrong)
    assert outs[0].forward_evals < len(trs) * len(x)  # early stop saved work


def test_gradient_attacks_fool_at_least_as_many_as_no_attack(models, data):
    model = models["lr"]
    x, y = data[0][:24], data[1][:24]
    clean = _acc(model, x, y)
    for res in (flow(model, x, y, max_flow=1.0, steps=5, seed=0),
                affine_pgd(model, x, y, max_rotation=30.0, steps=5, seed=0)):
        check_spatial(x, res.images, res.params, res.bounds)
        assert _acc(model, res.images, y) <= clean
        assert torch.equal(res.fooled, predict(model, res.images, 256, CPU) != y)
        assert res.grad_evals <= 5 * len(x) and res.forward_evals <= 6 * len(x)


# ---------------------------------------------------------------------------------------------- runners
def test_random_sweep_is_reproducible_and_strength_zero_is_clean(models, data):
    model = models["lr"]
    x, y = data
    clean = int((predict(model, x, 64, CPU) == y).sum())
    kw = dict(draws=3, seed=7, device=CPU)
    a = random_sweep(model, x, y, "rotate", [0.0, 20.0, 45.0], batch_size=64, **kw)
    b = random_sweep(model, x, y, "rotate", [0.0, 20.0, 45.0], batch_size=24, **kw)  # other batching, same draws
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    r0 = a[0]
    assert r0["family"] == "deform" and r0["perturbation"] == "rotate" and r0["param_name"] == "degrees"
    assert r0["n_total"] == len(x) and r0["n_correct"] == clean and r0["draws"] == 1  # identity: one draw
    assert json.loads(r0["draw_accuracies"]) == [clean / len(x)] and math.isnan(r0["ci_low"])
    assert a[1]["n_total"] == 3 * len(x) and a[1]["draws"] == 3 and len(json.loads(a[1]["draw_accuracies"])) == 3
    assert isinstance(a[1]["param_value"], float) and isinstance(a[1]["n_correct"], int)
    assert a[2]["ci_method"] == "t-over-draws"
    assert a[2]["ci_low"] <= a[2]["n_correct"] / a[2]["n_total"] <= a[2]["ci_high"]
    other = random_sweep(model, x, y, "rotate", [20.0], batch_size=64, draws=3, seed=8, device=CPU)
    assert other[0]["draw_accuracies"] != a[1]["draw_accuracies"] or other[0]["n_correct"] == a[1]["n_correct"]
    el = random_sweep(model, x, y, "elastic", [0.0, 8.0], draws=1, seed=0, batch_size=64, device=CPU, sigma=3.0)
    assert el[0]["n_correct"] == clean and el[0]["sigma"] == 3.0 and math.isnan(el[0]["ci_low"])
    sc = random_sweep(model, x, y, "scale", [1.0, 0.6], draws=4, seed=0, batch_size=64, device=CPU)
    assert sc[0]["n_correct"] == clean and sc[0]["draws"] == 1 and sc[0]["n_total"] == len(x)  # deterministic
    tr = random_sweep(model, x, y, "translate", [0.0, 3.0], draws=2, seed=0, batch_size=64, device=CPU)
    df = finalize(a + el + sc + tr)
    assert set(df["ci_method"]) == {"t-over-draws", "clopper-pearson"} and df["ci_low"].notna().all()
    with pytest.raises(ValueError, match="Did you mean 'elastic'"):
        random_sweep(model, x, y, "elastc", [1.0], draws=1, seed=0, batch_size=8, device=CPU)
    with pytest.raises(ValueError, match="elastic alpha must be >= 0"):
        random_sweep(model, x, y, "elastic", [1.0, -1.0], draws=1, seed=0, batch_size=8, device=CPU)
    with pytest.raises(ValueError, match=r"\[-180, 180\]"):
        random_sweep(model, x, y, "rotate", [190.0], draws=1, seed=0, batch_size=8, device=CPU)


def test_adversarial_sweep_semantics(models, data):
    model = models["lr"]
    x, y = data
    clean = (predict(model, x, 64, CPU) == y).numpy()
    rows, mb = adversarial_sweep(model, x, y, "worst-of-k", [20.0, 0.0, 10.0], seed=0, batch_size=16, device=CPU, k=5)
    assert [r["param_value"] for r in rows] == [0.0, 10.0, 20.0]
    assert np.all(mb[~clean] == 0) and np.all(mb[clean] > 0)
    assert rows[0]["n_correct"] == rows[0]["n_clean_correct"] == int(clean.sum()) and rows[0]["forward_evals"] == 0
    for r in rows:
        b = r["param_value"]
        assert r["n_correct"] == int((mb > b).sum()) and r["family"] == "deform" and r["param_name"] == "max_rotation"
        assert r["fooling_rate"] == pytest.approx(1 - r["n_correct"] / r["n_clean_correct"])
        assert r["max_translation"] == pytest.approx(0.1 * b) and r["k"] == 5
    assert rows[1]["n_correct"] >= rows[2]["n_correct"]
    assert rows[2]["n_attacked"] == rows[1]["n_correct"]  # only still-robust examples attacked
    assert rows[1]["forward_evals"] >= rows[1]["n_attacked"]
    frows, fmb = adversarial_sweep(model, x, y, "flow", [0.5], seed=0, batch_size=32, device=CPU, steps=3)
    assert frows[0]["param_name"] == "max_flow" and frows[0]["grad_evals"] > 0 and frows[0]["steps"] == 3
    grows, _ = adversarial_sweep(model, x, y, "grid", [10.0], seed=0, batch_size=128, device=CPU, shape=(3, 3, 5))
    assert grows[0]["shape"] == "3x3x5" and grows[0]["forward_evals"] <= 45 * int(clean.sum())
    with pytest.raises(ValueError, match=r"\[0, 180\]"):
        adversarial_sweep(model, x, y, "grid", [200.0], seed=0, batch_size=8, device=CPU)
    with pytest.raises(ValueError, match="Did you mean 'worst-of-k'"):
        adversarial_sweep(model, x, y, "worst_of_k", [10.0], seed=0, batch_size=8, device=CPU)
    with pytest.raises(ValueError, match="unknown option 'kk'"):
        adversarial_sweep(model, x, y, "worst-of-k", [10.0], seed=0, batch_size=8, device=CPU, kk=3)


def test_adversarial_sweep_checks_results_itself(models, data, monkeypatch):
    import functools

    from robustbench_lr.deform import spatial

    model = models["lr"]
    x, y = data
    clean = int((predict(model, x, 64, CPU) == y).sum())

    @functools.wraps(spatial.worst_of_k)
    def liar(model, x, y, **kw):  # claims every example fooled but returns the clean images
        res = spatial.worst_of_k(model, x, y, **kw)
        res.params = {k: torch.full_like(v, 1.0 if k == "scale" else 0.0) for k, v in res.params.items()}
        res.images, res.fooled = x.clone(), torch.ones_like(res.fooled)
        return res

    monkeypatch.setitem(spatial.ATTACKS, "worst-of-k", liar)
    rows, mb = adversarial_sweep(model, x, y, "worst-of-k", [10.0], seed=0, batch_size=64, device=CPU, k=2)
    assert rows[0]["n_correct"] == clean and np.isinf(mb).sum() == clean  # the flag is not trusted

    @functools.wraps(spatial.worst_of_k)
    def cheat(model, x, y, **kw):  # a transform outside the box
        res = spatial.worst_of_k(model, x, y, **kw)
        res.params["rotation"] = res.params["rotation"] * 0 + 11.0
        res.images = rotate(x, 11.0)
        return res

    monkeypatch.setitem(spatial.ATTACKS, "worst-of-k", cheat)
    with pytest.raises(SpatialBoundViolation, match="rotation outside its bound"):
        adversarial_sweep(model, x, y, "worst-of-k", [10.0], seed=0, batch_size=64, device=CPU, k=2)
