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

// ---- arithmetic peaks: independent chains in registers, one per thread ----
// The loops are assembly so that they stay register-only at any optimisation level (debug builds compile C
// at -O0, which would put every chain through memory and time latency instead of throughput). Ten
// independent accumulators cover the latency on both pipes; every register starts at zero (vzeroall), which
// the units run at full rate. Each thread runs `iters` (>= 1) rounds of 10 instructions.

#define ACC(op, r, k) op " %%" r "10, %%" r "11, %%" r #k "\n\t"
#define ACC10(op, r) \
    ACC(op, r, 0) ACC(op, r, 1) ACC(op, r, 2) ACC(op, r, 3) ACC(op, r, 4) ACC(op, r, 5) ACC(op, r, 6) ACC(op, r, 7) ACC(op, r, 8) ACC(op, r, 9)
// vzeroall clears registers 0-15 whole, so all sixteen are clobbered.
#define CLOBBER16(r) r "0", r "1", r "2", r "3", r "4", r "5", r "6", r "7", r "8", r "9", r "10", r "11", r "12", r "13", r "14", r "15"
#define PEAK_LOOP(name, isa, op, r)                                                                   \
    __attribute__((target(isa))) static void name(void *arg, int64_t begin, int64_t end) {            \
        int64_t n = *(const int64_t *)arg;                                                             \
        __asm__ volatile("vzeroall\n\t1:\n\t" ACC10(op, r) "dec %0\n\tjnz 1b\n\tvzeroupper\n\t"         \
                         : "+r"(n) : : CLOBBER16(r), "cc");                                            \
        (void)begin; (void)end;                                                                        \
    }
PEAK_LOOP(fma_loop_avx2, "avx2,fma", "vfmadd231ps", "ymm")
PEAK_LOOP(fma_loop_avx512, "avx512f,avx2,fma", "vfmadd231ps", "zmm")
// bf16 dot products (vdpbf16ps: 32 bf16 pairs into 16 f32 sums, 64 flops). Some CPUs run them at twice the
// FMA's flop rate (AMD Zen 4), others at half of it (Intel Xeons that issue them on one port): that decides
// whether bf16 kernels can pay at all.
PEAK_LOOP(bf16_dot_loop, "avx512f,avx512bw,avx512bf16", "vdpbf16ps", "zmm")

int64_t cdnnl_fma_peak_flops(int threads, int64_t iters) {
    if (!cdnnl_avx2_available() || iters < 1) return 0;
    // The width the native layout's kernels use: 16 on AVX-512 (blocked16), 8 otherwise.
    const int wide = cdnnl_preferred_block() == 16 && cdnnl_avx512_available();
    cdnnl_parallel(threads, threads, wide ? fma_loop_avx512 : fma_loop_avx2, &iters);
    return (int64_t)threads * iters * 10 * (wide ? 16 : 8) * 2;
}

int64_t cdnnl_bf16_dot_peak_flops(int threads, int64_t iters) {
    if (!cdnnl_avx512_bf16_available() || iters < 1) return 0;
    cdnnl_parallel(threads, threads, bf16_dot_loop, &iters);
    return (int64_t)threads * iters * 10 * 64;
}
