/* winograd/small's register-blocked products (AVX-512: groups of 32 tiles, two 16-lane
   vectors, blocks of 8 output channels, 16 accumulators), shared by the F(2x2,3x3) kernel
   (winograd_small_avx512.c) and the F(4x4,3x3) one (winograd_small4_avx512.c). */
#ifndef FNN_WINOGRAD_SMALL_AVX512_H
#define FNN_WINOGRAD_SMALL_AVX512_H
#include <immintrin.h>

enum { FNN_WGSP_G = 32, FNN_WGSP_NV = 2, FNN_WGSP_OB = 8 };

/* One element of the tile: m[j*G + t] := sum_c u[c*OB + j] * v[c*G + t] for the block's OB
   output channels j and the group's G tiles t, one FMA chain over c from a product, in channel
   order (the microkernel GEMMs' order: the same bits as the general routes). */
static inline void fnn_wgs_products(const float* u, const float* v, int C, float* m) {
    enum { G = FNN_WGSP_G, NV = FNN_WGSP_NV, OB = FNN_WGSP_OB };
    __m512 acc[OB][NV];
#pragma GCC unroll 8
    for (int j = 0; j < OB; j++) {
        __m512 uj = _mm512_set1_ps(u[j]);
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) acc[j][k] = _mm512_mul_ps(uj, _mm512_load_ps(v + 16 * k));
    }
    for (int c = 1; c < C; c++) {
        __m512 vk[NV];
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) vk[k] = _mm512_load_ps(v + (long)c * G + 16 * k);
#pragma GCC unroll 8
        for (int j = 0; j < OB; j++) {
            __m512 uj = _mm512_set1_ps(u[c * OB + j]);
#pragma GCC unroll 4
            for (int k = 0; k < NV; k++) acc[j][k] = _mm512_fmadd_ps(uj, vk[k], acc[j][k]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < OB; j++)
#pragma GCC unroll 4
        for (int k = 0; k < NV; k++) _mm512_store_ps(m + (long)j * G + 16 * k, acc[j][k]);
}

#endif /* FNN_WINOGRAD_SMALL_AVX512_H */
