/* LeNet-5's two convolution blocks, fused: conv -> activation -> 2x2 pool, twice.
 *
 * Shapes are fixed to the book's network: 1x28x28 input, conv 6@5x5 pad 2,
 * 2x2/2 pool, conv 16@5x5, 2x2/2 pool -> 16x5x5. Activation: sigmoid or ReLU;
 * pooling: average or max. oneDNN spends most of LeNet's step on these tiny
 * maps and on separate activation/pool passes over memory; here one image goes
 * through both blocks while its maps stay in L1. Vectors are GCC/Clang vector
 * extensions (16 floats), so the compiler maps them to AVX-512, AVX2 or NEON.
 *
 * A batch is split into `parts` contiguous chunks run in parallel with OpenMP.
 * Built with -fopenmp after PyTorch is loaded, this binds to PyTorch's own
 * libgomp, so the chunks run on PyTorch's worker threads instead of fighting
 * them (its idle workers spin-wait and halve a second pool's speed). Each
 * chunk's weight gradients go to its own row, which the caller sums in a fixed
 * order: results do not depend on timing.
 */
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));

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
#define ALIGNED __attribute__((aligned(64)))
#define DYC_W 32                     /* conv2 output gradient rows, zero-padded for the
                                        transposed convolution */

int lenet5_saved_floats(void) { return SAVED_SIZE; }
int lenet5_abi_version(void) { return 3; }

int lenet5_parallel(void) {  /* 1 if chunks run in parallel (built with OpenMP) */
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#define GRAD_FLOATS (150 + 6 + 2400 + 16)

static inline int chunk_start(int n, int parts, int k) { return (int)((long)n * k / parts); }

static inline v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline v16 splat(float x) { return (v16){0} + x; }
static inline v16 select16(v16i m, v16 a, v16 b) {
    return (v16)((m & (v16i)a) | (~m & (v16i)b));
}
static inline float hsum(v16 v) {
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += v[k];
    return s;
}

/* exp(x) to ~1 ulp (Cephes' expf), vectorised; NaN stays NaN. */
static inline v16 vexp(v16 x) {
    x = select16(x > 88.3762626647949f, splat(88.3762626647949f), x);
    x = select16(x < -87.3365447504f, splat(-87.3365447504f), x);
    v16 t = x * 1.44269504088896341f + 0.5f;
    v16i n = __builtin_convertvector(t, v16i);
    n += (v16i)(__builtin_convertvector(n, v16) > t);  /* truncation -> floor */
    v16 nf = __builtin_convertvector(n, v16);
    v16 r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    v16 p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v16 y = p * r * r + r + 1.0f;
    return y * (v16)((n + 127) << 23);
}

/* 1/d for d >= 1: a 14-bit estimate and one Newton step (~1 ulp) where AVX-512 has one;
   a division is several times slower. */
static inline v16 reciprocal(v16 d) {
#if defined(__AVX512F__)
    v16 r = (v16)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
#else
    return 1.0f / d;
#endif
}

static inline v16 activate(v16 x, int act) {
    if (act == ACT_RELU) return select16(x > 0.0f, x, splat(0.0f));
    return reciprocal(1.0f + vexp(-x));
}

/* d(activation)/d(input), from the activation's output. */
static inline v16 activation_slope(v16 a, int act) {
    if (act == ACT_RELU) return select16(a > 0.0f, splat(1.0f), splat(0.0f));
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
        for (int r = 0; r < XP_H; r++) {
            store16(xs + (kj * XP_H + r) * XP_W, load16(padded + r * 48 + kj));
            store16(xs + (kj * XP_H + r) * XP_W + 16, load16(padded + r * 48 + kj + 16));
        }
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

static void forward_one(const float *x, const float *w1, const float *b1, const float *w2t,
                        const float *b2, float *out, float *saved, int act, int pool) {
    ALIGNED float xs[XS_SIZE];
    float *a1 = saved, *p1 = saved + A1_SIZE, *a2 = saved + A1_SIZE + P1_SIZE;
    shifted_input(x, xs);

    /* conv1 + activation: each output row as two 16-wide vectors, all 6 channels at once. */
    for (int i = 0; i < 28; i++) {
        v16 acc[6][2];
        for (int c = 0; c < 6; c++) acc[c][0] = acc[c][1] = splat(b1[c]);
        for (int ki = 0; ki < 5; ki++) {
            for (int kj = 0; kj < 5; kj++) {
                const float *row = xs + (kj * XP_H + i + ki) * XP_W;
                v16 lo = load16(row), hi = load16(row + 16);
                for (int c = 0; c < 6; c++) {
                    float w = w1[c * 25 + ki * 5 + kj];
                    acc[c][0] += w * lo;
                    acc[c][1] += w * hi;
                }
            }
        }
        for (int c = 0; c < 6; c++) {
            float *dst = a1 + (c * 28 + i) * A1_W;
            store16(dst, activate(acc[c][0], act));
            store16(dst + 16, activate(acc[c][1], act));
        }
    }
    /* pool1 */
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 14; i++) {
            const float *r0 = a1 + (c * 28 + 2 * i) * A1_W, *r1 = r0 + A1_W;
            for (int j = 0; j < 14; j++)
                p1[(c * 14 + i) * 14 + j] =
                    pool4(r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1], pool);
        }
    /* conv2 + activation, channels last: one 16-wide vector of output channels per pixel. */
    v16 bias2 = load16(b2);
    for (int i = 0; i < 10; i++) {
        v16 acc[10];
        for (int j = 0; j < 10; j++) acc[j] = bias2;
        for (int ci = 0; ci < 6; ci++)
            for (int ki = 0; ki < 5; ki++) {
                const float *row = p1 + (ci * 14 + i + ki) * 14;
                for (int kj = 0; kj < 5; kj++) {
                    v16 w = load16(w2t + ((ci * 5 + ki) * 5 + kj) * 16);
                    for (int j = 0; j < 10; j++) acc[j] += w * row[j + kj];
                }
            }
        for (int j = 0; j < 10; j++) store16(a2 + (i * 10 + j) * 16, activate(acc[j], act));
    }
    /* pool2, written back in PyTorch's (C, H, W) order for the dense layers. */
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            const float *q = a2 + ((2 * i) * 10 + 2 * j) * 16;
            v16 a = load16(q), b = load16(q + 16), c = load16(q + 160), d = load16(q + 176);
            v16 m;
            if (pool == POOL_AVG) {
                m = 0.25f * (a + b + c + d);
            } else {
                m = a;
                m = select16(b > m, b, m);
                m = select16(c > m, c, m);
                m = select16(d > m, d, m);
            }
            for (int co = 0; co < 16; co++) out[co * 25 + i * 5 + j] = m[co];
        }
}

static void transpose_w2(const float *w2, float *w2t) {  /* [16][150] -> [150][16] */
    for (int co = 0; co < 16; co++)
        for (int k = 0; k < 150; k++) w2t[k * 16 + co] = w2[co * 150 + k];
}

/* n images: x (n,1,28,28) -> out (n,16,5,5), in `parts` parallel chunks. saved: n *
   lenet5_saved_floats() floats, or, when save is 0, parts * lenet5_saved_floats() floats
   of scratch. */
void lenet5_forward(int n, int parts, const float *x, const float *w1, const float *b1,
                    const float *w2, const float *b2, float *out, float *saved, int save,
                    int act, int pool) {
    ALIGNED float w2t[150 * 16];
    transpose_w2(w2, w2t);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        for (int b = chunk_start(n, parts, k); b < chunk_start(n, parts, k + 1); b++)
            forward_one(x + (long)b * 784, w1, b1, w2t, b2, out + (long)b * 400,
                        save ? saved + (long)b * SAVED_SIZE : saved + (long)k * SAVED_SIZE,
                        act, pool);
}

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
   over the rows per ki, with ten independent accumulators (few enough to stay in
   registers, enough to hide the FMA latency). */
static void conv1_weight_grad(const float *dy, const float *xs, float *gw) {
    for (int ki = 0; ki < 5; ki++) {
        v16 lo_acc[5], hi_acc[5];
        for (int kj = 0; kj < 5; kj++) lo_acc[kj] = hi_acc[kj] = splat(0.0f);
        for (int i = 0; i < 28; i++) {
            v16 lo = load16(dy + i * A1_W), hi = load16(dy + i * A1_W + 16);
            for (int kj = 0; kj < 5; kj++) {
                const float *row = xs + (kj * XP_H + i + ki) * XP_W;
                lo_acc[kj] += lo * load16(row);
                hi_acc[kj] += hi * load16(row + 16);
            }
        }
        for (int kj = 0; kj < 5; kj++) gw[ki * 5 + kj] += hsum(lo_acc[kj] + hi_acc[kj]);
    }
}

static void backward_one(const float *x, const float *w1, const float *w2, const float *saved,
                         const float *gout, float *gw1, float *gb1, v16 *gw2t, v16 *gb2,
                         int act, int pool) {
    (void)w1;
    ALIGNED float xs[XS_SIZE];
    const float *a1 = saved, *p1 = saved + A1_SIZE, *a2 = saved + A1_SIZE + P1_SIZE;
    shifted_input(x, xs);

    /* pool2 and activation backward -> dy2 [100][16] */
    v16 dy2[100];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            v16 g;
            for (int co = 0; co < 16; co++) g[co] = gout[co * 25 + i * 5 + j];
            int pix[4] = {(2 * i) * 10 + 2 * j, (2 * i) * 10 + 2 * j + 1,
                          (2 * i + 1) * 10 + 2 * j, (2 * i + 1) * 10 + 2 * j + 1};
            v16 a[4];
            for (int k = 0; k < 4; k++) a[k] = load16(a2 + pix[k] * 16);
            if (pool == POOL_AVG) {
                for (int k = 0; k < 4; k++) dy2[pix[k]] = 0.25f * g * activation_slope(a[k], act);
            } else {
                v16 m = a[0];
                v16i win = (v16i){0};
                for (int k = 1; k < 4; k++) {
                    v16i better = a[k] > m;
                    m = select16(better, a[k], m);
                    win = (better & k) | (~better & win);
                }
                for (int k = 0; k < 4; k++)
                    dy2[pix[k]] = select16(win == k, g, splat(0.0f)) * activation_slope(a[k], act);
            }
        }
    for (int p = 0; p < 100; p++) *gb2 += dy2[p];

    /* conv2 weight gradient: gw2t[ci,ki,kj][co] += sum over pixels dy2 * p1 */
    for (int ci = 0; ci < 6; ci++)
        for (int ki = 0; ki < 5; ki++) {
            v16 *g = gw2t + (ci * 5 + ki) * 5;
            v16 acc[5] = {g[0], g[1], g[2], g[3], g[4]};
            for (int i = 0; i < 10; i++) {
                const float *row = p1 + (ci * 14 + i + ki) * 14;
                for (int j = 0; j < 10; j++) {
                    v16 d = dy2[i * 10 + j];
                    for (int kj = 0; kj < 5; kj++) acc[kj] += d * row[j + kj];
                }
            }
            for (int kj = 0; kj < 5; kj++) g[kj] = acc[kj];
        }

    /* conv2 input gradient (a transposed convolution), vectorised along each 14-wide row:
       dp1[ci][y][x] = sum_{co,ki,kj} w2[co][ci][ki][kj] * dy2[co][y-ki][x-kj] */
    ALIGNED float dyc[16 * 10 * DYC_W];
    memset(dyc, 0, sizeof dyc);
    for (int p = 0; p < 100; p++)
        for (int co = 0; co < 16; co++)
            dyc[(co * 10 + p / 10) * DYC_W + 4 + p % 10] = dy2[p][co];
    ALIGNED float dp1[6 * 14 * 16];
    for (int y = 0; y < 14; y++) {
        v16 acc[6];
        for (int ci = 0; ci < 6; ci++) acc[ci] = splat(0.0f);
        for (int ki = 0; ki < 5; ki++) {
            int r = y - ki;
            if (r < 0 || r > 9) continue;
            for (int co = 0; co < 16; co++) {
                const float *row = dyc + (co * 10 + r) * DYC_W + 4;
                for (int kj = 0; kj < 5; kj++) {
                    v16 v = load16(row - kj);
                    for (int ci = 0; ci < 6; ci++)
                        acc[ci] += w2[((co * 6 + ci) * 5 + ki) * 5 + kj] * v;
                }
            }
        }
        for (int ci = 0; ci < 6; ci++) store16(dp1 + (ci * 14 + y) * 16, acc[ci]);
    }

    /* pool1 and activation backward, then conv1 weight gradient, one channel at a time */
    ALIGNED float dy1[28 * A1_W];
    for (int c = 0; c < 6; c++) {
        memset(dy1, 0, sizeof dy1);
        for (int i = 0; i < 14; i++) {
            const float *r0 = a1 + (c * 28 + 2 * i) * A1_W, *r1 = r0 + A1_W;
            for (int j = 0; j < 14; j++)
                unpool4(dp1[(c * 14 + i) * 16 + j], p1[(c * 14 + i) * 14 + j], r0, r1, j,
                        dy1 + 2 * i * A1_W, pool);
        }
        v16 bias_acc = splat(0.0f);
        for (int i = 0; i < 28; i++) {
            const float *arow = a1 + (c * 28 + i) * A1_W;
            float *d = dy1 + i * A1_W;
            v16 lo = load16(d) * activation_slope(load16(arow), act);
            v16 hi = load16(d + 16) * activation_slope(load16(arow + 16), act);
            store16(d, lo);
            store16(d + 16, hi);  /* columns 28..31 stay 0: their dy1 was 0 */
            bias_acc += lo + hi;
        }
        gb1[c] += hsum(bias_acc);
        conv1_weight_grad(dy1, xs, gw1 + c * 25);
    }
}

static void backward_chunk(int start, int stop, const float *x, const float *w1,
                           const float *w2, const float *saved, const float *gout, float *grads,
                           int act, int pool) {
    v16 gw2t[150], gbias2 = splat(0.0f);
    float *gw1 = grads, *gb1 = grads + 150, *gw2 = grads + 156, *gb2 = grads + 2556;
    memset(gw2t, 0, sizeof gw2t);
    memset(grads, 0, 156 * sizeof(float));
    for (int b = start; b < stop; b++)
        backward_one(x + (long)b * 784, w1, w2, saved + (long)b * SAVED_SIZE, gout + (long)b * 400,
                     gw1, gb1, gw2t, &gbias2, act, pool);
    for (int co = 0; co < 16; co++) {
        gb2[co] = gbias2[co];
        for (int k = 0; k < 150; k++) gw2[co * 150 + k] = gw2t[k][co];
    }
}

/* Backward of lenet5_forward given gout (n,16,5,5): chunk k's gradients of conv1's weight
   (6,1,5,5) and bias (6) and conv2's weight (16,6,5,5) and bias (16) are written, in that
   order, to row k of grads (parts rows of GRAD_FLOATS). */
void lenet5_backward(int n, int parts, const float *x, const float *w1, const float *w2,
                     const float *saved, const float *gout, float *grads, int act, int pool) {
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int k = 0; k < parts; k++)
        backward_chunk(chunk_start(n, parts, k), chunk_start(n, parts, k + 1), x, w1, w2, saved,
                       gout, grads + (long)k * GRAD_FLOATS, act, pool);
}

/* y = W x + b for one example, W (out, in) row-major; then the activation unless last. */
static void dense(const float *w, const float *b, const float *x, float *y, int in, int out,
                  int act, int last) {
    for (int o = 0; o < out; o++) {
        const float *row = w + (long)o * in;
        v16 acc = splat(0.0f);
        int i = 0;
        for (; i + 16 <= in; i += 16) acc += load16(row + i) * load16(x + i);
        float s = b[o] + hsum(acc);
        for (; i < in; i++) s += row[i] * x[i];
        y[o] = s;
    }
    if (last) return;
    int o = 0;
    for (; o + 16 <= out; o += 16) store16(y + o, activate(load16(y + o), act));
    if (o < out) {  /* the tail through a zero-padded vector */
        ALIGNED float tail[16] = {0};
        memcpy(tail, y + o, (out - o) * sizeof(float));
        v16 t = activate(load16(tail), act);
        memcpy(y + o, &t, (out - o) * sizeof(float));
    }
}

/* Logits of n images through the whole network, on the calling thread: the low-latency
   path for one image, with no framework between the caller and the arithmetic.
   images: n uint8 28x28 images (scaled by 1/255 here) if x8 is not NULL, else x (floats).
   The dense layers: sizes[0] = 400 inputs, then n_dense outputs sizes[1..n_dense], each
   layer's weights (out, in) and bias, activation after all but the last.
   scratch: lenet5_saved_floats() + 2 * (largest size) floats. */
void lenet5_logits(int n, const unsigned char *x8, const float *x, const float *w1,
                   const float *b1, const float *w2, const float *b2, int n_dense,
                   const int *sizes, const float *const *weights, const float *const *biases,
                   float *logits, float *scratch, int act, int pool) {
    ALIGNED float w2t[150 * 16];
    ALIGNED float image[784];
    transpose_w2(w2, w2t);
    int widest = 0;
    for (int k = 0; k <= n_dense; k++) widest = sizes[k] > widest ? sizes[k] : widest;
    float *maps = scratch, *h0 = scratch + SAVED_SIZE, *h1 = h0 + widest;
    for (int b = 0; b < n; b++) {
        const float *in = x + (long)b * 784;
        if (x8) {
            for (int i = 0; i < 784; i++) image[i] = x8[(long)b * 784 + i] * (1.0f / 255.0f);
            in = image;
        }
        forward_one(in, w1, b1, w2t, b2, h0, maps, act, pool);
        for (int k = 0; k < n_dense; k++) {
            int last = k == n_dense - 1;
            dense(weights[k], biases[k], h0, last ? logits + (long)b * sizes[n_dense] : h1,
                  sizes[k], sizes[k + 1], act, last);
            float *t = h0; h0 = h1; h1 = t;
        }
    }
}
