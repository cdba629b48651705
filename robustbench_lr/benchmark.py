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
              progress: bool = False, aa_attacks: Sequence[str] | None = None, aa_version: str = "standard",
              aa_few_classes: str = "error", min_norm_steps: int | None = None) -> RunTables:
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
        steps: iterations of PGD-type attacks (default 20); AutoAttack uses its reference settings.
        min_norm_steps: iterations of the minimal-norm attacks fmn, ddn, alma (default 1000; `steps` does not
            change them).
        hygiene: run the hygiene checks (Carlini et al. 2019) and sanity flags.
        aa_version: the official AutoAttack's version: 'standard', 'plus' or 'rand' (randomised defences, EoT).
        aa_attacks: run only these attacks of the official AutoAttack (e.g. ('apgd-ce', 'apgd-t')); the rows are
            then labelled 'autoattack[apgd-ce+apgd-t]', never as AutoAttack. None: the whole version.
        aa_few_classes: a dataset with fewer than 4 classes: 'error' (default, before any attack) or 'fallback'
            (AutoAttack without its DLR-loss attacks, e.g. standard becomes APGD-CE, FAB-T, Square; the hygiene
            row 'autoattack:too_few_classes' warns and names them).

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
    cfg = EvalConfig(attacks=tuple(attacks), norm=threat_model, eps=tuple(eps_list), steps=steps,
                     min_norm_steps=min_norm_steps, n=n, batch_size=batch_size, seed=seed, dataset=dataset,
                     data_root=data_root, device=device, hygiene=hygiene, n_check=n_check, aa_version=aa_version,
                     aa_attacks=tuple(aa_attacks) if aa_attacks else None, aa_few_classes=aa_few_classes)
    plan = plan_evaluation(cfg, sources=[src])
    return collect(evaluation_rows(plan, progress=progress))


def _first_device(model: nn.Module) -> Any:
    p = next(model.parameters(), None)
    return p.device if p is not None else "cpu"


__all__ = ["benchmark"]
