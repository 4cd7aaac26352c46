/* F(4x4,3x3)'s AVX-512 transforms and patch loads (16 tiles a vector, one tile per lane),
   shared by winograd/f4 (winograd_avx512.c) and winograd/small4 (winograd_small4_avx512.c) so
   both run the same float32 operations. */
#ifndef FNN_WINOGRAD_F4_AVX512_H
#define FNN_WINOGRAD_F4_AVX512_H
#include <immintrin.h>
#include "tile_rows_avx512.h"

/* o := B^T d for 6 vectors, B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
   0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
static inline void fnn_wg4_bt(const __m512 d[6], __m512 o[6]) {
    const __m512 four = _mm512_set1_ps(4.0f), mfour = _mm512_set1_ps(-4.0f);
    const __m512 mfive = _mm512_set1_ps(-5.0f), two = _mm512_set1_ps(2.0f);
    __m512 a = _mm512_fmadd_ps(mfour, d[2], d[4]), b = _mm512_fmadd_ps(mfour, d[1], d[3]);
    __m512 c = _mm512_sub_ps(d[4], d[2]), e = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
    o[0] = _mm512_fmadd_ps(four, d[0], _mm512_fmadd_ps(mfive, d[2], d[4]));
    o[1] = _mm512_add_ps(a, b);
    o[2] = _mm512_sub_ps(a, b);
    o[3] = _mm512_add_ps(c, e);
    o[4] = _mm512_sub_ps(c, e);
    o[5] = _mm512_fmadd_ps(four, d[1], _mm512_fmadd_ps(mfive, d[3], d[5]));
}

/* y := A^T m for 6 vectors, A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
static inline void fnn_wg4_at(const __m512 m[6], __m512 y[4]) {
    __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
    __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
    y[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
    y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
    y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
    y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m[5]);
}

/* Row r of the 16 patches of one channel: d[j] lane q = x[iy0 + r, ix0 + j] of tile q (zero
   outside). Tile q's row is one masked 8-float load into the half q / 8 of p[q % 8]
   (tile_rows_avx512.h puts it in lane q). */
static inline void fnn_wg4_patch_row(const float* xc, const long* off, const __mmask8* km,
                                     long rW, int r, __m512 d[6]) {
    __m512 p[8], c[8];
    for (int k = 0; k < 8; k++)
        p[k] = _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm256_maskz_loadu_ps(km[k * 6 + r], xc + off[k] + rW)),
            _mm256_maskz_loadu_ps(km[(k + 8) * 6 + r], xc + off[k + 8] + rW), 1);
    fnn_tile_rows16(p, c);
    for (int j = 0; j < 6; j++) d[j] = c[j];
}

#endif /* FNN_WINOGRAD_F4_AVX512_H */
