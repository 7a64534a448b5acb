/* LeNet-5's two convolution blocks, fused: conv -> activation -> 2x2 pool, twice.
 *
 * Shapes are fixed to the book's network: 1x28x28 input, conv 6@5x5 pad 2,
 * 2x2/2 pool, conv 16@5x5, 2x2/2 pool -> 16x5x5. Activation: sigmoid or ReLU;
 * pooling: average or max. oneDNN spends most of LeNet's step on these tiny
 * maps and on separate activation/pool passes over memory; here one image goes
 * through both blocks while its maps stay in L1.
 *
 * Vectors are GCC/Clang vector extensions of VW floats, VW chosen at build time
 * from the target's ISA: 16 (AVX-512), 8 (AVX/AVX2), 4 (SSE, NEON), 1 (plain C).
 * A vector wider than the ISA's registers is not an option: GCC keeps such a
 * vector on the stack and runs AVX2 code 8x slower than with 8-float vectors.
 * The maps' layouts do not depend on VW (rows of 32 floats, 16 channels per
 * conv2 pixel); each loop walks them VW floats at a time, and the register
 * blocking (how many accumulators a loop keeps) is sized so that it fits a
 * 16-register file at every width.
 *
 * A batch is split into `parts` contiguous chunks run in parallel with OpenMP.
 * Built with -fopenmp after PyTorch is loaded, this binds to PyTorch's own
 * libgomp, so the chunks run on PyTorch's worker threads instead of fighting
 * them (its idle workers spin-wait and halve a second pool's speed). Each
 * chunk's weight gradients go to its own row, which the caller sums in a fixed
 * order: results do not depend on timing.
 */
#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#include "vector_width.h"

typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int vi __attribute__((vector_size(VW * sizeof(int))));
#define NV (16 / VW)  /* vectors per 16 floats: a conv2 pixel's channels, a dp1 row */
#define NR (32 / VW)  /* vectors per 32-float map row */
/* conv2 output pixels per register block: NV vectors each, at most 10 accumulators */
#define C2_PIX (VW == 16 ? 10 : VW == 8 ? 5 : VW == 4 ? 2 : 1)

enum { ACT_SIGMOID = 0, ACT_RELU = 1 };
enum { POOL_AVG = 0, POOL_MAX = 1 };

/* Layout of the maps one image keeps for the backward pass (floats). */
#define XP_W 32                      /* padded input row: 2 + 28 + 2 */
#define XP_H 32
#define XS_SIZE (5 * XP_H * XP_W)    /* shifted copies of the padded input, see shifted_input */
#define A1_W 32                      /* conv1 activations: 6 x 28 rows of 32 (28 used) */
#define A1_SIZE (6 * 28 * A1_W)
#define P1_SIZE (6 * 14 * 14 + 8)    /* pool1 output, dense NCHW; padded to 64 bytes */
#define A2_SIZE (100 * 16)           /* conv2 activations, channels last: [10*10][16] */
#define SAVED_SIZE (A1_SIZE + P1_SIZE + A2_SIZE)  /* a multiple of 16: maps stay aligned */
/* With batch norm in training, the maps before it (its backward pass needs them) and the
   pooled conv1 map; the activations are recomputed from those in the backward pass, not
   kept: 33 KB an image instead of 60 (4.2 MB a batch of 128 instead of 7.7), so the rest of
   the training step (the dense layers, the optimizer) finds more of its data in the cache. */
#define BN_P1 0
#define BN_Z1 P1_SIZE
#define BN_Z2 (P1_SIZE + A1_SIZE)
#define SAVED_SIZE_BN (P1_SIZE + A1_SIZE + A2_SIZE)
/* The backward pass with batch norm keeps, per image, between its passes: the gradients at
   conv1's and conv2's outputs */
#define SCRATCH_SIZE_BN (A1_SIZE + A2_SIZE)
#define ALIGNED __attribute__((aligned(64)))
#define DYC_W 32                     /* conv2 output gradient rows, zero-padded for the
                                        transposed convolution */

int lenet5_saved_floats(int batch_norm) { return batch_norm ? SAVED_SIZE_BN : SAVED_SIZE; }
int lenet5_scratch_floats(void) { return SCRATCH_SIZE_BN; }  /* per image, backward with BN */
int lenet5_abi_version(void) { return 9; }
int lenet5_vector_width(void) { return VW; }  /* floats per vector in this build */

int lenet5_parallel(void) {  /* 1 if chunks run in parallel (built with OpenMP) */
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#define GRAD_FLOATS (150 + 6 + 2400 + 16 + 44)  /* conv grads, then batch norm grads */

static inline int chunk_start(int n, int parts, int k) { return (int)((long)n * k / parts); }

static inline vf loadv(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void storev(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){0} + x; }
static inline vf selectv(vi m, vf a, vf b) {
    return (vf)((m & (vi)a) | (~m & (vi)b));
}
static inline float hsum(vf v) {
    float s = 0.0f;
    for (int k = 0; k < VW; k++) s += v[k];
    return s;
}

/* 1 in the lanes of a row's vector v that hold real columns (< 28), 0 in the spare ones. */
static inline vf col_mask(int v) {
    vf m;
    for (int k = 0; k < VW; k++) m[k] = v * VW + k < 28 ? 1.0f : 0.0f;
    return m;
}
/* Only a row's last vectors reach the spare columns 28..31. */
#define HAS_SPARE(v) (((v) + 1) * VW > 28)

/* exp(x) to ~1 ulp (Cephes' expf), vectorised; NaN stays NaN. */
static inline vf vexp(vf x) {
    x = selectv(x > 88.3762626647949f, splat(88.3762626647949f), x);
    x = selectv(x < -87.3365447504f, splat(-87.3365447504f), x);
    vf t = x * 1.44269504088896341f + 0.5f;
    vi n = __builtin_convertvector(t, vi);
    n += (vi)(__builtin_convertvector(n, vf) > t);  /* truncation -> floor */
    vf nf = __builtin_convertvector(n, vf);
    vf r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf y = p * r * r + r + 1.0f;
    return y * (vf)((n + 127) << 23);
}

/* 1/d for d >= 1: the ISA's estimate and Newton steps (~1 ulp) where it has one; a
   division is several times slower. */
static inline vf reciprocal(vf d) {
#if VW == 16 && defined(__AVX512F__)
    vf r = (vf)_mm512_rcp14_ps((__m512)d);  /* 14 bits */
    return r * (2.0f - d * r);
#elif VW == 8 && defined(__AVX__)
    vf r = (vf)_mm256_rcp_ps((__m256)d);  /* 12 bits: one step gives ~23 */
    return r * (2.0f - d * r);
#elif VW == 4 && defined(__SSE2__)
    vf r = (vf)_mm_rcp_ps((__m128)d);
    return r * (2.0f - d * r);
#elif VW == 4 && defined(__ARM_NEON)
    float32x4_t e = vrecpeq_f32((float32x4_t)d);  /* 8 bits: two steps */
    e = vmulq_f32(vrecpsq_f32((float32x4_t)d, e), e);
    e = vmulq_f32(vrecpsq_f32((float32x4_t)d, e), e);
    return (vf)e;
#else
    return 1.0f / d;
#endif
}

static inline vf activate(vf x, int act) {
    if (act == ACT_RELU) return selectv(x > 0.0f, x, splat(0.0f));
    return reciprocal(1.0f + vexp(-x));
}

/* d(activation)/d(input), from the activation's output. */
static inline vf activation_slope(vf a, int act) {
    if (act == ACT_RELU) return selectv(a > 0.0f, splat(1.0f), splat(0.0f));
    return a * (1.0f - a);
}

/* The zero-padded input as 5 copies, one per kernel column kj: xs[kj][r][j] = padded[r][j+kj]
   for 32 rows and 32 columns. The convolution loops then load whole aligned rows; loads
   at other offsets straddle two cache lines and cost twice as much. */
static void shifted_input(const float *x, float *xs) {
    ALIGNED float padded[XP_H * 48];  /* 48 wide: room for a 32-float read at offset kj */
    memset(padded, 0, sizeof padded);
    for (int i = 0; i < 28; i++) memcpy(padded + (i + 2) * 48 + 2, x + i * 28, 28 * sizeof(float));
    for (int kj = 0; kj < 5; kj++)
        for (int r = 0; r < XP_H; r++)
            for (int v = 0; v < NR; v++)
                storev(xs + (kj * XP_H + r) * XP_W + v * VW, loadv(padded + r * 48 + kj + v * VW));
}

/* Pooled value of a 2x2 window; for max, the first maximum in row-major order (as PyTorch). */
static inline float pool4(float a, float b, float c, float d, int pool) {
    if (pool == POOL_AVG) return 0.25f * (a + b + c + d);
    float m = a;
    m = b > m ? b : m;
    m = c > m ? c : m;
    m = d > m ? d : m;
    return m;
}

/* ---- forward stages, one image each ---- */

/* conv1 before its activation: z[c][i][0..31] (columns 28..31 are spare lanes). A block of
   two vectors of a row, all 6 channels at once: 12 accumulators at any width. */
static void conv1_raw(const float *xs, const float *w1, const float *b1, float *z) {
    for (int i = 0; i < 28; i++)
        for (int v = 0; v < NR; v += 2) {
            vf acc[6][2];
            for (int c = 0; c < 6; c++) acc[c][0] = acc[c][1] = splat(b1[c]);
            for (int ki = 0; ki < 5; ki++)
                for (int kj = 0; kj < 5; kj++) {
                    const float *row = xs + (kj * XP_H + i + ki) * XP_W + v * VW;
                    vf lo = loadv(row), hi = loadv(row + VW);
                    for (int c = 0; c < 6; c++) {
                        float w = w1[c * 25 + ki * 5 + kj];
                        acc[c][0] += w * lo;
                        acc[c][1] += w * hi;
                    }
                }
            for (int c = 0; c < 6; c++) {
                storev(z + (c * 28 + i) * A1_W + v * VW, acc[c][0]);
                storev(z + (c * 28 + i) * A1_W + (v + 1) * VW, acc[c][1]);
            }
        }
}

/* a1 = act(z * scale + shift) per channel (the batch norm's affine; 1 and 0 without one).
   z may be a1. The backward pass with batch norm recomputes a1 with this same function:
   the same floats as the forward pass's. */
static void activate1(const float *z, const float *scale, const float *shift, float *a1,
                      int act) {
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 28; i++) {
            const float *src = z + (c * 28 + i) * A1_W;
            float *dst = a1 + (c * 28 + i) * A1_W;
            for (int v = 0; v < NR; v++)
                storev(dst + v * VW, activate(loadv(src + v * VW) * scale[c] + shift[c], act));
        }
}

/* a1 = activate1(z), then 2x2 pooling into p1. z may be a1. */
static void act_pool1(const float *z, const float *scale, const float *shift, float *a1,
                      float *p1, int act, int pool) {
    activate1(z, scale, shift, a1, act);
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 14; i++) {
            const float *r0 = a1 + (c * 28 + 2 * i) * A1_W, *r1 = r0 + A1_W;
            for (int j = 0; j < 14; j++)
                p1[(c * 14 + i) * 14 + j] =
                    pool4(r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1], pool);
        }
}

/* conv2 before its activation, channels last: z2[pixel][16]. A block of C2_PIX pixels of a
   row, NV vectors each (10 accumulators at any width), shares each weight load. */
static void conv2_raw(const float *p1, const float *w2t, const float *b2, float *z2) {
    for (int i = 0; i < 10; i++)
        for (int j0 = 0; j0 < 10; j0 += C2_PIX) {
            vf acc[C2_PIX][NV];
            for (int j = 0; j < C2_PIX; j++)
                for (int h = 0; h < NV; h++) acc[j][h] = loadv(b2 + h * VW);
            for (int ci = 0; ci < 6; ci++)
                for (int ki = 0; ki < 5; ki++) {
                    const float *row = p1 + (ci * 14 + i + ki) * 14 + j0;
                    for (int kj = 0; kj < 5; kj++) {
                        vf w[NV];
                        for (int h = 0; h < NV; h++)
                            w[h] = loadv(w2t + ((ci * 5 + ki) * 5 + kj) * 16 + h * VW);
                        for (int j = 0; j < C2_PIX; j++) {
                            float x = row[j + kj];
                            for (int h = 0; h < NV; h++) acc[j][h] += w[h] * x;
                        }
                    }
                }
            for (int j = 0; j < C2_PIX; j++)
                for (int h = 0; h < NV; h++)
                    storev(z2 + (i * 10 + j0 + j) * 16 + h * VW, acc[j][h]);
        }
}

/* a2 = act(z2 * scale + shift) per channel (z2 may be a2); recomputed as activate1's. */
static void activate2(const float *z2, const float *scale, const float *shift, float *a2,
                      int act) {
    for (int p = 0; p < 100; p++)
        for (int h = 0; h < NV; h++)
            storev(a2 + p * 16 + h * VW,
                   activate(loadv(z2 + p * 16 + h * VW) * loadv(scale + h * VW)
                            + loadv(shift + h * VW), act));
}

/* a2 = activate2(z2), then 2x2 pooling written in PyTorch's (C, H, W) order for the dense
   layers. z2 may be a2. */
static void act_pool2(const float *z2, const float *scale, const float *shift, float *a2,
                      float *out, int act, int pool) {
    activate2(z2, scale, shift, a2, act);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++)
            for (int h = 0; h < NV; h++) {
                const float *q = a2 + ((2 * i) * 10 + 2 * j) * 16 + h * VW;
                vf a = loadv(q), b = loadv(q + 16), c = loadv(q + 160), d = loadv(q + 176);
                vf m;
                if (pool == POOL_AVG) {
                    m = 0.25f * (a + b + c + d);
                } else {
                    m = a;
                    m = selectv(b > m, b, m);
                    m = selectv(c > m, c, m);
                    m = selectv(d > m, d, m);
                }
                for (int k = 0; k < VW; k++) out[(h * VW + k) * 25 + i * 5 + j] = m[k];
            }
}

/* Per-channel sums over one image's conv1 map (columns < 28 only) of z, or, given the
   batch's mean, of (z - mean)^2: the variance in two passes, not as E[z^2] - mean^2, whose
   cancellation in float32 cost the forward pass 10x PyTorch's error. */
static void stats1(const float *z, const float *mean, double *out) {
    for (int c = 0; c < 6; c++) {
        vf s = splat(0.0f);
        for (int i = 0; i < 28; i++)
            for (int v = 0; v < NR; v++) {
                vf x = loadv(z + (c * 28 + i) * A1_W + v * VW);
                if (mean) x = (x - mean[c]) * (x - mean[c]);
                if (HAS_SPARE(v)) x *= col_mask(v);
                s += x;
            }
        out[c] += hsum(s);
    }
}

static void stats2(const float *z2, const float *mean, double *out) {
    for (int h = 0; h < NV; h++) {
        vf s = splat(0.0f), m = mean ? loadv(mean + h * VW) : splat(0.0f);
        for (int p = 0; p < 100; p++) {
            vf v = loadv(z2 + p * 16 + h * VW);
            s += mean ? (v - m) * (v - m) : v;
        }
        for (int k = 0; k < VW; k++) out[h * VW + k] += s[k];
    }
}

static void transpose_w2(const float *w2, float *w2t) {  /* [16][150] -> [150][16] */
    for (int co = 0; co < 16; co++)
        for (int k = 0; k < 150; k++) w2t[k * 16 + co] = w2[co * 150 + k];
}

/* ---- bfloat16 dot products (AVX512-BF16) ----
   Where the caller allows it (as PyTorch's fp32_precision "bf16" allows oneDNN) and the
   build has AVX512-BF16, each convolution multiplies bfloat16 operands, rounded to nearest
   even from the float32 maps, gradients and weights, and sums in float32: vdpbf16ps does
   32 multiply-adds an instruction, twice a float32 FMA's 16, at the same rate on Zen 4.
   The operands go in pairs along a summed dimension (two channels, two pixels, two taps),
   a pair in 32 bits, the first in the low half. Everything else (batch norm, activations,
   pooling, the biases' gradients, what is kept for the backward pass) stays float32. */
#if VW == 16 && defined(__AVX512BF16__) && defined(__AVX512BW__)
#define BF16_DOT 1
#include <stdint.h>
typedef uint32_t pair_t;

static inline vf dot2(vf acc, __m512i a, __m512i b) {  /* acc + a.lo*b.lo + a.hi*b.hi */
    return (vf)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
}

static inline __m512i bcast2(const void *p) {  /* the pair at p (any alignment), 16 times */
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32((int)v);
}

/* 16 pairs (lo[k], hi[k]). */
static inline __m512i pair_up(vf lo, vf hi) {
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                           25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                           18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(order,
                                    (__m512i)_mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo));
}

/* 16 floats -> 16 bfloat16 in order (8 pairs of neighbours) */
static inline void store_bf16(void *dst, vf x) {
    _mm256_storeu_si256(dst, (__m256i)_mm512_cvtneps_pbh((__m512)x));
}

/* One float -> bfloat16 bits as the instructions round: nearest even, denormals to zero. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  /* NaN stays NaN */
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

typedef struct {  /* the weights as the bf16 convolutions read them, made once a call */
    __m512i w2c[75];       /* conv2 forward: [input-channel pair][ki][kj], 16 outputs */
    pair_t w2q[150 * 8];   /* conv2's input gradient: [ci][ki][kj][output-channel pair] */
    pair_t w1q[6 * 5 * 3]; /* conv1 forward: [c][ki][kj pair], taps (0,1) (2,3) (4,-) */
} Bf16Weights;

static void bf16_weights(const float *w1, const float *w2t, Bf16Weights *bw) {
    for (int cp = 0; cp < 3; cp++)
        for (int t = 0; t < 25; t++)
            bw->w2c[cp * 25 + t] = pair_up(loadv(w2t + ((2 * cp) * 25 + t) * 16),
                                           loadv(w2t + ((2 * cp + 1) * 25 + t) * 16));
    for (int k = 0; k < 150; k++) store_bf16(bw->w2q + k * 8, loadv(w2t + k * 16));
    for (int c = 0; c < 6 && w1; c++)  /* (the backward pass has no w1q to make) */
        for (int ki = 0; ki < 5; ki++)
            for (int p = 0; p < 3; p++) {
                const float *w = w1 + c * 25 + ki * 5 + 2 * p;
                bw->w1q[(c * 5 + ki) * 3 + p] = bf16_bits(w[0]) | (p < 2 ? bf16_bits(w[1]) << 16 : 0);
            }
}

/* The zero-padded input (32 rows of 48): xq[p][r][x] = (pad[r][x+2p], pad[r][x+2p+1]) for
   conv1's forward pass (p < 3, x < 32), or xh[r][x] = pad[r][x] in bfloat16 for its
   weight gradient. */
static void input_bf16(const float *x, pair_t *xq, uint16_t *xh) {
    /* per thread, zero at its start: every call writes the same interior, the border stays
       zero (a memset each image cost more than the conversion) */
    static _Thread_local ALIGNED float pad[XP_H * 48];
    for (int i = 0; i < 28; i++) memcpy(pad + (i + 2) * 48 + 2, x + i * 28, 28 * sizeof(float));
    for (int r = 0; r < XP_H; r++) {
        const float *row = pad + r * 48;
        if (xq)
            for (int p = 0; p < 3; p++)
                for (int v = 0; v < 32; v += 16)
                    _mm512_storeu_si512(xq + (p * XP_H + r) * 32 + v,
                                        pair_up(loadv(row + 2 * p + v),
                                                loadv(row + 2 * p + 1 + v)));
        if (xh)
            for (int v = 0; v < 48; v += 16) store_bf16(xh + r * 48 + v, loadv(row + v));
    }
}

static void conv1_raw_bf16(const pair_t *xq, const pair_t *w1q, const float *b1, float *z) {
    for (int i = 0; i < 28; i++) {
        vf acc[6][2];
        for (int c = 0; c < 6; c++) acc[c][0] = acc[c][1] = splat(b1[c]);
        for (int ki = 0; ki < 5; ki++)
            for (int p = 0; p < 3; p++) {
                const pair_t *row = xq + (p * XP_H + i + ki) * 32;
                __m512i lo = _mm512_loadu_si512(row), hi = _mm512_loadu_si512(row + 16);
                for (int c = 0; c < 6; c++) {
                    __m512i w = _mm512_set1_epi32((int)w1q[(c * 5 + ki) * 3 + p]);
                    acc[c][0] = dot2(acc[c][0], lo, w);
                    acc[c][1] = dot2(acc[c][1], hi, w);
                }
            }
        for (int c = 0; c < 6; c++) {
            storev(z + (c * 28 + i) * A1_W, acc[c][0]);
            storev(z + (c * 28 + i) * A1_W + 16, acc[c][1]);
        }
    }
}

/* conv2 before its activation (z2[pixel][16]) from pairs of input channels. */
static void conv2_raw_bf16(const float *p1, const __m512i *w2c, const float *b2, float *z2) {
    ALIGNED pair_t p1c[3 * 196];  /* [channel pair][14 * 14] */
    for (int cp = 0; cp < 3; cp++) {
        const float *lo = p1 + 2 * cp * 196, *hi = lo + 196;
        int k = 0;
        for (; k + 16 <= 196; k += 16)
            _mm512_storeu_si512(p1c + cp * 196 + k, pair_up(loadv(lo + k), loadv(hi + k)));
        for (; k < 196; k++) p1c[cp * 196 + k] = bf16_bits(lo[k]) | bf16_bits(hi[k]) << 16;
    }
    for (int i = 0; i < 10; i++) {
        vf acc[10];
        for (int j = 0; j < 10; j++) acc[j] = loadv(b2);
        for (int cp = 0; cp < 3; cp++)
            for (int ki = 0; ki < 5; ki++)
                for (int kj = 0; kj < 5; kj++) {
                    __m512i w = w2c[(cp * 5 + ki) * 5 + kj];
                    const pair_t *row = p1c + cp * 196 + (i + ki) * 14 + kj;
                    for (int j = 0; j < 10; j++)
                        acc[j] = dot2(acc[j], w, _mm512_set1_epi32((int)row[j]));
                }
        for (int j = 0; j < 10; j++) storev(z2 + (i * 10 + j) * 16, acc[j]);
    }
}

/* conv2_backward's work with bf16 products: the weight gradient from pairs of neighbouring
   pixels, the input gradient from pairs of output channels. */
static void conv2_backward_bf16(const float *dz2, const float *p1, const pair_t *w2q,
                                float *gw2t, double *gb2, float *dp1) {
    vf s = splat(0.0f);
    for (int p = 0; p < 100; p++) s += loadv(dz2 + p * 16);
    for (int k = 0; k < 16; k++) gb2[k] += s[k];
    __m512i dzp[50];  /* [row][pixel pair], 16 channels */
    for (int i = 0; i < 10; i++)
        for (int jp = 0; jp < 5; jp++)
            dzp[i * 5 + jp] = pair_up(loadv(dz2 + (i * 10 + 2 * jp) * 16),
                                      loadv(dz2 + (i * 10 + 2 * jp + 1) * 16));
    ALIGNED uint16_t p1h[6 * 196];
    int k = 0;
    for (; k + 16 <= 6 * 196; k += 16) store_bf16(p1h + k, loadv(p1 + k));
    for (; k < 6 * 196; k++) p1h[k] = (uint16_t)bf16_bits(p1[k]);
    for (int ci = 0; ci < 6; ci++)
        for (int ki = 0; ki < 5; ki += 2) {
            int rows = ki + 1 < 5 ? 2 : 1;
            float *g = gw2t + (ci * 5 + ki) * 5 * 16;
            vf a[5], b[5];
            for (int kj = 0; kj < 5; kj++) {
                a[kj] = loadv(g + kj * 16);
                b[kj] = rows == 2 ? loadv(g + (5 + kj) * 16) : splat(0.0f);
            }
            for (int i = 0; i < 10; i++) {
                const uint16_t *r0 = p1h + (ci * 14 + i + ki) * 14, *r1 = r0 + 14;
                for (int jp = 0; jp < 5; jp++) {
                    __m512i d = dzp[i * 5 + jp];
                    for (int kj = 0; kj < 5; kj++) a[kj] = dot2(a[kj], d, bcast2(r0 + 2 * jp + kj));
                    if (rows == 2)
                        for (int kj = 0; kj < 5; kj++)
                            b[kj] = dot2(b[kj], d, bcast2(r1 + 2 * jp + kj));
                }
            }
            for (int kj = 0; kj < 5; kj++) {
                storev(g + kj * 16, a[kj]);
                if (rows == 2) storev(g + (5 + kj) * 16, b[kj]);
            }
        }
    if (!dp1) return;
    /* input gradient: as conv2_backward's, dz rows -1 and 10 zero, columns offset by 4 */
    /* [output-channel pair][row + 1][column + 4], its zero border kept as input_bf16's */
    static _Thread_local ALIGNED pair_t dzq[8 * 12 * DYC_W];
    for (int p = 0; p < 100; p++) {
        pair_t pairs[8];
        store_bf16(pairs, loadv(dz2 + p * 16));
        for (int cop = 0; cop < 8; cop++)
            dzq[(cop * 12 + p / 10 + 1) * DYC_W + 4 + p % 10] = pairs[cop];
    }
    for (int y = 0; y < 14; y += 2) {
        vf a[6], b[6];
        for (int ci = 0; ci < 6; ci++) a[ci] = b[ci] = splat(0.0f);
        for (int ki = 0; ki < 5; ki++) {
            int r = y - ki;
            if (r < -1 || r > 9) continue;
            for (int cop = 0; cop < 8; cop++) {
                const pair_t *row = dzq + (cop * 12 + r + 1) * DYC_W + 4;
                for (int kj = 0; kj < 5; kj++) {
                    __m512i v0 = _mm512_loadu_si512(row - kj);
                    __m512i v1 = _mm512_loadu_si512(row + DYC_W - kj);
                    for (int ci = 0; ci < 6; ci++) {
                        __m512i w = _mm512_set1_epi32((int)w2q[(ci * 25 + ki * 5 + kj) * 8 + cop]);
                        a[ci] = dot2(a[ci], v0, w);
                        b[ci] = dot2(b[ci], v1, w);
                    }
                }
            }
        }
        for (int ci = 0; ci < 6; ci++) {
            storev(dp1 + (ci * 14 + y) * 16, a[ci]);
            storev(dp1 + (ci * 14 + y + 1) * 16, b[ci]);
        }
    }
}

/* conv1_backward with bf16 products: pairs of neighbouring columns of dz1 and the input. */
static void conv1_backward_bf16(const float *dz1, const float *x, double *g1) {
    ALIGNED uint16_t xh[XP_H * 48], dyh[28 * 32];
    input_bf16(x, NULL, xh);
    double *gw1 = g1, *gb1 = g1 + 150;
    for (int c = 0; c < 6; c++) {
        const float *d = dz1 + c * 28 * A1_W;
        vf s = splat(0.0f);
        for (int i = 0; i < 28; i++) {
            vf lo = loadv(d + i * A1_W), hi = loadv(d + i * A1_W + 16);
            s += lo + hi;
            _mm512_storeu_si512(dyh + i * 32,
                                (__m512i)_mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo));
        }
        gb1[c] += hsum(s);
        for (int ki = 0; ki < 5; ki += 2) {  /* rows ki and ki+1 share each dy load */
            int rows = ki + 1 < 5 ? 2 : 1;
            vf a[5], b[5];
            for (int kj = 0; kj < 5; kj++) a[kj] = b[kj] = splat(0.0f);
            for (int i = 0; i < 28; i++) {
                __m512i dy = _mm512_loadu_si512(dyh + i * 32);
                const uint16_t *r0 = xh + (i + ki) * 48;
                for (int kj = 0; kj < 5; kj++)
                    a[kj] = dot2(a[kj], dy, _mm512_loadu_si512(r0 + kj));
                if (rows == 2)
                    for (int kj = 0; kj < 5; kj++)
                        b[kj] = dot2(b[kj], dy, _mm512_loadu_si512(r0 + 48 + kj));
            }
            for (int kj = 0; kj < 5; kj++) {
                gw1[c * 25 + ki * 5 + kj] += hsum(a[kj]);
                if (rows == 2) gw1[c * 25 + (ki + 1) * 5 + kj] += hsum(b[kj]);
            }
        }
    }
}
#else
#define BF16_DOT 0
typedef struct { int unused; } Bf16Weights;
static inline void bf16_weights(const float *w1, const float *w2t, Bf16Weights *bw) {
    (void)w1, (void)w2t, (void)bw;
}
#endif

int lenet5_bf16_dot(void) { return BF16_DOT; }  /* 1 if this build has the bf16 products */

/* The conv layers by either arithmetic: bw is NULL for float32 products. */
static void conv1_forward(const float *x, const float *w1, const float *b1,
                          const Bf16Weights *bw, float *z) {
#if BF16_DOT
    if (bw) {
        ALIGNED pair_t xq[3 * XP_H * 32];
        input_bf16(x, xq, NULL);
        conv1_raw_bf16(xq, bw->w1q, b1, z);
        return;
    }
#endif
    (void)bw;
    ALIGNED float xs[XS_SIZE];
    shifted_input(x, xs);
    conv1_raw(xs, w1, b1, z);
}

static void conv2_forward(const float *p1, const float *w2t, const float *b2,
                          const Bf16Weights *bw, float *z2) {
#if BF16_DOT
    if (bw) {
        conv2_raw_bf16(p1, bw->w2c, b2, z2);
        return;
    }
#endif
    (void)bw;
    conv2_raw(p1, w2t, b2, z2);
}


/* ---- batch norm ----
   bn (89 floats): gamma1[6] beta1[6] gamma2[16] beta2[16] mean1[6] var1[6] mean2[16]
   var2[16] eps. Training (BN_BATCH): the forward pass writes the batch's mean and biased
   variance there; the backward pass reads them. Inference (BN_GIVEN): they are the running
   statistics, read. */
enum { BN_NONE = 0, BN_BATCH = 1, BN_GIVEN = 2 };
#define BN_GAMMA1 0
#define BN_BETA1 6
#define BN_GAMMA2 12
#define BN_BETA2 28
#define BN_MEAN1 44
#define BN_VAR1 50
#define BN_MEAN2 56
#define BN_VAR2 72
#define BN_EPS 88
#define MAX_PARTS 256

int lenet5_max_parts(void) { return MAX_PARTS; }  /* callers size their buffers by it */

/* scale = gamma / sqrt(var + eps), shift = beta - mean * scale: the affine the batch norm is,
   once its statistics are known; identity without batch norm. */
static void bn_affine(const float *bn, int mode, int block, float *scale, float *shift) {
    int channels = block == 1 ? 6 : 16;
    for (int c = 0; c < channels; c++) {
        if (mode == BN_NONE) {
            scale[c] = 1.0f;
            shift[c] = 0.0f;
            continue;
        }
        float gamma = bn[(block == 1 ? BN_GAMMA1 : BN_GAMMA2) + c];
        float beta = bn[(block == 1 ? BN_BETA1 : BN_BETA2) + c];
        float mean = bn[(block == 1 ? BN_MEAN1 : BN_MEAN2) + c];
        float var = bn[(block == 1 ? BN_VAR1 : BN_VAR2) + c];
        scale[c] = gamma / sqrtf(var + bn[BN_EPS]);
        shift[c] = beta - mean * scale[c];
    }
}

/* Totals over the chunks, in chunk order, of per-chunk sums laid out [part][2][channels]:
   first[c] and second[c] sum the two halves. */
static void chunk_totals(const double *sums, int parts, int channels, double *first,
                         double *second) {
    for (int c = 0; c < channels; c++) {
        double a = 0.0, b = 0.0;
        for (int k = 0; k < parts; k++) {
            a += sums[k * 2 * channels + c];
            b += sums[k * 2 * channels + channels + c];
        }
        first[c] = a;
        second[c] = b;
    }
}

/* The batch's mean (what = 0) or biased variance (what = 1) from per-chunk sums of z or of
   (z - mean)^2. */
static void bn_batch_stat(const double *sums, int parts, int channels, double count, int what,
                          float *out) {
    double s[16], q[16];
    chunk_totals(sums, parts, channels, s, q);
    for (int c = 0; c < channels; c++) out[c] = (float)((what ? q[c] : s[c]) / count);
}

/* One image through both blocks in one pass, its maps (kept in `maps`) still in L1 from one
   layer to the next; the batch norms, if any, as the affine of known statistics. */
static void forward_image(const float *x, const float *w1, const float *b1, const float *w2t,
                          const float *b2, const float *scale1, const float *shift1,
                          const float *scale2, const float *shift2, float *out, float *maps,
                          int act, int pool, const Bf16Weights *bw) {
    float *a1 = maps, *p1 = maps + A1_SIZE, *a2 = maps + A1_SIZE + P1_SIZE;
    conv1_forward(x, w1, b1, bw, a1);
    act_pool1(a1, scale1, shift1, a1, p1, act, pool);
    conv2_forward(p1, w2t, b2, bw, a2);
    act_pool2(a2, scale2, shift2, a2, out, act, pool);
}

/* n images: x (n,1,28,28) -> out (n,16,5,5), in `parts` parallel chunks. saved: n *
   lenet5_saved_floats(bn_mode == BN_BATCH) floats, or, when save is 0 (and not BN_BATCH),
   parts * lenet5_saved_floats(0) floats of scratch. */
void lenet5_forward(int n, int parts, const float *x, const float *w1, const float *b1,
                    const float *w2, const float *b2, float *out, float *saved, int save,
                    int act, int pool, int bn_mode, float *bn, int bf16) {
    ALIGNED float w2t[150 * 16];
    float scale1[6], shift1[6];
    ALIGNED float scale2[16], shift2[16];
    transpose_w2(w2, w2t);
    ALIGNED Bf16Weights bf16_w;
    const Bf16Weights *bw = bf16 && BF16_DOT ? &bf16_w : NULL;
    if (bw) bf16_weights(w1, w2t, &bf16_w);
    if (parts > MAX_PARTS) parts = MAX_PARTS;

    if (bn_mode != BN_BATCH) {  /* one pass: each image's maps stay in L1 between layers */
        bn_affine(bn, bn_mode, 1, scale1, shift1);
        bn_affine(bn, bn_mode, 2, scale2, shift2);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
        for (int k = 0; k < parts; k++)
            for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++)
                forward_image(x + (long)b * 784, w1, b1, w2t, b2, scale1, shift1, scale2, shift2,
                              out + (long)b * 400, saved + (long)(save ? b : k) * SAVED_SIZE,
                              act, pool, bw);
        return;
    }
    /* Batch statistics couple the images: three passes with a reduction between them. */
    double sums1[MAX_PARTS][12], sums2[MAX_PARTS][32];
    memset(sums1, 0, sizeof(double) * 12 * parts);
    memset(sums2, 0, sizeof(double) * 32 * parts);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            float *z1 = saved + (long)b * SAVED_SIZE_BN + BN_Z1;
            conv1_forward(x + (long)b * 784, w1, b1, bw, z1);
            stats1(z1, NULL, sums1[k]);
        }
    bn_batch_stat(&sums1[0][0], parts, 6, (double)n * 784, 0, bn + BN_MEAN1);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++)
            stats1(saved + (long)b * SAVED_SIZE_BN + BN_Z1, bn + BN_MEAN1, sums1[k] + 6);
    bn_batch_stat(&sums1[0][0], parts, 6, (double)n * 784, 1, bn + BN_VAR1);
    bn_affine(bn, bn_mode, 1, scale1, shift1);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            ALIGNED float a1[A1_SIZE];
            float *m = saved + (long)b * SAVED_SIZE_BN;
            act_pool1(m + BN_Z1, scale1, shift1, a1, m + BN_P1, act, pool);
            conv2_forward(m + BN_P1, w2t, b2, bw, m + BN_Z2);
            stats2(m + BN_Z2, NULL, sums2[k]);
        }
    bn_batch_stat(&sums2[0][0], parts, 16, (double)n * 100, 0, bn + BN_MEAN2);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++)
            stats2(saved + (long)b * SAVED_SIZE_BN + BN_Z2, bn + BN_MEAN2, sums2[k] + 16);
    bn_batch_stat(&sums2[0][0], parts, 16, (double)n * 100, 1, bn + BN_VAR2);
    bn_affine(bn, bn_mode, 2, scale2, shift2);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            ALIGNED float a2[A2_SIZE];
            act_pool2(saved + (long)b * SAVED_SIZE_BN + BN_Z2, scale2, shift2, a2,
                      out + (long)b * 400, act, pool);
        }
}

/* ---- backward stages, one image each ---- */

/* Gradient at each position of a 2x2 window given the pooled gradient g; d0 and d1 (rows
   2i and 2i+1 of the map's gradient, A1_W apart) start zeroed. For max pooling, m is the
   window's pooled value and the first position holding it takes g, as in PyTorch. */
static inline void unpool4(float g, float m, const float *r0, const float *r1, int j,
                           float *d0, int pool) {
    if (pool == POOL_AVG) {
        float q = 0.25f * g;
        d0[2 * j] = d0[2 * j + 1] = d0[A1_W + 2 * j] = d0[A1_W + 2 * j + 1] = q;
        return;
    }
    /* arithmetic, not branches: which position wins is data, and GCC's branches on it
       mispredicted often enough to triple the cost of the whole backward pass */
    int not_a = r0[2 * j] != m, not_b = r0[2 * j + 1] != m, not_c = r1[2 * j] != m;
    int win = not_a * (1 + not_b * (1 + not_c));
    d0[(win >> 1) * A1_W + 2 * j + (win & 1)] = g;
}

/* gw[ki][kj] += sum_{i,j} dy[i][j] * padded[i+ki][j+kj] for one conv1 channel: one pass
   over the rows per ki and block of two vectors, with ten independent accumulators (few
   enough to stay in registers, enough to hide the FMA latency). */
static void conv1_weight_grad(const float *dy, const float *xs, double *gw) {
    for (int ki = 0; ki < 5; ki++) {
        vf lo_acc[5], hi_acc[5];
        for (int kj = 0; kj < 5; kj++) lo_acc[kj] = hi_acc[kj] = splat(0.0f);
        for (int v = 0; v < NR; v += 2)
            for (int i = 0; i < 28; i++) {
                vf lo = loadv(dy + i * A1_W + v * VW), hi = loadv(dy + i * A1_W + (v + 1) * VW);
                for (int kj = 0; kj < 5; kj++) {
                    const float *row = xs + (kj * XP_H + i + ki) * XP_W + v * VW;
                    lo_acc[kj] += lo * loadv(row);
                    hi_acc[kj] += hi * loadv(row + VW);
                }
            }
        for (int kj = 0; kj < 5; kj++) gw[ki * 5 + kj] += hsum(lo_acc[kj] + hi_acc[kj]);
    }
}

/* pool2 and activation backward: the gradient at conv2's (normalised) output,
   dy2[100][16]. */
static void act_pool2_backward(const float *gout, const float *a2, float *dy2, int act,
                               int pool) {
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            int pix[4] = {(2 * i) * 10 + 2 * j, (2 * i) * 10 + 2 * j + 1,
                          (2 * i + 1) * 10 + 2 * j, (2 * i + 1) * 10 + 2 * j + 1};
            for (int h = 0; h < NV; h++) {
                vf g;
                for (int k = 0; k < VW; k++) g[k] = gout[(h * VW + k) * 25 + i * 5 + j];
                vf a[4];
                for (int k = 0; k < 4; k++) a[k] = loadv(a2 + pix[k] * 16 + h * VW);
                if (pool == POOL_AVG) {
                    for (int k = 0; k < 4; k++)
                        storev(dy2 + pix[k] * 16 + h * VW,
                               0.25f * g * activation_slope(a[k], act));
                } else {
                    vf m = a[0];
                    vi win = (vi){0};
                    for (int k = 1; k < 4; k++) {
                        vi better = a[k] > m;
                        m = selectv(better, a[k], m);
                        win = (better & k) | (~better & win);
                    }
                    for (int k = 0; k < 4; k++)
                        storev(dy2 + pix[k] * 16 + h * VW,
                               selectv(win == k, g, splat(0.0f)) * activation_slope(a[k], act));
                }
            }
        }
}

/* conv2 backward from dz2 ([100][16], gradient at its raw output): bias and weight gradients
   added to gb2[16] and gw2t ([150][16], channels last), input gradient into dp1[6][14][16]. */
static void conv2_backward(const float *dz2, const float *p1, const float *w2, float *gw2t,
                           double *gb2, float *dp1) {
    /* the bias gradient in double across images: after a batch norm it is a sum of terms
       that cancel (the norm removes the bias), and float across a chunk lost 5 digits */
    for (int h = 0; h < NV; h++) {
        vf s = splat(0.0f);
        for (int p = 0; p < 100; p++) s += loadv(dz2 + p * 16 + h * VW);
        for (int k = 0; k < VW; k++) gb2[h * VW + k] += s[k];
    }
    /* weight gradient: kernel rows ki and ki+1 together, ten accumulators sharing each dz2
       load (five chains left the FMA units waiting; measured 1.3x faster) */
    for (int ci = 0; ci < 6; ci++)
        for (int ki = 0; ki < 5; ki += 2)
            for (int h = 0; h < NV; h++) {
                int rows = ki + 1 < 5 ? 2 : 1;
                float *g = gw2t + (ci * 5 + ki) * 5 * 16 + h * VW;
                vf a[5], b[5];
                for (int kj = 0; kj < 5; kj++) {
                    a[kj] = loadv(g + kj * 16);
                    b[kj] = rows == 2 ? loadv(g + (5 + kj) * 16) : splat(0.0f);
                }
                for (int i = 0; i < 10; i++) {
                    const float *r0 = p1 + (ci * 14 + i + ki) * 14, *r1 = r0 + 14;
                    for (int j = 0; j < 10; j++) {
                        vf d = loadv(dz2 + (i * 10 + j) * 16 + h * VW);
                        for (int kj = 0; kj < 5; kj++) a[kj] += d * r0[j + kj];
                        if (rows == 2)
                            for (int kj = 0; kj < 5; kj++) b[kj] += d * r1[j + kj];
                    }
                }
                for (int kj = 0; kj < 5; kj++) {
                    storev(g + kj * 16, a[kj]);
                    if (rows == 2) storev(g + (5 + kj) * 16, b[kj]);
                }
            }
    if (!dp1) return;  /* conv1 frozen: no gradient below conv2 */
    /* the input gradient is a transposed convolution, vectorised along each 14-wide row:
       dp1[ci][y][x] = sum_{co,ki,kj} w2[co][ci][ki][kj] * dz2[co][y-ki][x-kj]. Output rows
       y and y+1 together share every weight broadcast (1.2x); dz rows -1 and 10 are zero
       so a pair needs no test per row. */
    ALIGNED float dzc[16 * 12 * DYC_W];
    memset(dzc, 0, sizeof dzc);
    for (int p = 0; p < 100; p++)
        for (int co = 0; co < 16; co++)
            dzc[(co * 12 + p / 10 + 1) * DYC_W + 4 + p % 10] = dz2[p * 16 + co];
    for (int y = 0; y < 14; y += 2)
        for (int h = 0; h < NV; h++) {
            vf a[6], b[6];
            for (int ci = 0; ci < 6; ci++) a[ci] = b[ci] = splat(0.0f);
            for (int ki = 0; ki < 5; ki++) {
                int r = y - ki;  /* the dz row of output row y; r + 1 is row y + 1's */
                if (r < -1 || r > 9) continue;
                for (int co = 0; co < 16; co++) {
                    const float *row = dzc + (co * 12 + r + 1) * DYC_W + 4 + h * VW;
                    for (int kj = 0; kj < 5; kj++) {
                        vf v0 = loadv(row - kj), v1 = loadv(row + DYC_W - kj);
                        for (int ci = 0; ci < 6; ci++) {
                            float w = w2[((co * 6 + ci) * 5 + ki) * 5 + kj];
                            a[ci] += w * v0;
                            b[ci] += w * v1;
                        }
                    }
                }
            }
            for (int ci = 0; ci < 6; ci++) {
                storev(dp1 + (ci * 14 + y) * 16 + h * VW, a[ci]);
                storev(dp1 + (ci * 14 + y + 1) * 16 + h * VW, b[ci]);
            }
        }
}

/* pool1 and activation backward: the gradient at conv1's (normalised) output,
   dy1[6][28][32], spare columns 0. */
static void act_pool1_backward(const float *dp1, const float *a1, const float *p1, float *dy1,
                               int act, int pool) {
#if VW == 16
    /* A row pair of 14 windows at once: each window's gradient and pooled value spread to
       its two columns, the winner of a max window found with lane masks in the scalar
       code's order (a, b, c, else d); every column written (no memset), the spare ones 0.
       The same floats as the scalar code, 1.6x faster with the memset it saves. */
    const __m512i lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __mmask16 even = 0x5555, odd = 0xAAAA, used_hi = 0x0FFF;  /* columns 16..27 */
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 14; i++) {
            __m512 g = _mm512_loadu_ps(dp1 + (c * 14 + i) * 16);
            __m512 m = _mm512_loadu_ps(p1 + (c * 14 + i) * 14);  /* (2 floats past: padded) */
            const float *r0 = a1 + (c * 28 + 2 * i) * A1_W, *r1 = r0 + A1_W;
            float *d0 = dy1 + (c * 28 + 2 * i) * A1_W, *d1 = d0 + A1_W;
            for (int h = 0; h < 2; h++) {
                __m512i spread = h ? hi : lo;
                __m512 gg = _mm512_permutexvar_ps(spread, g), mm = _mm512_permutexvar_ps(spread, m);
                vf a0 = loadv(r0 + 16 * h), a1v = loadv(r1 + 16 * h);
                __m512 top, bottom;
                if (pool == POOL_AVG) {
                    top = bottom = _mm512_mul_ps(_mm512_set1_ps(0.25f), gg);
                } else {
                    __mmask16 e0 = _mm512_cmp_ps_mask((__m512)a0, mm, _CMP_EQ_OQ);
                    __mmask16 e1 = _mm512_cmp_ps_mask((__m512)a1v, mm, _CMP_EQ_OQ);
                    __mmask16 ne0 = (__mmask16)~e0, ne1 = (__mmask16)~e1;
                    __mmask16 win0 = (e0 & even) | (e0 & odd & (__mmask16)(ne0 << 1));
                    __mmask16 win1 = (e1 & even & ne0 & (__mmask16)(ne0 >> 1))
                                     | (odd & ne0 & (__mmask16)(ne0 << 1) & (__mmask16)(ne1 << 1));
                    top = _mm512_maskz_mov_ps(win0, gg);
                    bottom = _mm512_maskz_mov_ps(win1, gg);
                }
                vf t = (vf)top * activation_slope(a0, act);
                vf b = (vf)bottom * activation_slope(a1v, act);
                if (h) {
                    t = (vf)_mm512_maskz_mov_ps(used_hi, (__m512)t);
                    b = (vf)_mm512_maskz_mov_ps(used_hi, (__m512)b);
                }
                storev(d0 + 16 * h, t);
                storev(d1 + 16 * h, b);
            }
        }
    return;
#endif
    memset(dy1, 0, sizeof(float) * A1_SIZE);
    for (int c = 0; c < 6; c++) {
        float *d = dy1 + c * 28 * A1_W;
        for (int i = 0; i < 14; i++) {
            const float *r0 = a1 + (c * 28 + 2 * i) * A1_W, *r1 = r0 + A1_W;
            for (int j = 0; j < 14; j++)
                unpool4(dp1[(c * 14 + i) * 16 + j], p1[(c * 14 + i) * 14 + j], r0, r1, j,
                        d + 2 * i * A1_W, pool);
        }
        for (int i = 0; i < 28; i++) {
            const float *arow = a1 + (c * 28 + i) * A1_W;
            float *row = d + i * A1_W;
            for (int v = 0; v < NR; v++)
                storev(row + v * VW,
                       loadv(row + v * VW) * activation_slope(loadv(arow + v * VW), act));
        }
    }
}

/* conv1's bias and weight gradients from dz1 (gradient at its raw output), added to g1:
   the weight's 150, then the bias's 6. Images add up in double: each weight's gradient sums
   100,000 terms at batch 128, and after a batch norm they cancel. */
static void conv1_backward(const float *dz1, const float *xs, double *g1) {
    double *gw1 = g1, *gb1 = g1 + 150;
    for (int c = 0; c < 6; c++) {
        const float *d = dz1 + c * 28 * A1_W;
        vf s = splat(0.0f);
        for (int i = 0; i < 28; i++)
            for (int v = 0; v < NR; v++) s += loadv(d + i * A1_W + v * VW);
        gb1[c] += hsum(s);
        conv1_weight_grad(d, xs, gw1 + c * 25);
    }
}

/* A chunk's conv2 gradients into its row of grads, in PyTorch's layouts: the weight
   (16,6,5,5) from the channels-last accumulators, then the bias. */
static void store_conv2_grads(const float *gw2t, const double *gb2, float *row) {
    for (int co = 0; co < 16; co++) {
        row[2556 + co] = (float)gb2[co];
        for (int j = 0; j < 150; j++) row[156 + co * 150 + j] = gw2t[j * 16 + co];
    }
}

/* Backward of lenet5_forward given gout (n,16,5,5). Chunk k's gradients of conv1's weight
   (6,1,5,5) and bias (6) and conv2's weight (16,6,5,5) and bias (16) are written, in that
   order, to row k of grads (parts rows of GRAD_FLOATS), then the batch norm's dgamma1,
   dbeta1, dgamma2, dbeta2 (row 0 holds them whole; other rows 0). With BN_BATCH, scratch
   holds n * SCRATCH_SIZE_BN floats. */
static void conv2_backward_any(const float *dz2, const float *p1, const float *w2,
                               const Bf16Weights *bw, float *gw2t, double *gb2, float *dp1) {
#if BF16_DOT
    if (bw) {
        conv2_backward_bf16(dz2, p1, bw->w2q, gw2t, gb2, dp1);
        return;
    }
#endif
    (void)bw;
    conv2_backward(dz2, p1, w2, gw2t, gb2, dp1);
}

static void conv1_backward_any(const float *dz1, const float *x, const Bf16Weights *bw,
                               double *g1) {
#if BF16_DOT
    if (bw) {
        conv1_backward_bf16(dz1, x, g1);
        return;
    }
#endif
    (void)bw;
    ALIGNED float xs[XS_SIZE];
    shifted_input(x, xs);
    conv1_backward(dz1, xs, g1);
}

/* The gradients of both blocks' parameters from gout (n,16,5,5), in `parts` rows of grads
   (GRAD_FLOATS each, summed by the caller). bf16: the products as the forward pass had them.
   first 0: the first block is frozen (its parameters need no gradient), so neither its
   gradients nor conv2's input gradient are computed; its rows stay 0. */
void lenet5_backward(int n, int parts, const float *x, const float *w2, const float *saved,
                     const float *gout, float *grads, int act, int pool, int bn_mode,
                     const float *bn, float *scratch, int bf16, int first) {
    if (parts > MAX_PARTS) parts = MAX_PARTS;
    memset(grads, 0, sizeof(float) * GRAD_FLOATS * parts);
    ALIGNED Bf16Weights bf16_w;
    const Bf16Weights *bw = bf16 && BF16_DOT ? &bf16_w : NULL;
    if (bw) {
        ALIGNED float w2t[150 * 16];
        transpose_w2(w2, w2t);
        bf16_weights(NULL, w2t, &bf16_w);
    }

    if (bn_mode != BN_BATCH) {
#pragma omp parallel for num_threads(parts) schedule(static, 1)
        for (int k = 0; k < parts; k++) {
            float *row = grads + (long)k * GRAD_FLOATS;
            ALIGNED float gw2t[150 * 16];
            double gb2[16] = {0}, g1[156] = {0};
            memset(gw2t, 0, sizeof gw2t);
            for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
                ALIGNED float dp1[6 * 14 * 16], dy1[A1_SIZE], dy2[100 * 16];
                const float *m = saved + (long)b * SAVED_SIZE;
                act_pool2_backward(gout + (long)b * 400, m + A1_SIZE + P1_SIZE, dy2, act, pool);
                conv2_backward_any(dy2, m + A1_SIZE, w2, bw, gw2t, gb2, first ? dp1 : NULL);
                if (!first) continue;
                act_pool1_backward(dp1, m, m + A1_SIZE, dy1, act, pool);
                conv1_backward_any(dy1, x + (long)b * 784, bw, g1);
            }
            for (int j = 0; j < 156; j++) row[j] = (float)g1[j];
            store_conv2_grads(gw2t, gb2, row);
        }
        return;
    }

    /* Batch norm over the batch: dz = gamma*rstd * (dy - mean(dy) - xhat * mean(dy*xhat)),
       so each block needs the batch's sums of dy and dy*xhat before it can go on. */
    const float eps = bn[BN_EPS];
    float rstd1[6];
    ALIGNED float rstd2[16], mean2[16], gamma2[16];
    for (int c = 0; c < 6; c++) rstd1[c] = 1.0f / sqrtf(bn[BN_VAR1 + c] + eps);
    /* the affines the forward pass applied, to recompute its activations */
    float scale1[6], shift1[6];
    ALIGNED float scale2[16], shift2[16];
    bn_affine(bn, bn_mode, 1, scale1, shift1);
    bn_affine(bn, bn_mode, 2, scale2, shift2);
    for (int c = 0; c < 16; c++) {
        rstd2[c] = 1.0f / sqrtf(bn[BN_VAR2 + c] + eps);
        mean2[c] = bn[BN_MEAN2 + c];
        gamma2[c] = bn[BN_GAMMA2 + c];
    }
    double s2[MAX_PARTS][32], s1[MAX_PARTS][12];
    memset(s2, 0, sizeof(double) * 32 * parts);
    memset(s1, 0, sizeof(double) * 12 * parts);
    const long stride = SAVED_SIZE_BN, scratch_stride = SCRATCH_SIZE_BN;

#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++) {
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            ALIGNED float a2[A2_SIZE];
            const float *m = saved + (long)b * stride;
            float *dy2 = scratch + b * scratch_stride + A1_SIZE;
            activate2(m + BN_Z2, scale2, shift2, a2, act);
            act_pool2_backward(gout + (long)b * 400, a2, dy2, act, pool);
            /* one image's sums in float, the chunk's in double (as the other reductions) */
            vf sdy[NV], sdyx[NV];
            for (int h = 0; h < NV; h++) sdy[h] = sdyx[h] = splat(0.0f);
            for (int p = 0; p < 100; p++)
                for (int h = 0; h < NV; h++) {
                    vf xhat = (loadv(m + BN_Z2 + p * 16 + h * VW) - loadv(mean2 + h * VW))
                              * loadv(rstd2 + h * VW);
                    vf d = loadv(dy2 + p * 16 + h * VW);
                    sdy[h] += d;
                    sdyx[h] += d * xhat;
                }
            for (int h = 0; h < NV; h++)
                for (int l = 0; l < VW; l++) {
                    s2[k][h * VW + l] += sdy[h][l];
                    s2[k][16 + h * VW + l] += sdyx[h][l];
                }
        }
    }
    double sum_dy2[16], sum_dyx2[16];
    chunk_totals(&s2[0][0], parts, 16, sum_dy2, sum_dyx2);
    ALIGNED float dbeta2[16], dgamma2[16], mdy2[16], mdyx2[16];
    const float inv2 = 1.0f / (100.0f * n), inv1 = 1.0f / (784.0f * n);
    for (int c = 0; c < 16; c++) {
        dbeta2[c] = (float)sum_dy2[c];
        dgamma2[c] = (float)sum_dyx2[c];
        mdy2[c] = dbeta2[c] * inv2;
        mdyx2[c] = dgamma2[c] * inv2;
    }

#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++) {
        float *row = grads + (long)k * GRAD_FLOATS;
        ALIGNED float gw2t[150 * 16];
        double gb2[16] = {0};
        memset(gw2t, 0, sizeof gw2t);
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            ALIGNED float a1[A1_SIZE], dp1[6 * 14 * 16];
            const float *m = saved + (long)b * stride;
            float *dy1 = scratch + b * scratch_stride;
            float *dz2 = dy1 + A1_SIZE;
            for (int p = 0; p < 100; p++)
                for (int h = 0; h < NV; h++) {
                    int o = h * VW;
                    vf xhat = (loadv(m + BN_Z2 + p * 16 + o) - loadv(mean2 + o))
                              * loadv(rstd2 + o);
                    storev(dz2 + p * 16 + o,
                           loadv(gamma2 + o) * loadv(rstd2 + o)
                           * (loadv(dz2 + p * 16 + o) - loadv(mdy2 + o)
                              - xhat * loadv(mdyx2 + o)));
                }
            conv2_backward_any(dz2, m + BN_P1, w2, bw, gw2t, gb2, first ? dp1 : NULL);
            if (!first) continue;
            activate1(m + BN_Z1, scale1, shift1, a1, act);
            act_pool1_backward(dp1, a1, m + BN_P1, dy1, act, pool);
            for (int c = 0; c < 6; c++) {
                vf sdy = splat(0.0f), sdyx = splat(0.0f);
                float mean = bn[BN_MEAN1 + c];
                for (int i = 0; i < 28; i++) {
                    const float *z = m + BN_Z1 + (c * 28 + i) * A1_W;
                    const float *d = dy1 + (c * 28 + i) * A1_W;
                    for (int v = 0; v < NR; v++) {
                        vf dv = loadv(d + v * VW);  /* spare lanes are 0 */
                        vf t = dv * ((loadv(z + v * VW) - mean) * rstd1[c]);
                        if (HAS_SPARE(v)) t *= col_mask(v);
                        sdy += dv;
                        sdyx += t;
                    }
                }
                s1[k][c] += hsum(sdy);
                s1[k][6 + c] += hsum(sdyx);
            }
        }
        store_conv2_grads(gw2t, gb2, row);
    }
    float *bn_grads = grads + 2572;  /* (block 1's stay 0 where it is frozen) */
    for (int c = 0; c < 16; c++) {
        bn_grads[12 + c] = dgamma2[c];
        bn_grads[28 + c] = dbeta2[c];
    }
    if (!first) return;
    double sum_dy1[6], sum_dyx1[6];
    chunk_totals(&s1[0][0], parts, 6, sum_dy1, sum_dyx1);
    float dbeta1[6], dgamma1[6];
    for (int c = 0; c < 6; c++) {
        dbeta1[c] = (float)sum_dy1[c];
        dgamma1[c] = (float)sum_dyx1[c];
    }

#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++) {
        float *row = grads + (long)k * GRAD_FLOATS;
        double g1[156] = {0};
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++) {
            const float *m = saved + (long)b * stride;
            float *dz1 = scratch + b * scratch_stride;
            for (int c = 0; c < 6; c++) {
                float mean = bn[BN_MEAN1 + c], f = bn[BN_GAMMA1 + c] * rstd1[c];
                float mdy = dbeta1[c] * inv1, mdyx = dgamma1[c] * inv1;
                for (int i = 0; i < 28; i++) {
                    const float *z = m + BN_Z1 + (c * 28 + i) * A1_W;
                    float *d = dz1 + (c * 28 + i) * A1_W;
                    for (int v = 0; v < NR; v++) {
                        vf xhat = (loadv(z + v * VW) - mean) * rstd1[c];
                        vf g = f * (loadv(d + v * VW) - mdy - xhat * mdyx);
                        if (HAS_SPARE(v)) g *= col_mask(v);  /* spare columns stay 0 */
                        storev(d + v * VW, g);
                    }
                }
            }
            conv1_backward_any(dz1, x + (long)b * 784, bw, g1);
        }
        for (int j = 0; j < 156; j++) row[j] = (float)g1[j];
    }
    for (int c = 0; c < 6; c++) {
        bn_grads[c] = dgamma1[c];
        bn_grads[6 + c] = dbeta1[c];
    }
}

/* y = W x + b for one example, W (out, in) row-major; then the activation unless last. */
static void dense(const float *w, const float *b, const float *x, float *y, int in, int out,
                  int act, int last) {
    for (int o = 0; o < out; o++) {
        const float *row = w + (long)o * in;
        vf acc = splat(0.0f);
        int i = 0;
        for (; i + VW <= in; i += VW) acc += loadv(row + i) * loadv(x + i);
        float s = b[o] + hsum(acc);
        for (; i < in; i++) s += row[i] * x[i];
        y[o] = s;
    }
    if (last) return;
    int o = 0;
    for (; o + VW <= out; o += VW) storev(y + o, activate(loadv(y + o), act));
    if (o < out) {  /* the tail through a zero-padded vector */
        ALIGNED float tail[VW] = {0};
        memcpy(tail, y + o, (out - o) * sizeof(float));
        vf t = activate(loadv(tail), act);
        memcpy(y + o, &t, (out - o) * sizeof(float));
    }
}

/* Logits of n images through the whole network, on the calling thread: the low-latency
   path for one image, with no framework between the caller and the arithmetic.
   images: n uint8 28x28 images, scaled by 1/255 here as the datasets are.
   The dense layers: sizes[0] = 400 inputs, then n_dense outputs sizes[1..n_dense], each
   layer's weights (out, in) and bias, activation after all but the last. bn_mode is
   BN_NONE or BN_GIVEN (the conv blocks' batch norms with their running statistics).
   scratch: lenet5_saved_floats(0) + 2 * (largest size) floats. */
void lenet5_logits(int n, const unsigned char *x8, const float *w1,
                   const float *b1, const float *w2, const float *b2, int n_dense,
                   const int *sizes, const float *const *weights, const float *const *biases,
                   float *logits, float *scratch, int act, int pool, int bn_mode,
                   const float *bn) {
    ALIGNED float w2t[150 * 16];
    ALIGNED float image[784];
    transpose_w2(w2, w2t);
    float scale1[6], shift1[6];
    ALIGNED float scale2[16], shift2[16];
    bn_affine(bn, bn_mode, 1, scale1, shift1);
    bn_affine(bn, bn_mode, 2, scale2, shift2);
    int widest = 0;
    for (int k = 0; k <= n_dense; k++) widest = sizes[k] > widest ? sizes[k] : widest;
    float *maps = scratch, *h0 = scratch + SAVED_SIZE, *h1 = h0 + widest;
    for (int b = 0; b < n; b++) {
        for (int i = 0; i < 784; i++) image[i] = x8[(long)b * 784 + i] * (1.0f / 255.0f);
        forward_image(image, w1, b1, w2t, b2, scale1, shift1, scale2, shift2, h0, maps, act, pool,
                      NULL);
        for (int k = 0; k < n_dense; k++) {
            int last = k == n_dense - 1;
            dense(weights[k], biases[k], h0, last ? logits + (long)b * sizes[n_dense] : h1,
                  sizes[k], sizes[k + 1], act, last);
            float *t = h0; h0 = h1; h1 = t;
        }
    }
}
