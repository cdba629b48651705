"""Attacks (torchattacks-backed), threat-model checks, the eps-sweep engine and evaluation-hygiene checks."""

from .registry import ATTACKS, AttackSpec, build_attack
from .sweep import SweepState, prepare_for_attack, run_sweep
from .threat import NORMS, ThreatModelViolation, check_adversarial

__all__ = ["ATTACKS", "NORMS", "AttackSpec", "SweepState", "ThreatModelViolation", "build_attack",
           "check_adversarial", "prepare_for_attack", "run_sweep"]
