/* The k-NN out-of-distribution score's inner step (lenet.native.knn): for each query, the
 * k-th largest cosine similarity to a bank of m unit vectors.
 *
 * Why: PyTorch does it as a matrix product, writing all n x m similarities to memory
 * (2 MB for 256 queries and a bank of 2000), then a top-k that reads them back: ~2.2 ms
 * on one thread, a quarter of a batch request in lenet serve. Here a block of queries
 * meets a tile of bank columns in registers, and each tile's similarities are offered to
 * the queries' running top-k while still in L1: the product at about the FMA units' peak,
 * and a top-k that costs little more than one compare per similarity.
 *
 * The bank comes transposed, (d, m) row-major, so that a tile is a few vectors of
 * consecutive columns of each of its d rows. Vectors are GCC/Clang vector extensions of
 * VW floats chosen from the target's ISA, as in lenet5.c: 16 (AVX-512), 8 (AVX/AVX2),
 * 4 (SSE, NEON), 1 (plain C). Plain loops for the compiler to vectorise proved fragile
 * here: the same loop ran at peak or 15x slower depending on the tile's shape and the
 * -march. A block of QB queries x JV vectors of columns keeps QB * JV accumulators: 16 on
 * targets with 32 vector registers (AVX-512, aarch64), 12 on those with 16.
 *
 * The top-k of a query is a sorted array of k floats (k <= 64); a tile of similarities is
 * first counted against its k-th value in one vectorised pass, and only a tile with a
 * larger one is walked to insert it, which after the first tiles is rare. The last tile
 * overlaps the one before it (its first columns are not offered twice); leftover queries
 * (n mod QB) go one at a time; a bank narrower than a tile takes a scalar loop.
 *
 * Query blocks are split among OpenMP threads (built with -fopenmp after PyTorch is loaded,
 * this is PyTorch's libgomp and its thread count). Each query's result depends only on
 * its own row: the same bits whatever the threads.
 */
#include <math.h>
#include <string.h>

#include "vector_width.h"

#if defined(__AVX512F__) || defined(__aarch64__)  /* 32 vector registers */
#define QB 8
#else
#define QB 6
#endif
#define JV 2            /* vectors of columns per tile */
#define JT (JV * VW)    /* columns per tile */
#define KMAX 64

typedef float vf __attribute__((vector_size(VW * sizeof(float))));

int knn_abi_version(void) { return 1; }

int knn_vector_width(void) { return VW; }

static inline vf loadv(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

/* Insert s into top[0..k) (descending), dropping its last value: s > top[k-1]. */
static inline void offer(float *restrict top, int k, float s) {
    int p = k - 1;
    while (p > 0 && top[p - 1] < s) {
        top[p] = top[p - 1];
        p--;
    }
    top[p] = s;
}

/* Offer sims[from..JT) to top: most tiles have none above its k-th value. */
static inline void select_tile(float *restrict top, int k, const float *restrict sims,
                               int from) {
    const float kth = top[k - 1];
    int above = 0;
    for (int j = from; j < JT; j++)
        above += sims[j] > kth;
    if (above)
        for (int j = from; j < JT; j++)
            if (sims[j] > top[k - 1])
                offer(top, k, sims[j]);
}

/* The k-th similarity of qb queries (rows of q) to all m columns of bt (m >= JT).
 * Inlined with qb a constant (QB or 1), so that its accumulators live in registers. */
static inline __attribute__((always_inline)) void
block(const float *restrict q, long d, const float *restrict bt, long m, int k,
      float *restrict out, const int qb) {
    float top[QB][KMAX];
    float sims[QB][JT] __attribute__((aligned(64)));
    for (int i = 0; i < qb; i++)
        for (int t = 0; t < k; t++)
            top[i][t] = -INFINITY;
    for (long j0 = 0; j0 < m; j0 += JT) {
        const long start = j0 + JT <= m ? j0 : m - JT;  /* the last tile: the last JT */
        vf acc[QB][JV];
        for (int i = 0; i < qb; i++)
            for (int v = 0; v < JV; v++)
                acc[i][v] = (vf){0};
        const float *restrict row = bt + start;
        for (long c = 0; c < d; c++, row += m) {
            vf b[JV];
            for (int v = 0; v < JV; v++)
                b[v] = loadv(row + v * VW);
            for (int i = 0; i < qb; i++) {
                const float x = q[i * d + c];
                for (int v = 0; v < JV; v++)
                    acc[i][v] += x * b[v];
            }
        }
        for (int i = 0; i < qb; i++) {
            memcpy(sims[i], acc[i], sizeof acc[i]);
            select_tile(top[i], k, sims[i], (int)(j0 - start));
        }
    }
    for (int i = 0; i < qb; i++)
        out[i] = top[i][k - 1];
}

/* One query against a bank narrower than a tile. */
static float kth_scalar(const float *restrict q, long d, const float *restrict bt, long m,
                        int k) {
    float top[KMAX];
    for (int t = 0; t < k; t++)
        top[t] = -INFINITY;
    for (long j = 0; j < m; j++) {
        float s = 0.0f;
        for (long c = 0; c < d; c++)
            s += q[c] * bt[c * m + j];
        if (s > top[k - 1])
            offer(top, k, s);
    }
    return top[k - 1];
}

/* out[i] = the k-th largest of queries[i] . bank_t[:, j] over j < m; queries (n, d) and
 * bank_t (d, m) row-major. NaN everywhere unless 1 <= k <= min(m, 64). */
void knn_kth_similarity(const float *queries, long n, long d, const float *bank_t, long m,
                        int k, float *out) {
    if (k < 1 || k > KMAX || k > m) {
        for (long i = 0; i < n; i++)
            out[i] = NAN;
        return;
    }
    if (m < JT) {
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++)
            out[i] = kth_scalar(queries + i * d, d, bank_t, m, k);
        return;
    }
    const long blocks = n / QB;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; b++)
        block(queries + b * QB * d, d, bank_t, m, k, out + b * QB, QB);
    for (long i = blocks * QB; i < n; i++)  /* fewer than QB left */
        block(queries + i * d, d, bank_t, m, k, out + i, 1);
}
