"""A model wrapper that counts forward passes and input-gradient evaluations, per example."""

from __future__ import annotations

from torch import Tensor, nn


class CountingModel(nn.Module):
    """Wraps a classifier; `forwards` and `grad_evals` count examples (a batch of B adds B).

    A gradient evaluation is one backward pass through the model's output for one example, which is what an
    attack step costs. torchattacks, official AutoAttack and adv-lib only see this wrapper, so every attack is
    counted the same way (APGD: 1 + n_iter per example and restart; untargeted FAB's Jacobian: one per class).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.grad_evals = 0
        self.training = False  # attacks save and restore this flag: they must never see (or set) train mode

    def train(self, mode: bool = True) -> CountingModel:
        """Keep the wrapped model as it is (eval): torchattacks "restores" the wrapper's mode after each attack,
        and a BatchNorm switched to train mode would use batch statistics and overwrite its running ones."""
        self.training = False
        return self

    def reset(self) -> tuple[int, int]:
        """Return (forwards, grad_evals) and set both to 0."""
        out = (self.forwards, self.grad_evals)
        self.forwards = self.grad_evals = 0
        return out

    def _count_grad(self, g: Tensor) -> None:
        self.grad_evals += g.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        self.forwards += x.shape[0]
        if out.requires_grad:
            out.register_hook(self._count_grad)
        return out
