// Threading for SwiftUNet's own kernels, and the FMA throughput probe.
#define _GNU_SOURCE
#include "kernels.h"

#include <dlfcn.h>
#include <pthread.h>

typedef struct { void (*fn)(void *, int64_t, int64_t); void *ctx; int64_t begin, end, count; } part;

static void *run_part(void *arg) {
    part *p = arg;
    p->fn(p->ctx, p->begin, p->end);
    return NULL;
}

// Our kernels run on oneDNN's own OpenMP pool (libgomp, reached through dlsym like the thread
// count): separate pthreads would compete with OpenMP workers still spinning after a oneDNN call.
typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
static gomp_parallel_t g_gomp_parallel;
static int (*g_thread_num)(void);
static int (*g_num_threads)(void);
static pthread_once_t g_gomp_once = PTHREAD_ONCE_INIT;

static void find_gomp(void) {
    g_gomp_parallel = (gomp_parallel_t)dlsym(RTLD_DEFAULT, "GOMP_parallel");
    g_thread_num = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_thread_num");
    g_num_threads = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_num_threads");
}

static void gomp_body(void *arg) {
    part *p = arg;
    const int64_t t = g_thread_num(), n = g_num_threads();
    const int64_t begin = p->count * t / n, end = p->count * (t + 1) / n;
    if (end > begin) p->fn(p->ctx, begin, end);
}

void cdnnl_parallel(int threads, int64_t count, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (threads > 64) threads = 64;
    if (threads > count) threads = (int)count;
    if (threads <= 1) { if (count > 0) fn(ctx, 0, count); return; }
    pthread_once(&g_gomp_once, find_gomp);
    if (g_gomp_parallel && g_thread_num && g_num_threads) {
        part p = {fn, ctx, 0, 0, count};
        g_gomp_parallel(gomp_body, &p, (unsigned)threads, 0);
        return;
    }
    part parts[64];
    pthread_t tids[64];
    int started[64] = {0};
    for (int t = 0; t < threads; t++) parts[t] = (part){fn, ctx, count * t / threads, count * (t + 1) / threads, count};
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&tids[t], NULL, run_part, &parts[t]) == 0;
    run_part(&parts[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else run_part(&parts[t]);
    }
}

void cdnnl_parallel_for(int64_t count, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    cdnnl_parallel(cdnnl_max_threads(), count, fn, ctx);
}

// ---- arithmetic peak: independent FMA chains in registers, one per thread ----

typedef struct { int64_t iters; volatile float sink[64]; } fma_ctx;

// 10 chains: enough independent FMAs in flight to cover the FMA latency on both pipes.
#define FMA_LOOP(name, isa, width)                                                   \
    __attribute__((target(isa))) static void name(void *arg, int64_t begin, int64_t end) { \
        typedef float v __attribute__((vector_size(width * 4)));                        \
        fma_ctx *c = arg;                                                                \
        v a[10];                                                                         \
        const v m = (v){0} + 0.999999f, b = (v){0} + 1e-7f;                              \
        for (int i = 0; i < 10; i++) a[i] = (v){0} + (float)(i + begin);                 \
        for (int64_t t = 0; t < c->iters; t++)                                           \
            for (int i = 0; i < 10; i++) a[i] = a[i] * m + b;                            \
        v s = a[0];                                                                      \
        for (int i = 1; i < 10; i++) s += a[i];                                          \
        c->sink[begin & 63] = s[0]; /* keeps the loop alive; the value is irrelevant */ \
        (void)end;                                                                       \
    }
FMA_LOOP(fma_loop_avx2, "avx2,fma", 8)
FMA_LOOP(fma_loop_avx512, "avx512f,avx2,fma", 16)

int64_t cdnnl_fma_peak_flops(int threads, int64_t iters) {
    if (!cdnnl_avx2_available()) return 0;
    // The width the native layout's kernels use: 16 on AVX-512 (blocked16), 8 otherwise.
    const int wide = cdnnl_preferred_block() == 16 && cdnnl_avx512_available();
    static fma_ctx ctx;
    ctx.iters = iters;
    cdnnl_parallel(threads, threads, wide ? fma_loop_avx512 : fma_loop_avx2, &ctx);
    return (int64_t)threads * iters * 10 * (wide ? 16 : 8) * 2;
}
