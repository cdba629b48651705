"""The eps-sweep engine: one attack over increasing eps, attacking only the points still robust.

Semantics (AutoAttack's, extended to an eps list):
- eps runs in increasing order; a clean-misclassified example is never attacked;
- an example fooled at a smaller eps counts as fooled at every larger eps (its adversarial example lies in
  every larger ball), so only the still-robust examples are attacked at the next eps;
- every adversarial example is checked against the threat model (`threat.check_adversarial`), and whether it
  fools the model is decided by a separate fp32 forward of the plain model, not by the attack's own bookkeeping.

The per-example outcome is `min_eps`: 0 for a clean-misclassified example, the smallest eps that fooled it,
or +inf if no eps did. An example is robust at eps iff min_eps > eps, so every accuracy of the table can be
recomputed from it. Gradient evaluations and forward passes are counted per cell (`CountingModel`), and so are
the attacked-but-not-fooled examples whose returned image is bit-identical to the clean one (an attack that did
nothing: the AttackBench sanity flag).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..attacks.counting import CountingModel
from ..attacks.prepare import predict
from ..attacks.registry import AttackSpec, build_attack
from ..attacks.threat import check_adversarial
from ..errors import UserError
from .common import cell_seed

log = logging.getLogger(__name__)


@dataclass
class SweepState:
    """Progress of one (model, attack) sweep over n examples; serialisable with `to_dict`/`from_dict`.

    Attributes:
        clean_correct: (n,) bool.
        min_eps: (n,) float64 (0 = clean-wrong, inf = never fooled).
        target_hit_eps: (n,) float64, smallest eps whose adversarial example hit its target (targeted attacks).
        done: eps values finished, in order.
        rows: one dict per finished eps (counts, seconds, gradient evaluations).
    """

    clean_correct: np.ndarray
    min_eps: np.ndarray
    target_hit_eps: np.ndarray
    done: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    norms: np.ndarray | None = None  # minimal-norm attacks: each example's smallest adversarial norm

    @classmethod
    def fresh(cls, clean_correct: np.ndarray) -> SweepState:
        cc = np.asarray(clean_correct, bool)
        return cls(cc, np.where(cc, np.inf, 0.0), np.full(cc.shape, np.inf))

    def correct_at(self, eps: float) -> np.ndarray:
        """(n,) bool: still correctly classified under the attack at `eps`."""
        return self.min_eps > eps

    def is_done(self, eps: float) -> bool:
        return any(math.isclose(eps, d, rel_tol=0, abs_tol=1e-12) for d in self.done)

    def to_dict(self) -> dict[str, Any]:
        return {"clean_correct": self.clean_correct.tolist(), "min_eps": self.min_eps.tolist(),
                "target_hit_eps": self.target_hit_eps.tolist(), "done": list(self.done), "rows": list(self.rows),
                "norms": None if self.norms is None else self.norms.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepState:
        norms = d.get("norms")
        return cls(np.asarray(d["clean_correct"], bool), np.asarray(d["min_eps"], np.float64),
                   np.asarray(d["target_hit_eps"], np.float64), list(d["done"]), list(d["rows"]),
                   None if norms is None else np.asarray(norms, np.float64))


@dataclass
class SweepJob:
    """What one sweep runs on (everything but the eps list and the state)."""

    model: nn.Module
    x: Tensor  # (n, C, H, W) in [0, 1], CPU
    y: Tensor  # (n,)
    spec: AttackSpec
    num_classes: int
    seed: int
    batch_size: int
    device: torch.device
    targets: Tensor | None = None  # (n,) for 'pgd-random-target'
    shard: np.ndarray | None = None  # the example indices this process attacks (torchrun); default all
    attack_kwargs: Callable[[float], dict[str, Any]] | None = None  # extra build_attack arguments per eps


def run_sweep(
    model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, eps_list: list[float], *, num_classes: int,
    seed: int, batch_size: int, device: torch.device, state: SweepState | None = None,
    targets: Tensor | None = None, shard: np.ndarray | None = None,
    reduce: Callable[[SweepState, dict[str, float]], dict[str, float]] | None = None,
    on_cell: Callable[[SweepState], None] | None = None, on_adv: Callable[[float, np.ndarray, Tensor], None] | None = None,
    progress: Callable[[float, int], Any] | None = None,
    attack_kwargs: Callable[[float], dict[str, Any]] | None = None,
) -> SweepState:
    """Run `spec` at every eps of `eps_list` (ascending) with early stopping; returns the sweep state.

    Args:
        model: classifier on [0, 1] pixels, prepared with `attacks.prepare_for_attack`.
        x, y: the evaluation examples (n, C, H, W) in [0, 1] and labels (n,), on CPU.
        spec: the attack.
        eps_list: eps values (sorted ascending here).
        num_classes: number of classes (targeted attacks, AutoAttack).
        seed: seed of random starts and targets.
        batch_size: attack batch size.
        device: where the model runs.
        state: a saved state to resume from (finished eps are skipped).
        targets: (n,) target classes for 'pgd-random-target'.
        shard: the example indices this process attacks (torchrun); default all.
        reduce: combines per-process results after each cell (torchrun): gets the state (whose arrays it
            reduces in place) and this process's counters, returns the combined counters.
        on_cell: called after each finished eps (e.g. to save the state atomically).
        on_adv: called with (eps, example indices, adversarial images) for every fooled batch (saving on request).
        progress: progress(eps, n_active) -> a tqdm-like bar for the cell (updated per attacked example), or None.
        attack_kwargs: attack_kwargs(eps) -> extra keyword arguments of `build_attack` (e.g. a state path).
    """
    if model.training:
        raise ValueError("run_sweep needs a model in eval mode (use prepare_for_attack)")
    if state is None:
        state = SweepState.fresh((predict(model, x, batch_size, device) == y).numpy())
    job = SweepJob(model, x, y, spec, num_classes, seed, batch_size, device, targets, shard, attack_kwargs)
    for eps in sorted(eps_list):
        if state.is_done(eps):
            continue
        t0 = time.perf_counter()
        counters = _attack_cell(job, state, eps, on_adv, progress)
        counters["seconds"] = time.perf_counter() - t0
        if reduce is not None:
            counters = reduce(state, counters)
        state.done.append(float(eps))
        state.rows.append(_cell_row(state, eps, counters, spec))
        if on_cell is not None:
            on_cell(state)
        log.debug("%s eps=%g: %d/%d correct", spec.key, eps, state.rows[-1]["n_correct"], len(y))
    return state


def _attack_cell(job: SweepJob, state: SweepState, eps: float, on_adv: Callable[..., None] | None,
                 progress: Callable[[float, int], Any] | None) -> dict[str, float]:
    """Attack the still-robust examples of this process at one eps; updates `state` in place, returns counters."""
    mine = np.arange(len(job.y)) if job.shard is None else np.asarray(job.shard)
    active = mine[np.isinf(state.min_eps[mine])]
    counting = CountingModel(job.model)
    counters = {"grad_evals": 0.0, "forward_evals": 0.0, "n_attacked": float(len(active)), "n_unchanged_failed": 0.0}
    if eps <= 0 or not len(active):
        counters["n_attacked"] = 0.0
        return counters
    extra = job.attack_kwargs(eps) if job.attack_kwargs is not None else {}
    attack = build_attack(job.spec, counting, eps, job.num_classes, job.seed, job.batch_size, **extra)
    chunk = len(active) if getattr(attack, "whole_set", False) else job.batch_size
    bar = progress(eps, len(active)) if progress is not None else None
    for s in range(0, len(active), chunk):
        idx = active[s: s + chunk]
        fooled, unchanged = _attack_batch(job, attack, state, eps, idx, on_adv)
        counters["n_unchanged_failed"] += float((unchanged & ~fooled).sum())
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    if getattr(attack, "refused", ""):
        raise UserError(f"{job.spec.name} refused to attack the model: {attack.refused}")
    counters["flags"] = list(getattr(attack, "flags", []) or [])
    if job.model.training:  # an attack left the model in train mode: every count after it would be wrong
        raise RuntimeError(f"{job.spec.name} switched the model to train mode")
    forwards, grads = counting.reset()
    if getattr(attack, "grad_evals", None) is not None:  # the attack counted its live examples itself
        forwards, grads = attack.forwards, attack.grad_evals
    counters.update(grad_evals=float(grads), forward_evals=float(forwards))
    return counters


def _attack_batch(job: SweepJob, attack: Any, state: SweepState, eps: float, idx: np.ndarray,
                  on_adv: Callable[..., None] | None) -> tuple[np.ndarray, np.ndarray]:
    """One attacked batch: threat-model check, fp32 re-check, bookkeeping. Returns (fooled, unchanged) masks."""
    spec, dev = job.spec, job.device
    xb, yb = job.x[idx].to(dev), job.y[idx].to(dev)
    tb = job.targets[idx].to(dev) if job.targets is not None else None
    torch.manual_seed(cell_seed(job.seed, eps, int(idx[0])))
    x_adv = attack(xb, yb, tb, torch.as_tensor(idx)).detach()
    check_adversarial(xb, x_adv, spec.norm, eps, what=f"{spec.name} ({spec.norm}, eps={eps:g})")
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        pred = job.model(x_adv.float()).argmax(1)
    fooled = (pred != yb).cpu().numpy()
    unchanged = (x_adv == xb).flatten(1).all(1).cpu().numpy()
    state.min_eps[idx[fooled]] = eps
    if tb is not None or spec.targeted == "least_likely":
        if tb is None:
            with torch.no_grad():
                tb = job.model(xb).argmin(1)
        hits = idx[(pred == tb).cpu().numpy() & np.isinf(state.target_hit_eps[idx])]
        state.target_hit_eps[hits] = eps
    if on_adv is not None and fooled.any():
        on_adv(eps, idx[fooled], x_adv[torch.from_numpy(fooled).to(x_adv.device)].cpu())
    return fooled, unchanged


def _cell_row(state: SweepState, eps: float, c: dict[str, float], spec: AttackSpec) -> dict[str, Any]:
    correct = state.correct_at(eps)
    return {
        "eps": float(eps), "n_total": int(len(correct)), "n_clean_correct": int(state.clean_correct.sum()),
        "n_attacked": int(c["n_attacked"]), "n_correct": int(correct.sum()),
        "n_fooled_here": int(np.isclose(state.min_eps, eps, rtol=0, atol=1e-12).sum()) if eps > 0 else 0,
        "n_target_hit": int((state.target_hit_eps <= eps).sum()) if spec.targeted else 0,
        "n_unchanged_failed": int(c.get("n_unchanged_failed", 0)),
        "attack_flags": json.dumps(c["flags"]) if c.get("flags") else "",
        "grad_evals": int(c["grad_evals"]), "forward_evals": int(c["forward_evals"]), "seconds": float(c["seconds"]),
    }
