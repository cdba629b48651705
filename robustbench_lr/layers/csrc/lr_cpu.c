/*
 * Local relation aggregation (LR-Net, Hu et al., ICCV 2019, Eq. 2) on the CPU: forward and backward.
 *
 * x, out, dx, lse, dout are NCHW-contiguous. q and key are read (and dq, dkey written) through strides
 * (qs = {n, g, i, j}, ks = {n, g}; a key plane's rows are contiguous), so views of one fused key/query
 * tensor need no copy. For output pixel (i, j), group g (channels g*m .. g*m+m-1) and window cell
 * o = (ky, kx), row-major from (0, 0) = offset (-r, -r):
 *     logit[o] = Phi(q[g, i, j], key[g, i*s + ky - r, j*s + kx - r]) + geo[g, o]
 *     P = softmax_o(logit)       mask border: out-of-image cells excluded (weight exactly 0);
 *                                zeros border: key = 0 and value = 0 there, but the cell is in the softmax
 *     out[c, i, j] = sum_o P[o] * x[c, i*s + ky - r, j*s + kx - r]
 *
 * Polyphase planes (lr_cpu_planes.c). Each (n, g) task copies its key map and its m value channels into
 * zero-padded planes split into s*s phases: padded cell (Y, X) = (y + r, x + r) lives in phase (Y % s, X % s)
 * at (Y / s, X / s), row stride Wp = ceil((W + 2r) / s). Output pixels are laid out with the same row stride
 * (p = i * Wp + j; columns j >= Wo are junk: finite, never written out, zero gradient), so cell o of pixel p
 * sits at p + (ky / s) * Wp + kx / s of phase (ky % s, kx % s): for every stride, a cell of LR_VL consecutive
 * pixels is one contiguous vector load. The mask border adds a plane that is 0 in the image and -inf
 * outside; cells whose rows (or columns) are outside the image for a whole block are skipped.
 *
 * Chunks. Pixels are processed LR_VL at a time in GCC vector registers (vec_t). Forward: the logits of
 * every cell (kept in a K2 x LR_VL scratch) and their max, then exp(logit - max) and its sum, then
 * out_c = sum_o P_o x_c / sum_o P_o with 8 channel accumulators in registers; it writes `out` and the
 * per-pixel log-sum-exp `lse`. Backward, one pass over the cells: P = exp(logit - lse), dx_c += P dout_c,
 * dL = P (dP - D) with dP = sum_c dout_c x_c and D = sum_c dout_c out_c (= sum_o P dP), and from dL the
 * dq, dkey and dgeo terms. Nothing of size k*k is stored between calls. Tasks own their group's channels of
 * x / dx and their key map, so dx and dkey are assigned (not accumulated), nothing races, and results do
 * not depend on the number of threads.
 *
 * This file is a template: Python substitutes scalar_t / vec_t / mask_t / SUFFIX / VEXP / LOG for float
 * and double.
 */


/* Chunks of LR_VL pixels in GCC vector registers (vec_t; lowered to AVX-512, AVX2 or SSE as compiled) */
#define LD_SUFFIX(ptr) (*(const vec_t*)(ptr))
#define ST_SUFFIX(ptr, v) (*(vec_t*)(ptr) = (v))
#define SPLAT_SUFFIX(v) (((vec_t){0}) + (scalar_t)(v))

static inline vec_t lr_sel_SUFFIX(mask_t m, vec_t a, vec_t b) {  /* m ? a : b, lane-wise */
    return (vec_t)((m & (mask_t)a) | (~m & (mask_t)b));
}

/* the logit of one cell: prior + Phi(q, k) (+ mask plane: 0 or -inf) */
static inline vec_t lr_logit_SUFFIX(vec_t qv, const scalar_t* kk, const scalar_t* vv, scalar_t gb, int app) {
    vec_t l = SPLAT_SUFFIX(gb);
    if (app == 1) { const vec_t d = qv - LD_SUFFIX(kk); l -= d * d; }
    else if (app == 2) { const vec_t d = qv - LD_SUFFIX(kk); l -= lr_sel_SUFFIX((mask_t)(d < 0), -d, d); }
    else if (app == 3) l += qv * LD_SUFFIX(kk);
    if (vv) l += LD_SUFFIX(vv);
    return l;
}

/* exp(l - ref), exactly 0 where l = -inf (masked cells) */
static inline vec_t lr_exp_masked_SUFFIX(vec_t l, vec_t ref) {
    return (vec_t)((mask_t)(l > -INFINITY) & (mask_t)VEXP(l - ref));
}

/* forward of one chunk: out_c = sum_t P_t x_c(p + off_t) / sum_t P_t, lse; E (K2 x LR_VL) is scratch */
static void lr_fwd_chunk_SUFFIX(lr_work_SUFFIX* w, const scalar_t* vb, long p0, long lenp, int app,
                                const lr_geom_SUFFIX* G) {
    const lr_cells_SUFFIX* cl = &w->cl;
    scalar_t* E = w->L;
    const vec_t qv = LD_SUFFIX(w->qb + p0);
    vec_t M = SPLAT_SUFFIX(-INFINITY), S = SPLAT_SUFFIX(0);
    for (int t = 0; t < cl->n; ++t) {
        const long off = cl->off[t] + p0;
        const vec_t l = lr_logit_SUFFIX(qv, w->kp + off, vb ? vb + off : 0, cl->gb[t], app);
        ST_SUFFIX(E + t * LR_VL, l);
        M = lr_sel_SUFFIX((mask_t)(l > M), l, M);
    }
    M = lr_sel_SUFFIX((mask_t)(M > -INFINITY), M, SPLAT_SUFFIX(0));  /* junk pixels with no cell */
    for (int t = 0; t < cl->n; ++t) {
        const vec_t e = lr_exp_masked_SUFFIX(LD_SUFFIX(E + t * LR_VL), M);
        ST_SUFFIX(E + t * LR_VL, e);
        S += e;
    }
    S = lr_sel_SUFFIX((mask_t)(S > 0), S, SPLAT_SUFFIX(1));
    for (int p = 0; p < LR_VL; ++p) w->M[p0 + p] = M[p] + LOG(S[p]);  /* lse */
    const vec_t inv = 1 / S;
    const long pl = G->planes;
    int c = 0;
    for (; c + 8 <= G->m; c += 8) {  /* 8 accumulators in registers, each E[t] loaded once */
        const scalar_t* x = w->xp + c * pl + p0;
        vec_t a[8];
        for (int j = 0; j < 8; ++j) a[j] = SPLAT_SUFFIX(0);
        for (int t = 0; t < cl->n; ++t) {
            const vec_t e = LD_SUFFIX(E + t * LR_VL);
            const scalar_t* xt = x + cl->off[t];
            for (int j = 0; j < 8; ++j) a[j] += e * LD_SUFFIX(xt + j * pl);
        }
        for (int j = 0; j < 8; ++j) ST_SUFFIX(w->acc + (c + j) * lenp + p0, a[j] * inv);
    }
    for (; c < G->m; ++c) {
        const scalar_t* x = w->xp + c * pl + p0;
        vec_t a0 = SPLAT_SUFFIX(0);
        for (int t = 0; t < cl->n; ++t) a0 += LD_SUFFIX(E + t * LR_VL) * LD_SUFFIX(x + cl->off[t]);
        ST_SUFFIX(w->acc + c * lenp + p0, a0 * inv);
    }
}

/* dL * dPhi/dq (returned) and dL * dPhi/dk (added into the padded key-gradient plane at kk) */
static inline vec_t lr_dphi_SUFFIX(vec_t qv, vec_t dl, const scalar_t* kk, scalar_t* dkk, int app) {
    const vec_t kv = LD_SUFFIX(kk);
    vec_t gk, gq;
    if (app == 1) { gk = 2 * (qv - kv) * dl; gq = -gk; }
    else if (app == 2) {
        const vec_t df = qv - kv, one = SPLAT_SUFFIX(1);
        gk = ((vec_t)((mask_t)(df > 0) & (mask_t)one) - (vec_t)((mask_t)(df < 0) & (mask_t)one)) * dl;
        gq = -gk;
    } else { gq = kv * dl; gk = qv * dl; }
    ST_SUFFIX(dkk, LD_SUFFIX(dkk) + gk);
    return gq;
}

/* Backward of one chunk in one pass over the cells: P = exp(logit - lse); dx_c += P dout_c;
 * dL = P (sum_c dout_c x_c - D) with D = sum_c dout_c out_c; dgeo partial sums (dG), dq (w->dqb) and dkey
 * (padded planes; cells outside the image are dropped on the way out). M8 (a constant after inlining) says
 * m == 8: the chunk's dout then stays in registers. */
static inline void lr_bwd_chunk_impl_SUFFIX(lr_work_SUFFIX* w, const scalar_t* vb, long p0, long lenp, int app,
                                            int need_dx, int need_dl, int need_dqk, const int M8,
                                            const lr_geom_SUFFIX* G) {
    const lr_cells_SUFFIX* cl = &w->cl;
    const long pl = G->planes;
    const int m = M8 ? 8 : G->m;
    const vec_t qv = LD_SUFFIX(w->qb + p0), lb = LD_SUFFIX(w->M + p0), D = LD_SUFFIX(w->S + p0);
    vec_t d8[8], dqv = SPLAT_SUFFIX(0);
    if (M8) for (int j = 0; j < 8; ++j) d8[j] = LD_SUFFIX(w->db + j * lenp + p0);
    for (int t = 0; t < cl->n; ++t) {
        const long off = cl->off[t] + p0;
        const vec_t P = lr_exp_masked_SUFFIX(lr_logit_SUFFIX(qv, w->kp + off, vb ? vb + off : 0, cl->gb[t], app), lb);
        vec_t tt = SPLAT_SUFFIX(0);
        for (int j = 0; j < m; ++j) {
            const vec_t d = M8 ? d8[j] : LD_SUFFIX(w->db + j * lenp + p0);
            if (need_dx) ST_SUFFIX(w->dxp + off + j * pl, LD_SUFFIX(w->dxp + off + j * pl) + P * d);
            if (need_dl) tt += d * LD_SUFFIX(w->xp + off + j * pl);
        }
        if (!need_dl) continue;
        const vec_t dl = P * (tt - D);
        if (w->dG) ST_SUFFIX(w->dG + t * LR_VL, LD_SUFFIX(w->dG + t * LR_VL) + dl);
        if (need_dqk) dqv += lr_dphi_SUFFIX(qv, dl, w->kp + off, w->dkp + off, app);
    }
    ST_SUFFIX(w->dqb + p0, dqv);
}

static void lr_bwd_chunk_SUFFIX(lr_work_SUFFIX* w, const scalar_t* vb, long p0, long lenp, int app, int need_dx,
                                int need_dl, int need_dqk, const lr_geom_SUFFIX* G) {
    if (G->m == 8) {
        if (need_dx && need_dl) lr_bwd_chunk_impl_SUFFIX(w, vb, p0, lenp, app, 1, 1, need_dqk, 1, G);
        else lr_bwd_chunk_impl_SUFFIX(w, vb, p0, lenp, app, need_dx, need_dl, need_dqk, 1, G);
    } else {
        lr_bwd_chunk_impl_SUFFIX(w, vb, p0, lenp, app, need_dx, need_dl, need_dqk, 0, G);
    }
}

/* forward of one block of output rows of task (n, g): w->acc (m x lenp) and the lse in w->M */
static void lr_fwd_block_SUFFIX(lr_work_SUFFIX* w, const scalar_t* vb, int nb, long lenp, int app,
                                const lr_geom_SUFFIX* G) {
    for (long p0 = 0; p0 < lr_chunks_end_SUFFIX(G, nb, lenp); p0 += LR_VL) lr_fwd_chunk_SUFFIX(w, vb, p0, lenp, app, G);
}

/* Returns 0, or 1 when a buffer could not be allocated (the output is then undefined). */
int lr_forward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                      scalar_t* out, scalar_t* lse, const long* qs, const long* ks, int N, int C, int Gn, int H,
                      int W, int Ho, int Wo, int k, int s, int app, int mask, int block, int nthreads) {
    const lr_geom_SUFFIX G = lr_geom_make_SUFFIX(H, W, Ho, Wo, k, s, C / Gn, block);
    const long ohw = (long)Ho * Wo;
    scalar_t* vb = mask ? (scalar_t*)malloc(sizeof(scalar_t) * (G.planes + LR_SLACK)) : 0;
    if (mask && !vb) return 1;
    if (vb) lr_mask_plane_SUFFIX(vb, &G);
    int fail = 0;
#pragma omp parallel num_threads(nthreads)
    {
        lr_work_SUFFIX* w = lr_work_alloc_SUFFIX(&G, 0);
        if (!w) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * Gn; ++t) {
            if (!w) continue;
            const long n = t / Gn, g = t % Gn;
            lr_load_group_SUFFIX(x, key, ks, w, n, g, C, &G);
            for (int i0 = 0; i0 < Ho; i0 += G.Rb) {
                const int nb = Ho - i0 < G.Rb ? Ho - i0 : G.Rb;
                const long lenp = ((long)nb * G.Wp + LR_VL - 1) / LR_VL * LR_VL;
                if (q) lr_rows_in_SUFFIX(q + n * qs[0] + g * qs[1], qs[2], qs[3], w->qb, i0, nb, lenp, 0, &G);
                lr_cells_make_SUFFIX(&w->cl, geo ? geo + g * G.K2 : 0, i0, nb, mask, &G);
                lr_fwd_block_SUFFIX(w, vb, nb, lenp, app, &G);
                lr_rows_out_SUFFIX(w->M, lse + (n * Gn + g) * ohw, Wo, 1, i0, nb, &G);
                for (int c = 0; c < G.m; ++c)
                    lr_rows_out_SUFFIX(w->acc + c * lenp, out + (n * C + g * G.m + c) * ohw, Wo, 1, i0, nb, &G);
            }
        }
        lr_work_free_SUFFIX(w);
    }
    free(vb);
    return fail;
}

typedef struct {
    const scalar_t *x, *q, *key, *geo, *out, *lse, *dout;
    scalar_t *dx, *dq, *dkey, *dgeo_part;
    const long *qs, *ks, *dqs, *dks;
    int C, Gn, app, mask;
} lr_bwd_args_SUFFIX;

/* the block's rows of q, lse (junk: +inf, so P = 0), dout (junk: 0) and D = sum_c dout_c out_c */
static void lr_bwd_rows_in_SUFFIX(const lr_bwd_args_SUFFIX* A, lr_work_SUFFIX* w, long n, long g, int i0, int nb,
                                  long lenp, int need_dl, const lr_geom_SUFFIX* G) {
    const long ohw = (long)G->Ho * G->Wo;
    if (A->q) lr_rows_in_SUFFIX(A->q + n * A->qs[0] + g * A->qs[1], A->qs[2], A->qs[3], w->qb, i0, nb, lenp, 0, G);
    lr_rows_in_SUFFIX(A->lse + (n * A->Gn + g) * ohw, G->Wo, 1, w->M, i0, nb, lenp, INFINITY, G);
    for (long p = 0; p < lenp; ++p) w->S[p] = 0;
    for (int c = 0; c < G->m; ++c) {
        const long co = (n * A->C + g * G->m + c) * ohw;
        scalar_t *restrict d = w->db + c * lenp, *restrict ov = w->ob + c * lenp, *restrict D = w->S;
        lr_rows_in_SUFFIX(A->dout + co, G->Wo, 1, d, i0, nb, lenp, 0, G);
        if (!need_dl) continue;
        lr_rows_in_SUFFIX(A->out + co, G->Wo, 1, ov, i0, nb, lenp, 0, G);
        for (long p = 0; p < lenp; ++p) D[p] += d[p] * ov[p];
    }
}

/* backward of task (n, g) */
static void lr_bwd_task_SUFFIX(const lr_bwd_args_SUFFIX* A, lr_work_SUFFIX* w, const scalar_t* vb, long n, long g,
                               const lr_geom_SUFFIX* G) {
    const int need_dl = A->dq || A->dkey || A->dgeo_part, need_dqk = A->app && (A->dq || A->dkey);
    const scalar_t* geog = A->geo ? A->geo + g * G->K2 : 0;
    scalar_t* dgg = A->dgeo_part ? A->dgeo_part + (n * A->Gn + g) * G->K2 : 0;
    scalar_t* dG = w->dG;
    if (!dgg) w->dG = 0;
    lr_load_group_SUFFIX(A->x, A->key, A->ks, w, n, g, A->C, G);
    if (A->dkey) memset(w->dkp, 0, sizeof(scalar_t) * G->planes);
    if (A->dx) memset(w->dxp, 0, sizeof(scalar_t) * G->planes * G->m);
    if (dgg) for (int o = 0; o < G->K2; ++o) dgg[o] = 0;
    for (int i0 = 0; i0 < G->Ho; i0 += G->Rb) {
        const int nb = G->Ho - i0 < G->Rb ? G->Ho - i0 : G->Rb;
        const long lenp = ((long)nb * G->Wp + LR_VL - 1) / LR_VL * LR_VL;
        lr_bwd_rows_in_SUFFIX(A, w, n, g, i0, nb, lenp, need_dl, G);
        lr_cells_make_SUFFIX(&w->cl, geog, i0, nb, A->mask, G);
        if (w->dG) memset(w->dG, 0, sizeof(scalar_t) * w->cl.n * LR_VL);
        for (long p0 = 0; p0 < lr_chunks_end_SUFFIX(G, nb, lenp); p0 += LR_VL)
            lr_bwd_chunk_SUFFIX(w, vb, p0, lenp, A->app, A->dx != 0, need_dl, need_dqk, G);
        if (w->dG)
            for (int t = 0; t < w->cl.n; ++t)
                for (int p = 0; p < LR_VL; ++p) dgg[w->cl.o[t]] += w->dG[t * LR_VL + p];
        if (A->dq && need_dqk)
            lr_rows_out_SUFFIX(w->dqb, A->dq + n * A->dqs[0] + g * A->dqs[1], A->dqs[2], A->dqs[3], i0, nb, G);
    }
    w->dG = dG;
    if (A->dkey) lr_phase_out_SUFFIX(w->dkp, A->dkey + n * A->dks[0] + g * A->dks[1], G);
    if (A->dx)
        for (int c = 0; c < G->m; ++c)
            lr_phase_out_SUFFIX(w->dxp + c * G->planes, A->dx + (n * A->C + g * G->m + c) * (long)G->H * G->W, G);
}

/* Gradients, all assigned: dx (N,C,H,W) contiguous; dq, dkey through dqs / dks (for stride > 1 the caller
 * zeroes the dq entries off the query grid); dgeo_part (N, G, K2) per-(n, g) partial sums (the caller sums
 * over n). A null pointer = not needed. `out` is the forward's output (read only for dq / dkey / dgeo). */
int lr_backward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                       const scalar_t* out, const scalar_t* lse, const scalar_t* dout, scalar_t* dx, scalar_t* dq,
                       scalar_t* dkey, scalar_t* dgeo_part, const long* qs, const long* ks, const long* dqs,
                       const long* dks, int N, int C, int Gn, int H, int W, int Ho, int Wo, int k, int s, int app,
                       int mask, int block, int nthreads) {
    const lr_geom_SUFFIX G = lr_geom_make_SUFFIX(H, W, Ho, Wo, k, s, C / Gn, block);
    const lr_bwd_args_SUFFIX A = {x, q, key, geo, out, lse, dout, dx, dq, dkey, dgeo_part, qs, ks, dqs, dks,
                                  C, Gn, app, mask};
    scalar_t* vb = mask ? (scalar_t*)malloc(sizeof(scalar_t) * (G.planes + LR_SLACK)) : 0;
    if (mask && !vb) return 1;
    if (vb) lr_mask_plane_SUFFIX(vb, &G);
    int fail = 0;
#pragma omp parallel num_threads(nthreads)
    {
        lr_work_SUFFIX* w = lr_work_alloc_SUFFIX(&G, 1);
        if (!w) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * Gn; ++t)
            if (w) lr_bwd_task_SUFFIX(&A, w, vb, t / Gn, t % Gn, &G);
        lr_work_free_SUFFIX(w);
    }
    free(vb);
    return fail;
}
