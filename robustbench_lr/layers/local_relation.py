"""LocalRelation2d: the local relation layer of LR-Net.

Paper: Han Hu, Zheng Zhang, Zhenda Xie, Stephen Lin. "Local Relation Networks for Image Recognition",
ICCV 2019. https://arxiv.org/abs/1904.11491

    w(p', p) = softmax_{p in k x k window of p'} ( Phi(q(p'), k(p)) + geo(p - p') )        (Eq. 2)
    y(c, p') = sum_p w_{g(c)}(p', p) x(c, p),   then a 1x1 conv C -> C                     (Fig. 2)

Status: Eq. 2 and Fig. 2 are verified (docs/papers.md §1.1-1.2). Choices the brief marks unverified are
arguments with documented defaults: the appearance term Phi (default squared difference, [R]), the
geometry MLP's hidden width (default 32; the public ports use G / 2, which at small widths is a 1-4 unit
MLP and cost a point of accuracy on lrnet_tiny: 97.2% -> 98.2% held-out on mnist5k with 32) and its input
scaling (offsets divided by r = k // 2, so they lie in [-1, 1]), and the border rule (default "mask", as the authors'
CUDA op). Keys and queries are 1x1 convs C -> C/m with bias; the value is the input itself. An optional
softmax temperature T (default 1, the paper's layer) divides the appearance term: Phi(q, k) / T + geo; it is
folded into the key/query projection (see `LocalRelation2d._qk`), so every kernel computes it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import UserError, check_choice, check_odd_kernel, check_positive_int
from . import lr_cpu, lr_ops
from .lr_ops import APPEARANCES, BORDERS, local_relation, local_relation_weights, output_size
from .pointwise import PointwiseConv2d, pointwise_conv

GEOMETRIES = ("mlp", "table", None)
GEOMETRY_INPUTS = ("normalized", "pixels")


def implementations() -> tuple[str, ...]:  # noqa: D401
    """Names accepted by `impl` ('auto' picks the fastest available on the input's device)."""
    return ("auto", *lr_ops.IMPLS)


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature <= 0:
        raise UserError(f"temperature must be a finite number > 0 (1.0 is the paper's layer); got {temperature!r}.")
    return float(temperature)


def _qk_scales(appearance: str | None, temperature: float) -> tuple[float, float]:
    """(query scale, key scale) with Phi(a q, b k) = Phi(q, k) / T: sqdiff and dot 1/sqrt(T) each (the term is
    quadratic / bilinear), absdiff 1/T each (|a q - a k| = a |q - k|)."""
    if temperature == 1.0 or appearance is None:
        return 1.0, 1.0
    a = 1.0 / temperature if appearance == "absdiff" else 1.0 / math.sqrt(temperature)
    return a, a


def _check_args(channels: int, kernel_size: int, channel_sharing: int, appearance: str | None,
                geometry: str | None, border: str, stride: int, geometry_input: str, impl: str) -> None:
    check_odd_kernel("kernel_size", kernel_size)
    check_positive_int("channels", channels)
    check_positive_int("channel_sharing", channel_sharing)
    if channels % channel_sharing:
        raise UserError(
            f"channels={channels} is not divisible by channel_sharing={channel_sharing}; choose "
            f"channel_sharing among the divisors of {channels} "
            f"({', '.join(str(d) for d in range(1, channels + 1) if channels % d == 0)})."
        )
    check_choice("appearance", appearance, APPEARANCES)
    check_choice("geometry", geometry, GEOMETRIES)
    check_choice("border", border, BORDERS)
    check_choice("geometry_input", geometry_input, GEOMETRY_INPUTS)
    check_choice("impl", impl, implementations())
    check_positive_int("stride", stride)


def _window_offsets(k: int, geometry_input: str) -> Tensor:
    """(k*k, 2) relative offsets (dy, dx), row-major from (-r, -r); divided by r when 'normalized'."""
    r = k // 2
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    offsets = torch.stack([dy, dx], dim=-1).reshape(k * k, 2).float()
    return offsets / r if geometry_input == "normalized" and r > 0 else offsets


class LocalRelation2d(nn.Module):
    """Local relation layer: k x k aggregation with pairwise appearance and geometry weights.

    Args:
        channels: C, input and output channels. Must be divisible by `channel_sharing`.
        kernel_size: k, odd window size (>= 1).
        channel_sharing: m, channels that share one aggregation (G = C / m groups, m = 8 in the paper).
        appearance: Phi: 'sqdiff' -(q-k)^2 (default), 'absdiff' -|q-k|, 'dot' q*k, or None (geometry only).
        geometry: 'mlp' (2-layer MLP with ReLU on relative offsets, the paper's LR(G)), 'table' (k x k x G
            learned values, LR(G*)) or None.
        border: 'mask' (out-of-image neighbours get zero weight) or 'zeros' (zero-padded keys/values enter
            the softmax, like unfold ports).
        stride: stride of the query grid; the output is ceil(H / s) x ceil(W / s).
        geometry_hidden: hidden width of the geometry MLP (default 32).
        geometry_input: 'normalized' (offsets / r, in [-1, 1]) or 'pixels' (integer offsets).
        bias: bias of the trailing 1x1 conv (models set False, since a BatchNorm follows).
        impl: 'auto' | 'shift' | 'reference' | a registered fast kernel. 'reference' materialises the
            unfolded input and is meant for tests only.
        temperature: T > 0 (default 1.0, the paper's layer): the appearance logits are divided by it before
            the geometry prior is added and the softmax taken, w = softmax(Phi(q, k) / T + geo). T > 1
            flattens the appearance term, T < 1 sharpens it; without an appearance term it has no effect.
            Exact for every implementation: it is folded into the query and key 1x1 convs' outputs.

    Shape:
        input (N, C, H, W) -> output (N, C, ceil(H/s), ceil(W/s)).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        channel_sharing: int = 8,
        appearance: str | None = "sqdiff",
        geometry: str | None = "mlp",
        border: str = "mask",
        stride: int = 1,
        *,
        geometry_hidden: int | None = None,
        geometry_input: str = "normalized",
        bias: bool = True,
        impl: str = "auto",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        _check_args(channels, kernel_size, channel_sharing, appearance, geometry, border, stride, geometry_input, impl)
        self.temperature = _check_temperature(temperature)
        self.channels = channels
        self.kernel_size = kernel_size
        self.channel_sharing = channel_sharing
        self.groups = channels // channel_sharing
        self.appearance = appearance
        self.geometry = geometry
        self.border = border
        self.stride = stride
        self.impl = impl
        self.geometry_input = geometry_input
        g = self.groups
        if appearance is not None:
            self.query = nn.Conv2d(channels, g, 1, stride=stride, bias=True)
            self.key = nn.Conv2d(channels, g, 1, bias=True)
        else:
            self.query = self.key = None
        self.register_buffer("offsets", _window_offsets(kernel_size, geometry_input), persistent=False)
        self.geometry_mlp = self.geometry_table = None
        if geometry == "mlp":
            hidden = geometry_hidden if geometry_hidden is not None else 32
            self.geometry_mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, g))
        elif geometry == "table":
            self.geometry_table = nn.Parameter(torch.zeros(g, kernel_size * kernel_size))
        self._prior_cache: tuple | None = None  # (key, table) of the frozen geometry MLP, see geometry_prior
        self.proj = PointwiseConv2d(channels, channels, bias=bias)
        self.reset_parameters_()

    def reset_parameters_(self) -> None:
        """Initialise keys/queries with PyTorch's default (fan-in) conv init, so the logits start O(1)
        instead of a peaked softmax, the projection with He init and a learned table at zero. Models call
        this after their generic He initialisation."""
        for conv in (self.query, self.key):
            if conv is not None:
                conv.reset_parameters()
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_out", nonlinearity="relu")
        if self.proj.bias is not None:
            nn.init.zeros_(self.proj.bias)
        if self.geometry_mlp is not None:
            for lin in self.geometry_mlp:
                if isinstance(lin, nn.Linear):
                    lin.reset_parameters()
        if self.geometry_table is not None:
            nn.init.zeros_(self.geometry_table)

    # ---------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return (f"{self.channels}, kernel_size={self.kernel_size}, channel_sharing={self.channel_sharing}, "
                f"appearance={self.appearance!r}, geometry={self.geometry!r}, border={self.border!r}, "
                f"stride={self.stride}, impl={self.impl!r}"
                + (f", temperature={self.temperature:g}" if self.temperature != 1.0 else ""))

    def geometry_prior(self) -> Tensor | None:
        """The learned prior as (G, k*k) logits (offsets row-major from (-r, -r)), or None.

        The MLP's table depends on its parameters only. When none of them requires grad (attacks,
        `requires_grad_(False)`), it is computed once and reused until a parameter or the offsets change
        (identity, storage or in-place version), so frozen models skip the MLP on every call."""
        if self.geometry_table is not None:
            return self.geometry_table
        if self.geometry_mlp is None:
            return None
        tensors = (self.offsets, *self.geometry_mlp.parameters())
        if any(t.requires_grad for t in tensors):
            return self.geometry_mlp(self.offsets).t()  # (k*k, G) -> (G, k*k)
        key = tuple((t, t.data_ptr(), t._version) for t in tensors)
        cached = self._prior_cache
        if cached is not None and len(cached[0]) == len(key) and all(
                a[0] is b[0] and a[1:] == b[1:] for a, b in zip(cached[0], key)):
            return cached[1]
        with torch.no_grad():
            table = self.geometry_mlp(self.offsets).t().contiguous()
        self._prior_cache = (key, table)
        return table

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise UserError(f"LocalRelation2d expects a 4-D (N, C, H, W) input; got shape {tuple(x.shape)}.")
        if x.shape[1] != self.channels:
            raise UserError(f"LocalRelation2d has channels={self.channels} but the input has {x.shape[1]} "
                            f"channels (shape {tuple(x.shape)}).")

    def _qk(self, x: Tensor) -> Tensor:
        """Queries and keys from one 1x1 projection (the parameters stay separate), on the full grid:
        (N, 2G, H, W), queries in channels :G. One matrix product with twice the outputs instead of two
        small convs (oneDNN is several times slower on those, see pointwise.py). With a temperature the
        query and key outputs are scaled (`_qk_scales`) so that Phi of the scaled pair is Phi / T; the scale
        goes into the (G, C) weights and the biases, not into the (N, 2G, H, W) output."""
        w = torch.cat([self.query.weight, self.key.weight])
        b = torch.cat([self.query.bias, self.key.bias])
        sq, sk = _qk_scales(self.appearance, self.temperature)
        if (sq, sk) != (1.0, 1.0):
            g = self.groups
            scale = w.new_tensor([sq] * g + [sk] * g)  # (2G,)
            w, b = w * scale.view(-1, 1, 1, 1), b * scale
        return pointwise_conv(x, w, b)

    def _prior(self, x: Tensor) -> Tensor | None:
        geo = self.geometry_prior()  # (G, k*k)
        return geo.to(x.dtype) if geo is not None else None

    def _embed(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        q = key = None
        if self.query is not None:
            # A strided query is the full-grid query subsampled, exactly what a stride-s 1x1 conv computes.
            g, s = self.groups, self.stride
            qk = self._qk(x)  # (N, 2G, H, W)
            q = qk[:, :g] if s == 1 else qk[:, :g, ::s, ::s]  # (N, G, Ho, Wo)
            key = qk[:, g:]  # (N, G, H, W)
        return q, key, self._prior(x)

    def aggregate(self, x: Tensor) -> Tensor:
        """The aggregation of Eq. 2 before the trailing 1x1 conv: (N, C, Ho, Wo)."""
        self._check_input(x)
        kw = dict(kernel_size=self.kernel_size, stride=self.stride, appearance=self.appearance, border=self.border,
                  groups=self.groups)
        if (self.query is not None and lr_ops.resolve_impl(self.impl, x.device) == "cpu"
                and lr_cpu.fused_available(x, self.kernel_size)):
            # the kernel reads queries and keys from the projection's output directly and returns one gradient
            return lr_cpu.local_relation_fused(x, self._qk(x), self._prior(x), **kw)
        q, key, geo = self._embed(x)
        return local_relation(x, q, key, geo, impl=self.impl, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.aggregate(x))

    def aggregation_weights(self, x: Tensor) -> Tensor:
        """Softmax weights (N, G, k*k, Ho, Wo), G = C/m; the k*k axis runs over offsets (dy, dx) row-major
        from (-r, -r) to (r, r). Each (n, g, :, i, j) is non-negative and sums to 1; with border='mask'
        out-of-image offsets are exactly 0."""
        self._check_input(x)
        q, key, geo = self._embed(x)
        return local_relation_weights(q, key, geo, size=(x.shape[2], x.shape[3]), kernel_size=self.kernel_size,
                                      stride=self.stride, appearance=self.appearance, border=self.border,
                                      groups=self.groups, batch=x.shape[0])

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of the output for an H x W input."""
        return output_size(h, w, self.stride)

    def extra_macs(self, input_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates of one image's logits and aggregation for a (C, H, W) input; the key, query
        and output 1x1 convs are counted as convolutions (see models.profile)."""
        return lr_ops.macs(self.channels, self.groups if self.appearance else 0, self.kernel_size,
                           self.output_size(input_shape[-2], input_shape[-1]))


__all__ = ["LocalRelation2d", "implementations"]
