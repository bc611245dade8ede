// The one place SwiftUNet asks the CPU what it has, and the entry points that pick a build of the
// own kernels (AVX2 on blocked8, AVX-512 on blocked16) from it. Everything is decided at run time;
// no code path depends on the CPU the binary was built on.
#include "kernels.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdlib.h>

// CDNNL_NO_AVX512=1 makes an AVX-512 CPU look like an AVX2-only one (Zen 3): the own kernels take their
// AVX2 builds on blocked8, bf16 is refused, and oneDNN is capped at AVX2 before it creates anything, so
// the whole suite can run down the AVX2 paths on any CPU (scripts/test.sh does).
static int avx512_hidden(void) { return getenv("CDNNL_NO_AVX512") != NULL; }
// CDNNL_NO_AVX2=1 goes further, to a baseline x86-64 (SSE4.1): no own kernel but the losses' baseline build,
// oneDNN on its SSE4.1 kernels.
static int avx2_hidden(void) { return getenv("CDNNL_NO_AVX2") != NULL; }

__attribute__((constructor)) static void cap_onednn_isa(void) {
    if (avx2_hidden()) dnnl_set_max_cpu_isa(dnnl_cpu_isa_sse41);
    else if (avx512_hidden()) dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx2);
}

// An output larger than about a third of L3 is evicted before its reader comes, so storing it around
// the caches saves reading every line in first. Measured on the 2D UNet's Winograd layers at batch 16
// (Zen 4, outputs of 16-63 MB): forward 6-15% faster; at 4-8 MB the difference is within the drift.
static size_t stream_bytes = (size_t)12 << 20;
size_t cdnnl_stream_threshold(void) { return __atomic_load_n(&stream_bytes, __ATOMIC_RELAXED); }
void cdnnl_set_stream_threshold(size_t bytes) { __atomic_store_n(&stream_bytes, bytes, __ATOMIC_RELAXED); }
int cdnnl_stream_output(const void *dst, size_t bytes, size_t align) {
    return bytes > cdnnl_stream_threshold() && (uintptr_t)dst % align == 0;
}

int cdnnl_avx2_available(void) {
    __builtin_cpu_init();
    return !avx2_hidden() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int cdnnl_avx512_available(void) {
    __builtin_cpu_init();
    return !avx512_hidden() && cdnnl_avx2_available() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

int cdnnl_avx512_bf16_available(void) {
    __builtin_cpu_init();
    // CDNNL_NO_BF16=1 hides bf16 on a CPU that has it: what a user of an older CPU sees (cli-test).
    return cdnnl_avx512_available() && __builtin_cpu_supports("avx512bf16") && !getenv("CDNNL_NO_BF16");
}

int cdnnl_cpu_features(void) {
    return (cdnnl_avx2_available() ? CDNNL_CPU_AVX2 : 0) | (cdnnl_avx512_available() ? CDNNL_CPU_AVX512 : 0) |
           (cdnnl_avx512_bf16_available() ? CDNNL_CPU_AVX512_BF16 : 0);
}

int cdnnl_own_kernels_available(int layout) {
    if (getenv("CDNNL_ONEDNN_ONLY")) return 0;
    if (layout == CDNNL_LAYOUT_BLOCKED8) return cdnnl_avx2_available();
    if (layout == CDNNL_LAYOUT_BLOCKED16) return cdnnl_avx512_available();
    return 0;
}

const char *cdnnl_own_kernels_isa(int layout) { return layout == CDNNL_LAYOUT_BLOCKED16 ? "avx512" : "avx2"; }

static int block(int layout) { return layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : 8; }

int cdnnl_bwd_weights_3d(const cdnnl_conv_desc *d, int threads, const float *x, const float *dy, float *dw, float *db) {
    return d->layout == CDNNL_LAYOUT_BLOCKED16 ? cdnnl_bwd_weights_3d_avx512(d, threads, x, dy, dw, db)
                                               : cdnnl_bwd_weights_3d_avx2(d, threads, x, dy, dw, db);
}

int cdnnl_upsample(const cdnnl_conv_desc *d, int threads, const float *x, const float *w2, const float *bias, float *y) {
    return d->layout == CDNNL_LAYOUT_BLOCKED16 ? cdnnl_upsample_avx512(d, threads, x, w2, bias, y)
                                               : cdnnl_upsample_avx2(d, threads, x, w2, bias, y);
}

int cdnnl_winograd(const cdnnl_conv_desc *d, int threads, int backward, const float *src, const float *src2,
                   float *dst2, int64_t split, const float *weight, const float *bias, float *dst, const float *scale,
                   const float *shift, const float *residual, float slope, cdnnl_winograd_kept *kept) {
    return d->layout == CDNNL_LAYOUT_BLOCKED16
               ? cdnnl_winograd_avx512(d, threads, backward, src, src2, dst2, split, weight, bias, dst, scale, shift,
                                       residual, slope, kept)
               : cdnnl_winograd_avx2(d, threads, backward, src, src2, dst2, split, weight, bias, dst, scale, shift,
                                     residual, slope, kept);
}

int cdnnl_winograd_bwd_weights(const cdnnl_conv_desc *d, int threads, const float *src, const float *src2, int64_t split,
                               const float *diff_dst, float *diff_weight) {
    return d->layout == CDNNL_LAYOUT_BLOCKED16
               ? cdnnl_winograd_bwd_weights_avx512(d, threads, src, src2, split, diff_dst, diff_weight)
               : cdnnl_winograd_bwd_weights_avx2(d, threads, src, src2, split, diff_dst, diff_weight);
}

/// Units of the normalization kernels: (sample, channel block) pairs.
static int64_t norm_units(int64_t batch, int64_t channels, int layout) {
    return batch * ((channels + block(layout) - 1) / block(layout));
}

int cdnnl_norm_stats(const float *x, int64_t batch, int64_t channels, int64_t spatial, int layout, double *stats) {
    if (!cdnnl_own_kernels_available(layout) || spatial < 1) return -1;
    const int64_t units = norm_units(batch, channels, layout);
    if (layout == CDNNL_LAYOUT_BLOCKED16) cdnnl_norm_stats_avx512(x, units, spatial, stats);
    else cdnnl_norm_stats_avx2(x, units, spatial, stats);
    return 0;
}

int cdnnl_norm_affine_activate(const float *x, const float *residual, float *out, int64_t batch, int64_t channels,
                               int64_t spatial, int layout, const float *a, const float *b, float slope) {
    if (!cdnnl_own_kernels_available(layout)) return -1;
    const int64_t units = norm_units(batch, channels, layout);
    if (layout == CDNNL_LAYOUT_BLOCKED16) cdnnl_norm_affine_activate_avx512(x, residual, out, units, spatial, a, b, slope);
    else cdnnl_norm_affine_activate_avx2(x, residual, out, units, spatial, a, b, slope);
    return 0;
}

int cdnnl_norm_act_backward_sums(const float *y, const float *dy, int64_t batch, int64_t channels, int64_t spatial,
                                 int layout, float slope, const float *ia, const float *ib, double *sums) {
    if (!cdnnl_own_kernels_available(layout) || !(slope > 0)) return -1;
    const int64_t units = norm_units(batch, channels, layout);
    if (layout == CDNNL_LAYOUT_BLOCKED16) cdnnl_norm_act_backward_sums_avx512(y, dy, units, spatial, slope, ia, ib, sums);
    else cdnnl_norm_act_backward_sums_avx2(y, dy, units, spatial, slope, ia, ib, sums);
    return 0;
}

int cdnnl_norm_act_backward_data(const float *y, const float *dy, float *dx, int64_t batch, int64_t channels,
                                 int64_t spatial, int layout, float slope, const float *ia, const float *ib,
                                 const float *A, const float *B1, const float *B2) {
    if (!cdnnl_own_kernels_available(layout) || !(slope > 0)) return -1;
    const int64_t units = norm_units(batch, channels, layout);
    if (layout == CDNNL_LAYOUT_BLOCKED16) cdnnl_norm_act_backward_data_avx512(y, dy, dx, units, spatial, slope, ia, ib, A, B1, B2);
    else cdnnl_norm_act_backward_data_avx2(y, dy, dx, units, spatial, slope, ia, ib, A, B1, B2);
    return 0;
}

void cdnnl_softmax_losses(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit, double *ce,
                          double *dice, float *grad, float ce_scale) {
    if (cdnnl_avx512_available()) cdnnl_softmax_losses_avx512(z, t, n, c, s, unit, ce, dice, grad, ce_scale);
    else if (cdnnl_avx2_available()) cdnnl_softmax_losses_avx2(z, t, n, c, s, unit, ce, dice, grad, ce_scale);
    else cdnnl_softmax_losses_sse(z, t, n, c, s, unit, ce, dice, grad, ce_scale);
}

void cdnnl_dice_gradient(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit, const float *a,
                         const float *b, float scale, float *grad) {
    if (cdnnl_avx512_available()) cdnnl_dice_gradient_avx512(z, t, n, c, s, unit, a, b, scale, grad);
    else if (cdnnl_avx2_available()) cdnnl_dice_gradient_avx2(z, t, n, c, s, unit, a, b, scale, grad);
    else cdnnl_dice_gradient_sse(z, t, n, c, s, unit, a, b, scale, grad);
}

int cdnnl_winograd_possible(const cdnnl_conv_desc *d) {
    if (d->transposed || d->in_channels % block(d->layout) || d->out_channels % block(d->layout)) return 0;
    for (int i = 0; i < d->spatial_rank; i++)
        if (d->kernel[i] != 3 || d->stride[i] != 1 || d->pad_lo[i] != 1 || d->pad_hi[i] != 1) return 0;
    return cdnnl_own_kernels_available(d->layout);
}

/// 1 when tiles of m outputs per axis number at least `least` and hang little over the edges (what they
/// compute is at most 1.5x the output).
static int tiles_pay(const cdnnl_conv_desc *d, int m, int64_t least) {
    int64_t tiles = d->batch, covered = 1, real = 1;
    for (int i = 0; i < d->spatial_rank; i++) {
        const int64_t nt = (d->in_size[i] + m - 1) / m;
        tiles *= nt; covered *= nt * m; real *= d->in_size[i];
    }
    return tiles >= least && 2 * covered <= 3 * real;
}

int cdnnl_winograd_tile(const cdnnl_conv_desc *d) {
    if (d->spatial_rank != 3) {
        const char *forced = getenv("CDNNL_WINOGRAD_2D_TILE");  // 4 or 6: for measuring one against the other
        if (forced && (atoi(forced) == 4 || atoi(forced) == 6)) return atoi(forced);
        // F(6x6) multiplies 1.27x less than F(4x4) (64 products per 36 outputs against 36 per 16) with costlier
        // transforms and a 1.8x larger transformed kernel. Taken where its tiles save 15% of the products or
        // more after the overhang and its kernel (64 x in x out floats) stays in the per-thread path (12 MB):
        // the UNet's four upper levels. Measured on Zen 4 (AVX-512), alternating with F(4x4), effective
        // GFLOP/s in `unet bench kernels`: forward 32->32 at 192x160 535 / 508-519, 64->64 at 96x80 650 /
        // 565-617, 256->128 at 48x40 702 / 644-654; where its kernel passed 12 MB, slower: 256->256 at 24x20
        // 482 / 654-662. Its error against float64 sums is about twice F(4x4)'s: 1.4e-6 / 0.8e-6 rms of the
        // output (32 channels), 2.4e-6 / 1.2e-6 (128).
        int64_t t4 = 36 * d->batch, t6 = 64 * d->batch;
        for (int i = 0; i < 2; i++) { t4 *= (d->in_size[i] + 3) / 4; t6 *= (d->in_size[i] + 5) / 6; }
        const int small_kernel = (int64_t)64 * d->in_channels * d->out_channels * 4 <= ((int64_t)12 << 20);
        return small_kernel && 100 * t6 <= 85 * t4 ? 6 : 4;
    }
    const char *forced = getenv("CDNNL_WINOGRAD_3D_TILE");  // 2 or 4: for measuring one against the other
    if (forced && (atoi(forced) == 2 || atoi(forced) == 4)) return atoi(forced);
    // F(4x4x4) multiplies 2.4x less than F(2x2x2) and moves 2.4x less transformed data, but its kernel is
    // 3.4x larger and its tiles 8x fewer. Measured (Zen 4, AVX-512, `unet bench kernels`, effective GFLOP/s,
    // F(4x4x4) against F(2x2x2), alternating): 32->32 at 128^3 717-775 / 405-433, 64->64 at 64^3 977-1048 /
    // 478-492, 128->128 at 32^3 681-908 / 525-531, 256->256 at 16^3 (64 tiles) 597-621 / 414-418; 320->320
    // at 8^3 (8 tiles) 158-168 / 228. 512->256 at 16^3 (the UNet's decoder), per training step: forward 0.05-0.06
    // / 0.07-0.09 s, backward data 0.05 / 0.08, weights 0.07 / 0.11. Its transformed kernel (216 x in x out floats)
    // is kept to 113 MB (512 x 256).
    return d->in_channels * d->out_channels <= 512 * 256 && tiles_pay(d, 4, 64) ? 4 : 2;
}

int cdnnl_winograd_weights_tile(const cdnnl_conv_desc *d) { return d->spatial_rank == 3 ? cdnnl_winograd_tile(d) : 4; }

int cdnnl_winograd_preferred(const cdnnl_conv_desc *d) {
    if (!cdnnl_winograd_possible(d) || getenv("CDNNL_NO_WINOGRAD")) return 0;
    // Not worth it when tiles hang far over the edges (2D 6x5: 8x8 computed for 30 outputs) or are
    // too few to pay for transforming the kernel (both measured slower than oneDNN). 3D is judged by
    // F(2x2x2)'s tiles; cdnnl_winograd_tile then takes F(4x4x4) where it has tiles enough.
    return tiles_pay(d, d->spatial_rank == 3 ? 2 : 4, 128);
}

int cdnnl_winograd_bwd_weights_preferred(const cdnnl_conv_desc *d) {
    // Measured with AVX2: from 64 channels on both sides in 2D (1.4-2.5x the direct kernels) and 128 in
    // 3D (1.7x); at 32 channels the direct kernels win. With AVX-512 (Zen 4) Winograd wins from 32
    // channels in both: 2D 32->32 and 64->32 at 192x160, batch 16, 0.06 against 0.09 s per step; 3D at
    // 128^3 32->32 0.51 against 0.61 s and 64->32 0.78 against 1.25 s (oneDNN's direct kernel), with a
    // smaller error than oneDNN's against float64 sums (1.1e-5 and 2.2e-5 of the largest entry against
    // 4.5e-5 and 3.1e-5), so the long sums over 128^3 / 8 tiles are not the concern they were thought.
    // F(4x4x4) in 3D (twice F(2x2x2)'s speed): from 32 channels with AVX2 too, where it ran 32->32 at
    // 128^3 at 452-458 effective GFLOP/s against the direct kernel's 98-100 (AVX2 on a Zen 4, CDNNL_NO_AVX512).
    const int f4 = d->spatial_rank == 3 && cdnnl_winograd_tile(d) == 4;
    const int64_t least = d->layout == CDNNL_LAYOUT_BLOCKED16 || f4 ? 32 : (d->spatial_rank == 3 ? 128 : 64);
    return !d->has_bias && cdnnl_winograd_preferred(d) && d->in_channels >= least && d->out_channels >= least;
}

// ---- scratch: one growing buffer per thread (calls on different threads may overlap) ----

typedef struct { float *p; size_t floats; } scratch;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *s) { free(((scratch *)s)->p); free(s); }
static void key_create(void) { pthread_key_create(&g_key, scratch_free); }

float *cdnnl_scratch(size_t floats) {
    pthread_once(&g_once, key_create);
    scratch *s = pthread_getspecific(g_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(g_key, s) != 0) { free(s); return NULL; }
    }
    if (s->floats < floats) {
        free(s->p);
        s->p = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        s->floats = s->p ? floats : 0;
    }
    return s->p;
}
