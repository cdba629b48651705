"""Deformation robustness of one or more models on the same examples: random severities and spatial attacks.

`plan_deformations(cfg)` validates the requests, the models and the examples; `deformation_rows(plan, store)`
yields 'results' rows with family 'deform' (the schema of `results.table`): for a random deformation (rotate,
translate, scale, elastic, offset) the accuracy per strength summed over draws with a t-interval over draws; for
a spatial attack (worst-of-k, grid, flow, affine-pgd) the accuracy per bound with the eps-sweep semantics and
per-example 'outcomes' (min_eps = the smallest bound that fooled the example), from which `results.collect`
derives exact McNemar tests between models at every bound. Progress is saved per (model, request) through
`store`, so a re-run skips finished work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..attacks.prepare import prepare_for_attack
from ..deform import bounds as B
from ..deform import spatial as S
from ..deform import transforms as T
from ..errors import UserError, check_choice
from ..progress import bar
from ..results.store import MemoryStore, Store
from ..results.table import Row, model_columns
from ..utils import resolve_device
from .common import EvalSet, ModelSource, checkpoint_sources, fingerprint, load_eval_set
from .deform_sweep import adversarial_sweep, method_options, random_sweep
from .evaluate import outcome_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeformRequest:
    """One deformation to sweep.

    Attributes:
        name: a random deformation (rotate, translate, scale, elastic, offset) or a spatial attack (worst-of-k,
            grid, flow, affine-pgd).
        strengths: its strengths (degrees, pixels, factor, alpha, offset) or bounds (max_rotation degrees,
            max_flow px).
        draws: independent random draws per strength (random deformations).
        options: further keyword arguments of the deformation or attack (e.g. k, sigma, steps).
    """

    name: str
    strengths: tuple[float, ...]
    draws: int = 5
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))

    @property
    def adversarial(self) -> bool:
        return self.name in S.ATTACKS

    def validate(self) -> None:
        check_choice("deformation", self.name, [*T.DEFORMATIONS, *S.ATTACKS])
        if not self.strengths:
            raise UserError(f"--strengths: give at least one strength for {self.name!r}.")
        if self.adversarial:
            check = B.check_max_flow if S.STRENGTH[self.name] == "max_flow" else B.check_max_rotation
            for s in self.strengths:
                check(s)
            unknown = set(self.options) - set(method_options(self.name))
            if unknown:
                raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} for {self.name!r}; allowed: "
                                f"{', '.join(sorted(method_options(self.name)))}.")
        else:
            d = T.get_deformation(self.name)
            for s in self.strengths:
                d.validate(s)
            d.check_options(dict(self.options))


@dataclass(frozen=True)
class DeformConfig:
    """A deformation sweep of one or more models on the same n test examples."""

    checkpoints: tuple[str, ...]
    requests: tuple[DeformRequest, ...]
    n: int = 1000
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    dataset: str | None = None
    data_root: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(str(c) for c in self.checkpoints))
        object.__setattr__(self, "requests", tuple(self.requests))


@dataclass
class DeformPlan:
    cfg: DeformConfig
    es: EvalSet
    device: torch.device

    def meta(self) -> dict[str, Any]:
        return {"config": {**asdict(self.cfg), "requests": [asdict(r) for r in self.cfg.requests]},
                "labels": self.es.labels, "dataset": self.es.dataset, "split": "test",
                "split_seed": self.es.split_seed, "num_classes": self.es.num_classes, "device": str(self.device),
                "world_size": 1, "deformations": [asdict(r) for r in self.cfg.requests],
                "checkpoints": {s.label: {"path": s.path, "sha256": s.meta["weights_sha256"], "model": s.meta["model"],
                                          "training": s.meta.get("training", {}).get("adversarial")}
                                for s in self.es.sources}}


def plan_deformations(cfg: DeformConfig, sources: list[ModelSource] | None = None) -> DeformPlan:
    """Validate every request, model and the examples before any work."""
    if not cfg.requests:
        raise UserError("give at least one --deform.")
    for r in cfg.requests:
        r.validate()
    srcs = list(sources) if sources is not None else checkpoint_sources(list(cfg.checkpoints))
    device = resolve_device(cfg.device)
    return DeformPlan(cfg, load_eval_set(srcs, cfg.dataset, cfg.data_root, cfg.n), device)


def deformation_rows(plan: DeformPlan, store: Store | None = None, progress: bool = False,
                     pair_group: str = "") -> Iterator[Row]:
    """Sweep every request over every model on the same examples (see the module docstring)."""
    store = store or MemoryStore()
    es, cfg = plan.es, plan.cfg
    for src in es.sources:
        model = prepare_for_attack(src.load(plan.device))
        base = {**model_columns(src.label, src.path, src.meta), "dataset": es.dataset}
        for req in cfg.requests:
            got, min_bound = _request(plan, src, model, req, store, progress)
            for r in got:
                yield Row("results", {**base, **r, "perturbation": req.name, "family": "deform"})
            if min_bound is not None:
                mb = np.asarray(min_bound, dtype=np.float64)
                yield from outcome_rows(es, src.label, req.name, "", mb > 0, mb, pair_group=pair_group)


def _request(plan: DeformPlan, src: ModelSource, model: torch.nn.Module, req: DeformRequest, store: Store,
             progress: bool) -> tuple[list[dict[str, Any]], list[float] | None]:
    es, cfg = plan.es, plan.cfg
    key = f"deform__{src.label}__{req.name}"
    fp = fingerprint(src.meta["weights_sha256"], es.dataset, cfg.n, asdict(req), cfg.seed, es.split_seed)
    saved = store.load(key)
    if saved and saved.get("fingerprint") == fp:
        return saved["rows"], saved.get("min_bound")

    def make_bar(total: int) -> Any:  # one bar per (model, deformation): a live ETA, or one log line off a TTY
        return bar(True, total, f"{src.label} {req.name}", "ex")

    on = make_bar if progress else None
    if req.adversarial:
        got, mb = adversarial_sweep(model, es.x, es.y, req.name, sorted(req.strengths), seed=cfg.seed,
                                    batch_size=cfg.batch_size, device=plan.device, progress=on, **req.options)
        min_bound = mb.tolist()
    else:
        got = random_sweep(model, es.x, es.y, req.name, list(req.strengths), draws=req.draws, seed=cfg.seed,
                           batch_size=cfg.batch_size, device=plan.device, progress=on, **req.options)
        min_bound = None
    store.save(key, {"fingerprint": fp, "rows": got, "min_bound": min_bound})
    return got, min_bound


__all__ = ["DeformConfig", "DeformPlan", "DeformRequest", "deformation_rows", "plan_deformations"]
