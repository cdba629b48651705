"""Attacks by name, built on torchattacks. Inputs are [0, 1] pixels; the models normalise inside.

| name               | norms    | what (torchattacks)                                                      |
|--------------------|----------|--------------------------------------------------------------------------|
| fgsm               | linf     | FGSM (Goodfellow et al. 2015)                                            |
| pgd                | linf, l2 | PGD (Madry et al. 2018), step 2.5*eps/steps, random start, early stop    |
| pgd-random-target  | linf, l2 | targeted PGD towards a random wrong class (fixed per example by --seed)  |
| pgd-least-likely   | linf, l2 | targeted PGD towards the clean least-likely class                        |
| apgd               | linf, l2 | APGD-CE (Croce & Hein 2020)                                              |
| apgd-t             | linf, l2 | APGD-T, targeted DLR over the top-9 classes                              |
| square             | linf, l2 | Square attack (black-box, 5000 queries)                                  |
| autoattack         | linf, l2 | AutoAttack "standard" with the reference settings (below)                |

The three PGD variants run `attacks.pgd.StreamingPGD` (torchattacks' update rule, per-example early stopping,
fixed-size refilled batches, per-example random starts); with `early_stop=False` they run torchattacks' PGD /
PGDL2 itself, which returns the last iterate. Everything else is torchattacks.

torchattacks' own `AutoAttack` runs APGD, APGD-T and FAB with 10 steps instead of the reference 100 and uses
n_classes - 1 target classes (anchors.md §2-3). Here `autoattack` chains torchattacks' APGD-CE (100 steps,
1 restart), APGD-T (100 steps, 9 target classes), FAB-T (100 steps, 9 target classes) and Square (5000
queries, p_init 0.8) in a MultiAttack, which attacks only the points still robust: the reference protocol.
A point counts as robust only if every component fails on it.

A targeted attack counts a point as fooled when the prediction is wrong (any class), as robust accuracy
requires; the cell also records how many predictions hit the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError
from .threat import NORMS, check_norm

ATTACK_NORMS: dict[str, tuple[str, ...]] = {
    "fgsm": ("linf",),
    "pgd": NORMS,
    "pgd-random-target": NORMS,
    "pgd-least-likely": NORMS,
    "apgd": NORMS,
    "apgd-t": NORMS,
    "square": NORMS,
    "autoattack": NORMS,
}
ATTACKS = tuple(ATTACK_NORMS)
AA_STEPS, AA_TARGETS, AA_QUERIES = 100, 9, 5000


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration; `settings(eps)` is what goes into a results row.

    Attributes:
        name: a key of ATTACK_NORMS.
        norm: 'linf' or 'l2'.
        steps: iterations of iterative attacks (PGD, APGD); fixed to the reference for autoattack.
        restarts: random restarts (PGD: independent runs, a point is fooled if any run fools it; APGD: n_restarts).
        step_size: PGD step as a multiple of eps / steps (default 2.5, Madry et al.).
        random_start: PGD starts from a uniform point in the eps-ball.
        queries: Square attack's query budget.
        early_stop: PGD stops iterating an example once it is fooled (StreamingPGD); False runs torchattacks' PGD.
    """

    name: str
    norm: str = "linf"
    steps: int = 20
    restarts: int = 1
    step_size: float = 2.5
    random_start: bool = True
    queries: int = 5000
    early_stop: bool = True

    def __post_init__(self) -> None:
        if self.name not in ATTACK_NORMS:
            import difflib

            close = difflib.get_close_matches(self.name, ATTACKS, n=2)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"unknown attack {self.name!r}; allowed: {', '.join(ATTACKS)}.{hint}")
        norm = check_norm(self.norm)
        object.__setattr__(self, "norm", norm)
        if norm not in ATTACK_NORMS[self.name]:
            raise UserError(f"attack {self.name!r} supports norm {', '.join(ATTACK_NORMS[self.name])} only; got {norm!r}.")
        for field_name in ("steps", "restarts", "queries"):
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"--{field_name} must be an integer >= 1; got {v!r}.")
        if not self.step_size > 0:
            raise UserError(f"--step-size must be > 0; got {self.step_size!r}.")

    @property
    def key(self) -> str:
        return f"{self.name}-{self.norm}"

    @property
    def targeted(self) -> str | None:
        return {"pgd-random-target": "random", "pgd-least-likely": "least_likely"}.get(self.name)

    @property
    def gradient_free(self) -> bool:
        return self.name == "square"

    def settings(self, eps: float) -> dict[str, Any]:
        """The parameters actually used at `eps` (as stored in the results table)."""
        s: dict[str, Any] = {"attack": self.name, "norm": self.norm, "eps": float(eps), "targeted": self.targeted or "",
                             "restarts": self.restarts, "steps": self.steps, "step_size": float("nan"),
                             "random_start": False, "queries": 0, "protocol": "", "early_stop": False}
        if self.name == "fgsm":
            s.update(steps=1, restarts=1, step_size=float(eps))
        elif self.name.startswith("pgd"):
            s.update(step_size=self.step_size * eps / self.steps, random_start=self.random_start,
                     early_stop=self.early_stop, protocol="StreamingPGD" if self.early_stop else "torchattacks")
        elif self.name == "square":
            s.update(steps=0, queries=self.queries)
        elif self.name == "autoattack":
            s.update(steps=AA_STEPS, restarts=1, queries=AA_QUERIES,
                     protocol=f"standard: apgd-ce({AA_STEPS}), apgd-t({AA_STEPS}, {AA_TARGETS} targets), "
                              f"fab-t({AA_STEPS}, {AA_TARGETS} targets), square({AA_QUERIES})")
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tanorm(norm: str) -> str:
    return "Linf" if norm == "linf" else "L2"


def build_attack(spec: AttackSpec, model: nn.Module, eps: float, num_classes: int, seed: int,
                 batch_size: int = 256) -> AttackFn:
    """The attack `spec` at one eps, as a callable `(x, y, targets, ids) -> x_adv` (targets: random-target PGD;
    ids: the examples' stable ids, which seed StreamingPGD's random starts).

    `model` must take [0, 1] pixels, be in eval mode and have its parameters frozen.
    """
    import torchattacks as ta

    nt = min(AA_TARGETS, num_classes - 1)
    n = spec.norm
    if spec.name.startswith("pgd") and spec.early_stop:
        from .pgd import stream_for

        return AttackFn(None, spec, model, stream=lambda s: stream_for(
            model, n, eps, spec.steps, spec.step_size, spec.random_start, s, batch_size), seed=seed)
    if spec.name == "fgsm":
        atk: Any = ta.FGSM(model, eps=eps)
    elif spec.name.startswith("pgd"):
        alpha = spec.step_size * eps / spec.steps
        cls = ta.PGD if n == "linf" else ta.PGDL2
        atk = cls(model, eps=eps, alpha=alpha, steps=spec.steps, random_start=spec.random_start)
        if spec.targeted == "least_likely":
            atk.set_mode_targeted_least_likely(kth_min=1)
    elif spec.name == "apgd":
        atk = ta.APGD(model, norm=_tanorm(n), eps=eps, steps=spec.steps, n_restarts=spec.restarts, seed=seed, loss="ce")
    elif spec.name == "apgd-t":
        atk = ta.APGDT(model, norm=_tanorm(n), eps=eps, steps=spec.steps, n_restarts=spec.restarts, seed=seed,
                       n_classes=num_classes)
        atk.n_target_classes = nt
    elif spec.name == "square":
        atk = ta.Square(model, norm=_tanorm(n), eps=eps, n_queries=spec.queries, n_restarts=1, seed=seed)
    else:  # autoattack, reference settings
        apgd = ta.APGD(model, norm=_tanorm(n), eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed, loss="ce", rho=0.75)
        apgdt = ta.APGDT(model, norm=_tanorm(n), eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed,
                         n_classes=num_classes, rho=0.75)
        apgdt.n_target_classes = nt
        fab = ta.FAB(model, norm=_tanorm(n), eps=eps, steps=AA_STEPS, n_restarts=1, seed=seed, multi_targeted=True,
                     n_classes=num_classes)
        fab.n_target_classes = nt
        square = ta.Square(model, norm=_tanorm(n), eps=eps, n_queries=AA_QUERIES, n_restarts=1, p_init=0.8, seed=seed)
        atk = ta.MultiAttack([apgd, apgdt, fab, square])

    return AttackFn(atk, spec, model)


class AttackFn:
    """A built attack: `fn(x, y, targets=None, ids=None) -> x_adv`; `.atk` is the torchattacks object it runs
    (None for StreamingPGD, built per restart by `stream(seed)`)."""

    def __init__(self, atk: Any, spec: AttackSpec, model: nn.Module, stream: Any = None, seed: int = 0) -> None:
        self.atk, self.spec, self.model, self.stream, self.seed = atk, spec, model, stream, seed
        self._targets: Tensor | None = None
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


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """A wrong class per example, uniform over the other classes, fixed by `seed` and the example's position."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(labels),), generator=g)
    return (labels.cpu() + shift) % num_classes
