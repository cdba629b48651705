"""Runners: each takes one frozen config, validates it (`plan_*`, before any expensive work) and yields plain
rows (`results.table.Row`); none writes files. The CLI hands the rows to `results.collect` and
`results.write_run`.

| module        | config             | what it runs                                                          |
|---------------|--------------------|-----------------------------------------------------------------------|
| evaluate      | EvalConfig         | attack sweeps over eps, the per-example worst case, hygiene checks     |
| deform        | DeformConfig       | random deformation sweeps and spatial attacks                          |
| kernel_size   | KernelSizeConfig   | the training jobs of a kernel-size sweep, then their evaluation        |
| figures       | FigureConfig       | the model figures of a report (weights, priors, shift, attributions)   |

Engines they share: `eps_sweep` (one attack over ascending eps with early stop), `deform_sweep` (random and
adversarial deformation sweeps), `hygiene` (evaluation-hygiene checks), `common` (models and examples).
"""

from .common import EvalSet, ModelSource, checkpoint_sources, eval_indices, load_eval_set
from .deform import DeformConfig, DeformRequest, deformation_rows, plan_deformations
from .evaluate import EvalConfig, evaluation_rows, plan_evaluation
from .figures import FigureConfig, figure_items
from .kernel_size import KernelSizeConfig, kernel_size_rows, plan_kernel_size

__all__ = ["DeformConfig", "DeformRequest", "EvalConfig", "EvalSet", "FigureConfig", "KernelSizeConfig",
           "ModelSource", "checkpoint_sources", "deformation_rows", "eval_indices", "evaluation_rows",
           "figure_items", "kernel_size_rows", "load_eval_set", "plan_deformations", "plan_evaluation",
           "plan_kernel_size"]
