"""Threat models: norms, the eps defaults per dataset, eps parsing and validation, the eps-ball invariant, and
random noise of a given norm.

Every adversarial example must satisfy ||x_adv - x|| <= eps + 1e-6 in the attack's norm (computed in
float64) and lie in [0, 1]. A violation raises `ThreatModelViolation`; nothing is ever clipped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from ..errors import UserError

NORMS = ("linf", "l2")
TOLERANCE = 1e-6


@dataclass(frozen=True)
class EpsDefaults:
    """The default budgets of one (dataset, norm), as text (fractions such as 8/255 allowed).

    Attributes:
        sweep: the eps list of an evaluation sweep (`evaluate`, `sweep kernel-size`, `demo`).
        standard: the literature's standard budget (training threat model; RobustBench / AutoAttack conventions:
            MNIST Linf 0.3, L2 2; CIFAR-10 Linf 8/255, L2 0.5; ImageNet Linf 4/255, L2 3).
        figure: the single eps of a figure (`visualize --kind shift|attributions`) when none is given.
    """

    sweep: str
    standard: str
    figure: str


# The one table of eps defaults, per dataset and threat model.
EPS_DEFAULTS: dict[tuple[str, str], EpsDefaults] = {
    ("mnist5k", "linf"): EpsDefaults("0,0.05,0.1,0.2,0.3", "0.3", "0.1"),
    ("mnist5k", "l2"): EpsDefaults("0,0.5,1,2,3", "2", "1"),
    ("cifar10", "linf"): EpsDefaults("0,1/255,2/255,4/255,8/255", "8/255", "8/255"),
    ("cifar10", "l2"): EpsDefaults("0,0.125,0.25,0.5,1", "0.5", "0.5"),
    ("imagefolder", "linf"): EpsDefaults("0,1/255,2/255,4/255", "4/255", "4/255"),
    ("imagefolder", "l2"): EpsDefaults("0,0.25,0.5,1", "3", "1"),
}


def default_eps(dataset: str, norm: str, kind: str = "sweep") -> list[float]:
    """The default eps list ('sweep') or single budget ('standard', 'figure') of a dataset and norm."""
    norm = check_norm(norm)
    d = EPS_DEFAULTS.get((dataset, norm))
    if d is None:
        raise UserError(f"no default eps for dataset {dataset!r} and norm {norm}; give --eps.")
    return parse_eps(getattr(d, kind))


def parse_eps(text: str | float | list[float] | tuple[float, ...]) -> list[float]:
    """'0,0.05,8/255' -> [0.0, 0.05, 0.0313...]; fractions become floats; numbers and lists pass through."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [float(text)]
    if isinstance(text, (list, tuple)):
        return [float(v) for v in text]
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(Fraction(part)))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"cannot parse eps value {part!r}; use numbers or fractions such as 8/255.") from None
    if not out:
        raise UserError("--eps needs at least one value.")
    return out


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
    norm = check_norm(norm)
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
