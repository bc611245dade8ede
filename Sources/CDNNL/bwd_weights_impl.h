// Backward-weights of a 3D convolution on blocked activations (nCdhw8c with AVX2, nCdhw16c with
// AVX-512; 2D convolutions run through it as 3D ones of depth 1: nChwXc is nCdhwXc with D = 1).
//
// Why this exists: oneDNN 2.6 has no direct (jit) 3D backward-weights kernel below AVX-512 and
// falls back to im2col + GEMM, which reaches about a third of the machine's peak. Here the
// accumulators of a small tile of the gradient live in registers while a row of positions streams
// through. Rows of stride 1 padded by 1 (every 3x3 stride-1 layer of the UNets) take all three kw
// taps at once (row_kw3_4xv: 5 loads per 12 FMAs); other geometries a 4 (input channel) x 2VW
// (output channel) tile per tap (tile_4x2v: 6 loads per 8 FMAs). Measured on the 3D 32- to
// 256-channel layers: the three-tap row 1.3-1.45x the per-tap tile, and steadier between minutes
// of this shared VM (133-138 GFLOP/s at 32 channels and 64^3 where the tile read 94-134).
//
// Layouts: x (N, ICp/VW, ID, IH, IW, VW), dy (N, OCp/VW, OD, OH, OW, VW), channel padding zero.
// The result is ADDED into dw, plain (OC, IC, KD, KH, KW).
// Written once over the vector width VW (8: AVX2 on nCdhw8c, 16: AVX-512 on nCdhw16c); included
// by bwd_weights_avx2.c and bwd_weights_avx512.c (see simd.h).

typedef struct {
    const cdnnl_conv_desc *d;
    const float *x, *dy;
    float *acc;          // private accumulator: [KD][KH][KW][ICp][OCp]
    int64_t begin, end;  // range of (sample, output depth) pairs, flattened as n * OD + od
} job;

static inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/// A 4 (input channel) x 2 VW (output channel) tile of one tap: 8 accumulators over `count` positions.
/// a points at acc[..][i0][o0]; rows of the accumulator are OCp floats apart.
static void tile_4x2v(float *restrict a, int64_t ocp, const float *restrict xp, const float *restrict dy0,
                      const float *restrict dy1, int64_t count, int64_t xstep) {
    vf c0[4], c1[4];
    for (int r = 0; r < 4; r++) { c0[r] = LD(a + r * ocp); c1[r] = LD(a + r * ocp + VW); }
    for (int64_t w = 0; w < count; w++, xp += xstep) {
        const vf d0 = LD(dy0 + w * VW), d1 = LD(dy1 + w * VW);
#pragma clang loop unroll(full)
        for (int r = 0; r < 4; r++) {
            const vf b = SPLAT(xp[r]);
            c0[r] += b * d0;
            c1[r] += b * d1;
        }
    }
    for (int r = 0; r < 4; r++) { ST(a + r * ocp, c0[r]); ST(a + r * ocp + VW, c1[r]); }
}

/// The same with one vector of output channels (the last, odd block).
static void tile_4x1v(float *restrict a, int64_t ocp, const float *restrict xp, const float *restrict dy0,
                      int64_t count, int64_t xstep) {
    vf c0[4];
    for (int r = 0; r < 4; r++) c0[r] = LD(a + r * ocp);
    for (int64_t w = 0; w < count; w++, xp += xstep) {
        const vf d0 = LD(dy0 + w * VW);
#pragma clang loop unroll(full)
        for (int r = 0; r < 4; r++) c0[r] += SPLAT(xp[r]) * d0;
    }
    for (int r = 0; r < 4; r++) ST(a + r * ocp, c0[r]);
}

/// The three kw taps of one row at once, for stride-1 rows padded by 1 on both sides (OW == IW):
/// input column iw meets dY columns iw + 1 (kw 0), iw (kw 1) and iw - 1 (kw 2), so one broadcast of x
/// feeds three FMAs and each dY vector, loaded once, serves three columns from registers. 4 input
/// x VW output channels x 3 taps = 12 accumulators; per column 4 broadcasts + 1 load for 12 FMAs
/// (the 4 x 2VW tile needs 6 loads for 8).
/// a points at acc[kd][kh][0][i0][o0]; taps are kstride floats apart, rows ocp.
// noinline: the sixteen vector registers are this loop's alone (12 accumulators, 3 dY, 1 broadcast).
__attribute__((noinline))
static void row_kw3_4xv(float *restrict a, int64_t ocp, int64_t kstride, const float *restrict x,
                        const float *restrict dy, int64_t width) {
    vf c[3][4];
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 4; r++) c[k][r] = LD(a + k * kstride + r * ocp);
    // dY at columns iw - 1, iw, iw + 1 (zero outside the row) rotate through three registers, three
    // columns per round so no register moves; the last columns take the loop with the bounds test.
#define COLUMN(iw, DM, D0, DP)                  \
    for (int r = 0; r < 4; r++) {               \
        const vf b = SPLAT(x[(iw) * VW + r]);   \
        c[0][r] += b * DP;                      \
        c[1][r] += b * D0;                      \
        c[2][r] += b * DM;                      \
    }
    vf ra = (vf){0}, rb = LD(dy), rc;
    int64_t iw = 0;
    for (; iw + 3 < width; iw += 3) {
        rc = LD(dy + (iw + 1) * VW);
        COLUMN(iw, ra, rb, rc)
        ra = LD(dy + (iw + 2) * VW);
        COLUMN(iw + 1, rb, rc, ra)
        rb = LD(dy + (iw + 3) * VW);
        COLUMN(iw + 2, rc, ra, rb)
    }
    for (; iw < width; iw++) {
        rc = iw + 1 < width ? LD(dy + (iw + 1) * VW) : (vf){0};
        COLUMN(iw, ra, rb, rc)
        ra = rb;
        rb = rc;
    }
#undef COLUMN
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 4; r++) ST(a + k * kstride + r * ocp, c[k][r]);
}

/// The job through row_kw3_4xv (W: kernel 3, stride 1, padding 1 both sides, so OW == IW).
static void run_rows_kw3(job *j) {
    const cdnnl_conv_desc *d = j->d;
    const int64_t ID = d->in_size[0], IH = d->in_size[1], IW = d->in_size[2];
    const int64_t OD = d->out_size[0], OH = d->out_size[1], OW = d->out_size[2];
    const int64_t KD = d->kernel[0], KH = d->kernel[1], KW = d->kernel[2];
    const int64_t SD = d->stride[0], SH = d->stride[1], PD = d->pad_lo[0], PH = d->pad_lo[1];
    const int64_t IC = d->in_channels, ICB = (IC + VW - 1) / VW, OCB = (d->out_channels + VW - 1) / VW;
    const int64_t ICp = ICB * VW, OCp = OCB * VW;
    // Output blocks outermost: one dY row block stays in L1 while the x row passes by it (x row,
    // dY row and the (kd, kh) slice of the accumulator together overflowed the 32 KB L1).
    for (int64_t u = j->begin; u < j->end; u++)
    for (int64_t oh = 0; oh < OH; oh++)
    for (int64_t kd = 0; kd < KD; kd++) {
        const int64_t n = u / OD, od = u % OD, id = od * SD - PD + kd;
        if (id < 0 || id >= ID) continue;
        for (int64_t kh = 0; kh < KH; kh++) {
            const int64_t ih = oh * SH - PH + kh;
            if (ih < 0 || ih >= IH) continue;
            float *acc_k = j->acc + (kd * KH + kh) * KW * ICp * OCp;
            for (int64_t ob = 0; ob < OCB; ob++) {
                const float *dyrow = j->dy + (((n * OCB + ob) * OD + od) * OH + oh) * OW * VW;
                for (int64_t ib = 0; ib < ICB; ib++) {
                    const float *xrow = j->x + (((n * ICB + ib) * ID + id) * IH + ih) * IW * VW;
                    for (int64_t iq = 0; iq < VW / 4 && ib * VW + iq * 4 < IC; iq++)
                        row_kw3_4xv(acc_k + (ib * VW + iq * 4) * OCp + ob * VW, OCp, ICp * OCp, xrow + iq * 4,
                                    dyrow, IW);
                }
            }
        }
    }
}

static void run_job(job *j) {
    const cdnnl_conv_desc *d = j->d;
    const int64_t ID = d->in_size[0], IH = d->in_size[1], IW = d->in_size[2];
    const int64_t OD = d->out_size[0], OH = d->out_size[1], OW = d->out_size[2];
    const int64_t KD = d->kernel[0], KH = d->kernel[1], KW = d->kernel[2];
    const int64_t SD = d->stride[0], SH = d->stride[1], SW = d->stride[2];
    const int64_t PD = d->pad_lo[0], PH = d->pad_lo[1], PW = d->pad_lo[2];
    const int64_t ICB = (d->in_channels + VW - 1) / VW, OCB = (d->out_channels + VW - 1) / VW;
    const int64_t ICp = ICB * VW, OCp = OCB * VW;
    const int64_t xstep = SW * VW;
    if (KW == 3 && SW == 1 && PW == 1 && d->pad_hi[2] == 1) { run_rows_kw3(j); return; }
    for (int64_t u = j->begin; u < j->end; u++)
    for (int64_t oh = 0; oh < OH; oh++)
    for (int64_t kd = 0; kd < KD; kd++) {
        const int64_t n = u / OD, od = u % OD;
        int64_t id = od * SD - PD + kd;
        if (id < 0 || id >= ID) continue;
        for (int64_t kh = 0; kh < KH; kh++) {
            int64_t ih = oh * SH - PH + kh;
            if (ih < 0 || ih >= IH) continue;
            for (int64_t kw = 0; kw < KW; kw++) {
                // Output columns whose input column iw = ow*SW - PW + kw lies inside the image.
                int64_t lo = ceil_div(PW - kw, SW); if (lo < 0) lo = 0;
                int64_t hi = (IW - 1 + PW - kw) / SW + 1; if (hi > OW) hi = OW;
                if (IW - 1 + PW - kw < 0 || lo >= hi) continue;
                float *acc_k = j->acc + ((kd * KH + kh) * KW + kw) * ICp * OCp;
                for (int64_t ib = 0; ib < ICB; ib++) {
                    // Input column of output column lo: lo*SW - PW + kw (>= 0 by the choice of lo).
                    const float *xrow = j->x + ((((n * ICB + ib) * ID + id) * IH + ih) * IW + lo * SW - PW + kw) * VW;
                    for (int64_t iq = 0; iq < VW / 4; iq++) {
                        if (ib * VW + iq * 4 >= d->in_channels) break;
                        float *a_i = acc_k + (ib * VW + iq * 4) * OCp;
                        int64_t ob = 0;
                        for (; ob + 1 < OCB; ob += 2) {
                            const float *dy0 = j->dy + ((((n * OCB + ob) * OD + od) * OH + oh) * OW + lo) * VW;
                            const float *dy1 = dy0 + OD * OH * OW * VW;
                            tile_4x2v(a_i + ob * VW, OCp, xrow + iq * 4, dy0, dy1, hi - lo, xstep);
                        }
                        if (ob < OCB) {
                            const float *dy0 = j->dy + ((((n * OCB + ob) * OD + od) * OH + oh) * OW + lo) * VW;
                            tile_4x1v(a_i + ob * VW, OCp, xrow + iq * 4, dy0, hi - lo, xstep);
                        }
                    }
                }
            }
        }
    }
}

/// Part [begin, end) of the job array (one job per thread).
static void run_jobs(void *arg, int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) run_job((job *)arg + t);
}

int SFX(cdnnl_bwd_weights_3d)(const cdnnl_conv_desc *d, int threads, const float *x, const float *dy,
                               float *dw, float *db) {
    const int64_t ICp = (d->in_channels + VW - 1) / VW * VW, OCp = (d->out_channels + VW - 1) / VW * VW;
    const int64_t K = d->kernel[0] * d->kernel[1] * d->kernel[2];
    const int64_t units = d->batch * d->out_size[0];
    if (threads < 1) threads = 1;
    if (threads > units) threads = (int)units;
    if (threads > 64) threads = 64;
    const size_t acc_floats = (size_t)(K * ICp * OCp);
    int rc = 0;
    job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){d, x, dy, aligned_alloc(64, (acc_floats * sizeof(float) + 63) / 64 * 64),
                        units * t / threads, units * (t + 1) / threads};
        if (!jobs[t].acc) { rc = -1; continue; }
        memset(jobs[t].acc, 0, acc_floats * sizeof(float));
    }
    if (rc == 0) {
        cdnnl_parallel(threads, threads, run_jobs, jobs);
        // Sum the private accumulators and add into the plain (O, I, k...) gradient.
        const int64_t IC = d->in_channels, OC = d->out_channels;
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < IC; i++)
                for (int64_t o = 0; o < OC; o++) {
                    float s = 0;
                    for (int t = 0; t < threads; t++) s += jobs[t].acc[(k * ICp + i) * OCp + o];
                    dw[(o * IC + i) * K + k] += s;
                }
    }
    if (rc == 0 && db) {
        const int64_t OCB = OCp / VW, P = d->out_size[0] * d->out_size[1] * d->out_size[2];
        for (int64_t n = 0; n < d->batch; n++)
            for (int64_t o = 0; o < d->out_channels; o++) {
                const float *p = dy + ((n * OCB + o / VW) * P) * VW + o % VW;
                double s = 0;
                for (int64_t q = 0; q < P; q++) s += p[q * VW];
                db[o] += (float)s;
            }
    }
    for (int t = 0; t < threads; t++) free(jobs[t].acc);
    return rc;
}
