"""Human labels, with units, for the strengths and settings the report shows (never a raw column name).

- `strength_label(param_name, norm)`: an axis label or table heading, e.g. 'max_rotation' -> 'maximum rotation
  (degrees)', 'eps' -> 'eps (linf, pixel values in [0, 1])';
- `column_label(perturbation, param_name, value, norm)`: a panel title or table heading of one strength with its
  unit, e.g. 'rotate 30\u00b0', 'translate 2 px', 'pgd linf eps 0.02';
- `settings_text(row)`: one attack's settings (steps, step size, restarts, random start, early stop, queries,
  protocol, implementation) from a results row or an `AttackSpec.settings` dict;
- `training_text(method)`: the training threat model of a model as the results' `training_method` gives it.

Status: working; every param_name the runners write (deform.transforms, deform.spatial, photometric, eps) has
a label, and an unknown one keeps its name with the underscores replaced.
"""

from __future__ import annotations

import math
from typing import Any

from ..results.table import fmt_strength

ATTACK_PARAMS = ("max_rotation", "max_flow")  # the bounds of spatial attacks (deform.spatial.STRENGTH)
STRENGTHS = {
    "degrees": ("rotation", "degrees"),
    "max_rotation": ("maximum rotation", "degrees"),
    "pixels": ("translation", "pixels"),
    "max_flow": ("maximum flow", "pixels, per component"),
    "factor": ("scale factor", "1 = unchanged"),
    "alpha": ("elastic strength alpha", "pixels"),
    "offset": ("brightness offset", "pixel values in [0, 1]"),
}


def strength_label(param_name: str, norm: str = "") -> str:
    """'maximum rotation (degrees)'; for 'eps' the norm and the pixel scale."""
    if param_name == "eps":
        return f"eps ({norm}, pixel values in [0, 1])" if norm else "eps (pixel values in [0, 1])"
    what, unit = STRENGTHS.get(param_name, (str(param_name).replace("_", " "), ""))
    return f"{what} ({unit})" if unit else what


def strength_unit(param_name: str) -> str:
    """The short unit of a strength ('°', 'px', '' ...), for table headings."""
    return {"degrees": "\u00b0", "max_rotation": "\u00b0", "pixels": " px", "max_flow": " px", "alpha": " px"}.get(
        param_name, "")


def column_label(perturbation: str, param_name: str, value: float, norm: str = "") -> str:
    """One strength of one perturbation with its unit: 'rotate 30\u00b0', 'translate 2 px', 'scale factor 1.2',
    'pgd linf eps 0.02' (eps in pixel values in [0, 1]), for panel titles and table headings."""
    v = fmt_strength(float(value))
    if param_name == "eps":
        return f"{perturbation} {norm + ' ' if norm else ''}eps {v}"
    unit = strength_unit(param_name)
    if unit or param_name == perturbation:
        return f"{perturbation} {v}{unit}"
    return f"{perturbation} {str(param_name).replace('_', ' ')} {v}"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _flag(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    f = _num(v)
    return bool(f) if f is not None else False


def settings_text(s: dict[str, Any]) -> str:
    """'pgd linf: 20 steps, step size 0.125 eps (0.0375 at eps 0.3), 1 restart, random start, early stop;
    StreamingPGD; implementation: robustbench-lr StreamingPGD 0.4.0' (only the settings that apply)."""
    name = str(s.get("attack") or s.get("name") or "?")
    parts: list[str] = []
    steps, eps, step = _num(s.get("steps")), _num(s.get("eps")), _num(s.get("step_size"))
    if name == "fgsm":
        parts.append("1 step of size eps, no random start")
    else:
        if steps:
            parts.append(f"{int(steps)} step{'s' if steps != 1 else ''}")
        if step is not None and eps:
            parts.append(f"step size {step / eps:.3g} eps ({step:.3g} at eps {eps:.3g})")
        restarts = _num(s.get("restarts"))
        if restarts:
            parts.append(f"{int(restarts)} restart{'s' if restarts != 1 else ''}")
        if _num(s.get("queries")):
            parts.append(f"{int(_num(s.get('queries')))} queries")
        parts.append("random start" if _flag(s.get("random_start")) else "no random start")
        parts.append("early stop" if _flag(s.get("early_stop")) else "no early stop")
    if str(s.get("mask") or "") not in ("", "nan"):
        parts.append(f"perturbs the {s['mask']} only")
    if str(s.get("aa_version") or "") not in ("", "nan"):
        parts.append(f"AutoAttack version {s['aa_version']}")
    text = f"{name} {s.get('norm') or ''}".strip() + ": " + ", ".join(parts)
    protocol = str(s.get("protocol") or "")
    if protocol and protocol != "nan":
        text += f"; {protocol}"
    impl = str(s.get("implementation") or "")
    if impl and impl != "nan":
        text += f"; implementation: {impl}"
    return text


def training_text(method: Any) -> str:
    """'clean training', 'PGD-AT linf eps 0.3' (adversarial training: its threat model), 'external model'."""
    m = str(method) if method is not None and str(method) != "nan" else ""
    if not m:
        return "training unknown"
    if m == "clean":
        return "clean training"
    if m == "external":
        return "external model"
    return f"adversarial training {m}"


__all__ = ["ATTACK_PARAMS", "column_label", "settings_text", "strength_label", "strength_unit", "training_text"]
