// Winograd convolution for the UNet's 3x3 (3x3x3) stride-1 padding-1 convolutions on blocked8
// activations: forward and backward data (the latter is the same convolution of dY with the
// kernel flipped and its channel axes swapped).
//
// Why: on AVX2 the direct kernels are already near the FMA peak, so the remaining speed comes from
// doing fewer multiplications. F(4x4, 3x3) in 2D computes a 4x4 output tile with 36 products per
// channel pair instead of 144 (4x fewer), F(6x6, 3x3) a 6x6 tile with 64 instead of 324 (5.1x); in 3D F(2x2x2, 3x3x3) uses 64 instead of 216 (3.4x) and
// F(4x4x4, 3x3x3) 216 instead of 1728 (8x; its transformed tiles are 3.4x the outputs, not 8x, so it
// also moves less memory; cdnnl_winograd_tile picks per layer).
// The transforms (Lavin & Gray, interpolation points 0, +-1, +-2) are applied one axis at a time:
//   V = B^T d B (input tile), U = G g G^T (kernel), Y = A^T (sum over input channels of U V) A.
// The sum over input channels is a GEMM per transform position:
//   M[p] (tiles x CO) = V[p] (tiles x CI) * U[p] (CI x CO),
// run over chunks of tiles small enough to stay in cache. Backward weights runs the same
// transforms backwards: dU[p] = sum over tiles of V[p]^T (A dY A^T)[p], dW += G^T dU G.
//
// Layouts: src (N, CI/VW, D, H, W, VW) and dst (N, CO/VW, D, H, W, VW) (2D: D = 1): blocked8 with
// AVX2 (VW 8), blocked16 with AVX-512 (VW 16); weights plain (O, I, 3, 3[, 3]) as PyTorch stores
// them. Channel counts are multiples of VW.
//
// Written once over the vector width: included by winograd_avx2.c and winograd_avx512.c, each of
// which sets VW and the target ISA (see simd.h).

/// GEMM column panels hold two vectors of output channels.
#define PW (2 * VW)

// 1D transforms for the generic axis-by-axis path (kernels and backward weights): G (3 -> alpha) for
// alpha 4 (m 2), 6 (m 4) and 8 (m 6), G^T (alpha -> 3) for alpha 4 and 6. The input, output and
// output-gradient tiles have hand-scheduled versions below.
enum { T_G4, T_G6, T_G8, T_GT4, T_GT6 };

static inline void line(int kind, const vf *x, int64_t si, vf *y, int64_t so) {
    switch (kind) {
    case T_G4: {
        const vf g0 = x[0], g1 = x[si], g2 = x[2 * si];
        y[0] = g0; y[so] = 0.5f * (g0 + g1 + g2); y[2 * so] = 0.5f * (g0 - g1 + g2); y[3 * so] = g2;
        break;
    }
    case T_GT4: {
        const vf u0 = x[0], u1 = x[si], u2 = x[2 * si], u3 = x[3 * si];
        y[0] = u0 + 0.5f * (u1 + u2); y[so] = 0.5f * (u1 - u2); y[2 * so] = 0.5f * (u1 + u2) + u3;
        break;
    }
    case T_GT6: {
        const vf u0 = x[0], u1 = x[si], u2 = x[2 * si], u3 = x[3 * si], u4 = x[4 * si], u5 = x[5 * si];
        const vf s12 = u1 + u2, s34 = u3 + u4;
        y[0] = 0.25f * u0 - (1.0f / 6.0f) * s12 + (1.0f / 24.0f) * s34;
        y[so] = (1.0f / 6.0f) * (u2 - u1) + (1.0f / 12.0f) * (u3 - u4);
        y[2 * so] = (-1.0f / 6.0f) * s12 + (1.0f / 6.0f) * s34 + u5;
        break;
    }
    // alpha 8 (2D F(6x6, 3x3)): interpolation points 0, +-1, +-2, +-1/2 and infinity.
    case T_G8: {
        const vf g0 = x[0], g1 = x[si], g2 = x[2 * si];
        const vf e = g0 + g2, p = (1.0f / 90.0f) * g0 + (2.0f / 45.0f) * g2, q = (32.0f / 45.0f) * g0 + (8.0f / 45.0f) * g2;
        y[0] = g0;
        y[so] = (-2.0f / 9.0f) * (e + g1); y[2 * so] = (-2.0f / 9.0f) * (e - g1);
        y[3 * so] = p + (1.0f / 45.0f) * g1; y[4 * so] = p - (1.0f / 45.0f) * g1;
        y[5 * so] = q + (16.0f / 45.0f) * g1; y[6 * so] = q - (16.0f / 45.0f) * g1;
        y[7 * so] = g2;
        break;
    }
    case T_G6: {
        const vf g0 = x[0], g1 = x[si], g2 = x[2 * si];
        y[0] = 0.25f * g0;
        y[so] = (-1.0f / 6.0f) * (g0 + g1 + g2); y[2 * so] = (-1.0f / 6.0f) * (g0 - g1 + g2);
        const vf s = (1.0f / 24.0f) * g0 + (1.0f / 6.0f) * g2, t = (1.0f / 12.0f) * g1;
        y[3 * so] = s + t; y[4 * so] = s - t;
        y[5 * so] = g2;
        break;
    }
    }
}

/// Transforms axis `ax` of `in` (sizes s0 x s1 x s2, contiguous z-y-x) into `out`, whose size on that
/// axis is n_out. Always inlined into the fixed-size tile transforms below, where it folds to
/// straight-line code.
static inline __attribute__((always_inline)) void axis(const vf *in, vf *out, int s0, int s1, int s2,
                                                       int ax, int kind, int n_out) {
    const int o1 = ax == 1 ? n_out : s1, o2 = ax == 2 ? n_out : s2;
    const int64_t si = ax == 2 ? 1 : ax == 1 ? s2 : s1 * s2;
    const int64_t so = ax == 2 ? 1 : ax == 1 ? o2 : o1 * o2;
    const int nz = ax == 0 ? 1 : s0, ny = ax == 1 ? 1 : s1, nx = ax == 2 ? 1 : s2;
    for (int z = 0; z < nz; z++)
        for (int y = 0; y < ny; y++)
            for (int x = 0; x < nx; x++)
                line(kind, in + (z * s1 + y) * s2 + x, si, out + (z * o1 + y) * o2 + x, so);
}

// Whole-tile transforms; each takes its input in a and returns a pointer to its result (a or b).
static vf *g_2d(vf *a, vf *b) { axis(a, b, 1, 3, 3, 2, T_G6, 6); axis(b, a, 1, 3, 6, 1, T_G6, 6); return a; }
static vf *g_2d8(vf *a, vf *b) { axis(a, b, 1, 3, 3, 2, T_G8, 8); axis(b, a, 1, 3, 8, 1, T_G8, 8); return a; }
static vf *g_3d(vf *a, vf *b) {
    axis(a, b, 3, 3, 3, 2, T_G4, 4); axis(b, a, 3, 3, 4, 1, T_G4, 4); axis(a, b, 3, 4, 4, 0, T_G4, 4); return b;
}
static vf *g_3d6(vf *a, vf *b) {
    axis(a, b, 3, 3, 3, 2, T_G6, 6); axis(b, a, 3, 3, 6, 1, T_G6, 6); axis(a, b, 3, 6, 6, 0, T_G6, 6); return b;
}

static vf *gt_2d(vf *a, vf *b) { axis(a, b, 1, 6, 6, 2, T_GT6, 3); axis(b, a, 1, 6, 3, 1, T_GT6, 3); return a; }
static vf *gt_3d(vf *a, vf *b) {
    axis(a, b, 4, 4, 4, 2, T_GT4, 3); axis(b, a, 4, 4, 3, 1, T_GT4, 3); axis(a, b, 4, 3, 3, 0, T_GT4, 3); return b;
}
static vf *gt_3d6(vf *a, vf *b) {
    axis(a, b, 6, 6, 6, 2, T_GT6, 3); axis(b, a, 6, 6, 3, 1, T_GT6, 3); axis(a, b, 6, 3, 3, 0, T_GT6, 3); return b;
}

#define ALWAYS static inline __attribute__((always_inline))
ALWAYS void bt6(vf x0, vf x1, vf x2, vf x3, vf x4, vf x5, vf *y, int64_t s) {
    const vf a = x4 - 4.0f * x2, b = x3 - 4.0f * x1, c = x4 - x2, e = x3 - x1;
    y[0] = 4.0f * x0 - 5.0f * x2 + x4;
    y[s] = a + b; y[2 * s] = a - b;
    y[3 * s] = c + 2.0f * e; y[4 * s] = c - 2.0f * e;
    y[5 * s] = 4.0f * x1 - 5.0f * x3 + x5;
}

ALWAYS void at6(vf x0, vf x1, vf x2, vf x3, vf x4, vf x5, vf *y) {
    const vf s12 = x1 + x2, d12 = x1 - x2, s34 = x3 + x4, d34 = x3 - x4;
    y[0] = x0 + s12 + s34; y[1] = d12 + 2.0f * d34;
    y[2] = s12 + 4.0f * s34; y[3] = d12 + 8.0f * d34 + x5;
}

/// 2D output tile: 36 vectors `ps` floats apart -> y[16] (4 x 4, row-major).
static void output_tile_2d(const float *in, int64_t ps, vf *y) {
    vf t[24];  // [6 rows][4 columns]
#pragma clang loop unroll(full)
    for (int r = 0; r < 6; r++) {
        const float *x = in + r * 6 * ps;
        at6(LD(x), LD(x + ps), LD(x + 2 * ps), LD(x + 3 * ps), LD(x + 4 * ps), LD(x + 5 * ps), t + r * 4);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 4; c++) {
        vf o[4];
        at6(t[c], t[4 + c], t[8 + c], t[12 + c], t[16 + c], t[20 + c], o);
        y[c] = o[0]; y[4 + c] = o[1]; y[8 + c] = o[2]; y[12 + c] = o[3];
    }
}

/// B^T of F(6x6) along one axis (8 pixels -> 8 positions).
ALWAYS void bt8(vf x0, vf x1, vf x2, vf x3, vf x4, vf x5, vf x6, vf x7, vf *y) {
    const vf a = x2 + x6 - 4.25f * x4, b = x1 + x5 - 4.25f * x3;
    const vf c = 0.25f * x2 - 1.25f * x4 + x6, d = 0.5f * x1 - 2.5f * x3 + 2.0f * x5;
    const vf e = 4.0f * x2 - 5.0f * x4 + x6, f = 2.0f * x1 - 2.5f * x3 + 0.5f * x5;
    y[0] = x0 - x6 + 5.25f * (x4 - x2);
    y[1] = a + b; y[2] = a - b; y[3] = c + d; y[4] = c - d; y[5] = e + f; y[6] = e - f;
    y[7] = x7 - x1 + 5.25f * (x3 - x5);
}

/// B^T along one axis for alpha 6 (F(4x4)) or 8 (F(6x6)): x[k * xs] -> y[k].
ALWAYS void bt_line(int a, const vf *x, int64_t xs, vf *y) {
    if (a == 6) bt6(x[0], x[xs], x[2 * xs], x[3 * xs], x[4 * xs], x[5 * xs], y, 1);
    else bt8(x[0], x[xs], x[2 * xs], x[3 * xs], x[4 * xs], x[5 * xs], x[6 * xs], x[7 * xs], y);
}

/// The same on the pixel column at `p` (rows `rs` floats apart).
ALWAYS void bt_column(int a, const float *p, int64_t rs, vf *y) {
    vf x[8];
#pragma clang loop unroll(full)
    for (int k = 0; k < a; k++) x[k] = LD(p + k * rs);
    bt_line(a, x, 1, y);
}

/// A run of `count` horizontally adjacent inner 2D tiles of alpha `a` (6: F(4x4), 8: F(6x6)), the first at
/// `in` (rows `rs` floats apart), tile k stored from out + k ts (positions p = a iy + ix, `ps` floats apart).
/// Transforming along y first, per pixel column, lets each tile reuse the two columns it shares with the
/// one before: F(4x4) transforms 10 lines per tile instead of 12, F(6x6) 14 instead of 16. Edge tiles come
/// as a gathered copy with count 1.
ALWAYS void input_run_2d(int a, const float *in, int64_t rs, int64_t count, float *out, int64_t ts, int64_t ps) {
    const int m = a - 2;
    vf c[64];  // [column][iy]
#pragma clang loop unroll(full)
    for (int dx = 0; dx < a; dx++) bt_column(a, in + dx * VW, rs, c + dx * a);
    for (int64_t k = 0;;) {
#pragma clang loop unroll(full)
        for (int iy = 0; iy < a; iy++) {
            vf y[8];
            bt_line(a, c + iy, a, y);
#pragma clang loop unroll(full)
            for (int ix = 0; ix < a; ix++) ST(out + (iy * a + ix) * ps, y[ix]);
        }
        if (++k == count) break;
        in += m * VW;
        out += ts;
        for (int i = 0; i < 2 * a; i++) c[i] = c[m * a + i];
        for (int dx = 2; dx < a; dx++) bt_column(a, in + dx * VW, rs, c + dx * a);
    }
}

/// A^T of F(6x6) along one axis (8 positions -> 6 outputs).
ALWAYS void at8(vf x0, vf x1, vf x2, vf x3, vf x4, vf x5, vf x6, vf x7, vf *y) {
    const vf s12 = x1 + x2, d12 = x1 - x2, s34 = x3 + x4, d34 = x3 - x4, s56 = x5 + x6, d56 = x5 - x6;
    y[0] = x0 + s12 + s34 + s56;
    y[1] = d12 + 2.0f * d34 + 0.5f * d56;
    y[2] = s12 + 4.0f * s34 + 0.25f * s56;
    y[3] = d12 + 8.0f * d34 + 0.125f * d56;
    y[4] = s12 + 16.0f * s34 + 0.0625f * s56;
    y[5] = d12 + 32.0f * d34 + 0.03125f * d56 + x7;
}

/// 2D output tile of F(6x6): 64 vectors `ps` floats apart -> y[36] (6 x 6, row-major).
static void output_tile_2d8(const float *in, int64_t ps, vf *y) {
    vf t[48];  // [8 rows][6 columns]
#pragma clang loop unroll(full)
    for (int r = 0; r < 8; r++) {
        const float *x = in + r * 8 * ps;
        at8(LD(x), LD(x + ps), LD(x + 2 * ps), LD(x + 3 * ps), LD(x + 4 * ps), LD(x + 5 * ps), LD(x + 6 * ps),
            LD(x + 7 * ps), t + r * 6);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 6; c++) {
        vf o[6];
        at8(t[c], t[6 + c], t[12 + c], t[18 + c], t[24 + c], t[30 + c], t[36 + c], t[42 + c], o);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) y[i * 6 + c] = o[i];
    }
}

ALWAYS void bt4(vf x0, vf x1, vf x2, vf x3, vf *y, int64_t s) {
    y[0] = x0 - x2; y[s] = x1 + x2; y[2 * s] = x2 - x1; y[3 * s] = x1 - x3;
}

/// 3D input tile: 4 x 4 x 4 pixels (VW channels each; rows `ys`, planes `zs` floats apart) -> 64
/// vectors `ps` floats apart (position p = 16 iz + 4 iy + ix).
static void input_tile_3d(const float *in, int64_t ys, int64_t zs, float *out, int64_t ps) {
    vf t[64], u[64];
#pragma clang loop unroll(full)
    for (int r = 0; r < 16; r++) {  // along x, row r = 4 z + y
        const float *x = in + (r / 4) * zs + (r % 4) * ys;
        bt4(LD(x), LD(x + VW), LD(x + 2 * VW), LD(x + 3 * VW), t + r * 4, 1);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 16; c++) {  // along y, column c = 4 z + x
        const vf *x = t + (c / 4) * 16 + c % 4;
        bt4(x[0], x[4], x[8], x[12], u + (c / 4) * 16 + c % 4, 4);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 16; c++) {  // along z, column c = 4 y + x
        vf y[4];
        bt4(u[c], u[16 + c], u[32 + c], u[48 + c], y, 1);
#pragma clang loop unroll(full)
        for (int i = 0; i < 4; i++) ST(out + (i * 16 + c) * ps, y[i]);
    }
}

/// 3D output tile: 64 vectors `ps` floats apart -> y[8] (2 x 2 x 2, z-y-x).
static void output_tile_3d(const float *in, int64_t ps, vf *y) {
    vf t[32], u[16];  // after x: [4 z][4 y][2 x]; after y: [4 z][2 y][2 x]
#pragma clang loop unroll(full)
    for (int r = 0; r < 16; r++) {
        const float *x = in + r * 4 * ps;
        const vf x0 = LD(x), x1 = LD(x + ps), x2 = LD(x + 2 * ps), x3 = LD(x + 3 * ps);
        t[r * 2] = x0 + x1 + x2; t[r * 2 + 1] = x1 - x2 - x3;
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 8; c++) {  // c = 2 z + x
        const vf *x = t + (c / 2) * 8 + c % 2;
        u[(c / 2) * 4 + c % 2] = x[0] + x[2] + x[4];
        u[(c / 2) * 4 + 2 + c % 2] = x[2] - x[4] - x[6];
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 4; c++) {  // c = 2 y + x
        y[c] = u[c] + u[4 + c] + u[8 + c];
        y[4 + c] = u[4 + c] - u[8 + c] - u[12 + c];
    }
}

/// 3D input tile of F(4x4x4): 6 x 6 x 6 pixels (rows `ys`, planes `zs` floats apart) -> 216 vectors
/// `ps` floats apart (position p = 36 iz + 6 iy + ix).
static void input_tile_3d6(const float *in, int64_t ys, int64_t zs, float *out, int64_t ps) {
    vf t[216], u[216];
    for (int r = 0; r < 36; r++) {  // along x, row r = 6 z + y
        const float *x = in + (r / 6) * zs + (r % 6) * ys;
        bt6(LD(x), LD(x + VW), LD(x + 2 * VW), LD(x + 3 * VW), LD(x + 4 * VW), LD(x + 5 * VW), t + r * 6, 1);
    }
    for (int c = 0; c < 36; c++) {  // along y, column c = 6 z + x
        const vf *x = t + (c / 6) * 36 + c % 6;
        bt6(x[0], x[6], x[12], x[18], x[24], x[30], u + (c / 6) * 36 + c % 6, 6);
    }
    for (int c = 0; c < 36; c++) {  // along z, column c = 6 y + x
        vf y[6];
        bt6(u[c], u[36 + c], u[72 + c], u[108 + c], u[144 + c], u[180 + c], y, 1);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) ST(out + (i * 36 + c) * ps, y[i]);
    }
}

/// 3D output tile of F(4x4x4): 216 vectors `ps` floats apart -> y[64] (4 x 4 x 4, z-y-x).
static void output_tile_3d6(const float *in, int64_t ps, vf *y) {
    vf t[144], u[96];  // after x: [6 z][6 y][4 x]; after y: [6 z][4 y][4 x]
    for (int r = 0; r < 36; r++) {
        const float *x = in + r * 6 * ps;
        at6(LD(x), LD(x + ps), LD(x + 2 * ps), LD(x + 3 * ps), LD(x + 4 * ps), LD(x + 5 * ps), t + r * 4);
    }
    for (int c = 0; c < 24; c++) {  // c = 4 z + x
        const vf *x = t + (c / 4) * 24 + c % 4;
        vf o[4];
        at6(x[0], x[4], x[8], x[12], x[16], x[20], o);
#pragma clang loop unroll(full)
        for (int i = 0; i < 4; i++) u[(c / 4) * 16 + i * 4 + c % 4] = o[i];
    }
    for (int c = 0; c < 16; c++) {  // c = 4 y + x
        vf o[4];
        at6(u[c], u[16 + c], u[32 + c], u[48 + c], u[64 + c], u[80 + c], o);
#pragma clang loop unroll(full)
        for (int i = 0; i < 4; i++) y[i * 16 + c] = o[i];
    }
}

typedef struct {
    int64_t N, CI, CO;  // samples; channels read (src) and written (dst), multiples of VW
    int64_t COP;        // CO rounded up to PW: width of the GEMM's column panels
    int64_t S[3];       // spatial sizes z, y, x (z = 1 in 2D); input and output alike
    int a[3], m[3];     // per axis: tile input size alpha and output size m (1 and 1 on 2D's z axis)
    int64_t nt[3], T;   // tiles per axis, tiles in all (N * nt0 * nt1 * nt2)
    int P;              // transform positions: a0 * a1 * a2
    int three;          // 1: 3D
    int alpha;          // tile input size on the transformed axes: 4 (3D F(2x2x2)), 6 or 8 (2D F(6x6))
} geom;

// ---- stages ----

typedef struct {
    const geom *g;
    const float *src, *weight, *bias;
    float *dst, *U, *V, *M;
    int64_t I, O;       // the convolution's own channel counts (weight is O x I x k)
    int backward;       // 1: backward data (src = dY with O channels, dst = dX with I channels)
    const float *scale, *shift, *residual; // forward epilogue (scale NULL: none)
    float slope;
    const float *dy;    // backward weights: the output gradient (CO channels)
    float *dU;          // backward weights: position gradients [P][CIp][COP], CIp = CI rounded up to 6
    int64_t t0, tc, stride; // chunk: first tile, tiles in it, rows per position (>= tc; forward: a multiple of 6)
    int stream;         // forward: store the output with non-temporal stores (larger than the caches)
    int overwrite;      // backward weights: this chunk is the first, so the GEMM stores dU, not adds to it
    // The convolution's input split along channels (no joined copy): its first CB1 blocks in src (forward,
    // backward weights) or dst (backward data), the rest in src2 or dst2; both NULL: one tensor.
    const float *src2;
    float *dst2;
    int64_t CB1;
} job;

/// U for GEMM columns n in [VW begin, VW end): U[p] is stored in panels of PW columns,
/// U[p][n / PW][k][n % PW], so the GEMM kernel reads each row of a panel as two vectors.
static void weights_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int kv = g->three ? 27 : 9;
    vf b0[216], b1[216];
    // The kernel taps are gathered as floats and then loaded as vectors: filling vector lanes one
    // at a time made each lane a store-to-load dependency through the stack.
    float taps[27 * VW] __attribute__((aligned(64)));
    for (int64_t nb = begin; nb < end; nb++)
        for (int64_t k = 0; k < g->CI; k++) {
            for (int l = 0; l < VW; l++) {
                const int64_t n = nb * VW + l;
                const float *w = j->backward ? j->weight + (k * j->I + n) * kv : j->weight + (n * j->I + k) * kv;
                if (j->backward)
                    for (int kk = 0; kk < kv; kk++) taps[kk * VW + l] = w[kv - 1 - kk];
                else
                    for (int kk = 0; kk < kv; kk++) taps[kk * VW + l] = w[kk];
            }
            for (int kk = 0; kk < kv; kk++) b0[kk] = LD(taps + kk * VW);
            const vf *u = !g->three ? (g->alpha == 8 ? g_2d8(b0, b1) : g_2d(b0, b1)) : g->alpha == 6 ? g_3d6(b0, b1) : g_3d(b0, b1);
            float *dst = j->U + ((nb / 2) * g->CI + k) * PW + (nb % 2) * VW;
#if VW == 16
            // Streaming stores: each vector is a whole cache line of one of P write streams, and U is
            // read back only after the barrier, so reading every line in first (as a plain store
            // does) only doubled the memory traffic (this loop was 3% of a composer-2d step, 1% now).
            // (With VW 8 a vector is half a line whose other half another block writes later: a
            // streaming store would flush partial lines, so AVX2 stores plainly.)
            for (int p = 0; p < g->P; p++) STNT(dst + (int64_t)p * g->CI * g->COP, u[p]);
#else
            for (int p = 0; p < g->P; p++) ST(dst + (int64_t)p * g->CI * g->COP, u[p]);
#endif
        }
#if VW == 16
    __builtin_ia32_sfence();  // order the streaming stores before the caller's barrier
#endif
}

/// Channel block cb of sample n of a tensor of CB blocks (planes of `plane` floats) held in one part, or in
/// two (`second` not NULL: its first `CB1` blocks in `first`, the rest in `second`).
static inline const float *part_block(const float *first, const float *second, int64_t CB, int64_t CB1, int64_t n,
                                      int64_t cb, int64_t plane) {
    if (!second) return first + (n * CB + cb) * plane;
    return cb < CB1 ? first + (n * CB1 + cb) * plane : second + (n * (CB - CB1) + cb - CB1) * plane;
}

static void decode(const geom *g, int64_t t, int64_t *n, int64_t o[3]) {
    o[2] = (t % g->nt[2]) * g->m[2]; t /= g->nt[2];
    o[1] = (t % g->nt[1]) * g->m[1]; t /= g->nt[1];
    o[0] = (t % g->nt[0]) * g->m[0]; t /= g->nt[0];
    *n = t;
}

/// V[p][t - t0][c] for the chunk's tiles [begin, end) (relative to t0).
static void input_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int64_t D = g->S[0], H = g->S[1], W = g->S[2], CB = g->CI / VW;
    const int pz = g->three;
    const int a0 = g->a[0], a1 = g->a[1], a2 = g->a[2];
    vf b0[216];
    // Channel blocks outermost: a run of tiles then reads 16 (3D) or 6 (2D) rows as streams the
    // hardware prefetcher follows, not that many per channel block interleaved.
    for (int64_t cb = 0; cb < CB; cb++)
    for (int64_t tl = begin; tl < end; tl++) {
        int64_t n, o[3];
        decode(g, j->t0 + tl, &n, o);
        const int64_t z0 = o[0] - pz, y0 = o[1] - 1, x0 = o[2] - 1;
        const int inside = z0 >= 0 && z0 + a0 <= D && y0 >= 0 && y0 + a1 <= H && x0 >= 0 && x0 + a2 <= W;
        const float *base = part_block(j->src, j->src2, CB, j->CB1, n, cb, D * H * W * VW);
        float *dst = j->V + tl * g->CI + cb * VW;
        const int64_t ps = j->stride * g->CI;
        if (inside) {
            const float *at = base + ((z0 * H + y0) * W + x0) * VW;
            if (!g->three) {
                // This tile and the inner ones after it in its row (tiles run along x first).
                const int64_t m = g->m[2], last = (W + 1 - a2) / m, left = end - tl;
                int64_t count = last - o[2] / m + 1;
                if (count > left) count = left;
                if (g->alpha == 8) input_run_2d(8, at, W * VW, count, dst, g->CI, ps);
                else input_run_2d(6, at, W * VW, count, dst, g->CI, ps);
                tl += count - 1;
                continue;
            }
            if (g->alpha == 6) input_tile_3d6(at, W * VW, H * W * VW, dst, ps);
            else input_tile_3d(at, W * VW, H * W * VW, dst, ps);
            continue;
        }
        // Edge tile: gather with zeros outside, then the same transform on the copy.
        int q = 0;
        for (int dz = 0; dz < a0; dz++) {
            const int64_t z = z0 + dz;
            for (int dy = 0; dy < a1; dy++) {
                const int64_t y = y0 + dy;
                const int row_ok = z >= 0 && z < D && y >= 0 && y < H;
                const float *r = base + (z * H + y) * W * VW;
                for (int dx = 0; dx < a2; dx++, q++) {
                    const int64_t x = x0 + dx;
                    b0[q] = row_ok && x >= 0 && x < W ? LD(r + x * VW) : (vf){0};
                }
            }
        }
        if (!g->three && g->alpha == 8) input_run_2d(8, (const float *)b0, 8 * VW, 1, dst, 0, ps);
        else if (!g->three) input_run_2d(6, (const float *)b0, 6 * VW, 1, dst, 0, ps);
        else if (g->alpha == 6) input_tile_3d6((const float *)b0, 6 * VW, 36 * VW, dst, ps);
        else input_tile_3d((const float *)b0, 4 * VW, 16 * VW, dst, ps);
    }
}

/// C (6 x PW, rows ldc apart) (+)= sum over k < K of A[r * ar + k * ak] B[k * bk + c]: the one
/// GEMM kernel of forward (rows = 6 tiles, columns = PW output channels of a packed panel) and of
/// backward weights (rows = 6 input channels, columns = PW output channels). Always inlined, so the
/// strides that are constants at a call site fold away.
ALWAYS void kernel_6xp(int64_t K, const float *restrict a, int64_t ar, int64_t ak, const float *restrict b,
                        int64_t bk, float *restrict c, int64_t ldc, int accumulate) {
    vf acc[12] = {{0}};
    if (accumulate)
        for (int r = 0; r < 6; r++) { acc[2 * r] = LD(c + r * ldc); acc[2 * r + 1] = LD(c + r * ldc + VW); }
    for (int64_t k = 0; k < K; k++, a += ak, b += bk) {
        const vf b0 = LD(b), b1 = LD(b + VW);
#pragma clang loop unroll(full)
        for (int r = 0; r < 6; r++) {
            const vf x = SPLAT(a[r * ar]);
            acc[2 * r] += x * b0;
            acc[2 * r + 1] += x * b1;
        }
    }
    for (int r = 0; r < 6; r++) { ST(c + r * ldc, acc[2 * r]); ST(c + r * ldc + VW, acc[2 * r + 1]); }
}

/// M[p] = V[p] U[p] for positions [begin, end): per PW-column panel of U (kept hot in L1/L2), all
/// row blocks of 6 tiles. Rows past the chunk's end are computed on stale data and never read.
static void gemm_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int64_t rows = (j->tc + 5) / 6 * 6;
    for (int64_t p = begin; p < end; p++) {
        const float *V = j->V + p * j->stride * g->CI, *U = j->U + p * g->CI * g->COP;
        float *M = j->M + p * j->stride * g->COP;
        for (int64_t nb = 0; nb < g->COP / PW; nb++)
            for (int64_t t = 0; t < rows; t += 6)
                kernel_6xp(g->CI, V + t * g->CI, g->CI, 1, U + nb * PW * g->CI, PW, M + t * g->COP + nb * PW, g->COP, 0);
    }
}

/// Output tiles [begin, end) of the chunk: Y = A^T M A (+ bias), clipped at the far edges.
static void output_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int64_t D = g->S[0], H = g->S[1], W = g->S[2], CB = g->CO / VW;
    vf b0[64];
    for (int64_t tl = begin; tl < end; tl++) {
        int64_t n, o[3];
        decode(g, j->t0 + tl, &n, o);
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *src = j->M + tl * g->COP + cb * VW;
            const vf *y = b0;
            if (!g->three && g->alpha == 8) output_tile_2d8(src, j->stride * g->COP, b0);
            else if (!g->three) output_tile_2d(src, j->stride * g->COP, b0);
            else if (g->alpha == 6) output_tile_3d6(src, j->stride * g->COP, b0);
            else output_tile_3d(src, j->stride * g->COP, b0);
            vf bias = {0}, scale = {0}, shift = {0};
            if (j->bias) for (int l = 0; l < VW; l++) bias[l] = j->bias[cb * VW + l];
            if (j->scale)
                for (int l = 0; l < VW; l++) {
                    scale[l] = j->scale[cb * VW + l];
                    shift[l] = j->shift[cb * VW + l] + bias[l] * scale[l];
                }
            const int64_t off = (n * CB + cb) * D * H * W * VW;
            float *base = (float *)part_block(j->dst, j->dst2, CB, j->CB1, n, cb, D * H * W * VW);
            const float *res = j->residual ? j->residual + off : NULL;
            int q = 0;
            for (int dz = 0; dz < g->m[0]; dz++)
                for (int dy = 0; dy < g->m[1]; dy++)
                    for (int dx = 0; dx < g->m[2]; dx++, q++) {
                        const int64_t z = o[0] + dz, yy = o[1] + dy, x = o[2] + dx;
                        if (z >= D || yy >= H || x >= W) continue;
                        const int64_t at = ((z * H + yy) * W + x) * VW;
                        vf v;
                        if (!j->scale) v = y[q] + bias;
                        else {
                            v = y[q] * scale + shift;
                            if (res) v += LD(res + at);
                            const vf neg = v * j->slope;
                            v = VMAX(v, neg);
                        }
                        if (j->stream) STNT(base + at, v); else ST(base + at, v);
                    }
        }
    }
    if (j->stream) __builtin_ia32_sfence();  // order the streaming stores before the caller's barrier
}

/// Small layers: each thread runs whole chunks (input transform, GEMMs, output transform) on its own
/// V and M, sized to stay in its L2 cache. Unit `slot` of `threads` takes an equal share of the chunks.
typedef struct { const job *j; int64_t chunks, threads; size_t per_thread; } fused_job;

static void fused_range(void *arg, int64_t begin, int64_t end) {
    const fused_job *f = arg;
    for (int64_t slot = begin; slot < end; slot++) {
        job j = *f->j;
        j.V += (size_t)slot * f->per_thread;
        j.M = j.V + (size_t)j.g->P * j.stride * j.g->CI;
        for (int64_t c = slot * f->chunks / f->threads; c < (slot + 1) * f->chunks / f->threads; c++) {
            j.t0 = c * j.stride;
            j.tc = j.g->T - j.t0 < j.stride ? j.g->T - j.t0 : j.stride;
            input_range(&j, 0, j.tc);
            gemm_range(&j, 0, j.g->P);
            output_range(&j, 0, j.tc);
        }
    }
}

// ---- backward weights: dU[p] = sum over tiles of V[p]^T (A dY A^T)[p], then dW += G^T dU G ----

/// A (m -> alpha) along one axis: spreads an output gradient over the transform positions (the adjoint
/// of the output transform A^T); y[k * s].
ALWAYS void aa4(vf d0, vf d1, vf *y, int64_t s) { y[0] = d0; y[s] = d0 + d1; y[2 * s] = d0 - d1; y[3 * s] = -d1; }
ALWAYS void aa6(vf d0, vf d1, vf d2, vf d3, vf *y, int64_t s) {
    const vf e02 = d0 + d2, o13 = d1 + d3, f02 = d0 + 4.0f * d2, p13 = 2.0f * d1 + 8.0f * d3;
    y[0] = d0; y[s] = e02 + o13; y[2 * s] = e02 - o13; y[3 * s] = f02 + p13; y[4 * s] = f02 - p13; y[5 * s] = d3;
}

/// Output-gradient tiles, A dY A^T: 2D 4 rows of 4 pixels (rows `ys` floats apart) -> 36 vectors `ps`
/// floats apart (position 6 iy + ix).
static void dy_tile_2d(const float *in, int64_t ys, float *out, int64_t ps) {
    vf t[24];  // [4 y][6 x]
#pragma clang loop unroll(full)
    for (int r = 0; r < 4; r++) {
        const float *x = in + r * ys;
        aa6(LD(x), LD(x + VW), LD(x + 2 * VW), LD(x + 3 * VW), t + r * 6, 1);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 6; c++) {
        vf y[6];
        aa6(t[c], t[6 + c], t[12 + c], t[18 + c], y, 1);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) ST(out + (i * 6 + c) * ps, y[i]);
    }
}

/// 3D F(2x2x2): 2 x 2 x 2 pixels (rows `ys`, planes `zs` floats apart) -> 64 vectors (16 iz + 4 iy + ix).
static void dy_tile_3d(const float *in, int64_t ys, int64_t zs, float *out, int64_t ps) {
    vf t[16], u[32];  // [2 z][2 y][4 x], then [2 z][4 y][4 x]
#pragma clang loop unroll(full)
    for (int r = 0; r < 4; r++) {
        const float *x = in + (r / 2) * zs + (r % 2) * ys;
        aa4(LD(x), LD(x + VW), t + r * 4, 1);
    }
#pragma clang loop unroll(full)
    for (int c = 0; c < 8; c++) aa4(t[(c / 4) * 8 + c % 4], t[(c / 4) * 8 + 4 + c % 4], u + (c / 4) * 16 + c % 4, 4);
#pragma clang loop unroll(full)
    for (int c = 0; c < 16; c++) {
        vf y[4];
        aa4(u[c], u[16 + c], y, 1);
#pragma clang loop unroll(full)
        for (int i = 0; i < 4; i++) ST(out + (i * 16 + c) * ps, y[i]);
    }
}

/// 3D F(4x4x4): 4 x 4 x 4 pixels -> 216 vectors (36 iz + 6 iy + ix).
static void dy_tile_3d6(const float *in, int64_t ys, int64_t zs, float *out, int64_t ps) {
    vf t[96], u[144];  // [4 z][4 y][6 x], then [4 z][6 y][6 x]
    for (int r = 0; r < 16; r++) {
        const float *x = in + (r / 4) * zs + (r % 4) * ys;
        aa6(LD(x), LD(x + VW), LD(x + 2 * VW), LD(x + 3 * VW), t + r * 6, 1);
    }
    for (int c = 0; c < 24; c++) {  // c = 6 z + x
        const vf *x = t + (c / 6) * 24 + c % 6;
        aa6(x[0], x[6], x[12], x[18], u + (c / 6) * 36 + c % 6, 6);
    }
    for (int c = 0; c < 36; c++) {  // c = 6 y + x
        vf y[6];
        aa6(u[c], u[36 + c], u[72 + c], u[108 + c], y, 1);
#pragma clang loop unroll(full)
        for (int i = 0; i < 6; i++) ST(out + (i * 36 + c) * ps, y[i]);
    }
}

/// dM[p][t - t0][co] = A dY A^T for the chunk's tiles [begin, end) (the adjoint of the output
/// transform; outputs past the far edges, which forward dropped, contribute nothing).
static void dy_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int64_t D = g->S[0], H = g->S[1], W = g->S[2], CB = g->CO / VW;
    const int m0 = g->m[0], m1 = g->m[1], m2 = g->m[2];
    const int64_t ps = j->stride * g->COP;
    vf b0[64];
    for (int64_t tl = begin; tl < end; tl++)
    for (int64_t cb = 0; cb < CB; cb++) {
        int64_t n, o[3];
        decode(g, j->t0 + tl, &n, o);
        const float *base = j->dy + (n * CB + cb) * D * H * W * VW;
        float *dst = j->M + tl * g->COP + cb * VW;
        const float *at = base + ((o[0] * H + o[1]) * W + o[2]) * VW;
        int64_t ys = W * VW, zs = H * W * VW;
        if (o[0] + m0 > D || o[1] + m1 > H || o[2] + m2 > W) {
            // Far-edge tile: gather with zeros past the edges, then the same transform on the copy.
            int q = 0;
            for (int dz = 0; dz < m0; dz++)
                for (int dy = 0; dy < m1; dy++)
                    for (int dx = 0; dx < m2; dx++, q++) {
                        const int64_t z = o[0] + dz, y = o[1] + dy, x = o[2] + dx;
                        b0[q] = z < D && y < H && x < W ? LD(base + ((z * H + y) * W + x) * VW) : (vf){0};
                    }
            at = (const float *)b0; ys = m2 * VW; zs = m1 * m2 * VW;
        }
        if (!g->three) dy_tile_2d(at, ys, dst, ps);
        else if (g->alpha == 6) dy_tile_3d6(at, ys, zs, dst, ps);
        else dy_tile_3d(at, ys, zs, dst, ps);
    }
}

/// dU[p] += V[p]^T dM[p] over the chunk (dU[p] = ... for the first chunk: no zeroing pass, and no
/// reads of dU from memory before the first products), positions [begin, end). The last block of 6
/// rows may run past CI: those rows read the next values in memory and land in dU's padding rows,
/// never read.
static void gemm_t_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int64_t CIp = (g->CI + 5) / 6 * 6;
    for (int64_t p = begin; p < end; p++) {
        const float *V = j->V + p * j->stride * g->CI, *M = j->M + p * j->stride * g->COP;
        float *dU = j->dU + p * CIp * g->COP;
        for (int64_t nb = 0; nb < g->COP / PW; nb++)
            for (int64_t ci = 0; ci < CIp; ci += 6)
                kernel_6xp(j->tc, V + ci, 1, g->CI, M + nb * PW, g->COP, dU + ci * g->COP + nb * PW, g->COP, !j->overwrite);
    }
}

/// Small kernels: each thread runs whole chunks (both transforms and the GEMMs) on V, dM and dU of its
/// own, sized to stay in its L2 cache; the threads' dU are added up afterwards. Unit `slot` of `threads`
/// takes an equal share of the chunks. Per-thread region: [dU (u) | V (v) | dM].
typedef struct { const job *j; int64_t chunks, threads; size_t per_thread, u, v; } fused_dw_job;

static void fused_dw_range(void *arg, int64_t begin, int64_t end) {
    const fused_dw_job *f = arg;
    for (int64_t slot = begin; slot < end; slot++) {
        job j = *f->j;
        j.dU = j.dU + (size_t)slot * f->per_thread;
        j.V = j.dU + f->u;
        j.M = j.V + f->v;
        const int64_t first = slot * f->chunks / f->threads, last = (slot + 1) * f->chunks / f->threads;
        if (first == last) memset(j.dU, 0, f->u * sizeof(float));  // no chunks: adds nothing to the sum
        for (int64_t c = first; c < last; c++) {
            j.overwrite = c == first;
            j.t0 = c * j.stride;
            j.tc = j.g->T - j.t0 < j.stride ? j.g->T - j.t0 : j.stride;
            input_range(&j, 0, j.tc);
            dy_range(&j, 0, j.tc);
            gemm_t_range(&j, 0, j.g->P);
        }
    }
}

/// dU of slot 0 += dU of slots 1 ..< threads, for floats [begin, end) of VW.
typedef struct { float *dU; int64_t threads; size_t per_thread; } dw_sum_job;

static void dw_sum_range(void *arg, int64_t begin, int64_t end) {
    const dw_sum_job *s = arg;
    for (int64_t i = begin; i < end; i++) {
        vf acc = LD(s->dU + i * VW);
        for (int64_t t = 1; t < s->threads; t++) acc += LD(s->dU + (size_t)t * s->per_thread + i * VW);
        ST(s->dU + i * VW, acc);
    }
}

/// dW[o][i] (in j->dst) += G^T dU[.][i][o] G for input channels i in [begin, end). Input channels
/// outermost: a channel's P rows of dU (COP floats each) are then read front to back, P sequential
/// streams. By output-channel blocks instead, each vector came from a line a row apart (2 KB at 512
/// channels), P rows at once, which the prefetcher could not follow: 25% of a 512->512 backward
/// weights call, against 10-15% this way (perf, AMD EPYC Zen 4).
static void dw_range(void *arg, int64_t begin, int64_t end) {
    const job *j = arg;
    const geom *g = j->g;
    const int kv = g->three ? 27 : 9;
    const int64_t CIp = (g->CI + 5) / 6 * 6;
    float *dw = j->dst;
    vf b0[216], b1[216];
    for (int64_t k = begin; k < end; k++)
        for (int64_t nb = 0; nb < g->CO / VW; nb++) {
            for (int p = 0; p < g->P; p++) b0[p] = LD(j->dU + ((int64_t)p * CIp + k) * g->COP + nb * VW);
            const vf *w = !g->three ? gt_2d(b0, b1) : g->alpha == 6 ? gt_3d6(b0, b1) : gt_3d(b0, b1);
            for (int l = 0; l < VW; l++)
                for (int kk = 0; kk < kv; kk++) dw[((nb * VW + l) * g->CI + k) * kv + kk] += w[kk][l];
        }
}

/// m: the output tile size per transformed axis (cdnnl_winograd_tile): 2D 4 or 6, 3D 2 or 4.
static geom make_geom(const cdnnl_conv_desc *d, int64_t ci, int64_t co, int m) {
    geom g = {0};
    const int r = d->spatial_rank;
    g.N = d->batch;
    g.CI = ci;
    g.CO = co;
    g.S[0] = r == 3 ? d->in_size[0] : 1;
    g.S[1] = d->in_size[r - 2];
    g.S[2] = d->in_size[r - 1];
    const int alpha = m + 2;
    g.alpha = alpha;
    g.P = 1;
    for (int i = 0; i < 3; i++) {
        g.a[i] = (i == 0 && r == 2) ? 1 : alpha;
        g.m[i] = g.a[i] == 1 ? 1 : alpha - 2;
        g.nt[i] = (g.S[i] + g.m[i] - 1) / g.m[i];
        g.P *= g.a[i];
    }
    g.T = g.N * g.nt[0] * g.nt[1] * g.nt[2];
    g.three = r == 3;
    g.COP = (g.CO + PW - 1) / PW * PW;
    return g;
}

/// A split of the input's I channels at `split` the kernels can take: whole vectors on both sides.
static int split_ok(const cdnnl_conv_desc *d, int64_t split) { return split > 0 && split % VW == 0 && split < d->in_channels; }

int SFX(cdnnl_winograd)(const cdnnl_conv_desc *d, int threads, int backward, const float *src,
                         const float *src2, float *dst2, int64_t split, const float *weight, const float *bias,
                         float *dst, const float *scale, const float *shift, const float *residual, float slope,
                         cdnnl_winograd_kept *kept) {
    if ((src2 && (backward || !split_ok(d, split))) || (dst2 && (!backward || !split_ok(d, split)))) return -2;
    const geom g = make_geom(d, backward ? d->out_channels : d->in_channels, backward ? d->in_channels : d->out_channels,
                             cdnnl_winograd_tile(d));
    const size_t u = (size_t)g.P * g.CI * g.COP, per_tile = (size_t)g.P * (g.CI + g.COP);
    // Up to 12 MB of transformed kernel (256 x 256 channels in 2D): every thread runs whole chunks
    // of tiles on V and M of its own that stay in its L2 cache. Larger kernels: chunks of about
    // 8 MB shared by all threads, each stage split over threads, so the kernel streams from memory
    // once per chunk instead of once per thread and chunk. (Both measured on the UNet's layers.)
    const int fused = u * sizeof(float) <= ((size_t)12 << 20);
    int64_t tc = (int64_t)((fused ? (384 << 10) : (8 << 20)) / (per_tile * sizeof(float)));
    if (tc < (fused ? 12 : 48)) tc = fused ? 12 : 48;
    if (tc > g.T) tc = g.T;
    int64_t chunks = (g.T + tc - 1) / tc;
    const int64_t stride = ((g.T + chunks - 1) / chunks + 5) / 6 * 6;  // whole blocks of 6 GEMM rows
    chunks = (g.T + stride - 1) / stride;
    const size_t vm = (size_t)stride * per_tile;
    if (kept && kept->u && kept->floats != u) { free(kept->u); kept->u = NULL; kept->ready = 0; }
    if (kept && !kept->u) {
        kept->u = aligned_alloc(64, (u * sizeof(float) + 63) / 64 * 64);
        if (!kept->u) return -1;
        kept->floats = u;
        kept->ready = 0;
    }
    // U in the kept store (transformed once) or at the start of the scratch buffer (every call).
    float *buf = cdnnl_scratch((kept ? 0 : u) + vm * (fused ? threads : 1));
    if (!buf) return -1;
    float *U = kept ? kept->u : buf, *VM = kept ? buf : buf + u;
    job j = {&g, src, weight, backward ? NULL : bias, dst, U, VM, VM + (size_t)g.P * stride * g.CI,
             d->in_channels, d->out_channels, backward, backward ? NULL : scale, shift, residual, slope, NULL, NULL,
             0, 0, stride};
    j.src2 = src2;
    j.dst2 = dst2;
    j.CB1 = split / VW;
    j.stream = cdnnl_stream_output(dst, (size_t)g.N * g.CO * g.S[0] * g.S[1] * g.S[2] * sizeof(float), VW * sizeof(float));
    if (!kept || !kept->ready) {
        if (g.COP != g.CO) memset(U, 0, u * sizeof(float));  // the last panel's unused half
        cdnnl_parallel(threads, g.CO / VW, weights_range, &j);
        if (kept) kept->ready = 1;
    }
    if (fused) {
        fused_job f = {&j, chunks, threads, vm};
        cdnnl_parallel(threads, threads, fused_range, &f);
        return 0;
    }
    for (int64_t t0 = 0; t0 < g.T; t0 += stride) {
        j.t0 = t0;
        j.tc = g.T - t0 < stride ? g.T - t0 : stride;
        cdnnl_parallel(threads, j.tc, input_range, &j);
        cdnnl_parallel(threads, g.P, gemm_range, &j);
        cdnnl_parallel(threads, j.tc, output_range, &j);
    }
    return 0;
}

int SFX(cdnnl_winograd_bwd_weights)(const cdnnl_conv_desc *d, int threads, const float *src, const float *src2,
                                    int64_t split, const float *diff_dst, float *diff_weight) {
    if (src2 && !split_ok(d, split)) return -2;
    const geom g = make_geom(d, d->in_channels, d->out_channels, cdnnl_winograd_weights_tile(d));
    const int64_t CIp = (g.CI + 5) / 6 * 6;
    const size_t u = (size_t)g.P * CIp * g.COP, per_tile = (size_t)g.P * (g.CI + g.COP);
    // Up to 1.5 MB of dU (3D to 64 channels, 2D to 64): every thread runs chunks of about 384 KB of V
    // and dM with a dU of its own. Measured effective GFLOP/s in `unet bench kernels` (Zen 4, AVX-512),
    // this way against the shared chunks below, alternating: 3D 32->32 at 64^3 327-338 against 130-266,
    // at 128^3 311-322 against 129-257; 2D 32->32 at 192x160 367-403 against 324-325, 64->64 at 96x80
    // 445-479 against 243-455. At 128 channels (2.4 MB of dU) no steady difference.
    if (u * sizeof(float) <= ((size_t)1536 << 10)) {
        int64_t stride = (int64_t)(((size_t)384 << 10) / (per_tile * sizeof(float)));
        if (stride < 6) stride = 6;
        if (stride > g.T) stride = g.T;
        const int64_t chunks = (g.T + stride - 1) / stride;
        const size_t v = ((size_t)g.P * stride * g.CI + 8 + VW - 1) / VW * VW;
        const size_t per_thread = (u + v + (size_t)g.P * stride * g.COP + VW - 1) / VW * VW;
        float *buf = cdnnl_scratch(per_thread * (size_t)threads);
        if (!buf) return -1;
        job j = {&g, src, NULL, NULL, diff_weight, NULL, NULL, NULL, d->in_channels, d->out_channels, 0,
                 NULL, NULL, NULL, 1.0f, diff_dst, buf, 0, 0, stride};
        j.src2 = src2;
        j.CB1 = split / VW;
        fused_dw_job f = {&j, chunks, threads, per_thread, u, v};
        cdnnl_parallel(threads, threads, fused_dw_range, &f);
        dw_sum_job sum = {buf, threads, per_thread};
        cdnnl_parallel(threads, (int64_t)(u / VW), dw_sum_range, &sum);
        cdnnl_parallel(threads, g.CI, dw_range, &j);
        return 0;
    }
    // Chunks of V and dM of about 8 MB, or of twice dU where dU is larger (deep layers: 512 channels
    // hold 38 MB of dU, read and written once per chunk; measured 20-25% faster at 512 and 256 channels
    // in 2D, no change below); each stage split over threads (the GEMM by position, so each thread owns
    // its positions' dU).
    size_t chunk_bytes = 2 * u * sizeof(float);
    if (chunk_bytes < ((size_t)8 << 20)) chunk_bytes = (size_t)8 << 20;
    if (chunk_bytes > ((size_t)64 << 20)) chunk_bytes = (size_t)64 << 20;
    int64_t tc = (int64_t)(chunk_bytes / (per_tile * sizeof(float)));
    if (tc < 48) tc = 48;
    if (tc > g.T) tc = g.T;
    const int64_t chunks = (g.T + tc - 1) / tc;
    const int64_t stride = (g.T + chunks - 1) / chunks;
    const size_t v = (size_t)g.P * stride * g.CI + 8;  // + 8: the GEMM's last row block may read past V
    float *buf = cdnnl_scratch(u + v + (size_t)g.P * stride * g.COP);
    if (!buf) return -1;
    job j = {&g, src, NULL, NULL, diff_weight, NULL, buf + u, buf + u + v, d->in_channels, d->out_channels, 0,
             NULL, NULL, NULL, 1.0f, diff_dst, buf, 0, 0, stride};
    j.src2 = src2;
    j.CB1 = split / VW;
    for (int64_t t0 = 0; t0 < g.T; t0 += stride) {
        j.t0 = t0;
        j.tc = g.T - t0 < stride ? g.T - t0 : stride;
        j.overwrite = t0 == 0;
        cdnnl_parallel(threads, j.tc, input_range, &j);
        cdnnl_parallel(threads, j.tc, dy_range, &j);
        cdnnl_parallel(threads, g.P, gemm_t_range, &j);
    }
    cdnnl_parallel(threads, g.CI, dw_range, &j);
    return 0;
}
