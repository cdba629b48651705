"""Attacks, the threat-model invariant, gradient counting, the eps-sweep engine and the hygiene checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustbench_lr.attacks import ATTACKS, AttackSpec, ThreatModelViolation, check_adversarial, parse_eps, prepare_for_attack
from robustbench_lr.attacks.counting import CountingModel
from robustbench_lr.results.stats import clopper_pearson, mcnemar_exact
from robustbench_lr.runners.common import eval_indices
from robustbench_lr.runners.eps_sweep import SweepState, run_sweep
from robustbench_lr.runners.hygiene import run_checks
from robustbench_lr.attacks.registry import AA_QUERIES, AA_STEPS, build_attack, random_targets
from robustbench_lr.checkpoint import load_model
from robustbench_lr.data import load_dataset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    te = load_dataset("mnist5k", "test")
    idx = torch.as_tensor(eval_indices(len(te), 48))
    return te.batch(idx)


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return {k: prepare_for_attack(load_model(v)) for k, v in tiny_checkpoints.items()}


@pytest.mark.parametrize("name", [a for a in ATTACKS if a not in ("autoattack", "autoattack-ta", "fmn", "ddn", "alma")])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_attack_respects_its_threat_model_and_never_helps(models, data, name, norm):
    if name == "fgsm" and norm == "l2":
        with pytest.raises(ValueError, match="linf only"):
            AttackSpec(name, norm=norm)
        return
    x, y = data
    x, y = x[:8], y[:8]
    eps = 0.1 if norm == "linf" else 1.0
    spec = AttackSpec(name, norm=norm, steps=5, queries=50)
    model = models["lr"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    st = run_sweep(model, x, y, spec, [eps], num_classes=10, seed=0, batch_size=8, device=CPU,
                   targets=random_targets(y, 10, 0) if spec.targeted == "random" else None)
    assert st.rows[0]["n_correct"] <= int(st.clean_correct.sum())
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


def test_torchattacks_autoattack_chain_uses_the_reference_settings(models):
    atk_spec = AttackSpec("autoattack-ta")
    s = atk_spec.settings(0.3)
    assert s["steps"] == AA_STEPS == 100 and s["queries"] == AA_QUERIES == 5000 and "9 targets" in s["protocol"]
    apgd, apgdt, fab, square = build_attack(atk_spec, models["conv"], 0.3, 10, 0).atk.attacks
    assert apgd.steps == apgdt.steps == fab.steps == 100 and apgd.loss == "ce"
    assert apgdt.n_target_classes == fab.n_target_classes == 9 and square.n_queries == 5000


def test_autoattack_runs_and_is_at_least_as_strong_as_pgd(models, data):
    x, y = data
    x, y = x[:6], y[:6]
    aa = run_sweep(models["conv"], x, y, AttackSpec("autoattack"), [0.15], num_classes=10, seed=0, batch_size=6,
                   device=CPU)
    pgd = run_sweep(models["conv"], x, y, AttackSpec("pgd", steps=10), [0.15], num_classes=10, seed=0, batch_size=6,
                    device=CPU)
    assert aa.rows[0]["n_correct"] <= pgd.rows[0]["n_correct"]


def test_threat_model_violations_are_errors_not_clipped():
    x = torch.rand(2, 1, 4, 4) * 0.5 + 0.25
    check_adversarial(x, x + 0.1, "linf", 0.1)
    with pytest.raises(ThreatModelViolation, match="budget"):
        check_adversarial(x, x + 0.1001, "linf", 0.1)
    with pytest.raises(ThreatModelViolation, match=r"\[0, 1\]"):
        check_adversarial(x, x + 0.9, "linf", 1.0)
    with pytest.raises(ThreatModelViolation, match="non-finite"):
        check_adversarial(x, x * float("nan"), "linf", 1.0)
    d = torch.zeros_like(x)
    d[:, 0, 0, 0] = 0.3
    check_adversarial(x, x + d, "l2", 0.3)
    with pytest.raises(ThreatModelViolation):
        check_adversarial(x, x + d * 1.001, "l2", 0.3)


def test_gradient_evaluations_are_counted_per_example(models, data):
    x, y = data
    counting = CountingModel(models["conv"])
    build_attack(AttackSpec("pgd", steps=5, early_stop=False), counting, 0.1, 10, 0)(x[:4], y[:4], None)
    assert counting.grad_evals == 20  # torchattacks' PGD: every step for every example
    counting.reset()
    build_attack(AttackSpec("pgd", steps=5), counting, 0.1, 10, 0)(x[:4], y[:4], None)
    assert 4 <= counting.grad_evals <= 20  # early stop: at least one pass per example, at most all steps
    counting.reset()
    build_attack(AttackSpec("fgsm"), counting, 0.1, 10, 0)(x[:4], y[:4], None)
    assert counting.grad_evals == 4


def test_sweep_attacks_only_still_robust_examples(models, data):
    x, y = data
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    st = run_sweep(models["conv"], x, y, AttackSpec("pgd", steps=5), eps, num_classes=10, seed=0, batch_size=16,
                   device=CPU)
    rows = st.rows
    assert [r["eps"] for r in rows] == eps
    assert rows[0]["grad_evals"] == 0 and rows[0]["n_correct"] == int(st.clean_correct.sum())
    assert rows[1]["n_attacked"] == int(st.clean_correct.sum())  # clean-wrong examples are never attacked
    for prev, cur in zip(rows, rows[1:]):
        assert cur["n_correct"] <= prev["n_correct"]
        if cur["eps"] > 0 and prev["eps"] > 0:
            assert cur["n_attacked"] == prev["n_correct"]
        assert cur["n_attacked"] <= cur["grad_evals"] <= 5 * cur["n_attacked"]
    # min_eps reproduces every row
    for r in rows:
        assert int((st.min_eps > r["eps"]).sum()) == r["n_correct"]


def test_sweep_costs_less_than_independent_runs_and_is_never_weaker(models, data):
    x, y = data
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    spec = AttackSpec("pgd", steps=5, random_start=False)
    sw = run_sweep(models["conv"], x, y, spec, eps, num_classes=10, seed=0, batch_size=48, device=CPU)
    cost_sweep = sum(r["grad_evals"] for r in sw.rows)
    cost_ind, acc_ind = 0, []
    for e in eps:
        counting = CountingModel(models["conv"])
        st = run_sweep(counting.model, x, y, spec, [e], num_classes=10, seed=0, batch_size=48, device=CPU)
        cost_ind += 5 * int(st.clean_correct.sum())  # an independent run attacks every clean-correct example
        acc_ind.append(st.rows[0]["n_correct"])
    assert cost_ind >= 3 * cost_sweep
    assert all(r["n_correct"] <= a for r, a in zip(sw.rows, acc_ind))


def test_sweep_resumes_from_a_saved_state(models, data):
    x, y = data
    spec = AttackSpec("pgd", steps=5, random_start=False)
    eps = [0.05, 0.1, 0.2]
    full = run_sweep(models["lr"], x, y, spec, eps, num_classes=10, seed=0, batch_size=48, device=CPU)
    saved = {}

    class Stop(Exception):
        pass

    def stop_after_first(st: SweepState) -> None:
        saved["state"] = st.to_dict()
        raise Stop

    with pytest.raises(Stop):
        run_sweep(models["lr"], x, y, spec, eps, num_classes=10, seed=0, batch_size=48, device=CPU,
                  on_cell=stop_after_first)
    resumed = run_sweep(models["lr"], x, y, spec, eps, num_classes=10, seed=0, batch_size=48, device=CPU,
                        state=SweepState.from_dict(saved["state"]))
    assert resumed.done == eps
    assert [r["n_correct"] for r in resumed.rows] == [r["n_correct"] for r in full.rows]
    assert np.array_equal(resumed.min_eps, full.min_eps)


def test_random_targets_are_wrong_classes_and_fixed_by_seed():
    y = torch.arange(10).repeat(20)
    t = random_targets(y, 10, 3)
    assert (t != y).all() and torch.equal(t, random_targets(y, 10, 3)) and not torch.equal(t, random_targets(y, 10, 4))


def test_targeted_sweep_counts_target_hits(models, data):
    x, y = data
    spec = AttackSpec("pgd-random-target", steps=10)
    st = run_sweep(models["conv"], x, y, spec, [0.3], num_classes=10, seed=0, batch_size=48, device=CPU,
                   targets=random_targets(y, 10, 0))
    r = st.rows[0]
    assert 0 <= r["n_target_hit"] <= r["n_clean_correct"] - r["n_correct"]
    assert r["n_target_hit"] > 0


def test_hygiene_checks_pass_on_a_sound_model_and_catch_masked_gradients(models, data):
    x, y = data
    rows = run_checks(models["conv"], "conv", x, y, sweeps={}, specs=[AttackSpec("pgd", steps=5)],
                      eps_list=[0.0, 0.1, 0.3], norm="linf", num_classes=10, seed=0, batch_size=48, device=CPU,
                      n_check=24, steps=5)
    by = {r["check"]: r for r in rows}
    assert {"deterministic", "gradients", "unbounded", "monotone_eps", "iterative_vs_single", "double_steps",
            "noise_vs_attack"} <= set(by)
    assert all(r["status"] in ("pass", "warn", "fail") for r in rows)
    assert by["deterministic"]["status"] == by["gradients"]["status"] == by["unbounded"]["status"] == "pass"

    class Masked(nn.Module):  # rounds its input: zero input gradients everywhere (gradient masking)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(torch.round(z * 4) / 4)

    bad = run_checks(prepare_for_attack(Masked(models["conv"])), "masked", x, y, sweeps={},
                     specs=[AttackSpec("pgd", steps=5)], eps_list=[0.1], norm="linf", num_classes=10, seed=0,
                     batch_size=48, device=CPU, n_check=24, steps=5)
    assert {r["check"]: r["status"] for r in bad}["gradients"] in ("warn", "fail")

    class Noisy(nn.Module):  # a randomised defence: not deterministic
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner((z + 0.05 * torch.randn_like(z)).clamp(0, 1))

    noisy = run_checks(prepare_for_attack(Noisy(models["conv"])), "noisy", x, y, sweeps={},
                       specs=[AttackSpec("pgd", steps=5)], eps_list=[0.1], norm="linf", num_classes=10, seed=0,
                       batch_size=48, device=CPU, n_check=24, steps=5)
    assert {r["check"]: r["status"] for r in noisy}["deterministic"] == "fail"


def test_statistics_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.3085, abs=1e-4)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)
    assert mcnemar_exact(10, 2) == pytest.approx(0.03857, abs=1e-4)
    assert mcnemar_exact(0, 0) == 1.0


def test_parse_eps_accepts_fractions():
    assert parse_eps("0,0.05,8/255") == [0.0, 0.05, 8 / 255]
    with pytest.raises(ValueError, match="eps"):
        parse_eps("0,abc")


def test_sweep_vs_independent_fails_only_on_a_significant_excess():
    from robustbench_lr.runners.hygiene import sweep_vs_independent

    def masks(n, s_only, i_only, both=0):
        a, b = np.zeros(n, bool), np.zeros(n, bool)
        a[:s_only] = True
        b[s_only:s_only + i_only] = True
        a[s_only + i_only:s_only + i_only + both] = b[s_only + i_only:s_only + i_only + both] = True
        return a, b

    a, b = masks(13, 1, 0, 5)  # one example of 13: 7.7 pt, but no evidence
    row = sweep_vs_independent("m", {0.1: a}, {0.1: b}, "pgd-linf")
    assert row["status"] == "warn" and row["value"] == pytest.approx(1 / 13)
    a, b = masks(200, 12, 0, 50)  # 6 pt, p = 2^-11
    assert sweep_vs_independent("m", {0.1: a}, {0.1: b}, "pgd-linf")["status"] == "fail"
    a, b = masks(200, 3, 3, 50)
    a2, b2 = masks(200, 0, 4, 10)
    row = sweep_vs_independent("m", {0.1: a, 0.2: a2}, {0.1: b, 0.2: b2}, "pgd-linf")
    assert row["status"] == "pass" and row["value"] == 0.0


def test_a_region_masked_attack_is_checked_against_fgsm_and_noise_on_the_same_region(models, data):
    """Foreground-only PGD against all-pixel FGSM would 'fail' iterative_vs_single on any sound model."""
    x, y = data
    spec = AttackSpec("pgd", steps=5, mask="foreground")
    rows = run_checks(models["conv"], "conv", x, y, sweeps={}, specs=[spec], eps_list=[0.0, 0.1, 0.3], norm="linf",
                      num_classes=10, seed=0, batch_size=48, device=CPU, n_check=24, steps=5)
    by = {r["check"]: r for r in rows}
    assert "foreground pixels only" in by["iterative_vs_single"]["detail"]
    assert "foreground pixels only" in by["noise_vs_attack"]["detail"]
    assert by["iterative_vs_single"]["value"] <= 0.1  # FGSM on the strokes rarely beats PGD on the strokes
