// oneDNN 2.x behind the narrow API of CDNNL.h. Each object owns its primitives, the memory
// objects wrapping caller pointers (handles swapped per call) and scratch buffers for layouts
// the kernel prefers over the caller's.
#define _GNU_SOURCE
#include "CDNNL.h"
#include "kernels.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

static _Thread_local char g_error[512];
static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_status_t g_init_status = dnnl_success;

const char *cdnnl_last_error(void) { return g_error; }

static int fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof g_error)
        snprintf(g_error + n, sizeof g_error - (size_t)n, " (oneDNN status %d)", status);
    return status == 0 ? -1 : status;
}

#define CHECK(call, what)                                      \
    do {                                                       \
        dnnl_status_t s_ = (call);                             \
        if (s_ != dnnl_success) return fail((int)s_, "%s", what); \
    } while (0)

static void init_once(void) {
    g_init_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
    if (g_init_status == dnnl_success)
        g_init_status = dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags);
}

int cdnnl_init(void) {
    pthread_once(&g_once, init_once);
    if (g_init_status != dnnl_success) return fail((int)g_init_status, "creating the oneDNN CPU engine");
    return 0;
}

// OpenMP is reached through dlsym: libdnnl already loads the OpenMP runtime, and linking it
// directly would tie the package to one runtime's library name.
int cdnnl_set_threads(int n) {
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set && n > 0) set(n);
    return cdnnl_max_threads();
}

int cdnnl_max_threads(void) {
    int (*get)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_max_threads");
    return get ? get() : 1;
}

const char *cdnnl_version(void) {
    static char buf[32];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

int cdnnl_isa(void) { return (int)dnnl_get_effective_cpu_isa(); }

int cdnnl_preferred_block(void) {
    // oneDNN's f32 direct convolutions use 16-channel blocks from AVX-512 up, 8 below.
    return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 16 : 8;
}

// ---- descriptors ----

static dnnl_format_tag_t act_tag(int spatial_rank, int layout) {
    if (layout == CDNNL_LAYOUT_BLOCKED16) return spatial_rank == 3 ? dnnl_nCdhw16c : dnnl_nChw16c;
    if (layout == CDNNL_LAYOUT_BLOCKED8) return spatial_rank == 3 ? dnnl_nCdhw8c : dnnl_nChw8c;
    return spatial_rank == 3 ? dnnl_ncdhw : dnnl_nchw;
}

static int act_md(dnnl_memory_desc_t *md, int spatial_rank, int64_t n, int64_t c,
                  const int64_t *spatial, int layout) {
    if (spatial_rank != 2 && spatial_rank != 3) return fail(-1, "spatial rank must be 2 or 3, got %d", spatial_rank);
    dnnl_dims_t dims = {n, c, spatial[0], spatial[1], spatial_rank == 3 ? spatial[2] : 0};
    CHECK(dnnl_memory_desc_init_by_tag(md, 2 + spatial_rank, dims, dnnl_f32, act_tag(spatial_rank, layout)),
          "describing an activation tensor");
    return 0;
}

int64_t cdnnl_tensor_size(int spatial_rank, int64_t n, int64_t c, const int64_t *spatial, int layout) {
    dnnl_memory_desc_t md;
    if (act_md(&md, spatial_rank, n, c, spatial, layout) != 0) return -1;
    return (int64_t)(dnnl_memory_desc_get_size(&md) / sizeof(float));
}

static int make_primitive(dnnl_primitive_t *p, dnnl_primitive_desc_t pd, const char *what) {
    CHECK(dnnl_primitive_create(p, pd), what);
    return 0;
}

static int execute(dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args, const char *what) {
    CHECK(dnnl_primitive_execute(p, g_stream, nargs, args), what);
    CHECK(dnnl_stream_wait(g_stream), what);
    return 0;
}

// ---- ports: a caller buffer in its layout, bridged to the layout a kernel chose ----

typedef struct {
    dnnl_memory_t user;      // wraps the caller's pointer (handle set per call)
    dnnl_memory_t kernel;    // what the primitive sees: == user when no reorder is needed
    dnnl_primitive_t reorder; // user->kernel for inputs, kernel->user for outputs
    size_t bytes;            // size of `kernel`'s storage when it differs from `user` (else 0)
} port;

// Storage behind ports lives in one arena per thread, bound per call (a call runs on one thread from
// start to end): a network's many primitives then need only the largest single call's worth of layout
// buffers, not one set each. Freed when the thread ends.
typedef struct { void *base; size_t bytes; } arena;
static pthread_key_t g_arena_key;
static pthread_once_t g_arena_once = PTHREAD_ONCE_INIT;

static void arena_destroy(void *p) {
    arena *a = p;
    free(a->base);
    free(a);
}

static void arena_key_create(void) { pthread_key_create(&g_arena_key, arena_destroy); }

static int ports_bind(port *const *ports, int n, const char *what) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (ports[i]->bytes + 63) / 64 * 64;
    if (total == 0) return 0;
    pthread_once(&g_arena_once, arena_key_create);
    arena *a = pthread_getspecific(g_arena_key);
    if (!a) {
        a = calloc(1, sizeof *a);
        if (!a || pthread_setspecific(g_arena_key, a) != 0) { free(a); return fail(-1, "%s: out of memory", what); }
    }
    if (total > a->bytes) {
        free(a->base);
        a->base = aligned_alloc(64, total);
        a->bytes = a->base ? total : 0;
        if (!a->base) return fail(-1, "%s: out of memory for %zu bytes of layout buffers", what, total);
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        if (!ports[i]->bytes) continue;
        CHECK(dnnl_memory_set_data_handle(ports[i]->kernel, (char *)a->base + offset), what);
        offset += (ports[i]->bytes + 63) / 64 * 64;
    }
    return 0;
}

static void port_free(port *p) {
    if (p->reorder) dnnl_primitive_destroy(p->reorder);
    if (p->kernel && p->kernel != p->user) dnnl_memory_destroy(p->kernel);
    if (p->user) dnnl_memory_destroy(p->user);
    memset(p, 0, sizeof *p);
}

/// is_output: the kernel writes and the result goes back to the caller.
/// accumulate: (outputs only) the caller's buffer receives += instead of =.
static int port_init(port *p, const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *kernel_md,
                     int is_output, int accumulate, const char *what) {
    memset(p, 0, sizeof *p);
    CHECK(dnnl_memory_create(&p->user, user_md, g_engine, DNNL_MEMORY_NONE), what);
    if (dnnl_memory_desc_equal(user_md, kernel_md) && !accumulate) {
        p->kernel = p->user;
        return 0;
    }
    p->bytes = dnnl_memory_desc_get_size(kernel_md);
    CHECK(dnnl_memory_create(&p->kernel, kernel_md, g_engine, DNNL_MEMORY_NONE), what);
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t ops;
        CHECK(dnnl_primitive_attr_create(&attr), what);
        CHECK(dnnl_post_ops_create(&ops), what);
        CHECK(dnnl_post_ops_append_sum(ops, 1.0f), what);
        CHECK(dnnl_primitive_attr_set_post_ops(attr, ops), what);
        dnnl_post_ops_destroy(ops);
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = is_output
        ? dnnl_reorder_primitive_desc_create(&pd, kernel_md, g_engine, user_md, g_engine, attr)
        : dnnl_reorder_primitive_desc_create(&pd, user_md, g_engine, kernel_md, g_engine, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) return fail((int)s, "%s: creating a layout reorder", what);
    int rc = make_primitive(&p->reorder, pd, what);
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

/// Binds an input pointer and returns the memory the kernel should read.
static int port_in(port *p, const void *ptr, dnnl_memory_t *out, const char *what) {
    CHECK(dnnl_memory_set_data_handle(p->user, (void *)ptr), what);
    if (p->reorder) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, p->user}, {DNNL_ARG_TO, p->kernel}};
        if (execute(p->reorder, 2, args, what) != 0) return -1;
    }
    *out = p->kernel;
    return 0;
}

static int port_out_begin(port *p, void *ptr, dnnl_memory_t *out, const char *what) {
    CHECK(dnnl_memory_set_data_handle(p->user, ptr), what);
    *out = p->kernel;
    return 0;
}

static int port_out_end(port *p, const char *what) {
    if (!p->reorder) return 0;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, p->kernel}, {DNNL_ARG_TO, p->user}};
    return execute(p->reorder, 2, args, what);
}

// ---- reorder between activation layouts ----

struct cdnnl_reorder { dnnl_primitive_t prim; dnnl_memory_t from, to; };

int cdnnl_reorder_create(cdnnl_reorder **out, int spatial_rank, int64_t n, int64_t c,
                         const int64_t *spatial, int from_layout, int to_layout) {
    if (cdnnl_init() != 0) return -1;
    dnnl_memory_desc_t from, to;
    if (act_md(&from, spatial_rank, n, c, spatial, from_layout) != 0) return -1;
    if (act_md(&to, spatial_rank, n, c, spatial, to_layout) != 0) return -1;
    cdnnl_reorder *r = calloc(1, sizeof *r);
    if (!r) return fail(-1, "out of memory");
    dnnl_primitive_desc_t pd = NULL;
    int rc = -1;
    if (dnnl_memory_create(&r->from, &from, g_engine, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&r->to, &to, g_engine, DNNL_MEMORY_NONE) != dnnl_success) {
        fail(-1, "layout reorder: creating memory");
    } else {
        dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, &from, g_engine, &to, g_engine, NULL);
        if (s != dnnl_success) fail((int)s, "layout reorder: creating the primitive");
        else rc = make_primitive(&r->prim, pd, "layout reorder");
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (rc != 0) { cdnnl_reorder_destroy(r); return -1; }
    *out = r;
    return 0;
}

int cdnnl_reorder_execute(cdnnl_reorder *r, const float *src, float *dst) {
    const char *what = "layout reorder";
    CHECK(dnnl_memory_set_data_handle(r->from, (void *)src), what);
    CHECK(dnnl_memory_set_data_handle(r->to, dst), what);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
    return execute(r->prim, 2, args, what);
}

void cdnnl_reorder_destroy(cdnnl_reorder *r) {
    if (!r) return;
    if (r->prim) dnnl_primitive_destroy(r->prim);
    if (r->from) dnnl_memory_destroy(r->from);
    if (r->to) dnnl_memory_destroy(r->to);
    free(r);
}

// ---- convolution / transposed convolution ----

struct cdnnl_conv {
    cdnnl_conv_desc d;
    dnnl_memory_desc_t src_md, dst_md, weight_md, bias_md; // caller layouts
    dnnl_dims_t strides, pad_lo, pad_hi;
    dnnl_primitive_desc_t fwd_pd;
    dnnl_primitive_t fwd;
    port f_src, f_w, f_dst;
    dnnl_memory_t f_bias;
    dnnl_primitive_t bwd_data;
    port d_ddst, d_w, d_dsrc;
    dnnl_primitive_t bwd_weights;
    port w_src, w_ddst, w_dw;
    dnnl_memory_t w_db;
    float *db_buffer;
    int own_bwd_weights;   // 1: our direct kernel (kernels.h) instead of oneDNN's
    int winograd;          // 1: forward and backward data run our Winograd kernel
    int winograd_weights;  // 1: backward weights too
    char impl[3][64];      // implementation names: forward, backward data, backward weights
    // Transposed convolution with kernel == stride, run as a 1x1 convolution to K*O channels
    // (tap-major: channel k*O + o) and a shuffle of those channels into the upsampled grid.
    cdnnl_conv *inner;
    float *tmp, *w2;       // inner output (N, K*O, spatial), inner weights (K*O, I)
    int fused_upsample;    // 1: own kernels available for the layout: one fused kernel, no inner output
    size_t tmp_floats;
    // Forward with the inference epilogue as oneDNN post-ops (x scale, + shift, leaky ReLU), made on first
    // use: state 0 untried, 1 made (for fwd_ep_slope), -1 not available or CDNNL_NO_POST_OPS (one pass after).
    dnnl_primitive_t fwd_ep;
    int fwd_ep_state;
    float fwd_ep_slope;
    dnnl_memory_t ep_scale, ep_shift;
    // Forward's transformed kernel, kept while keep_key != 0 (cdnnl_conv_keep_weights).
    cdnnl_winograd_kept kept;
    uint64_t keep_key, kept_key;
    const float *kept_weight;
};

static void remember_impl(char *dst, dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    snprintf(dst, 64, "oneDNN %s", impl ? impl : "?");
}

const char *cdnnl_conv_impl(cdnnl_conv *c, int direction) {
    if (direction < 0 || direction > 2) return "";
    return c->impl[direction];
}

void cdnnl_conv_keep_weights(cdnnl_conv *c, uint64_t key) {
    c->keep_key = key;
    if (key == 0) {
        free(c->kept.u);
        c->kept = (cdnnl_winograd_kept){0};
        c->kept_weight = NULL;
        c->kept_key = 0;
    }
}

void cdnnl_conv_destroy(cdnnl_conv *c) {
    if (!c) return;
    free(c->kept.u);
    cdnnl_conv_destroy(c->inner);
    free(c->tmp); free(c->w2);
    if (c->fwd) dnnl_primitive_destroy(c->fwd);
    if (c->fwd_ep) dnnl_primitive_destroy(c->fwd_ep);
    if (c->ep_scale) dnnl_memory_destroy(c->ep_scale);
    if (c->ep_shift) dnnl_memory_destroy(c->ep_shift);
    if (c->bwd_data) dnnl_primitive_destroy(c->bwd_data);
    if (c->bwd_weights) dnnl_primitive_destroy(c->bwd_weights);
    if (c->fwd_pd) dnnl_primitive_desc_destroy(c->fwd_pd);
    port *ports[] = {&c->f_src, &c->f_w, &c->f_dst, &c->d_ddst, &c->d_w, &c->d_dsrc,
                     &c->w_src, &c->w_ddst, &c->w_dw};
    for (size_t i = 0; i < sizeof ports / sizeof *ports; i++) port_free(ports[i]);
    if (c->f_bias) dnnl_memory_destroy(c->f_bias);
    if (c->w_db) dnnl_memory_destroy(c->w_db);
    free(c->db_buffer);
    free(c);
}

static const dnnl_memory_desc_t *q(dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

static int any_like(dnnl_memory_desc_t *out, const dnnl_memory_desc_t *md, dnnl_data_type_t type) {
    CHECK(dnnl_memory_desc_init_by_tag(out, md->ndims, md->dims, type, dnnl_format_tag_any), "describing a tensor");
    return 0;
}

/// The data type a convolution's kernel reads its activation and weight inputs in: bf16 in bf16
/// precision (the caller's f32 tensors are converted by the ports' reorders), f32 otherwise.
/// Outputs and weight gradients stay f32 either way.
static dnnl_data_type_t input_type(const cdnnl_conv *c) {
    return c->d.precision == CDNNL_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
}

static int conv_create_fwd(cdnnl_conv *c) {
    const char *what = c->d.transposed ? "transposed convolution forward" : "convolution forward";
    dnnl_memory_desc_t s, w, dst;
    if (any_like(&s, &c->src_md, input_type(c)) || any_like(&w, &c->weight_md, input_type(c)) ||
        any_like(&dst, &c->dst_md, dnnl_f32)) return -1;
    const dnnl_memory_desc_t *b = c->d.has_bias ? &c->bias_md : NULL;
    if (c->d.transposed) {
        dnnl_deconvolution_desc_t desc;
        CHECK(dnnl_deconvolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_deconvolution_direct,
              &s, &w, b, &dst, c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&c->fwd_pd, &desc, NULL, g_engine, NULL), what);
    } else {
        dnnl_convolution_desc_t desc;
        CHECK(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_convolution_direct,
              &s, &w, b, &dst, c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&c->fwd_pd, &desc, NULL, g_engine, NULL), what);
    }
    remember_impl(c->impl[0], c->fwd_pd);
    if (make_primitive(&c->fwd, c->fwd_pd, what)) return -1;
    if (port_init(&c->f_src, &c->src_md, q(c->fwd_pd, dnnl_query_src_md), 0, 0, what)) return -1;
    if (port_init(&c->f_w, &c->weight_md, q(c->fwd_pd, dnnl_query_weights_md), 0, 0, what)) return -1;
    if (port_init(&c->f_dst, &c->dst_md, q(c->fwd_pd, dnnl_query_dst_md), 1, 0, what)) return -1;
    if (c->d.has_bias) CHECK(dnnl_memory_create(&c->f_bias, &c->bias_md, g_engine, DNNL_MEMORY_NONE), what);
    return 0;
}

// ---- transposed convolution with kernel == stride: 1x1 convolution + channel shuffle ----
// oneDNN runs these deconvolutions forward as strided backward-data, at 15-60% of peak on AVX2.
// Each input voxel feeds a disjoint K-voxel output patch, so the op is exactly a 1x1 convolution
// to K*O channels followed by moving channel k*O + o to output channel o at tap k. (Backward
// stays on oneDNN: there its kernels beat this route.)

static int64_t block_of(int layout) {
    return layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : layout == CDNNL_LAYOUT_BLOCKED8 ? 8 : 1;
}

static int shuffle_eligible(const cdnnl_conv_desc *d) {
    if (!d->transposed || getenv("CDNNL_ONEDNN_ONLY")) return 0;
    for (int i = 0; i < d->spatial_rank; i++)
        if (d->kernel[i] != d->stride[i] || d->pad_lo[i] != 0 || d->pad_hi[i] != 0) return 0;
    return d->out_channels % block_of(d->layout) == 0;
}

typedef struct { const cdnnl_conv_desc *d; const float *inner; float *output; const float *bias; } shuffle_ctx;

/// Moves the inner tensor (N, K*O, D, H, W) into the output (N, O, kD*D, kH*H, kW*W), adding the
/// bias; both in the same layout with block B (B = 1 is plain). Rows [begin, end) of the
/// N*K*OB*D*H input rows.
static void shuffle_rows(void *arg, int64_t begin, int64_t end) {
    const shuffle_ctx *ctx = arg;
    const cdnnl_conv_desc *d = ctx->d;
    const int r = d->spatial_rank;
    const int64_t B = block_of(d->layout);
    const int64_t D = r == 3 ? d->in_size[0] : 1, H = d->in_size[r - 2], W = d->in_size[r - 1];
    const int64_t KD = r == 3 ? d->kernel[0] : 1, KH = d->kernel[r - 2], KW = d->kernel[r - 1];
    const int64_t O = d->out_channels, OB = (O + B - 1) / B, K = KD * KH * KW;
    const int64_t OD = D * KD, OH = H * KH, OW = W * KW, step = KW * B;
    for (int64_t row = begin; row < end; row++) {
        // row = (((n * K + k) * OB + ob) * D + z) * H + y
        const int64_t y = row % H, z = (row / H) % D, ob = (row / (H * D)) % OB;
        const int64_t k = (row / (H * D * OB)) % K, n = row / (H * D * OB * K);
        const int64_t kd = k / (KH * KW), kh = (k / KW) % KH, kw = k % KW;
        const float *s_row = ctx->inner + row * W * B;
        float *d_row = ctx->output + ((((n * OB + ob) * OD + z * KD + kd) * OH + y * KH + kh) * OW + kw) * B;
        float bias[16] = {0};
        if (ctx->bias) for (int64_t l = 0; l < B; l++) bias[l] = ctx->bias[ob * B + l];
        for (int64_t x = 0; x < W; x++)
            for (int64_t l = 0; l < B; l++) d_row[x * step + l] = s_row[x * B + l] + bias[l];
    }
}

static int64_t kernel_volume(const cdnnl_conv_desc *d) {
    int64_t K = 1;
    for (int i = 0; i < d->spatial_rank; i++) K *= d->kernel[i];
    return K;
}

static int shuffle_create(cdnnl_conv *c) {
    const cdnnl_conv_desc *d = &c->d;
    const int64_t K = kernel_volume(d);
    // Slack of 32 floats per input channel: the fused kernel's last panel may be half empty.
    const size_t wbytes = ((size_t)((K * d->out_channels + 32) * d->in_channels) * sizeof(float) + 63) / 64 * 64;
    c->w2 = aligned_alloc(64, wbytes);
    if (!c->w2) return fail(-1, "transposed convolution: out of memory");
    if (cdnnl_own_kernels_available(d->layout)) {
        c->fused_upsample = 1;
        snprintf(c->impl[0], 64, "SwiftUNet %s upsample", cdnnl_own_kernels_isa(d->layout));
        return 0;
    }
    cdnnl_conv_desc in = *d;
    in.out_channels = K * d->out_channels;
    for (int i = 0; i < 3; i++) { in.out_size[i] = d->in_size[i]; in.kernel[i] = 1; in.stride[i] = 1; in.pad_lo[i] = 0; in.pad_hi[i] = 0; }
    in.has_bias = 0;
    in.transposed = 0;
    if (cdnnl_conv_create(&c->inner, &in) != 0) return -1;
    int64_t sp[3] = {d->in_size[0], d->in_size[1], d->in_size[2]};
    int64_t n = cdnnl_tensor_size(d->spatial_rank, d->batch, in.out_channels, sp, d->layout);
    if (n < 0) return -1;
    c->tmp_floats = (size_t)n;
    c->tmp = aligned_alloc(64, (c->tmp_floats * sizeof(float) + 63) / 64 * 64);
    if (!c->tmp) return fail(-1, "transposed convolution: out of memory");
    memset(c->tmp, 0, c->tmp_floats * sizeof(float));
    snprintf(c->impl[0], 64, "SwiftUNet 1x1 conv + shuffle");
    return 0;
}

/// W (I, O, K) in PyTorch's layout -> W2 (K*O, I) for the inner 1x1 convolution.
static void shuffle_weights(const cdnnl_conv *c, const float *w) {
    const int64_t I = c->d.in_channels, O = c->d.out_channels, K = kernel_volume(&c->d);
    for (int64_t i = 0; i < I; i++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t k = 0; k < K; k++) c->w2[(k * O + o) * I + i] = w[(i * O + o) * K + k];
}

static int shuffle_forward(cdnnl_conv *c, const float *src, const float *weight, const float *bias, float *dst) {
    if (c->fused_upsample) {
        // w2 in panels of two B-column groups (B the channel block): group j = (o/B)*K + k
        // (neighbouring groups are neighbouring taps along W, so a tile fills whole cache lines),
        // panel j/2 holds its I rows of 2B floats contiguously (rows of a K*O-wide matrix would
        // alias in L1).
        const int64_t I = c->d.in_channels, O = c->d.out_channels, K = kernel_volume(&c->d);
        const int64_t B = block_of(c->d.layout);
        memset(c->w2, 0, (size_t)((K * O + 2 * B) * I) * sizeof(float));
        for (int64_t i = 0; i < I; i++)
            for (int64_t o = 0; o < O; o++)
                for (int64_t k = 0; k < K; k++) {
                    const int64_t j = (o / B) * K + k;
                    c->w2[((j / 2) * I + i) * 2 * B + (j % 2) * B + o % B] = weight[(i * O + o) * K + k];
                }
        return cdnnl_upsample(&c->d, cdnnl_max_threads(), src, c->w2, c->d.has_bias ? bias : NULL, dst);
    }
    shuffle_weights(c, weight);
    if (cdnnl_conv_forward(c->inner, src, c->w2, NULL, c->tmp) != 0) return -1;
    shuffle_ctx ctx = {&c->d, c->tmp, dst, c->d.has_bias ? bias : NULL};
    const int64_t B = block_of(c->d.layout);
    const int64_t rows = (int64_t)c->tmp_floats / (c->d.in_size[c->d.spatial_rank - 1] * B);
    cdnnl_parallel(cdnnl_max_threads(), rows, shuffle_rows, &ctx);
    return 0;
}

static const char *winograd_name(int rank, int tile) {
    if (rank == 2) return tile == 6 ? "F(6x6,3x3)" : "F(4x4,3x3)";
    return tile == 4 ? "F(4x4x4,3x3x3)" : "F(2x2x2,3x3x3)";
}

int cdnnl_conv_create(cdnnl_conv **out, const cdnnl_conv_desc *d) {
    if (cdnnl_init() != 0) return -1;
    int r = d->spatial_rank;
    if (r != 2 && r != 3) return fail(-1, "convolution: spatial rank must be 2 or 3, got %d", r);
    cdnnl_conv *c = calloc(1, sizeof *c);
    if (!c) return fail(-1, "out of memory");
    c->d = *d;
    if (d->precision != CDNNL_PRECISION_FP32 && d->precision != CDNNL_PRECISION_BF16) {
        free(c);
        return fail(-1, "convolution: unknown precision %d", d->precision);
    }
    if (d->precision == CDNNL_PRECISION_BF16 && !cdnnl_avx512_bf16_available()) {
        free(c);
        return fail(-1, "convolution: bf16 precision needs AVX512_BF16, which this CPU lacks");
    }
    int rc = act_md(&c->src_md, r, d->batch, d->in_channels, d->in_size, d->layout);
    if (rc == 0) rc = act_md(&c->dst_md, r, d->batch, d->out_channels, d->out_size, d->layout);
    if (rc == 0) {
        // oneDNN weight dims are (OC, IC, k...) for both kinds; PyTorch stores transposed
        // convolution weights as (IC, OC, k...), which is the `io...` tag over the same dims.
        dnnl_dims_t wd = {d->out_channels, d->in_channels, d->kernel[0], d->kernel[1], r == 3 ? d->kernel[2] : 0};
        dnnl_format_tag_t tag = d->transposed ? (r == 3 ? dnnl_iodhw : dnnl_iohw) : (r == 3 ? dnnl_oidhw : dnnl_oihw);
        dnnl_dims_t bd = {d->out_channels};
        if (dnnl_memory_desc_init_by_tag(&c->weight_md, 2 + r, wd, dnnl_f32, tag) != dnnl_success ||
            dnnl_memory_desc_init_by_tag(&c->bias_md, 1, bd, dnnl_f32, dnnl_x) != dnnl_success)
            rc = fail(-1, "convolution: describing weights");
    }
    for (int i = 0; i < r; i++) {
        c->strides[i] = d->stride[i]; c->pad_lo[i] = d->pad_lo[i]; c->pad_hi[i] = d->pad_hi[i];
    }
    // The oneDNN forward descriptor is built in every case: backward primitives take it as a hint.
    if (rc == 0) rc = conv_create_fwd(c);
    if (rc == 0 && shuffle_eligible(d)) rc = shuffle_create(c);
    if (getenv("CDNNL_NO_POST_OPS")) c->fwd_ep_state = -1;  // the epilogue as a pass after the convolution
    if (rc == 0 && d->algorithm == CDNNL_ALGO_WINOGRAD && !cdnnl_winograd_possible(d))
        rc = fail(-1, "convolution: the Winograd algorithm needs a 3x3(x3) stride-1 padding-1 convolution on "
                      "blocked activations with channel counts divisible by the block, and the CPU for it "
                      "(AVX2 for blocked8, AVX-512 for blocked16)");
    // Winograd is an fp32 kernel, and stays the choice in bf16 precision too: F(4x4,3x3) multiplies 4x less
    // than direct convolution, bf16 dot products only run 2x faster, and a bf16 Winograd would round the
    // transformed tiles (measured: 2% rms error per layer for F(4x4) in bf16, 8x bf16 direct's).
    const int auto_winograd = d->algorithm == CDNNL_ALGO_AUTO && cdnnl_winograd_preferred(d) &&
                              (d->precision == CDNNL_PRECISION_FP32 || !getenv("CDNNL_BF16_DIRECT"));
    if (rc == 0 && (d->algorithm == CDNNL_ALGO_WINOGRAD || auto_winograd)) {
        c->winograd = 1;
        const char *isa = cdnnl_own_kernels_isa(d->layout);
        snprintf(c->impl[0], 64, "SwiftUNet %s winograd %s", isa, winograd_name(r, cdnnl_winograd_tile(d)));
        snprintf(c->impl[1], 64, "%s", c->impl[0]);
        c->winograd_weights = !d->has_bias && (d->algorithm == CDNNL_ALGO_WINOGRAD || cdnnl_winograd_bwd_weights_preferred(d));
        if (c->winograd_weights)
            snprintf(c->impl[2], 64, "SwiftUNet %s winograd %s", isa, winograd_name(r, cdnnl_winograd_weights_tile(d)));
    }
    if (rc != 0) { cdnnl_conv_destroy(c); return -1; }
    *out = c;
    return 0;
}

static int winograd_forward(cdnnl_conv *c, const float *src, const float *src2, int64_t src_channels,
                            const float *weight, const float *bias, float *dst, const float *scale,
                            const float *shift, const float *residual, float slope) {
    const char *what = "convolution forward";
    if (c->d.has_bias && !bias) return fail(-1, "%s: bias missing", what);
    cdnnl_winograd_kept *kept = NULL;
    if (c->keep_key) {
        if (c->kept_key != c->keep_key || c->kept_weight != weight) c->kept.ready = 0;
        c->kept_key = c->keep_key;
        c->kept_weight = weight;
        kept = &c->kept;
    }
    const int rc = cdnnl_winograd(&c->d, cdnnl_max_threads(), 0, src, src2, NULL, src_channels, weight,
                                  c->d.has_bias ? bias : NULL, dst, scale, shift, residual, slope, kept);
    if (rc == -2) return fail(-1, "%s: the input cannot be read as two parts split at channel %lld", what, (long long)src_channels);
    if (rc) return fail(-1, "%s: out of memory for the Winograd buffers", what);
    return 0;
}

/// Runs oneDNN forward primitive `p` (the plain forward or the one with the epilogue's post-ops, which read
/// and write the same layouts) through the forward ports; `extra`: its post-ops' arguments.
static int onednn_forward(cdnnl_conv *c, dnnl_primitive_t p, const float *src, const float *weight, const float *bias,
                          float *dst, const dnnl_exec_arg_t *extra, int extras) {
    const char *what = "convolution forward";
    dnnl_memory_t ms, mw, md;
    port *const fp[] = {&c->f_src, &c->f_w, &c->f_dst};
    if (ports_bind(fp, 3, what)) return -1;
    if (port_in(&c->f_src, src, &ms, what) || port_in(&c->f_w, weight, &mw, what) ||
        port_out_begin(&c->f_dst, dst, &md, what)) return -1;
    dnnl_exec_arg_t args[8] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
    int n = 3;
    if (c->d.has_bias) {
        if (!bias) return fail(-1, "%s: bias missing", what);
        CHECK(dnnl_memory_set_data_handle(c->f_bias, (void *)bias), what);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->f_bias};
    }
    for (int i = 0; i < extras && n < 8; i++) args[n++] = extra[i];
    if (execute(p, n, args, what)) return -1;
    return port_out_end(&c->f_dst, what);
}

int cdnnl_conv_forward(cdnnl_conv *c, const float *src, const float *weight, const float *bias, float *dst) {
    if (c->w2) return shuffle_forward(c, src, weight, bias, dst);
    if (c->winograd) return winograd_forward(c, src, NULL, 0, weight, bias, dst, NULL, NULL, NULL, 1.0f);
    return onednn_forward(c, c->fwd, src, weight, bias, dst, NULL, 0);
}

/// The forward primitive with post-ops y * scale[o] + shift[o], then leaky ReLU (slope != 1), reading and
/// writing the same layouts as the plain forward (else it is not used). 0 made, -1 not available.
static int conv_create_fwd_epilogue(cdnnl_conv *c, float slope) {
    if (c->fwd_ep) { dnnl_primitive_destroy(c->fwd_ep); c->fwd_ep = NULL; }
    if (c->d.transposed) return -1;
    dnnl_memory_desc_t s, w, dst, channel;
    if (any_like(&s, &c->src_md, input_type(c)) || any_like(&w, &c->weight_md, input_type(c)) ||
        any_like(&dst, &c->dst_md, dnnl_f32)) return -1;
    const int r = c->d.spatial_rank;
    dnnl_dims_t cd = {1, c->d.out_channels, 1, 1, 1};
    if (dnnl_memory_desc_init_by_tag(&channel, 2 + r, cd, dnnl_f32, r == 3 ? dnnl_abcde : dnnl_abcd) != dnnl_success) return -1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int ok = dnnl_primitive_attr_create(&attr) == dnnl_success && dnnl_post_ops_create(&ops) == dnnl_success &&
             dnnl_post_ops_append_binary(ops, dnnl_binary_mul, &channel) == dnnl_success &&
             dnnl_post_ops_append_binary(ops, dnnl_binary_add, &channel) == dnnl_success &&
             (slope == 1.0f || dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, slope, 0.0f) == dnnl_success) &&
             dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    const dnnl_memory_desc_t *b = c->d.has_bias ? &c->bias_md : NULL;
    dnnl_convolution_desc_t desc;
    ok = ok && dnnl_convolution_forward_desc_init(&desc, dnnl_forward_training, dnnl_convolution_direct, &s, &w, b,
                                                  &dst, c->strides, c->pad_lo, c->pad_hi) == dnnl_success &&
         dnnl_primitive_desc_create(&pd, &desc, attr, g_engine, NULL) == dnnl_success;
    // The plain forward's ports bridge the caller's layouts: the kernel must read and write the same ones.
    ok = ok && dnnl_memory_desc_equal(q(pd, dnnl_query_src_md), q(c->fwd_pd, dnnl_query_src_md)) &&
         dnnl_memory_desc_equal(q(pd, dnnl_query_weights_md), q(c->fwd_pd, dnnl_query_weights_md)) &&
         dnnl_memory_desc_equal(q(pd, dnnl_query_dst_md), q(c->fwd_pd, dnnl_query_dst_md)) &&
         dnnl_primitive_create(&c->fwd_ep, pd) == dnnl_success;
    if (ok && !c->ep_scale)
        ok = dnnl_memory_create(&c->ep_scale, &channel, g_engine, DNNL_MEMORY_NONE) == dnnl_success &&
             dnnl_memory_create(&c->ep_shift, &channel, g_engine, DNNL_MEMORY_NONE) == dnnl_success;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    c->fwd_ep_slope = slope;
    return ok ? 0 : -1;
}

int cdnnl_conv_forward_epilogue(cdnnl_conv *c, const float *src, const float *weight, const float *bias, float *dst,
                                const float *scale, const float *shift, const float *residual, float slope) {
    if (c->winograd) return winograd_forward(c, src, NULL, 0, weight, bias, dst, scale, shift, residual, slope);
    if (!c->w2 && !residual && scale) {
        if (c->fwd_ep_state == 0 || (c->fwd_ep_state == 1 && c->fwd_ep_slope != slope))
            c->fwd_ep_state = conv_create_fwd_epilogue(c, slope) == 0 ? 1 : -1;
        if (c->fwd_ep_state == 1) {
            const char *what = "convolution forward";
            CHECK(dnnl_memory_set_data_handle(c->ep_scale, (void *)scale), what);
            CHECK(dnnl_memory_set_data_handle(c->ep_shift, (void *)shift), what);
            const dnnl_exec_arg_t post[2] = {{DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, c->ep_scale},
                                             {DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, c->ep_shift}};
            return onednn_forward(c, c->fwd_ep, src, weight, bias, dst, post, 2);
        }
    }
    if (cdnnl_conv_forward(c, src, weight, bias, dst)) return -1;
    const int r = c->d.spatial_rank;
    int64_t spatial = 1;
    for (int i = 0; i < r; i++) spatial *= c->d.out_size[i];
    cdnnl_affine_activate(dst, residual, dst, c->d.batch, c->d.out_channels, spatial, c->d.layout, slope, scale, shift);
    return 0;
}

int cdnnl_conv_reads_joined(cdnnl_conv *c, int64_t src_channels) {
    const int64_t block = c->d.layout == CDNNL_LAYOUT_BLOCKED16 ? 16 : c->d.layout == CDNNL_LAYOUT_BLOCKED8 ? 8 : 0;
    if (!c->winograd || !block || src_channels <= 0 || src_channels >= c->d.in_channels || src_channels % block) return 0;
    return c->winograd_weights ? 3 : 1;
}

int cdnnl_conv_backward_weights_joined(cdnnl_conv *c, const float *src, const float *src2, int64_t src_channels,
                                       const float *diff_dst, float *diff_weight) {
    const char *what = "convolution backward weights";
    if (cdnnl_conv_reads_joined(c, src_channels) != 3)
        return fail(-1, "%s: this kernel cannot read its input split at channel %lld", what, (long long)src_channels);
    if (cdnnl_winograd_bwd_weights(&c->d, cdnnl_max_threads(), src, src2, src_channels, diff_dst, diff_weight))
        return fail(-1, "%s: out of memory for the Winograd buffers", what);
    return 0;
}

int cdnnl_conv_forward_epilogue_joined(cdnnl_conv *c, const float *src, const float *src2, int64_t src_channels,
                                       const float *weight, const float *bias, float *dst, const float *scale,
                                       const float *shift, const float *residual, float slope) {
    if (!(cdnnl_conv_reads_joined(c, src_channels) & 1))
        return fail(-1, "convolution forward: this kernel cannot read its input split at channel %lld", (long long)src_channels);
    return winograd_forward(c, src, src2, src_channels, weight, bias, dst, scale, shift, residual, slope);
}

static int conv_create_bwd_data(cdnnl_conv *c) {
    const char *what = "convolution backward data";
    dnnl_memory_desc_t s, w, dst;
    if (any_like(&s, &c->src_md, dnnl_f32) || any_like(&w, &c->weight_md, input_type(c)) ||
        any_like(&dst, &c->dst_md, input_type(c))) return -1;
    dnnl_primitive_desc_t pd;
    if (c->d.transposed) {
        dnnl_deconvolution_desc_t desc;
        CHECK(dnnl_deconvolution_backward_data_desc_init(&desc, dnnl_deconvolution_direct, &s, &w, &dst,
              c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, c->fwd_pd), what);
    } else {
        dnnl_convolution_desc_t desc;
        CHECK(dnnl_convolution_backward_data_desc_init(&desc, dnnl_convolution_direct, &s, &w, &dst,
              c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, c->fwd_pd), what);
    }
    remember_impl(c->impl[1], pd);
    int rc = make_primitive(&c->bwd_data, pd, what);
    if (rc == 0) rc = port_init(&c->d_ddst, &c->dst_md, q(pd, dnnl_query_diff_dst_md), 0, 0, what);
    if (rc == 0) rc = port_init(&c->d_w, &c->weight_md, q(pd, dnnl_query_weights_md), 0, 0, what);
    if (rc == 0) rc = port_init(&c->d_dsrc, &c->src_md, q(pd, dnnl_query_diff_src_md), 1, 0, what);
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

static int winograd_backward_data(cdnnl_conv *c, const float *diff_dst, const float *weight, float *diff_src,
                                  float *diff_src2, int64_t split) {
    const int rc = cdnnl_winograd(&c->d, cdnnl_max_threads(), 1, diff_dst, NULL, diff_src2, split, weight, NULL, diff_src,
                                  NULL, NULL, NULL, 1.0f, NULL);
    if (rc) return fail(-1, rc == -2 ? "convolution backward data: the input gradient cannot be written in two parts"
                                     : "convolution backward data: out of memory for the Winograd buffers");
    return 0;
}

int cdnnl_conv_backward_data_joined(cdnnl_conv *c, const float *diff_dst, const float *weight, float *diff_src,
                                    float *diff_src2, int64_t src_channels) {
    if (!(cdnnl_conv_reads_joined(c, src_channels) & 1))
        return fail(-1, "convolution backward data: this kernel cannot write its input gradient split at channel %lld",
                    (long long)src_channels);
    return winograd_backward_data(c, diff_dst, weight, diff_src, diff_src2, src_channels);
}

int cdnnl_conv_backward_data(cdnnl_conv *c, const float *diff_dst, const float *weight, float *diff_src) {
    const char *what = "convolution backward data";
    if (c->winograd) return winograd_backward_data(c, diff_dst, weight, diff_src, NULL, 0);
    if (!c->bwd_data && conv_create_bwd_data(c)) return -1;
    dnnl_memory_t mdd, mw, mds;
    port *const dp[] = {&c->d_ddst, &c->d_w, &c->d_dsrc};
    if (ports_bind(dp, 3, what)) return -1;
    if (port_in(&c->d_ddst, diff_dst, &mdd, what) || port_in(&c->d_w, weight, &mw, what) ||
        port_out_begin(&c->d_dsrc, diff_src, &mds, what)) return -1;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_DIFF_DST, mdd}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DIFF_SRC, mds}};
    if (execute(c->bwd_data, 3, args, what)) return -1;
    return port_out_end(&c->d_dsrc, what);
}

static int conv_create_bwd_weights(cdnnl_conv *c) {
    const char *what = "convolution backward weights";
    // Transposed convolutions' weight gradients stay f32 in bf16 precision: oneDNN 2.6's bf16 kernel for
    // them, with the conversions of both inputs, took 1.1-2.6x the f32 time at every composer-2d level
    // (AMD Zen 4, AVX512_BF16). Their products are a few percent of a step, so nothing is lost there.
    const dnnl_data_type_t type = c->d.transposed ? dnnl_f32 : input_type(c);
    dnnl_memory_desc_t s, w, dst;
    if (any_like(&s, &c->src_md, type) || any_like(&w, &c->weight_md, dnnl_f32) ||
        any_like(&dst, &c->dst_md, type)) return -1;
    const dnnl_memory_desc_t *b = c->d.has_bias ? &c->bias_md : NULL;
    dnnl_primitive_desc_t pd;
    if (c->d.transposed) {
        dnnl_deconvolution_desc_t desc;
        CHECK(dnnl_deconvolution_backward_weights_desc_init(&desc, dnnl_deconvolution_direct, &s, &w, b, &dst,
              c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, c->fwd_pd), what);
    } else {
        dnnl_convolution_desc_t desc;
        CHECK(dnnl_convolution_backward_weights_desc_init(&desc, dnnl_convolution_direct, &s, &w, b, &dst,
              c->strides, c->pad_lo, c->pad_hi), what);
        CHECK(dnnl_primitive_desc_create(&pd, &desc, NULL, g_engine, c->fwd_pd), what);
    }
    // oneDNN 2.6 has no direct 3D backward-weights kernel below AVX-512; its im2col + GEMM
    // fallback is slow, so on blocked8 activations our own kernel takes over.
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    // Its accumulators are reloaded once per output row, so it wins on long rows (the large,
    // few-channel levels) and loses to the GEMM path on short ones.
    // In 2D oneDNN has a direct kernel, but on AVX2 it reaches only 35-75% of peak on wide rows (measured:
    // ours 80-86% at output widths 80-160); from width 40 down oneDNN's is as good or better.
    const int64_t out_w = c->d.out_size[c->d.spatial_rank - 1];
    const int64_t min_w = c->d.spatial_rank == 3 ? 32 : 64;
    // In bf16 precision too: on the wide rows it takes, our f32 kernel beat oneDNN 2.6's bf16 one, which
    // converts both inputs first (composer-2d's two widest levels, AMD Zen 4: 1.45-1.5x).
    const int use_own =
        c->d.spatial_rank == 3 ? (impl && strstr(impl, "gemm") != NULL) : !getenv("CDNNL_ONEDNN_2D_BWD_WEIGHTS");
    if ((c->d.spatial_rank == 3 || c->d.spatial_rank == 2) && !c->d.transposed && out_w >= min_w && use_own &&
        cdnnl_own_kernels_available(c->d.layout)) {
        // No oneDNN primitive or layout buffers then: they would hold copies of the activations.
        c->own_bwd_weights = 1;
        snprintf(c->impl[2], 64, "SwiftUNet %s direct", cdnnl_own_kernels_isa(c->d.layout));
        dnnl_primitive_desc_destroy(pd);
        return 0;
    }
    remember_impl(c->impl[2], pd);
    int rc = make_primitive(&c->bwd_weights, pd, what);
    if (rc == 0) rc = port_init(&c->w_src, &c->src_md, q(pd, dnnl_query_src_md), 0, 0, what);
    if (rc == 0) rc = port_init(&c->w_ddst, &c->dst_md, q(pd, dnnl_query_diff_dst_md), 0, 0, what);
    // Parameter gradients accumulate: the kernel writes a private buffer, a reorder with a
    // sum post-op adds it into the caller's plain-layout gradient.
    if (rc == 0) rc = port_init(&c->w_dw, &c->weight_md, q(pd, dnnl_query_diff_weights_md), 1, 1, what);
    if (rc == 0 && c->d.has_bias) {
        c->db_buffer = aligned_alloc(64, (size_t)((c->d.out_channels * 4 + 63) / 64 * 64));
        if (!c->db_buffer) rc = fail(-1, "%s: out of memory", what);
        else if (dnnl_memory_create(&c->w_db, &c->bias_md, g_engine, c->db_buffer) != dnnl_success)
            rc = fail(-1, "%s: bias memory", what);
    }
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

int cdnnl_conv_backward_weights(cdnnl_conv *c, const float *src, const float *diff_dst,
                                float *diff_weight, float *diff_bias) {
    const char *what = "convolution backward weights";
    if (c->winograd_weights) {
        if (cdnnl_winograd_bwd_weights(&c->d, cdnnl_max_threads(), src, NULL, 0, diff_dst, diff_weight))
            return fail(-1, "%s: out of memory for the Winograd buffers", what);
        return 0;
    }
    if (!c->bwd_weights && !c->own_bwd_weights && conv_create_bwd_weights(c)) return -1;
    if (c->own_bwd_weights) {
        if (c->d.has_bias && !diff_bias) return fail(-1, "%s: bias gradient missing", what);
        // A 2D convolution is a 3D one of depth 1 (same memory layout).
        cdnnl_conv_desc d3 = c->d;
        if (d3.spatial_rank == 2) {
            for (int i = 2; i > 0; i--) {
                d3.in_size[i] = d3.in_size[i - 1]; d3.out_size[i] = d3.out_size[i - 1]; d3.kernel[i] = d3.kernel[i - 1];
                d3.stride[i] = d3.stride[i - 1]; d3.pad_lo[i] = d3.pad_lo[i - 1]; d3.pad_hi[i] = d3.pad_hi[i - 1];
            }
            d3.in_size[0] = d3.out_size[0] = d3.kernel[0] = d3.stride[0] = 1;
            d3.pad_lo[0] = d3.pad_hi[0] = 0;
            d3.spatial_rank = 3;
        }
        if (cdnnl_bwd_weights_3d(&d3, cdnnl_max_threads(), src, diff_dst, diff_weight,
                                      c->d.has_bias ? diff_bias : NULL) != 0)
            return fail(-1, "%s: out of memory for accumulators", what);
        return 0;
    }
    dnnl_memory_t ms, mdd, mdw;
    port *const wp[] = {&c->w_src, &c->w_ddst, &c->w_dw};
    if (ports_bind(wp, 3, what)) return -1;
    if (port_in(&c->w_src, src, &ms, what) || port_in(&c->w_ddst, diff_dst, &mdd, what) ||
        port_out_begin(&c->w_dw, diff_weight, &mdw, what)) return -1;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DIFF_DST, mdd}, {DNNL_ARG_DIFF_WEIGHTS, mdw}};
    int n = 3;
    if (c->d.has_bias) {
        if (!diff_bias) return fail(-1, "%s: bias gradient missing", what);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, c->w_db};
    }
    if (execute(c->bwd_weights, n, args, what)) return -1;
    if (port_out_end(&c->w_dw, what)) return -1;
    if (c->d.has_bias)
        for (int64_t i = 0; i < c->d.out_channels; i++) diff_bias[i] += c->db_buffer[i];
    return 0;
}

// ---- batch normalization ----

struct cdnnl_bnorm {
    int64_t channels;
    dnnl_primitive_t train, infer, bwd;
    dnnl_memory_t src, dst, scale, shift, mean, var, ddst, dsrc, dscale, dshift;
    float *dscale_buf, *dshift_buf;
};

void cdnnl_bnorm_destroy(cdnnl_bnorm *b) {
    if (!b) return;
    dnnl_primitive_t ps[] = {b->train, b->infer, b->bwd};
    for (int i = 0; i < 3; i++) if (ps[i]) dnnl_primitive_destroy(ps[i]);
    dnnl_memory_t ms[] = {b->src, b->dst, b->scale, b->shift, b->mean, b->var, b->ddst, b->dsrc, b->dscale, b->dshift};
    for (int i = 0; i < 10; i++) if (ms[i]) dnnl_memory_destroy(ms[i]);
    free(b->dscale_buf); free(b->dshift_buf);
    free(b);
}

int cdnnl_bnorm_create(cdnnl_bnorm **out, int spatial_rank, int64_t n, int64_t c,
                       const int64_t *spatial, int layout, float epsilon) {
    const char *what = "batch normalization";
    if (cdnnl_init() != 0) return -1;
    dnnl_memory_desc_t data, chan;
    if (act_md(&data, spatial_rank, n, c, spatial, layout) != 0) return -1;
    dnnl_dims_t cd = {c};
    CHECK(dnnl_memory_desc_init_by_tag(&chan, 1, cd, dnnl_f32, dnnl_x), what);
    cdnnl_bnorm *b = calloc(1, sizeof *b);
    if (!b) return fail(-1, "out of memory");
    b->channels = c;
    unsigned flags = dnnl_use_scale | dnnl_use_shift;
    dnnl_batch_normalization_desc_t dt, di, db;
    dnnl_primitive_desc_t pt = NULL, pi = NULL, pb = NULL;
    int rc = 0;
    if (dnnl_batch_normalization_forward_desc_init(&dt, dnnl_forward_training, &data, epsilon, flags) ||
        dnnl_batch_normalization_forward_desc_init(&di, dnnl_forward_inference, &data, epsilon, flags | dnnl_use_global_stats) ||
        dnnl_batch_normalization_backward_desc_init(&db, dnnl_backward, &data, &data, epsilon, flags) ||
        dnnl_primitive_desc_create(&pt, &dt, NULL, g_engine, NULL) ||
        dnnl_primitive_desc_create(&pi, &di, NULL, g_engine, NULL) ||
        dnnl_primitive_desc_create(&pb, &db, NULL, g_engine, pt))
        rc = fail(-1, "%s: creating primitives", what);
    if (rc == 0) rc = make_primitive(&b->train, pt, what);
    if (rc == 0) rc = make_primitive(&b->infer, pi, what);
    if (rc == 0) rc = make_primitive(&b->bwd, pb, what);
    if (pt) dnnl_primitive_desc_destroy(pt);
    if (pi) dnnl_primitive_desc_destroy(pi);
    if (pb) dnnl_primitive_desc_destroy(pb);
    b->dscale_buf = aligned_alloc(64, (size_t)((c * 4 + 63) / 64 * 64));
    b->dshift_buf = aligned_alloc(64, (size_t)((c * 4 + 63) / 64 * 64));
    if (rc == 0 && (!b->dscale_buf || !b->dshift_buf)) rc = fail(-1, "%s: out of memory", what);
    dnnl_memory_t *dm[] = {&b->src, &b->dst, &b->ddst, &b->dsrc};
    for (int i = 0; rc == 0 && i < 4; i++)
        if (dnnl_memory_create(dm[i], &data, g_engine, DNNL_MEMORY_NONE)) rc = fail(-1, "%s: memory", what);
    dnnl_memory_t *cm[] = {&b->scale, &b->shift, &b->mean, &b->var};
    for (int i = 0; rc == 0 && i < 4; i++)
        if (dnnl_memory_create(cm[i], &chan, g_engine, DNNL_MEMORY_NONE)) rc = fail(-1, "%s: memory", what);
    if (rc == 0 && (dnnl_memory_create(&b->dscale, &chan, g_engine, b->dscale_buf) ||
                    dnnl_memory_create(&b->dshift, &chan, g_engine, b->dshift_buf)))
        rc = fail(-1, "%s: memory", what);
    if (rc != 0) { cdnnl_bnorm_destroy(b); return -1; }
    *out = b;
    return 0;
}

#define SET(mem, ptr) CHECK(dnnl_memory_set_data_handle((mem), (void *)(ptr)), what)

int cdnnl_bnorm_forward_training(cdnnl_bnorm *b, const float *src, const float *scale,
                                 const float *shift, float *dst, float *mean, float *variance) {
    const char *what = "batch normalization forward (training)";
    SET(b->src, src); SET(b->scale, scale); SET(b->shift, shift); SET(b->dst, dst);
    SET(b->mean, mean); SET(b->var, variance);
    dnnl_exec_arg_t args[6] = {{DNNL_ARG_SRC, b->src}, {DNNL_ARG_SCALE, b->scale}, {DNNL_ARG_SHIFT, b->shift},
                               {DNNL_ARG_DST, b->dst}, {DNNL_ARG_MEAN, b->mean}, {DNNL_ARG_VARIANCE, b->var}};
    return execute(b->train, 6, args, what);
}

int cdnnl_bnorm_forward_inference(cdnnl_bnorm *b, const float *src, const float *scale,
                                  const float *shift, const float *mean, const float *variance,
                                  float *dst) {
    const char *what = "batch normalization forward (inference)";
    SET(b->src, src); SET(b->scale, scale); SET(b->shift, shift); SET(b->dst, dst);
    SET(b->mean, mean); SET(b->var, variance);
    dnnl_exec_arg_t args[6] = {{DNNL_ARG_SRC, b->src}, {DNNL_ARG_SCALE, b->scale}, {DNNL_ARG_SHIFT, b->shift},
                               {DNNL_ARG_DST, b->dst}, {DNNL_ARG_MEAN, b->mean}, {DNNL_ARG_VARIANCE, b->var}};
    return execute(b->infer, 6, args, what);
}

int cdnnl_bnorm_backward(cdnnl_bnorm *b, const float *src, const float *diff_dst,
                         const float *scale, const float *mean, const float *variance,
                         float *diff_src, float *diff_scale, float *diff_shift) {
    const char *what = "batch normalization backward";
    SET(b->src, src); SET(b->ddst, diff_dst); SET(b->scale, scale); SET(b->mean, mean);
    SET(b->var, variance); SET(b->dsrc, diff_src);
    // oneDNN 2.6 validates a SHIFT argument for use_shift even though backward never reads it.
    SET(b->shift, b->dshift_buf);
    dnnl_exec_arg_t args[9] = {{DNNL_ARG_SRC, b->src}, {DNNL_ARG_DIFF_DST, b->ddst}, {DNNL_ARG_SCALE, b->scale},
                               {DNNL_ARG_MEAN, b->mean}, {DNNL_ARG_VARIANCE, b->var}, {DNNL_ARG_DIFF_SRC, b->dsrc},
                               {DNNL_ARG_DIFF_SCALE, b->dscale}, {DNNL_ARG_DIFF_SHIFT, b->dshift},
                               {DNNL_ARG_SHIFT, b->shift}};
    if (execute(b->bwd, 9, args, what)) return -1;
    for (int64_t i = 0; i < b->channels; i++) {
        diff_scale[i] += b->dscale_buf[i];
        diff_shift[i] += b->dshift_buf[i];
    }
    return 0;
}

// ---- leaky ReLU ----

struct cdnnl_eltwise { dnnl_primitive_t fwd, bwd; dnnl_memory_t src, dst, ddst, dsrc; };

void cdnnl_eltwise_destroy(cdnnl_eltwise *e) {
    if (!e) return;
    if (e->fwd) dnnl_primitive_destroy(e->fwd);
    if (e->bwd) dnnl_primitive_destroy(e->bwd);
    dnnl_memory_t ms[] = {e->src, e->dst, e->ddst, e->dsrc};
    for (int i = 0; i < 4; i++) if (ms[i]) dnnl_memory_destroy(ms[i]);
    free(e);
}

int cdnnl_leaky_relu_create(cdnnl_eltwise **out, int64_t count, float slope) {
    const char *what = "leaky ReLU";
    if (cdnnl_init() != 0) return -1;
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {count};
    CHECK(dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_f32, dnnl_x), what);
    cdnnl_eltwise *e = calloc(1, sizeof *e);
    if (!e) return fail(-1, "out of memory");
    dnnl_eltwise_desc_t fd, bd;
    dnnl_primitive_desc_t fp = NULL, bp = NULL;
    int rc = 0;
    if (dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_relu, &md, slope, 0) ||
        dnnl_eltwise_backward_desc_init(&bd, dnnl_eltwise_relu, &md, &md, slope, 0) ||
        dnnl_primitive_desc_create(&fp, &fd, NULL, g_engine, NULL) ||
        dnnl_primitive_desc_create(&bp, &bd, NULL, g_engine, fp))
        rc = fail(-1, "%s: creating primitives", what);
    if (rc == 0) rc = make_primitive(&e->fwd, fp, what);
    if (rc == 0) rc = make_primitive(&e->bwd, bp, what);
    if (fp) dnnl_primitive_desc_destroy(fp);
    if (bp) dnnl_primitive_desc_destroy(bp);
    dnnl_memory_t *ms[] = {&e->src, &e->dst, &e->ddst, &e->dsrc};
    for (int i = 0; rc == 0 && i < 4; i++)
        if (dnnl_memory_create(ms[i], &md, g_engine, DNNL_MEMORY_NONE)) rc = fail(-1, "%s: memory", what);
    if (rc != 0) { cdnnl_eltwise_destroy(e); return -1; }
    *out = e;
    return 0;
}

int cdnnl_eltwise_forward(cdnnl_eltwise *e, const float *src, float *dst) {
    const char *what = "leaky ReLU forward";
    SET(e->src, src); SET(e->dst, dst);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_DST, e->dst}};
    return execute(e->fwd, 2, args, what);
}

int cdnnl_eltwise_backward(cdnnl_eltwise *e, const float *src, const float *diff_dst, float *diff_src) {
    const char *what = "leaky ReLU backward";
    SET(e->src, src); SET(e->ddst, diff_dst); SET(e->dsrc, diff_src);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->src}, {DNNL_ARG_DIFF_DST, e->ddst}, {DNNL_ARG_DIFF_SRC, e->dsrc}};
    return execute(e->bwd, 3, args, what);
}

// ---- GEMM ----

int cdnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                float *c, int64_t ldc) {
    CHECK(dnnl_sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), "sgemm");
    return 0;
}
