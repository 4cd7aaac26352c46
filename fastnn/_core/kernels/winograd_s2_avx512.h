/* winograd_s2's AVX-512 input side (16 tiles a vector): the tiles' 10x10 windows of x located
   and loaded (their phases then transformed by winograd_transforms.h's fnn_ws2_phase); shared
   by the forward (winograd_s2_avx512.c) and the weight gradient (winograd_s2_dw_avx512.c),
   which read and transform x alike. */
#ifndef FNN_WINOGRAD_S2_AVX512_H
#define FNN_WINOGRAD_S2_AVX512_H
#include <immintrin.h>
#include "tile_rows_avx512.h"
#include "winograd_transforms.h"

/* lane q's 10x10 window of x (C, H, W planes a sample) at sample n, rows iy0.., columns ix0..:
   its offset idx[q], bit q of rowm[r] / colm[j] where row iy0 + r / column ix0 + j is inside
   x, and km[r][q] its columns 0-7 inside x in row r (none for a row outside). The caller
   zeroes rowm and colm, and idx[q] and km[.][q] of a lane without a tile. */
static inline void fnn_ws2_window(int q, long n, int iy0, int ix0, int C, int H, int W,
                                  int idx[16], __mmask16 rowm[10], __mmask16 colm[10],
                                  __mmask8 km[10][16]) {
    idx[q] = (int)(n * C * ((long)H * W) + (long)iy0 * W + ix0);
    __mmask8 cm = 0;
    for (int r = 0; r < 10; r++) {
        if (iy0 + r >= 0 && iy0 + r < H) rowm[r] |= (__mmask16)(1u << q);
        if (ix0 + r >= 0 && ix0 + r < W) colm[r] |= (__mmask16)(1u << q);
        if (r < 8 && ix0 + r >= 0 && ix0 + r < W) cm |= (__mmask8)(1u << r);
    }
    for (int r = 0; r < 10; r++) km[r][q] = (iy0 + r >= 0 && iy0 + r < H) ? cm : 0;
}

/* d[j] lane q := row r of tile q's window (fnn_ws2_window) in channel plane xc, columns j <
   10 (zero outside x): columns 0-7 loaded as rows and put in tile lanes (tile_rows_avx512.h),
   columns 8, 9 gathered */
static inline void fnn_ws2_window_row(const float* xc, int r, int W, const int idx[16],
                                      __m512i vidx, const __mmask16 rowm[10],
                                      const __mmask16 colm[10], __mmask8 km[10][16],
                                      __m512 d[10]) {
    __m512 p[8];
    const float* xr = xc + (long)r * W;
    for (int k = 0; k < 8; k++)
        p[k] = _mm512_insertf32x8(
            _mm512_castps256_ps512(_mm256_maskz_loadu_ps(km[r][k], xr + idx[k])),
            _mm256_maskz_loadu_ps(km[r][k + 8], xr + idx[k + 8]), 1);
    fnn_tile_rows16(p, d);
    for (int j = 8; j < 10; j++)
        d[j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), rowm[r] & colm[j], vidx, xr + j, 4);
}

#endif /* FNN_WINOGRAD_S2_AVX512_H */
