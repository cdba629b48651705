"""Every eps from one run: a minimal-norm attack (FMN, DDN, ALMA; adv-lib) as a sweep of the eps list.

Papers: Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm Constraints", NeurIPS 2021
(FMN); Rony et al., "Decoupling Direction and Norm", CVPR 2019 (DDN); Rony et al., "Augmented Lagrangian
Adversarial Attacks", ICCV 2021 (ALMA).

Status: the attack is adv-lib's (`attacks.minimal_norm`, which measures each example's perturbation itself, in
float64, and counts it only if a separate fp32 forward is fooled). Here it runs once on the clean-correct
examples; an example is robust at eps iff its norm > eps, so min_eps is the smallest eps of the list with
norm <= eps. The rows have the eps sweep's schema; the attack's whole cost is on the first eps > 0 (the other
rows cost nothing more), and `norms` keeps the full curve for the report's security curve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .. import distributed as D
from ..attacks.prepare import predict
from ..attacks.registry import AttackSpec, run_minimal_norm
from .eps_sweep import SweepState


def min_eps_from_norms(norms: np.ndarray, clean: np.ndarray, eps_list: list[float]) -> np.ndarray:
    """(n,) smallest eps of the list with norm <= eps (0 for clean-wrong examples, +inf if none)."""
    out = np.where(clean, np.inf, 0.0)
    for e in sorted((e for e in eps_list if e > 0), reverse=True):
        out[clean & (norms <= e)] = e
    return out


def minimal_norm_sweep(plan: Any, src: Any, model: nn.Module, spec: AttackSpec, state: SweepState | None,
                       save: Callable[[SweepState], None], ctx: D.DistContext) -> SweepState:
    """Run (or reuse a saved) minimal-norm attack and read every eps of the plan off its norms."""
    if state is not None and state.norms is not None and all(state.is_done(e) for e in plan.eps):
        return state
    es, cfg = plan.es, plan.cfg
    t0 = time.perf_counter()
    clean = (predict(model, es.x, cfg.batch_size, ctx.device) == es.y).numpy()
    mine = np.arange(ctx.rank, cfg.n, ctx.world_size) if ctx.distributed else np.arange(cfg.n)
    mine = mine[clean[mine]]
    norms = np.where(clean, np.inf, 0.0)
    grads = fwds = 0
    if len(mine):
        res = run_minimal_norm(spec, model, es.x[mine], es.y[mine], batch_size=cfg.batch_size, device=ctx.device,
                               seed=cfg.seed)
        norms[mine] = np.where(res.clean_correct, res.norms, 0.0)
        grads, fwds = res.grad_evals, res.forwards
    if ctx.distributed:
        t = torch.from_numpy(norms.copy())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        norms = t.numpy()
        c = torch.tensor([grads, fwds], dtype=torch.float64)
        dist.all_reduce(c, op=dist.ReduceOp.SUM)
        grads, fwds = int(c[0]), int(c[1])
    st = SweepState.fresh(clean)
    st.norms = norms
    st.min_eps = min_eps_from_norms(norms, clean, plan.eps)
    first = min((e for e in plan.eps if e > 0), default=None)
    for e in sorted(plan.eps):
        charged = e == first
        correct = st.correct_at(e)
        st.done.append(float(e))
        st.rows.append({
            "eps": float(e), "n_total": int(cfg.n), "n_clean_correct": int(clean.sum()),
            "n_attacked": int(clean.sum()) if charged else 0, "n_correct": int(correct.sum()),
            "n_fooled_here": int(np.isclose(st.min_eps, e, rtol=0, atol=1e-12).sum()) if e > 0 else 0,
            "n_target_hit": 0, "n_unchanged_failed": 0, "attack_flags": "",
            "grad_evals": int(grads) if charged else 0, "forward_evals": int(fwds) if charged else 0,
            "seconds": time.perf_counter() - t0 if charged else 0.0})
    save(st)
    return st


__all__ = ["min_eps_from_norms", "minimal_norm_sweep"]
