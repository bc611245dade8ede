// Transposed convolution with kernel == stride (the UNet's upsampling), forward, on blocked
// activations (nCdhw8c / nChw8c with AVX2, the 16-channel blocks with AVX-512), written straight
// into the upsampled grid.
//
// Why: each input voxel feeds its own K-voxel output patch, so the op is a GEMM of the input
// (positions x I) by the weights (I x K*O). Done as a 1x1 convolution plus a channel shuffle it
// moves the K*O-channel intermediate through memory twice; here an 8-register tile of
// (4 positions) x (2 vectors of output columns) accumulates over the input channels and is stored once.
//
// Written once over the vector width VW; included by upsample_avx2.c and upsample_avx512.c (see simd.h).

typedef struct {
    const float *x, *w2, *bias;   // w2: panels [J/2][I][2VW], group j = (o/VW)*K + k at (j%2)*VW
    float *y;
    int64_t N, I, D, H, W, KD, KH, KW, K, OB, J, plane, OD, OH, OW;
    int stream;                   // store with non-temporal stores (an output larger than the caches)
} up_ctx;

/// Column group j = (o/VW)*K + k: its output channel block and kernel tap, and its bias.
typedef struct { int64_t ob, kd, kh, kw; vf bias; } up_group;

static inline up_group up_group_of(const up_ctx *c, int64_t j) {
    const int64_t k = j % c->K, ob = j / c->K;
    return (up_group){ob, k / (c->KH * c->KW), (k / c->KW) % c->KH, k % c->KW, c->bias ? LD(c->bias + ob * VW) : (vf){0}};
}

/// The output row that input row (n, z, yy) writes for group g (the taps kd, kh of its patch).
static inline float *up_row(const up_ctx *c, const up_group *g, int64_t n, int64_t z, int64_t yy) {
    return c->y + (((n * c->OB + g->ob) * c->OD + z * c->KD + g->kd) * c->OH + yy * c->KH + g->kh) * c->OW * VW;
}

/// Stores v + the group's bias for input column x of that row.
static inline void up_put(const up_ctx *c, const up_group *g, float *row, int64_t x, vf v) {
    float *at = row + (x * c->KW + g->kw) * VW;
    v += g->bias;
    if (c->stream) STNT(at, v); else ST(at, v);
}

/// Accumulates `np` (1..4) positions starting at x0 of input row (n, z, yy) against the column
/// groups j0, j0+1 (one weight panel; a missing second group reads zeros) and stores them.
static inline void up_tile(const up_ctx *c, const float *xb, int64_t x0, int np, int64_t j0, int groups,
                           int64_t n, int64_t z, int64_t yy) {
    const int64_t wstep = 2 * VW, bstep = c->plane * VW;
    const float *wcol = c->w2 + (j0 / 2) * c->I * wstep;
    const float *xp = xb + x0 * VW;
    vf a0[4] = {{0}}, a1[4] = {{0}};
    for (int64_t ib = 0; ib * VW < c->I; ib++, xp += bstep) {
        const int64_t lanes = c->I - ib * VW < VW ? c->I - ib * VW : VW;
        const float *wb = wcol + ib * VW * wstep;
        if (np == 4) {
            // The hot path, without per-position branches.
            for (int64_t l = 0; l < lanes; l++) {
                const vf w0 = LD(wb + l * wstep), w1 = LD(wb + l * wstep + VW);
#pragma clang loop unroll(full)
                for (int p = 0; p < 4; p++) {
                    const vf b = SPLAT(xp[p * VW + l]);
                    a0[p] += b * w0;
                    a1[p] += b * w1;
                }
            }
            continue;
        }
        for (int64_t l = 0; l < lanes; l++) {
            const vf w0 = LD(wb + l * wstep), w1 = LD(wb + l * wstep + VW);
            for (int p = 0; p < np; p++) {
                const vf b = SPLAT(xp[p * VW + l]);
                a0[p] += b * w0;
                a1[p] += b * w1;
            }
        }
    }
    for (int q = 0; q < groups; q++) {
        const up_group g = up_group_of(c, j0 + q);
        float *row = up_row(c, &g, n, z, yy);
        for (int p = 0; p < np; p++) up_put(c, &g, row, x0 + p, q ? a1[p] : a0[p]);
    }
}

static void up_rows(void *arg, int64_t begin, int64_t end) {
    const up_ctx *c = arg;
    const int64_t ICB = (c->I + VW - 1) / VW;
    for (int64_t row = begin; row < end; row++) {
        const int64_t yy = row % c->H, z = (row / c->H) % c->D, n = row / (c->H * c->D);
        const float *xb = c->x + (n * ICB * c->plane + z * c->H * c->W + yy * c->W) * VW;
        for (int64_t j = 0; j < c->J; j += 2) {
            const int groups = j + 1 < c->J ? 2 : 1;
            int64_t x0 = 0;
            for (; x0 + 4 <= c->W; x0 += 4) up_tile(c, xb, x0, 4, j, groups, n, z, yy);
            if (x0 < c->W) up_tile(c, xb, x0, (int)(c->W - x0), j, groups, n, z, yy);
        }
    }
    if (c->stream) __builtin_ia32_sfence();  // order the streaming stores before the caller's barrier
}

/// Deep layers (few positions per row, weights past L2): tiles of FP positions taken across rows, so each
/// weight vector loaded serves FP positions (up_rows' rows of 5 or 10 positions leave short tiles, and it
/// streams the whole weight once per row). Unit = (column-group pair, tile), pairs outermost, so a thread
/// keeps one pair's panel (I x 2VW) hot while its tiles pass.
#define FP (VW == 16 ? 12 : 6)  // accumulators: 2 * FP vectors (24 of 32 zmm; 12 of 16 ymm)
static void up_flat(void *arg, int64_t begin, int64_t end) {
    const up_ctx *c = arg;
    const int64_t ICB = (c->I + VW - 1) / VW, positions = c->N * c->plane, tiles = (positions + FP - 1) / FP;
    const int64_t wstep = 2 * VW, bstep = c->plane * VW;
    for (int64_t unit = begin; unit < end; unit++) {
        const int64_t j0 = 2 * (unit / tiles), t = unit % tiles;
        const int groups = j0 + 1 < c->J ? 2 : 1;
        const int64_t p0 = t * FP;
        const int np = positions - p0 < FP ? (int)(positions - p0) : FP;
        const float *xp[FP];
        for (int p = 0; p < FP; p++) {
            const int64_t q = p0 + (p < np ? p : 0), n = q / c->plane, pix = q % c->plane;
            xp[p] = c->x + (n * ICB * c->plane + pix) * VW;
        }
        vf a0[FP] = {{0}}, a1[FP] = {{0}};
        const float *wcol = c->w2 + (j0 / 2) * c->I * wstep;
        for (int64_t ib = 0; ib < ICB; ib++) {
            const int64_t lanes = c->I - ib * VW < VW ? c->I - ib * VW : VW;
            const float *wb = wcol + ib * VW * wstep;
            for (int64_t l = 0; l < lanes; l++) {
                const vf w0 = LD(wb + l * wstep), w1 = LD(wb + l * wstep + VW);
#pragma clang loop unroll(full)
                for (int p = 0; p < FP; p++) {
                    const vf b = SPLAT(xp[p][ib * bstep + l]);
                    a0[p] += b * w0;
                    a1[p] += b * w1;
                }
            }
        }
        for (int q = 0; q < groups; q++) {
            const up_group g = up_group_of(c, j0 + q);
            for (int p = 0; p < np; p++) {
                const int64_t pos = p0 + p, n = pos / c->plane, pix = pos % c->plane;
                up_put(c, &g, up_row(c, &g, n, pix / (c->W * c->H), (pix / c->W) % c->H), pix % c->W, q ? a1[p] : a0[p]);
            }
        }
    }
    if (c->stream) __builtin_ia32_sfence();
}

int SFX(cdnnl_upsample)(const cdnnl_conv_desc *d, int threads, const float *x, const float *w2,
                        const float *bias, float *y) {
    const int r = d->spatial_rank;
    up_ctx c = {x, w2, bias, y};
    c.N = d->batch;
    c.I = d->in_channels;
    c.D = r == 3 ? d->in_size[0] : 1; c.H = d->in_size[r - 2]; c.W = d->in_size[r - 1];
    c.KD = r == 3 ? d->kernel[0] : 1; c.KH = d->kernel[r - 2]; c.KW = d->kernel[r - 1];
    c.K = c.KD * c.KH * c.KW;
    c.OB = (d->out_channels + VW - 1) / VW;
    c.J = c.K * c.OB;
    c.plane = c.D * c.H * c.W;
    c.OD = c.D * c.KD; c.OH = c.H * c.KH; c.OW = c.W * c.KW;
    c.stream = cdnnl_stream_output(y, (size_t)d->batch * c.OB * VW * c.OD * c.OH * c.OW * sizeof(float), VW * sizeof(float));
    // Weights past 1 MiB (the deep layers): tiles across rows. Measured (Zen 4, AVX-512, 2D at batch 16):
    // 512->512 from 6x5 150-152 GFLOP/s against 71-82 by rows, 512->256 from 12x10 183-185 against 121-127;
    // by rows stays faster from 256->128 at 24x20 down (188-200 against 145-188).
    if ((size_t)c.I * c.K * d->out_channels * sizeof(float) > ((size_t)1 << 20)) {
        const int64_t tiles = (d->batch * c.plane + FP - 1) / FP;
        cdnnl_parallel(threads, (c.J + 1) / 2 * tiles, up_flat, &c);
    } else {
        cdnnl_parallel(threads, d->batch * c.D * c.H, up_rows, &c);
    }
    return 0;
}
