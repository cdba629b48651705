"""The provenance lines of the report's first page, from the run directories' run.json files.

Everything here comes from what the runs recorded (commands, versions, device, threads, seeds, checkpoints and
their training threat models, the attacks' settings and implementations); only the report generator's own
version and commit come from `robustbench_lr.provenance`. Deformations are listed with their units (degrees,
pixels); a spatial attack with its rotation bounds, the translation bound tied to them and its search (k).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..provenance import git_commit, now, package_versions
from ..results.rundir import RunBundle
from ..results.table import fmt_strength
from .labels import settings_text, strength_label, strength_unit

SPATIAL_BOUNDS = {"worst-of-k": "max_rotation", "grid": "max_rotation", "affine-pgd": "max_rotation",
                  "flow": "max_flow"}  # the spatial attacks and their bound (as deform.spatial.STRENGTH)


def provenance(bundle: RunBundle) -> list[tuple[str, str]]:
    """(label, value) lines for page 1."""
    r = bundle.results
    items: list[tuple[str, str]] = [("generated", now()),
                                    ("report by", f"robustbench-lr {package_versions()['robustbench_lr']}, "
                                                  f"git {git_commit() or 'n/a'}")]
    for run in bundle.runs:
        items += _run_lines(run) + _deformation_lines(run, r)
    datasets = sorted(set(r["dataset"].dropna())) if "dataset" in r else []
    items.append(("dataset / split", f"{', '.join(datasets)} / test"))
    items.append(("seeds", _seeds(bundle)))
    checkpoints: dict[str, str] = {}
    for run in bundle.runs:
        for lab, c in (run.get("checkpoints") or {}).items():
            checkpoints[lab] = (f"{c.get('model', {}).get('name', '?')}, {_training(c)}, sha256 "
                                f"{str(c.get('sha256', ''))[:12]}")
    items += [(f"model {lab}", desc) for lab, desc in checkpoints.items()]
    return items


def _run_lines(run: dict[str, Any]) -> list[tuple[str, str]]:
    out = [("command", run.get("command", "?"))]
    v = run.get("versions") or {}
    if v:
        out.append(("versions", ", ".join(f"{k} {v[k]}" for k in v)))
    if run.get("device"):
        threads = f", {run['torch_threads']} torch threads" if run.get("torch_threads") else ""
        out.append(("device", f"{run.get('device_description', run['device'])} (processes: "
                              f"{run.get('world_size', 1)}{threads})"))
    if run.get("reproducibility"):
        out.append(("reproducible", run["reproducibility"]))
    for a in run.get("attacks") or []:
        out.append((f"attack {a.get('name')}", attack_settings(a.get("settings") or a.get("settings_at_first_eps")
                                                                 or a)))
    return out


def attack_settings(s: dict[str, Any]) -> str:
    """'pgd linf: 20 steps, step size 0.125 eps (0.0375 at eps 0.3), 1 restart, random start, early stop;
    StreamingPGD; implementation: robustbench-lr StreamingPGD 0.1.0' (see `labels.settings_text`)."""
    return settings_text(s)


def _deformation_lines(run: dict[str, Any], results: pd.DataFrame) -> list[tuple[str, str]]:
    out = []
    for d in run.get("deformations") or []:
        name, opts = str(d.get("name")), dict(d.get("options") or {})
        rows = results[results["perturbation"] == name] if "perturbation" in results else results.iloc[:0]
        pname = str(rows["param_name"].iloc[0]) if len(rows) else SPATIAL_BOUNDS.get(name, "")
        unit = strength_unit(pname)
        values = [float(v) for v in d.get("strengths") or []]
        strengths = ", ".join(f"{v:g}{unit}" for v in values)
        if name in SPATIAL_BOUNDS:
            what = _spatial_text(name, values, unit, opts, rows)
        else:
            what = f"{strength_label(pname).split(' (')[0]} {strengths}; {d.get('draws')} random draws per strength"
        extra = ", ".join(f"{k}={v}" for k, v in opts.items())
        out.append((f"deformation {name}", what + (f"; options {extra}" if extra else "")))
    return out


def _setting(key: str, opts: dict[str, Any], rows: pd.DataFrame, default: float) -> float:
    """A spatial attack's setting: its option, else the value its results rows recorded, else the default."""
    if key in opts:
        return float(opts[key])
    if key in rows and rows[key].notna().any():
        return float(rows[key].dropna().iloc[0])
    return default


def _spatial_text(name: str, bounds: list[float], unit: str, opts: dict[str, Any], rows: pd.DataFrame) -> str:
    """'bounds: rotation up to 10°, 20°, 30° with translation up to 1, 2, 3 px (0.1 px per degree); per example
    the worst of k=10 random rotations and translations within the bound' (Engstrom et al. 2019)."""
    if SPATIAL_BOUNDS[name] == "max_flow":
        return (f"bounds: flow up to {', '.join(f'{b:g}{unit}' for b in bounds)} per pixel and component (Linf); "
                f"PGD on a per-pixel flow field (stAdv)")
    tpd = _setting("translation_per_degree", opts, rows, 0.1)
    scale = _setting("scale_bound", opts, rows, 0.1 if name == "affine-pgd" else 0.0)
    text = (f"bounds: rotation up to {', '.join(f'{b:g}{unit}' for b in bounds)} with translation up to "
            f"{', '.join(f'{tpd * b:g}' for b in bounds)} px ({tpd:g} px per degree)"
            + (f" and scale within 1 \u00b1 {scale:g}" if scale else ""))
    how = {"worst-of-k": f"the worst of k={int(_setting('k', opts, rows, 10))} random rotations and translations "
                         f"within the bound",
           "grid": "the worst transform of an exhaustive grid of rotations and translations within the bound",
           "affine-pgd": "PGD on the rotation, translation and scale within the bound"}
    return text + f"; per example {how.get(name, 'the attack within the bound')}"


def _training(c: dict[str, Any]) -> str:
    adv = c.get("training") or {}
    if c.get("external"):
        return "external model"
    if not adv or adv.get("method") in (None, "none"):
        return "clean training (no adversarial examples)"
    name = {"pgd": "PGD-AT", "fgsm-rs": "FGSM-RS", "trades": "TRADES"}.get(adv["method"], adv["method"])
    text = f"adversarial training {name}, threat model {adv.get('norm', '')} eps {fmt_strength(float(adv.get('eps', 0)))}"
    extra = [f"{adv['attack_steps']} attack steps" if adv.get("attack_steps") else "",
             f"step size {float(adv['step_size']):.3g}" if adv.get("step_size") else "",
             f"TRADES beta {adv['trades_beta']:g}" if adv.get("trades_beta") else "",
             f"inner attack {adv['inner_attack']}" if adv.get("inner_attack") else "",
             f"eps warm-up {adv['eps_warmup_epochs']} epochs" if adv.get("eps_warmup_epochs") else ""]
    extra = [e for e in extra if e]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _seeds(bundle: RunBundle) -> str:
    r = bundle.results
    seeds = {str(run.get("config", {}).get("seed")) for run in bundle.runs if run.get("config")}
    split_seeds = {str(run.get("split_seed")) for run in bundle.runs if "split_seed" in run}
    train_seeds = sorted({str(int(s)) for s in r.get("train_seed", pd.Series(dtype=float)).dropna()})
    return (f"attack/deformation {', '.join(sorted(seeds)) or 'n/a'}; split {', '.join(sorted(split_seeds)) or 'n/a'}; "
            f"training {', '.join(train_seeds) or 'n/a'}")
