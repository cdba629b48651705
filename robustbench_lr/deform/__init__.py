"""Geometric deformations: differentiable batched warps, random severity sweeps and adversarial spatial attacks.

- `transforms`: rotate, translate, scale, affine, flow_warp, elastic (grid_sample based) and the registry
  `DEFORMATIONS` of random deformations with one named strength each;
- `spatial`: worst-of-k, grid, flow (stAdv-style PGD) and affine-PGD attacks with bound checks;
- `runners`: `random_sweep` and `adversarial_sweep`, returning tidy rows (results.py schema, family "deform").
"""

from .runners import adversarial_sweep, method_options, random_sweep
from .spatial import (
    ATTACKS,
    SpatialBounds,
    SpatialBoundViolation,
    SpatialResult,
    affine_pgd,
    check_bounds,
    check_spatial,
    engstrom_bounds,
    flow,
    flow_bounds,
    grid,
    grid_transforms,
    render,
    worst_of_k,
)
from .transforms import (
    CIFAR10C_ELASTIC,
    DEFORMATIONS,
    FILLS,
    Deformation,
    affine,
    cifar10c_elastic_params,
    elastic,
    flow_warp,
    get_deformation,
    rotate,
    scale,
    translate,
)

__all__ = [
    "ATTACKS", "CIFAR10C_ELASTIC", "DEFORMATIONS", "FILLS", "Deformation", "SpatialBoundViolation", "SpatialBounds",
    "SpatialResult", "adversarial_sweep", "affine", "affine_pgd", "check_bounds", "check_spatial",
    "cifar10c_elastic_params", "elastic", "engstrom_bounds", "flow", "flow_bounds", "flow_warp", "get_deformation",
    "grid", "grid_transforms", "method_options", "random_sweep", "render", "rotate", "scale", "translate",
    "worst_of_k",
]
