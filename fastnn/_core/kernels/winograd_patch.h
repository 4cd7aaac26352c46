/* F(2x2,3x3)'s patches of a vector of tiles gathered tile by tile, at the translation unit's
   level (AVX-512: 16 tiles, AVX2: 8), for winograd, winograd_dw and winograd/small: each tile's
   patch row is one masked 4-float load (off, km: winograd_tiles.h's fnn_wg_patches) into a
   128-bit block, and 4x4 transposes per block put tile q in lane q. */
#ifndef FNN_WINOGRAD_PATCH_H
#define FNN_WINOGRAD_PATCH_H
#include <immintrin.h>
#include "isa.h"

#if FNN_ISA >= 2
/* d[r][j] lane q := x[iy0 + r, ix0 + j] of tile q (zero outside the image): tile 4*blk + g's
   row in 128-bit block blk of p[g] */
static inline void fnn_wg2_patch(const float* xc, const long* off, const unsigned char* km,
                                 long W, __m512 d[4][4]) {
    for (int r = 0; r < 4; r++) {
        __m512 p[4];
        for (int g = 0; g < 4; g++) {
            __m512 v = _mm512_castps128_ps512(
                _mm_maskz_loadu_ps(km[g * 4 + r], xc + off[g] + r * W));
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(4 + g) * 4 + r], xc + off[4 + g] + r * W), 1);
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(8 + g) * 4 + r], xc + off[8 + g] + r * W), 2);
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(12 + g) * 4 + r], xc + off[12 + g] + r * W), 3);
            p[g] = v;
        }
        __m512 t0 = _mm512_unpacklo_ps(p[0], p[1]), t1 = _mm512_unpackhi_ps(p[0], p[1]);
        __m512 t2 = _mm512_unpacklo_ps(p[2], p[3]), t3 = _mm512_unpackhi_ps(p[2], p[3]);
        d[r][0] = _mm512_shuffle_ps(t0, t2, 0x44);
        d[r][1] = _mm512_shuffle_ps(t0, t2, 0xEE);
        d[r][2] = _mm512_shuffle_ps(t1, t3, 0x44);
        d[r][3] = _mm512_shuffle_ps(t1, t3, 0xEE);
    }
}
#else
/* the 4-bit column masks of a patch row as vmaskmov lane masks */
static const int fnn_wg2_lanes[16][4] __attribute__((aligned(16))) = {
    {0, 0, 0, 0}, {-1, 0, 0, 0}, {0, -1, 0, 0}, {-1, -1, 0, 0}, {0, 0, -1, 0}, {-1, 0, -1, 0},
    {0, -1, -1, 0}, {-1, -1, -1, 0}, {0, 0, 0, -1}, {-1, 0, 0, -1}, {0, -1, 0, -1},
    {-1, -1, 0, -1}, {0, 0, -1, -1}, {-1, 0, -1, -1}, {0, -1, -1, -1}, {-1, -1, -1, -1}};

static inline __m128 fnn_wg2_row(const float* p, int m) {
    if (m == 15) return _mm_loadu_ps(p);
    if (m == 0) return _mm_setzero_ps();
    return _mm_maskload_ps(p, _mm_load_si128((const __m128i*)fnn_wg2_lanes[m]));
}

/* d[r][j] lane q := x[iy0 + r, ix0 + j] of tile q (zero outside the image): tile 4*blk + g's
   row in 128-bit half blk of p[g] */
static inline void fnn_wg2_patch(const float* xc, const long* off, const unsigned char* km,
                                 long W, __m256 d[4][4]) {
    for (int r = 0; r < 4; r++) {
        __m256 p[4];
        for (int g = 0; g < 4; g++)
            p[g] = _mm256_insertf128_ps(
                _mm256_castps128_ps256(fnn_wg2_row(xc + off[g] + r * W, km[g * 4 + r])),
                fnn_wg2_row(xc + off[4 + g] + r * W, km[(4 + g) * 4 + r]), 1);
        __m256 t0 = _mm256_unpacklo_ps(p[0], p[1]), t1 = _mm256_unpackhi_ps(p[0], p[1]);
        __m256 t2 = _mm256_unpacklo_ps(p[2], p[3]), t3 = _mm256_unpackhi_ps(p[2], p[3]);
        d[r][0] = _mm256_shuffle_ps(t0, t2, 0x44);
        d[r][1] = _mm256_shuffle_ps(t0, t2, 0xEE);
        d[r][2] = _mm256_shuffle_ps(t1, t3, 0x44);
        d[r][3] = _mm256_shuffle_ps(t1, t3, 0xEE);
    }
}
#endif

#endif /* FNN_WINOGRAD_PATCH_H */
