#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define NATIVE __attribute__((target("avx2,fma")))

int fs_native_kernels(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

NATIVE static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The register tile: four weight rows against two tokens, eight accumulators of eight lanes; each
// loaded vector of w feeds two products and each of x four. A lone last token is computed twice
// (x1 = x0) and stored once. Rows past a multiple of four take one row at a time.
#define TILE_BEGIN                                                                                  \
    long o = row_begin;                                                                             \
    for (; o + 4 <= row_end; o += 4) {                                                 \
        for (long t = 0; t < tokens; t += 2) {                                                      \
            const int pair = t + 1 < tokens;                                                        \
            const float *x0 = x + t * n, *x1 = x + (pair ? t + 1 : t) * n;                          \
            __m256 a00 = _mm256_setzero_ps(), a10 = a00, a20 = a00, a30 = a00;                      \
            __m256 a01 = a00, a11 = a00, a21 = a00, a31 = a00;                                      \
            long i = 0;
#define STEP(r, ws, u, v)                                                                           \
    a##r##0 = _mm256_fmadd_ps(ws, u, a##r##0);                                                      \
    a##r##1 = _mm256_fmadd_ps(ws, v, a##r##1);
#define TILE_END(WEIGHT)                                                                            \
    float s0[4] = {hsum(a00), hsum(a10), hsum(a20), hsum(a30)};                                     \
    float s1[4] = {hsum(a01), hsum(a11), hsum(a21), hsum(a31)};                                     \
    for (; i < n; i++)                                                                              \
        for (int j = 0; j < 4; j++) {                                                               \
            s0[j] += WEIGHT((o + j) * n + i) * x0[i];                                               \
            s1[j] += WEIGHT((o + j) * n + i) * x1[i];                                               \
        }                                                                                           \
    for (int j = 0; j < 4; j++) {                                                                   \
        float add = bias ? bias[o + j] : 0;                                                         \
        y[t * ystride + o + j] = s0[j] + add;                                                       \
        if (pair) y[(t + 1) * ystride + o + j] = s1[j] + add;                                       \
    }                                                                                               \
    }                                                                                               \
    }

#define F32(k) w[k]
#define BF16(k) bf16_value(w[k])

static inline float bf16_value(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

NATIVE void fs_linear_f32(const float *x, const float *w, const float *bias, float *y, long tokens, long n,
                          long ystride, long row_begin, long row_end) {
    TILE_BEGIN
    const float *w0 = w + o * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    for (; i + 8 <= n; i += 8) {
        __m256 u = _mm256_loadu_ps(x0 + i), v = _mm256_loadu_ps(x1 + i);
#define ROW(r) STEP(r, _mm256_loadu_ps(w##r + i), u, v)
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
    TILE_END(F32)
    for (; o < row_end; o++) {
        for (long t = 0; t < tokens; t++) {
            const float *xt = x + t * n, *wo = w + o * n;
            __m256 a = _mm256_setzero_ps(), b = a;
            long i = 0;
            for (; i + 16 <= n; i += 16) {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(wo + i), _mm256_loadu_ps(xt + i), a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(wo + i + 8), _mm256_loadu_ps(xt + i + 8), b);
            }
            float s = hsum(_mm256_add_ps(a, b));
            for (; i < n; i++) s += wo[i] * xt[i];
            y[t * ystride + o] = s + (bias ? bias[o] : 0);
        }
    }
}

// 16 bf16 weights as 8 32-bit words: word k holds column 2k in its low half and 2k+1 in its high
// half, so `word << 16` is the float32 of the even columns and `word & 0xffff0000` of the odd ones,
// matching x in pair order.
#define EVEN(q) _mm256_castsi256_ps(_mm256_slli_epi32(q, 16))
#define ODD(q) _mm256_castsi256_ps(_mm256_and_si256(q, high))

NATIVE void fs_linear_bf16(const float *x, const uint16_t *w, const float *bias, float *y, long tokens, long n,
                           long ystride, long row_begin, long row_end) {
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    TILE_BEGIN
    const uint16_t *w0 = w + o * n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    for (; i + 16 <= n; i += 16) {
        __m256 ue = _mm256_loadu_ps(x0 + i), ve = _mm256_loadu_ps(x1 + i);
        __m256 uo = _mm256_loadu_ps(x0 + i + 8), vo = _mm256_loadu_ps(x1 + i + 8);
        __m256i q;
#define ROW(r)                                                                                      \
    q = _mm256_loadu_si256((const __m256i *)(w##r + i));                                            \
    STEP(r, EVEN(q), ue, ve)                                                                        \
    STEP(r, ODD(q), uo, vo)
        ROW(0) ROW(1) ROW(2) ROW(3)
#undef ROW
    }
    TILE_END(BF16)
    for (; o < row_end; o++) {
        for (long t = 0; t < tokens; t++) {
            const float *xt = x + t * n;
            const uint16_t *wo = w + o * n;
            __m256 a = _mm256_setzero_ps(), b = a;
            long i = 0;
            for (; i + 16 <= n; i += 16) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(wo + i));
                a = _mm256_fmadd_ps(EVEN(q), _mm256_loadu_ps(xt + i), a);
                b = _mm256_fmadd_ps(ODD(q), _mm256_loadu_ps(xt + i + 8), b);
            }
            float s = hsum(_mm256_add_ps(a, b));
            for (; i < n; i++) s += bf16_value(wo[i]) * xt[i];
            y[t * ystride + o] = s + (bias ? bias[o] : 0);
        }
    }
}

#else
int fs_native_kernels(void) { return 0; }
void fs_linear_f32(const float *x, const float *w, const float *bias, float *y, long tokens, long n, long ystride,
                   long row_begin, long row_end) {}
void fs_linear_bf16(const float *x, const uint16_t *w, const float *bias, float *y, long tokens, long n,
                    long ystride, long row_begin, long row_end) {}
#endif

void fs_pair_order(const float *x, float *out, long tokens, long n) {
    for (long t = 0; t < tokens; t++) {
        const float *row = x + t * n;
        float *dst = out + t * n;
        long i = 0;
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 8; k++) {
                dst[i + k] = row[i + 2 * k];
                dst[i + 8 + k] = row[i + 2 * k + 1];
            }
        for (; i < n; i++) dst[i] = row[i];
    }
}

void fs_bf16_to_f32(const uint16_t *in, float *out, long count) {
    uint32_t *bits = (uint32_t *)out;
    for (long i = 0; i < count; i++) bits[i] = (uint32_t)in[i] << 16;
}
