// Normalization statistics and the normalize + leaky ReLU pass on blocked activations (nCdhw8c /
// nChw8c with AVX2, the 16-channel blocks with AVX-512), the forward of conv -> norm -> leaky ReLU
// in two passes over memory (one read; one read and one write) where oneDNN's normalization and a
// separate activation pass take five.
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
