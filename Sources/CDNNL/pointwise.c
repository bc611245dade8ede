// Pointwise helpers over activation tensors in any of the shim's layouts, parallel on the OpenMP pool.
#include <string.h>
#include "CDNNL.h"
#include "kernels.h"

// Channels interleaved per position in `layout` (1: plain).
static int64_t channel_block(int layout) {
    return layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : (layout == CDNNL_LAYOUT_BLOCKED8 ? 8 : 1);
}

typedef struct {
    const float *y;
    float *out;
    int64_t channels, padded, spatial, block;
    float inverse_slope;
    const float *a, *b;
    int per_sample;
} unact_ctx;

// One unit of work = one (sample, channel block) pair: `block` interleaved channels over `spatial` positions.
static void unact_range(void *p, int64_t begin, int64_t end) {
    const unact_ctx *k = p;
    int64_t blocks = k->padded / k->block;
    for (int64_t u = begin; u < end; u++) {
        int64_t n = u / blocks, cb = u % blocks;
        int64_t base = u * k->spatial * k->block;
        float a[16] = {0}, b[16] = {0};
        for (int64_t l = 0; l < k->block; l++) {
            int64_t c = cb * k->block + l;
            if (c < k->channels) {
                int64_t i = k->per_sample ? n * k->channels + c : c;
                a[l] = k->a[i];
                b[l] = k->b[i];
            }
        }
        const float *y = k->y + base;
        float *o = k->out + base;
        const float is = k->inverse_slope;
        if (k->block == 8) {
            for (int64_t s = 0; s < k->spatial; s++)
                for (int l = 0; l < 8; l++) {
                    float v = y[s * 8 + l];
                    o[s * 8 + l] = (v > 0 ? v : v * is) * a[l] + b[l];
                }
        } else if (k->block == 16) {
            for (int64_t s = 0; s < k->spatial; s++)
                for (int l = 0; l < 16; l++) {
                    float v = y[s * 16 + l];
                    o[s * 16 + l] = (v > 0 ? v : v * is) * a[l] + b[l];
                }
        } else {
            for (int64_t s = 0; s < k->spatial; s++) {
                float v = y[s];
                o[s] = (v > 0 ? v : v * is) * a[0] + b[0];
            }
        }
    }
}

void cdnnl_unactivate_affine(const float *y, float *out, int64_t batch, int64_t channels, int64_t spatial,
                             int layout, float slope, const float *a, const float *b, int per_sample) {
    int64_t block = channel_block(layout);
    unact_ctx k = {y, out, channels, (channels + block - 1) / block * block, spatial, block, 1.0f / slope, a, b, per_sample};
    cdnnl_parallel(cdnnl_max_threads(), batch * (k.padded / block), unact_range, &k);
}

typedef struct {
    const float *x, *r;
    float *out;
    int64_t channels, padded, spatial, block;
    float slope;
    const float *a, *b;
} act_ctx;

static void act_range(void *p, int64_t begin, int64_t end) {
    const act_ctx *k = p;
    const int64_t blocks = k->padded / k->block, B = k->block;
    for (int64_t u = begin; u < end; u++) {
        const int64_t cb = u % blocks, base = u * k->spatial * B;
        float a[16] = {0}, b[16] = {0};
        for (int64_t l = 0; l < B; l++)
            if (cb * B + l < k->channels) { a[l] = k->a[cb * B + l]; b[l] = k->b[cb * B + l]; }
        const float *x = k->x + base, *r = k->r ? k->r + base : NULL;
        float *o = k->out + base;
        const float slope = k->slope;
        for (int64_t s = 0; s < k->spatial * B; s += B)
            for (int64_t l = 0; l < B; l++) {
                float v = x[s + l] * a[l] + b[l] + (r ? r[s + l] : 0.0f);
                o[s + l] = v > 0 ? v : v * slope;
            }
    }
}

void cdnnl_affine_activate(const float *x, const float *residual, float *out, int64_t batch, int64_t channels,
                           int64_t spatial, int layout, float slope, const float *a, const float *b) {
    int64_t block = channel_block(layout);
    act_ctx k = {x, residual, out, channels, (channels + block - 1) / block * block, spatial, block, slope, a, b};
    cdnnl_parallel(cdnnl_max_threads(), batch * (k.padded / block), act_range, &k);
}

typedef struct {
    const float *a, *b;
    int64_t batch, channels, padded, spatial, block;
    double *sum_a, *sum_ab;
} sums_ctx;

// One unit of work = one channel block over every sample, so no two threads add into the same sum.
static void sums_range(void *p, int64_t begin, int64_t end) {
    const sums_ctx *k = p;
    const int64_t blocks = k->padded / k->block, B = k->block;
    for (int64_t cb = begin; cb < end; cb++) {
        double sa[16] = {0}, sab[16] = {0};
        for (int64_t n = 0; n < k->batch; n++) {
            const int64_t base = (n * blocks + cb) * k->spatial * B;
            const float *a = k->a + base, *b = k->b ? k->b + base : NULL;
            // Float partial sums over short runs keep the loop fast; doubles carry them across runs.
            for (int64_t s0 = 0; s0 < k->spatial; s0 += 256) {
                const int64_t s1 = s0 + 256 < k->spatial ? s0 + 256 : k->spatial;
                float pa[16] = {0}, pab[16] = {0};
                for (int64_t s = s0; s < s1; s++)
                    for (int64_t l = 0; l < B; l++) {
                        float v = a[s * B + l];
                        pa[l] += v;
                        if (b) pab[l] += v * b[s * B + l];
                    }
                for (int64_t l = 0; l < B; l++) { sa[l] += pa[l]; sab[l] += pab[l]; }
            }
        }
        for (int64_t l = 0; l < B; l++) {
            const int64_t c = cb * B + l;
            if (c >= k->channels) continue;
            k->sum_a[c] += sa[l];
            if (k->b) k->sum_ab[c] += sab[l];
        }
    }
}

void cdnnl_channel_sums(const float *a, const float *b, int64_t batch, int64_t channels, int64_t spatial, int layout,
                        double *sum_a, double *sum_ab) {
    int64_t block = channel_block(layout);
    sums_ctx k = {a, b, batch, channels, (channels + block - 1) / block * block, spatial, block, sum_a, sum_ab};
    cdnnl_parallel(cdnnl_max_threads(), k.padded / block, sums_range, &k);
}

typedef struct {
    const float *x, *y;
    float *out;
    int64_t channels, padded, spatial, block;
    const float *a, *b, *d;
} combine_ctx;

static void combine_range(void *p, int64_t begin, int64_t end) {
    const combine_ctx *k = p;
    const int64_t blocks = k->padded / k->block, B = k->block;
    for (int64_t u = begin; u < end; u++) {
        const int64_t cb = u % blocks, base = u * k->spatial * B;
        float a[16] = {0}, b[16] = {0}, d[16] = {0};
        for (int64_t l = 0; l < B; l++)
            if (cb * B + l < k->channels) { a[l] = k->a[cb * B + l]; b[l] = k->b[cb * B + l]; d[l] = k->d[cb * B + l]; }
        const float *x = k->x + base, *y = k->y + base;
        float *o = k->out + base;
        for (int64_t s = 0; s < k->spatial * B; s += B)
            for (int64_t l = 0; l < B; l++) o[s + l] = a[l] * x[s + l] + b[l] * y[s + l] + d[l];
    }
}

void cdnnl_channel_combine(const float *x, const float *y, float *out, int64_t batch, int64_t channels, int64_t spatial,
                           int layout, const float *a, const float *b, const float *d) {
    int64_t block = channel_block(layout);
    combine_ctx k = {x, y, out, channels, (channels + block - 1) / block * block, spatial, block, a, b, d};
    cdnnl_parallel(cdnnl_max_threads(), batch * (k.padded / block), combine_range, &k);
}

typedef struct { float *a, *b, *out; int64_t first, second, pieces; int split; } join_ctx;

// Units: each sample's two parts cut into `pieces` pieces each, so two threads share even one sample.
static void join_range(void *p, int64_t begin, int64_t end) {
    const join_ctx *k = p;
    for (int64_t u = begin; u < end; u++) {
        const int64_t n = u / (2 * k->pieces), part = u / k->pieces % 2, piece = u % k->pieces;
        const int64_t count = part ? k->second : k->first;
        float *side = part ? k->b + n * k->second : k->a + n * k->first;
        float *whole = k->out + n * (k->first + k->second) + (part ? k->first : 0);
        const int64_t from = count * piece / k->pieces, to = count * (piece + 1) / k->pieces;
        if (k->split) memcpy(side + from, whole + from, (size_t)(to - from) * sizeof(float));
        else memcpy(whole + from, side + from, (size_t)(to - from) * sizeof(float));
    }
}

void cdnnl_join_samples(float *a, int64_t first, float *b, int64_t second, float *out, int64_t batch, int split) {
    const int threads = cdnnl_max_threads();
    join_ctx k = {a, b, out, first, second, threads, split};
    cdnnl_parallel(threads, batch * 2 * threads, join_range, &k);
}
