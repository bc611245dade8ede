// The recipe's losses on logits in plain layout, VW voxels per vector (included by loss_*.c after
// simd.h; one source for every width). Per voxel: softmax over the C channels (planes S floats apart),
// then cross-entropy and the soft Dice sums, or the gradients. Replaces a scalar loop that called
// libm's expf and log per channel and voxel: 0.05 s of a composer-2d step on Zen 4.
#include <string.h>

typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef double vd __attribute__((vector_size(VW * 8)));
typedef uint8_t vb __attribute__((vector_size(VW), aligned(1)));

/// a where mask (all ones), else b.
static inline vf pick(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/// e^x for x <= 0 (softmax's shifted logits); below -87 (e^x < 1.7e-38) it returns about e^-87. Degree-6
/// Taylor on r = x - n ln 2, |r| <= ln 2 / 2: relative error below 2e-7.
static inline vf exp_neg(vf x) {
    x = VMAX(x, SPLAT(-87.0f));
    // Truncation of a negative value rounds up: n = ceil(x log2 e - 1/2), so |r| <= ln 2 / 2.
    const vi n = __builtin_convertvector(x * 1.44269504f - 0.5f, vi);
    const vf nf = __builtin_convertvector(n, vf);
    const vf r = x - nf * 0.693145752f - nf * 1.42860677e-6f;
    vf p = SPLAT(1.0f / 720);
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vf)((n + 127) << 23);
}

/// ln(y) for normal positive y (here a softmax denominator, 1 <= y <= C): y = m 2^e with m in
/// [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: error below 1e-7.
static inline vf log_pos(vf y) {
    const vi bits = (vi)y;
    vi e = ((bits >> 23) & 0xff) - 127;
    vf m = (vf)((bits & 0x7fffff) | 0x3f800000);
    const vi big = m > 1.41421356f;
    m = pick(big, m * 0.5f, m);
    e -= big;  // big is -1 where true
    const vf s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    vf q = SPLAT(1.0f / 9);
    q = q * s2 + 1.0f / 7;
    q = q * s2 + 1.0f / 5;
    q = q * s2 + 1.0f / 3;
    q = q * s2 + 1.0f;
    return __builtin_convertvector(e, vf) * 0.693147181f + 2.0f * s * q;
}

typedef struct {
    const float *z;
    const uint8_t *t;
    int64_t n, c, s, unit;
    double *ce, *dice;  // per unit (see cdnnl_softmax_losses)
    float *grad;
    float ce_scale;
    const float *a, *b;  // Dice gradient (cdnnl_dice_gradient); NULL in the first pass
    float dice_scale;
} loss_job;

/// The Dice loss's dp_k (k >= 1) per lane: a[k] where the label is k, plus b[k].
static inline vf dice_dp(const loss_job *j, vi tv, int64_t k) { return pick(tv == (int32_t)k, SPLAT(j->a[k]), (vf){0}) + j->b[k]; }

/// One vector of voxels: logits at z (planes sz apart), labels t, gradient planes at g (sg apart). `valid`:
/// 1 in the lanes that are voxels, 0 in padding lanes. p: C vectors of scratch.
static inline void loss_vector(const loss_job *j, const float *z, int64_t sz, const uint8_t *t, float *g, int64_t sg,
                               vf valid, vf *p, vd *acc) {
    const int64_t c = j->c;
    const vi tv = __builtin_convertvector(*(const vb *)t, vi);
    vf mx = LD(z);
    for (int64_t k = 1; k < c; k++) mx = VMAX(mx, LD(z + k * sz));
    vf sum = (vf){0}, zt = (vf){0};
    for (int64_t k = 0; k < c; k++) {
        const vf zk = LD(z + k * sz);
        p[k] = exp_neg(zk - mx);
        sum += p[k];
        zt = pick(tv == (int32_t)k, zk, zt);
    }
    const vf inv = 1.0f / sum;
    for (int64_t k = 0; k < c; k++) p[k] *= inv;
    if (j->a) {
        // Dice through the softmax: dz_k = p_k (dp_k - sum_j p_j dp_j), dp_0 = 0.
        vf dot = (vf){0};
        for (int64_t k = 1; k < c; k++) dot += p[k] * dice_dp(j, tv, k);
        for (int64_t k = 0; k < c; k++) {
            const vf dp = k == 0 ? (vf){0} : dice_dp(j, tv, k);
            ST(g + k * sg, LD(g + k * sg) + j->dice_scale * p[k] * (dp - dot));
        }
        return;
    }
    // -log softmax(z)[t] = log(sum) - (z_t - max), without the underflow of log(p_t).
    if (j->ce) acc[0] += __builtin_convertvector((log_pos(sum) - (zt - mx)) * valid, vd);
    if (j->dice)
        for (int64_t k = 0; k < c; k++) {
            const vf hit = pick(tv == (int32_t)k, valid, (vf){0});
            acc[1 + k] += __builtin_convertvector(p[k] * hit, vd);
            acc[1 + c + k] += __builtin_convertvector(p[k] * valid, vd);
            acc[1 + 2 * c + k] += __builtin_convertvector(hit, vd);
        }
    if (g)
        for (int64_t k = 0; k < c; k++) {
            const vf onehot = pick(tv == (int32_t)k, SPLAT(1.0f), (vf){0});
            ST(g + k * sg, LD(g + k * sg) + j->ce_scale * (p[k] - onehot));
        }
}

/// The lanes of *v added in lane order (by pointer: a vd is wider than some builds' registers).
static inline double lanes_sum(const vd *v) {
    double s = 0;
    for (int l = 0; l < VW; l++) s += (*v)[l];
    return s;
}

/// Units [begin, end): each `unit` consecutive voxels of the N * S, in order; full vectors within a sample,
/// then its last partial vector through zero-padded copies.
static void loss_range(void *arg, int64_t begin, int64_t end) {
    const loss_job *j = arg;
    const int64_t c = j->c, s = j->s, total = j->n * s;
    vf p[c];
    vd acc[1 + 3 * c];
    float tz[c * VW], tg[c * VW];
    uint8_t tt[VW];
    for (int64_t u = begin; u < end; u++) {
        for (int64_t i = 0; i < 1 + 3 * c; i++) acc[i] = (vd){0};
        const int64_t last = (u + 1) * j->unit < total ? (u + 1) * j->unit : total;
        for (int64_t v = u * j->unit; v < last;) {
            const int64_t n = v / s, i = v % s;
            const int64_t run = (last - v < s - i ? last - v : s - i);  // voxels left in this sample and unit
            const float *z = j->z + n * c * s + i;
            float *g = j->grad ? j->grad + n * c * s + i : NULL;
            int64_t x = 0;
            for (; x + VW <= run; x += VW) loss_vector(j, z + x, s, j->t + v + x, g ? g + x : NULL, s, SPLAT(1.0f), p, acc);
            if (x < run) {
                const int64_t rest = run - x;
                vf valid = (vf){0};
                memset(tz, 0, sizeof tz);
                memset(tt, 0, sizeof tt);
                for (int64_t l = 0; l < rest; l++) {
                    valid[l] = 1.0f;
                    tt[l] = j->t[v + x + l];
                    for (int64_t k = 0; k < c; k++) {
                        tz[k * VW + l] = z[k * s + x + l];
                        tg[k * VW + l] = g ? g[k * s + x + l] : 0;
                    }
                }
                loss_vector(j, tz, VW, tt, g ? tg : NULL, VW, valid, p, acc);
                if (g)
                    for (int64_t l = 0; l < rest; l++)
                        for (int64_t k = 0; k < c; k++) g[k * s + x + l] = tg[k * VW + l];
            }
            v += run;
        }
        if (j->ce) j->ce[u] = lanes_sum(&acc[0]);
        if (j->dice)
            for (int64_t i = 0; i < 3 * c; i++) j->dice[u * 3 * c + i] = lanes_sum(&acc[1 + i]);
    }
}

void SFX(cdnnl_softmax_losses)(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit,
                               double *ce, double *dice, float *grad, float ce_scale) {
    loss_job j = {z, t, n, c, s, unit, ce, dice, grad, ce_scale, NULL, NULL, 0};
    cdnnl_parallel_for((n * s + unit - 1) / unit, loss_range, &j);
}

void SFX(cdnnl_dice_gradient)(const float *z, const uint8_t *t, int64_t n, int64_t c, int64_t s, int64_t unit,
                              const float *a, const float *b, float scale, float *grad) {
    loss_job j = {z, t, n, c, s, unit, NULL, NULL, grad, 0, a, b, scale};
    cdnnl_parallel_for((n * s + unit - 1) / unit, loss_range, &j);
}
