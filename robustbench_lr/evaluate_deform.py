"""Deformation robustness of one or more checkpoints on the same examples: random severities and spatial attacks.

`run_deformations(checkpoints, requests, ...)` returns an `Evaluation` (see `evaluate.py`) whose results rows
have family 'deform' (the schema of `results.py`): for a random deformation (rotate, translate, scale,
elastic) the accuracy per strength averaged over draws with a t-interval over draws; for a spatial attack
(worst-of-k, grid, flow, affine-pgd) the accuracy per bound with the eps-sweep semantics, its per-example
outcomes, and exact McNemar tests between models at every bound. Progress is saved per (model, request)
through `store`, so a re-run skips finished work.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .attacks.sweep import prepare_for_attack
from .checkpoint import load_model
from .deform import spatial as S
from .deform import transforms as T
from .deform.runners import adversarial_sweep, method_options, random_sweep
from .errors import UserError
from .evaluate import Evaluation, MemoryStore, Store, load_eval_set
from .results import finalize, model_columns
from .stats import paired_comparisons
from .utils import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DeformRequest:
    """One deformation to sweep.

    Attributes:
        name: a random deformation (rotate, translate, scale, elastic) or a spatial attack (worst-of-k, grid,
            flow, affine-pgd).
        strengths: its strengths (degrees, pixels, factor, alpha) or bounds (max_rotation degrees, max_flow px).
        draws: independent random draws per strength (random deformations).
        options: further keyword arguments of the deformation or attack (e.g. k, sigma, steps).
    """

    name: str
    strengths: list[float]
    draws: int = 5
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def adversarial(self) -> bool:
        return self.name in S.ATTACKS

    def validate(self) -> None:
        known = list(T.DEFORMATIONS) + list(S.ATTACKS)
        if self.name not in known:
            import difflib

            close = difflib.get_close_matches(self.name, known, n=2)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(f"unknown deformation {self.name!r}; allowed: {', '.join(known)}.{hint}")
        if not self.strengths:
            raise UserError(f"--strengths: give at least one strength for {self.name!r}.")
        if self.adversarial:
            check = S.check_max_flow if S.STRENGTH[self.name] == "max_flow" else S.check_max_rotation
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


def run_deformations(checkpoints: list[str], requests: list[DeformRequest], *, n: int = 1000, seed: int = 0,
                     batch_size: int = 256, device: str = "auto", dataset: str | None = None,
                     data_root: str | None = None, store: Store | None = None, progress: bool = False) -> Evaluation:
    """Sweep every request over every checkpoint on the same n test examples."""
    store = store or MemoryStore()
    for r in requests:
        r.validate()
    dev = resolve_device(device)
    es = load_eval_set(checkpoints, dataset, data_root, n)
    rows: list[dict[str, Any]] = []
    outcome_frames, correct = [], {}
    for label, path, meta in zip(es.labels, checkpoints, es.metas):
        model = prepare_for_attack(load_model(path, device=dev))
        base = {**model_columns(label, path, meta), "dataset": es.dataset}
        for req in requests:
            key = f"deform__{label}__{req.name}"
            fp = hashlib.sha256(json.dumps([meta["weights_sha256"], es.dataset, n, asdict(req), seed,
                                            es.split_seed], sort_keys=True, default=str).encode()).hexdigest()[:20]
            saved = store.load(key)
            if saved and saved.get("fingerprint") == fp:
                got, min_bound = saved["rows"], saved.get("min_bound")
            else:
                if progress:
                    log.info("%s: %s at %s", label, req.name, ", ".join(f"{s:g}" for s in req.strengths))
                if req.adversarial:
                    got, mb = adversarial_sweep(model, es.x, es.y, req.name, sorted(req.strengths), seed=seed,
                                                batch_size=batch_size, device=dev, **req.options)
                    min_bound = mb.tolist()
                else:
                    got = random_sweep(model, es.x, es.y, req.name, list(req.strengths), draws=req.draws, seed=seed,
                                       batch_size=batch_size, device=dev, **req.options)
                    min_bound = None
                store.save(key, {"fingerprint": fp, "rows": got, "min_bound": min_bound})
            for r in got:
                r = {**base, **r, "perturbation": req.name}
                r.setdefault("family", "deform")
                rows.append(r)
            if min_bound is not None:
                mb = np.asarray(min_bound, dtype=np.float64)
                outcome_frames.append(pd.DataFrame({"model": label, "attack": req.name, "norm": "",
                                                    "example": np.arange(n), "dataset_index": es.indices,
                                                    "label": es.y.numpy(), "clean_correct": mb > 0,
                                                    "min_eps": mb}))
                for b in req.strengths:
                    correct.setdefault((req.name, float(b)), {})[label] = mb > b
    paired = []
    for (name, b), vecs in correct.items():
        if len(vecs) >= 2:
            df = paired_comparisons(vecs, es.labels)
            df.insert(0, "eps", b)
            df.insert(0, "norm", "")
            df.insert(0, "attack", name)
            paired.append(df)
    meta_out = {"config": {"checkpoints": checkpoints, "requests": [asdict(r) for r in requests], "n": n,
                           "seed": seed, "batch_size": batch_size}, "labels": es.labels, "dataset": es.dataset,
                "split": "test", "split_seed": es.split_seed, "num_classes": es.num_classes, "device": str(dev),
                "world_size": 1}
    return Evaluation(finalize(rows), pd.concat(paired, ignore_index=True) if paired else pd.DataFrame(),
                      pd.DataFrame(), pd.concat(outcome_frames, ignore_index=True) if outcome_frames else pd.DataFrame(),
                      meta_out)


__all__ = ["DeformRequest", "run_deformations"]
