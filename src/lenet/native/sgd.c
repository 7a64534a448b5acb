/* One step of SGD with momentum over many float32 tensors, as torch.optim.SGD's multi-tensor
 * (foreach) step computes it, in one pass over each tensor (lenet.native.sgd).
 *
 * Why: after the fused kernel's backward pass the parameters, gradients and momentum buffers
 * have left the cache, and PyTorch's foreach step on a CPU is one operation per tensor per
 * line of its update (four or five passes over memory, a new tensor for Nesterov's
 * gradients): 350-420 us a step for speed-90's 18 tensors of 62,158 floats on 2 cores of a
 * Zen 4, against 200 us when the same step runs again at once (benchmarks/optimizer_step.py).
 *
 * The same floats: each line of the update is the ATen operation PyTorch runs, in its
 * order and rounding. `a + alpha * b` (add with alpha) is ATen's fmadd(b, alpha, a): one
 * rounding where its vector kernels have an FMA instruction (AVX2, AVX-512, NEON), two
 * where they do not; madd() below is one rounding exactly where this target has one
 * (FP_FAST_FMAF). sgd.py checks on every machine, once, that a step here gives PyTorch's
 * floats to the bit before it uses this one; otherwise PyTorch's step runs.
 */
#include <math.h>

int sgd_abi_version(void) { return 1; }

#define PARALLEL_FROM 32768  /* floats: below, a parallel region costs more than it saves */

static inline float madd(float a, float b, float c) {  /* a * b + c, as ATen's fmadd */
#ifdef FP_FAST_FMAF
    return fmaf(a, b, c);
#else
    float product = a * b;  /* no FMA instruction here: two roundings, as ATen's */
    return product + c;
#endif
}

/* n tensors of sizes[k] floats each: tensors[k] the params, tensors[n + k] their grads,
 * tensors[2n + k] their momentum buffers (unused when momentum is 0), all laid out alike. fresh[k]: the buffer is new, it becomes the gradient
 * (after weight decay), as PyTorch clones it on a parameter's first step. keep is
 * 1 - dampening. With Nesterov momentum and no weight decay, PyTorch's step leaves each
 * gradient as g + momentum * buf (it updates the gradients in place); write_grads does
 * the same. */
void sgd_step(int n, float *const *tensors, const long *sizes, const int *fresh, float lr,
              float momentum, float keep, float weight_decay, int nesterov, int write_grads) {
    const float step = -lr;
    for (int k = 0; k < n; k++) {
        float *restrict p = tensors[k], *restrict g = tensors[n + k];
        float *restrict b = momentum != 0.0f ? tensors[2 * n + k] : 0;
        const long size = sizes[k];
        const int first = fresh[k];
        /* large tensors in parallel: cold in memory after the backward pass, two cores fetch
           them faster than one (each float's update is alone: the same floats either way) */
#pragma omp parallel for schedule(static) if (size >= PARALLEL_FROM)
        for (long i = 0; i < size; i++) {
            float d = g[i];
            if (weight_decay != 0.0f) d = madd(p[i], weight_decay, d);  /* _foreach_add */
            if (momentum != 0.0f) {
                /* _foreach_mul_(bufs, momentum), then _foreach_add_(bufs, d, alpha=keep) */
                float m = first ? d : madd(d, keep, b[i] * momentum);
                b[i] = m;
                if (nesterov) {
                    d = madd(m, momentum, d);  /* _foreach_add_(grads, bufs, alpha=momentum) */
                    if (write_grads) g[i] = d;
                } else {
                    d = m;
                }
            }
            p[i] = madd(d, step, p[i]);  /* _foreach_add_(params, grads, alpha=-lr) */
        }
    }
}
