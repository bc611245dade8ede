// Normalization on blocked activations (nCdhw8c / nChw8c with AVX2, the 16-channel blocks with
// AVX-512). Forward of norm -> leaky ReLU: the statistics in one read, then normalize + activate in
// one read and one write, where oneDNN's normalization and a separate activation pass take five
// reads and two writes. Backward of the same from the activated output alone (see below).
//
// Written once over the vector width VW; included by norm_avx2.c and norm_avx512.c (see simd.h).

typedef struct {
    const float *x, *residual;
    float *out;
    double *stats;
    const float *a, *b;
    int64_t blocks, spatial;
    float slope;
} norm_ctx;

/// Per unit (sample n, channel block cb): for each lane, the shift K (the unit's first value), the sum
/// of x - K and the sum of (x - K)^2 over the positions, in stats[(u * 3 + {0, 1, 2}) * VW + lane].
/// Shifted sums keep the variance accurate when the mean is large against the spread.
static void stats_range(void *arg, int64_t begin, int64_t end) {
    const norm_ctx *k = arg;
    for (int64_t u = begin; u < end; u++) {
        const float *x = k->x + u * k->spatial * VW;
        const vf K = LD(x);
        double s1[VW] = {0}, s2[VW] = {0};
        // Float partial sums over runs of 512 positions (4 independent chains); doubles across runs.
        for (int64_t s0 = 0; s0 < k->spatial; s0 += 512) {
            const int64_t s1e = s0 + 512 < k->spatial ? s0 + 512 : k->spatial;
            vf p1[4] = {{0}}, p2[4] = {{0}};
            int64_t s = s0;
            for (; s + 4 <= s1e; s += 4)
#pragma clang loop unroll(full)
                for (int q = 0; q < 4; q++) {
                    const vf d = LD(x + (s + q) * VW) - K;
                    p1[q] += d;
                    p2[q] += d * d;
                }
            for (; s < s1e; s++) {
                const vf d = LD(x + s * VW) - K;
                p1[0] += d;
                p2[0] += d * d;
            }
            const vf t1 = (p1[0] + p1[1]) + (p1[2] + p1[3]), t2 = (p2[0] + p2[1]) + (p2[2] + p2[3]);
            for (int l = 0; l < VW; l++) { s1[l] += t1[l]; s2[l] += t2[l]; }
        }
        double *o = k->stats + u * 3 * VW;
        for (int l = 0; l < VW; l++) { o[l] = K[l]; o[VW + l] = s1[l]; o[2 * VW + l] = s2[l]; }
    }
}

void SFX(cdnnl_norm_stats)(const float *x, int64_t units, int64_t spatial, double *stats) {
    norm_ctx k = {x, NULL, NULL, stats, NULL, NULL, 0, spatial, 1};
    cdnnl_parallel(cdnnl_max_threads(), units, stats_range, &k);
}

/// out = leaky_relu(x * a + b (+ residual)) per unit (n, cb), a and b per unit and lane: a[u * VW + l].
static void affine_range(void *arg, int64_t begin, int64_t end) {
    const norm_ctx *k = arg;
    const vf slope = SPLAT(k->slope);
    for (int64_t u = begin; u < end; u++) {
        const int64_t base = u * k->spatial * VW;
        const float *x = k->x + base, *r = k->residual ? k->residual + base : NULL;
        float *o = k->out + base;
        const vf a = LD(k->a + u * VW), b = LD(k->b + u * VW);
        for (int64_t s = 0; s < k->spatial * VW; s += VW) {
            vf v = LD(x + s) * a + b;
            if (r) v += LD(r + s);
            ST(o + s, VMAX(v, v * slope));
        }
    }
}

void SFX(cdnnl_norm_affine_activate)(const float *x, const float *residual, float *out, int64_t units, int64_t spatial,
                                     const float *a, const float *b, float slope) {
    norm_ctx k = {x, residual, out, NULL, a, b, 0, spatial, slope};
    cdnnl_parallel(cdnnl_max_threads(), units, affine_range, &k);
}

// ---- backward of y = leaky_relu(norm(x)), from y alone ----
//
// With n = y > 0 ? y : y / slope (the norm's output) and dn = dy * (y > 0 ? 1 : slope) (the gradient at
// it), xhat = (n - beta) / gamma = n * ia + ib. The norm's backward needs per statistics group the sums
// of dn and dn * xhat, then dx = A * (dn - B1 - xhat * B2). Two reads for the sums, two reads and a
// write for dx; no reconstructed input and no separate activation pass.

typedef int vi __attribute__((vector_size(VW * 4)));

typedef struct {
    const float *y, *dy;
    float *dx;
    double *sums;
    const float *ia, *ib, *A, *B1, *B2;
    int64_t spatial;
    float slope;
} nab_ctx;

/// 1 where v > 0, else 0.
static inline vf positive(vf v) { return (vf)((vi)(v > (vf){0}) & (vi)SPLAT(1.0f)); }

static void nab_sums_range(void *arg, int64_t begin, int64_t end) {
    const nab_ctx *k = arg;
    const vf slope = SPLAT(k->slope), islope = SPLAT(1.0f / k->slope), one = SPLAT(1.0f);
    for (int64_t u = begin; u < end; u++) {
        const float *y = k->y + u * k->spatial * VW, *dy = k->dy + u * k->spatial * VW;
        const vf ia = LD(k->ia + u * VW), ib = LD(k->ib + u * VW);
        double s1[VW] = {0}, s2[VW] = {0};
        for (int64_t s0 = 0; s0 < k->spatial; s0 += 512) {
            const int64_t e = s0 + 512 < k->spatial ? s0 + 512 : k->spatial;
            vf p1[2] = {{0}}, p2[2] = {{0}};
            for (int64_t s = s0; s < e; s++) {
                const vf yv = LD(y + s * VW), p = positive(yv);
                const vf dn = LD(dy + s * VW) * (slope + (one - slope) * p);
                const vf xh = yv * (islope + (one - islope) * p) * ia + ib;
                p1[s & 1] += dn;
                p2[s & 1] += dn * xh;
            }
            const vf t1 = p1[0] + p1[1], t2 = p2[0] + p2[1];
            for (int l = 0; l < VW; l++) { s1[l] += t1[l]; s2[l] += t2[l]; }
        }
        double *o = k->sums + u * 2 * VW;
        for (int l = 0; l < VW; l++) { o[l] = s1[l]; o[VW + l] = s2[l]; }
    }
}

static void nab_data_range(void *arg, int64_t begin, int64_t end) {
    const nab_ctx *k = arg;
    const vf slope = SPLAT(k->slope), islope = SPLAT(1.0f / k->slope), one = SPLAT(1.0f);
    for (int64_t u = begin; u < end; u++) {
        const int64_t base = u * k->spatial * VW;
        const float *y = k->y + base, *dy = k->dy + base;
        float *dx = k->dx + base;
        const vf ia = LD(k->ia + u * VW), ib = LD(k->ib + u * VW);
        const vf A = LD(k->A + u * VW), B1 = LD(k->B1 + u * VW), B2 = LD(k->B2 + u * VW);
        for (int64_t s = 0; s < k->spatial * VW; s += VW) {
            const vf yv = LD(y + s), p = positive(yv);
            const vf dn = LD(dy + s) * (slope + (one - slope) * p);
            const vf xh = yv * (islope + (one - islope) * p) * ia + ib;
            ST(dx + s, A * (dn - B1 - xh * B2));
        }
    }
}

void SFX(cdnnl_norm_act_backward_sums)(const float *y, const float *dy, int64_t units, int64_t spatial, float slope,
                                       const float *ia, const float *ib, double *sums) {
    nab_ctx k = {y, dy, NULL, sums, ia, ib, NULL, NULL, NULL, spatial, slope};
    cdnnl_parallel(cdnnl_max_threads(), units, nab_sums_range, &k);
}

void SFX(cdnnl_norm_act_backward_data)(const float *y, const float *dy, float *dx, int64_t units, int64_t spatial, float slope,
                                       const float *ia, const float *ib, const float *A, const float *B1, const float *B2) {
    nab_ctx k = {y, dy, dx, NULL, ia, ib, A, B1, B2, spatial, slope};
    cdnnl_parallel(cdnnl_max_threads(), units, nab_data_range, &k);
}
