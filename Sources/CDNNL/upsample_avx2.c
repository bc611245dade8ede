// Transposed convolution with kernel == stride (the UNet's upsampling), forward, on nCdhw8c /
// nChw8c activations with AVX2 + FMA, written straight into the upsampled grid.
//
// Why: each input voxel feeds its own K-voxel output patch, so the op is a GEMM of the input
// (positions x I) by the weights (I x K*O). Done as a 1x1 convolution plus a channel shuffle it
// moves the K*O-channel intermediate through memory twice; here an 8-register tile of
// (4 positions) x (16 output columns) accumulates over the input channels and is stored once.
#include "kernels_avx2.h"

#include <immintrin.h>

typedef struct {
    const float *x, *w2, *bias;   // w2: panels [J/2][I][16], group j = (o/8)*K + k at (j%2)*8
    float *y;
    int64_t I, D, H, W, KD, KH, KW, K, OB, J, plane, OD, OH, OW;
} up_ctx;

/// Accumulates `np` (1..4) positions starting at x0 of input row (n, z, yy) against the column
/// groups j0, j0+1 (one weight panel; a missing second group reads zeros) and stores them.
__attribute__((target("avx2,fma")))
static inline void up_tile(const up_ctx *c, const float *xb, int64_t x0, int np, int64_t j0, int groups,
                           int64_t n, int64_t z, int64_t yy) {
    const float *wcol = c->w2 + (j0 / 2) * c->I * 16;
    const float *xp = xb + x0 * 8;
    const int64_t wstep = 16, bstep = c->plane * 8;
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int64_t ib = 0; ib * 8 < c->I; ib++, xp += bstep) {
        const int64_t lanes = c->I - ib * 8 < 8 ? c->I - ib * 8 : 8;
        const float *wb = wcol + ib * 8 * wstep;
        if (np == 4) {
            // The hot path, without per-position branches.
            for (int64_t l = 0; l < lanes; l++) {
                const float *wi = wb + l * wstep;
                const __m256 w0 = _mm256_loadu_ps(wi), w1 = _mm256_loadu_ps(wi + 8);
                __m256 b = _mm256_broadcast_ss(xp + l);
                a00 = _mm256_fmadd_ps(b, w0, a00); a01 = _mm256_fmadd_ps(b, w1, a01);
                b = _mm256_broadcast_ss(xp + 8 + l);
                a10 = _mm256_fmadd_ps(b, w0, a10); a11 = _mm256_fmadd_ps(b, w1, a11);
                b = _mm256_broadcast_ss(xp + 16 + l);
                a20 = _mm256_fmadd_ps(b, w0, a20); a21 = _mm256_fmadd_ps(b, w1, a21);
                b = _mm256_broadcast_ss(xp + 24 + l);
                a30 = _mm256_fmadd_ps(b, w0, a30); a31 = _mm256_fmadd_ps(b, w1, a31);
            }
            continue;
        }
        for (int64_t l = 0; l < lanes; l++) {
            const float *wi = wb + l * wstep;
            const __m256 w0 = _mm256_loadu_ps(wi), w1 = _mm256_loadu_ps(wi + 8);
            __m256 b = _mm256_broadcast_ss(xp + l);
            a00 = _mm256_fmadd_ps(b, w0, a00); a01 = _mm256_fmadd_ps(b, w1, a01);
            if (np > 1) { b = _mm256_broadcast_ss(xp + 8 + l); a10 = _mm256_fmadd_ps(b, w0, a10); a11 = _mm256_fmadd_ps(b, w1, a11); }
            if (np > 2) { b = _mm256_broadcast_ss(xp + 16 + l); a20 = _mm256_fmadd_ps(b, w0, a20); a21 = _mm256_fmadd_ps(b, w1, a21); }
        }
    }
    const __m256 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    for (int q = 0; q < groups; q++) {
        const int64_t j = j0 + q, k = j % c->K, ob = j / c->K;
        const int64_t kd = k / (c->KH * c->KW), kh = (k / c->KW) % c->KH, kw = k % c->KW;
        const __m256 b = c->bias ? _mm256_loadu_ps(c->bias + ob * 8) : _mm256_setzero_ps();
        float *yrow = c->y + (((n * c->OB + ob) * c->OD + z * c->KD + kd) * c->OH + yy * c->KH + kh) * c->OW * 8;
        for (int p = 0; p < np; p++)
            _mm256_storeu_ps(yrow + ((x0 + p) * c->KW + kw) * 8, _mm256_add_ps(acc[p][q], b));
    }
}

static void up_rows(void *arg, int64_t begin, int64_t end) {
    const up_ctx *c = arg;
    const int64_t ICB = (c->I + 7) / 8;
    for (int64_t row = begin; row < end; row++) {
        const int64_t yy = row % c->H, z = (row / c->H) % c->D, n = row / (c->H * c->D);
        const float *xb = c->x + (n * ICB * c->plane + z * c->H * c->W + yy * c->W) * 8;
        for (int64_t j = 0; j < c->J; j += 2) {
            const int groups = j + 1 < c->J ? 2 : 1;
            int64_t x0 = 0;
            for (; x0 + 4 <= c->W; x0 += 4) up_tile(c, xb, x0, 4, j, groups, n, z, yy);
            if (x0 < c->W) up_tile(c, xb, x0, (int)(c->W - x0), j, groups, n, z, yy);
        }
    }
}

int cdnnl_upsample_avx2(const cdnnl_conv_desc *d, int threads, const float *x, const float *w2,
                        const float *bias, float *y) {
    const int r = d->spatial_rank;
    up_ctx c = {x, w2, bias, y};
    c.I = d->in_channels;
    c.D = r == 3 ? d->in_size[0] : 1; c.H = d->in_size[r - 2]; c.W = d->in_size[r - 1];
    c.KD = r == 3 ? d->kernel[0] : 1; c.KH = d->kernel[r - 2]; c.KW = d->kernel[r - 1];
    c.K = c.KD * c.KH * c.KW;
    c.OB = (d->out_channels + 7) / 8;
    c.J = c.K * c.OB;
    c.plane = c.D * c.H * c.W;
    c.OD = c.D * c.KD; c.OH = c.H * c.KH; c.OW = c.W * c.KW;
    cdnnl_parallel(threads, d->batch * c.D * c.H, up_rows, &c);
    return 0;
}
