"""The eps-sweep engine: one attack over increasing eps, attacking only the points still robust.

Semantics (AutoAttack's, extended to an eps list):
- eps runs in increasing order; a clean-misclassified example is never attacked;
- an example fooled at a smaller eps counts as fooled at every larger eps (its adversarial example lies in
  every larger ball), so only the still-robust examples are attacked at the next eps;
- every adversarial example is checked against the threat model (`threat.check_adversarial`), and whether it
  fools the model is decided by a separate fp32 forward of the plain model, not by the attack's own bookkeeping.

The per-example outcome is `min_eps`: 0 for a clean-misclassified example, the smallest eps that fooled it,
or +inf if no eps did. An example is robust at eps iff min_eps > eps, so every accuracy of the table can be
recomputed from it. Gradient evaluations and forward passes are counted per cell (`CountingModel`).
"""

from __future__ import annotations

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

from .counting import CountingModel
from .registry import AttackSpec, build_attack
from .threat import check_adversarial

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

    @classmethod
    def fresh(cls, clean_correct: np.ndarray) -> SweepState:
        cc = np.asarray(clean_correct, bool)
        return cls(cc, np.where(cc, np.inf, 0.0), np.full(cc.shape, np.inf))

    def correct_at(self, eps: float) -> np.ndarray:
        """(n,) bool: still correctly classified under the attack at `eps`."""
        return self.min_eps > eps

    def to_dict(self) -> dict[str, Any]:
        return {"clean_correct": self.clean_correct.tolist(), "min_eps": self.min_eps.tolist(),
                "target_hit_eps": self.target_hit_eps.tolist(), "done": list(self.done), "rows": list(self.rows)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepState:
        return cls(np.asarray(d["clean_correct"], bool), np.asarray(d["min_eps"], np.float64),
                   np.asarray(d["target_hit_eps"], np.float64), list(d["done"]), list(d["rows"]))


def prepare_for_attack(model: nn.Module) -> nn.Module:
    """Eval mode and frozen parameters (attacks then compute input gradients only)."""
    model.eval()
    model.requires_grad_(False)
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """argmax predictions (n,) on CPU, fp32, in batches."""
    out = [model(x[s: s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def cell_seed(seed: int, eps: float, first: int) -> int:
    """Seed of one attacked batch: reproducible across runs and resumes."""
    return (seed * 1_000_003 + int(round(eps * 1e6)) * 7919 + first) % (2**31 - 1)


def run_sweep(
    model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, eps_list: list[float], *, num_classes: int,
    seed: int, batch_size: int, device: torch.device, state: SweepState | None = None,
    targets: Tensor | None = None, shard: np.ndarray | None = None,
    reduce: Callable[[SweepState, dict[str, float]], dict[str, float]] | None = None,
    on_cell: Callable[[SweepState], None] | None = None, on_adv: Callable[[float, np.ndarray, Tensor], None] | None = None,
    progress: Any = None,
) -> SweepState:
    """Run `spec` at every eps of `eps_list` (ascending) with early stopping; returns the sweep state.

    Args:
        model: classifier on [0, 1] pixels, prepared with `prepare_for_attack`.
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
        progress: a tqdm-like bar updated by the number of attacked examples.
    """
    if model.training:
        raise ValueError("run_sweep needs a model in eval mode (use prepare_for_attack)")
    if state is None:
        clean = predict(model, x, batch_size, device) == y
        state = SweepState.fresh(clean.numpy())
    n = len(y)
    mine = np.arange(n) if shard is None else np.asarray(shard)
    counting = CountingModel(model)
    for eps in sorted(eps_list):
        if any(math.isclose(eps, d, rel_tol=0, abs_tol=1e-12) for d in state.done):
            continue
        t0 = time.perf_counter()
        active = mine[np.isinf(state.min_eps[mine])]
        counting.reset()
        attack = None
        if eps > 0 and len(active):
            attack = build_attack(spec, counting, eps, num_classes, seed, batch_size)
            for s in range(0, len(active), batch_size):
                idx = active[s: s + batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                tb = targets[idx].to(device) if targets is not None else None
                torch.manual_seed(cell_seed(seed, eps, int(idx[0])))
                x_adv = attack(xb, yb, tb, torch.as_tensor(idx)).detach()
                check_adversarial(xb, x_adv, spec.norm, eps, what=f"{spec.name} ({spec.norm}, eps={eps:g})")
                with torch.no_grad():
                    pred = model(x_adv).argmax(1)
                fooled = (pred != yb).cpu().numpy()
                state.min_eps[idx[fooled]] = eps
                if tb is not None or spec.targeted == "least_likely":
                    hit_target = pred.cpu() == (tb.cpu() if tb is not None else _least_likely(model, xb).cpu())
                    hits = idx[hit_target.numpy() & np.isinf(state.target_hit_eps[idx])]
                    state.target_hit_eps[hits] = eps
                if on_adv is not None and fooled.any():
                    on_adv(eps, idx[fooled], x_adv[torch.from_numpy(fooled).to(x_adv.device)].cpu())
                if progress is not None:
                    progress.update(len(idx))
        if model.training:  # an attack left the model in train mode: every count after it would be wrong
            raise RuntimeError(f"{spec.name} switched the model to train mode")
        forwards, grads = counting.reset()
        if attack is not None and attack.grad_evals is not None:  # the attack counted its live examples itself
            forwards, grads = attack.forwards, attack.grad_evals
        local = {"grad_evals": float(grads), "forward_evals": float(forwards), "seconds": time.perf_counter() - t0,
                 "n_attacked": float(len(active))}
        if reduce is not None:
            local = reduce(state, local)
        correct = state.correct_at(eps)
        row = {
            "eps": float(eps), "n_total": int(n), "n_clean_correct": int(state.clean_correct.sum()),
            "n_attacked": int(local["n_attacked"]), "n_correct": int(correct.sum()),
            "n_fooled_here": int(np.isclose(state.min_eps, eps, rtol=0, atol=1e-12).sum()) if eps > 0 else 0,
            "n_target_hit": int((state.target_hit_eps <= eps).sum()) if spec.targeted else 0,
            "grad_evals": int(local["grad_evals"]), "forward_evals": int(local["forward_evals"]),
            "seconds": float(local["seconds"]),
        }
        state.done.append(float(eps))
        state.rows.append(row)
        if on_cell is not None:
            on_cell(state)
        log.debug("%s eps=%g: %d/%d correct", spec.key, eps, row["n_correct"], n)
    return state


@torch.no_grad()
def _least_likely(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmin(1)
