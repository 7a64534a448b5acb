/* The all-reduce of DistributedDataParallel's gradient buckets among the processes of one
 * machine, through memory they all map (lenet.native.shm_reduce).
 *
 * Why: gloo's all-reduce between two processes on one machine costs ~1.5 ms however small
 * the tensor (it goes through loopback TCP and sleeping threads), as much as a LeNet-5
 * step itself. Here a rank copies its bucket into its slot, says so by bumping its
 * counter, waits (spinning, then yielding, then napping) until every rank has bumped its
 * own, and sums the slots: a few microseconds for LeNet's 247 KB.
 *
 * Every rank sums the slots in rank order, so every rank gets the same bits. Each rank
 * divides its own values by the number of ranks before the sum, as DDP's default hook
 * does. Slots come in two phases (by the counter's parity): a rank writing call s's values
 * overwrites those of call s-2, which every other rank has finished reading, because it
 * bumped its counter to s-1 after reading them.
 *
 * Layout of the segment: `ranks` counters, one per cache line; then 2 x ranks x capacity
 * floats.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define LINE 64        /* bytes: each counter on its own cache line */
#define SPINS 4096     /* pauses before yielding (tens of microseconds) */
#define NAP_AFTER 5e-3 /* seconds of waiting before napping between looks */

int shm_reduce_abi_version(void) { return 1; }

long shm_reduce_bytes(int ranks, long capacity) {
    return (long)ranks * LINE + 2L * ranks * capacity * (long)sizeof(float);
}

static _Atomic int64_t *counter(char *base, int rank) {
    return (_Atomic int64_t *)(base + (long)rank * LINE);
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 0 once every rank's counter has reached `seq`; 1 after `timeout_s` without. */
static int wait_for_all(char *base, int ranks, int64_t seq, double timeout_s) {
    long looks = 0;
    double start = 0.0;
    for (int r = 0; r < ranks; r++) {
        while (atomic_load_explicit(counter(base, r), memory_order_acquire) < seq) {
            if (++looks < SPINS) {
                CPU_RELAX();
                continue;
            }
            double now = seconds();
            if (start == 0.0)
                start = now;
            if (now - start > timeout_s)
                return 1;
            if (now - start > NAP_AFTER) { /* a rank far behind: stop burning its core */
                struct timespec nap = {0, 50000};
                nanosleep(&nap, NULL);
            } else {
                sched_yield(); /* another process wanting this core gets it */
            }
        }
    }
    return 0;
}

/* data[0:n] <- sum over ranks of (that rank's data / ranks); 0, or 1 on a timeout. */
int shm_allreduce_f32(char *base, int rank, int ranks, long capacity, float *data, long n,
                      double timeout_s) {
    float *slots = (float *)(base + (long)ranks * LINE);
    const float scale = (float)ranks;
    for (long done = 0; done < n; done += capacity) {
        long m = n - done < capacity ? n - done : capacity;
        int64_t seq = atomic_load_explicit(counter(base, rank), memory_order_relaxed) + 1;
        float *phase = slots + (seq & 1) * (long)ranks * capacity;
        float *mine = phase + (long)rank * capacity, *out = data + done;
        for (long i = 0; i < m; i++)
            mine[i] = out[i] / scale;
        atomic_store_explicit(counter(base, rank), seq, memory_order_release);
        if (wait_for_all(base, ranks, seq, timeout_s))
            return 1;
        memcpy(out, phase, (size_t)m * sizeof(float));
        for (int r = 1; r < ranks; r++) {
            const float *theirs = phase + (long)r * capacity;
            for (long i = 0; i < m; i++)
                out[i] += theirs[i];
        }
    }
    return 0;
}
