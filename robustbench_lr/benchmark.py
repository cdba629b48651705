"""`benchmark(model, ...)`: evaluate any nn.Module that maps [0, 1] images to logits, like RobustBench's
`benchmark`, with the suite's attacks, statistics and hygiene checks.

    from robustbench_lr import benchmark
    tables = benchmark(my_model, dataset="mnist5k", threat_model="linf", eps=0.3, attacks=("autoattack",), n=500)
    tables.results   # clean and robust accuracy with 95% Clopper-Pearson intervals, counts, attack settings
    tables.hygiene   # the hygiene checks and sanity flags

Status: a thin front end over `runners.evaluate` (the same code the CLI runs) for a model in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from .results.table import RunTables


def benchmark(model: nn.Module, dataset: str = "mnist5k", threat_model: str = "linf",
              eps: float | Sequence[float] | None = None, attacks: Sequence[str] = ("autoattack",), n: int = 1000,
              device: str = "auto", data_root: str | None = None, batch_size: int = 256, seed: int = 0,
              normalize: tuple[Sequence[float], Sequence[float]] | None = None, name: str = "model",
              steps: int | None = None, hygiene: bool = True, n_check: int = 200, image_size: int = 224,
              progress: bool = False) -> RunTables:
    """Evaluate `model` on the first `n` examples of the fixed evaluation permutation of `dataset`'s test split.

    Args:
        model: any nn.Module mapping [0, 1] images (N, C, H, W) to logits (N, classes); put in eval mode here
            (a warning says so if it was in training mode; another warns if two forward passes differ).
        dataset: 'mnist5k' (embedded), 'cifar10' or 'imagefolder' (both read `data_root`).
        threat_model: 'linf' or 'l2'.
        eps: one budget or a list, in the threat model's norm on [0, 1] pixels (None: the standard budget, e.g.
            0.3 for MNIST Linf, 8/255 for CIFAR-10 Linf).
        attacks: attack names of the suite (default: the official AutoAttack, standard version).
        n: number of test examples.
        normalize: (mean, std) when the model expects normalised inputs (the normalisation is put inside).
        name: the model's label in the tables.
        steps: iterations of PGD-type attacks (default 20) and minimal-norm attacks (default 1000); AutoAttack
            uses its reference settings.
        hygiene: run the hygiene checks (Carlini et al. 2019) and sanity flags.

    Returns:
        The run's tables: results (one row per attack and eps, plus clean and worst-case rows, with counts and
        intervals), paired (empty for one model), hygiene, outcomes (per example).
    """
    from .attacks.threat import default_eps, parse_eps
    from .results.table import collect
    from .runners import EvalConfig, evaluation_rows, plan_evaluation
    from .runners.common import dataset_description
    from .runners.external import module_source

    meta, probe = dataset_description(dataset, data_root, image_size)
    eps_list = default_eps(dataset, threat_model, "standard") if eps is None else parse_eps(eps)
    src = module_source(model, name, meta, probe.to(_first_device(model)), normalize=normalize)
    cfg = EvalConfig(attacks=tuple(attacks), norm=threat_model, eps=tuple(eps_list), steps=steps, n=n,
                     batch_size=batch_size, seed=seed, dataset=dataset, data_root=data_root, device=device,
                     hygiene=hygiene, n_check=n_check)
    plan = plan_evaluation(cfg, sources=[src])
    return collect(evaluation_rows(plan, progress=progress))


def _first_device(model: nn.Module) -> Any:
    p = next(model.parameters(), None)
    return p.device if p is not None else "cpu"


__all__ = ["benchmark"]
