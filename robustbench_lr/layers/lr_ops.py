"""Kernels of the local relation aggregation (LR-Net, Hu et al., ICCV 2019, Eq. 2).

Status: the reference is a direct transcription of Eq. 2 with `F.unfold`; the `shift` path computes the
same function with k*k shifted slices and a hand-written backward (docs/performance.md §4-5) and is
checked against the reference in fp64 by the tests. A C/OpenMP CPU kernel and a Triton GPU kernel are
added by the performance work and registered in `IMPLS`.

Notation (all shapes NCHW):
    x    (N, C, H, W)      values: the layer input itself
    q    (N, G, Ho, Wo)    queries on the strided output grid, G = C / m groups
    key  (N, G, H, W)      keys on the input grid
    geo  (G, k*k) or None  geometry prior (additive logit bias), offsets row-major (dy, dx) from (-r, -r)
    w    (N, G, k*k, Ho, Wo) softmax weights; channel c uses group c // m (contiguous groups)
    out  (N, C, Ho, Wo)    out[c, p] = sum_o w[c // m, o, p] * x[c, p * s + o]

Border modes:
    "mask"  out-of-image neighbours get weight exactly 0 (softmax over in-image cells), as the authors' op.
    "zeros" zero-padded keys and values take part in the softmax, as the public unfold ports.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

APPEARANCES = ("sqdiff", "absdiff", "dot", None)
BORDERS = ("mask", "zeros")


def output_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """Output grid of a stride-`stride` layer with 'same' padding: ceil(h / s) x ceil(w / s)."""
    return (h - 1) // stride + 1, (w - 1) // stride + 1


@functools.lru_cache(maxsize=64)
def _valid_mask_cached(h: int, w: int, k: int, stride: int, device: str) -> Tensor:
    ones = torch.ones(1, 1, h, w, device=device)
    ho, wo = output_size(h, w, stride)
    # (1, k*k, Ho*Wo) -> (k*k, Ho, Wo): 1 where the neighbour lies inside the image
    return (F.unfold(ones, k, padding=k // 2, stride=stride) > 0.5).view(k * k, ho, wo)


def valid_mask(h: int, w: int, k: int, stride: int, device: torch.device | str) -> Tensor:
    """Boolean (k*k, Ho, Wo): True where offset o of output pixel p falls inside the H x W image."""
    return _valid_mask_cached(h, w, k, stride, str(device))


def phi(q: Tensor, kk: Tensor, appearance: str | None) -> Tensor | None:
    """Appearance composability term Phi(q, k) (paper Eq. 2), elementwise with broadcasting."""
    if appearance == "sqdiff":
        return -(q - kk).square()
    if appearance == "absdiff":
        return -(q - kk).abs()
    if appearance == "dot":
        return q * kk
    return None


# --------------------------------------------------------------------------------------------------
# Reference: unfold everything (k*k copies of x), plain autograd. Used only to test the fast paths.
# --------------------------------------------------------------------------------------------------
def weights_reference(
    q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, size: tuple[int, int], kernel_size: int,
    stride: int, appearance: str | None, border: str, groups: int, batch: int,
) -> Tensor:
    """Aggregation weights (N, G, k*k, Ho, Wo) by unfolding the keys."""
    k, (h, w) = kernel_size, size
    ho, wo = output_size(h, w, stride)
    kk2 = k * k
    logits = None
    if appearance is not None:
        assert q is not None and key is not None
        kunf = F.unfold(key, k, padding=k // 2, stride=stride).view(batch, groups, kk2, ho, wo)
        logits = phi(q.unsqueeze(2), kunf, appearance)  # (N, G, k*k, Ho, Wo)
    if geo is not None:
        g = geo.view(1, groups, kk2, 1, 1)
        logits = g.expand(batch, groups, kk2, ho, wo) if logits is None else logits + g
    if logits is None:  # neither term: a plain box filter
        dev = key.device if key is not None else (geo.device if geo is not None else "cpu")
        logits = torch.zeros(batch, groups, kk2, ho, wo, device=dev)
    if border == "mask":
        logits = logits.masked_fill(~valid_mask(h, w, k, stride, logits.device), float("-inf"))
    return torch.softmax(logits, dim=2)


def local_relation_reference(
    x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int, stride: int,
    appearance: str | None, border: str, groups: int,
) -> Tensor:
    """Unfold-based transcription of Eq. 2 (materialises x k*k times)."""
    n, c, h, w = x.shape
    k = kernel_size
    ho, wo = output_size(h, w, stride)
    wts = weights_reference(q, key, geo, size=(h, w), kernel_size=k, stride=stride, appearance=appearance,
                            border=border, groups=groups, batch=n)
    xunf = F.unfold(x, k, padding=k // 2, stride=stride).view(n, groups, c // groups, k * k, ho, wo)
    return (wts.unsqueeze(2) * xunf).sum(3).reshape(n, c, ho, wo)


# --------------------------------------------------------------------------------------------------
# Shift implementation: the weights are materialised (k*k/m times the input), the values never are.
# --------------------------------------------------------------------------------------------------
def _shifted(padded: Tensor, dy: int, dx: int, ho: int, wo: int, stride: int) -> Tensor:
    """View of `padded` (.., H+2r, W+2r) seen from offset index (dy, dx) on the strided output grid."""
    return padded[..., dy: dy + (ho - 1) * stride + 1: stride, dx: dx + (wo - 1) * stride + 1: stride]


def _logits_shift(q: Tensor | None, key: Tensor | None, geo: Tensor | None, size: tuple[int, int], k: int,
                  stride: int, appearance: str | None, border: str, n: int, g: int, like: Tensor) -> Tensor:
    """Logits in offset-major layout (k*k, N, G, Ho, Wo): every per-offset slice is contiguous."""
    h, w = size
    ho, wo = output_size(h, w, stride)
    kk2, r = k * k, k // 2
    logits = like.new_empty(kk2, n, g, ho, wo)
    if appearance is not None:
        kpad = F.pad(key, (r, r, r, r))
        for o in range(kk2):
            ks = _shifted(kpad, o // k, o % k, ho, wo, stride)
            if appearance == "dot":
                torch.mul(q, ks, out=logits[o])
            else:
                torch.sub(q, ks, out=logits[o])
        if appearance == "sqdiff":
            logits.square_().neg_()
        elif appearance == "absdiff":
            logits.abs_().neg_()
    else:
        logits.zero_()
    if geo is not None:
        logits += geo.t().reshape(kk2, 1, g, 1, 1)
    if border == "mask":
        logits.masked_fill_(~valid_mask(h, w, k, stride, logits.device).unsqueeze(1).unsqueeze(1), float("-inf"))
    return logits


def _softmax0_(logits: Tensor) -> Tensor:
    """In-place softmax over the leading (offset) axis."""
    logits.sub_(logits.amax(0, keepdim=True)).exp_()
    return logits.div_(logits.sum(0, keepdim=True))


class _LocalRelationShift(torch.autograd.Function):
    """Eq. 2 with shifted slices; saves the padded x, q, key and the softmax weights (k*k/m times the input)."""

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, k: int,
                stride: int, appearance: str | None, border: str, g: int) -> Tensor:
        n, c, h, w = x.shape
        m, r = c // g, k // 2
        ho, wo = output_size(h, w, stride)
        wts = _softmax0_(_logits_shift(q, key, geo, (h, w), k, stride, appearance, border, n, g, x))
        xpad = F.pad(x, (r, r, r, r))
        out = x.new_zeros(n, g, m, ho, wo)
        for o in range(k * k):
            xs = _shifted(xpad, o // k, o % k, ho, wo, stride).view(n, g, m, ho, wo)
            out.addcmul_(wts[o].unsqueeze(2), xs)
        ctx.save_for_backward(xpad, q, key, wts)
        ctx.cfg = (k, stride, appearance, (h, w), geo is not None)
        return out.view(n, c, ho, wo)

    @staticmethod
    def backward(ctx, dout: Tensor):
        xpad, q, key, wts = ctx.saved_tensors
        k, stride, appearance, (h, w), has_geo = ctx.cfg
        need_x, need_q, need_key, need_geo = ctx.needs_input_grad[:4]
        kk2, n, g, ho, wo = wts.shape
        c = xpad.shape[1]
        m, r = c // g, k // 2
        dout5 = dout.contiguous().view(n, g, m, ho, wo)

        dx = None
        if need_x:
            dxpad = torch.zeros_like(xpad)
            for o in range(kk2):
                ds = _shifted(dxpad, o // k, o % k, ho, wo, stride).view(n, g, m, ho, wo)
                ds.addcmul_(wts[o].unsqueeze(2), dout5)
            dx = dxpad[:, :, r: r + h, r: r + w]

        dq = dkey = dgeo = None
        need_logits = need_geo and has_geo or (appearance is not None and (need_q or need_key))
        if need_logits:
            # dW[o] = sum over the m channels of a group of dout * x_shift(o)
            dlog = torch.empty_like(wts)
            prod = torch.empty_like(dout5)
            for o in range(kk2):
                xs = _shifted(xpad, o // k, o % k, ho, wo, stride).view(n, g, m, ho, wo)
                torch.sum(torch.mul(dout5, xs, out=prod), dim=2, out=dlog[o])
            # softmax backward: dL = w * (dW - sum_o w * dW)
            dlog.mul_(wts)
            dlog.addcmul_(wts, dlog.sum(0, keepdim=True), value=-1.0)
            if need_geo and has_geo:
                dgeo = dlog.sum(dim=(1, 3, 4)).t()  # (k*k, G) -> (G, k*k)
            if appearance is not None and (need_q or need_key):
                kpad = F.pad(key, (r, r, r, r))
                dkpad = torch.zeros_like(kpad) if need_key else None
                dq = torch.zeros_like(q) if need_q else None
                tmp = torch.empty_like(q)
                for o in range(kk2):
                    ks = _shifted(kpad, o // k, o % k, ho, wo, stride)
                    if appearance == "dot":  # dPhi/dq = k, dPhi/dk = q
                        if need_q:
                            dq.addcmul_(dlog[o], ks)
                        if need_key:
                            _shifted(dkpad, o // k, o % k, ho, wo, stride).addcmul_(dlog[o], q)
                        continue
                    torch.sub(q, ks, out=tmp)  # q - k
                    if appearance == "sqdiff":  # dPhi/dq = -2(q-k), dPhi/dk = 2(q-k)
                        tmp.mul_(dlog[o]).mul_(2.0)
                    else:  # absdiff: dPhi/dq = -sign(q-k), dPhi/dk = sign(q-k)
                        tmp.sign_().mul_(dlog[o])
                    if need_q:
                        dq.sub_(tmp)
                    if need_key:
                        _shifted(dkpad, o // k, o % k, ho, wo, stride).add_(tmp)
                if need_key:
                    dkey = dkpad[:, :, r: r + h, r: r + w]
        return dx, dq, dkey, dgeo, None, None, None, None, None


def _shift_impl(x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int,
                stride: int, appearance: str | None, border: str, groups: int) -> Tensor:
    if key is None and geo is None:
        # Neither term: a plain box filter over the window; use the reference (rare, ablation only).
        return local_relation_reference(x, q, key, geo, kernel_size=kernel_size, stride=stride,
                                        appearance=appearance, border=border, groups=groups)
    return _LocalRelationShift.apply(x, q, key, geo, kernel_size, stride, appearance, border, groups)


# name -> (callable, predicate(device) telling whether it can run there)
IMPLS: dict[str, Callable[..., Tensor]] = {
    "reference": local_relation_reference,
    "shift": _shift_impl,
}


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map 'auto' to the fastest implementation available on `device`."""
    if impl != "auto":
        return impl
    for name in AUTO_ORDER.get(device.type, ()):
        if name in IMPLS and AVAILABLE.get(name, lambda d: True)(device):
            return name
    return "shift"


# Preference order of `impl="auto"` per device type, and availability predicates; the fast kernels
# register themselves here when their modules import.
AUTO_ORDER: dict[str, tuple[str, ...]] = {"cpu": ("shift",), "cuda": ("shift",)}
AVAILABLE: dict[str, Callable[[torch.device], bool]] = {}


def local_relation(
    x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int, stride: int = 1,
    appearance: str | None = "sqdiff", border: str = "mask", groups: int, impl: str = "auto",
) -> Tensor:
    """Aggregate `x` over k x k windows with local relation weights (before the output 1x1 conv).

    Args:
        x: values, (N, C, H, W).
        q: queries on the output grid, (N, G, Ho, Wo); None when `appearance` is None.
        key: keys, (N, G, H, W); None when `appearance` is None.
        geo: geometry prior (G, k*k) added to the logits, or None.
        kernel_size: odd window size k.
        stride: stride of the query grid.
        appearance: 'sqdiff' | 'absdiff' | 'dot' | None.
        border: 'mask' | 'zeros'.
        groups: G = C / m.
        impl: 'auto' | 'reference' | 'shift' | any registered fast kernel.

    Returns:
        (N, C, Ho, Wo) aggregated values.
    """
    name = resolve_impl(impl, x.device)
    return IMPLS[name](x, q, key, geo, kernel_size=kernel_size, stride=stride, appearance=appearance,
                       border=border, groups=groups)


def local_relation_weights(
    q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, size: tuple[int, int], kernel_size: int,
    stride: int, appearance: str | None, border: str, groups: int, batch: int,
) -> Tensor:
    """Softmax aggregation weights (N, G, k*k, Ho, Wo); non-negative, summing to 1 over k*k."""
    return weights_reference(q, key, geo, size=size, kernel_size=kernel_size, stride=stride,
                             appearance=appearance, border=border, groups=groups, batch=batch)


def macs(channels: int, groups: int, kernel_size: int, out_hw: tuple[int, int]) -> int:
    """Multiply-accumulates of the aggregation and logits per image ((C + G) * k^2 * Ho * Wo)."""
    return (channels + groups) * kernel_size * kernel_size * math.prod(out_hw)
