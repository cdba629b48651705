"""Attack evaluation of one or more models on the same examples: eps sweeps, the worst case, hygiene checks.

`plan_evaluation(cfg)` validates everything (models, dataset, eps, attacks) and loads the examples, before any
attack; `evaluation_rows(plan, store)` then yields the rows of the run (see `results.table`):
- 'results': one row per (model, attack, norm, eps) with counts (n_total, n_clean_correct, n_correct), the attack
  settings (steps, step size, restarts, random start, early stop, implementation), seconds and gradient
  evaluations; per model a 'clean' row and, per eps, a 'worst-case' row: an example counts as robust only if
  every attack of the run failed on it (AutoAttack's per-example worst case);
- 'outcomes': per example, model and attack (and the worst case): clean correctness and the smallest eps that
  fooled it, from which `results.collect` derives the paired McNemar tests;
- 'hygiene': the checks of `runners.hygiene`.

Progress is persisted through `store` after every finished eps and every hygiene check, so a re-run skips
finished work; official AutoAttack keeps its own within-cell state in a slot of the store (`Store.slot`), so a
killed cell resumes at its last finished batch. Under torchrun the examples are sharded across ranks and the per-example outcomes reduced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .. import distributed as D
from ..attacks.prepare import predict, prepare_for_attack
from ..attacks.registry import MIN_NORM_ATTACKS, AttackSpec, random_targets
from ..attacks.threat import check_norm, default_eps, validate_eps
from ..errors import check_positive_int
from ..progress import bar
from ..results.store import MemoryStore, Store
from ..results.table import Row, model_columns
from ..utils import resolve_device
from .common import SUBSET_SEED, EvalSet, ModelSource, checkpoint_sources, fingerprint, load_eval_set
from .eps_sweep import SweepState, run_sweep
from .hygiene import iter_checks
from .minimal_norm import minimal_norm_sweep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation. eps values are floats in the attack's norm on [0, 1] pixels (None: the dataset's default
    sweep, `attacks.threat.EPS_DEFAULTS`). `steps` sets PGD / APGD (default 20) and `min_norm_steps` the
    minimal-norm attacks fmn / ddn / alma (default 1000, `attacks.minimal_norm.DEFAULT_STEPS`): one never
    changes the other. `aa_few_classes` ('error' | 'fallback') is what official AutoAttack does with fewer
    than 4 classes (`AttackSpec.aa_few_classes`)."""

    checkpoints: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ("fgsm", "pgd")
    norm: str = "linf"
    eps: tuple[float, ...] | None = None
    steps: int | None = None
    min_norm_steps: int | None = None
    restarts: int = 1
    step_size: float = 2.5
    random_start: bool = True
    aa_version: str = "standard"
    aa_attacks: tuple[str, ...] | None = None
    aa_few_classes: str = "error"
    mask: str | None = None
    mask_threshold: float = 0.0
    n: int = 1000
    batch_size: int = 256
    seed: int = 0
    dataset: str | None = None
    data_root: str | None = None
    device: str = "auto"
    hygiene: bool = True
    n_check: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(str(c) for c in self.checkpoints))
        object.__setattr__(self, "attacks", tuple(dict.fromkeys(self.attacks)))
        if self.eps is not None:
            object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))

    def specs(self) -> list[AttackSpec]:
        """The attacks (none: clean accuracy only)."""
        if self.min_norm_steps is not None:
            check_positive_int("--min-norm-steps", self.min_norm_steps)
        return [AttackSpec(a, norm=self.norm, steps=self.min_norm_steps if a in MIN_NORM_ATTACKS else self.steps,
                           restarts=self.restarts, step_size=self.step_size, random_start=self.random_start,
                           aa_version=self.aa_version, aa_attacks=self.aa_attacks if a == "autoattack" else None,
                           aa_few_classes=self.aa_few_classes,
                           mask=self.mask if a.startswith("pgd") else None, mask_threshold=self.mask_threshold)
                for a in self.attacks]


@dataclass
class EvalPlan:
    """A validated evaluation: its config, models and examples, attacks and eps list."""

    cfg: EvalConfig
    es: EvalSet
    specs: list[AttackSpec]
    eps: list[float]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def meta(self, world_size: int = 1) -> dict[str, Any]:
        """What run.json records about this evaluation."""
        return {"config": asdict(self.cfg), "labels": self.es.labels, "dataset": self.es.dataset, "split": "test",
                "split_seed": self.es.split_seed, "eval_indices_seed": SUBSET_SEED, "num_classes": self.es.num_classes,
                "eps": self.eps, "attacks": [s.to_dict() | {"settings": s.settings(max(self.eps))} for s in self.specs],
                "device": str(self.device), "world_size": world_size,
                "checkpoints": {s.label: {"path": s.path, "sha256": s.meta["weights_sha256"], "model": s.meta["model"],
                                          "training": s.meta.get("training", {}).get("adversarial"),
                                          "external": bool(s.meta.get("external")),
                                          "factory": s.meta["model"].get("factory"),
                                          "weights_file": s.meta.get("weights_file")} for s in self.es.sources}}


def plan_evaluation(cfg: EvalConfig, sources: list[ModelSource] | None = None) -> EvalPlan:
    """Validate every input and load the examples; raises UserError before any attack."""
    specs = cfg.specs()
    check_positive_int("--batch-size", cfg.batch_size)
    check_positive_int("--check-n", cfg.n_check)
    srcs = list(sources) if sources is not None else checkpoint_sources(list(cfg.checkpoints))
    device = resolve_device(cfg.device)
    es = load_eval_set(srcs, cfg.dataset, cfg.data_root, cfg.n)
    norm = check_norm(cfg.norm)
    eps = validate_eps(list(cfg.eps) if cfg.eps is not None else default_eps(es.dataset, norm), norm,
                       tuple(es.input_size))
    for s in specs:
        if s.name == "autoattack":  # too few classes for its DLR attacks: refuse now, not at the first cell
            from ..attacks.autoattack_ref import plan_attacks

            plan_attacks(s.aa_version, s.aa_attacks, es.num_classes, s.aa_few_classes)
    return EvalPlan(cfg, es, specs, eps, device)


def evaluation_rows(plan: EvalPlan, store: Store | None = None, progress: bool = False,
                    on_adv: Callable[[str, str, float, np.ndarray, torch.Tensor], None] | None = None,
                    ctx: D.DistContext | None = None, after_cell: Callable[[], None] | None = None) -> Iterator[Row]:
    """Yield the rows of every model under every attack at every eps (see the module docstring).

    Args:
        plan: from `plan_evaluation`.
        store: resumable progress (default: in memory).
        progress: show progress (a bar per attacked cell and per model's hygiene checks).
        on_adv: receives (model label, attack key, eps, dataset indices, adversarial images) of fooled examples.
        ctx: torchrun context (default: one process on the plan's device).
        after_cell: called after each finished (model, attack, eps) cell, once its progress is saved.
    """
    store = store or MemoryStore()
    ctx = ctx or D.DistContext(0, 1, 0, plan.device)
    for src in plan.es.sources:
        model = prepare_for_attack(src.load(ctx.device))
        base = {**model_columns(src.label, src.path, src.meta), "dataset": plan.es.dataset,
                "n_total": int(plan.cfg.n)}
        if not plan.specs:  # clean accuracy only
            yield from _clean_only_rows(plan, src.label, base, model, ctx.device)
            continue
        sweeps: dict[str, SweepState] = {}
        for spec in plan.specs:
            st, targets = _sweep(plan, src, model, spec, store, progress, on_adv, ctx, after_cell)
            sweeps[spec.key] = st
            yield from _sweep_rows(plan, src.label, base, spec, st, targets)
        yield from _summary_rows(plan, src.label, base, sweeps)
        if plan.cfg.hygiene and ctx.is_main:
            yield from _hygiene_rows(plan, src, model, sweeps, store, progress, ctx.device)
        D.barrier(ctx)


def _sweep(plan: EvalPlan, src: ModelSource, model: torch.nn.Module, spec: AttackSpec, store: Store, progress: bool,
           on_adv: Any, ctx: D.DistContext, after_cell: Any) -> tuple[SweepState, torch.Tensor | None]:
    """Run (or resume) one attack's sweep for one model."""
    es, cfg = plan.es, plan.cfg
    key = f"sweep__{src.label}__{spec.key}"
    fp = fingerprint(src.meta["weights_sha256"], es.dataset, cfg.n, spec.to_dict(), plan.eps, cfg.seed, SUBSET_SEED,
                     es.split_seed)
    saved = store.load(key)
    state = SweepState.from_dict(saved["state"]) if saved and saved.get("fingerprint") == fp else None
    if saved and state is None:
        log.info("%s: settings changed since the saved progress; starting this sweep again", key)
    targets = random_targets(es.y, es.num_classes, cfg.seed) if spec.targeted == "random" else None

    def save(st: SweepState) -> None:
        if ctx.is_main:
            store.save(key, {"fingerprint": fp, "state": st.to_dict()})
        if after_cell is not None:
            after_cell()

    def cell_bar(eps: float, n_active: int) -> Any:
        return bar(progress and ctx.is_main, n_active, f"{src.label} {spec.key} eps={eps:g}", "ex", leave=False)

    def adv_cb(eps: float, ex: np.ndarray, xa: torch.Tensor) -> None:
        on_adv(src.label, spec.key, eps, es.indices[ex], xa)

    if spec.minimal_norm:
        return minimal_norm_sweep(plan, src, model, spec, state, save, ctx), None

    def aa_state(eps: float) -> dict[str, Any]:  # official AutoAttack keeps its resumable state in the store
        if spec.name != "autoattack" or not ctx.is_main:
            return {}
        sub = "_".join(spec.aa_attacks or ())
        return {"state": store.slot(f"aa__{src.label}__{spec.key}{sub}__{fp}__eps{eps:g}")}

    shard = np.arange(ctx.rank, cfg.n, ctx.world_size) if ctx.distributed else None
    st = run_sweep(model, es.x, es.y, spec, plan.eps, num_classes=es.num_classes, seed=cfg.seed,
                   batch_size=cfg.batch_size, device=ctx.device, state=state, targets=targets, shard=shard,
                   reduce=(lambda s, c: _reduce(s, c)) if ctx.distributed else None, on_cell=save,
                   on_adv=adv_cb if on_adv is not None else None, progress=cell_bar, attack_kwargs=aa_state)
    return st, targets


def attack_label(spec: AttackSpec) -> str:
    """The attack's name in the tables: 'pgd', 'pgd-background' for a region-masked PGD, and
    'autoattack[apgd-ce+apgd-t]' for a subset of the official AutoAttack."""
    if getattr(spec, "aa_attacks", None):
        return f"{spec.name}[{'+'.join(spec.aa_attacks)}]"
    return f"{spec.name}-{spec.mask}" if getattr(spec, "mask", None) else spec.name


def _sweep_rows(plan: EvalPlan, label: str, base: dict[str, Any], spec: AttackSpec, st: SweepState,
                targets: torch.Tensor | None) -> Iterator[Row]:
    name = attack_label(spec)
    for r in st.rows:
        yield Row("results", {**base, **spec.settings(r["eps"]), **r, "attack": name, "family": spec.norm,
                              "perturbation": name, "param_name": "eps", "param_value": r["eps"]})
    extra = {"min_norm": np.asarray(st.norms)} if getattr(st, "norms", None) is not None else None
    yield from outcome_rows(plan.es, label, name, spec.norm, st.clean_correct, st.min_eps,
                            targets.numpy() if targets is not None else None, st.target_hit_eps, extra=extra)


def outcome_rows(es: EvalSet, label: str, attack: str, norm: str, clean: np.ndarray, min_eps: np.ndarray,
                 targets: np.ndarray | None = None, target_hit: np.ndarray | None = None,
                 extra: dict[str, np.ndarray] | None = None, pair_group: str = "") -> Iterator[Row]:
    """One 'outcomes' row per example of the evaluation set."""
    labels = es.y.numpy()
    for i in range(len(labels)):
        yield Row("outcomes", {
            "model": label, "attack": attack, "norm": norm, "example": i, "dataset_index": int(es.indices[i]),
            "label": int(labels[i]), "clean_correct": bool(clean[i]), "min_eps": float(min_eps[i]),
            "target": int(targets[i]) if targets is not None else -1,
            "target_hit_eps": float(target_hit[i]) if target_hit is not None else float("inf"),
            "pair_group": pair_group, **{k: float(v[i]) for k, v in (extra or {}).items()}})


def _summary_rows(plan: EvalPlan, label: str, base: dict[str, Any], sweeps: dict[str, SweepState]) -> Iterator[Row]:
    """The clean row and the per-example worst case over every attack of the run, at every eps."""
    first = next(iter(sweeps.values()))
    n_cc = int(first.clean_correct.sum())
    norm = plan.specs[0].norm
    counters = {"n_attacked": 0, "n_fooled_here": 0, "n_target_hit": 0, "forward_evals": 0}
    yield Row("results", {**base, **clean_settings(), "family": "clean", "perturbation": "clean", "param_name": "eps",
                          "param_value": 0.0, "n_clean_correct": n_cc, "n_correct": n_cc, **counters,
                          "grad_evals": 0, "forward_evals": plan.cfg.n, "seconds": float("nan")})
    worst = np.min(np.stack([s.min_eps for s in sweeps.values()]), axis=0)
    for eps in plan.eps:
        yield Row("results", {**base, **clean_settings(), "attack": "worst-case", "norm": norm, "eps": float(eps),
                              "family": norm, "perturbation": "worst-case", "param_name": "eps",
                              "param_value": float(eps), "implementation": "per-example minimum over the attacks",
                              "protocol": "per-example worst case over: " + ", ".join(s.key for s in plan.specs),
                              "n_clean_correct": n_cc, "n_correct": int((worst > eps).sum()), **counters,
                              "grad_evals": int(sum(r["grad_evals"] for s in sweeps.values() for r in s.rows
                                                    if r["eps"] == eps)), "seconds": float("nan")})
    yield from outcome_rows(plan.es, label, "worst-case", norm, first.clean_correct, worst)


def _clean_only_rows(plan: EvalPlan, label: str, base: dict[str, Any], model: torch.nn.Module,
                     device: torch.device) -> Iterator[Row]:
    clean = (predict(model, plan.es.x, plan.cfg.batch_size, device) == plan.es.y).numpy()
    n_cc = int(clean.sum())
    yield Row("results", {**base, **clean_settings(), "family": "clean", "perturbation": "clean", "param_name": "eps",
                          "param_value": 0.0, "n_clean_correct": n_cc, "n_correct": n_cc, "n_attacked": 0,
                          "grad_evals": 0, "forward_evals": plan.cfg.n, "seconds": float("nan")})
    yield from outcome_rows(plan.es, label, "clean", "", clean, np.where(clean, np.inf, 0.0))


def _hygiene_rows(plan: EvalPlan, src: ModelSource, model: torch.nn.Module, sweeps: dict[str, SweepState],
                  store: Store, progress: bool, device: torch.device) -> Iterator[Row]:
    """The hygiene checks of one model, each saved as soon as it is done (a re-run skips saved checks)."""
    cfg, es = plan.cfg, plan.es
    key = f"hygiene__{src.label}"
    fp = fingerprint(src.meta["weights_sha256"], es.dataset, cfg.n, [s.to_dict() for s in plan.specs], plan.eps,
                     cfg.seed, cfg.n_check)
    saved = store.load(key)
    done: dict[str, list[dict[str, Any]]] = saved["checks"] if saved and saved.get("fingerprint") == fp else {}
    from .hygiene import CHECKS

    b = bar(progress, len(CHECKS), f"{src.label} hygiene checks", "check")
    for name, rows in iter_checks(model, src.label, es.x, es.y, sweeps=sweeps, specs=plan.specs, eps_list=plan.eps,
                                  norm=plan.specs[0].norm, num_classes=es.num_classes, seed=cfg.seed,
                                  batch_size=cfg.batch_size, device=device, n_check=cfg.n_check,
                                  steps=cfg.steps or 20, skip=set(done)):
        done[name] = rows
        store.save(key, {"fingerprint": fp, "checks": done})
        if b is not None and not name.startswith("sanity__"):
            b.update(1)
    if b is not None:
        b.close()
    for rows in done.values():
        for r in rows:
            yield Row("hygiene", r)


def clean_settings() -> dict[str, Any]:
    return {"attack": "clean", "norm": "", "eps": 0.0, "targeted": "", "restarts": 0, "steps": 0,
            "step_size": float("nan"), "random_start": False, "queries": 0, "protocol": "", "implementation": ""}


def _reduce(state: SweepState, counters: dict[str, float]) -> dict[str, float]:
    """Combine one cell over ranks: per-example minima of min_eps / target_hit_eps, sums of counters."""
    for arr in (state.min_eps, state.target_hit_eps):
        t = torch.from_numpy(arr.copy())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        arr[:] = t.numpy()
    keys = ["grad_evals", "forward_evals", "n_attacked", "n_unchanged_failed"]
    v = torch.tensor([counters.get(k, 0.0) for k in keys], dtype=torch.float64)
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    s = torch.tensor([counters["seconds"]], dtype=torch.float64)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)
    return {**dict(zip(keys, v.tolist())), "seconds": float(s[0]), "flags": counters.get("flags", [])}


__all__ = ["EvalConfig", "EvalPlan", "clean_settings", "evaluation_rows", "outcome_rows", "plan_evaluation"]
