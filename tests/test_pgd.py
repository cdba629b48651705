"""StreamingPGD: torchattacks' update rule, early stopping, random starts per (example, eps) independent of
batching, fixed shapes, region masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_lr.attacks import prepare_for_attack
from robustbench_lr.attacks.masks import region_mask
from robustbench_lr.attacks.pgd import StreamingPGD
from robustbench_lr.attacks.registry import AttackSpec, build_attack
from robustbench_lr.attacks.threat import check_adversarial
from robustbench_lr.checkpoint import load_model
from robustbench_lr.data import load_dataset
from robustbench_lr.errors import UserError


@pytest.fixture(scope="module")
def setup(tiny_checkpoints):
    te = load_dataset("mnist5k", "test")
    x, y = te.batch(torch.as_tensor(np.random.default_rng(0).permutation(len(te))[:24]))
    return prepare_for_attack(load_model(tiny_checkpoints["conv"])), x, y


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_without_early_stop_equals_torchattacks(setup, norm, eps):
    import torchattacks as ta

    model, x, y = setup
    steps, alpha = 7, 2.5 * eps / 7
    ours = StreamingPGD(model, norm, eps, alpha, steps, random_start=False, early_stop=False, batch_size=8)
    adv = ours(x, y, torch.arange(len(x)))
    cls = ta.PGD if norm == "linf" else ta.PGDL2
    ref = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert torch.allclose(adv, ref, atol=1e-5 if norm == "l2" else 0.0)
    check_adversarial(x, adv, norm, eps)


def test_random_starts_do_not_depend_on_batching(setup):
    model, x, y = setup
    a = StreamingPGD(model, "linf", 0.1, 0.05, 5, batch_size=3, seed=4)(x, y, torch.arange(len(x)))
    b = StreamingPGD(model, "linf", 0.1, 0.05, 5, batch_size=10, seed=4)(x, y, torch.arange(len(x)))
    c = StreamingPGD(model, "linf", 0.1, 0.05, 5, batch_size=10, seed=5)(x, y, torch.arange(len(x)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    check_adversarial(x, a, "linf", 0.1)


def test_early_stop_only_removes_robust_examples_and_saves_gradients(setup):
    model, x, y = setup
    kw = {"random_start": False, "batch_size": 8}
    full = StreamingPGD(model, "linf", 0.08, 0.02, 10, early_stop=False, **kw)
    early = StreamingPGD(model, "linf", 0.08, 0.02, 10, early_stop=True, **kw)
    ids = torch.arange(len(x))
    with torch.no_grad():
        robust_full = model(full(x, y, ids)).argmax(1) == y
        robust_early = model(early(x, y, ids)).argmax(1) == y
    assert not (robust_early & ~robust_full).any()  # the early-stop robust set is a subset
    assert early.grad_evals < full.grad_evals == 10 * len(x)


def test_every_step_runs_the_same_batch_shape(setup):
    model, x, y = setup
    seen = []

    class Spy(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, z):
            seen.append(z.shape[0])
            return self.m(z)

    spy = prepare_for_attack(Spy(model))
    StreamingPGD(spy, "linf", 0.1, 0.03, 6, batch_size=5, fixed_shape=True)(x, y, torch.arange(len(x)))
    assert set(seen) == {5}  # refilled slots: one shape for every step (what a compiled graph needs)
    seen.clear()
    StreamingPGD(spy, "linf", 0.1, 0.03, 6, batch_size=5)(x, y, torch.arange(len(x)))
    first_small = next((i for i, b in enumerate(seen) if b < 5), len(seen))
    assert first_small > 0 and all(b == 5 for b in seen[:first_small])  # full batches while the queue lasts
    assert all(a >= b for a, b in zip(seen[first_small:], seen[first_small + 1:]))  # then only the live tail


def test_targeted_matches_torchattacks_and_early_stop_keeps_every_hit(setup):
    import torchattacks as ta

    model, x, y = setup
    t = (y + 1) % 10
    ids = torch.arange(len(x))
    full = StreamingPGD(model, "linf", 0.3, 0.0375, 20, random_start=False, early_stop=False, batch_size=8)(
        x, y, ids, targets=t)
    ref = ta.PGD(model, eps=0.3, alpha=0.0375, steps=20, random_start=False)
    ref.set_mode_targeted_by_function(lambda images, labels: t)
    assert torch.equal(full, ref(x, y))
    early = StreamingPGD(model, "linf", 0.3, 0.0375, 20, random_start=False, batch_size=8)(x, y, ids, targets=t)
    with torch.no_grad():
        hit_full, hit_early = model(full).argmax(1) == t, model(early).argmax(1) == t
    assert hit_full.any() and not (hit_full & ~hit_early).any()


def test_sweep_bench_compares_with_plain_and_early_stop_independent_runs(tiny_checkpoints):
    from robustbench_lr.bench.sweep import bench_sweep

    df = bench_sweep(tiny_checkpoints["lr"], [0.0, 0.05, 0.1, 0.3], steps=3, n=24, batch_size=24,
                     device=torch.device("cpu"))
    assert list(df["eps"]) == [0.0, 0.05, 0.1, 0.3]
    # plain PGD attacks every clean-correct example for every step at every eps > 0
    n_correct = round(df["sweep_acc"].iloc[0] * 24)
    assert list(df["plain_grad_evals"]) == [0] + [3 * n_correct] * 3
    assert (df["indep_grad_evals"] <= df["plain_grad_evals"]).all()
    assert df["sweep_grad_evals"].sum() <= df["indep_grad_evals"].sum()
    # accuracy is non-increasing along the sweep
    assert (df["sweep_acc"].diff().dropna() <= 0).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_starts_depend_on_eps_and_not_on_batching(setup, norm):
    model, _, _ = setup
    x = torch.full((12, 1, 28, 28), 0.5)  # mid-grey: no clipping, the start minus x is the raw noise
    ids = torch.arange(100, 112)
    eps_a, eps_b = (0.05, 0.1) if norm == "linf" else (0.5, 1.0)
    da = StreamingPGD(model, norm, eps_a, 0.01, 5, seed=3)._start(x, ids) - x
    db = StreamingPGD(model, norm, eps_b, 0.01, 5, seed=3)._start(x, ids) - x
    assert not torch.allclose(db, da * (eps_b / eps_a), atol=1e-4)  # the old starts were exactly proportional
    corr = torch.corrcoef(torch.stack([da.flatten(), db.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1  # independent draws
    perm = torch.randperm(12)
    dp = StreamingPGD(model, norm, eps_a, 0.01, 5, seed=3)._start(x[perm], ids[perm]) - x
    assert torch.equal(dp, da[perm])  # an example's start depends on its id, not on its position or batch
    check_adversarial(x, x + db, norm, eps_b)


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.5)])
@pytest.mark.parametrize("region", ["background", "foreground"])
def test_masked_pgd_changes_only_the_masked_pixels(setup, norm, eps, region):
    model, x, y = setup
    adv = StreamingPGD(model, norm, eps, 2.5 * eps / 10, 10, batch_size=7, seed=1, mask=region)(
        x, y, torch.arange(len(x)))
    keep = region_mask(x, region).bool().expand_as(x)  # pixels the attack may change
    assert torch.equal(adv[~keep], x[~keep])  # bit-identical to the clean image elsewhere
    assert (adv[keep] != x[keep]).any()
    check_adversarial(x, adv, norm, eps)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_a_mask_covering_every_pixel_equals_plain_pgd(setup, norm, eps):
    model, x, y = setup
    x = x * 0.5  # every pixel <= 0.5: all background at threshold 0.5
    ids = torch.arange(len(x))
    plain = StreamingPGD(model, norm, eps, 2.5 * eps / 8, 8, batch_size=5, seed=2)(x, y, ids)
    masked = StreamingPGD(model, norm, eps, 2.5 * eps / 8, 8, batch_size=5, seed=2, mask="background",
                          mask_threshold=0.5)(x, y, ids)
    assert torch.equal(masked, plain)


def test_mask_through_the_registry(setup):
    model, x, y = setup
    spec = AttackSpec("pgd", steps=5, mask="background")
    s = spec.settings(0.1)
    assert s["mask"] == "background" and s["mask_threshold"] == 0.0 and "StreamingPGD" in s["implementation"]
    adv = build_attack(spec, model, 0.1, 10, 0, batch_size=8)(x, y, None, torch.arange(len(x)))
    bg = region_mask(x, "background").bool().expand_as(x)
    assert torch.equal(adv[~bg], x[~bg])
    with pytest.raises(UserError, match="StreamingPGD"):
        AttackSpec("pgd", mask="background", early_stop=False)
    with pytest.raises(UserError, match="mask"):
        AttackSpec("apgd", mask="foreground")
    with pytest.raises(UserError, match="mask_threshold"):
        AttackSpec("pgd", mask="foreground", mask_threshold=1.5)
