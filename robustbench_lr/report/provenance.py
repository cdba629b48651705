"""The provenance lines of the report's first page, from the run directories' run.json files.

Everything here comes from what the runs recorded (commands, versions, device, threads, seeds, checkpoints and
their training threat models, the attacks' settings and implementations); only the report generator's own
version and commit come from `robustbench_lr.provenance`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..provenance import git_commit, now, package_versions
from ..results.rundir import RunBundle
from ..results.table import fmt_strength


def provenance(bundle: RunBundle) -> list[tuple[str, str]]:
    """(label, value) lines for page 1."""
    r = bundle.results
    items: list[tuple[str, str]] = [("generated", now()),
                                    ("report by", f"robustbench-lr {package_versions()['robustbench_lr']}, "
                                                  f"git {git_commit() or 'n/a'}")]
    for run in bundle.runs:
        items += _run_lines(run)
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
    """'PGD linf: 20 steps, step 2.5 x eps/steps, 1 restart, random start, early stop; robustbench-lr StreamingPGD'."""
    parts = [f"{s.get('attack', s.get('name', '?'))} {s.get('norm', '')}".strip() + ":"]
    if s.get("steps"):
        parts.append(f"{int(s['steps'])} steps,")
    if s.get("step_size") == s.get("step_size") and s.get("step_size") is not None and s.get("eps"):
        parts.append(f"step {float(s['step_size']) / float(s['eps']):.3g} x eps,")
    if s.get("restarts"):
        parts.append(f"{int(s['restarts'])} restart(s),")
    if s.get("queries"):
        parts.append(f"{int(s['queries'])} queries,")
    parts.append("random start," if s.get("random_start") else "no random start,")
    parts.append("early stop" if s.get("early_stop") else "no early stop")
    text = " ".join(parts)
    if s.get("protocol"):
        text += f"; {s['protocol']}"
    if s.get("implementation"):
        text += f"; implementation: {s['implementation']}"
    return text


def _training(c: dict[str, Any]) -> str:
    adv = c.get("training") or {}
    if c.get("external"):
        return "external model"
    if not adv or adv.get("method") in (None, "none"):
        return "clean training"
    name = {"pgd": "PGD-AT", "fgsm-rs": "FGSM-RS", "trades": "TRADES"}.get(adv["method"], adv["method"])
    return f"{name} {adv.get('norm', '')} eps {fmt_strength(float(adv.get('eps', 0)))}"


def _seeds(bundle: RunBundle) -> str:
    r = bundle.results
    seeds = {str(run.get("config", {}).get("seed")) for run in bundle.runs if run.get("config")}
    split_seeds = {str(run.get("split_seed")) for run in bundle.runs if "split_seed" in run}
    train_seeds = sorted({str(int(s)) for s in r.get("train_seed", pd.Series(dtype=float)).dropna()})
    return (f"attack/deformation {', '.join(sorted(seeds)) or 'n/a'}; split {', '.join(sorted(split_seeds)) or 'n/a'}; "
            f"training {', '.join(train_seeds) or 'n/a'}")
