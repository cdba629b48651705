"""Spatial operators and building blocks shared by the model zoo."""

from .factory import SPATIAL_OPS, create_spatial, register_spatial
from .local_relation import LocalRelation2d, implementations
from .normalize import InputNormalize

__all__ = ["LocalRelation2d", "InputNormalize", "SPATIAL_OPS", "create_spatial", "implementations",
           "register_spatial"]

from . import lr_cpu  # noqa: E402,F401  (registers the fused CPU kernel as impl="cpu")
from . import lr_triton  # noqa: E402,F401  (registers impl="triton" when CUDA + Triton are available)
