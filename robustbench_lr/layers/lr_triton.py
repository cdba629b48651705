"""Triton kernel of the local relation aggregation (LR-Net, Hu et al., ICCV 2019, arXiv 1904.11491, Eq. 2).

Computes exactly the function of `lr_ops.local_relation_reference` (both border modes, every appearance
term, the optional geometry bias, any stride) as a fused stencil, forward and backward, without ever
writing a k*k tensor to memory (docs/performance.md §3 and §5.2 Tier 4):

    forward   one program per (n, g, tile of BH x BW output pixels), the m channels of the group held as an
              [m, pixels] register tile. Two passes over the k*k offsets: the first finds the max logit,
              the second sums exp(logit - max) and exp(logit - max) * x. It writes the output and the
              per-(pixel, group) log-sum-exp (fp32; fp64 for fp64 inputs) and nothing else.
    backward  recomputes the softmax weights P = exp(logit - lse) from q, key, geo and the LSE:
      kernel A (output-pixel tiles): D = sum_c dout * out (the saved output, flash-attention style),
              dP = sum_c dout * x_shift, dL = P (dP - D); dq (including the zero-padded keys of the "zeros"
              border) and per-program partial sums of dgeo, reduced by one torch sum (deterministic, no
              atomics). Stores D for kernel B when dkey is needed.
      kernel B (input-pixel tiles): dx and dkey as gathers over the flipped window: input pixel y collects
              P[p, o] dout[:, p] and dL[p, o] dPhi/dk from the output pixels p with p * s + o = y. Cells
              outside the image never reach x or key, so kernel B is the same for both borders.
    Only the gradients in `ctx.needs_input_grad` are computed: an input-gradient pass (geo frozen) skips
    dgeo, and kernel A is skipped when neither dq, dkey nor dgeo is needed.

Kernel size, stride, appearance, border, geometry and the gradient set are `tl.constexpr`. Logits, softmax
and accumulation are fp32 even for bf16/fp16 inputs (fp64 for fp64 inputs); outputs and gradients take the
dtype of the corresponding input. For bf16 the backward's D is formed from the bf16 output, which adds
about 1% (of max |dq|) to dq/dkey (an fp64 emulation at N=8, C=64, 32x32, k=7). Tensors are NCHW-contiguous
(other layouts are copied). The k*k shifted loads of a tile reuse its halo through L1/L2 (Triton has no
explicit shared-memory gather). Group widths m > 128, CPU tensors outside interpreter mode, shape
mismatches, and a missing appearance and geometry term fall back to `lr_ops.IMPLS["shift"]`.

The kernels themselves are in lr_triton_kernels.py; this module holds their launch logic.

Status: validated only in TRITON_INTERPRET=1 mode on CPU tensors (no GPU was available when it was
written): forward and all gradients match the unfold reference (tests/test_lr_triton.py). Beyond that,
the kernels were only compiled offline for sm_90 (Triton + ptxas, no GPU): 40-80 registers per thread at
k <= 9, m <= 16, no spills. Their GPU speed is NOT measured, nor bf16 numerics on real hardware; tile
sizes, warps and the unroll factor (KX_UNROLL) are untuned guesses. On a CUDA device,
`python -m robustbench_lr.bench layer --impls triton,shift,reference` reports it against the measured
copy bandwidth.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import Tensor

from . import lr_ops
from .lr_triton_kernels import _INTERPRET, HAS_TRITON, tl, triton

log = logging.getLogger(__name__)

if HAS_TRITON:  # module globals, so tests can wrap them (lr_triton._lr_fwd_kernel = spy)
    from .lr_triton_kernels import _lr_bwd_in_kernel, _lr_bwd_out_kernel, _lr_fwd_kernel

_APPEARANCE = {None: 0, "sqdiff": 1, "absdiff": 2, "dot": 3}
# Fused multiply-add contraction, pinned at every launch: Triton 3.9 warns that its default (on) becomes off in
# 3.10, which would change the kernels' last bits silently. "On" is what the offline sm_90 compile checks.
FP_FUSION = True
_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
MAX_GROUP_WIDTH = 128
_TILE_OVERRIDE: tuple[int, int] | None = None  # (BH, BW) powers of two; tests force small multi-tile grids
# Unroll factor of the inner (dx) offset loop. Offline sm_90 builds (k=7, m=8, fp32) use about 48-64 registers
# per thread at 2 and 145-163 when fully unrolled (k), with no spills either way; which is faster is not measured.
KX_UNROLL = 2


def _next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def _tile(h: int, w: int, mp: int) -> tuple[int, int]:
    """(BH, BW): a power-of-two tile of about 1024 / MP pixels (16..128), at most 32 wide. Untuned on a GPU."""
    if _TILE_OVERRIDE is not None:
        return _TILE_OVERRIDE
    bp = max(16, min(128, 1024 // mp))
    bw = min(_next_pow2(w), 32, bp)
    bh = max(1, bp // bw)
    bh = min(bh, _next_pow2(h))
    return bh, bw


def _unroll(k: int) -> int:
    return max(1, min(KX_UNROLL, k))


def _grid(ng: int, h: int, w: int, bh: int, bw: int) -> tuple[int, int, int]:
    tw = triton.cdiv(w, bw)
    tiles = triton.cdiv(h, bh) * tw
    return ng * tiles, tw, tiles


def _acc_dtype(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _on_device(t: Tensor):
    """Launch on the tensors' GPU (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _num_warps(bp: int, mp: int) -> int:
    return 4 if bp * mp >= 512 else 2


class _LocalRelationTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, k: int, stride: int,
                appearance: str | None, border: str, g: int) -> Tensor:
        n, c, h, w = x.shape
        m = c // g
        ho, wo = lr_ops.output_size(h, w, stride)
        app = _APPEARANCE[appearance]
        x = x.contiguous()
        q = q.contiguous() if app else None
        key = key.contiguous() if app else None
        geo = geo.contiguous() if geo is not None else None
        out = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device)
        lse_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        lse = torch.empty((n, g, ho, wo), dtype=lse_dtype, device=x.device)
        mp = _next_pow2(m)
        bh, bw = _tile(ho, wo, mp)
        nprog, tw, tiles = _grid(n * g, ho, wo, bh, bw)
        dummy = x  # never dereferenced when the matching constexpr flag is off
        with _on_device(x):
            _lr_fwd_kernel[(nprog,)](
                x, q if app else dummy, key if app else dummy, geo if geo is not None else dummy, out, lse,
                g, h, w, ho, wo, tw, tiles,
                M=m, MP=mp, KS=k, STRIDE=stride, APP=app, HAS_GEO=geo is not None, MASK=border == "mask",
                BH=bh, BW=bw, ACC=_acc_dtype(x), UNROLL=_unroll(k), num_warps=_num_warps(bh * bw, mp),
                enable_fp_fusion=FP_FUSION)
        ctx.save_for_backward(x, q, key, geo, out, lse)
        ctx.cfg = (k, stride, app, border == "mask", g)
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        x, q, key, geo, out, lse = ctx.saved_tensors
        k, stride, app, mask, g = ctx.cfg
        need_x, need_q, need_key, need_geo = ctx.needs_input_grad[:4]
        need_q = bool(need_q and app)
        need_key = bool(need_key and app)
        need_geo = bool(need_geo and geo is not None)
        dout = dout.contiguous()
        with _on_device(x):
            return _LocalRelationTriton._backward(x, q, key, geo, out, lse, dout, k, stride, app, mask, g,
                                                  bool(need_x), need_q, need_key, need_geo)

    @staticmethod
    def _backward(x, q, key, geo, out, lse, dout, k, stride, app, mask, g, need_x, need_q, need_key, need_geo):
        n, c, h, w = x.shape
        m = c // g
        ho, wo = lse.shape[-2:]
        mp = _next_pow2(m)
        acc = _acc_dtype(x)
        dummy = x  # never dereferenced when the matching constexpr flag is off
        dx = dq = dkey = dgeo = None
        dsum = None
        if need_q or need_key or need_geo:
            bh, bw = _tile(ho, wo, mp)
            nprog, tw, tiles = _grid(n * g, ho, wo, bh, bw)
            dq = torch.empty_like(q) if need_q else None
            dsum = torch.empty_like(lse) if need_key else None
            part = torch.empty((nprog, k * k), dtype=lse.dtype, device=x.device) if need_geo else None
            _lr_bwd_out_kernel[(nprog,)](
                x, q if app else dummy, key if app else dummy, geo if geo is not None else dummy, out, lse, dout,
                dq if need_q else dummy, dsum if need_key else dummy, part if need_geo else dummy,
                g, h, w, ho, wo, tw, tiles,
                M=m, MP=mp, KS=k, STRIDE=stride, APP=app, HAS_GEO=geo is not None, MASK=mask, BH=bh, BW=bw,
                ACC=acc, UNROLL=_unroll(k), NEED_DQ=need_q, NEED_DGEO=need_geo, STORE_D=need_key,
                num_warps=_num_warps(bh * bw, mp), enable_fp_fusion=FP_FUSION)
            if need_geo:
                dgeo = part.view(n, g, -1, k * k).sum(dim=(0, 2)).to(geo.dtype)
        if need_x or need_key:
            bh, bw = _tile(h, w, mp)
            nprog, tw, tiles = _grid(n * g, h, w, bh, bw)
            dx = torch.empty_like(x) if need_x else None
            dkey = torch.empty_like(key) if need_key else None
            _lr_bwd_in_kernel[(nprog,)](
                x, q if app else dummy, key if app else dummy, geo if geo is not None else dummy, lse, dout,
                dsum if need_key else dummy, dx if need_x else dummy, dkey if need_key else dummy,
                g, h, w, ho, wo, tw, tiles,
                M=m, MP=mp, KS=k, STRIDE=stride, APP=app, HAS_GEO=geo is not None, BH=bh, BW=bw, ACC=acc,
                UNROLL=_unroll(k), NEED_DX=bool(need_x), NEED_DK=need_key, num_warps=_num_warps(bh * bw, mp),
                enable_fp_fusion=FP_FUSION)
        return dx, dq, dkey, dgeo, None, None, None, None, None


def supported(x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int,
              stride: int, appearance: str | None, border: str, groups: int) -> bool:
    """True when the Triton kernel handles these inputs (otherwise `impl='triton'` uses the shift path)."""
    if not HAS_TRITON or x.dim() != 4 or groups < 1 or x.shape[1] % groups:
        return False
    if appearance not in _APPEARANCE or border not in lr_ops.BORDERS or kernel_size < 1 or kernel_size % 2 == 0:
        return False
    if stride < 1 or x.shape[1] // groups > MAX_GROUP_WIDTH or x.numel() == 0:
        return False
    if appearance is None and geo is None:
        return False
    if appearance is not None and (q is None or key is None):
        return False
    n, c, h, w = x.shape
    ho, wo = lr_ops.output_size(h, w, stride)
    if appearance is not None and (tuple(q.shape) != (n, groups, ho, wo) or tuple(key.shape) != (n, groups, h, w)):
        return False  # the shift path raises the shape error
    if geo is not None and geo.numel() != groups * kernel_size * kernel_size:
        return False
    ts = [t for t in ((x, geo) if appearance is None else (x, q, key, geo)) if t is not None]
    if any(t.dtype not in _FLOATS or t.device != x.device for t in ts):
        return False
    if x.device.type == "cuda":
        if _INTERPRET:
            return False
        cap = torch.cuda.get_device_capability(x.device)
        if cap < (7, 0) or (x.dtype == torch.bfloat16 and cap < (8, 0)):
            return False
        return True
    return x.device.type == "cpu" and _INTERPRET


def available(device: torch.device | str | None = None) -> bool:
    """True on a CUDA device with Triton importable (and not in interpreter mode)."""
    if not HAS_TRITON or _INTERPRET or not torch.cuda.is_available():
        return False
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return False
    try:
        return torch.cuda.get_device_capability(dev) >= (7, 0)
    except (RuntimeError, AssertionError):
        return False


def _triton_impl(x: Tensor, q: Tensor | None, key: Tensor | None, geo: Tensor | None, *, kernel_size: int,
                 stride: int, appearance: str | None, border: str, groups: int) -> Tensor:
    kw = dict(kernel_size=kernel_size, stride=stride, appearance=appearance, border=border, groups=groups)
    if not supported(x, q, key, geo, **kw):
        return lr_ops.IMPLS["shift"](x, q, key, geo, **kw)
    if appearance is None:
        q = key = None
    return _LocalRelationTriton.apply(x, q, key, geo, kernel_size, stride, appearance, border, groups)


if HAS_TRITON:
    lr_ops.IMPLS["triton"] = _triton_impl
    lr_ops.AVAILABLE["triton"] = available
    lr_ops.AUTO_ORDER["cuda"] = ("triton", "shift")
