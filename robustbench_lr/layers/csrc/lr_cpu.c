/*
 * Local relation aggregation (LR-Net, Hu et al., ICCV 2019, Eq. 2) on the CPU: forward and backward.
 *
 * Layout NCHW, contiguous. For output pixel p = (i, j), group g (channels g*m .. g*m+m-1) and window offset
 * o = (dy, dx), row-major from (-r, -r):
 *     logit[o] = Phi(q[g, i, j], key[g, i*s + dy, j*s + dx]) + geo[g, o]
 *     P = softmax_o(logit)                 (mask border: out-of-image cells excluded, weight exactly 0;
 *                                           zeros border: key = 0 there, and the zero value adds nothing)
 *     out[c, i, j] = sum_o P[o] * x[c, i*s + dy, j*s + dx]
 * The forward writes `out` and the per-pixel log-sum-exp `lse` (N, G, Ho, Wo); the backward recomputes P
 * from lse instead of storing the k*k weights. Work is split over (n, g) pairs: each task owns its group's
 * channels of x/dx and its key map, so scatters in the backward never race, and results do not depend
 * on the number of threads. Inner loops run along a row (j), which the compiler vectorises.
 *
 * This file is a template: Python substitutes scalar_t / SUFFIX / EXP / LOG for float and double.
 */

/* Hot loops as functions with restrict parameters (GCC vectorises these, not block-scope restrict pointers). */
static inline void lr_axpy4_SUFFIX(const scalar_t* restrict p, const scalar_t* restrict x0, const scalar_t* restrict x1,
                                   const scalar_t* restrict x2, const scalar_t* restrict x3, scalar_t* restrict o0,
                                   scalar_t* restrict o1, scalar_t* restrict o2, scalar_t* restrict o3, int a, int e) {
    for (int j = a; j <= e; ++j) {
        const scalar_t w = p[j];
        o0[j] += w * x0[j]; o1[j] += w * x1[j]; o2[j] += w * x2[j]; o3[j] += w * x3[j];
    }
}

static inline void lr_axpy1_SUFFIX(const scalar_t* restrict p, const scalar_t* restrict x, scalar_t* restrict o,
                                   int a, int e, int s) {
    if (s == 1) {
        for (int j = a; j <= e; ++j) o[j] += p[j] * x[j];
    } else {
        for (int j = a; j <= e; ++j) o[j] += p[j] * x[(long)j * s];
    }
}

static inline void lr_dot4_SUFFIX(scalar_t* restrict acc, const scalar_t* restrict d0, const scalar_t* restrict d1,
                                  const scalar_t* restrict d2, const scalar_t* restrict d3, const scalar_t* restrict x0,
                                  const scalar_t* restrict x1, const scalar_t* restrict x2, const scalar_t* restrict x3,
                                  int a, int e) {
    for (int j = a; j <= e; ++j) acc[j] += d0[j] * x0[j] + d1[j] * x1[j] + d2[j] * x2[j] + d3[j] * x3[j];
}

static inline void lr_dot1_SUFFIX(scalar_t* restrict acc, const scalar_t* restrict d, const scalar_t* restrict x,
                                  int a, int e, int s) {
    if (s == 1) {
        for (int j = a; j <= e; ++j) acc[j] += d[j] * x[j];
    } else {
        for (int j = a; j <= e; ++j) acc[j] += d[j] * x[(long)j * s];
    }
}

static inline void lr_scatter1_SUFFIX(const scalar_t* restrict p, const scalar_t* restrict d, scalar_t* restrict dx,
                                      int a, int e, int s) {
    if (s == 1) {
        for (int j = a; j <= e; ++j) dx[j] += p[j] * d[j];
    } else {
        for (int j = a; j <= e; ++j) dx[(long)j * s] += p[j] * d[j];
    }
}

static void lr_row_logits_SUFFIX(const scalar_t* qrow, const scalar_t* kg, const scalar_t* geog, scalar_t* L,
                                 int* J0, int* J1, int i, int H, int W, int Wo, int k, int s, int app) {
    const int r = k / 2, K2 = k * k;
    for (int o = 0; o < K2; ++o) {
        const int dy = o / k - r, dx = o % k - r, yy = i * s + dy;
        scalar_t* Lo = L + (long)o * Wo;
        const scalar_t gb = geog ? geog[o] : (scalar_t)0;
        int j0 = Wo, j1 = -1;  /* valid j: 0 <= j*s + dx < W, and the row inside the image */
        if (yy >= 0 && yy < H) {
            j0 = dx >= 0 ? 0 : (-dx + s - 1) / s;
            j1 = (W - 1 - dx) >= 0 ? (W - 1 - dx) / s : -1;
            if (j1 > Wo - 1) j1 = Wo - 1;
        }
        J0[o] = j0;
        J1[o] = j1;
        if (app == 0) {
            for (int j = 0; j < Wo; ++j) Lo[j] = gb;
            continue;
        }
        /* cells outside the image see key = 0 (what zero padding gives; masked later in mask mode) */
        for (int j = 0; j < Wo; ++j) {
            const scalar_t qv = qrow[j];
            Lo[j] = (app == 3 ? (scalar_t)0 : (app == 1 ? -qv * qv : -(qv < 0 ? -qv : qv))) + gb;
        }
        if (j0 <= j1) {
            const scalar_t* krow = kg + (long)yy * W + dx;
            if (app == 1) {
                for (int j = j0; j <= j1; ++j) { scalar_t d = qrow[j] - krow[(long)j * s]; Lo[j] = gb - d * d; }
            } else if (app == 2) {
                for (int j = j0; j <= j1; ++j) { scalar_t d = qrow[j] - krow[(long)j * s]; Lo[j] = gb - (d < 0 ? -d : d); }
            } else {
                for (int j = j0; j <= j1; ++j) Lo[j] = gb + qrow[j] * krow[(long)j * s];
            }
        }
    }
}

/* P[o][j] = softmax over o (in place over L); writes lse[j]. mask: out-of-image cells get exactly 0. */
static void lr_row_softmax_SUFFIX(scalar_t* L, const int* J0, const int* J1, scalar_t* M, scalar_t* S,
                                  scalar_t* lse, int Wo, int K2, int mask) {
    for (int j = 0; j < Wo; ++j) { M[j] = -INFINITY; S[j] = 0; }
    for (int o = 0; o < K2; ++o) {
        const scalar_t* Lo = L + (long)o * Wo;
        const int a = mask ? J0[o] : 0, b = mask ? J1[o] : Wo - 1;
        for (int j = a; j <= b; ++j) M[j] = Lo[j] > M[j] ? Lo[j] : M[j];
    }
    for (int o = 0; o < K2; ++o) {
        scalar_t* Lo = L + (long)o * Wo;
        const int a = mask ? J0[o] : 0, b = mask ? J1[o] : Wo - 1;
        for (int j = 0; j < a; ++j) Lo[j] = 0;
        for (int j = a; j <= b; ++j) { Lo[j] = EXP(Lo[j] - M[j]); S[j] += Lo[j]; }
        for (int j = (b + 1 > a ? b + 1 : a); j < Wo; ++j) Lo[j] = 0;
    }
    for (int j = 0; j < Wo; ++j) lse[j] = M[j] + LOG(S[j]);
    for (int j = 0; j < Wo; ++j) S[j] = (scalar_t)1 / S[j];
    for (int o = 0; o < K2; ++o) {
        scalar_t* Lo = L + (long)o * Wo;
        for (int j = 0; j < Wo; ++j) Lo[j] *= S[j];
    }
}

void lr_forward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                       scalar_t* out, scalar_t* lse, int N, int C, int G, int H, int W, int Ho, int Wo, int k,
                       int s, int app, int mask, int nthreads) {
    const int m = C / G, K2 = k * k, r = k / 2;
#pragma omp parallel num_threads(nthreads)
    {
        scalar_t* L = (scalar_t*)malloc(sizeof(scalar_t) * (long)K2 * Wo);
        scalar_t* M = (scalar_t*)malloc(sizeof(scalar_t) * Wo);
        scalar_t* S = (scalar_t*)malloc(sizeof(scalar_t) * Wo);
        int* J0 = (int*)malloc(sizeof(int) * K2);
        int* J1 = (int*)malloc(sizeof(int) * K2);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * G; ++t) {
            const long n = t / G, g = t % G;
            const scalar_t* qg = q ? q + (n * G + g) * (long)Ho * Wo : 0;
            const scalar_t* kg = key ? key + (n * G + g) * (long)H * W : 0;
            const scalar_t* geog = geo ? geo + g * K2 : 0;
            scalar_t* lseg = lse + (n * G + g) * (long)Ho * Wo;
            for (int i = 0; i < Ho; ++i) {
                lr_row_logits_SUFFIX(qg ? qg + (long)i * Wo : 0, kg, geog, L, J0, J1, i, H, W, Wo, k, s, app);
                lr_row_softmax_SUFFIX(L, J0, J1, M, S, lseg + (long)i * Wo, Wo, K2, mask);
                /* out[c] = sum_o P[o] * x_shift[c]; four channels per pass share each load of P[o] */
                for (int c0 = 0; c0 < m; c0 += 4) {
                    const int nc = m - c0 < 4 ? m - c0 : 4;
                    const scalar_t* xc[4];
                    scalar_t* oc[4];
                    for (int b = 0; b < 4; ++b) {
                        const long ch = n * C + g * m + c0 + (b < nc ? b : 0);
                        xc[b] = x + ch * (long)H * W;
                        oc[b] = out + ch * (long)Ho * Wo + (long)i * Wo;
                    }
                    for (int b = 0; b < nc; ++b) for (int j = 0; j < Wo; ++j) oc[b][j] = 0;
                    for (int o = 0; o < K2; ++o) {
                        if (J0[o] > J1[o]) continue;
                        const int dy = o / k - r, dx = o % k - r, a = J0[o], e = J1[o];
                        const long off = (long)(i * s + dy) * W + dx;
                        const scalar_t* Po = L + (long)o * Wo;
                        if (nc == 4 && s == 1) {
                            lr_axpy4_SUFFIX(Po, xc[0] + off, xc[1] + off, xc[2] + off, xc[3] + off, oc[0], oc[1], oc[2],
                                            oc[3], a, e);
                        } else {
                            for (int b = 0; b < nc; ++b) lr_axpy1_SUFFIX(Po, xc[b] + off, oc[b], a, e, s);
                        }
                    }
                }
            }
        }
        free(L); free(M); free(S); free(J0); free(J1);
    }
}

/* Gradients. dx, dkey must be zero-filled (N,C,H,W)/(N,G,H,W); dq (N,G,Ho,Wo) is overwritten;
 * dgeo_part (N, G, K2) receives per-(n, g) partial sums (summed over n by the caller). Null = not needed. */
void lr_backward_SUFFIX(const scalar_t* x, const scalar_t* q, const scalar_t* key, const scalar_t* geo,
                        const scalar_t* lse, const scalar_t* dout, scalar_t* dx, scalar_t* dq, scalar_t* dkey,
                        scalar_t* dgeo_part, int N, int C, int G, int H, int W, int Ho, int Wo, int k, int s,
                        int app, int mask, int nthreads) {
    const int m = C / G, K2 = k * k, r = k / 2;
    const int need_logit_grad = (dq || dkey || dgeo_part);
#pragma omp parallel num_threads(nthreads)
    {
        scalar_t* P = (scalar_t*)malloc(sizeof(scalar_t) * (long)K2 * Wo);
        scalar_t* dP = (scalar_t*)malloc(sizeof(scalar_t) * (long)K2 * Wo);
        scalar_t* rd = (scalar_t*)malloc(sizeof(scalar_t) * Wo);
        int* J0 = (int*)malloc(sizeof(int) * K2);
        int* J1 = (int*)malloc(sizeof(int) * K2);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < (long)N * G; ++t) {
            const long n = t / G, g = t % G;
            const scalar_t* qg = q ? q + (n * G + g) * (long)Ho * Wo : 0;
            const scalar_t* kg = key ? key + (n * G + g) * (long)H * W : 0;
            const scalar_t* geog = geo ? geo + g * K2 : 0;
            const scalar_t* lseg = lse + (n * G + g) * (long)Ho * Wo;
            scalar_t* dqg = dq ? dq + (n * G + g) * (long)Ho * Wo : 0;
            scalar_t* dkg = dkey ? dkey + (n * G + g) * (long)H * W : 0;
            scalar_t* dgg = dgeo_part ? dgeo_part + (n * G + g) * K2 : 0;
            if (dgg) for (int o = 0; o < K2; ++o) dgg[o] = 0;
            for (int i = 0; i < Ho; ++i) {
                /* recompute P = exp(logit - lse) */
                lr_row_logits_SUFFIX(qg ? qg + (long)i * Wo : 0, kg, geog, P, J0, J1, i, H, W, Wo, k, s, app);
                const scalar_t* lr_ = lseg + (long)i * Wo;
                for (int o = 0; o < K2; ++o) {
                    scalar_t* Po = P + (long)o * Wo;
                    const int a = mask ? J0[o] : 0, b = mask ? J1[o] : Wo - 1;
                    for (int j = 0; j < a; ++j) Po[j] = 0;
                    for (int j = a; j <= b; ++j) Po[j] = EXP(Po[j] - lr_[j]);
                    for (int j = (b + 1 > a ? b + 1 : a); j < Wo; ++j) Po[j] = 0;
                }
                if (need_logit_grad) {
                    /* dP[o][j] = sum_c dout[c,i,j] * x[c, yy, j*s+dx] (zero outside the image) */
                    for (long e = 0; e < (long)K2 * Wo; ++e) dP[e] = 0;
                    for (int c0 = 0; c0 < m; c0 += 4) {
                        const int nc = m - c0 < 4 ? m - c0 : 4;
                        const scalar_t* xc[4];
                        const scalar_t* dc[4];
                        for (int b = 0; b < 4; ++b) {
                            const long ch = n * C + g * m + c0 + (b < nc ? b : 0);
                            xc[b] = x + ch * (long)H * W;
                            dc[b] = dout + ch * (long)Ho * Wo + (long)i * Wo;
                        }
                        for (int o = 0; o < K2; ++o) {
                            if (J0[o] > J1[o]) continue;
                            const int dy = o / k - r, dxo = o % k - r, a = J0[o], e = J1[o];
                            const long off = (long)(i * s + dy) * W + dxo;
                            scalar_t* dPo = dP + (long)o * Wo;
                            if (nc == 4 && s == 1) {
                                lr_dot4_SUFFIX(dPo, dc[0], dc[1], dc[2], dc[3], xc[0] + off, xc[1] + off, xc[2] + off,
                                               xc[3] + off, a, e);
                            } else {
                                for (int b = 0; b < nc; ++b) lr_dot1_SUFFIX(dPo, dc[b], xc[b] + off, a, e, s);
                            }
                        }
                    }
                    /* dL = P * (dP - sum_o P dP), stored in dP */
                    for (int j = 0; j < Wo; ++j) rd[j] = 0;
                    for (int o = 0; o < K2; ++o) {
                        const scalar_t* Po = P + (long)o * Wo;
                        const scalar_t* dPo = dP + (long)o * Wo;
                        for (int j = 0; j < Wo; ++j) rd[j] += Po[j] * dPo[j];
                    }
                    for (int o = 0; o < K2; ++o) {
                        const scalar_t* Po = P + (long)o * Wo;
                        scalar_t* dPo = dP + (long)o * Wo;
                        for (int j = 0; j < Wo; ++j) dPo[j] = Po[j] * (dPo[j] - rd[j]);
                    }
                    if (dgg) {
                        for (int o = 0; o < K2; ++o) {
                            const scalar_t* dLo = dP + (long)o * Wo;
                            scalar_t acc = 0;
                            for (int j = 0; j < Wo; ++j) acc += dLo[j];
                            dgg[o] += acc;
                        }
                    }
                    if (app != 0 && (dqg || dkg)) {
                        const scalar_t* qrow = qg + (long)i * Wo;
                        scalar_t* dqrow = dqg ? dqg + (long)i * Wo : 0;
                        if (dqrow) for (int j = 0; j < Wo; ++j) dqrow[j] = 0;
                        for (int o = 0; o < K2; ++o) {
                            const scalar_t* dLo = dP + (long)o * Wo;
                            const int dy = o / k - r, dxo = o % k - r, yy = i * s + dy;
                            const int a = J0[o], b = J1[o];
                            /* zeros border: cells outside the image have key 0; they feed dq but not dkey */
                            if (!mask && dqrow) {
                                const int hi = (b + 1 > a ? b + 1 : a);
                                for (int j = 0; j < Wo; ++j) {
                                    if (j >= a && j < hi) continue;
                                    const scalar_t qv = qrow[j];
                                    if (app == 1) dqrow[j] -= 2 * qv * dLo[j];
                                    else if (app == 2) dqrow[j] -= (qv > 0 ? 1 : (qv < 0 ? -1 : 0)) * dLo[j];
                                }
                            }
                            if (a > b) continue;
                            const scalar_t* krow = kg + (long)yy * W + dxo;
                            scalar_t* dkrow = dkg ? dkg + (long)yy * W + dxo : 0;
                            for (int j = a; j <= b; ++j) {
                                const scalar_t kv = krow[(long)j * s], qv = qrow[j], dl = dLo[j];
                                scalar_t gq, gk;
                                if (app == 1) { scalar_t d = 2 * (qv - kv) * dl; gq = -d; gk = d; }
                                else if (app == 2) { scalar_t sg = (qv > kv ? 1 : (qv < kv ? -1 : 0)) * dl; gq = -sg; gk = sg; }
                                else { gq = kv * dl; gk = qv * dl; }
                                if (dqrow) dqrow[j] += gq;
                                if (dkrow) dkrow[(long)j * s] += gk;
                            }
                        }
                    }
                }
                if (dx) {
                    for (int c0 = 0; c0 < m; c0 += 4) {
                        const int nc = m - c0 < 4 ? m - c0 : 4;
                        scalar_t* dxc[4];
                        const scalar_t* dc[4];
                        for (int b = 0; b < 4; ++b) {
                            const long ch = n * C + g * m + c0 + (b < nc ? b : 0);
                            dxc[b] = dx + ch * (long)H * W;
                            dc[b] = dout + ch * (long)Ho * Wo + (long)i * Wo;
                        }
                        for (int o = 0; o < K2; ++o) {
                            if (J0[o] > J1[o]) continue;
                            const int dy = o / k - r, dxo = o % k - r, a = J0[o], e = J1[o];
                            const long off = (long)(i * s + dy) * W + dxo;
                            const scalar_t* Po = P + (long)o * Wo;
                            if (nc == 4 && s == 1) {
                                /* same shape as the forward: dx_c += P * dout_c */
                                lr_axpy4_SUFFIX(Po, dc[0], dc[1], dc[2], dc[3], dxc[0] + off, dxc[1] + off, dxc[2] + off,
                                                dxc[3] + off, a, e);
                            } else {
                                for (int b = 0; b < nc; ++b) lr_scatter1_SUFFIX(Po, dc[b], dxc[b] + off, a, e, s);
                            }
                        }
                    }
                }
            }
        }
        free(P); free(dP); free(rd); free(J0); free(J1);
    }
}
