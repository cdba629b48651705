"""The kernel-size sweep: train (or reuse) every (model, k, seed), then evaluate all models of a seed together.

`plan_kernel_size(cfg, root)` validates everything and returns the training jobs (one `TrainConfig` and
checkpoint directory per (model, k, seed): `results.rundir.checkpoint_dir(root, name)`); the caller runs them with
`training.fit` (which reuses a finished checkpoint and resumes an unfinished one). `kernel_size_rows(cfg, plan)` then evaluates the
trained models of each training seed on the same examples (so models are compared with paired tests within a
seed; `pair_group` = 'train_seed=<s>') and yields the rows, each with `train_seed` and `kernel_size`. The mean
and spread over seeds is `results.kernel_summary` of the results table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attacks.threat import check_norm, default_eps, validate_eps
from ..errors import UserError, check_odd_kernel
from ..models import model_info
from ..results.rundir import checkpoint_dir
from ..results.store import Store
from ..results.table import Row
from ..training import TrainConfig
from .common import checkpoint_sources
from .deform import DeformConfig, DeformRequest, deformation_rows, plan_deformations
from .evaluate import EvalConfig, evaluation_rows, plan_evaluation


@dataclass(frozen=True)
class KernelSizeConfig:
    """Models x kernel sizes x training seeds, trained with one recipe and evaluated with one protocol.

    `train` holds the TrainConfig fields shared by every job (epochs, batch_size, lr, optimizer, train_limit,
    model_kwargs, adversarial options, ...); model, kernel_size and seed are set per job.
    """

    models: tuple[str, ...]
    kernel_sizes: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    dataset: str = "mnist5k"
    data_root: str | None = None
    device: str = "auto"
    train: dict[str, Any] = field(default_factory=dict)
    attacks: tuple[str, ...] = ()
    norm: str = "linf"
    eps: tuple[float, ...] | None = None
    steps: int = 20
    eval_seed: int = 0
    hygiene: bool = True
    n_check: int = 100
    requests: tuple[DeformRequest, ...] = ()
    n: int = 1000
    batch_size: int = 256


@dataclass
class TrainJob:
    model: str
    kernel_size: int
    seed: int
    config: TrainConfig
    out: Path


@dataclass
class KernelSizePlan:
    cfg: KernelSizeConfig
    jobs: list[TrainJob]
    eps: list[float]

    def by_seed(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for j in self.jobs:
            out.setdefault(j.seed, []).append(str(j.out))
        return out

    def meta(self) -> dict[str, Any]:
        c = self.cfg
        return {"models": list(c.models), "kernel_sizes": list(c.kernel_sizes), "seeds": list(c.seeds),
                "dataset": c.dataset, "train": {k: v for k, v in c.train.items()}, "eps": self.eps,
                "config": {"attacks": list(c.attacks), "norm": c.norm, "steps": c.steps, "n": c.n,
                           "seed": c.eval_seed, "n_check": c.n_check},
                "deformations": [r.__dict__ for r in c.requests], "device": c.device, "split": "test"}


def plan_kernel_size(cfg: KernelSizeConfig, root: str | Path) -> KernelSizePlan:
    """Validate models, kernel sizes, seeds, attacks, eps and deformations, and list the training jobs."""
    if not cfg.models:
        raise UserError("give at least one --model.")
    if not cfg.kernel_sizes:
        raise UserError("give --kernel-sizes, e.g. 3,5,7,9.")
    for m in cfg.models:
        model_info(m)
    for k in cfg.kernel_sizes:
        check_odd_kernel("--kernel-sizes", k)
    for r in cfg.requests:
        r.validate()
    eps: list[float] = [0.0]
    if cfg.attacks:
        norm = check_norm(cfg.norm)
        EvalConfig(attacks=cfg.attacks, norm=norm, steps=cfg.steps).specs()
        eps = validate_eps(list(cfg.eps) if cfg.eps is not None else default_eps(cfg.dataset, norm), norm,
                           model_info(cfg.models[0]).input_size)
    jobs = []
    for s in cfg.seeds:
        for m in cfg.models:
            for k in cfg.kernel_sizes:
                tc = TrainConfig(model=m, dataset=cfg.dataset, seed=s, kernel_size=k, data_root=cfg.data_root,
                                 device=cfg.device, **cfg.train)
                tc.validate()
                jobs.append(TrainJob(m, k, s, tc, checkpoint_dir(root, f"{m}_k{k}_s{s}")))
    return KernelSizePlan(cfg, jobs, eps)


def kernel_size_rows(plan: KernelSizePlan, store: Store, progress: bool = False) -> Iterator[Row]:
    """Evaluate the trained checkpoints of every seed (train them first: see the module docstring); each seed's
    model.json files are read once and shared by its evaluation and deformation plans."""
    c = plan.cfg
    for seed, cks in plan.by_seed().items():
        group = {"train_seed": seed}
        sources = checkpoint_sources(cks)
        ecfg = EvalConfig(checkpoints=tuple(cks), attacks=c.attacks, norm=c.norm, eps=tuple(plan.eps), steps=c.steps,
                          n=c.n, batch_size=c.batch_size, seed=c.eval_seed, dataset=c.dataset, data_root=c.data_root,
                          device=c.device, hygiene=c.hygiene and bool(c.attacks), n_check=c.n_check)
        for row in evaluation_rows(plan_evaluation(ecfg, sources=sources), store=store, progress=progress):
            yield _tag(row, group)
        if c.requests:
            dcfg = DeformConfig(checkpoints=tuple(cks), requests=c.requests, n=c.n, seed=c.eval_seed,
                                batch_size=c.batch_size, device=c.device, dataset=c.dataset, data_root=c.data_root)
            for row in deformation_rows(plan_deformations(dcfg, sources=sources), store=store, progress=progress):
                yield _tag(row, group)


def _tag(row: Row, group: dict[str, Any]) -> Row:
    values = {**row.values, **({"pair_group": f"train_seed={group['train_seed']}"} if row.table == "outcomes" else {})}
    if row.table == "results":
        values["train_seed"] = group["train_seed"]
    return Row(row.table, values)


__all__ = ["KernelSizeConfig", "KernelSizePlan", "TrainJob", "kernel_size_rows", "plan_kernel_size"]
