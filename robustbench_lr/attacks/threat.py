"""Threat models: norms, the eps-ball invariant, and random noise of a given norm.

Every adversarial example must satisfy ||x_adv - x|| <= eps + 1e-6 in the attack's norm (computed in
float64) and lie in [0, 1]. A violation raises `ThreatModelViolation`; nothing is ever clipped silently.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError

NORMS = ("linf", "l2")
TOLERANCE = 1e-6


class ThreatModelViolation(RuntimeError):
    """An attack returned an example outside its threat model (a bug in the attack, never the user's)."""


def check_norm(norm: str) -> str:
    norm = norm.lower()
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}.")
    return norm


def distances(x: Tensor, x_adv: Tensor, norm: str) -> Tensor:
    """Per-example ||x_adv - x|| (float64), shape (N,)."""
    d = (x_adv.double() - x.double()).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def max_eps(norm: str, input_size: tuple[int, ...]) -> float:
    """Largest meaningful eps on [0, 1] images: 1 for Linf, sqrt(d) for L2."""
    return 1.0 if norm == "linf" else math.sqrt(math.prod(input_size))


def validate_eps(eps: list[float], norm: str, input_size: tuple[int, ...]) -> list[float]:
    """Sorted, de-duplicated eps values; negative or impossible ones raise a UserError."""
    top = max_eps(norm, input_size)
    for e in eps:
        if not math.isfinite(e) or e < 0:
            raise UserError(f"eps must be >= 0; got {e!r}.")
        if e > top + 1e-12:
            what = "Linf on [0, 1] images" if norm == "linf" else f"L2 on {'x'.join(map(str, input_size))} [0, 1] images"
            raise UserError(f"eps={e:g} is larger than the largest possible perturbation for {what} ({top:g}).")
    return sorted(set(float(e) for e in eps))


def check_adversarial(x: Tensor, x_adv: Tensor, norm: str, eps: float, what: str = "attack") -> None:
    """Raise ThreatModelViolation unless x_adv is finite, in [0, 1] and within eps of x."""
    if x_adv.shape != x.shape:
        raise ThreatModelViolation(f"{what} changed the input shape {tuple(x.shape)} -> {tuple(x_adv.shape)}")
    if not torch.isfinite(x_adv).all():
        raise ThreatModelViolation(f"{what} returned non-finite pixels")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0.0 or hi > 1.0:
        raise ThreatModelViolation(f"{what} returned pixels outside [0, 1] (min {lo:.3g}, max {hi:.3g})")
    d = distances(x, x_adv, norm)
    worst = float(d.max()) if d.numel() else 0.0
    if worst > eps + TOLERANCE:
        raise ThreatModelViolation(f"{what} exceeded its {norm} budget: max distance {worst:.9g} > eps {eps:.9g} "
                                   f"(+{TOLERANCE:g}) for {int((d > eps + TOLERANCE).sum())} example(s)")


def random_noise(x: Tensor, norm: str, eps: float, generator: torch.Generator) -> Tensor:
    """x plus noise of norm exactly eps (before clipping to [0, 1]): random signs (Linf) or a random direction (L2)."""
    if norm == "linf":
        noise = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x) * 2.0 - 1.0
        noise = noise * eps
    else:
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x)
        noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1))) * eps
    return (x + noise).clamp(0.0, 1.0)
