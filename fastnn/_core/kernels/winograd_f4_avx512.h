/* F(4x4,3x3)'s AVX-512 patch loads (16 tiles a vector, one tile per lane) and transforms
   (winograd_transforms.h), shared by winograd/f4 (winograd_avx512.c) and winograd/small4
   (winograd_small4_avx512.c) so both run the same float32 operations. */
#ifndef FNN_WINOGRAD_F4_AVX512_H
#define FNN_WINOGRAD_F4_AVX512_H
#include <immintrin.h>
#include "tile_rows_avx512.h"
#include "winograd_transforms.h"

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
