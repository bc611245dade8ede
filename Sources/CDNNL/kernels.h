#ifndef CDNNL_KERNELS_H
#define CDNNL_KERNELS_H
#include "CDNNL.h"

// SwiftUNet's own CPU kernels, for the cases where oneDNN 2.6 has no fast one. Each is written once
// over its vector width (simd.h) and built twice: _avx2 works on blocked8 activations, _avx512 on
// blocked16. The unsuffixed entry points (kernels.c) pick the build from the descriptor's layout;
// callers first ask cdnnl_own_kernels_available(layout).

/// CPU features, asked in one place (kernels.c). 1 when present.
int cdnnl_avx2_available(void);          // AVX2 and FMA
int cdnnl_avx512_available(void);        // AVX-512 F, BW, DQ, VL (and AVX2/FMA)
int cdnnl_avx512_bf16_available(void);   // the above and AVX512_BF16 (bf16 dot products)
/// "avx2" or "avx512": the build that serves `layout`, for kernel names.
const char *cdnnl_own_kernels_isa(int layout);

/// Runs fn(ctx, begin, end) over [0, count) split in `threads` contiguous parts, on pthreads
/// (the calling thread takes the first part).
void cdnnl_parallel(int threads, int64_t count, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);
/// A per-thread scratch buffer of at least `floats` floats, 64-byte aligned, kept for the next call
/// on this thread (contents undefined). NULL when memory runs out.
float *cdnnl_scratch(size_t floats);

/// Adds d(loss)/d(weights) of a 3D (non-transposed) convolution into plain `dw` (O, I, k...)
/// and, when db is not NULL, d(loss)/d(bias) into db. x and dy are blocked as d->layout.
/// Returns 0, or -1 when memory runs out.
int cdnnl_bwd_weights_3d(const cdnnl_conv_desc *d, int threads, const float *x, const float *dy,
                         float *dw, float *db);
/// Forward of a transposed convolution with kernel == stride on blocked activations (O a multiple
/// of the block B): y = x * w2 + bias written into the upsampled grid. w2: panels [J/2][I][2B] of the
/// column groups j = (o/B)*K + k (group j at offset (j%2)*B), zero where a panel has one group.
int cdnnl_upsample(const cdnnl_conv_desc *d, int threads, const float *x, const float *w2,
                   const float *bias, float *y);
/// 1 when a convolution can run through cdnnl_winograd: 3x3(x3), stride 1, padding 1, not
/// transposed, blocked activations with channel counts multiples of the block, own kernels available.
int cdnnl_winograd_possible(const cdnnl_conv_desc *d);
/// 1 when it is possible and worth it (tiles enough, little overhang; neither CDNNL_ONEDNN_ONLY
/// nor CDNNL_NO_WINOGRAD set): the automatic choice.
int cdnnl_winograd_preferred(const cdnnl_conv_desc *d);
/// The output tile per axis of forward and backward data: in 2D 6 (F(6x6,3x3)) where its tiles save
/// products and its transformed kernel is small, else 4 (F(4x4,3x3)); in 3D 4 (F(4x4x4,3x3x3)) or 2
/// (F(2x2x2,3x3x3)): 4 up to 512 x 256 channels with 64 tiles or more and little overhang.
/// CDNNL_WINOGRAD_2D_TILE=4|6 and CDNNL_WINOGRAD_3D_TILE=2|4 force one, for measuring.
int cdnnl_winograd_tile(const cdnnl_conv_desc *d);
/// The tile of backward weights: 3D takes the forward's; 2D always F(4x4) (F(6x6)'s larger position
/// gradients leave the per-thread path where they would help: 128->64 at 96x80 ran 288 against 480
/// effective GFLOP/s, elsewhere within noise).
int cdnnl_winograd_weights_tile(const cdnnl_conv_desc *d);
/// A transformed kernel kept between calls whose weights do not change (inference): `u` is allocated
/// (aligned, `floats` long; release with free) and filled by the first call, reused while `ready`.
typedef struct { float *u; size_t floats; int ready; } cdnnl_winograd_kept;
/// Winograd F(4x4,3x3) (2D) / F(2x2x2,3x3x3) or F(4x4x4,3x3x3) (3D) convolution on blocked activations.
/// backward 0: dst = conv(src, weight) + bias (src has I channels, dst O);
/// backward 1: dst = d(loss)/d(input) from src = d(loss)/d(output) (bias ignored).
/// weight plain (O, I, 3, 3[, 3]). Overwrites dst. Returns 0, or -1 when memory runs out.
/// Forward only, when scale is not NULL: dst = leaky_relu(y * scale[o] + shift[o] + residual) with
/// the given slope (residual NULL for none), applied before the store. kept: NULL, or where the
/// transformed kernel is kept between calls (forward only).
/// A convolution input split along channels, read or written in place (no joined copy): forward, src2
/// not NULL: the input is src's `split` channels (a multiple of the vector width, fewer than I) then
/// src2's; backward data, dst2 not NULL: dX's first `split` channels go to dst, the rest to dst2.
/// Returns -2 for a split not allowed.
int cdnnl_winograd(const cdnnl_conv_desc *d, int threads, int backward, const float *src,
                   const float *src2, float *dst2, int64_t split, const float *weight, const float *bias, float *dst,
                   const float *scale, const float *shift, const float *residual, float slope,
                   cdnnl_winograd_kept *kept);
/// 1 when backward weights should run through cdnnl_winograd_bwd_weights (no bias, preferred
/// for forward, channels enough).
int cdnnl_winograd_bwd_weights_preferred(const cdnnl_conv_desc *d);
/// Adds d(loss)/d(weight) of a Winograd-eligible convolution without bias into plain dw (O, I, 3, 3[, 3]),
/// the same transforms run backwards: dW += G^T (sum over tiles of V^T (A dY A^T)) G.
/// src2 not NULL: the input is split along channels as in cdnnl_winograd.
int cdnnl_winograd_bwd_weights(const cdnnl_conv_desc *d, int threads, const float *src, const float *src2,
                               int64_t split, const float *diff_dst, float *diff_weight);

/// 1 when an own kernel should write an output of `bytes` at `dst` with non-temporal stores: larger than
/// cdnnl_stream_threshold() and `dst` aligned to whole vectors (`align` bytes).
int cdnnl_stream_output(const void *dst, size_t bytes, size_t align);

// The per-width builds behind the entry points above (same contracts).
#define CDNNL_PER_WIDTH(sfx)                                                                              \
    int cdnnl_bwd_weights_3d_##sfx(const cdnnl_conv_desc *d, int threads, const float *x, const float *dy, \
                                   float *dw, float *db);                                                \
    int cdnnl_upsample_##sfx(const cdnnl_conv_desc *d, int threads, const float *x, const float *w2,       \
                             const float *bias, float *y);                                               \
    int cdnnl_winograd_##sfx(const cdnnl_conv_desc *d, int threads, int backward, const float *src,        \
                             const float *src2, float *dst2, int64_t split, const float *weight, const float *bias, float *dst, const float *scale,     \
                             const float *shift, const float *residual, float slope,                     \
                             cdnnl_winograd_kept *kept);                                                 \
    int cdnnl_winograd_bwd_weights_##sfx(const cdnnl_conv_desc *d, int threads, const float *src,          \
                                         const float *src2, int64_t split, const float *diff_dst,        \
                                         float *diff_weight);                                            \
    void cdnnl_norm_stats_##sfx(const float *x, int64_t units, int64_t spatial, double *stats);            \
    void cdnnl_norm_affine_activate_##sfx(const float *x, const float *residual, float *out, int64_t units, \
                                          int64_t spatial, const float *a, const float *b, float slope);        \
    void cdnnl_norm_act_backward_sums_##sfx(const float *y, const float *dy, int64_t units, int64_t spatial, \
                                            float slope, const float *ia, const float *ib, double *sums);  \
    void cdnnl_norm_act_backward_data_##sfx(const float *y, const float *dy, float *dx, int64_t units,      \
                                            int64_t spatial, float slope, const float *ia, const float *ib, \
                                            const float *A, const float *B1, const float *B2);
CDNNL_PER_WIDTH(avx2)
CDNNL_PER_WIDTH(avx512)
#undef CDNNL_PER_WIDTH
// The losses come in a baseline build too (any x86-64), so no CPU needs another route for them.
#define CDNNL_LOSS_WIDTH(sfx)                                                                                      \
    void cdnnl_softmax_losses_##sfx(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit, \
                                    double *ce, double *dice, float *grad, float ce_scale);                        \
    void cdnnl_dice_gradient_##sfx(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit,  \
                                   const float *a, const float *b, float scale, float *grad);
CDNNL_LOSS_WIDTH(sse)
CDNNL_LOSS_WIDTH(avx2)
CDNNL_LOSS_WIDTH(avx512)
#undef CDNNL_LOSS_WIDTH
#endif
