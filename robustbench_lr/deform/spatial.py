"""Adversarial spatial attacks on a batch: worst-of-k, the exhaustive grid, stAdv-style flow PGD, affine PGD.

Every attack takes a classifier on [0, 1] pixels (in eval mode, e.g. after `attacks.prepare_for_attack`),
images x (N, C, H, W) in [0, 1] and labels y (N,) on the model's device, and returns a `SpatialResult`: the
deformed images, the transform parameters that produced them (per example), the bounds, the attack's own
"fooled" record (runners never trust it: they re-check with a separate forward), and the forward passes and
input-gradient evaluations it spent (counted per example with `attacks.counting.CountingModel`). A result
unpacks as `x_adv, params = worst_of_k(...)`.

Parameters and bounds (pixel units, conventions of `transforms.affine`):
- affine attacks (worst-of-k, grid, affine-pgd) return params {"rotation" (deg), "tx", "ty" (px), "scale"},
  each (N,), and satisfy |rotation| <= max_rotation, |tx|, |ty| <= max_translation, |scale - 1| <= scale_bound;
- flow returns {"flow": (N, 2, H, W)} in pixels with |flow| <= max_flow for every component (Linf).
`check_spatial` verifies this (in float64, tolerance 1e-5 degrees / pixels), that the images are finite and
in [0, 1], and that re-rendering the parameters gives the returned images; any violation raises
`SpatialBoundViolation`. Nothing is ever clipped into the bounds after the fact (PGD's projection of its own
iterate is part of the algorithm and is what the check then verifies).

One named strength per attack (the sweep variable of `runners.adversarial_sweep`):
- worst-of-k, grid and affine-pgd: `max_rotation` in degrees; the translation bound is tied to it at
  Engstrom et al.'s ratio, max_translation = translation_per_degree * max_rotation (default 0.1 px per
  degree: 30 deg <-> 3 px); the scale bound `scale_bound` is a separate setting (default 0 = no scaling for
  worst-of-k and grid, 0.1 = +-10 % for affine-pgd);
- flow: `max_flow` in pixels (Linf bound of the per-pixel flow).

Methods (Engstrom et al. 2019, "Exploring the Landscape of Spatial Robustness"; Xiao et al. 2018, stAdv):
- `worst_of_k`: k random transforms per example, uniform in the box (rotation in [-R, R], tx and ty in
  [-T, T], scale in [1 - S, 1 + S]); keeps the first one that fools, else the one with the highest
  cross-entropy. Engstrom defaults R = 30, T = 3, k = 10. All k draws are made up front, so the transforms
  tried do not depend on the model.
- `grid`: the exhaustive grid, default 5 x 5 x 31 (x shifts, y shifts, rotations; linspace over each bound,
  = 775 transforms) and 5 scales when scale_bound > 0. Evaluated in chunks of `chunk_size` (example,
  transform) pairs per forward, transform-major over the examples still unfooled: a chunk holds the next
  max(1, chunk_size // active) transforms for every active example, and an example fooled in one chunk is
  dropped from the next (early stop). With order="likely-first" (default) the transforms are sorted by
  decreasing normalised magnitude |r| / R + |tx| / T + |ty| / T (+ |s - 1| / S), so the extreme transforms,
  which fool most often, come first. Fooled-or-not does not depend on the order (the search is exhaustive
  for every survivor); only which fooling transform is reported does. Unfooled examples report their
  highest-loss transform.
- `flow`: PGD on a per-pixel flow field (stAdv's parameterisation, out(p) = x(p + f(p))), Linf-bounded by
  max_flow: sign-gradient ascent on the margin loss max_{j != y} z_j - z_y minus tau * L_flow (stAdv's
  smoothness loss: the sum over pixels and their 4 neighbours of sqrt(||f(p) - f(q)||^2 + 1e-8), each pair
  counted from both sides), then projection (clamp) onto [-max_flow, max_flow]. Examples stop at their first
  fooling iterate.
- `affine_pgd`: PGD on (rotation, tx, ty, scale) directly, i.e. parameterised by rotation, translation and
  scale rather than the 6 matrix entries, so the projection is an exact box clamp of each parameter onto its
  bound; sign-gradient steps of step_size x bound per parameter (default 2.5 / steps), cross-entropy loss,
  random start in the box, optional restarts, first fooling iterate kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks.counting import CountingModel
from ..errors import UserError, check_choice, check_positive_int
from .bounds import SpatialBounds, _number, engstrom_bounds, flow_bounds
from .transforms import affine, check_fill, flow_warp

ENGSTROM_GRID = (5, 5, 31)
ORDERS = ("likely-first", "natural")
LOSSES = ("ce", "margin")


# ---------------------------------------------------------------------------------------------- results
@dataclass
class SpatialResult:
    """images (N, C, H, W), params (see module docstring), the bounds searched, the attack's own fooled flag
    (N,) bool, its per-example loss of the returned images, and its forward / gradient-evaluation counts."""

    images: Tensor
    params: dict[str, Tensor]
    bounds: SpatialBounds
    fooled: Tensor
    loss: Tensor
    forward_evals: int
    grad_evals: int
    transforms_total: int = 0  # grid: transforms x examples an exhaustive search without early stop costs

    def __iter__(self):
        return iter((self.images, self.params))


def _counting(model: nn.Module) -> CountingModel:
    if model.training:
        raise UserError("spatial attacks need the model in eval mode (use attacks.prepare_for_attack).")
    return CountingModel(model)


def _check_batch(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise UserError("x must be a floating-point (N, C, H, W) tensor of [0, 1] pixels.")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
        raise UserError(f"y must be a tensor of {x.shape[0]} labels; got {getattr(y, 'shape', y)!r}.")


def _loss(logits: Tensor, y: Tensor, kind: str) -> Tensor:
    """Per-example attack objective to maximise: cross-entropy or the margin max_{j != y} z_j - z_y."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - true


def _uniform(gen: torch.Generator, shape: tuple[int, ...], bound: float) -> Tensor:
    return (torch.rand(shape, generator=gen, device="cpu") * 2.0 - 1.0) * bound


def _params(p: Tensor) -> dict[str, Tensor]:
    return {"rotation": p[:, 0].contiguous(), "tx": p[:, 1].contiguous(), "ty": p[:, 2].contiguous(),
            "scale": p[:, 3].contiguous()}


def _render_p(x: Tensor, p: Tensor, fill: str) -> Tensor:
    return affine(x, p[:, 0], p[:, 1], p[:, 2], p[:, 3], fill=fill)


def _empty_result(x: Tensor, bounds: SpatialBounds) -> SpatialResult:
    n = x.shape[0]
    params = ({"flow": x.new_zeros(n, 2, *x.shape[2:])} if bounds.kind == "flow"
              else _params(x.new_zeros(n, 4) + x.new_tensor([0.0, 0.0, 0.0, 1.0])))
    return SpatialResult(x.clone(), params, bounds, torch.zeros(n, dtype=torch.bool, device=x.device),
                         x.new_zeros(n), 0, 0)


# ---------------------------------------------------------------------------------------------- worst-of-k
def worst_of_k(model: nn.Module, x: Tensor, y: Tensor, *, max_rotation: float = 30.0,
               translation_per_degree: float = 0.1, scale_bound: float = 0.0, k: int = 10, seed: int = 0,
               fill: str = "zeros") -> SpatialResult:
    """Engstrom et al.'s worst-of-k random search in the rotation x translation (x scale) box."""
    _check_batch(x, y)
    bounds = engstrom_bounds(max_rotation, translation_per_degree, scale_bound)
    check_positive_int("k", k)
    check_fill(fill)
    cm = _counting(model)
    n = x.shape[0]
    if n == 0:
        return _empty_result(x, bounds)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    lim = torch.tensor([bounds.max_rotation, bounds.max_translation, bounds.max_translation, bounds.scale_bound])
    trials = (torch.rand((k, n, 4), generator=gen, device="cpu") * 2.0 - 1.0) * lim
    trials[..., 3] += 1.0
    trials = trials.to(device=x.device, dtype=x.dtype)
    best = trials[0].clone()
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for j in range(k):
            act = torch.nonzero(~fooled).squeeze(1)
            if act.numel() == 0:
                break
            p = trials[j, act]
            logits = cm(_render_p(x[act], p, fill))
            loss = _loss(logits, y[act], "ce")
            wrong = logits.argmax(1) != y[act]
            take = wrong | (loss > best_loss[act])
            best[act[take]] = p[take]
            best_loss[act[take]] = loss[take]
            fooled[act[wrong]] = True
        images = _render_p(x, best, fill)
    return SpatialResult(images, _params(best), bounds, fooled, best_loss, cm.forwards, cm.grad_evals)


# ---------------------------------------------------------------------------------------------- grid
def _axis(count: int, bound: float, centre: float = 0.0) -> Tensor:
    if count == 1 or bound == 0:
        return torch.full((1 if bound == 0 else count,), centre, dtype=torch.float64)
    return torch.linspace(centre - bound, centre + bound, count, dtype=torch.float64)


def grid_transforms(bounds: SpatialBounds, shape: tuple[int, ...] = ENGSTROM_GRID,
                    order: str = "likely-first") -> Tensor:
    """(G, 4) float64 grid (rotation, tx, ty, scale) of `shape` = (nx, ny, nrot[, nscale]) in search order.

    Each axis is linspace(-bound, bound, count) (a single point, the identity, if its bound is 0 or count 1,
    so a zero bound does not repeat the same transform). Scales default to 5 points when scale_bound > 0."""
    check_choice("order", order, ORDERS)
    if not isinstance(shape, (tuple, list)) or len(shape) not in (3, 4):
        raise UserError(f"grid shape must be (n_x, n_y, n_rotations[, n_scales]); got {shape!r}.")
    for i, c in enumerate(shape):
        check_positive_int(f"grid shape[{i}]", c)
    nx, ny, nr = shape[:3]
    ns = shape[3] if len(shape) == 4 else (5 if bounds.scale_bound > 0 else 1)
    t = bounds.max_translation
    xs, ys, rs = _axis(nx, t), _axis(ny, t), _axis(nr, bounds.max_rotation)
    ss = _axis(ns, bounds.scale_bound, 1.0)
    r, tx, ty, s = torch.meshgrid(rs, xs, ys, ss, indexing="ij")
    g = torch.stack([r.flatten(), tx.flatten(), ty.flatten(), s.flatten()], 1)
    if order == "likely-first":
        score = torch.zeros(len(g), dtype=torch.float64)
        for col, b, c in ((0, bounds.max_rotation, 0.0), (1, t, 0.0), (2, t, 0.0), (3, bounds.scale_bound, 1.0)):
            if b > 0:
                score += (g[:, col] - c).abs() / b
        g = g[torch.sort(-score, stable=True).indices]
    return g


def grid(model: nn.Module, x: Tensor, y: Tensor, *, max_rotation: float = 30.0, translation_per_degree: float = 0.1,
         scale_bound: float = 0.0, shape: tuple[int, ...] = ENGSTROM_GRID, chunk_size: int = 1024,
         order: str = "likely-first", fill: str = "zeros", seed: int = 0) -> SpatialResult:
    """Exhaustive grid search with early stop (see the module docstring); `seed` is unused (deterministic)."""
    _check_batch(x, y)
    bounds = engstrom_bounds(max_rotation, translation_per_degree, scale_bound)
    check_positive_int("chunk_size", chunk_size)
    check_fill(fill)
    trs = grid_transforms(bounds, tuple(shape), order).to(device=x.device, dtype=x.dtype)
    cm = _counting(model)
    n, n_tr = x.shape[0], trs.shape[0]
    if n == 0:
        return _empty_result(x, bounds)
    chosen = torch.zeros(n, dtype=torch.long, device=x.device)
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    act = torch.arange(n, device=x.device)
    ptr = 0
    with torch.no_grad():
        while ptr < n_tr and act.numel():
            a = act.numel()
            tids = torch.arange(ptr, min(n_tr, ptr + max(1, chunk_size // a)), device=x.device)
            nt = tids.numel()
            ex_all, tr_all = act.repeat(nt), tids.repeat_interleave(a)
            wrong = torch.empty(nt * a, dtype=torch.bool, device=x.device)
            loss = torch.empty(nt * a, dtype=x.dtype, device=x.device)
            for s in range(0, nt * a, chunk_size):
                e, t = ex_all[s: s + chunk_size], tr_all[s: s + chunk_size]
                logits = cm(_render_p(x[e], trs[t], fill))
                wrong[s: s + len(e)] = logits.argmax(1) != y[e]
                loss[s: s + len(e)] = _loss(logits, y[e], "ce")
            wrong, loss = wrong.view(nt, a), loss.view(nt, a)
            hit = wrong.any(0)
            first = wrong.to(torch.uint8).argmax(0)  # first fooling transform in search order
            lmax, larg = loss.max(0)
            upd = ~hit & (lmax > best_loss[act])
            chosen[act[hit]] = tids[first[hit]]
            best_loss[act[hit]] = loss[first[hit], torch.nonzero(hit).squeeze(1)]
            chosen[act[upd]] = tids[larg[upd]]
            best_loss[act[upd]] = lmax[upd]
            fooled[act[hit]] = True
            act = act[~hit]
            ptr += nt
        best = trs[chosen]
        images = _render_p(x, best, fill)
    return SpatialResult(images, _params(best), bounds, fooled, best_loss, cm.forwards, cm.grad_evals,
                         transforms_total=n * n_tr)


# ---------------------------------------------------------------------------------------------- flow
def flow_smoothness(flow: Tensor) -> Tensor:
    """stAdv's L_flow per example: sum over pixels p and 4-neighbours q of sqrt(||f(p) - f(q)||^2 + 1e-8)
    (symmetric padding: a border pixel's missing neighbour is itself), i.e. twice the sum over neighbour pairs
    plus a constant."""
    dh = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    dv = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    eps = 1e-8
    n, _, h, w = flow.shape
    pairs = torch.sqrt((dh ** 2).sum(1) + eps).flatten(1).sum(1) + torch.sqrt((dv ** 2).sum(1) + eps).flatten(1).sum(1)
    border = (2 * h + 2 * w) * math.sqrt(eps)  # the padded self-neighbours
    return 2.0 * pairs + border


def _pgd_common(steps: int, step_size: float | None, restarts: int) -> tuple[int, float, int]:
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    frac = 2.5 / steps if step_size is None else _number("step_size (fraction of the bound)", step_size, 0.0)
    if frac <= 0:
        raise UserError("step_size must be > 0.")
    return steps, frac, restarts


def _sign_pgd(cm: nn.Module, x: Tensor, y: Tensor, best: Tensor, init: Callable[[int, int], Tensor],
              warp: Callable[[Tensor, Tensor], Tensor], objective: Callable[[Tensor, Tensor, Tensor], Tensor], *,
              step: Tensor | float, lo: Tensor, hi: Tensor, steps: int, restarts: int
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Signed-gradient ascent on per-example deformation parameters, shared by `flow` and `affine_pgd`.

    best: (N, ...) parameters to return for examples never improved (the identity deformation).
    init(count, restart) gives the start for the still-unfooled examples; warp(x, p) renders; objective
    (logits, y, p) -> (count,) is maximised. Parameters are projected onto [lo, hi] after every step. An
    example stops being attacked as soon as it is misclassified (its fooling parameters are kept), and every
    iterate, the last included, is scored, so the returned parameters are the best seen.
    Returns (best params, best objective (N,), fooled (N,) bool).
    """
    n = x.shape[0]
    best_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    for r in range(restarts):
        act = torch.nonzero(~fooled).squeeze(1)
        if act.numel() == 0:
            break
        p = init(act.numel(), r)
        for t in range(steps + 1):
            last = t == steps
            p = p.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = cm(warp(x[act], p))
                obj = objective(logits, y[act], p)
                wrong = (logits.argmax(1) != y[act]).detach()
                better = wrong | (obj.detach() > best_loss[act])
                best[act[better]] = p.detach()[better]
                best_loss[act[better]] = obj.detach()[better]
                fooled[act[wrong]] = True
                if last:
                    break
                (g,) = torch.autograd.grad(obj.sum(), p)
            keep = ~wrong
            p = torch.maximum(torch.minimum(p.detach() + step * g.sign(), hi), lo)[keep]
            act = act[keep]
            if act.numel() == 0:
                break
    return best, best_loss, fooled


def flow(model: nn.Module, x: Tensor, y: Tensor, *, max_flow: float = 1.0, steps: int = 20,
         step_size: float | None = None, tau: float = 0.0, random_start: bool = False, restarts: int = 1,
         loss: str = "margin", seed: int = 0, fill: str = "zeros") -> SpatialResult:
    """stAdv-style flow attack by PGD (see the module docstring). step_size is a fraction of max_flow per
    step (default 2.5 / steps); random_start draws the initial flow uniformly in the box, else it is 0."""
    _check_batch(x, y)
    bounds = flow_bounds(max_flow)
    steps, frac, restarts = _pgd_common(steps, step_size, restarts)
    tau = _number("tau", tau, 0.0)
    check_choice("loss", loss, LOSSES)
    check_fill(fill)
    cm = _counting(model)
    n, _, h, w = x.shape
    if n == 0:
        return _empty_result(x, bounds)
    b = bounds.max_flow
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def init(count: int, r: int) -> Tensor:  # (count, 2, H, W) initial flow
        if random_start or r > 0:
            return _uniform(gen, (count, 2, h, w), b).to(device=x.device, dtype=x.dtype)
        return x.new_zeros(count, 2, h, w)

    def objective(logits: Tensor, yy: Tensor, f: Tensor) -> Tensor:
        obj = _loss(logits, yy, loss)
        return obj - tau * flow_smoothness(f) if tau > 0 else obj

    lo, hi = x.new_full((2, 1, 1), -b), x.new_full((2, 1, 1), b)
    best, best_loss, fooled = _sign_pgd(
        cm, x, y, x.new_zeros(n, 2, h, w), init, lambda xx, f: flow_warp(xx, f, fill=fill), objective,
        step=frac * b, lo=lo, hi=hi, steps=steps, restarts=restarts)
    with torch.no_grad():
        images = flow_warp(x, best, fill=fill)
    return SpatialResult(images, {"flow": best}, bounds, fooled, best_loss, cm.forwards, cm.grad_evals)


# ---------------------------------------------------------------------------------------------- affine PGD
def affine_pgd(model: nn.Module, x: Tensor, y: Tensor, *, max_rotation: float = 30.0,
               translation_per_degree: float = 0.1, scale_bound: float = 0.1, steps: int = 20,
               step_size: float | None = None, random_start: bool = True, restarts: int = 1, loss: str = "ce",
               seed: int = 0, fill: str = "zeros") -> SpatialResult:
    """PGD on (rotation, tx, ty, scale) within the box (see the module docstring); step_size is a fraction
    of each parameter's bound per step (default 2.5 / steps)."""
    _check_batch(x, y)
    bounds = engstrom_bounds(max_rotation, translation_per_degree, scale_bound)
    steps, frac, restarts = _pgd_common(steps, step_size, restarts)
    check_choice("loss", loss, LOSSES)
    check_fill(fill)
    cm = _counting(model)
    n = x.shape[0]
    if n == 0:
        return _empty_result(x, bounds)
    lim = x.new_tensor([bounds.max_rotation, bounds.max_translation, bounds.max_translation, bounds.scale_bound])
    centre = x.new_tensor([0.0, 0.0, 0.0, 1.0])
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def init(count: int, r: int) -> Tensor:  # (count, 4) initial (rotation, tx, ty, scale)
        start = (torch.rand((count, 4), generator=gen, device="cpu") * 2.0 - 1.0).to(x.device, x.dtype)
        return centre + (start * lim if random_start or r > 0 else 0.0 * start)

    best, best_loss, fooled = _sign_pgd(
        cm, x, y, centre.expand(n, 4).clone(), init, lambda xx, p: _render_p(xx, p, fill),
        lambda logits, yy, p: _loss(logits, yy, loss), step=frac * lim, lo=centre - lim, hi=centre + lim,
        steps=steps, restarts=restarts)
    with torch.no_grad():
        images = _render_p(x, best, fill)
    return SpatialResult(images, _params(best), bounds, fooled, best_loss, cm.forwards, cm.grad_evals)


ATTACKS = {"worst-of-k": worst_of_k, "grid": grid, "flow": flow, "affine-pgd": affine_pgd}
STRENGTH = {"worst-of-k": "max_rotation", "grid": "max_rotation", "flow": "max_flow", "affine-pgd": "max_rotation"}
