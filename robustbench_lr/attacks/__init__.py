"""Attacks: construction by name (torchattacks, the official AutoAttack, adv-lib, StreamingPGD), threat-model
checks, and getting a model ready for them. The runners (`robustbench_lr.runners`) run them over eps sweeps."""

from .prepare import predict, prepare_for_attack
from .autoattack_ref import run_official_autoattack
from .minimal_norm import minimal_perturbation
from .registry import ATTACKS, EPS_ATTACKS, MIN_NORM_ATTACKS, AttackSpec, build_attack, run_minimal_norm
from .threat import EPS_DEFAULTS, NORMS, ThreatModelViolation, check_adversarial, default_eps, parse_eps, validate_eps

__all__ = ["ATTACKS", "EPS_ATTACKS", "MIN_NORM_ATTACKS", "minimal_perturbation", "run_minimal_norm",
           "run_official_autoattack", "EPS_DEFAULTS", "NORMS", "AttackSpec", "ThreatModelViolation", "build_attack",
           "check_adversarial", "default_eps", "parse_eps", "predict", "prepare_for_attack", "validate_eps"]
