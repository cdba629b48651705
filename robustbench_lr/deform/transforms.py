"""Differentiable, batched geometric deformations of [0, 1] images (N, C, H, W), on any device.

Every warp is a bilinear `grid_sample` (align_corners=False) of the input along a sampling grid, so it is
differentiable w.r.t. the image and w.r.t. its parameters (angles, shifts, factors, flow fields), and every
parameter is per example: a float (the same for the whole batch) or a tensor of shape (N,).

Conventions (pixel units, image centre as origin, x to the right, y downwards):
- `rotate(x, degrees)`: the content turns counter-clockwise on screen by `degrees` (as torchvision's
  `rotate`); negative = clockwise.
- `translate(x, dx, dy)`: the content moves `dx` pixels right and `dy` pixels down.
- `scale(x, factor)`: the content is magnified by `factor` about the centre (> 1 zooms in, < 1 shrinks).
- `affine(x, rotation_deg, tx_px, ty_px, scale)`: scale and rotate about the centre, then translate:
  p_out = scale * R(rotation) p_in + t. The grid samples the inverse map p_in = R(-rotation)(p_out - t) / scale.
  Non-square images are handled in pixel units (a rotation stays a rotation, not a shear).
- `flow_warp(x, flow)`: out(p) = x(p + flow(p)), flow (N, 2, H, W) in pixels (channel 0 = x, 1 = y); this is
  stAdv's parameterisation and the one `elastic` uses.
- `elastic(x, alpha, sigma, generator)`: Simard et al. (2003): per example, uniform noise U[-1, 1] per pixel
  and axis, smoothed by a Gaussian of std `sigma` pixels (separable, truncated at `truncate` * sigma,
  reflect-padded), times `alpha` pixels, used as the flow field.
  Relation to the common parameterisations:
  * CIFAR-10-C (`make_cifar_c.py`, Hendrycks & Dietterich 2019) uses exactly this field with (alpha, sigma)
    in pixels (`gaussian(uniform(-1, 1), sigma, truncate=3) * alpha`), so our alpha and sigma are theirs
    (pass truncate=3 to match the kernel). Its severities, for 32 px images, are in `CIFAR10C_ELASTIC`
    (scale with the image side via `cifar10c_elastic_params`). CIFAR-10-C additionally applies a random
    affine jitter of the image corners first (the third number, in pixels) and reflects at the border; we
    do not reproduce that jitter, so severity 1 (alpha = 0) is the identity here.
  * torchvision `ElasticTransform(alpha, sigma)` scales the smoothed noise by alpha / W in normalised
    [-1, 1] grid units, i.e. alpha / 2 pixels: torchvision alpha = 2 x our alpha (its kernel is truncated at
    about 4 sigma, our default). It also draws one field per call for the whole batch; we draw one per
    example.

Boundary fill (`fill`): "zeros" (default: a black canvas, regions with no source pixel are 0, content leaving
the frame is cropped), "border" (replicate the edge pixels) or "reflection". The output keeps the input size.

Range: bilinear interpolation is a convex combination of input pixels (and of 0 for the zeros fill), so it
cannot leave [0, 1] when the input is in [0, 1]. We therefore assert instead of clamping: an output outside
[0, 1] by more than float rounding (1e-5) raises `ValueError` (the input was not in [0, 1]); only rounding
residue below that is clamped away.

`DEFORMATIONS` is the registry of random deformations with one named strength each (see `Deformation`):
rotate -> degrees, translate -> pixels, scale -> factor, elastic -> alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError, check_choice

FILLS = ("zeros", "border", "reflection")
RANGE_TOL = 1e-5
MAX_ROTATION = 180.0

# CIFAR-10-C elastic severities for 32 x 32 images: (alpha px, sigma px, affine jitter px), make_cifar_c.py.
CIFAR10C_ELASTIC: dict[int, tuple[float, float, float]] = {
    1: (32 * 0.0, 32 * 0.0, 32 * 0.08),
    2: (32 * 0.05, 32 * 0.2, 32 * 0.07),
    3: (32 * 0.08, 32 * 0.06, 32 * 0.06),
    4: (32 * 0.1, 32 * 0.04, 32 * 0.05),
    5: (32 * 0.1, 32 * 0.03, 32 * 0.03),
}


def cifar10c_elastic_params(severity: int, image_size: int = 32) -> dict[str, float]:
    """(alpha, sigma) in pixels of CIFAR-10-C's elastic severity, scaled to `image_size`, plus the affine
    jitter this module does not apply and truncate=3 (CIFAR-10-C's Gaussian truncation)."""
    check_choice("severity", severity, sorted(CIFAR10C_ELASTIC))
    a, s, j = CIFAR10C_ELASTIC[severity]
    f = image_size / 32.0
    return {"alpha": a * f, "sigma": s * f, "affine_jitter": j * f, "truncate": 3.0}


# ---------------------------------------------------------------------------------------------- helpers
def check_fill(fill: str) -> str:
    check_choice("fill", fill, FILLS)
    return fill


def _check_images(x: Tensor, what: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserError(f"{what} must be a floating-point (N, C, H, W) tensor of [0, 1] pixels; got {shape}.")


def as_param(v: float | Tensor, n: int, like: Tensor, name: str) -> Tensor:
    """A per-example parameter as an (n,) tensor on `like`'s device and dtype (floats are broadcast)."""
    if isinstance(v, Tensor):
        t = v.to(device=like.device, dtype=like.dtype)
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise UserError(f"{name} must be a float or a tensor of shape ({n},); got shape {tuple(v.shape)}.")
        return t
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"{name} must be a finite number or a tensor; got {v!r}.")
    return torch.full((n,), float(v), device=like.device, dtype=like.dtype)


def _finish(out: Tensor) -> Tensor:
    """Assert the warp stayed in [0, 1] (bilinear cannot overshoot) and remove float rounding residue."""
    if out.numel():
        lo, hi = torch.aminmax(out.detach())
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("deformation produced non-finite pixels (non-finite input or parameters)")
        if lo < -RANGE_TOL or hi > 1.0 + RANGE_TOL:
            raise ValueError(f"deformed pixels left [0, 1] (min {lo:.3g}, max {hi:.3g}): bilinear interpolation "
                             "cannot overshoot, so the input images were not [0, 1] pixels")
        if lo < 0.0 or hi > 1.0:
            out = out.clamp(0.0, 1.0)
    return out


def _sample(x: Tensor, grid: Tensor, fill: str) -> Tensor:
    check_fill(fill)
    return _finish(F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=fill, align_corners=False))


# ---------------------------------------------------------------------------------------------- affine family
def affine_theta(rotation_deg: Tensor, tx_px: Tensor, ty_px: Tensor, scale: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, 3) `affine_grid` matrices (normalised coordinates) of the pixel-space map described above.

    In centred pixel coordinates p = (u, v) the grid must sample p_in = A p_out + b with
    A = R(-theta) / s, b = -A t. Normalised coordinates are p * (2 / W, 2 / H), so theta = D A D^-1, D b.
    """
    rad = torch.deg2rad(rotation_deg)
    c, s = torch.cos(rad) / scale, torch.sin(rad) / scale
    # A = (1/s) [[cos, -sin], [sin, cos]] maps output -> input for a counter-clockwise (on screen) rotation
    a00, a01, a10, a11 = c, -s, s, c
    b0 = -(a00 * tx_px + a01 * ty_px)
    b1 = -(a10 * tx_px + a11 * ty_px)
    ry = height / width  # D A D^-1 off-diagonals: (2/W)(H/2) and (2/H)(W/2)
    row0 = torch.stack([a00, a01 * ry, b0 * (2.0 / width)], dim=-1)
    row1 = torch.stack([a10 / ry, a11, b1 * (2.0 / height)], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def affine(x: Tensor, rotation_deg: float | Tensor = 0.0, tx_px: float | Tensor = 0.0, ty_px: float | Tensor = 0.0,
           scale: float | Tensor = 1.0, *, fill: str = "zeros") -> Tensor:
    """Scale by `scale` and rotate by `rotation_deg` (counter-clockwise) about the centre, then shift by
    (`tx_px`, `ty_px`) pixels; per-example parameters, differentiable in all of them."""
    _check_images(x)
    n, _, h, w = x.shape
    r = as_param(rotation_deg, n, x, "rotation_deg")
    tx, ty = as_param(tx_px, n, x, "tx_px"), as_param(ty_px, n, x, "ty_px")
    sc = as_param(scale, n, x, "scale")
    if n and bool((sc.detach() <= 0).any()):
        raise UserError(f"scale factors must be > 0; got min {float(sc.min()):g}.")
    theta = affine_theta(r, tx, ty, sc, h, w)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _sample(x, grid, fill)


def rotate(x: Tensor, degrees: float | Tensor, *, fill: str = "zeros") -> Tensor:
    """Rotate the content counter-clockwise by `degrees` about the image centre."""
    return affine(x, rotation_deg=degrees, fill=fill)


def translate(x: Tensor, dx: float | Tensor, dy: float | Tensor, *, fill: str = "zeros") -> Tensor:
    """Shift the content by `dx` pixels to the right and `dy` pixels down (sub-pixel shifts interpolate)."""
    return affine(x, tx_px=dx, ty_px=dy, fill=fill)


def scale(x: Tensor, factor: float | Tensor, *, fill: str = "zeros") -> Tensor:
    """Magnify the content by `factor` (> 0) about the image centre."""
    return affine(x, scale=factor, fill=fill)


# ---------------------------------------------------------------------------------------------- flow fields
def identity_grid(n: int, height: int, width: int, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """(n, H, W, 2) `grid_sample` grid that samples every pixel centre (align_corners=False)."""
    theta = torch.eye(2, 3, device=device, dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 1, height, width], align_corners=False)


def flow_warp(x: Tensor, flow: Tensor, *, fill: str = "zeros") -> Tensor:
    """out(p) = x(p + flow(p)) with flow (N, 2, H, W) in pixels (channel 0: x / right, 1: y / down)."""
    _check_images(x)
    n, _, h, w = x.shape
    if flow.shape != (n, 2, h, w):
        raise UserError(f"flow must have shape {(n, 2, h, w)}; got {tuple(flow.shape)}.")
    flow = flow.to(device=x.device, dtype=x.dtype)
    norm = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
    grid = identity_grid(n, h, w, x.device, x.dtype) + flow.permute(0, 2, 3, 1) * norm
    return _sample(x, grid, fill)


def gaussian_kernel1d(sigma: float, truncate: float, max_radius: int, device: torch.device | str,
                      dtype: torch.dtype) -> Tensor:
    radius = max(0, min(int(truncate * sigma + 0.5), max_radius))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def smooth(field: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian smoothing (std `sigma` pixels) of every channel of (N, C, H, W), reflect-padded.

    The radius is round(truncate * sigma), capped at side - 1 (the largest a reflection allows)."""
    if sigma <= 0:
        return field
    n, c, h, w = field.shape
    out = field.reshape(n * c, 1, h, w)
    for dim, side in ((3, w), (2, h)):
        k = gaussian_kernel1d(sigma, truncate, side - 1, field.device, field.dtype)
        r = (k.numel() - 1) // 2
        if r == 0:
            continue
        if dim == 3:
            out = F.conv2d(F.pad(out, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        else:
            out = F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return out.reshape(n, c, h, w)


def elastic_noise(n: int, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
    """Raw U[-1, 1] noise (n, 2, H, W) on the CPU (drawn from `generator`, a CPU generator)."""
    return torch.rand((n, 2, height, width), generator=generator, device="cpu") * 2.0 - 1.0


def elastic_field(noise: Tensor, alpha: float | Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Displacement field in pixels: alpha * Gaussian-smoothed `noise` (alpha per example or a float)."""
    a = as_param(alpha, noise.shape[0], noise, "alpha")
    return smooth(noise, sigma, truncate) * a.view(-1, 1, 1, 1)


def elastic(x: Tensor, alpha: float | Tensor, sigma: float = 4.0, generator: torch.Generator | None = None, *,
            noise: Tensor | None = None, truncate: float = 4.0, fill: str = "zeros") -> Tensor:
    """Simard et al. elastic deformation: a random smooth field, alpha pixels strong, sigma pixels smooth.

    The noise comes from `generator` (a CPU `torch.Generator`, for device-independent draws) unless given
    explicitly as `noise` (N, 2, H, W) in [-1, 1]; the result is differentiable w.r.t. x and alpha.
    Defaults follow Simard et al.'s MNIST setting for sigma (4 px; they used alpha = 34)."""
    _check_images(x)
    if sigma < 0 or not math.isfinite(sigma):
        raise UserError(f"sigma must be >= 0 pixels; got {sigma!r}.")
    n, _, h, w = x.shape
    if noise is None:
        noise = elastic_noise(n, h, w, generator)
    field_ = elastic_field(noise.to(device=x.device, dtype=x.dtype), alpha, sigma, truncate)
    return flow_warp(x, field_, fill=fill)


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Deformation:
    """A random deformation with one named strength.

    `sample(n, strength, generator, height, width, opts)` draws the per-example randomness of one draw
    (on the CPU, from `generator`); `render(x, strength, params, fill, opts)` applies it. A deformation with
    `random=False` is deterministic given its strength; `is_random` also says False at the identity strength
    and for deterministic options (the runner then evaluates a single draw).
    `identity` is the strength that leaves the image unchanged (up to interpolation).
    """

    name: str
    param_name: str
    allow_negative: bool
    identity: float
    random: bool
    sample: Callable[[int, float, torch.Generator, int, int, dict[str, Any]], dict[str, Tensor]]
    render: Callable[[Tensor, float, dict[str, Tensor], str, dict[str, Any]], Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    max_abs: float | None = None
    positive: bool = False  # strictly > 0 (scale factors)

    def validate(self, strength: float) -> float:
        """Return the strength as a float, or raise UserError naming the deformation and the allowed range."""
        what = f"{self.name} {self.param_name}"
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise UserError(f"{what} must be a finite number; got {strength!r}.")
        s = float(strength)
        if self.positive and s <= 0:
            raise UserError(f"{what} must be > 0 (1 = unchanged); got {s:g}.")
        if not self.allow_negative and s < 0:
            raise UserError(f"{what} must be >= 0 (negative strengths are not allowed for {self.name}); got {s:g}.")
        if self.max_abs is not None and abs(s) > self.max_abs:
            raise UserError(f"{what} must lie in [-{self.max_abs:g}, {self.max_abs:g}]; got {s:g}.")
        return s

    def is_random(self, strength: float, opts: dict[str, Any]) -> bool:
        """Whether draws at this strength differ: False for deterministic deformations (scale, rotate with
        sign='fixed', translate along a fixed direction) and at the identity strength."""
        if not self.random or strength == self.identity:
            return False
        if self.name == "rotate" and opts.get("sign") == "fixed":
            return False
        return not (self.name == "translate" and opts.get("direction") != "random")

    def check_options(self, opts: dict[str, Any]) -> dict[str, Any]:
        """The options merged over the defaults; unknown names or bad values raise UserError."""
        for k in opts:
            if k not in self.options:
                allowed = ", ".join(sorted(self.options)) or "none"
                raise UserError(f"unknown option {k!r} for deformation {self.name!r}; allowed: {allowed}.")
        merged = {**self.options, **opts}
        if self.name == "rotate":
            check_choice("sign", merged["sign"], ("random", "fixed"))
        if self.name == "translate":
            check_choice("direction", merged["direction"], ("random", "x", "y", "diagonal"))
        if self.name == "elastic":
            for key in ("sigma", "truncate"):
                v = merged[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise UserError(f"elastic {key} must be a number >= 0; got {v!r}.")
        return merged


def _sample_rotate(n: int, s: float, g: torch.Generator, h: int, w: int, o: dict[str, Any]) -> dict[str, Tensor]:
    if o["sign"] == "fixed":
        return {"sign": torch.ones(n)}
    return {"sign": torch.randint(0, 2, (n,), generator=g, device="cpu").float() * 2.0 - 1.0}


def _render_rotate(x: Tensor, s: float, p: dict[str, Tensor], fill: str, o: dict[str, Any]) -> Tensor:
    return rotate(x, p["sign"].to(x.device, x.dtype) * s, fill=fill)


def _sample_translate(n: int, s: float, g: torch.Generator, h: int, w: int, o: dict[str, Any]) -> dict[str, Tensor]:
    d = o["direction"]
    if d == "random":
        phi = torch.rand(n, generator=g, device="cpu") * (2 * math.pi)
        return {"ux": torch.cos(phi), "uy": torch.sin(phi)}
    ux = {"x": 1.0, "y": 0.0, "diagonal": math.sqrt(0.5)}[d]
    uy = {"x": 0.0, "y": 1.0, "diagonal": math.sqrt(0.5)}[d]
    return {"ux": torch.full((n,), ux), "uy": torch.full((n,), uy)}


def _render_translate(x: Tensor, s: float, p: dict[str, Tensor], fill: str, o: dict[str, Any]) -> Tensor:
    return translate(x, p["ux"].to(x.device, x.dtype) * s, p["uy"].to(x.device, x.dtype) * s, fill=fill)


def _sample_none(n: int, s: float, g: torch.Generator, h: int, w: int, o: dict[str, Any]) -> dict[str, Tensor]:
    return {}


def _render_scale(x: Tensor, s: float, p: dict[str, Tensor], fill: str, o: dict[str, Any]) -> Tensor:
    return scale(x, s, fill=fill)


def _sample_elastic(n: int, s: float, g: torch.Generator, h: int, w: int, o: dict[str, Any]) -> dict[str, Tensor]:
    return {"noise": elastic_noise(n, h, w, g)}


def _render_elastic(x: Tensor, s: float, p: dict[str, Tensor], fill: str, o: dict[str, Any]) -> Tensor:
    return elastic(x, s, float(o["sigma"]), noise=p["noise"], truncate=float(o["truncate"]), fill=fill)


DEFORMATIONS: dict[str, Deformation] = {
    "rotate": Deformation(
        "rotate", "degrees", allow_negative=True, identity=0.0, random=True, sample=_sample_rotate,
        render=_render_rotate, options={"sign": "random"}, max_abs=MAX_ROTATION,
        doc="rotation by |degrees| with a random sign per example (sign='random', default), or by exactly "
            "`degrees` (sign='fixed'; negative = clockwise); |degrees| <= 180"),
    "translate": Deformation(
        "translate", "pixels", allow_negative=False, identity=0.0, random=True, sample=_sample_translate,
        render=_render_translate, options={"direction": "random"},
        doc="shift by `pixels` (Euclidean length) in a uniformly random direction per example "
            "(direction='random', default), or along +x, +y or the +x+y diagonal"),
    "scale": Deformation(
        "scale", "factor", allow_negative=False, identity=1.0, random=False, sample=_sample_none,
        render=_render_scale, positive=True,
        doc="magnification by `factor` about the centre (deterministic; factor > 0, 1 = unchanged)"),
    "elastic": Deformation(
        "elastic", "alpha", allow_negative=False, identity=0.0, random=True, sample=_sample_elastic,
        render=_render_elastic, options={"sigma": 4.0, "truncate": 4.0},
        doc="Simard elastic field: alpha pixels times U[-1, 1] noise smoothed by a Gaussian of std sigma pixels"),
}


def get_deformation(name: str) -> Deformation:
    """The registry entry; an unknown name raises UserError with the allowed names and close matches."""
    check_choice("deformation", name, list(DEFORMATIONS))
    return DEFORMATIONS[name]


def validate_strengths(deform: Deformation, strengths: Iterable[float]) -> list[float]:
    """Validated strengths in the given order (duplicates removed); an empty list is an error."""
    out: list[float] = []
    for s in strengths:
        v = deform.validate(s)
        if v not in out:
            out.append(v)
    if not out:
        raise UserError(f"give at least one {deform.name} {deform.param_name} value.")
    return out
