"""Attacks: construction by name (torchattacks, the official AutoAttack, adv-lib, StreamingPGD), threat-model
checks, and getting a model ready for them. The runners (`robustbench_lr.runners`) run them over eps sweeps."""

from .prepare import predict, prepare_for_attack
from .registry import ATTACKS, AttackSpec, build_attack
from .threat import EPS_DEFAULTS, NORMS, ThreatModelViolation, check_adversarial, default_eps, parse_eps, validate_eps

__all__ = ["ATTACKS", "EPS_DEFAULTS", "NORMS", "AttackSpec", "ThreatModelViolation", "build_attack",
           "check_adversarial", "default_eps", "parse_eps", "predict", "prepare_for_attack", "validate_eps"]
