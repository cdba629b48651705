"""The built attacks: what `attacks.registry.build_attack` returns, a callable `fn(x, y, targets, ids) -> x_adv`.

Status: wiring only. `AttackFn` runs a torchattacks object or our StreamingPGD (with independent random restarts);
`AutoAttackFn` runs the official AutoAttack (`attacks.autoattack_ref`) on a whole set of points per call. Both
expose what the eps sweep (`runners.eps_sweep`) reads: `whole_set`, `flags`, `refused`, and the per-example
`grad_evals` / `forwards` when the attack counts them itself (None: counted outside, by a `CountingModel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..results.store import StateSlot
    from .registry import AttackSpec


class AttackFn:
    """A built attack: `fn(x, y, targets=None, ids=None) -> x_adv`; `.atk` is the torchattacks object it runs
    (None for StreamingPGD, built per restart by `stream(seed)`). `whole_set` False: any batching of the points
    gives the same result; `flags`: always empty here (see AutoAttackFn)."""

    whole_set = False

    def __init__(self, atk: Any, spec: AttackSpec, model: nn.Module, stream: Any = None, seed: int = 0) -> None:
        self.atk, self.spec, self.model, self.stream, self.seed = atk, spec, model, stream, seed
        self._targets: Tensor | None = None
        self.flags: list[dict[str, str]] = []
        # StreamingPGD counts live examples itself (its fixed batches may carry empty slots); None: count outside
        self.grad_evals: int | None = 0 if stream is not None else None
        self.forwards: int | None = 0 if stream is not None else None
        if spec.targeted == "random" and atk is not None:
            atk.set_mode_targeted_by_function(lambda images, labels: self._targets.to(labels.device))
        # PGD restarts are independent runs; a point counts as fooled if any of them fools it
        self.restarts = spec.restarts if spec.name.startswith("pgd") and spec.random_start else 1

    def _run(self, x: Tensor, y: Tensor, targets: Tensor | None, ids: Tensor, restart: int) -> Tensor:
        if self.stream is not None:
            if self.spec.targeted == "least_likely":
                with torch.no_grad():
                    targets = self.model(x).argmin(1)
                self.forwards += len(x)
            pgd = self.stream(self.seed + 7919 * restart)
            adv = pgd(x, y, ids, targets if self.spec.targeted else None)
            self.grad_evals += pgd.grad_evals
            self.forwards += pgd.forwards
            return adv
        self._targets = targets
        return self.atk(x, y)

    def __call__(self, x: Tensor, y: Tensor, targets: Tensor | None = None, ids: Tensor | None = None) -> Tensor:
        if self.spec.targeted == "random" and targets is None:
            raise ValueError("pgd-random-target needs per-example targets")
        ids = ids if ids is not None else torch.arange(len(x))
        if self.restarts == 1:
            return self._run(x, y, targets, ids, 0)
        best = x.clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for restart in range(self.restarts):
            idx = todo.nonzero().flatten()
            if idx.numel() == 0:
                break
            adv = self._run(x[idx], y[idx], targets[idx] if targets is not None else None, ids[idx.cpu()], restart)
            with torch.no_grad():
                fooled = self.model(adv).argmax(1) != y[idx]
            if self.forwards is not None:
                self.forwards += len(idx)
            best[idx] = adv
            todo[idx[fooled]] = False
        return best


class AutoAttackFn:
    """Official AutoAttack at one eps: `fn(x, y, targets=None, ids=None) -> x_adv` on x's device.

    `whole_set = True`: AutoAttack batches itself and attacks the still-robust points attack by attack, so the
    caller should pass every point to attack in one call (calls on parts give different batches). After a call:
    `flags` (AutoAttack's check rows of that call), `result` (the AAResult), `refused` ('' or why no attack
    ran: then x_adv is the clean x and must not be counted as robust), and `grad_evals` / `forwards` (summed
    over calls; the caller should use them instead of counting outside, like StreamingPGD's).
    """

    whole_set = True

    def __init__(self, spec: AttackSpec, model: nn.Module, eps: float, seed: int, batch_size: int,
                 state: StateSlot | None = None) -> None:
        self.spec, self.model, self.eps, self.seed, self.batch_size = spec, model, float(eps), seed, batch_size
        self.state = state
        self.atk, self.stream, self.restarts = None, None, 1
        self.flags: list[dict[str, str]] = []
        self.result: Any = None
        self.refused = ""
        self.grad_evals = self.forwards = 0

    def __call__(self, x: Tensor, y: Tensor, targets: Tensor | None = None, ids: Tensor | None = None) -> Tensor:
        from .autoattack_ref import run_official_autoattack

        res = run_official_autoattack(self.model, x, y, norm=self.spec.norm, eps=self.eps,
                                      version=self.spec.aa_version, seed=self.seed, batch_size=self.batch_size,
                                      device=x.device, state=self.state, attacks=self.spec.aa_attacks,
                                      few_classes=self.spec.aa_few_classes)
        self.result, self.flags, self.refused = res, res.flags, res.refused
        self.grad_evals += res.grad_evals
        self.forwards += res.forwards
        return res.x_adv.to(x.device)


__all__ = ["AttackFn", "AutoAttackFn"]
