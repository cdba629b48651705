"""Attention drift: how far an attack moves the aggregation weights of every LR layer.

`attention_drift` compares, per LR layer, the softmax weights on clean and adversarial images with the
Jensen-Shannon divergence over the k*k window, and averages it over output pixels, groups and examples.

    JS(P, Q) = 1/2 KL(P || M) + 1/2 KL(Q || M),  M = (P + Q) / 2,   natural log: nats, 0 <= JS <= ln 2.

Status: working; checked against a hand computation by the tests. Terms with p = 0 count as 0 (0 log 0 = 0,
`torch.xlogy`), which is exact for the cells that border='mask' sets to exactly 0 (they are 0 in P and Q
alike, since the mask depends on position only). Accumulation is in float64.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError
from .layers import all_aggregation_weights, as_batch, lr_layers, no_lr_layers_error

DRIFT_KEYS = ("model", "family", "perturbation", "param_name", "param_value", "layer", "js_mean", "js_std",
              "n_examples", "n_pixels", "n_groups")


def js_divergence(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Jensen-Shannon divergence in nats (natural log; divide by ln 2 for bits) between distributions along
    `dim`; zeros are handled as 0 log 0 = 0. Computed in float64, returned as float64, clamped at 0."""
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)


class _Moments:
    """Count, mean and M2 of a stream of values (Chan et al.'s pairwise update), in float64."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, v: Tensor) -> None:
        v = v.double().reshape(-1)
        nb = v.numel()
        if nb == 0:
            return
        mb = float(v.mean())
        m2b = float(((v - mb) ** 2).sum())
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n

    @property
    def std(self) -> float:
        return math.sqrt(max(self.m2, 0.0) / self.n) if self.n else math.nan


def attention_drift(model: nn.Module, x_clean: Tensor, x_adv: Tensor, *, attack: str, eps: float, label: str,
                    batch_size: int = 64) -> list[dict[str, Any]]:
    """Per LR layer, the Jensen-Shannon divergence (nats) between the aggregation weights on `x_clean` and on
    `x_adv` (both (N, C, H, W) in [0, 1]; x_adv[i] is the attacked x_clean[i]).

    js_mean and js_std are the mean and the population standard deviation over all (example, group, output
    pixel) triples; n_examples = N, n_pixels = Ho * Wo of the layer, n_groups = G (so each layer averages
    N * G * Ho * Wo values). Rows (in `lr_layers` order) have the keys `DRIFT_KEYS`:
    {model: label, family: 'drift', perturbation: attack, param_name: 'eps', param_value: eps, layer,
    js_mean, js_std, n_examples, n_pixels, n_groups}. A model without LR layers raises `UserError`.
    """
    layers = lr_layers(model)
    if not layers:
        raise no_lr_layers_error(model, "attention weights to compare")
    xc, xa = as_batch(x_clean, model, "x_clean"), as_batch(x_adv, model, "x_adv")
    if xc.shape != xa.shape:
        raise UserError(f"x_clean and x_adv must have the same shape; got {tuple(xc.shape)} and {tuple(xa.shape)}.")
    if xc.shape[0] == 0:
        raise UserError("attention_drift needs at least one example.")
    stats = {n: _Moments() for n in layers}
    dims: dict[str, tuple[int, int]] = {}
    for s in range(0, xc.shape[0], batch_size):
        wc = all_aggregation_weights(model, xc[s: s + batch_size])
        wa = all_aggregation_weights(model, xa[s: s + batch_size])
        for n in layers:
            js = js_divergence(wc[n], wa[n], dim=2)  # (B, G, Ho, Wo)
            stats[n].add(js)
            dims[n] = (js.shape[1], js.shape[2] * js.shape[3])
    return [{"model": label, "family": "drift", "perturbation": attack, "param_name": "eps",
             "param_value": float(eps), "layer": n, "js_mean": stats[n].mean, "js_std": stats[n].std,
             "n_examples": int(xc.shape[0]), "n_pixels": dims[n][1], "n_groups": dims[n][0]} for n in layers]


__all__ = ["DRIFT_KEYS", "attention_drift", "js_divergence"]
