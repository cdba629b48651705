"""Hygiene checks of issue 13: aa_vs_torchattacks compares only with the full official AutoAttack, and double_steps
gives one row per eps whose robust accuracy lies between 1% and 99%."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from robustbench_lr.attacks import prepare_for_attack
from robustbench_lr.attacks.registry import AttackSpec
from robustbench_lr.runners.eps_sweep import SweepState
from robustbench_lr.runners.hygiene import CheckContext, check_aa_vs_ta, check_double_steps

N = 40
CPU = torch.device("cpu")


def _state(min_eps: np.ndarray) -> SweepState:
    st = SweepState.fresh(np.ones(len(min_eps), bool))
    st.min_eps = np.asarray(min_eps, np.float64)
    return st


def _robust(k: int, at: float = 0.1) -> SweepState:
    """The first k of N examples never fooled, the others fooled at eps `at`."""
    return _state(np.where(np.arange(N) < k, np.inf, at))


def _ctx(specs: list[AttackSpec], sweeps: dict[str, SweepState], model: nn.Module | None = None,
         x: torch.Tensor | None = None, nz: tuple[float, ...] = (0.05, 0.1, 0.2), num_classes: int = 10
         ) -> CheckContext:
    x = x if x is not None else torch.zeros(N, 1, 4, 4)
    return CheckContext(model or nn.Identity(), "m", x, torch.zeros(len(x), dtype=torch.long), np.arange(len(x)),
                        sweeps, specs, list(nz), "linf", num_classes, 0, 64, CPU, 5)


class Fresh:
    """Stands in for CheckContext.fresh_sweep: records the specs it was asked for and returns `state`."""

    def __init__(self, state: SweepState) -> None:
        self.state, self.calls = state, []

    def __call__(self, spec: AttackSpec, eps: list[float], seed: int) -> SweepState:
        self.calls.append((spec, list(eps)))
        return self.state


def test_aa_vs_torchattacks_compares_the_full_official_autoattack_at_the_eps_nearest_50_percent():
    aa = AttackSpec("autoattack")
    c = _ctx([aa], {aa.key: _robust(20)})
    c.fresh_sweep = fresh = Fresh(_robust(20))  # the chain agrees with the official code
    (row,) = check_aa_vs_ta(c)
    assert row["check"] == "aa_vs_torchattacks" and row["status"] == "pass" and row["eps"] == 0.1
    assert [(s.name, e) for s, e in fresh.calls] == [("autoattack-ta", [0.1])]
    c = _ctx([aa], {aa.key: _robust(20)})
    c.fresh_sweep = Fresh(_robust(N))  # the chain leaves 20 more examples robust: higher beyond noise
    (row,) = check_aa_vs_ta(c)
    assert row["status"] == "warn" and row["value"] == pytest.approx(0.5) and "20 robust only under torchattacks" \
        in row["detail"]


@pytest.mark.parametrize("spec,num_classes", [
    (AttackSpec("autoattack", aa_attacks=("apgd-ce", "apgd-t")), 10),  # an --aa-attacks subset
    (AttackSpec("autoattack", aa_version="plus"), 10),  # not the version the chain mimics
    (AttackSpec("autoattack", aa_few_classes="fallback"), 3),  # the fallback dropped APGD-T
], ids=["subset", "plus", "three-classes"])
def test_aa_vs_torchattacks_is_skipped_unless_the_full_standard_version_ran(spec, num_classes):
    c = _ctx([spec], {spec.key: _robust(20)}, num_classes=num_classes)
    c.fresh_sweep = fresh = Fresh(_robust(N))
    assert check_aa_vs_ta(c) == [] and fresh.calls == []


def test_aa_vs_torchattacks_reuses_the_chains_sweep_of_the_run():
    aa, ta = AttackSpec("autoattack"), AttackSpec("autoattack-ta")
    c = _ctx([aa, ta], {aa.key: _robust(20), ta.key: _robust(21)})
    c.fresh_sweep = fresh = Fresh(_robust(0))
    (row,) = check_aa_vs_ta(c)
    assert fresh.calls == [] and "its sweep in this run" in row["detail"] and row["value"] == pytest.approx(1 / N)
    assert row["status"] == "pass"  # one example is noise


def test_double_steps_gives_one_row_per_eps_with_accuracy_between_1_and_99_percent():
    pgd = AttackSpec("pgd", steps=5)
    c = _ctx([pgd], {}, nz=(0.05, 0.1, 0.2, 0.3))
    c._ind = {0.05: np.ones(N, bool), 0.1: np.arange(N) < 20, 0.2: np.arange(N) < 8, 0.3: np.zeros(N, bool)}
    # twice the steps: at 0.1 the same 50% (20 robust); at 0.2 15% (6 robust) instead of 20% (8 robust)
    doubled = _state(np.select([np.arange(N) < 6, np.arange(N) < 20], [np.inf, 0.2], 0.1))
    c.fresh_sweep = fresh = Fresh(doubled)
    rows = check_double_steps(c)
    assert [(s.steps, e) for s, e in fresh.calls] == [(10, [0.1, 0.2])]  # twice the steps, on those eps only
    assert [(r["eps"], r["status"]) for r in rows] == [(0.1, "pass"), (0.2, "fail")]
    assert rows[1]["value"] == pytest.approx(2 / N) and "10 steps" in rows[1]["detail"]
    c._ind = {e: np.ones(N, bool) for e in c.nz}
    (row,) = check_double_steps(c)
    assert row["status"] == "pass" and np.isnan(row["eps"]) and "no eps" in row["detail"]


def test_double_steps_on_a_real_model_checks_exactly_the_eps_in_range():
    torch.manual_seed(0)
    model = prepare_for_attack(nn.Sequential(nn.Flatten(), nn.Linear(16, 10)))
    x = torch.rand(N, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    c = CheckContext(model, "m", x, y, np.arange(N), {}, [AttackSpec("pgd", steps=5)], [0.001, 0.02, 0.05, 0.5],
                     "linf", 10, 0, 64, CPU, 5)
    accs = {e: float(m.mean()) for e, m in c.independent().items()}
    rows = check_double_steps(c)
    in_range = [e for e in c.nz if 0.01 <= accs[e] <= 0.99]
    assert in_range, accs  # the eps list spans the curve: some eps are in range, some are not
    assert len(in_range) < len(c.nz) and [r["eps"] for r in rows] == in_range
