"""The training configuration: the recipe, and the threat model a model is trained against.

Adversarial training methods (`adversarial`):

| method   | paper                                   | inner attack (crafted with the model in eval mode)                 |
|----------|-----------------------------------------|--------------------------------------------------------------------|
| none     | clean training (the default)            | -                                                                  |
| fgsm-rs  | Wong, Rice, Kolter, ICLR 2020 (fast AT) | uniform random start in the eps-ball, one signed step of 1.25 eps  |
| pgd      | Madry et al., ICLR 2018 (PGD-AT)        | PGD, `attack_steps` steps (default 7) of 2.5 eps / steps, random start |
| trades   | Zhang et al., ICML 2019                 | torchattacks' TPGD: KL(f(x) || f(x')) ascent, same steps; loss CE(f(x), y) + beta KL |

The inner attack is the suite's `StreamingPGD` (fgsm-rs, pgd) or torchattacks' `TPGD` (trades, Linf only): no
third PGD. eps ramps linearly from 0 to `eps` over the first `eps_warmup_epochs` epochs (default 2; MNIST at
0.3 does not train from the start without it). After every epoch the model's robust accuracy is measured with
PGD-`robust_eval_steps` (default 10) at the full eps on the `robust_eval_n` (default 500) *last* examples of the
fixed evaluation permutation of the test split, disjoint from the first examples every evaluation uses as
long as `--n` + robust_eval_n <= the split size (the evaluation says so otherwise). The best epoch by that
robust accuracy is kept next to the last one (robust overfitting, Rice et al. 2020).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..attacks.threat import check_norm, default_eps, max_eps
from ..data import DATASETS
from ..errors import UserError, check_choice, check_positive_int
from ..models import model_info

OPTIMIZERS = ("sgd", "adamw")
ADVERSARIAL = ("none", "fgsm-rs", "pgd", "trades")
DEFAULT_ATTACK_STEPS = {"fgsm-rs": 1, "pgd": 7, "trades": 7}
# settings that only matter for adversarial training (left out of a clean run's identity)
ADV_FIELDS = ("eps", "norm", "attack_steps", "trades_beta", "eps_warmup_epochs", "robust_eval_n", "robust_eval_steps")


@dataclass
class TrainConfig:
    """A training run. Learning rate and weight decay default per optimizer (AdamW 3e-3 / 0.05, SGD 0.1 / 5e-4).

    The default recipe (AdamW, batch 64) is the one both tiny families train stably with on mnist5k: with SGD at
    lr 0.1 the LR-Nets' squared-difference logits occasionally diverge.

    Attributes:
        model: registry name.
        dataset: 'mnist5k' | 'cifar10' | 'imagefolder'.
        epochs: number of epochs (>= 1).
        batch_size: global batch size (split evenly over torchrun processes).
        lr: peak learning rate after warm-up.
        optimizer: 'adamw' (default) or 'sgd' (Nesterov momentum 0.9).
        weight_decay: decoupled for AdamW, L2 for SGD; not applied to BN and biases.
        warmup_epochs: linear learning-rate warm-up length (may be fractional).
        grad_clip: clip the global gradient norm to this value (None: off).
        train_limit: train on this many examples of the train split (a subset fixed by split_seed; quick runs).
        augment: random translation (MNIST: +-2 px; CIFAR: 4-px pad-and-crop and flips; folders: flips).
        seed: seed of initialisation, shuffling, augmentation and the inner attack's random starts.
        kernel_size: k of the model's spatial operators (None: the model's default).
        model_kwargs: further create_model arguments (e.g. channel_sharing, width).
        adversarial: 'none' | 'fgsm-rs' | 'pgd' | 'trades' (module docstring).
        eps: training budget in `norm` on [0, 1] pixels (None: the dataset's standard budget, e.g. 0.3 on MNIST).
        norm: 'linf' | 'l2'.
        attack_steps: inner attack steps (None: 1 for fgsm-rs, 7 for pgd and trades).
        trades_beta: TRADES' robustness weight (default 6).
        eps_warmup_epochs: epochs over which eps ramps linearly from 0 (0: full eps from the first step).
        robust_eval_n, robust_eval_steps: the per-epoch robust check (held-out examples, PGD steps).
        data_root, download, split_seed: dataset location and options.
        amp: bf16 autocast on CUDA (ignored on CPU), for the training step and the inner attack's forward/backward
            (the loss, the attack's step arithmetic and the per-epoch robust check stay fp32).
        device: 'auto' | 'cpu' | 'cuda'.
        num_workers: DataLoader workers for folder datasets.
    """

    model: str
    dataset: str = "mnist5k"
    epochs: int = 15
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    train_limit: int | None = None
    augment: bool = True
    seed: int = 0
    kernel_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    adversarial: str = "none"
    eps: float | None = None
    norm: str = "linf"
    attack_steps: int | None = None
    trades_beta: float = 6.0
    eps_warmup_epochs: float = 2.0
    robust_eval_n: int = 500
    robust_eval_steps: int = 10
    data_root: str | None = None
    download: bool = False
    split_seed: int = 0
    amp: bool = False
    device: str = "auto"
    num_workers: int = 0

    @property
    def is_adversarial(self) -> bool:
        return self.adversarial != "none"

    def resolved(self) -> TrainConfig:
        """A copy with optimizer- and threat-dependent defaults filled in."""
        lr = self.lr if self.lr is not None else (0.1 if self.optimizer == "sgd" else 3e-3)
        wd = self.weight_decay if self.weight_decay is not None else (5e-4 if self.optimizer == "sgd" else 0.05)
        out = dataclasses.replace(self, lr=lr, weight_decay=wd, norm=check_norm(self.norm))
        if self.is_adversarial:
            eps = self.eps if self.eps is not None else default_eps(self.dataset, out.norm, "standard")[0]
            steps = self.attack_steps if self.attack_steps is not None else DEFAULT_ATTACK_STEPS[self.adversarial]
            out = dataclasses.replace(out, eps=float(eps), attack_steps=int(steps))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (a resumed run must match them)."""
        d = self.resolved().to_dict()
        for k in ("device", "num_workers", "data_root", "download"):
            d.pop(k)
        if not self.is_adversarial:  # clean runs keep the identity they had before adversarial training existed
            for k in ("adversarial", *ADV_FIELDS):
                d.pop(k)
        return normalized_identity(d)

    def adversarial_meta(self) -> dict[str, Any]:
        """The training threat model as model.json records it (method 'none' for clean training)."""
        r = self.resolved()
        if not r.is_adversarial:
            return {"method": "none"}
        return {"method": r.adversarial, "norm": r.norm, "eps": r.eps, "attack_steps": r.attack_steps,
                "step_size": (1.25 * r.eps if r.adversarial == "fgsm-rs" else 2.5 * r.eps / r.attack_steps),
                "random_start": True, "trades_beta": r.trades_beta if r.adversarial == "trades" else None,
                "eps_warmup_epochs": r.eps_warmup_epochs, "crafted_in": "eval mode (batch norm frozen)",
                "inner_attack": "torchattacks TPGD (KL)" if r.adversarial == "trades" else "robustbench-lr StreamingPGD",
                "robust_eval": {"attack": f"PGD-{r.robust_eval_steps}", "n": r.robust_eval_n,
                                "examples": "last n of the fixed evaluation permutation of the test split"}}

    def validate(self) -> None:
        """Raise UserError for any bad setting (before anything is created)."""
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("--adversarial", self.adversarial, ADVERSARIAL)
        info = model_info(self.model)  # unknown names raise with suggestions
        check_positive_int("--epochs", self.epochs)
        check_positive_int("--batch-size", self.batch_size)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number; got {self.lr!r}.")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UserError(f"--weight-decay must be >= 0; got {self.weight_decay!r}.")
        if self.warmup_epochs < 0:
            raise UserError(f"--warmup-epochs must be >= 0; got {self.warmup_epochs!r}.")
        if self.train_limit is not None:
            check_positive_int("--train-limit", self.train_limit)
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"--grad-clip must be > 0; got {self.grad_clip!r}.")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"--label-smoothing must be in [0, 1); got {self.label_smoothing!r}.")
        if self.is_adversarial:
            self._validate_adversarial(info.input_size)

    def _validate_adversarial(self, input_size: tuple[int, ...]) -> None:
        norm = check_norm(self.norm)
        if self.eps is not None:
            if not (math.isfinite(self.eps) and self.eps > 0):
                raise UserError(f"--adversarial {self.adversarial} needs --eps > 0; got {self.eps!r}.")
            top = max_eps(norm, input_size)
            if self.eps > top:
                raise UserError(f"--eps {self.eps:g} is larger than the largest possible {norm} perturbation of "
                                f"[0, 1] images ({top:g}).")
        if self.attack_steps is not None:
            check_positive_int("--attack-steps", self.attack_steps)
        if self.adversarial == "trades":
            if not (math.isfinite(self.trades_beta) and self.trades_beta >= 0):
                raise UserError(f"--trades-beta must be >= 0; got {self.trades_beta!r}.")
            if norm != "linf":
                raise UserError("--adversarial trades supports --norm linf only (its inner attack, torchattacks' "
                                "TPGD, is Linf).")
        if self.eps_warmup_epochs < 0:
            raise UserError(f"--eps-warmup-epochs must be >= 0; got {self.eps_warmup_epochs!r}.")
        check_positive_int("--robust-eval-n", self.robust_eval_n)
        check_positive_int("--robust-eval-steps", self.robust_eval_steps)


def normalized_identity(identity: dict[str, Any] | None) -> dict[str, Any]:
    """`identity` with an unset kernel size replaced by the model's default, so that `--kernel-size 7` and no
    option on a k=7 model are the same run (stored identities of older runs compare the same way)."""
    d = dict(identity or {})
    if d.get("kernel_size") is None and d.get("model"):
        d["kernel_size"] = model_info(d["model"]).kernel_size
    if d.get("adversarial") == "none":
        for k in ("adversarial", *ADV_FIELDS):
            d.pop(k, None)
    return d
