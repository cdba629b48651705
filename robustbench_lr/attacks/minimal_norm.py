"""Minimal-norm attacks from adv-lib: each example's smallest adversarial perturbation, hence the whole
robust-accuracy-versus-eps curve from one run.

Papers:
- FMN: Pintor, Roli, Brendel, Biggio. "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
  Constraints", NeurIPS 2021. https://arxiv.org/abs/2102.12827 (Linf and L2 here)
- DDN: Rony, Hafemann, Oliveira, Ben Ayed, Sabourin, Granger. "Decoupling Direction and Norm for Efficient
  Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019. https://arxiv.org/abs/1811.09600 (L2)
- ALMA: Rony, Granger, Pedersoli, Ben Ayed. "Augmented Lagrangian Adversarial Attacks", ICCV 2021.
  https://arxiv.org/abs/2011.11857 (L2 here; adv-lib's `distance='l2'`)

Status: thin wrapper around adv-lib 0.2.8 (`adv_lib.attacks.fmn / ddn / alma`); the attacks themselves are
adv-lib's, untouched. What the wrapper adds:
- the norm is computed here, in float64, from the returned x_adv (`threat.distances`), and counts only if a
  separate fp32 forward of the plain model misclassifies x_adv; otherwise the example's norm is +inf (no
  adversarial example found). Clean-misclassified examples get 0 and are not attacked;
- x_adv outside [0, 1] or non-finite is a `ThreatModelViolation`, never clipped after the fact;
- forward and gradient passes are counted per example (`CountingModel`).
An example is robust at eps iff its norm > eps (the same convention as the eps sweep's `min_eps`).

Measured weakness: adv-lib 0.2.8's FMN-L2 stalls just short of the decision boundary on MNIST (its projection
rescales delta to the eps sphere, the [0, 1] clamp then shrinks it, and eps settles at that shrunken norm plus
the linear distance estimate). On a small MNIST CNN it found 10 of 23 points where DDN and ALMA found all 23
(1000 steps each). Use DDN or ALMA for L2 curves; FMN-Linf matched PGD-20 there.

Defaults (AttackBench, Cinà et al. 2024, adv-lib configs): 1000 steps for every attack; FMN alpha_init 1,
gamma_init 0.05 (adv-lib's alpha_final = alpha_init / 100, gamma_final 0.001); DDN init_norm 1, gamma 0.05 and
no quantisation (levels=None: the eps sweep's threat model is continuous [0, 1] pixels); ALMA penalty P2,
alpha 0.9, init_lr_distance 0.1. adv-lib's own FMN default of 10 steps is far too few for a robustness curve.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError, check_choice, check_positive_int
from .counting import CountingModel
from .prepare import predict
from .threat import ThreatModelViolation, check_norm, distances

MIN_NORM_NORMS: dict[str, tuple[str, ...]] = {"fmn": ("linf", "l2"), "ddn": ("l2",), "alma": ("l2",)}
MIN_NORM_ATTACKS = tuple(MIN_NORM_NORMS)
DEFAULT_STEPS = {"fmn": 1000, "ddn": 1000, "alma": 1000}
MIN_CLASSES = {"fmn": 2, "ddn": 2, "alma": 3}  # ALMA's DLR loss uses the top-3 logits


@dataclass
class MinNormResult:
    """The outcome of one minimal-norm attack over n examples.

    Attributes:
        norms: (n,) float64, each example's smallest adversarial perturbation found, in the attack's norm
            (pixel units of [0, 1] images): 0 = clean-misclassified, +inf = no adversarial example found.
        x_adv: (n, C, H, W) on CPU; the clean image where norms is 0 or +inf.
        clean_correct: (n,) bool.
        attack, norm, steps: what ran.
        forwards, grad_evals: per-example forward and input-gradient passes of the attack (clean predictions
            and the verification forward not included).
        seconds: wall time of the attack.
        settings: the parameters passed to adv-lib, and the implementation with its version.
    """

    norms: np.ndarray
    x_adv: Tensor
    clean_correct: np.ndarray
    attack: str
    norm: str
    steps: int
    forwards: int = 0
    grad_evals: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def robust_at(self, eps: float) -> np.ndarray:
        """(n,) bool: no adversarial example of norm <= eps was found."""
        return self.norms > eps

    def robust_accuracy(self, eps_list: list[float]) -> np.ndarray:
        """Robust accuracy (fraction of all n examples) at each eps; non-increasing in eps by construction."""
        return np.array([float(self.robust_at(e).mean()) if len(self.norms) else float("nan") for e in eps_list])


def check_min_norm(attack: str, norm: str) -> str:
    """Validate (attack, norm) and return the canonical norm; UserError names what each attack supports."""
    check_choice("attack", attack, MIN_NORM_ATTACKS)
    norm = check_norm(norm)
    if norm not in MIN_NORM_NORMS[attack]:
        raise UserError(f"attack {attack!r} supports norm {', '.join(MIN_NORM_NORMS[attack])} only; got {norm!r}.")
    return norm


def adv_lib_settings(attack: str, norm: str, steps: int) -> dict[str, Any]:
    """The keyword arguments given to adv-lib for (attack, norm, steps) (what results rows record)."""
    if attack == "fmn":
        return {"norm": float("inf") if norm == "linf" else 2, "steps": steps, "α_init": 1.0, "γ_init": 0.05}
    if attack == "ddn":
        return {"steps": steps, "γ": 0.05, "init_norm": 1.0, "levels": None}
    return {"num_steps": steps, "distance": "l2", "α": 0.9, "init_lr_distance": 0.1}


def _adv_lib_call(attack: str, model: nn.Module, x: Tensor, y: Tensor, kwargs: dict[str, Any]) -> Tensor:
    from adv_lib.attacks import alma, ddn, fmn

    fn = {"fmn": fmn, "ddn": ddn, "alma": alma}[attack]
    return fn(model, x, y, **kwargs)


def _batch_seed(seed: int, first: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{first}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def minimal_perturbation(model: nn.Module, x: Tensor, y: Tensor, *, attack: str, norm: str, steps: int | None = None,
                         batch_size: int = 256, device: torch.device | str = "cpu", seed: int = 0) -> MinNormResult:
    """Run a minimal-norm attack (adv-lib) on every clean-correct example of x; see the module docstring.

    Args:
        model: classifier on [0, 1] pixels, prepared with `prepare_for_attack` (eval, frozen parameters).
        x: (n, C, H, W) in [0, 1], on CPU; y: (n,) labels.
        attack: 'fmn' (linf, l2), 'ddn' (l2) or 'alma' (l2).
        norm: 'linf' or 'l2'.
        steps: iterations (default DEFAULT_STEPS[attack] = 1000).
        batch_size: examples per adv-lib call.
        device: where the model runs.
        seed: seeds the attacks' random draws (DDN on zero gradients, ALMA's line search), per batch.
    """
    norm = check_min_norm(attack, norm)
    steps = check_positive_int("steps", DEFAULT_STEPS[attack] if steps is None else steps)
    check_positive_int("batch_size", batch_size)
    if model.training:
        raise UserError("minimal_perturbation needs a model in eval mode (use prepare_for_attack).")
    if len(x) and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise UserError("minimal_perturbation takes [0, 1] pixels; normalise inside the model.")
    device = torch.device(device)
    kwargs = adv_lib_settings(attack, norm, steps)
    if len(x):
        with torch.no_grad():
            n_classes = int(model(x[:1].to(device)).shape[1])
        if n_classes < MIN_CLASSES[attack]:
            raise UserError(f"{attack} needs at least {MIN_CLASSES[attack]} classes; the model has {n_classes}.")
    clean = predict(model, x, batch_size, device) == y.cpu()
    norms = np.where(clean.numpy(), np.inf, 0.0)
    x_adv = x.clone().cpu()
    counting = CountingModel(model)
    idx_all = clean.nonzero().flatten()
    t0 = time.perf_counter()
    for s in range(0, len(idx_all), batch_size):
        idx = idx_all[s: s + batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(_batch_seed(seed, int(idx[0])))
            adv = _adv_lib_call(attack, counting, xb, yb, kwargs).detach()
        _check_box(adv, xb, attack)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            fooled = (model(adv.float()).argmax(1) != yb).cpu()
        d = distances(xb.cpu(), adv.cpu(), norm).numpy()
        sel = idx[fooled]
        norms[sel.numpy()] = d[fooled.numpy()]
        x_adv[sel] = adv.cpu()[fooled]
    settings = {"attack": attack, "norm": norm, "steps": steps, "implementation": f"adv-lib {version('adv-lib')}",
                "adv_lib_kwargs": {k: v for k, v in kwargs.items()}, "seed": seed, "batch_size": batch_size}
    return MinNormResult(norms=norms, x_adv=x_adv, clean_correct=clean.numpy(), attack=attack, norm=norm,
                         steps=steps, forwards=counting.forwards, grad_evals=counting.grad_evals,
                         seconds=time.perf_counter() - t0, settings=settings)


def _check_box(adv: Tensor, x: Tensor, attack: str) -> None:
    """adv-lib's output must be finite, in [0, 1] and of x's shape; anything else is a ThreatModelViolation."""
    if adv.shape != x.shape:
        raise ThreatModelViolation(f"{attack} changed the input shape {tuple(x.shape)} -> {tuple(adv.shape)}")
    if not torch.isfinite(adv).all():
        raise ThreatModelViolation(f"{attack} returned non-finite pixels")
    lo, hi = float(adv.min()), float(adv.max())
    if lo < 0.0 or hi > 1.0:
        raise ThreatModelViolation(f"{attack} returned pixels outside [0, 1] (min {lo:.9g}, max {hi:.9g})")


__all__ = ["DEFAULT_STEPS", "MIN_NORM_ATTACKS", "MIN_NORM_NORMS", "MinNormResult", "adv_lib_settings",
           "check_min_norm", "minimal_perturbation"]
