/* winograd/small's register-blocked products (AVX2: groups of 24 tiles, three 8-lane vectors,
   blocks of 4 output channels, 12 accumulators of the 16 registers), shared by the F(2x2,3x3)
   kernel (winograd_small_avx2.c) and the F(4x4,3x3) one (winograd_small4_avx2.c). */
#ifndef FNN_WINOGRAD_SMALL_AVX2_H
#define FNN_WINOGRAD_SMALL_AVX2_H
#include <immintrin.h>

enum { FNN_WGSP_G = 24, FNN_WGSP_NV = 3, FNN_WGSP_OB = 4 };

/* One element of the tile: m[j*G + t] := sum_c u[c*OB + j] * v[c*G + t] for the block's OB
   output channels j and the group's G tiles t, one FMA chain over c from a product, in channel
   order (winograd_small_avx512.h's operations). */
static inline void fnn_wgs_products(const float* u, const float* v, int C, float* m) {
    enum { G = FNN_WGSP_G, NV = FNN_WGSP_NV, OB = FNN_WGSP_OB };
    __m256 acc[OB][NV];
#pragma GCC unroll 8
    for (int j = 0; j < OB; j++) {
        __m256 uj = _mm256_broadcast_ss(u + j);
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) acc[j][k] = _mm256_mul_ps(uj, _mm256_load_ps(v + 8 * k));
    }
    for (int c = 1; c < C; c++) {
        __m256 vk[NV];
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) vk[k] = _mm256_load_ps(v + (long)c * G + 8 * k);
#pragma GCC unroll 8
        for (int j = 0; j < OB; j++) {
            __m256 uj = _mm256_broadcast_ss(u + c * OB + j);
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) acc[j][k] = _mm256_fmadd_ps(uj, vk[k], acc[j][k]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < OB; j++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) _mm256_store_ps(m + (long)j * G + 8 * k, acc[j][k]);
}

#endif /* FNN_WINOGRAD_SMALL_AVX2_H */
