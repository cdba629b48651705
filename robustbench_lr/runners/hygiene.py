"""Evaluation-hygiene checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; anchors.md §6), and
the attack sanity flags of AttackBench (Cinà et al. 2025).

Each check returns rows {model, check, status: pass|warn|fail, value, threshold, n, eps, attack, detail}.
They run on `n_check` clean-correct examples of the evaluation set (the first ones, in evaluation order), one
check at a time (`iter_checks` yields after each, so the caller can save progress as it goes):

| check                 | passes when                                                                     |
|-----------------------|---------------------------------------------------------------------------------|
| deterministic         | two forward passes give identical logits                                        |
| gradients             | input gradients of the loss are finite and non-zero for every example          |
| unbounded             | PGD with Linf eps = 1 brings accuracy to chance (1 / classes) or below         |
| monotone_eps          | independent attacks at increasing eps never raise accuracy (<= 1 pt noise)     |
| sweep_vs_independent  | the sweep is never > 1 pt above independent runs (warn if not significant)    |
| iterative_vs_single   | no example fooled by FGSM survives PGD at the same eps (<= 1% warns)           |
| double_steps          | doubling the iterations changes accuracy by < 1 pt, at every eps whose accuracy |
|                       | lies between 1% and 99% (one row per such eps)                                 |
| noise_vs_attack       | random noise of the same norm leaves accuracy at or above the attack's          |
| attack_unchanged      | (per attack, every cell) not every failed example came back bit-identical       |
| attack_no_backward    | (per gradient attack, every cell with attacked examples) backward passes > 0    |
| attack_no_success     | (per attack) some cell fooled a clean-correct example (warn otherwise)         |
| autoattack:<check>    | the official AutoAttack's own checks (randomness, softmax, zero gradients, ...) |
| minimal_norm_vs_pgd   | the minimal-norm curve is never above the PGD sweep beyond noise (McNemar)      |
| aa_vs_torchattacks    | torchattacks' AutoAttack chain is not more than noise above the official one    |
|                       | (only when the full official 'standard' version ran, with >= 4 classes)        |
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks.masks import region_mask
from ..attacks.prepare import predict
from ..attacks.registry import AttackSpec
from ..attacks.threat import random_noise
from ..results.stats import mcnemar_exact
from .eps_sweep import SweepState, run_sweep

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


@dataclass
class CheckContext:
    """What the checks of one model share. `independent()` runs the primary attack once per eps (cached)."""

    model: nn.Module
    label: str
    xs: Tensor  # (n, C, H, W): the checked clean-correct examples
    ys: Tensor
    pos: np.ndarray  # their positions in the evaluation set
    sweeps: dict[str, SweepState]
    specs: list[AttackSpec]
    nz: list[float]  # eps > 0
    norm: str
    num_classes: int
    seed: int
    batch_size: int
    device: torch.device
    steps: int
    _ind: dict[float, np.ndarray] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.pos)

    @property
    def prim(self) -> AttackSpec:
        return primary_attack(self.specs, self.norm, self.steps)

    def fresh_sweep(self, spec: AttackSpec, eps: list[float], seed: int) -> SweepState:
        return run_sweep(self.model, self.xs, self.ys, spec, eps, num_classes=self.num_classes, seed=seed,
                         batch_size=self.batch_size, device=self.device, state=SweepState.fresh(np.ones(self.n, bool)))

    def independent(self) -> dict[float, np.ndarray]:
        if self._ind is None:
            self._ind = {e: self.fresh_sweep(self.prim, [e], self.seed + 1).correct_at(e) for e in self.nz}
        return self._ind

    def sweep_at(self, key: str | None, e: float) -> np.ndarray:
        return self.sweeps[key].correct_at(e)[self.pos]


def check_deterministic(c: CheckContext) -> list[dict[str, Any]]:
    with torch.no_grad():
        xb = c.xs[:64].to(c.device)
        a, b = c.model(xb), c.model(xb)
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) or 1.0
    return [_row(c.label, "deterministic", "pass" if diff <= 1e-6 * scale else "fail", diff, 1e-6 * scale, len(xb),
                 detail="max |logits1 - logits2| over two forward passes")]


def check_gradients(c: CheckContext) -> list[dict[str, Any]]:
    xg = c.xs[:c.batch_size].to(c.device).clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(c.model(xg), c.ys[:c.batch_size].to(c.device), reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    g = g.flatten(1)
    nonfinite = int((~torch.isfinite(g)).any(1).sum())
    zero = int((g.abs().amax(1) == 0).sum())
    status = "fail" if nonfinite else ("warn" if zero else "pass")
    return [_row(c.label, "gradients", status, (nonfinite + zero) / len(g), 0, len(g),
                 detail=f"{nonfinite} example(s) with non-finite and {zero} with all-zero input gradients")]


def check_unbounded(c: CheckContext) -> list[dict[str, Any]]:
    unb = AttackSpec("pgd", norm="linf", steps=max(c.steps, 20))
    acc = float(c.fresh_sweep(unb, [1.0], c.seed).correct_at(1.0).mean())
    return [_row(c.label, "unbounded", "pass" if acc <= 1.0 / c.num_classes else "fail", acc, 1.0 / c.num_classes,
                 c.n, 1.0, unb.name, detail=f"PGD-{unb.steps} Linf eps=1 accuracy vs chance 1/{c.num_classes}")]


def check_monotone(c: CheckContext) -> list[dict[str, Any]]:
    ind = c.independent()
    accs = [float(ind[e].mean()) for e in c.nz]
    worst = max((max(0.0, accs[i] - accs[i - 1]) for i in range(1, len(accs))), default=0.0)
    rows = [_row(c.label, "monotone_eps", _grade(worst), worst, TOL, c.n, attack=c.prim.key,
                 detail="largest accuracy increase between consecutive eps of independent runs: "
                        + ", ".join(f"{e:g}:{a:.3f}" for e, a in zip(c.nz, accs)))]
    if c.prim.key in c.sweeps:
        rows.append(sweep_vs_independent(c.label, {e: c.sweep_at(c.prim.key, e) for e in c.nz}, ind, c.prim.key))
    return rows


def check_iterative(c: CheckContext) -> list[dict[str, Any]]:
    if c.norm != "linf":
        return []
    mask = getattr(c.prim, "mask", None)
    if "fgsm-linf" in c.sweeps and mask is None:
        fg = {e: c.sweep_at("fgsm-linf", e) for e in c.nz}
    else:  # a region-masked attack is compared with FGSM on the same region: one PGD step of eps, no random start
        single = AttackSpec("fgsm") if mask is None else AttackSpec(
            "pgd", steps=1, step_size=1.0, random_start=False, mask=mask, mask_threshold=c.prim.mask_threshold)
        fst = c.fresh_sweep(single, c.nz, c.seed)
        fg = {e: fst.correct_at(e) for e in c.nz}
    it = {e: (c.sweep_at(c.prim.key, e) if c.prim.key in c.sweeps else c.independent()[e]) for e in c.nz}
    frac = max(float((~fg[e] & it[e]).mean()) for e in c.nz)
    return [_row(c.label, "iterative_vs_single", "pass" if frac == 0 else ("warn" if frac <= TOL else "fail"), frac, 0,
                 c.n, attack=c.prim.key, detail="largest fraction of examples fooled by FGSM but not by the "
                                                "iterative attack" + (f" (FGSM on the {mask} pixels only)" if mask
                                                                      else ""))]


def check_double_steps(c: CheckContext) -> list[dict[str, Any]]:
    """Doubling the iterations must not lower accuracy by >= 1 pt, at every eps with accuracy in [1%, 99%]."""
    if c.prim.name not in ("pgd", "apgd"):
        return []
    ind = c.independent()
    cells = [e for e in c.nz if 0.01 <= float(ind[e].mean()) <= 0.99]
    if not cells:
        return [_row(c.label, "double_steps", "pass", 0.0, TOL, c.n, attack=c.prim.key,
                     detail="no eps with accuracy between 1% and 99%: nothing for more iterations to change")]
    dbl = replace(c.prim, steps=2 * c.prim.steps)
    st = c.fresh_sweep(dbl, cells, c.seed + 1)
    rows = []
    for e in cells:
        a, b = float(st.correct_at(e).mean()), float(ind[e].mean())
        delta = abs(a - b)
        rows.append(_row(c.label, "double_steps", "pass" if delta < TOL else "fail", delta, TOL, c.n, e, c.prim.key,
                         detail=f"|acc({2 * c.prim.steps} steps) - acc({c.prim.steps} steps)| at eps={e:g}: "
                                f"{100 * a:.1f}% vs {100 * b:.1f}%"))
    return rows


def check_noise(c: CheckContext) -> list[dict[str, Any]]:
    ind = c.independent()
    mask = getattr(c.prim, "mask", None)
    gen = torch.Generator().manual_seed(c.seed)
    gaps = []
    for e in c.nz:
        xn = random_noise(c.xs, c.norm, e, gen)
        if mask is not None:  # noise on the attack's region only, so the two are comparable
            xn = c.xs + region_mask(c.xs, mask, c.prim.mask_threshold) * (xn - c.xs)
        # counts, not float means: a float32 and a float64 mean of the same counts differ by ~1e-8
        n_noise = int((predict(c.model, xn, c.batch_size, c.device) == c.ys).sum())
        gaps.append((int(np.sum(ind[e])) - n_noise) / max(1, len(c.ys)))
    worst = max(gaps)
    return [_row(c.label, "noise_vs_attack", "pass" if worst <= 0 else _grade(worst, 0.0, TOL), worst, 0, c.n,
                 attack=c.prim.key, detail="max over eps of (attack accuracy - accuracy under random noise of the "
                                           "same norm" + (f", on the {mask} pixels only" if mask else "")
                                           + "); > 0 means noise beat the attack")]


def sanity_rows(label: str, key: str, rows: list[dict[str, Any]], gradient_free: bool,
                returns_clean: bool = False) -> list[dict[str, Any]]:
    """AttackBench's sanity flags for one attack, over every cell of its sweep (`SweepState.rows`).

    `returns_clean`: the attack returns the clean input for every point it does not fool by design (the official
    AutoAttack, minimal-norm attacks), so the unchanged-input flag says nothing about it and is left out."""
    cells = [r for r in rows if r["eps"] > 0 and r["n_attacked"] > 0]
    if not cells:
        return []
    n = max(r["n_attacked"] for r in cells)
    failed = {r["eps"]: r["n_attacked"] - r["n_fooled_here"] for r in cells}
    same = [r["eps"] for r in cells if failed[r["eps"]] > 0 and r.get("n_unchanged_failed", 0) >= failed[r["eps"]]]
    out = [] if returns_clean else [
        _row(label, "attack_unchanged", "fail" if same else "pass", len(same), 0, n, attack=key,
             detail="cells where every example the attack failed on came back bit-identical to the clean input"
                    + (f": eps {', '.join(f'{e:g}' for e in same)}" if same else ": none"))]
    if not gradient_free:
        zero = [r["eps"] for r in cells if r["grad_evals"] == 0]
        out.append(_row(label, "attack_no_backward", "fail" if zero else "pass", len(zero), 0, n, attack=key,
                        detail="cells with attacked examples but zero backward passes"
                               + (f": eps {', '.join(f'{e:g}' for e in zero)}" if zero else ": none")))
    fooled_any = any(r["n_correct"] < r["n_clean_correct"] for r in cells)
    top = max(cells, key=lambda r: r["eps"])
    out.append(_row(label, "attack_no_success", "pass" if fooled_any else "warn", 0.0 if fooled_any else 1.0, 0, n,
                    top["eps"], key, detail="the attack's success rate equals the clean error rate at every eps "
                                            "(it fooled no clean-correct example)" if not fooled_any else
                    "the attack fooled clean-correct examples (success rate above the clean error rate)"))
    return out


def flag_rows(label: str, key: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The attack's own checks (official AutoAttack), one row per check over every cell: its worst status."""
    by: dict[str, list[tuple[float, dict[str, str]]]] = {}
    for r in rows:
        for f in json.loads(r.get("attack_flags") or "[]"):
            by.setdefault(f["check"], []).append((r["eps"], f))
    order = {"pass": 0, "warn": 1, "fail": 2}
    out = []
    for check, cells in by.items():
        worst = max(cells, key=lambda c: order.get(c[1]["status"], 1))
        bad = [e for e, f in cells if f["status"] != "pass"]
        detail = worst[1].get("detail", "") + (f" (at eps {', '.join(f'{e:g}' for e in bad)})" if bad else "")
        out.append(_row(label, f"autoattack:{check}", worst[1]["status"], len(bad), 0, len(cells), worst[0], key,
                        detail))
    return out


def _paired_excess(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int, float]:
    """(accuracy of a - accuracy of b, a-only, b-only, exact McNemar p) on the same examples."""
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return (a_only - b_only) / len(a), a_only, b_only, mcnemar_exact(a_only, b_only)


def check_minimal_norm(c: CheckContext) -> list[dict[str, Any]]:
    """A minimal-norm attack's curve must not lie above the PGD sweep beyond noise at any eps."""
    ref = c.prim.key if c.prim.key in c.sweeps else None
    rows = []
    for key, st in c.sweeps.items():
        if st.norms is None:
            continue
        cells = [(_paired_excess(st.correct_at(e)[c.pos], c.sweep_at(ref, e) if ref else c.independent()[e]), e)
                 for e in c.nz]
        (excess, a_only, b_only, p), e = max(cells, key=lambda t: t[0][0])
        status = "pass" if excess <= TOL else ("fail" if p < 0.05 else "warn")
        rows.append(_row(c.label, "minimal_norm_vs_pgd", status, excess, TOL, c.n, e, key,
                         detail=f"max over eps of (minimal-norm accuracy - {c.prim.key} accuracy); at eps={e:g}: "
                                f"{a_only} robust only under the minimal-norm attack, {b_only} only under PGD, "
                                f"McNemar p={p:.2g} (fails if > 1 pt and p < 0.05)"))
    return rows


def check_aa_vs_ta(c: CheckContext) -> list[dict[str, Any]]:
    """Compare torchattacks' AutoAttack chain with the official AutoAttack on the checked examples, at the eps where
    the official robust accuracy is closest to 50%; warn when torchattacks is higher beyond noise.

    Only the full official 'standard' version is a like-for-like reference for the chain (which mimics it): no row
    for an --aa-attacks subset, for 'plus' / 'rand', or below 4 classes (where the fallback drops APGD-T). The
    chain's own sweep is reused when the run has one; otherwise it runs on the checked examples."""
    aa = next((s for s in c.specs if s.name == "autoattack" and s.norm == c.norm and s.key in c.sweeps
               and not s.aa_attacks and s.aa_version == "standard"), None)
    if aa is None or c.num_classes < 4:
        return []
    st = c.sweeps[aa.key]
    e = min(c.nz, key=lambda v: abs(float(st.correct_at(v)[c.pos].mean()) - 0.5))
    ta_spec = AttackSpec("autoattack-ta", norm=c.norm)
    if ta_spec.key in c.sweeps:
        ta, source = c.sweep_at(ta_spec.key, e), "its sweep in this run"
    else:
        ta, source = c.fresh_sweep(ta_spec, [e], c.seed).correct_at(e), "run on the checked examples"
    excess, ta_only, aa_only, p = _paired_excess(ta, st.correct_at(e)[c.pos])
    status = "pass" if excess <= 0 or p >= 0.05 else "warn"
    return [_row(c.label, "aa_vs_torchattacks", status, excess, 0, c.n, e, aa.key,
                 detail=f"torchattacks' chain ({source}) minus the official AutoAttack at eps={e:g}: {ta_only} robust "
                        f"only under torchattacks, {aa_only} only under the official code, McNemar p={p:.2g} (warns "
                        f"when torchattacks is higher with p < 0.05)")]


CHECKS: list[tuple[str, Callable[[CheckContext], list[dict[str, Any]]]]] = [
    ("deterministic", check_deterministic), ("gradients", check_gradients), ("unbounded", check_unbounded),
    ("monotone_eps", check_monotone), ("iterative_vs_single", check_iterative), ("double_steps", check_double_steps),
    ("noise_vs_attack", check_noise), ("minimal_norm_vs_pgd", check_minimal_norm),
    ("aa_vs_torchattacks", check_aa_vs_ta),
]


def iter_checks(model: nn.Module, label: str, x: Tensor, y: Tensor, *, sweeps: dict[str, SweepState],
                specs: list[AttackSpec], eps_list: list[float], norm: str, num_classes: int, seed: int,
                batch_size: int, device: torch.device, n_check: int = 200, steps: int = 20,
                skip: set[str] | None = None) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield (check name, rows) one check at a time; names in `skip` (already saved) are not run."""
    some = next(iter(sweeps.values()), None)
    clean = some.clean_correct if some is not None else (predict(model, x, batch_size, device) == y).numpy()
    pos = np.flatnonzero(clean)[:n_check]
    if len(pos) == 0:
        yield "examples", [_row(label, "examples", "fail", 0, 1, 0, detail="no clean-correct example to check")]
        return
    ctx = CheckContext(model, label, x[pos], y[pos], pos, sweeps, specs, [e for e in sorted(eps_list) if e > 0], norm,
                       num_classes, seed, batch_size, device, steps)
    for key, st in sweeps.items():
        spec = next((s for s in specs if s.key == key), None)
        clean_back = spec is not None and (spec.name == "autoattack" or spec.minimal_norm)
        yield f"sanity__{key}", sanity_rows(label, key, st.rows, spec is not None and spec.gradient_free,
                                            clean_back) + flag_rows(label, key, st.rows)
    for name, fn in CHECKS:
        if skip and name in skip:
            continue
        if not ctx.nz and name not in ("deterministic", "gradients", "unbounded"):
            continue
        log.debug("%s: hygiene check %s", label, name)
        yield name, fn(ctx)


def run_checks(model: nn.Module, label: str, x: Tensor, y: Tensor, **kw: Any) -> list[dict[str, Any]]:
    """All checks for one model, as one list of rows (see `iter_checks` for the arguments)."""
    return [r for _, rows in iter_checks(model, label, x, y, **kw) for r in rows]
