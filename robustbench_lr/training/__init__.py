"""Training: clean and adversarial (FGSM-RS, PGD-AT, TRADES), reproducible, resumable, under torchrun.

- `config`: `TrainConfig` (the recipe and the training threat model) and its validation;
- `loop`: `fit(cfg, out_dir)` -> a checkpoint directory (checkpoint.py);
- `adversarial`: the inner attacks, the TRADES loss, the eps warm-up and the per-epoch robust check;
- `batches`: iteration, per-example augmentation, subsets, held-out accuracy;
- `state`: the resumable `last.pt`.
"""

from .batches import apply_augment, augment_table, evaluate, iterate, subset
from .config import ADVERSARIAL, OPTIMIZERS, TrainConfig, normalized_identity
from .loop import fit, lr_at

__all__ = ["ADVERSARIAL", "OPTIMIZERS", "TrainConfig", "apply_augment", "augment_table", "evaluate", "fit", "iterate",
           "lr_at", "normalized_identity", "subset"]
