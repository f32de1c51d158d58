// OpenBLAS cblas_sgemm on the shapes of fineshard-kernel-bench: y[M,N] = x[M,K] · W[N,K]ᵀ,
// W row-major [out, in] as the forward check holds it. Built and run by scripts/bench/kernels.sh.
// Usage: sgemm_openblas threads — prints `openblas M K N threads ms GFLOP/s` rows (best of 3).
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    openblas_set_num_threads(threads);
    int shapes[3][2] = {{7168, 2048}, {7168, 1536}, {16384, 7168}};
    int ms[3] = {1, 8, 32};
    for (int s = 0; s < 3; s++) {
        int k = shapes[s][0], n = shapes[s][1];
        float *w = malloc(sizeof(float) * (size_t)k * n);
        for (size_t i = 0; i < (size_t)k * n; i++) w[i] = (float)((i * 7919) % 1000) / 1000 - 0.5f;
        for (int mi = 0; mi < 3; mi++) {
            int m = ms[mi];
            float *x = malloc(sizeof(float) * (size_t)m * k), *y = malloc(sizeof(float) * (size_t)m * n);
            for (size_t i = 0; i < (size_t)m * k; i++) x[i] = (float)((i * 104729) % 1000) / 1000 - 0.5f;
            double best = 1e30;
            for (int r = 0; r < 3; r++) {
                double t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, x, k, w, k, 0, y, n);
                double t = now() - t0;
                if (t < best) best = t;
            }
            printf("openblas %d %d %d %d %.2f %.2f\n", m, k, n, threads, best * 1e3, 2.0 * m * k * n / best / 1e9);
            free(x);
            free(y);
        }
        free(w);
    }
    return 0;
}
