// Pointwise helpers over activation tensors in any of the shim's layouts, parallel on the OpenMP pool.
#include "CDNNL.h"
#include "kernels.h"

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
    int64_t block = layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : (layout == CDNNL_LAYOUT_BLOCKED8 ? 8 : 1);
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
    int64_t block = layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : (layout == CDNNL_LAYOUT_BLOCKED8 ? 8 : 1);
    act_ctx k = {x, residual, out, channels, (channels + block - 1) / block * block, spatial, block, slope, a, b};
    cdnnl_parallel(cdnnl_max_threads(), batch * (k.padded / block), act_range, &k);
}
