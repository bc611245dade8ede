// A narrow C API over oneDNN (2.x C API). Nothing above this target includes oneDNN headers,
// so a move to oneDNN 3.x (changed primitive-descriptor API) touches only cdnnl.c.
//
// Conventions
// - Activations are (N, C, [D,] H, W) float32 in one of two layouts:
//     CDNNL_LAYOUT_PLAIN     ncdhw / nchw, dense;
//     CDNNL_LAYOUT_BLOCKED16 nCdhw16c / nChw16c: channels grouped in blocks of 16, the channel
//                            count padded up to a multiple of 16; padding must hold zeros.
//     CDNNL_LAYOUT_BLOCKED8  nCdhw8c / nChw8c: the same with blocks of 8 (AVX2 kernels' choice).
// - Weights are always given in PyTorch's plain layout: convolution (O, I, k...),
//   transposed convolution (I, O, k...). The shim reorders them to what the kernel wants.
// - Every function returns 0 on success, or a non-zero status; cdnnl_last_error() then describes it.
// - Backward functions overwrite activation gradients and ACCUMULATE (+=) into parameter gradients.
#ifndef CDNNL_H
#define CDNNL_H

#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

enum { CDNNL_LAYOUT_PLAIN = 0, CDNNL_LAYOUT_BLOCKED16 = 1, CDNNL_LAYOUT_BLOCKED8 = 2 };

/// Message of the last failure on this thread ("" if none).
const char *cdnnl_last_error(void);
/// Creates the CPU engine and stream once; safe to call repeatedly.
int cdnnl_init(void);
/// Sets the OpenMP thread count used by oneDNN (n >= 1). Returns the count in effect.
int cdnnl_set_threads(int n);
int cdnnl_max_threads(void);
/// Calls fn(ctx, begin, end) over contiguous ranges covering [0, count), one range per compute thread, on
/// oneDNN's OpenMP pool (so it does not compete with that pool's spinning workers); returns when all are done.
void cdnnl_parallel_for(int64_t count, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);
/// oneDNN version as "major.minor.patch" and the ISA it dispatches to.
const char *cdnnl_version(void);
int cdnnl_isa(void);
/// Channel block of the fastest activation layout on this CPU: 16 (AVX-512) or 8 (AVX2 and below).
int cdnnl_preferred_block(void);
/// What this CPU has, from the one place that asks it: CDNNL_CPU_* bits.
enum { CDNNL_CPU_AVX2 = 1, CDNNL_CPU_AVX512 = 2, CDNNL_CPU_AVX512_BF16 = 4 };
int cdnnl_cpu_features(void);
/// 1 when SwiftUNet's own kernels (Winograd, backward weights, upsampling) run on activations in
/// `layout` on this CPU: blocked8 with AVX2, blocked16 with AVX-512 (F, BW, DQ, VL).
int cdnnl_own_kernels_available(int layout);
/// Bytes above which the own kernels write an output with non-temporal stores (around the caches).
size_t cdnnl_stream_threshold(void);
void cdnnl_set_stream_threshold(size_t bytes);

/// Number of floats a tensor of this shape occupies in the layout (channel padding included).
int64_t cdnnl_tensor_size(int spatial_rank, int64_t n, int64_t c, const int64_t *spatial, int layout);

// ---- Reorder between activation layouts ----
typedef struct cdnnl_reorder cdnnl_reorder;
int cdnnl_reorder_create(cdnnl_reorder **out, int spatial_rank, int64_t n, int64_t c,
                         const int64_t *spatial, int from_layout, int to_layout);
int cdnnl_reorder_execute(cdnnl_reorder *r, const float *src, float *dst);
void cdnnl_reorder_destroy(cdnnl_reorder *r);

// ---- Convolution and transposed convolution ----
typedef struct {
    int spatial_rank;          // 2 or 3
    int64_t batch;
    int64_t in_channels, out_channels;
    int64_t in_size[3];        // spatial sizes of the input, first spatial_rank entries used
    int64_t out_size[3];
    int64_t kernel[3], stride[3], pad_lo[3], pad_hi[3];
    int has_bias;
    int transposed;            // 1: transposed convolution (deconvolution), padding must be 0
    int layout;                // layout of input and output activations
    int algorithm;             // CDNNL_ALGO_*: forward and backward-data algorithm
    int precision;             // CDNNL_PRECISION_*: what the kernels multiply in
} cdnnl_conv_desc;

/// FP32: everything in float32. BF16: activations and weights are rounded to bfloat16 as the kernel
/// reads them (oneDNN's bf16 convolutions, AVX512_BF16 dot products, float32 accumulation); outputs,
/// input gradients and weight gradients stay float32, so callers' tensors are float32 either way.
/// Creating a BF16 convolution fails on a CPU without AVX512_BF16.
enum { CDNNL_PRECISION_FP32 = 0, CDNNL_PRECISION_BF16 = 1 };

/// AUTO: SwiftUNet's Winograd kernel where it is measured faster (3x3 stride-1 fp32 layers with
/// enough tiles on blocked8 with AVX2 or blocked16 with AVX-512), oneDNN otherwise. DIRECT: never Winograd. WINOGRAD: always
/// (creating the convolution fails when the geometry or CPU does not allow it).
enum { CDNNL_ALGO_AUTO = 0, CDNNL_ALGO_DIRECT = 1, CDNNL_ALGO_WINOGRAD = 2 };

typedef struct cdnnl_conv cdnnl_conv;
int cdnnl_conv_create(cdnnl_conv **out, const cdnnl_conv_desc *desc);
void cdnnl_conv_destroy(cdnnl_conv *c);
int cdnnl_conv_forward(cdnnl_conv *c, const float *src, const float *weight, const float *bias, float *dst);
int cdnnl_conv_backward_data(cdnnl_conv *c, const float *diff_dst, const float *weight, float *diff_src);
int cdnnl_conv_backward_weights(cdnnl_conv *c, const float *src, const float *diff_dst,
                                float *diff_weight, float *diff_bias);
/// Name of the kernel used for a direction (0 forward, 1 backward data, 2 backward weights);
/// "" until that direction has run once.
const char *cdnnl_conv_impl(cdnnl_conv *c, int direction);

// ---- Batch normalization (also used per sample, N = 1, for instance normalization) ----
typedef struct cdnnl_bnorm cdnnl_bnorm;
int cdnnl_bnorm_create(cdnnl_bnorm **out, int spatial_rank, int64_t n, int64_t c,
                       const int64_t *spatial, int layout, float epsilon);
void cdnnl_bnorm_destroy(cdnnl_bnorm *b);
/// Training: normalises with batch statistics; writes mean and biased variance (C floats each).
int cdnnl_bnorm_forward_training(cdnnl_bnorm *b, const float *src, const float *scale,
                                 const float *shift, float *dst, float *mean, float *variance);
/// Inference: normalises with the given statistics.
int cdnnl_bnorm_forward_inference(cdnnl_bnorm *b, const float *src, const float *scale,
                                  const float *shift, const float *mean, const float *variance,
                                  float *dst);
int cdnnl_bnorm_backward(cdnnl_bnorm *b, const float *src, const float *diff_dst,
                         const float *scale, const float *mean, const float *variance,
                         float *diff_src, float *diff_scale, float *diff_shift);

// ---- Leaky ReLU over `count` floats (layout-agnostic; zero padding stays zero) ----
typedef struct cdnnl_eltwise cdnnl_eltwise;
int cdnnl_leaky_relu_create(cdnnl_eltwise **out, int64_t count, float slope);
void cdnnl_eltwise_destroy(cdnnl_eltwise *e);
int cdnnl_eltwise_forward(cdnnl_eltwise *e, const float *src, float *dst);
/// diff_src = diff_dst * (src > 0 ? 1 : slope). `src` may be the forward output (same sign).
int cdnnl_eltwise_backward(cdnnl_eltwise *e, const float *src, const float *diff_dst, float *diff_src);

/// Runs `iters` rounds of 10 independent FMAs (16-wide where the native layout is blocked16, else 8-wide) on
/// each of `threads` threads and returns the FLOPs done (0 without AVX2/FMA). Timing it gives the machine's
/// arithmetic peak.
int64_t cdnnl_fma_peak_flops(int threads, int64_t iters);
/// The same with 10 independent 512-bit bf16 dot products (64 flops each) per round; 0 without AVX512_BF16.
int64_t cdnnl_bf16_dot_peak_flops(int threads, int64_t iters);

// ---- Single-precision GEMM (row-major, as dnnl_sgemm) ----
int cdnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                float *c, int64_t ldc);

/// out = inverse_leaky_relu(y) * a[ch] + b[ch] over an activation tensor (N, C, spatial) in `layout`
/// (padding channels get 0); with per_sample, a and b are indexed [n * C + c]. Recovers a normalization's
/// input from its activated output, so training need not keep both.
void cdnnl_unactivate_affine(const float *y, float *out, int64_t batch, int64_t channels, int64_t spatial,
                             int layout, float slope, const float *a, const float *b, int per_sample);

/// out = leaky_relu(x * a[ch] + b[ch] + residual) (slope 1: no activation; residual may be NULL) over
/// an activation tensor (N, C, spatial) in `layout`; padding channels stay 0. out may be x. The
/// inference form of convolution -> batch norm (running statistics) [-> + residual] -> leaky ReLU.
void cdnnl_affine_activate(const float *x, const float *residual, float *out, int64_t batch, int64_t channels,
                           int64_t spatial, int layout, float slope, const float *a, const float *b);

/// Forward with an epilogue applied to the convolution's output (bias included) before it is stored:
/// dst = leaky_relu(conv * scale[o] + shift[o] + residual), slope 1 for none, residual NULL for none;
/// residual has dst's shape and layout. In SwiftUNet's Winograd kernel this costs no extra pass over
/// memory; elsewhere it is one pass after the convolution.
int cdnnl_conv_forward_epilogue(cdnnl_conv *c, const float *src, const float *weight, const float *bias, float *dst,
                                const float *scale, const float *shift, const float *residual, float slope);
/// Whether the convolution can take its input as two tensors joined along channels, the first with
/// `src_channels` channels (the Winograd route, split on a channel block of the layout): 0 no; 1 forward
/// (cdnnl_conv_forward_epilogue_joined) and backward data (cdnnl_conv_backward_data_joined); 3 also
/// backward weights (cdnnl_conv_backward_weights_joined).
int cdnnl_conv_reads_joined(cdnnl_conv *c, int64_t src_channels);
/// cdnnl_conv_forward_epilogue on the channel concatenation of src (N, src_channels, ...) and src2
/// (N, I - src_channels, ...), both in the convolution's layout, read in place: no joined copy. Fails
/// where cdnnl_conv_reads_joined is 0. scale NULL: the plain forward (no epilogue).
int cdnnl_conv_forward_epilogue_joined(cdnnl_conv *c, const float *src, const float *src2, int64_t src_channels,
                                       const float *weight, const float *bias, float *dst, const float *scale,
                                       const float *shift, const float *residual, float slope);
/// cdnnl_conv_backward_data writing the input gradient in two parts: its first `src_channels` channels to
/// diff_src, the rest to diff_src2.
int cdnnl_conv_backward_data_joined(cdnnl_conv *c, const float *diff_dst, const float *weight, float *diff_src,
                                    float *diff_src2, int64_t src_channels);
/// cdnnl_conv_backward_weights (no bias) on an input in two parts as in cdnnl_conv_forward_epilogue_joined.
int cdnnl_conv_backward_weights_joined(cdnnl_conv *c, const float *src, const float *src2, int64_t src_channels,
                                       const float *diff_dst, float *diff_weight);

/// key != 0: the caller promises the weights passed with this key do not change, so forward may keep
/// what it derives from them (SwiftUNet's Winograd kernel keeps the transformed kernel: 4x the
/// weights in 2D, 2.4x in 3D) and reuse it while the key and the weight pointer stay the same.
/// key 0 (the default): nothing is kept; what was kept is freed.
void cdnnl_conv_keep_weights(cdnnl_conv *c, uint64_t key);

/// Statistics for normalization of a blocked activation tensor (N, C, spatial) in `layout` (blocked8 with
/// AVX2, blocked16 with AVX-512: cdnnl_own_kernels_available). Per unit u = n * C/B + channel block and lane l
/// of the block B: stats[(3u + 0)B + l] = K (the unit's first value), [(3u + 1)B + l] = sum of (x - K),
/// [(3u + 2)B + l] = sum of (x - K)^2 over the positions. -1 when the layout has no such kernel.
int cdnnl_norm_stats(const float *x, int64_t batch, int64_t channels, int64_t spatial, int layout, double *stats);
/// out = leaky_relu(x * a + b (+ residual)) over the same tensors, a and b per unit and lane: a[u * B + l]
/// (padding lanes: give 0 and they stay 0). out may be x. -1 when the layout has no such kernel.
int cdnnl_norm_affine_activate(const float *x, const float *residual, float *out, int64_t batch, int64_t channels,
                               int64_t spatial, int layout, const float *a, const float *b, float slope);

/// Backward of y = leaky_relu(norm(x)) (slope > 0) from y alone, on the same tensors and units as above.
/// With xhat = n * ia + ib (n: y through the inverse leaky ReLU; ia = 1 / gamma, ib = -beta / gamma) and
/// dn = dy * (y > 0 ? 1 : slope): sums[(2u + 0)B + l] = sum of dn, [(2u + 1)B + l] = sum of dn * xhat.
int cdnnl_norm_act_backward_sums(const float *y, const float *dy, int64_t batch, int64_t channels, int64_t spatial,
                                 int layout, float slope, const float *ia, const float *ib, double *sums);
/// dx = A * (dn - B1 - xhat * B2), all per unit and lane (padding lanes: give 0). dx may be dy.
int cdnnl_norm_act_backward_data(const float *y, const float *dy, float *dx, int64_t batch, int64_t channels,
                                 int64_t spatial, int layout, float slope, const float *ia, const float *ib,
                                 const float *A, const float *B1, const float *B2);

/// Per-channel sums over samples and positions of an activation tensor (N, C, spatial) in `layout`, added into
/// sum_a[c] (sum of a) and, when b is not NULL, sum_ab[c] (sum of a * b; b has a's shape and layout).
/// Batch statistics that several processes add up (synchronised batch normalization).
void cdnnl_channel_sums(const float *a, const float *b, int64_t batch, int64_t channels, int64_t spatial, int layout,
                        double *sum_a, double *sum_ab);

/// The recipe's losses on logits z (N, C, S) in plain layout (S voxels per sample) and labels t (N * S bytes,
/// each < C), through a softmax over the C channels per voxel. The N * S voxels are cut into units of `unit`
/// consecutive ones, each summed in a fixed order, so the sums do not depend on the thread count. Per unit u:
/// ce[u] (ce not NULL) = sum of -log softmax(z)[t]; dice[3Cu + k] (dice not NULL) = sum of p_k where t == k,
/// dice[3Cu + C + k] = sum of p_k, dice[3Cu + 2C + k] = count of t == k. grad (N, C, S; not NULL) +=
/// ce_scale * (p - onehot(t)). 1 <= C <= 255.
void cdnnl_softmax_losses(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit, double *ce,
                          double *dice, float *grad, float ce_scale);
/// The soft Dice loss's gradient through the softmax, on the same tensors: grad += scale * p_k (dp_k - sum_j p_j dp_j)
/// per voxel, with dp_0 = 0 and dp_k = (t == k ? a[k] : 0) + b[k] for k >= 1 (a, b: C floats).
void cdnnl_dice_gradient(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit, const float *a,
                         const float *b, float scale, float *grad);

/// Per sample n of `batch`: the `first` floats at a + n * first, then the `second` floats at b + n * second,
/// into out + n * (first + second) (a channel concatenation, or with `split` the reverse: out is read and a,
/// b written). Parallel on the pool: one copy thread is far from the memory's bandwidth.
void cdnnl_join_samples(float *a, int64_t first, float *b, int64_t second, float *out, int64_t batch, int split);

/// out = a[ch] * x + b[ch] * y + d[ch] over activation tensors (N, C, spatial) in `layout`; out may be x or y;
/// padding channels get 0.
void cdnnl_channel_combine(const float *x, const float *y, float *out, int64_t batch, int64_t channels, int64_t spatial,
                           int layout, const float *a, const float *b, const float *d);

#ifdef __cplusplus
}
#endif
#endif
