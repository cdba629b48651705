"""Captum input attributions for any model (conv or LR), clean vs adversarial.

- `attributions(model, x, target, methods)`: {method: (N, C, H, W) attribution} with captum 0.9.
- `plot_attributions(model, x_clean, x_adv, target, methods)`: per method, the clean and adversarial maps
  and their difference, under a row with both images (and the model's predictions) and the perturbation.

Methods and baselines (the attributions explain the logit of `target`, e.g. the true class, for both inputs):

| method              | captum call                                   | baseline / settings                        |
|---------------------|-----------------------------------------------|--------------------------------------------|
| IntegratedGradients | IntegratedGradients.attribute                 | zeros (a black image), n_steps=16          |
| Saliency            | Saliency.attribute(abs=True)                  | none: |d logit / d x|                     |
| GradientShap        | GradientShap.attribute                        | n_baselines=8 uniform-noise images in      |
|                     |                                               | [0, 1] (seeded), n_samples=8, stdevs=0     |
| Occlusion           | Occlusion.attribute                           | zeros; window w x w over all channels,     |
|                     |                                               | w = max(2, min(H, W) // 7) (4 on 28-32 px), |
|                     |                                               | stride max(1, w // 2)                      |
| InputXGradient      | InputXGradient.attribute                      | none (x * gradient)                        |

All settings are keyword arguments (`n_steps`, `n_samples`, `n_baselines`, `stdevs`, `window`, `stride`,
`seed`). Randomness (GradientShap's baselines and draws) is seeded and does not disturb the global RNGs.
Status: working on resnet_tiny and lrnet_tiny (tests); the models' in-place ReLUs are fine for these
gradient- and perturbation-based methods (captum's DeepLift-style methods are not offered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, suggest
from . import _draw as D
from .layers import as_batch, eval_mode, model_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


METHODS = ("IntegratedGradients", "Saliency", "GradientShap", "Occlusion", "InputXGradient")
DEFAULT_METHODS = ("IntegratedGradients", "Saliency", "GradientShap", "Occlusion")


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Validate method names (case-insensitive); returns them in captum's spelling."""
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    by_lower = {m.lower(): m for m in METHODS}
    out = []
    for m in methods:
        key = str(m).strip().lower()
        if key not in by_lower:
            raise UserError(f"unknown attribution method {m!r}.{suggest(str(m), METHODS, 0.5)} Available: "
                            f"{', '.join(METHODS)}.")
        out.append(by_lower[key])
    if not out:
        raise UserError(f"give at least one attribution method ({', '.join(METHODS)}).")
    return tuple(dict.fromkeys(out))


def occlusion_window(h: int, w: int, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
    """(window side, stride) of Occlusion: default side max(2, min(H, W) // 7), stride max(1, side // 2)."""
    side = max(2, min(h, w) // 7) if window is None else int(window)
    if side < 1 or side > min(h, w):
        raise UserError(f"occlusion window must be between 1 and {min(h, w)} pixels; got {side}.")
    st = max(1, side // 2) if stride is None else int(stride)
    if st < 1:
        raise UserError(f"occlusion stride must be >= 1; got {st}.")
    return side, st


def _targets(target: int | Sequence[int] | Tensor, n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise UserError(f"target must be one class or one per example ({n}); got {t.numel()}.")
    return t.to(device)


def _captum():
    try:
        import captum.attr as ca
    except ImportError:
        raise UserError("attributions need captum: pip install captum") from None
    return ca


def attributions(model: nn.Module, x: Tensor, target: int | Sequence[int] | Tensor,
                 methods: Sequence[str] = DEFAULT_METHODS, *, n_steps: int = 16, n_samples: int = 8,
                 n_baselines: int = 8, stdevs: float = 0.0, window: int | None = None, stride: int | None = None,
                 seed: int = 0) -> dict[str, Tensor]:
    """Captum attributions of the logit of `target` (one class, or one per example) for images `x`
    ((C, H, W) or (N, C, H, W), [0, 1] pixels) with each method in `methods` (see the module table for
    baselines). Returns {method: (N, C, H, W) float tensor on the CPU}. The model runs in eval mode; its
    parameters are not changed and get no gradients."""
    ca = _captum()
    methods = check_methods(methods)
    x = as_batch(x, model, "x")
    n, c, h, w = x.shape
    t = _targets(target, n, x.device)
    out: dict[str, Tensor] = {}
    np_state = np.random.get_state()
    try:
        with eval_mode(model), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            for m in methods:
                inp = x.clone().requires_grad_(True)
                if m == "IntegratedGradients":
                    a = ca.IntegratedGradients(model).attribute(inp, baselines=torch.zeros_like(inp), target=t,
                                                                n_steps=n_steps)
                elif m == "Saliency":
                    a = ca.Saliency(model).attribute(inp, target=t, abs=True)
                elif m == "GradientShap":
                    g = torch.Generator().manual_seed(seed)
                    base = torch.rand(n_baselines, c, h, w, generator=g).to(x.device)
                    a = ca.GradientShap(model).attribute(inp, baselines=base, target=t, n_samples=n_samples,
                                                         stdevs=stdevs)
                elif m == "Occlusion":
                    side, st = occlusion_window(h, w, window, stride)
                    with torch.no_grad():
                        a = ca.Occlusion(model).attribute(x, sliding_window_shapes=(c, side, side),
                                                          strides=(c, st, st), baselines=0.0, target=t,
                                                          perturbations_per_eval=32)
                else:  # InputXGradient
                    a = ca.InputXGradient(model).attribute(inp, target=t)
                out[m] = a.detach().float().cpu()
    finally:
        np.random.set_state(np_state)
    return out


def _prediction(model: nn.Module, x: Tensor) -> tuple[list[int], list[float]]:
    with torch.no_grad(), eval_mode(model):
        p = torch.softmax(model(x), dim=1)
    conf, pred = p.max(1)
    return pred.tolist(), conf.tolist()


def plot_attributions(model: nn.Module, x_clean: Tensor, x_adv: Tensor, target: int,
                      methods: Sequence[str] = DEFAULT_METHODS, *, ax: Axes | None = None,
                      **settings: Any) -> Figure:
    """Captum attributions of class `target` for a clean image and its adversarial version (both (C, H, W)
    in [0, 1]), side by side with their difference (adversarial - clean), one row per method; channels are
    summed. Clean and adversarial maps of a method share one colour scale, symmetric about 0. Works for any
    model. `settings` go to `attributions` (n_steps, n_samples, n_baselines, stdevs, window, stride, seed).
    `ax` is accepted for API symmetry and ignored. Returns the figure."""
    methods = check_methods(methods)
    xc, xa = as_batch(x_clean, model, "x_clean")[:1], as_batch(x_adv, model, "x_adv")[:1]
    if xc.shape != xa.shape:
        raise UserError(f"x_clean and x_adv must have the same shape; got {tuple(xc.shape)} and {tuple(xa.shape)}.")
    x = torch.cat([xc, xa])
    attr = attributions(model, x, int(target), methods, **settings)
    pred, conf = _prediction(model, x)
    n = len(methods)
    fig = D.new_figure(*D.fit_page(6.4, 1.75 * (n + 1) + 0.7))
    gs = fig.add_gridspec(n + 1, 3)
    for j, name in enumerate(("clean", "adversarial")):
        a = fig.add_subplot(gs[0, j])
        D.show_image(a, x[j], f"{name}: pred {pred[j]} ({100 * conf[j]:.0f}%)")
    D.perturbation_panel(fig, fig.add_subplot(gs[0, 2]), xc[0], xa[0])
    for i, m in enumerate(methods):
        maps = attr[m].sum(1).numpy()  # (2, H, W)
        vmax = float(np.abs(maps).max())
        axes = []
        im = None
        for j, name in enumerate(("clean", "adv")):
            a = fig.add_subplot(gs[i + 1, j])
            im = D.show_signed(a, maps[j], vmax, f"{m}: {name}")
            axes.append(a)
        D.add_colorbar(fig, im, axes, "attribution")
        diff = maps[1] - maps[0]
        a = fig.add_subplot(gs[i + 1, 2])
        im_d = D.show_signed(a, diff, float(np.abs(diff).max()), "adv - clean")
        D.add_colorbar(fig, im_d, a, "difference")
    D.suptitle(fig, f"{model_label(model)}: attributions of class {int(target)} (captum; red raises the logit)")
    return fig


__all__ = ["DEFAULT_METHODS", "METHODS", "attributions", "check_methods", "occlusion_window", "plot_attributions"]
