"""Triton kernels of the local relation aggregation (LR-Net, Hu et al., ICCV 2019, arXiv 1904.11491, Eq. 2).

The @triton.jit functions behind `lr_triton` (which holds the launch logic, the autograd Function and the
design notes): the forward kernel, kernel A of the backward (output-pixel tiles: D, dq, dgeo partial sums)
and kernel B (input-pixel tiles: dx and dkey gathered over the flipped window), with their helpers.

Status: validated only in TRITON_INTERPRET=1 mode on CPU tensors and by offline sm_90 compilation
(tests/test_lr_triton.py); GPU speed not measured. Importable without Triton (HAS_TRITON is then False).
"""

from __future__ import annotations

import logging

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
    def _tile_index(pid, G, TILES, TILES_W, LH, LW, BH: tl.constexpr, BW: tl.constexpr):
        """Program pid -> (n * G + g, g, rows, columns, in-range mask) of its BH x BW tile of an LH x LW map."""
        ng = pid // TILES
        t = pid % TILES
        offs = tl.arange(0, BH * BW)
        i = (t // TILES_W) * BH + offs // BW
        j = (t % TILES_W) * BW + offs % BW
        return ng, ng % G, i, j, (i < LH) & (j < LW)

    @triton.jit
    def _source_index(t, valid, LIMIT, STRIDE: tl.constexpr):
        """(t / STRIDE, mask) of the output index p with p * STRIDE = t, where one exists in [0, LIMIT)."""
        if STRIDE == 1:
            p = t
            ok = valid & (t >= 0) & (t < LIMIT)
        else:
            tn = tl.where(t >= 0, t, 0)
            p = tn // STRIDE
            ok = valid & (t >= 0) & (tn % STRIDE == 0) & (p < LIMIT)
        return p, ok

    @triton.jit
    def _window_max(qv, k_base, geo_ptr, g, i, j, pix_ok, H, W, KS: tl.constexpr, STRIDE: tl.constexpr,
                    APP: tl.constexpr, HAS_GEO: tl.constexpr, MASK: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                    ACC: tl.constexpr, UNROLL: tl.constexpr):
        """Max logit over the window cells that enter the softmax; 0 where none does (tile padding)."""
        R: tl.constexpr = KS // 2
        neg_inf = float("-inf")
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
        return tl.where(mx == neg_inf, 0.0, mx)

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
        ng, g, i, j, pix_ok = _tile_index(pid, G, TILES, TILES_W, Ho, Wo, BH, BW)
        cs = tl.arange(0, MP)
        c_ok = cs < M
        ng64 = ng.to(tl.int64)
        x_base = x_ptr + ng64 * M * H * W  # channels g*M .. g*M+M-1 of image n are one contiguous block
        k_base = k_ptr + ng64 * H * W
        qv = tl.zeros([BH * BW], ACC)
        if APP != 0:
            qv = tl.load(q_ptr + ng64 * Ho * Wo + i * Wo + j, mask=pix_ok, other=0.0).to(ACC)
        neg_inf = float("-inf")

        # pass 1: max of the logits over the window (0 for tile padding: keeps every exp finite)
        mx = _window_max(qv, k_base, geo_ptr, g, i, j, pix_ok, H, W, KS, STRIDE, APP, HAS_GEO, MASK, BH, BW, ACC,
                         UNROLL)

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
        ng, g, i, j, pix_ok = _tile_index(pid, G, TILES, TILES_W, Ho, Wo, BH, BW)
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
        ng, g, yi, yj, y_ok = _tile_index(pid, G, TILES, TILES_W, H, W, BH, BW)
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
            # the output row pi that sees y at offset row ky (pi * STRIDE = yi - (ky - R)), if there is one
            pi, row_ok = _source_index(yi - (ky - R), y_ok, Ho, STRIDE)
            for kx in tl.range(0, KS, loop_unroll_factor=UNROLL):
                pj, ok = _source_index(yj - (kx - R), row_ok, Wo, STRIDE)
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


