/* The integer sums behind lenet's pixel-statistics OOD detector (lenet.ood.detectors.
 * pixel_statistics), for a batch of uint8 images in one pass each (lenet.native.pixels).
 *
 * Why: numpy needs seven passes and an int16 copy: ~0.7 ms for 256 28x28 images, on one
 * core, in every `lenet serve` batch request. Here each image is read once, images split
 * among OpenMP threads. The sums are exact integers; numpy turns them into the same
 * fractions as before, so the statistics are bit for bit numpy's.
 *
 * Per image (h x w, any h, w >= 1), into out[8 * i ...]: the sum of all pixels; of the inner
 * pixels (two rows and columns in from the edge); of |a - b| over horizontal and vertical
 * neighbours; the count of pixels below 13 (dark); of pixels above 25 (lit) in the first
 * column, the last column, the first row, the last row.
 */
#include <stdint.h>

int pixels_abi_version(void) { return 1; }

static inline int32_t absdiff(int32_t a, int32_t b) { return a > b ? a - b : b - a; }

/* Three loops over the whole image as one run of pixels, which the compiler vectorises
 * (row by row, 28 pixels long, the loops' set-up and final reductions cost more than the
 * sums: slower than numpy); the edges, a few hundred pixels, one by one. 32-bit sums hold
 * images of up to 4 million pixels (pixels.py sends larger ones to numpy). */
static void one_image(const uint8_t *restrict p, long h, long w, int64_t *restrict out) {
    const long n = h * w;
    int32_t total = 0, dark = 0, steps = 0;
    for (long i = 0; i < n; i++) {
        total += p[i];
        dark += p[i] < 13;
    }
    for (long i = 0; i + w < n; i++)  /* vertical neighbours */
        steps += absdiff(p[i], p[i + w]);
    for (long i = 0; i + 1 < n; i++)  /* horizontal ones, and each row's end to the next */
        steps += absdiff(p[i], p[i + 1]);
    for (long y = 0; y + 1 < h; y++)  /* ... which are not neighbours */
        steps -= absdiff(p[y * w + w - 1], p[(y + 1) * w]);
    int32_t border = 0;  /* outside the inner (h-4) x (w-4) pixels */
    for (long y = 0; y < h; y++) {
        const uint8_t *restrict row = p + y * w;
        if (y < 2 || y + 2 >= h || w <= 4) {  /* a whole row of the border */
            for (long x = 0; x < w; x++)
                border += row[x];
        } else {  /* its two first and two last pixels */
            border += row[0] + row[1] + row[w - 2] + row[w - 1];
        }
    }
    int64_t first_col = 0, last_col = 0, first_row = 0, last_row = 0;
    for (long y = 0; y < h; y++) {
        first_col += p[y * w] > 25;
        last_col += p[y * w + w - 1] > 25;
    }
    for (long x = 0; x < w; x++) {
        first_row += p[x] > 25;
        last_row += p[(h - 1) * w + x] > 25;
    }
    out[0] = total, out[1] = total - border, out[2] = steps, out[3] = dark;
    out[4] = first_col, out[5] = last_col, out[6] = first_row, out[7] = last_row;
}

/* out (n, 8) int64: the sums above for each of the n images (n, h, w) uint8. */
void pixels_sums(const uint8_t *images, long n, long h, long w, int64_t *out) {
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        one_image(images + i * h * w, h, w, out + 8 * i);
}
