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

log = logging.getLogger(__name__)

try:  # never fail on machines without Triton
    import triton
    import triton.language as tl

    try:
        from triton import knobs as _knobs

        _INTERPRET = bool(_knobs.runtime.interpret)
    except Exception:  # older Triton: the environment variable is read at jit time
        import os

        _INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
    HAS_TRITON = True
except Exception as _exc:  # pragma: no cover - depends on the environment
    triton = tl = None
    _INTERPRET = False
    HAS_TRITON = False
    log.debug("Triton unavailable (%s): impl='triton' is not registered.", _exc)

_APPEARANCE = {None: 0, "sqdiff": 1, "absdiff": 2, "dot": 3}
_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
MAX_GROUP_WIDTH = 128
_TILE_OVERRIDE: tuple[int, int] | None = None  # (BH, BW) powers of two; tests force small multi-tile grids
# Unroll factor of the inner (dx) offset loop. Offline sm_90 builds (k=7, m=8, fp32) use about 48-64 registers
# per thread at 2 and 145-163 when fully unrolled (k), with no spills either way; which is faster is not measured.
KX_UNROLL = 2


if HAS_TRITON:

    @triton.jit
    def _phi(qv, kv, APP: tl.constexpr):
        """Appearance term Phi(q, k) (APP: 1 sqdiff, 2 absdiff, 3 dot)."""
        if APP == 1:
            d = qv - kv
            res = -(d * d)
        elif APP == 2:
            res = -tl.abs(qv - kv)
        else:
            res = qv * kv
        return res

    @triton.jit
    def _dphi_dq(qv, kv, APP: tl.constexpr):
        if APP == 1:
            res = -2.0 * (qv - kv)
        elif APP == 2:
            d = qv - kv
            res = tl.where(d > 0, -1.0, tl.where(d < 0, 1.0, 0.0)).to(qv.dtype)
        else:
            res = kv
        return res

    @triton.jit
    def _dphi_dk(qv, kv, APP: tl.constexpr):
        if APP == 1:
            res = 2.0 * (qv - kv)
        elif APP == 2:
            d = qv - kv
            res = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0)).to(qv.dtype)
        else:
            res = qv
        return res

    @triton.jit
    def _window_logit(qv, k_base, geo_ptr, g, yy, xx, ok, pix_ok, W, ky, kx, KS: tl.constexpr, APP: tl.constexpr,
                      HAS_GEO: tl.constexpr, MASK: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                      ACC: tl.constexpr):
        """Window cell (ky, kx) for a tile of output pixels: its logit, the key value there (0 outside the
        image, as the zeros border sees it) and which pixels let the cell into the softmax."""
        kv = tl.zeros([BH * BW], ACC)
        logit = tl.zeros([BH * BW], ACC)
        if APP != 0:
            kv = tl.load(k_base + yy * W + xx, mask=ok, other=0.0).to(ACC)
            logit = _phi(qv, kv, APP)
        if HAS_GEO:
            logit += tl.load(geo_ptr + g * (KS * KS) + ky * KS + kx).to(ACC)
        if MASK:
            cell = ok
        else:
            cell = pix_ok
        return logit, kv, cell

    @triton.jit
    def _lr_fwd_kernel(
        x_ptr, q_ptr, k_ptr, geo_ptr, out_ptr, lse_ptr,
        G, H, W, Ho, Wo, TILES_W, TILES,
        M: tl.constexpr, MP: tl.constexpr, KS: tl.constexpr, STRIDE: tl.constexpr, APP: tl.constexpr,
        HAS_GEO: tl.constexpr, MASK: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, ACC: tl.constexpr,
        UNROLL: tl.constexpr,
    ):
        R: tl.constexpr = KS // 2
        pid = tl.program_id(0)
        ng = pid // TILES
        t = pid % TILES
        g = ng % G
        offs = tl.arange(0, BH * BW)
        i = (t // TILES_W) * BH + offs // BW
        j = (t % TILES_W) * BW + offs % BW
        pix_ok = (i < Ho) & (j < Wo)
        cs = tl.arange(0, MP)
        c_ok = cs < M
        ng64 = ng.to(tl.int64)
        x_base = x_ptr + ng64 * M * H * W  # channels g*M .. g*M+M-1 of image n are one contiguous block
        k_base = k_ptr + ng64 * H * W
        qv = tl.zeros([BH * BW], ACC)
        if APP != 0:
            qv = tl.load(q_ptr + ng64 * Ho * Wo + i * Wo + j, mask=pix_ok, other=0.0).to(ACC)
        neg_inf = float("-inf")

        # pass 1: max of the logits over the window
        mx = tl.full([BH * BW], neg_inf, ACC)
        for ky in range(KS):
            yy = i * STRIDE + (ky - R)
            row_ok = pix_ok & (yy >= 0) & (yy < H)
            for kx in tl.range(0, KS, loop_unroll_factor=UNROLL):
                xx = j * STRIDE + (kx - R)
                ok = row_ok & (xx >= 0) & (xx < W)
                logit, kv, cell = _window_logit(qv, k_base, geo_ptr, g, yy, xx, ok, pix_ok, W, ky, kx, KS, APP,
                                                HAS_GEO, MASK, BH, BW, ACC)
                mx = tl.maximum(mx, tl.where(cell, logit, neg_inf))
        mx = tl.where(mx == neg_inf, 0.0, mx)  # tile padding only: keeps every exp finite

        # pass 2: softmax numerators, their sum, and the weighted sum of the m value channels
        den = tl.zeros([BH * BW], ACC)
        acc = tl.zeros([MP, BH * BW], ACC)
        for ky in range(KS):
            yy = i * STRIDE + (ky - R)
            row_ok = pix_ok & (yy >= 0) & (yy < H)
            for kx in tl.range(0, KS, loop_unroll_factor=UNROLL):
                xx = j * STRIDE + (kx - R)
                ok = row_ok & (xx >= 0) & (xx < W)
                logit, kv, cell = _window_logit(qv, k_base, geo_ptr, g, yy, xx, ok, pix_ok, W, ky, kx, KS, APP,
                                                HAS_GEO, MASK, BH, BW, ACC)
                p = tl.exp(tl.where(cell, logit - mx, neg_inf))
                den += p
                xv = tl.load(x_base + cs[:, None] * (H * W) + (yy * W + xx)[None, :],
                             mask=c_ok[:, None] & ok[None, :], other=0.0).to(ACC)
                acc += p[None, :] * xv
        den = tl.where(den > 0, den, 1.0)
        out = acc / den[None, :]
        tl.store(out_ptr + ng64 * M * Ho * Wo + cs[:, None] * (Ho * Wo) + (i * Wo + j)[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=c_ok[:, None] & pix_ok[None, :])
        tl.store(lse_ptr + ng64 * Ho * Wo + i * Wo + j, (mx + tl.log(den)).to(lse_ptr.dtype.element_ty),
                 mask=pix_ok)

    @triton.jit
    def _lr_bwd_out_kernel(
        x_ptr, q_ptr, k_ptr, geo_ptr, out_ptr, lse_ptr, dout_ptr, dq_ptr, d_ptr, dgeo_part_ptr,
        G, H, W, Ho, Wo, TILES_W, TILES,
        M: tl.constexpr, MP: tl.constexpr, KS: tl.constexpr, STRIDE: tl.constexpr, APP: tl.constexpr,
        HAS_GEO: tl.constexpr, MASK: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, ACC: tl.constexpr,
        UNROLL: tl.constexpr,
        NEED_DQ: tl.constexpr, NEED_DGEO: tl.constexpr, STORE_D: tl.constexpr,
    ):
        """Kernel A, on output-pixel tiles: D (for kernel B), dq and dgeo partial sums."""
        R: tl.constexpr = KS // 2
        K2: tl.constexpr = KS * KS
        pid = tl.program_id(0)
        ng = pid // TILES
        t = pid % TILES
        g = ng % G
        offs = tl.arange(0, BH * BW)
        i = (t // TILES_W) * BH + offs // BW
        j = (t % TILES_W) * BW + offs % BW
        pix_ok = (i < Ho) & (j < Wo)
        cs = tl.arange(0, MP)
        c_ok = cs < M
        ng64 = ng.to(tl.int64)
        pix = i * Wo + j
        o_offs = ng64 * M * Ho * Wo + cs[:, None] * (Ho * Wo) + pix[None, :]
        o_mask = c_ok[:, None] & pix_ok[None, :]
        dov = tl.load(dout_ptr + o_offs, mask=o_mask, other=0.0).to(ACC)
        ov = tl.load(out_ptr + o_offs, mask=o_mask, other=0.0).to(ACC)
        dsum = tl.sum(dov * ov, axis=0)  # D = sum_o P dP = sum_c dout * out
        if STORE_D:
            tl.store(d_ptr + ng64 * Ho * Wo + pix, dsum, mask=pix_ok)
        if NEED_DQ or NEED_DGEO:
            neg_inf = float("-inf")
            x_base = x_ptr + ng64 * M * H * W
            k_base = k_ptr + ng64 * H * W
            lse = tl.load(lse_ptr + ng64 * Ho * Wo + pix, mask=pix_ok, other=0.0).to(ACC)
            qv = tl.zeros([BH * BW], ACC)
            if APP != 0:
                qv = tl.load(q_ptr + ng64 * Ho * Wo + pix, mask=pix_ok, other=0.0).to(ACC)
            dq = tl.zeros([BH * BW], ACC)
            for ky in range(KS):
                yy = i * STRIDE + (ky - R)
                row_ok = pix_ok & (yy >= 0) & (yy < H)
                for kx in tl.range(0, KS, loop_unroll_factor=UNROLL):
                    xx = j * STRIDE + (kx - R)
                    ok = row_ok & (xx >= 0) & (xx < W)
                    # zeros border: cells outside the image see key 0, and still feed dq
                    logit, kv, cell = _window_logit(qv, k_base, geo_ptr, g, yy, xx, ok, pix_ok, W, ky, kx, KS, APP,
                                                    HAS_GEO, MASK, BH, BW, ACC)
                    p = tl.exp(tl.where(cell, logit - lse, neg_inf))
                    xv = tl.load(x_base + cs[:, None] * (H * W) + (yy * W + xx)[None, :],
                                 mask=c_ok[:, None] & ok[None, :], other=0.0).to(ACC)
                    dl = p * (tl.sum(dov * xv, axis=0) - dsum)
                    if NEED_DQ:
                        dq += dl * _dphi_dq(qv, kv, APP)
                    if NEED_DGEO:
                        tl.store(dgeo_part_ptr + pid.to(tl.int64) * K2 + ky * KS + kx, tl.sum(dl, axis=0))
            if NEED_DQ:
                tl.store(dq_ptr + ng64 * Ho * Wo + pix, dq.to(dq_ptr.dtype.element_ty), mask=pix_ok)

    @triton.jit
    def _lr_bwd_in_kernel(
        x_ptr, q_ptr, k_ptr, geo_ptr, lse_ptr, dout_ptr, d_ptr, dx_ptr, dk_ptr,
        G, H, W, Ho, Wo, TILES_W, TILES,
        M: tl.constexpr, MP: tl.constexpr, KS: tl.constexpr, STRIDE: tl.constexpr, APP: tl.constexpr,
        HAS_GEO: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, ACC: tl.constexpr, UNROLL: tl.constexpr,
        NEED_DX: tl.constexpr, NEED_DK: tl.constexpr,
    ):
        """Kernel B, on input-pixel tiles: dx and dkey gathered over the flipped window (no atomics)."""
        R: tl.constexpr = KS // 2
        K2: tl.constexpr = KS * KS
        pid = tl.program_id(0)
        ng = pid // TILES
        t = pid % TILES
        g = ng % G
        offs = tl.arange(0, BH * BW)
        yi = (t // TILES_W) * BH + offs // BW
        yj = (t % TILES_W) * BW + offs % BW
        y_ok = (yi < H) & (yj < W)
        cs = tl.arange(0, MP)
        c_ok = cs < M
        ng64 = ng.to(tl.int64)
        ypix = yi * W + yj
        neg_inf = float("-inf")
        if APP != 0:
            kv = tl.load(k_ptr + ng64 * H * W + ypix, mask=y_ok, other=0.0).to(ACC)
        if NEED_DK:
            xv = tl.load(x_ptr + ng64 * M * H * W + cs[:, None] * (H * W) + ypix[None, :],
                         mask=c_ok[:, None] & y_ok[None, :], other=0.0).to(ACC)
        dx = tl.zeros([MP, BH * BW], ACC)
        dk = tl.zeros([BH * BW], ACC)
        for ky in range(KS):
            ti = yi - (ky - R)  # = i * STRIDE for the output row i that sees y at offset row ky
            if STRIDE == 1:
                pi = ti
                row_ok = y_ok & (ti >= 0) & (ti < Ho)
            else:
                tn = tl.where(ti >= 0, ti, 0)
                pi = tn // STRIDE
                row_ok = y_ok & (ti >= 0) & (tn % STRIDE == 0) & (pi < Ho)
            for kx in tl.range(0, KS, loop_unroll_factor=UNROLL):
                tj = yj - (kx - R)
                if STRIDE == 1:
                    pj = tj
                    ok = row_ok & (tj >= 0) & (tj < Wo)
                else:
                    tjn = tl.where(tj >= 0, tj, 0)
                    pj = tjn // STRIDE
                    ok = row_ok & (tj >= 0) & (tjn % STRIDE == 0) & (pj < Wo)
                p_off = ng64 * Ho * Wo + pi * Wo + pj
                logit = tl.zeros([BH * BW], ACC)
                if APP != 0:
                    qv = tl.load(q_ptr + p_off, mask=ok, other=0.0).to(ACC)
                    logit = _phi(qv, kv, APP)
                if HAS_GEO:
                    logit += tl.load(geo_ptr + g * K2 + ky * KS + kx).to(ACC)
                lse = tl.load(lse_ptr + p_off, mask=ok, other=0.0).to(ACC)
                p = tl.exp(tl.where(ok, logit - lse, neg_inf))
                dov = tl.load(dout_ptr + ng64 * M * Ho * Wo + cs[:, None] * (Ho * Wo) + (pi * Wo + pj)[None, :],
                              mask=c_ok[:, None] & ok[None, :], other=0.0).to(ACC)
                if NEED_DX:
                    dx += p[None, :] * dov
                if NEED_DK:
                    dsum = tl.load(d_ptr + p_off, mask=ok, other=0.0)
                    dl = p * (tl.sum(dov * xv, axis=0) - dsum)
                    dk += dl * _dphi_dk(qv, kv, APP)
        if NEED_DX:
            tl.store(dx_ptr + ng64 * M * H * W + cs[:, None] * (H * W) + ypix[None, :],
                     dx.to(dx_ptr.dtype.element_ty), mask=c_ok[:, None] & y_ok[None, :])
        if NEED_DK:
            tl.store(dk_ptr + ng64 * H * W + ypix, dk.to(dk_ptr.dtype.element_ty), mask=y_ok)


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
                BH=bh, BW=bw, ACC=_acc_dtype(x), UNROLL=_unroll(k), num_warps=_num_warps(bh * bw, mp))
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
                num_warps=_num_warps(bh * bw, mp))
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
                UNROLL=_unroll(k), NEED_DX=bool(need_x), NEED_DK=need_key, num_warps=_num_warps(bh * bw, mp))
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
