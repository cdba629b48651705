/*
 * Local relation aggregation (LR-Net, Hu et al., ICCV 2019, Eq. 2) on the CPU: forward and backward.
 *
 * Layout NCHW, contiguous. For output pixel (i, j), group g (channels g*m .. g*m+m-1) and window offset
 * o = (dy, dx), row-major from (-r, -r):
 *     logit[o] = Phi(q[g, i, j], key[g, i*s + dy, j*s + dx]) + geo[g, o]
 *     P = softmax_o(logit)       mask border: out-of-image cells excluded (weight exactly 0);
 *                                zeros border: key = 0 and value = 0 there, but the cell is in the softmax
 *     out[c, i, j] = sum_o P[o] * x[c, i*s + dy, j*s + dx]
 *
 * Plane layout. Each (n, g) task copies its key map and its m value channels into zero-padded planes of row
 * stride Wr = W + 2r, and lays output pixels out with the same row stride (columns j >= Wo are junk: finite,
 * never written out, zero gradient). The padded position of output pixel p = i * Wr + j seen from offset o
 * is then s * p + off[o], off[o] = (dy + r) * Wr + (dx + r): every per-offset operation is one contiguous
 * (strided for s > 1) loop over a block of rows, which the compiler vectorises however small the feature map.
 * Out-of-image cells are found with a padded 0/1 plane.
 *
 * The forward writes `out` and the per-pixel log-sum-exp `lse` (N, G, Ho, Wo); the backward recomputes the
 * weights from lse. Tasks own their group's channels of x/dx and their key map, so nothing races and the
 * result does not depend on the number of threads.
 *
 * This file is a template: Python substitutes scalar_t / SUFFIX / EXP / LOG for float and double.
 */

typedef struct {
    int H, W, Ho, Wo, k, s, r, K2;
    int Wr, Wq, Hq;     /* output row stride, padded row stride (equal), padded rows */
    int Rb;             /* output rows per block */
    long plane;         /* Hq * Wq */
} lr_geom_SUFFIX;

static lr_geom_SUFFIX lr_geom_make_SUFFIX(int H, int W, int Ho, int Wo, int k, int s) {
    lr_geom_SUFFIX G;
    G.H = H; G.W = W; G.Ho = Ho; G.Wo = Wo; G.k = k; G.s = s; G.r = k / 2; G.K2 = k * k;
    /* one row stride for the padded planes and the output blocks: the padded position of output pixel
     * p = i * Wr + j is then s * p + off[o]; valid columns j < Wo stay inside their padded row because
     * s * (Wo - 1) + 2r <= W - 1 + 2r < Wr, and junk columns may read into the next rows */
    G.Wr = W + 2 * G.r;
    G.Wq = G.Wr;
    G.Hq = s * Ho + 2 * G.r + 2;
    G.plane = (long)G.Hq * G.Wq;
    G.Rb = 2048 / G.Wr;
    if (G.Rb < 1) G.Rb = 1;
    if (G.Rb > Ho) G.Rb = Ho;
    return G;
}

/* src (H, W) -> dst zero-padded plane (Hq, Wq) with the image at (r, r) */
static void lr_pad_SUFFIX(const scalar_t* restrict src, scalar_t* restrict dst, const lr_geom_SUFFIX* G) {
    for (long e = 0; e < G->plane; ++e) dst[e] = 0;
    for (int i = 0; i < G->H; ++i) {
        scalar_t* d = dst + (long)(i + G->r) * G->Wq + G->r;
        const scalar_t* a = src + (long)i * G->W;
        for (int j = 0; j < G->W; ++j) d[j] = a[j];
    }
}

/* interior of a padded plane, added into dst (H, W) */
static void lr_unpad_add_SUFFIX(const scalar_t* restrict src, scalar_t* restrict dst, const lr_geom_SUFFIX* G) {
    for (int i = 0; i < G->H; ++i) {
        const scalar_t* a = src + (long)(i + G->r) * G->Wq + G->r;
        scalar_t* d = dst + (long)i * G->W;
        for (int j = 0; j < G->W; ++j) d[j] += a[j];
    }
}

/* rows [i0, i0 + nb) of an (Ho, Wo) map -> block buffer with row stride Wr (junk columns 0) */
static void lr_rows_in_SUFFIX(const scalar_t* restrict src, scalar_t* restrict dst, int i0, int nb,
                              const lr_geom_SUFFIX* G) {
    for (int ii = 0; ii < nb; ++ii) {
        const scalar_t* a = src + (long)(i0 + ii) * G->Wo;
        scalar_t* d = dst + (long)ii * G->Wr;
        for (int j = 0; j < G->Wo; ++j) d[j] = a[j];
        for (int j = G->Wo; j < G->Wr; ++j) d[j] = 0;
    }
}

static void lr_rows_out_SUFFIX(const scalar_t* restrict src, scalar_t* restrict dst, int i0, int nb,
                               const lr_geom_SUFFIX* G) {
    for (int ii = 0; ii < nb; ++ii) {
        const scalar_t* a = src + (long)ii * G->Wr;
        scalar_t* d = dst + (long)(i0 + ii) * G->Wo;
        for (int j = 0; j < G->Wo; ++j) d[j] = a[j];
    }
}

static inline long lr_off_SUFFIX(const lr_geom_SUFFIX* G, int o, int i0) {
    return (long)(i0 * G->s + o / G->k) * G->Wq + (o % G->k);
}

/* logits of a block: L[o][p] for p < len. vp: padded 0/1 plane of in-image cells (mask border only). */
static void lr_block_logits_SUFFIX(const scalar_t* restrict qb, const scalar_t* restrict kp,
                                   const scalar_t* restrict vp, const scalar_t* geog, scalar_t* restrict L,
                                   int i0, long len, int app, int mask, const lr_geom_SUFFIX* G) {
    const int s = G->s;
    for (int o = 0; o < G->K2; ++o) {
        scalar_t* restrict Lo = L + (long)o * len;
        const scalar_t gb = geog ? geog[o] : (scalar_t)0;
        const long off = lr_off_SUFFIX(G, o, i0);
        const scalar_t* restrict kk = kp + off;
        if (app == 0) {
            for (long p = 0; p < len; ++p) Lo[p] = gb;
        } else if (app == 1) {
            for (long p = 0; p < len; ++p) { scalar_t d = qb[p] - kk[s * p]; Lo[p] = gb - d * d; }
        } else if (app == 2) {
            for (long p = 0; p < len; ++p) { scalar_t d = qb[p] - kk[s * p]; Lo[p] = gb - (d < 0 ? -d : d); }
        } else {
            for (long p = 0; p < len; ++p) Lo[p] = gb + qb[p] * kk[s * p];
        }
        if (mask) {
            const scalar_t* restrict vv = vp + off;
            for (long p = 0; p < len; ++p) Lo[p] = vv[s * p] > (scalar_t)0.5 ? Lo[p] : -INFINITY;
        }
    }
}

/* in place: L <- softmax over o; lse[p] = log-sum-exp. Cells at -inf get exactly 0. */
static void lr_block_softmax_SUFFIX(scalar_t* restrict L, scalar_t* restrict M, scalar_t* restrict S,
                                    scalar_t* restrict lse, long len, int K2) {
    for (long p = 0; p < len; ++p) { M[p] = -INFINITY; S[p] = 0; }
    for (int o = 0; o < K2; ++o) {
        const scalar_t* restrict Lo = L + (long)o * len;
        for (long p = 0; p < len; ++p) M[p] = Lo[p] > M[p] ? Lo[p] : M[p];
    }
    for (long p = 0; p < len; ++p) M[p] = M[p] > -INFINITY ? M[p] : (scalar_t)0;  /* junk with no cell */
    for (int o = 0; o < K2; ++o) {
        scalar_t* restrict Lo = L + (long)o * len;
        for (long p = 0; p < len; ++p) {
            const scalar_t e = Lo[p] > -INFINITY ? EXP(Lo[p] - M[p]) : (scalar_t)0;
            Lo[p] = e;
            S[p] += e;
        }
    }
    for (long p = 0; p < len; ++p) {
        S[p] = S[p] > (scalar_t)0 ? S[p] : (scalar_t)1;
        lse[p] = M[p] + LOG(S[p]);
        S[p] = (scalar_t)1 / S[p];
    }
    for (int o = 0; o < K2; ++o) {
        scalar_t* restrict Lo = L + (long)o * len;
        for (long p = 0; p < len; ++p) Lo[p] *= S[p];
    }
}

/* acc[p] += P[p] * x[s * p] for 4 channels at once (shares the loads of P) */
static inline void lr_acc4_SUFFIX(const scalar_t* restrict P, const scalar_t* restrict x0, const scalar_t* restrict x1,
                                  const scalar_t* restrict x2, const scalar_t* restrict x3, scalar_t* restrict a0,
                                  scalar_t* restrict a1, scalar_t* restrict a2, scalar_t* restrict a3, long len,
                                  int s) {
    if (s == 1) {
        for (long p = 0; p < len; ++p) {
            const scalar_t w = P[p];
            a0[p] += w * x0[p]; a1[p] += w * x1[p]; a2[p] += w * x2[p]; a3[p] += w * x3[p];
        }
    } else {
        for (long p = 0; p < len; ++p) {
            const scalar_t w = P[p];
            a0[p] += w * x0[s * p]; a1[p] += w * x1[s * p]; a2[p] += w * x2[s * p]; a3[p] += w * x3[s * p];
        }
    }
}

static inline void lr_acc1_SUFFIX(const scalar_t* restrict P, const scalar_t* restrict x, scalar_t* restrict a,
                                  long len, int s) {
    for (long p = 0; p < len; ++p) a[p] += P[p] * x[s * p];
}

/* dP[p] += sum_c dout_c[p] * x_c[s * p] */
static inline void lr_dot4_SUFFIX(scalar_t* restrict acc, const scalar_t* restrict d0, const scalar_t* restrict d1,
                                  const scalar_t* restrict d2, const scalar_t* restrict d3, const scalar_t* restrict x0,
                                  const scalar_t* restrict x1, const scalar_t* restrict x2, const scalar_t* restrict x3,
                                  long len, int s) {
    if (s == 1) {
        for (long p = 0; p < len; ++p) acc[p] += d0[p] * x0[p] + d1[p] * x1[p] + d2[p] * x2[p] + d3[p] * x3[p];
    } else {
        for (long p = 0; p < len; ++p)
            acc[p] += d0[p] * x0[s * p] + d1[p] * x1[s * p] + d2[p] * x2[s * p] + d3[p] * x3[s * p];
    }
}

static inline void lr_dot1_SUFFIX(scalar_t* restrict acc, const scalar_t* restrict d, const scalar_t* restrict x,
                                  long len, int s) {
    for (long p = 0; p < len; ++p) acc[p] += d[p] * x[s * p];
}

/* dx[s * p] += P[p] * dout[p] (distinct targets within one call: no conflict) */
static inline void lr_scatter4_SUFFIX(const scalar_t* restrict P, const scalar_t* restrict d0,
                                      const scalar_t* restrict d1, const scalar_t* restrict d2,
                                      const scalar_t* restrict d3, scalar_t* restrict x0, scalar_t* restrict x1,
                                      scalar_t* restrict x2, scalar_t* restrict x3, long len, int s) {
    if (s == 1) {
        for (long p = 0; p < len; ++p) {
            const scalar_t w = P[p];
            x0[p] += w * d0[p]; x1[p] += w * d1[p]; x2[p] += w * d2[p]; x3[p] += w * d3[p];
        }
    } else {
        for (long p = 0; p < len; ++p) {
            const scalar_t w = P[p];
            x0[s * p] += w * d0[p]; x1[s * p] += w * d1[p]; x2[s * p] += w * d2[p]; x3[s * p] += w * d3[p];
        }
    }
}

static inline void lr_scatter1_SUFFIX(const scalar_t* restrict P, const scalar_t* restrict d, scalar_t* restrict x,
                                      long len, int s) {
    for (long p = 0; p < len; ++p) x[s * p] += P[p] * d[p];
}

/* the padded 0/1 plane of in-image cells */
static void lr_valid_plane_SUFFIX(scalar_t* vp, const lr_geom_SUFFIX* G) {
    for (long e = 0; e < G->plane; ++e) vp[e] = 0;
    for (int i = 0; i < G->H; ++i)
        for (int j = 0; j < G->W; ++j) vp[(long)(i + G->r) * G->Wq + j + G->r] = 1;
}

/* the padded key plane (zeros without a key) and the m padded value planes of group g of image n */
static void lr_load_group_SUFFIX(const scalar_t* x, const scalar_t* key, scalar_t* kp, scalar_t* xp, long n, long g,
                                 int C, int Gn, int m, const lr_geom_SUFFIX* G) {
    const long hw = (long)G->H * G->W;
    if (key) lr_pad_SUFFIX(key + (n * Gn + g) * hw, kp, G);
    else for (long e = 0; e < G->plane; ++e) kp[e] = 0;
    for (int c = 0; c < m; ++c) lr_pad_SUFFIX(x + (n * C + g * m + c) * hw, xp + c * G->plane, G);
}

void lr_forward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                       scalar_t* out, scalar_t* lse, int N, int C, int Gn, int H, int W, int Ho, int Wo, int k,
                       int s, int app, int mask, int nthreads) {
    const int m = C / Gn;
    const lr_geom_SUFFIX G = lr_geom_make_SUFFIX(H, W, Ho, Wo, k, s);
    const long blen = (long)G.Rb * G.Wr;
    scalar_t* vp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane);
    lr_valid_plane_SUFFIX(vp, &G);
#pragma omp parallel num_threads(nthreads)
    {
        scalar_t* kp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane);
        scalar_t* xp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane * m);
        scalar_t* L = (scalar_t*)malloc(sizeof(scalar_t) * blen * G.K2);
        scalar_t* qb = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* M = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* S = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* lb = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* ob = (scalar_t*)malloc(sizeof(scalar_t) * blen * m);
        for (long e = 0; e < blen; ++e) qb[e] = 0;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * Gn; ++t) {
            const long n = t / Gn, g = t % Gn;
            lr_load_group_SUFFIX(x, key, kp, xp, n, g, C, Gn, m, &G);
            const scalar_t* geog = geo ? geo + g * G.K2 : 0;
            for (int i0 = 0; i0 < Ho; i0 += G.Rb) {
                const int nb = Ho - i0 < G.Rb ? Ho - i0 : G.Rb;
                const long len = (long)nb * G.Wr;
                if (q) lr_rows_in_SUFFIX(q + (n * Gn + g) * (long)Ho * Wo, qb, i0, nb, &G);
                lr_block_logits_SUFFIX(qb, kp, vp, geog, L, i0, len, app, mask, &G);
                lr_block_softmax_SUFFIX(L, M, S, lb, len, G.K2);
                lr_rows_out_SUFFIX(lb, lse + (n * Gn + g) * (long)Ho * Wo, i0, nb, &G);
                for (long e = 0; e < len * m; ++e) ob[e] = 0;
                for (int o = 0; o < G.K2; ++o) {
                    const long off = lr_off_SUFFIX(&G, o, i0);
                    const scalar_t* P = L + (long)o * len;
                    int c = 0;
                    for (; c + 4 <= m; c += 4)
                        lr_acc4_SUFFIX(P, xp + c * G.plane + off, xp + (c + 1) * G.plane + off,
                                       xp + (c + 2) * G.plane + off, xp + (c + 3) * G.plane + off, ob + c * len,
                                       ob + (c + 1) * len, ob + (c + 2) * len, ob + (c + 3) * len, len, s);
                    for (; c < m; ++c) lr_acc1_SUFFIX(P, xp + c * G.plane + off, ob + c * len, len, s);
                }
                for (int c = 0; c < m; ++c)
                    lr_rows_out_SUFFIX(ob + c * len, out + (n * C + g * m + c) * (long)Ho * Wo, i0, nb, &G);
            }
        }
        free(kp); free(xp); free(L); free(qb); free(M); free(S); free(lb); free(ob);
    }
    free(vp);
}

/* Gradients. dx (N,C,H,W), dkey (N,G,H,W): accumulated into (zero-filled by the caller); dq (N,G,Ho,Wo):
 * overwritten; dgeo_part (N, G, K2): per-(n, g) partial sums (the caller sums over n). Null = not needed. */
void lr_backward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                        const scalar_t* lse, const scalar_t* dout, scalar_t* dx, scalar_t* dq, scalar_t* dkey,
                        scalar_t* dgeo_part, int N, int C, int Gn, int H, int W, int Ho, int Wo, int k, int s,
                        int app, int mask, int nthreads) {
    const int m = C / Gn;
    const lr_geom_SUFFIX G = lr_geom_make_SUFFIX(H, W, Ho, Wo, k, s);
    const long blen = (long)G.Rb * G.Wr;
    const int need_logit_grad = (dq || dkey || dgeo_part);
    scalar_t* vp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane);
    lr_valid_plane_SUFFIX(vp, &G);
#pragma omp parallel num_threads(nthreads)
    {
        scalar_t* kp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane);
        scalar_t* dkp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane);
        scalar_t* xp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane * m);
        scalar_t* dxp = (scalar_t*)malloc(sizeof(scalar_t) * G.plane * m);
        scalar_t* P = (scalar_t*)malloc(sizeof(scalar_t) * blen * G.K2);
        scalar_t* dP = (scalar_t*)malloc(sizeof(scalar_t) * blen * G.K2);
        scalar_t* qb = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* lb = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* rd = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* dqb = (scalar_t*)malloc(sizeof(scalar_t) * blen);
        scalar_t* db = (scalar_t*)malloc(sizeof(scalar_t) * blen * m);
        for (long e = 0; e < blen; ++e) qb[e] = 0;
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * Gn; ++t) {
            const long n = t / Gn, g = t % Gn;
            lr_load_group_SUFFIX(x, key, kp, xp, n, g, C, Gn, m, &G);
            if (dkey) for (long e = 0; e < G.plane; ++e) dkp[e] = 0;
            if (dx) for (long e = 0; e < G.plane * m; ++e) dxp[e] = 0;
            const scalar_t* geog = geo ? geo + g * G.K2 : 0;
            scalar_t* dgg = dgeo_part ? dgeo_part + (n * Gn + g) * G.K2 : 0;
            if (dgg) for (int o = 0; o < G.K2; ++o) dgg[o] = 0;
            for (int i0 = 0; i0 < Ho; i0 += G.Rb) {
                const int nb = Ho - i0 < G.Rb ? Ho - i0 : G.Rb;
                const long len = (long)nb * G.Wr;
                if (q) lr_rows_in_SUFFIX(q + (n * Gn + g) * (long)Ho * Wo, qb, i0, nb, &G);
                for (int c = 0; c < m; ++c)
                    lr_rows_in_SUFFIX(dout + (n * C + g * m + c) * (long)Ho * Wo, db + c * len, i0, nb, &G);
                /* P = exp(logit - lse); junk columns get lse = +inf (P ~ 0, and their dout is 0 anyway) */
                lr_block_logits_SUFFIX(qb, kp, vp, geog, P, i0, len, app, mask, &G);
                lr_rows_in_SUFFIX(lse + (n * Gn + g) * (long)Ho * Wo, lb, i0, nb, &G);
                for (int ii = 0; ii < nb; ++ii)
                    for (int j = G.Wo; j < G.Wr; ++j) lb[(long)ii * G.Wr + j] = INFINITY;
                for (int o = 0; o < G.K2; ++o) {
                    scalar_t* restrict Po = P + (long)o * len;
                    for (long p = 0; p < len; ++p) Po[p] = Po[p] > -INFINITY ? EXP(Po[p] - lb[p]) : (scalar_t)0;
                }
                if (need_logit_grad) {
                    for (long e = 0; e < len * G.K2; ++e) dP[e] = 0;
                    for (int o = 0; o < G.K2; ++o) {
                        const long off = lr_off_SUFFIX(&G, o, i0);
                        scalar_t* dPo = dP + (long)o * len;
                        int c = 0;
                        for (; c + 4 <= m; c += 4)
                            lr_dot4_SUFFIX(dPo, db + c * len, db + (c + 1) * len, db + (c + 2) * len,
                                           db + (c + 3) * len, xp + c * G.plane + off, xp + (c + 1) * G.plane + off,
                                           xp + (c + 2) * G.plane + off, xp + (c + 3) * G.plane + off, len, s);
                        for (; c < m; ++c) lr_dot1_SUFFIX(dPo, db + c * len, xp + c * G.plane + off, len, s);
                    }
                    /* dL = P * (dP - sum_o P dP), in dP */
                    for (long p = 0; p < len; ++p) rd[p] = 0;
                    for (int o = 0; o < G.K2; ++o) {
                        const scalar_t* restrict Po = P + (long)o * len;
                        const scalar_t* restrict dPo = dP + (long)o * len;
                        for (long p = 0; p < len; ++p) rd[p] += Po[p] * dPo[p];
                    }
                    for (int o = 0; o < G.K2; ++o) {
                        const scalar_t* restrict Po = P + (long)o * len;
                        scalar_t* restrict dPo = dP + (long)o * len;
                        for (long p = 0; p < len; ++p) dPo[p] = Po[p] * (dPo[p] - rd[p]);
                    }
                    if (dgg) {
                        for (int o = 0; o < G.K2; ++o) {
                            const scalar_t* restrict dLo = dP + (long)o * len;
                            scalar_t acc = 0;
                            for (long p = 0; p < len; ++p) acc += dLo[p];
                            dgg[o] += acc;
                        }
                    }
                    if (app != 0 && (dq || dkey)) {
                        for (long p = 0; p < len; ++p) dqb[p] = 0;
                        for (int o = 0; o < G.K2; ++o) {
                            const long off = lr_off_SUFFIX(&G, o, i0);
                            const scalar_t* restrict dLo = dP + (long)o * len;
                            const scalar_t* restrict kk = kp + off;
                            scalar_t* restrict dkk = dkp + off;
                            /* the key gradient is scattered into the padded plane: cells outside the image
                             * (zero-padded constants) are dropped when the interior is copied out */
                            if (app == 1) {
                                for (long p = 0; p < len; ++p) {
                                    const scalar_t d = 2 * (qb[p] - kk[s * p]) * dLo[p];
                                    dqb[p] -= d;
                                    dkk[s * p] += d;
                                }
                            } else if (app == 2) {
                                for (long p = 0; p < len; ++p) {
                                    const scalar_t df = qb[p] - kk[s * p];
                                    const scalar_t d = (df > 0 ? (scalar_t)1 : (df < 0 ? (scalar_t)-1 : (scalar_t)0)) * dLo[p];
                                    dqb[p] -= d;
                                    dkk[s * p] += d;
                                }
                            } else {
                                for (long p = 0; p < len; ++p) {
                                    dqb[p] += kk[s * p] * dLo[p];
                                    dkk[s * p] += qb[p] * dLo[p];
                                }
                            }
                        }
                        if (dq) lr_rows_out_SUFFIX(dqb, dq + (n * Gn + g) * (long)Ho * Wo, i0, nb, &G);
                    }
                }
                if (dx) {
                    for (int o = 0; o < G.K2; ++o) {
                        const long off = lr_off_SUFFIX(&G, o, i0);
                        const scalar_t* Po = P + (long)o * len;
                        int c = 0;
                        for (; c + 4 <= m; c += 4)
                            lr_scatter4_SUFFIX(Po, db + c * len, db + (c + 1) * len, db + (c + 2) * len,
                                               db + (c + 3) * len, dxp + c * G.plane + off,
                                               dxp + (c + 1) * G.plane + off, dxp + (c + 2) * G.plane + off,
                                               dxp + (c + 3) * G.plane + off, len, s);
                        for (; c < m; ++c) lr_scatter1_SUFFIX(Po, db + c * len, dxp + c * G.plane + off, len, s);
                    }
                }
            }
            if (dkey) lr_unpad_add_SUFFIX(dkp, dkey + (n * Gn + g) * (long)H * W, &G);
            if (dx)
                for (int c = 0; c < m; ++c)
                    lr_unpad_add_SUFFIX(dxp + c * G.plane, dx + (n * C + g * m + c) * (long)H * W, &G);
        }
        free(kp); free(dkp); free(xp); free(dxp); free(P); free(dP); free(qb); free(lb); free(rd); free(dqb); free(db);
    }
    free(vp);
}
