"""Deformation sweeps: random severity sweeps and adversarial spatial sweeps, returning tidy rows (no file I/O).

Rows follow `results.table`: family="deform", perturbation=<deformation or attack name>, param_name=<its one named
strength>, param_value (float), integer counts; `results.finalize` adds accuracy and Clopper-Pearson intervals
where a row has none.

`random_sweep` draws are reproducible and model-independent: the randomness of draw d for examples
[b * BLOCK, (b + 1) * BLOCK) comes from a CPU generator seeded by (seed, deformation, d, b), so it does not
depend on the model, the device or the batch size, and the same draws are reused at every strength (common
random numbers: draw d at strength s is the same direction / sign / noise field scaled to s, which makes
accuracy-vs-strength curves smoother and comparisons between strengths and models paired). Rows whose draws
would all be identical (a deterministic deformation: scale, rotate with sign='fixed', translate along a fixed
direction; or the identity strength 0 / factor 1) are evaluated once whatever `draws` says: the row says
draws=1 and gets a Clopper-Pearson interval instead of a zero-width t-interval.

`adversarial_sweep` follows the eps-sweep engine's semantics (`runners.eps_sweep`): bounds ascending, clean-
misclassified examples never attacked, an example fooled at a smaller bound counts as fooled at every larger
one (its transform lies inside every larger box), only still-robust examples attacked at the next bound, every
result checked against its bounds (`spatial.check_spatial`) and "fooled" decided by a separate fp32 forward
of the plain model on the returned images. Bound 0 is the clean model (no attack).

Both take `progress`, a factory progress(total) -> a tqdm-like bar (`progress.bar`): the sweep opens one bar for
all its strengths, with the total work in examples, and advances it per batch (random) or per attacked chunk
(spatial), so a terminal shows an ETA and a log gets one line per sweep.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..attacks.prepare import predict
from ..deform import bounds as B
from ..deform import spatial as S
from ..deform.transforms import Deformation, check_fill, get_deformation, validate_strengths
from ..errors import UserError, check_choice, check_positive_int
from ..results.stats import t_interval
from .common import cell_seed

log = logging.getLogger(__name__)
BLOCK = 64
GRID_EXAMPLES_PER_CALL = 8192
Progress = Callable[[int], Any]  # progress(total) -> a tqdm-like bar (update(k), close())


# ---------------------------------------------------------------------------------------------- helpers
def _check_inputs(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> None:
    if model.training:
        raise UserError("the model must be in eval mode (use attacks.prepare_for_attack).")
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise UserError("x must be a floating-point (N, C, H, W) tensor of [0, 1] pixels.")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],):
        raise UserError(f"y must hold one label per image ({x.shape[0]}); got shape {tuple(getattr(y, 'shape', ()))}.")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise UserError(f"x must be [0, 1] pixels; got values in [{float(x.min()):.3g}, {float(x.max()):.3g}].")
    check_positive_int("batch_size", batch_size)


def _block_seed(seed: int, name: str, draw: int, block: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7919 + draw * 104_729 + block * 31) % (2**63 - 1)


class _DrawParams:
    """Per-example randomness of one draw, generated block by block (independent of the batch size)."""

    def __init__(self, deform: Deformation, strength: float, seed: int, draw: int, hw: tuple[int, int],
                 opts: dict[str, Any]) -> None:
        self.d, self.s, self.seed, self.draw, self.hw, self.opts = deform, strength, seed, draw, hw, opts
        self._cache: dict[int, dict[str, Tensor]] = {}

    def _block(self, b: int) -> dict[str, Tensor]:
        if b not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k >= b - 1}
            g = torch.Generator(device="cpu").manual_seed(_block_seed(self.seed, self.d.name, self.draw, b))
            self._cache[b] = self.d.sample(BLOCK, self.s, g, *self.hw, self.opts)
        return self._cache[b]

    def __call__(self, lo: int, hi: int) -> dict[str, Tensor]:
        blocks = [self._block(b) for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1)]
        if not blocks or not blocks[0]:
            return {}
        off = lo - (lo // BLOCK) * BLOCK
        return {k: torch.cat([bl[k] for bl in blocks])[off: off + hi - lo] for k in blocks[0]}


# ---------------------------------------------------------------------------------------------- random sweep
def _draw_correct(model: nn.Module, x: Tensor, y: Tensor, d: Deformation, s: float, draw: int, seed: int, fill: str,
                  opts: dict[str, Any], batch_size: int, device: torch.device, bar: Any = None) -> int:
    """Correctly classified examples under draw `draw` of deformation d at strength s (`bar` advances per batch)."""
    n, (h, w) = x.shape[0], x.shape[2:]
    params = _DrawParams(d, s, seed, draw, (h, w), opts)
    y_cpu = y.cpu()
    correct = 0
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        with torch.no_grad():
            pred = model(d.render(x[lo:hi].to(device), s, params(lo, hi), fill, opts)).argmax(1).cpu()
        correct += int((pred == y_cpu[lo:hi]).sum())
        if bar is not None:
            bar.update(hi - lo)
    return correct


def random_sweep(model: nn.Module, x: Tensor, y: Tensor, deform: str, strengths: list[float], *, draws: int,
                 seed: int, batch_size: int, device: torch.device | str, fill: str = "zeros",
                 progress: Progress | None = None, **opts: Any) -> list[dict[str, Any]]:
    """Accuracy under a random deformation at each strength, averaged over `draws` independent draws.

    Args:
        model: classifier on [0, 1] pixels, in eval mode.
        x, y: examples (N, C, H, W) in [0, 1] and labels (N,), on any device (batches move to `device`).
        deform: a name of `transforms.DEFORMATIONS` (rotate, translate, scale, elastic).
        strengths: values of its strength (degrees, pixels, factor, alpha), evaluated in the given order.
        draws: independent random draws per strength (1 where all draws would be identical, see above).
        seed: fixes the draws (the same for every model).
        batch_size: images per forward.
        device: where the model runs.
        fill: boundary fill, "zeros" (black canvas), "border" or "reflection".
        progress: progress(total) -> a tqdm-like bar over all N * draws image evaluations of every strength,
            advanced per batch, or None.
        **opts: the deformation's options (rotate: sign; translate: direction; elastic: sigma, truncate).

    Returns one row per strength: n_total = N * draws, n_correct summed over draws, draws, draw_accuracies
    (JSON list), ci_low / ci_high a t-interval over the per-draw accuracies (ci_method "t-over-draws"; NaN with
    a single draw, for `finalize` to fill with Clopper-Pearson), seconds, forward_evals, and the settings.
    Strength 0 (factor 1) goes through the same warp, so it equals the clean accuracy up to interpolation.
    """
    d = get_deformation(deform)
    vals = validate_strengths(d, strengths)
    opts = d.check_options(opts)
    check_fill(fill)
    check_positive_int("draws", draws)
    _check_inputs(model, x, y, batch_size)
    device = torch.device(device)
    draws_at = [draws if d.is_random(s, opts) else 1 for s in vals]
    bar = progress(int(x.shape[0]) * sum(draws_at)) if progress is not None else None
    rows = []
    for s, n_draws in zip(vals, draws_at):
        t0 = time.perf_counter()
        per_draw = [_draw_correct(model, x, y, d, s, k, seed, fill, opts, batch_size, device, bar)
                    for k in range(n_draws)]
        n, correct_total = x.shape[0], sum(per_draw)
        accs = [c / n if n else math.nan for c in per_draw]
        lo_ci, hi_ci = t_interval(accs) if n_draws >= 2 else (math.nan, math.nan)
        rows.append({
            "family": "deform", "perturbation": d.name, "param_name": d.param_name, "param_value": float(s),
            "n_total": int(n * n_draws), "n_correct": int(correct_total), "ci_low": lo_ci, "ci_high": hi_ci,
            "ci_method": "t-over-draws" if n_draws >= 2 else "", "draws": int(n_draws),
            "draw_accuracies": json.dumps(accs), "seed": int(seed), "fill": fill,
            "seconds": time.perf_counter() - t0, "forward_evals": int(n * n_draws), **{k: v for k, v in opts.items()},
        })
        log.debug("%s %s=%g: %d/%d", d.name, d.param_name, s, correct_total, n * n_draws)
    if bar is not None:
        bar.close()
    return rows


# ---------------------------------------------------------------------------------------------- adversarial
def method_options(method: str) -> dict[str, Any]:
    """The settings (keyword arguments and defaults) of a spatial attack, strength and seed excluded."""
    check_choice("method", method, list(S.ATTACKS))
    sig = inspect.signature(S.ATTACKS[method])
    return {k: p.default for k, p in sig.parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in (S.STRENGTH[method], "seed")}


def _expected_bounds(method: str, bound: float, settings: dict[str, Any]) -> B.SpatialBounds:
    if S.STRENGTH[method] == "max_flow":
        return B.flow_bounds(bound)
    return B.engstrom_bounds(bound, settings["translation_per_degree"], settings["scale_bound"])


def _setting_value(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return "x".join(str(a) for a in v)
    return v


def adversarial_sweep(model: nn.Module, x: Tensor, y: Tensor, method: str, bounds: list[float], *, seed: int,
                      batch_size: int, device: torch.device | str, progress: Progress | None = None,
                      **opts: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Run a spatial attack at every bound (ascending) with the eps-sweep's early stopping.

    Args:
        model: classifier on [0, 1] pixels, in eval mode (`prepare_for_attack`).
        x, y: examples (N, C, H, W) in [0, 1] and labels (N,).
        method: 'worst-of-k', 'grid', 'flow' or 'affine-pgd'.
        bounds: values of the method's strength: max_rotation in degrees (translation tied to it by
            translation_per_degree) or max_flow in pixels.
        seed: seed of the random draws (per bound and batch, as `runners.common.cell_seed`).
        batch_size: examples per attack call and forward; for 'grid', (example, transform) pairs per forward
            (its chunk_size), with up to GRID_EXAMPLES_PER_CALL examples searched together.
        device: where the model runs.
        progress: progress(total) -> a tqdm-like bar over N examples per bound, advanced per attacked chunk
            (examples already settled, i.e. clean-misclassified or fooled at a smaller bound, count at once), or None.
        **opts: the method's settings (see `method_options`), e.g. k, shape, steps, tau, scale_bound, fill.

    Returns (rows, min_bound): one row per bound with n_total, n_clean_correct, n_correct, n_attacked,
    n_fooled_here, fooling_rate (1 - n_correct / n_clean_correct), seconds, forward_evals, grad_evals and the
    settings; min_bound (N,) float64 is 0 for clean-misclassified examples, the smallest bound that fooled the
    example, or +inf.
    """
    settings, vals = _spatial_settings(method, bounds, batch_size, opts)
    _check_inputs(model, x, y, batch_size)
    device = torch.device(device)
    param_name = S.STRENGTH[method]
    clean = (predict(model, x, batch_size, device) == y.cpu()).numpy()
    min_bound = np.where(clean, np.inf, 0.0)
    bar = progress(int(x.shape[0]) * len(vals)) if progress is not None else None
    rows = []
    for b in vals:
        t0 = time.perf_counter()
        expected = _expected_bounds(method, b, settings)
        attacked = int(np.isinf(min_bound).sum()) if b > 0 else 0
        if bar is not None:
            bar.update(int(x.shape[0]) - attacked)
        fwd, grads = _spatial_cell(model, x, y, method, b, expected, settings, min_bound, seed, batch_size,
                                   device, bar) if b > 0 else (0, 0)
        if model.training:
            raise RuntimeError(f"{method} switched the model to train mode")
        rows.append(_bound_row(method, b, expected, settings, clean, min_bound, attacked, seed, fwd, grads, t0))
        log.debug("%s %s=%g: %d/%d correct", method, param_name, b, rows[-1]["n_correct"], x.shape[0])
    if bar is not None:
        bar.close()
    return rows, min_bound


def _bound_row(method: str, b: float, expected: B.SpatialBounds, settings: dict[str, Any], clean: np.ndarray,
               min_bound: np.ndarray, attacked: int, seed: int, fwd: int, grads: int, t0: float) -> dict[str, Any]:
    """The 'results' row of one bound of a spatial attack."""
    param_name = S.STRENGTH[method]
    n_cc, n_correct = int(clean.sum()), int((min_bound > b).sum())
    row = {
        "family": "deform", "perturbation": method, "param_name": param_name, "param_value": float(b),
        "n_total": int(len(clean)), "n_clean_correct": n_cc, "n_correct": n_correct, "n_attacked": attacked,
        "n_fooled_here": int((min_bound == b).sum()) if b > 0 else 0,
        "fooling_rate": (1.0 - n_correct / n_cc) if n_cc else math.nan,
        "seconds": time.perf_counter() - t0, "forward_evals": int(fwd), "grad_evals": int(grads),
        "seed": int(seed),
    }
    if param_name == "max_rotation":
        row["max_translation"] = float(expected.max_translation)
    row.update({k: _setting_value(v) for k, v in settings.items()})
    return row


def _spatial_settings(method: str, bounds: list[float] | float, batch_size: int,
                      opts: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Validate a spatial attack's options and bounds (all of them, before any work)."""
    defaults = method_options(method)
    for k in opts:
        if k not in defaults:
            raise UserError(f"unknown option {k!r} for spatial attack {method!r}; "
                            f"allowed: {', '.join(sorted(defaults))}.")
    settings = {**defaults, **opts}
    if method == "grid":
        settings["chunk_size"] = opts.get("chunk_size", batch_size)
    check_fill(settings["fill"])
    param_name = S.STRENGTH[method]
    check = B.check_max_flow if param_name == "max_flow" else B.check_max_rotation
    if isinstance(bounds, (int, float)):
        bounds = [bounds]
    vals = sorted({check(b) for b in bounds})
    if not vals:
        raise UserError(f"give at least one {param_name} bound.")
    for b in vals:
        _expected_bounds(method, b, settings)
    return settings, vals


def _spatial_cell(model: nn.Module, x: Tensor, y: Tensor, method: str, b: float, expected: B.SpatialBounds,
                  settings: dict[str, Any], min_bound: np.ndarray, seed: int, batch_size: int,
                  device: torch.device, bar: Any = None) -> tuple[int, int]:
    """Attack the still-robust examples at bound b (updates min_bound in place, advances `bar` per chunk);
    returns (forwards, grads)."""
    attack, param_name, y_cpu = S.ATTACKS[method], S.STRENGTH[method], y.cpu()
    active = np.flatnonzero(np.isinf(min_bound))
    group = max(batch_size, GRID_EXAMPLES_PER_CALL) if method == "grid" else batch_size
    fwd = grads = 0
    for s in range(0, len(active), group):
        idx = active[s: s + group]
        xb, yb = x[idx].to(device), y_cpu[idx].to(device)
        res = attack(model, xb, yb, **{param_name: b}, seed=cell_seed(seed, b, int(idx[0])), **settings)
        what = f"{method} ({param_name}={b:g})"
        if res.bounds != expected:
            raise B.SpatialBoundViolation(f"{what} searched {res.bounds}, expected {expected}")
        B.check_spatial(xb, res.images, res.params, expected, fill=settings["fill"], what=what)
        fwd += res.forward_evals
        grads += res.grad_evals
        fooled = (predict(model, res.images.float(), batch_size, device) != y_cpu[idx]).numpy()
        min_bound[idx[fooled]] = b
        if bar is not None:
            bar.update(len(idx))
    return fwd, grads
