"""Bounds of the spatial attacks, and the checks every attack result must pass (nothing is clipped after the fact).

- affine attacks (worst-of-k, grid, affine-pgd) return params {"rotation" (deg), "tx", "ty" (px), "scale"}, each
  (N,), and must satisfy |rotation| <= max_rotation, |tx|, |ty| <= max_translation, |scale - 1| <= scale_bound;
- flow returns {"flow": (N, 2, H, W)} in pixels with |flow| <= max_flow for every component (Linf).
`check_spatial` verifies this (in float64, tolerance 1e-5 degrees / pixels), that the images are finite and in
[0, 1], and that re-rendering the parameters gives the returned images; any violation raises
`SpatialBoundViolation`. Engstrom et al.'s translation bound is tied to the rotation bound
(`engstrom_bounds`: T = translation_per_degree x R, 0.1 px per degree by default: 30 deg <-> 3 px).

Status: the checks of this project (no paper defines them); conventions of `transforms.affine`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .transforms import MAX_ROTATION, affine, flow_warp

BOUND_TOL = 1e-5
RENDER_TOL = 1e-4


class SpatialBoundViolation(RuntimeError):
    """An attack returned a transform outside its bounds, or images that its parameters do not produce."""


# ---------------------------------------------------------------------------------------------- bounds
def _number(name: str, v: Any, lo: float = 0.0, hi: float = math.inf, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{name} must be a finite number; got {v!r}.")
    v = float(v)
    if v < lo or v > hi or (hi_open and v >= hi):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi) else f">= {lo:g}"
        raise UserError(f"{name} must be in {rng}; got {v:g}.")
    return v


def check_max_rotation(v: Any) -> float:
    """A rotation bound in degrees, in [0, 180]."""
    return _number("max_rotation (degrees)", v, 0.0, MAX_ROTATION)


def check_max_flow(v: Any) -> float:
    """A flow bound in pixels, >= 0."""
    return _number("max_flow (pixels)", v, 0.0)


@dataclass(frozen=True)
class SpatialBounds:
    """The box an attack searches: rotation (deg), translation per axis (px), |scale - 1|, flow Linf (px)."""

    max_rotation: float = 0.0
    max_translation: float = 0.0
    scale_bound: float = 0.0
    max_flow: float | None = None

    @property
    def kind(self) -> str:
        return "flow" if self.max_flow is not None else "affine"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def engstrom_bounds(max_rotation: float, translation_per_degree: float = 0.1,
                    scale_bound: float = 0.0) -> SpatialBounds:
    """Affine bounds with the translation tied to the rotation: T = translation_per_degree * R."""
    r = check_max_rotation(max_rotation)
    tpd = _number("translation_per_degree (pixels per degree)", translation_per_degree, 0.0)
    s = _number("scale_bound (|factor - 1|)", scale_bound, 0.0, 1.0, hi_open=True)
    return SpatialBounds(max_rotation=r, max_translation=tpd * r, scale_bound=s)


def flow_bounds(max_flow: float) -> SpatialBounds:
    return SpatialBounds(max_flow=check_max_flow(max_flow))


# ---------------------------------------------------------------------------------------------- checks
def render(x: Tensor, params: dict[str, Tensor], fill: str = "zeros") -> Tensor:
    """The images that `params` (affine or flow, as returned by the attacks) produce from x."""
    if "flow" in params:
        return flow_warp(x, params["flow"], fill=fill)
    return affine(x, params["rotation"], params["tx"], params["ty"], params["scale"], fill=fill)


def check_bounds(params: dict[str, Tensor], bounds: SpatialBounds, what: str = "spatial attack") -> None:
    """Raise SpatialBoundViolation unless every transform in `params` is finite and inside `bounds`."""
    if bounds.kind == "flow":
        if set(params) != {"flow"}:
            raise SpatialBoundViolation(f"{what}: expected flow parameters {{'flow'}}, got {sorted(params)}")
        checks = [("flow", params["flow"].double().flatten(1).abs(), float(bounds.max_flow), 0.0)]
    else:
        if set(params) != {"rotation", "tx", "ty", "scale"}:
            raise SpatialBoundViolation(f"{what}: expected affine parameters rotation, tx, ty, scale; got "
                                        f"{sorted(params)}")
        checks = [("rotation", params["rotation"].double().abs(), bounds.max_rotation, 0.0),
                  ("tx", params["tx"].double().abs(), bounds.max_translation, 0.0),
                  ("ty", params["ty"].double().abs(), bounds.max_translation, 0.0),
                  ("scale", (params["scale"].double() - 1.0).abs(), bounds.scale_bound, 1.0)]
    for name, mag, bound, centre in checks:
        if not torch.isfinite(mag).all():
            raise SpatialBoundViolation(f"{what}: non-finite {name} parameters")
        if mag.dim() > 1:
            mag = mag.amax(1) if mag.shape[1] else mag.new_zeros(mag.shape[0])
        bad = mag > bound + BOUND_TOL
        if bool(bad.any()):
            worst = float(mag.max())
            raise SpatialBoundViolation(
                f"{what}: {int(bad.sum())} example(s) with {name} outside its bound: max |{name}"
                f"{' - 1' if centre else ''}| = {worst:.9g} > {bound:.9g} (+{BOUND_TOL:g})")


def check_spatial(x: Tensor, x_adv: Tensor, params: dict[str, Tensor], bounds: SpatialBounds, *,
                  fill: str = "zeros", what: str = "spatial attack") -> None:
    """check_bounds, plus: x_adv has x's shape, is finite, lies in [0, 1] and equals render(x, params)."""
    check_bounds(params, bounds, what)
    if x_adv.shape != x.shape:
        raise SpatialBoundViolation(f"{what} changed the input shape {tuple(x.shape)} -> {tuple(x_adv.shape)}")
    if not torch.isfinite(x_adv).all():
        raise SpatialBoundViolation(f"{what} returned non-finite pixels")
    if x_adv.numel():
        lo, hi = float(x_adv.min()), float(x_adv.max())
        if lo < 0.0 or hi > 1.0:
            raise SpatialBoundViolation(f"{what} returned pixels outside [0, 1] (min {lo:.3g}, max {hi:.3g})")
        with torch.no_grad():
            again = render(x, params, fill)
        diff = float((again.double() - x_adv.double()).abs().max())
        if diff > RENDER_TOL:
            raise SpatialBoundViolation(f"{what}: the returned images are not what its parameters produce "
                                        f"(max |difference| {diff:.3g})")
