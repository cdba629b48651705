"""Model zoo: importing this package registers every model."""

from . import zoo  # noqa: F401  (registers the models)
from . import context_zoo  # noqa: F401
from ._registry import ModelInfo, create_model, list_models, model_info, register_model
from .resnet import Bottleneck, ResNet, ResNetSpec

__all__ = ["ModelInfo", "ResNet", "ResNetSpec", "Bottleneck", "create_model", "list_models", "model_info",
           "register_model"]
