"""robustbench-lr: adversarial and geometric robustness of Local Relation Networks and their baselines.

Public API: `create_model`, `list_models`, `model_info`.
"""

__version__ = "0.1.0"

from .models import create_model, list_models, model_info  # noqa: E402

__all__ = ["create_model", "list_models", "model_info", "__version__"]
