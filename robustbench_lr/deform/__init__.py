"""Geometric deformations: differentiable batched warps, random severity sweeps and adversarial spatial attacks.

- `transforms`: rotate, translate, scale, affine, flow_warp, elastic (grid_sample based) and the registry
  `DEFORMATIONS` of random deformations with one named strength each;
- `spatial`: worst-of-k, grid, flow (stAdv-style PGD) and affine-PGD attacks;
- `bounds`: their bounds and the checks every result must pass.
The sweeps over strengths live in `runners.deform_sweep`.
"""

from .bounds import (SpatialBounds, SpatialBoundViolation, check_bounds, check_max_flow, check_max_rotation,
                     check_spatial, engstrom_bounds, flow_bounds, render)
from .photometric import offset
from .spatial import ATTACKS, STRENGTH, SpatialResult, affine_pgd, flow, grid, grid_transforms, worst_of_k
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
    "ATTACKS", "CIFAR10C_ELASTIC", "DEFORMATIONS", "FILLS", "STRENGTH", "Deformation", "SpatialBoundViolation",
    "SpatialBounds", "SpatialResult", "affine", "affine_pgd", "check_bounds", "check_max_flow", "check_max_rotation",
    "check_spatial", "cifar10c_elastic_params", "elastic", "engstrom_bounds", "flow", "flow_bounds", "flow_warp",
    "get_deformation", "grid", "grid_transforms", "offset", "render", "rotate", "scale", "translate", "worst_of_k",
]
