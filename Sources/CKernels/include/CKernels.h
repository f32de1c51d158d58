#ifndef FINESHARD_CKERNELS_H
#define FINESHARD_CKERNELS_H
// The forward check's matrix product y = x · Wᵀ (+ b) with AVX2 + FMA (8 float lanes, fused
// multiply-add), for Kernels.linear in FineShardVerification. Built for every x86-64 CPU: the AVX2
// functions carry their own target attribute and are called only when fs_native_kernels() says so.
#include <stdint.h>

/// 1 when this CPU runs the AVX2 + FMA functions below (x86-64 with both), else 0.
int fs_native_kernels(void);

/// y[t * ystride + o] = x[t] · w[o] + (bias ? bias[o] : 0) for o in [row_begin, row_end) and every
/// token t < tokens; x is [tokens, n] and w [rows, n] row-major float32.
void fs_linear_f32(const float *x, const float *w, const float *bias, float *y, long tokens, long n, long ystride,
                   long row_begin, long row_end);

/// The same with w as bfloat16 (its 16 bits are the high half of the float32), widened inside the
/// product; x must first be put in pair order by fs_pair_order.
void fs_linear_bf16(const float *x_paired, const uint16_t *w, const float *bias, float *y, long tokens, long n,
                    long ystride, long row_begin, long row_end);

/// Reorders each row of x [tokens, n] for fs_linear_bf16: within every block of 16 columns, the 8
/// even columns, then the 8 odd ones (a bf16 weight vector splits into those two halves with one
/// shift and one mask); columns past the last whole block stay in place.
void fs_pair_order(const float *x, float *out, long tokens, long n);

/// bfloat16 to float32 (exact): out[i] = bits(in[i]) << 16.
void fs_bf16_to_f32(const uint16_t *in, float *out, long count);

#endif
