/*
 * Local relation CPU kernel, part 1 of 2 (see lr_cpu.c for the algorithm): geometry of the polyphase
 * planes, copies between NCHW maps and planes or row blocks, the per-block cell table and the per-thread
 * work buffers. A template like lr_cpu.c (scalar_t / SUFFIX / vec_t / mask_t are substituted).
 */

#ifndef LR_VL
#define LR_VL 16        /* pixels per register chunk */
#define LR_SLACK (2 * LR_VL)
#define LR_MAXK2 1024   /* k <= 31 (Python checks) */
#endif

typedef struct {
    int H, W, Ho, Wo, k, s, r, K2, m;
    int Wp, Hp;         /* phase-plane row stride and rows */
    long plane;         /* Hp * Wp: one phase */
    long planes;        /* s * s * plane: one padded map (arrays get LR_SLACK more: chunk reads overrun) */
    int Rb;             /* output rows per block */
    long colbase[32], rowphase[32];  /* cell (ky, kx) of output pixel p sits at p + rowphase[ky] + colbase[kx]
                                      * + (i0 + ky / s) * Wp in a block starting at row i0 */
    int colok[32];      /* 1 when some output column sees cell column kx inside the image */
} lr_geom_SUFFIX;

static lr_geom_SUFFIX lr_geom_make_SUFFIX(int H, int W, int Ho, int Wo, int k, int s, int m, int block) {
    lr_geom_SUFFIX G;
    G.H = H; G.W = W; G.Ho = Ho; G.Wo = Wo; G.k = k; G.s = s; G.r = k / 2; G.K2 = k * k; G.m = m;
    G.Wp = (W + 2 * G.r + s - 1) / s;
    /* reads reach phase row Ho - 1 + 2r / s <= ceil((H + 2r) / s); junk columns of the last row spill
     * into the next one */
    G.Hp = (H + 2 * G.r + s - 1) / s + 2;
    G.plane = (long)G.Hp * G.Wp;
    G.planes = G.plane * s * s;
    /* Maps at least LR_VL wide go one output row per block, in chunks of LR_VL pixels from column 0: no
     * junk columns are computed (for Wo a multiple of LR_VL) and a cell whose row is outside the image is
     * skipped for the whole row. Narrower maps pack several rows (and their junk columns) per chunk. */
    for (int kk = 0; kk < k && kk < 32; ++kk) {
        G.colbase[kk] = (long)(kk % s) * G.plane + kk / s;
        G.rowphase[kk] = (long)(kk % s) * s * G.plane;
        G.colok[kk] = (Wo - 1) * s + kk - G.r >= 0 && kk - G.r < W;
    }
    G.Rb = Wo >= LR_VL ? 1 : block / G.Wp;
    if (G.Rb < 1) G.Rb = 1;
    if (G.Rb > Ho) G.Rb = Ho;
    return G;
}

/* image row y of a (H, W) map <-> its row in the polyphase planes: row(Y % s, X % s) holds column X at X / s.
 * dir 0: planes <- src; dir 1: dst <- planes. Integer division only once per row and phase. */
static void lr_phase_row_SUFFIX(scalar_t* restrict planes, scalar_t* restrict img, int y, int dir,
                                const lr_geom_SUFFIX* G) {
    const int s = G->s, r = G->r, Y = y + r;
    scalar_t* rowb = planes + (long)(Y % s) * s * G->plane + (long)(Y / s) * G->Wp;
    scalar_t* im = img + (long)y * G->W;
    if (s == 1) {
        if (dir == 0) memcpy(rowb + r, im, sizeof(scalar_t) * G->W);
        else memcpy(im, rowb + r, sizeof(scalar_t) * G->W);
        return;
    }
    for (int b = 0; b < s; ++b) {
        const int x0 = ((b - r) % s + s) % s;            /* first column x with (x + r) % s == b */
        scalar_t* d = rowb + (long)b * G->plane + (x0 + r) / s;
        const int cnt = x0 < G->W ? (G->W - 1 - x0) / s + 1 : 0;
        if (dir == 0) for (int t = 0; t < cnt; ++t) d[t] = im[x0 + t * s];
        else for (int t = 0; t < cnt; ++t) im[x0 + t * s] = d[t];
    }
}

/* src (H, W), rows contiguous -> zero-padded polyphase planes */
static void lr_phase_in_SUFFIX(const scalar_t* src, scalar_t* dst, const lr_geom_SUFFIX* G) {
    memset(dst, 0, sizeof(scalar_t) * G->planes);  /* the slack after the last channel is zeroed once */
    for (int y = 0; y < G->H; ++y) lr_phase_row_SUFFIX(dst, (scalar_t*)src, y, 0, G);
}

/* interior of polyphase planes -> dst (H, W), rows contiguous (assigned) */
static void lr_phase_out_SUFFIX(const scalar_t* src, scalar_t* dst, const lr_geom_SUFFIX* G) {
    for (int y = 0; y < G->H; ++y) lr_phase_row_SUFFIX((scalar_t*)src, dst, y, 1, G);
}

/* the mask plane: 0 for in-image cells, -inf outside */
static void lr_mask_plane_SUFFIX(scalar_t* vb, const lr_geom_SUFFIX* G) {
    for (long e = 0; e < G->planes + LR_SLACK; ++e) vb[e] = -INFINITY;
    const int s = G->s;
    for (int y = 0; y < G->H; ++y)
        for (int x = 0; x < G->W; ++x) {
            const int Y = y + G->r, X = x + G->r;
            vb[(long)((Y % s) * s + X % s) * G->plane + (long)(Y / s) * G->Wp + X / s] = 0;
        }
}

/* rows [i0, i0 + nb) of a strided (Ho, Wo) map -> block with row stride Wp; junk columns and the tail
 * up to lenp (a multiple of LR_VL) get `fill` */
static void lr_rows_in_SUFFIX(const scalar_t* restrict src, long si, long sj, scalar_t* restrict dst, int i0,
                              int nb, long lenp, scalar_t fill, const lr_geom_SUFFIX* G) {
    for (int ii = 0; ii < nb; ++ii) {
        const scalar_t* a = src + (long)(i0 + ii) * si;
        scalar_t* d = dst + (long)ii * G->Wp;
        for (int j = 0; j < G->Wo; ++j) d[j] = a[j * sj];
        for (int j = G->Wo; j < G->Wp; ++j) d[j] = fill;
    }
    for (long e = (long)nb * G->Wp; e < lenp; ++e) dst[e] = fill;
}

static void lr_rows_out_SUFFIX(const scalar_t* restrict src, scalar_t* restrict dst, long si, long sj, int i0,
                               int nb, const lr_geom_SUFFIX* G) {
    for (int ii = 0; ii < nb; ++ii) {
        const scalar_t* a = src + (long)ii * G->Wp;
        scalar_t* d = dst + (long)(i0 + ii) * si;
        for (int j = 0; j < G->Wo; ++j) d[j * sj] = a[j];
    }
}

typedef struct {    /* the cells of a block that can hold in-image pixels: their index, position, prior */
    int n, o[LR_MAXK2];
    long off[LR_MAXK2];
    scalar_t gb[LR_MAXK2];
} lr_cells_SUFFIX;

typedef struct {    /* per-thread buffers: planes (+ slack), block arrays of lenp, chunk arrays of K2 x LR_VL */
    scalar_t *kp, *xp, *dkp, *dxp;      /* padded key, m values, their gradients */
    scalar_t *qb, *M, *S, *acc, *db, *ob, *dqb;
    scalar_t *L, *dG;                   /* per-chunk cell values (K2 x LR_VL); dgeo partial sums */
    lr_cells_SUFFIX cl;
} lr_work_SUFFIX;

static long lr_lenp_SUFFIX(const lr_geom_SUFFIX* G) {
    const long blen = (long)G->Rb * G->Wp;
    return (blen + LR_VL - 1) / LR_VL * LR_VL;
}

/* end of the chunks of a block: a one-row block stops at the first multiple of LR_VL >= Wo */
static inline long lr_chunks_end_SUFFIX(const lr_geom_SUFFIX* G, int nb, long lenp) {
    return nb == 1 ? (G->Wo + LR_VL - 1) / LR_VL * LR_VL : lenp;
}

static lr_work_SUFFIX* lr_work_alloc_SUFFIX(const lr_geom_SUFFIX* G, int bwd) {
    const long lp = lr_lenp_SUFFIX(G), pl = G->planes, m = G->m, ck = (long)G->K2 * LR_VL;
    const size_t z = sizeof(scalar_t);
    lr_work_SUFFIX* w = calloc(1, sizeof(lr_work_SUFFIX));
    if (!w) return 0;
    w->kp = calloc(pl + LR_SLACK, z); w->xp = calloc(m * pl + LR_SLACK, z);
    w->qb = calloc(lp, z); w->M = calloc(lp, z); w->S = calloc(lp, z); w->acc = calloc(m * lp, z);
    w->L = calloc(ck, z);
    int ok = w->kp && w->xp && w->qb && w->M && w->S && w->acc && w->L;
    if (bwd) {
        w->dkp = calloc(pl + LR_SLACK, z); w->dxp = calloc(m * pl + LR_SLACK, z);
        w->db = calloc(m * lp, z); w->ob = calloc(m * lp, z); w->dqb = calloc(lp, z); w->dG = calloc(ck, z);
        ok = ok && w->dkp && w->dxp && w->db && w->ob && w->dqb && w->dG;
    }
    if (ok) return w;
    free(w->kp); free(w->xp); free(w->qb); free(w->M); free(w->S); free(w->acc); free(w->L);
    free(w->dkp); free(w->dxp); free(w->db); free(w->ob); free(w->dqb); free(w->dG); free(w);
    return 0;
}

static void lr_work_free_SUFFIX(lr_work_SUFFIX* w) {
    if (!w) return;
    free(w->kp); free(w->xp); free(w->qb); free(w->M); free(w->S); free(w->acc); free(w->L);
    free(w->dkp); free(w->dxp); free(w->db); free(w->ob); free(w->dqb); free(w->dG); free(w);
}

/* the padded key planes (zeros without a key) and the m value planes of group g of image n */
static void lr_load_group_SUFFIX(const scalar_t* x, const scalar_t* key, const long* ks, lr_work_SUFFIX* w, long n,
                                 long g, int C, const lr_geom_SUFFIX* G) {
    const long hw = (long)G->H * G->W;
    if (key) lr_phase_in_SUFFIX(key + n * ks[0] + g * ks[1], w->kp, G);
    for (int c = 0; c < G->m; ++c) lr_phase_in_SUFFIX(x + (n * C + g * G->m + c) * hw, w->xp + c * G->planes, G);
}

/* the cells of the block of rows [i0, i0 + nb); with the mask border, cells whose rows (or columns) are outside
 * the image for every pixel of the block are left out (their weight is exactly 0) */
static void lr_cells_make_SUFFIX(lr_cells_SUFFIX* cl, const scalar_t* geog, int i0, int nb, int mask,
                                 const lr_geom_SUFFIX* G) {
    cl->n = 0;
    for (int ky = 0; ky < G->k; ++ky) {
        const int ylo = i0 * G->s + ky - G->r, yhi = (i0 + nb - 1) * G->s + ky - G->r;
        if (mask && (yhi < 0 || ylo >= G->H)) continue;
        const long rowoff = G->rowphase[ky] + (long)(i0 + ky / G->s) * G->Wp;
        for (int kx = 0; kx < G->k; ++kx) {
            if (mask && !G->colok[kx]) continue;
            const int o = ky * G->k + kx;
            cl->o[cl->n] = o;
            cl->off[cl->n] = rowoff + G->colbase[kx];
            cl->gb[cl->n++] = geog ? geog[o] : (scalar_t)0;
        }
    }
}

