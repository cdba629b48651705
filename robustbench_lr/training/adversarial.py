"""Adversarial training: the inner attack of each method, the TRADES loss, the eps warm-up and the per-epoch
robust check.

Papers: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018 (PGD-AT);
Wong, Rice, Kolter, "Fast is better than free", ICLR 2020 (FGSM with a random start, step 1.25 eps);
Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019 (TRADES);
Rice, Wong, Kolter, "Overfitting in adversarially robust deep learning", ICML 2020 (keep the best epoch);
Pang et al., "Bag of Tricks for Adversarial Training", ICLR 2021 (craft with batch norm in eval mode).

Status: the inner attacks are the suite's StreamingPGD (fgsm-rs: 1 step of 1.25 eps from a uniform random start;
pgd: `attack_steps` steps of 2.5 eps / steps from a random start, no early stop) and torchattacks' TPGD for
TRADES (KL ascent from x + 0.001 N(0, 1), Linf). Examples are crafted with the model in eval mode, then the
step runs in train mode. In TRADES the clean and adversarial halves go through the network as one batch (one
forward per step, which DDP needs), so batch-norm statistics are taken over both halves; the reference code
runs two forwards.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import distributed as D
from ..attacks.pgd import StreamingPGD
from ..data import eval_permutation
from .config import TrainConfig


class InnerAttack:
    """Crafts the training examples of one adversarially trained run (cfg resolved)."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.warmup_steps = int(round(cfg.eps_warmup_epochs * steps_per_epoch))

    def eps_at(self, gstep: int) -> float:
        """eps of global step `gstep`: a linear ramp over the warm-up steps, then the full eps."""
        if self.warmup_steps <= 0:
            return float(self.cfg.eps)
        return float(self.cfg.eps) * min(1.0, (gstep + 1) / self.warmup_steps)

    def craft(self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, gstep: int) -> Tensor:
        """Adversarial examples (B, C, H, W) in [0, 1] for the batch, crafted in eval mode; restores the mode."""
        cfg, eps = self.cfg, self.eps_at(gstep)
        was_training = model.training
        model.eval()
        try:
            if cfg.adversarial == "trades":
                return _tpgd(model, x, eps, cfg.attack_steps, seed=_step_seed(cfg.seed, gstep))
            alpha = 1.25 * eps if cfg.adversarial == "fgsm-rs" else 2.5 * eps / cfg.attack_steps
            pgd = StreamingPGD(model, cfg.norm, eps, alpha, cfg.attack_steps, random_start=True, early_stop=False,
                               batch_size=len(x), seed=_step_seed(cfg.seed, gstep), amp=cfg.amp)
            return pgd(x, y, idx.cpu()).detach()
        finally:
            model.train(was_training)

    def loss(self, net: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, amp: bool,
             label_smoothing: float) -> tuple[Tensor, Tensor]:
        """(training loss, logits for the accuracy shown) of one step, in train mode."""
        dev = x.device.type
        if self.cfg.adversarial != "trades":
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                logits = net(x_adv)
            return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            both = net(torch.cat([x, x_adv])).float()
        nat, adv = both[: len(x)], both[len(x):]
        robust = F.kl_div(F.log_softmax(adv, 1), F.softmax(nat, 1), reduction="batchmean")
        return F.cross_entropy(nat, y, label_smoothing=label_smoothing) + self.cfg.trades_beta * robust, nat


def _step_seed(seed: int, gstep: int) -> int:
    return (int(seed) * 1_000_003 + int(gstep) * 7919 + 101) % (2**31 - 1)


def _tpgd(model: nn.Module, x: Tensor, eps: float, steps: int, seed: int) -> Tensor:
    import torchattacks as ta

    torch.manual_seed(seed)  # TPGD's random start draws from the global generator
    atk = ta.TPGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps)
    return atk(x, torch.zeros(len(x), dtype=torch.long, device=x.device)).detach()


def selection_indices(n_split: int, n: int) -> np.ndarray:
    """The held-out examples of the per-epoch robust check: the last n of the fixed evaluation permutation (so
    they are disjoint from the first examples every evaluation uses while --n + n <= n_split)."""
    perm = eval_permutation(n_split)
    return perm[max(0, n_split - n):]


def robust_check(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, batch_size: int,
                 ctx: D.DistContext) -> tuple[int, int, int]:
    """(clean correct, robust correct, total) of PGD-`robust_eval_steps` at the full eps (fp32, eval mode), on
    this rank's share of the selection examples, summed over ranks."""
    was_training = model.training
    model.eval()
    dev = ctx.device
    mine = torch.arange(ctx.rank, len(x), ctx.world_size)
    xs, ys = x[mine], y[mine]
    eps, steps = float(cfg.eps), int(cfg.robust_eval_steps)
    pgd = StreamingPGD(model, cfg.norm, eps, 2.5 * eps / steps, steps, random_start=True, early_stop=True,
                       batch_size=batch_size, seed=cfg.seed + 12345)
    clean = rob = 0
    for s in range(0, len(xs), batch_size):
        xb, yb = xs[s: s + batch_size].to(dev), ys[s: s + batch_size].to(dev)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        adv = pgd(xb, yb, mine[s: s + batch_size])
        with torch.no_grad():
            ok_adv = ok & (model(adv).argmax(1) == yb)
        clean, rob = clean + int(ok.sum()), rob + int(ok_adv.sum())
    t = torch.tensor([clean, rob, len(xs)], dtype=torch.float64, device=dev)
    D.all_reduce_sum(t, ctx)
    model.train(was_training)
    return int(t[0]), int(t[1]), int(t[2])


def better(acc: float, best: dict[str, Any] | None) -> bool:
    """True when `acc` beats the best robust accuracy so far (strictly: ties keep the earlier epoch)."""
    return best is None or (not math.isnan(acc) and acc > float(best["robust_accuracy"]))


__all__ = ["InnerAttack", "better", "robust_check", "selection_indices"]
