/* The vector width of lenet's kernels (lenet5.c, knn.c): VW floats in one GCC/Clang
 * vector extension, chosen at build time from the target's ISA: 16 (AVX-512),
 * 8 (AVX/AVX2), 4 (SSE, NEON), 1 (plain C). LENET_VW forces one, for tests of the other
 * widths. Its bytes enter each kernel's build cache key (build.py), as the source's do.
 */
#ifndef LENET_VECTOR_WIDTH_H
#define LENET_VECTOR_WIDTH_H

#if defined(LENET_VW)            /* forced, for tests of the other widths */
#define VW LENET_VW
#elif defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#elif defined(__SSE2__) || defined(__ARM_NEON)
#define VW 4
#else
#define VW 1
#endif
#if VW != 1 && VW != 4 && VW != 8 && VW != 16
#error "LENET_VW must be 1, 4, 8 or 16"
#endif

#endif
