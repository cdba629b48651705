"""Evaluation-hygiene checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; anchors.md §6).

Each check returns a row {model, check, status: pass|warn|fail, value, threshold, n, eps, attack, detail}.
They run on `n_check` clean-correct examples of the evaluation set (the first ones, in evaluation order):

| check                 | passes when                                                                     |
|-----------------------|---------------------------------------------------------------------------------|
| deterministic         | two forward passes give identical logits                                        |
| gradients             | input gradients of the loss are finite and non-zero for every example          |
| unbounded             | PGD with Linf eps = 1 brings accuracy to chance (1 / classes) or below         |
| monotone_eps          | independent attacks at increasing eps never raise accuracy (<= 1 pt noise)     |
| sweep_vs_independent  | the sweep is never > 1 pt above independent runs (warn if not significant)    |
| iterative_vs_single   | no example fooled by FGSM survives PGD at the same eps (<= 1% warns)           |
| double_steps          | doubling the iterations changes accuracy by < 1 pt                             |
| noise_vs_attack       | random noise of the same norm leaves accuracy at or above the attack's          |
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..stats import mcnemar_exact
from .registry import AttackSpec
from .sweep import SweepState, predict, run_sweep
from .threat import random_noise

log = logging.getLogger(__name__)
TOL = 0.01  # one percentage point


def _row(model: str, check: str, status: str, value: float, threshold: float, n: int, eps: float = float("nan"),
         attack: str = "", detail: str = "") -> dict[str, Any]:
    return {"model": model, "check": check, "status": status, "value": float(value), "threshold": float(threshold),
            "n": int(n), "eps": float(eps), "attack": attack, "detail": detail}


def _grade(excess: float, warn_at: float = TOL, fail_at: float = 3 * TOL) -> str:
    return "pass" if excess <= warn_at else ("warn" if excess <= fail_at else "fail")


def sweep_vs_independent(label: str, sweep: dict[float, np.ndarray], independent: dict[float, np.ndarray],
                         attack: str) -> dict[str, Any]:
    """The check that the early-stopping sweep is not weaker than independent runs, from per-eps robust masks.

    Paired on the same examples. The two use different random starts, so a few discordant examples either way
    are noise: an excess over 1 pt fails only when the exact McNemar test says it is significant (p < 0.05),
    and warns otherwise.
    """
    cells = []
    for e, a in sweep.items():
        b = independent[e]
        s_only, i_only = int((a & ~b).sum()), int((~a & b).sum())
        cells.append(((s_only - i_only) / len(a), e, s_only, i_only, mcnemar_exact(s_only, i_only)))
    excess, e_w, s_only, i_only, p = max(cells)
    status = "pass" if excess <= TOL else ("fail" if p < 0.05 else "warn")
    return _row(label, "sweep_vs_independent", status, excess, TOL, len(sweep[e_w]), e_w, attack,
                detail=f"max over eps of (sweep accuracy - independent accuracy) on the same examples; at eps={e_w:g}: "
                       f"{s_only} robust only in the sweep, {i_only} only in the independent run, exact McNemar "
                       f"p={p:.2g} (fails only if > 1 pt and p < 0.05)")


def primary_attack(specs: list[AttackSpec], norm: str, steps: int) -> AttackSpec:
    """The white-box attack the checks exercise: 'pgd' if run, else the first iterative untargeted one, else PGD."""
    for name in ("pgd", "apgd"):
        for s in specs:
            if s.name == name and s.norm == norm:
                return s
    return AttackSpec("pgd", norm=norm, steps=steps)


def run_checks(model: nn.Module, label: str, x: Tensor, y: Tensor, *, sweeps: dict[str, SweepState],
               specs: list[AttackSpec], eps_list: list[float], norm: str, num_classes: int, seed: int, batch_size: int,
               device: torch.device, n_check: int = 200, steps: int = 20) -> list[dict[str, Any]]:
    """All checks for one model. `sweeps` maps AttackSpec.key -> finished sweep on the same (x, y)."""
    rows: list[dict[str, Any]] = []
    some = next(iter(sweeps.values()), None)
    clean = some.clean_correct if some is not None else (predict(model, x, batch_size, device) == y).numpy()
    pos = np.flatnonzero(clean)[:n_check]
    xs, ys = x[pos], y[pos]
    n = len(pos)
    nz = [e for e in sorted(eps_list) if e > 0]
    if n == 0:
        return [_row(label, "examples", "fail", 0, 1, 0, detail="no clean-correct example to check")]

    # determinism
    with torch.no_grad():
        xb = xs[:64].to(device)
        a, b = model(xb), model(xb)
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) or 1.0
    rows.append(_row(label, "deterministic", "pass" if diff <= 1e-6 * scale else "fail", diff, 1e-6 * scale, len(xb),
                     detail="max |logits1 - logits2| over two forward passes"))

    # gradients
    xg = xs[:batch_size].to(device).clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), ys[:batch_size].to(device), reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    g = g.flatten(1)
    nonfinite = int((~torch.isfinite(g)).any(1).sum())
    zero = int((g.abs().amax(1) == 0).sum())
    status = "fail" if nonfinite else ("warn" if zero else "pass")
    rows.append(_row(label, "gradients", status, (nonfinite + zero) / len(g), 0, len(g),
                     detail=f"{nonfinite} example(s) with non-finite and {zero} with all-zero input gradients"))

    # unbounded attack
    unb = AttackSpec("pgd", norm="linf", steps=max(steps, 20))
    st = run_sweep(model, xs, ys, unb, [1.0], num_classes=num_classes, seed=seed, batch_size=batch_size, device=device)
    acc = float(st.correct_at(1.0).mean())
    rows.append(_row(label, "unbounded", "pass" if acc <= 1.0 / num_classes else "fail", acc, 1.0 / num_classes, n,
                     1.0, unb.name, detail=f"PGD-{unb.steps} Linf eps=1 accuracy vs chance 1/{num_classes}"))
    if not nz:
        return rows

    # independent runs of the primary attack at every eps (fresh state each time)
    prim = primary_attack(specs, norm, steps)
    ind = {}
    for e in nz:
        st = run_sweep(model, xs, ys, prim, [e], num_classes=num_classes, seed=seed + 1, batch_size=batch_size,
                       device=device, state=SweepState.fresh(np.ones(n, bool)))
        ind[e] = st.correct_at(e)
    accs = [float(ind[e].mean()) for e in nz]
    rises = [max(0.0, accs[i] - accs[i - 1]) for i in range(1, len(accs))]
    worst = max(rises, default=0.0)
    rows.append(_row(label, "monotone_eps", _grade(worst), worst, TOL, n, attack=prim.key,
                     detail="largest accuracy increase between consecutive eps of independent runs: "
                            + ", ".join(f"{e:g}:{a:.3f}" for e, a in zip(nz, accs))))
    if prim.key in sweeps:
        sw = sweeps[prim.key]
        rows.append(sweep_vs_independent(label, {e: sw.correct_at(e)[pos] for e in nz}, ind, prim.key))

    # iterative vs single step (Linf)
    if norm == "linf":
        if "fgsm-linf" in sweeps:
            fg = {e: sweeps["fgsm-linf"].correct_at(e)[pos] for e in nz}
        else:
            fst = run_sweep(model, xs, ys, AttackSpec("fgsm"), nz, num_classes=num_classes, seed=seed,
                            batch_size=batch_size, device=device, state=SweepState.fresh(np.ones(n, bool)))
            fg = {e: fst.correct_at(e) for e in nz}
        it = {e: (sweeps[prim.key].correct_at(e)[pos] if prim.key in sweeps else ind[e]) for e in nz}
        frac = max(float((~fg[e] & it[e]).mean()) for e in nz)
        rows.append(_row(label, "iterative_vs_single", "pass" if frac == 0 else ("warn" if frac <= TOL else "fail"),
                         frac, 0, n, attack=prim.key,
                         detail="largest fraction of examples fooled by FGSM but not by the iterative attack"))

    # doubling the iterations
    mid = nz[len(nz) // 2]
    if prim.name in ("pgd", "apgd"):
        dbl = replace(prim, steps=2 * prim.steps)
        st = run_sweep(model, xs, ys, dbl, [mid], num_classes=num_classes, seed=seed + 1, batch_size=batch_size,
                       device=device, state=SweepState.fresh(np.ones(n, bool)))
        delta = abs(float(st.correct_at(mid).mean()) - float(ind[mid].mean()))
        rows.append(_row(label, "double_steps", "pass" if delta < TOL else "fail", delta, TOL, n, mid, prim.key,
                         detail=f"|acc({2 * prim.steps} steps) - acc({prim.steps} steps)| at eps={mid:g}"))

    # random noise of the same norm
    gen = torch.Generator().manual_seed(seed)
    gaps = []
    for e in nz:
        xn = random_noise(xs, norm, e, gen)
        acc_noise = float((predict(model, xn, batch_size, device) == ys).float().mean())
        gaps.append(float(ind[e].mean()) - acc_noise)
    worst_gap = max(gaps)
    rows.append(_row(label, "noise_vs_attack", "pass" if worst_gap <= 0 else _grade(worst_gap, 0.0, TOL), worst_gap, 0,
                     n, attack=prim.key, detail="max over eps of (attack accuracy - accuracy under random noise of the "
                                                "same norm); > 0 means noise beat the attack"))
    return rows
