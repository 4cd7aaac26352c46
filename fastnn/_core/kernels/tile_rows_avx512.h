/* 16 tiles' rows put in the tiles' lanes (AVX-512), for the Winograd kernels that gather a
   group of tiles' patch rows with one 8-float load a tile: p[k] holds tile k's row in its low
   half and tile k + 8's in its high half; 8x8 transposes of the halves, then the 128-bit
   blocks in tile order, give d[j] lane q = column j of tile q's row (j < 8). Data movement
   only: the kernels' float operations are not touched. */
#ifndef FNN_TILE_ROWS_AVX512_H
#define FNN_TILE_ROWS_AVX512_H
#include <immintrin.h>

static inline void fnn_tile_rows16(const __m512 p[8], __m512 d[8]) {
    const __m512i lo_blk = _mm512_set_epi32(27, 26, 25, 24, 11, 10, 9, 8, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i hi_blk = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 23, 22, 21, 20, 7, 6, 5, 4);
    __m512 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm512_unpacklo_ps(p[k], p[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(p[k], p[k + 1]);
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm512_shuffle_ps(t[k], t[k + 2], 0x44);
        u[k + 1] = _mm512_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm512_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    /* u[j] (j < 4) holds columns j | j+4 of rows 0-3, u[j + 4] of rows 4-7, per 256-bit half */
    for (int j = 0; j < 4; j++) {
        d[j] = _mm512_permutex2var_ps(u[j], lo_blk, u[j + 4]);
        d[j + 4] = _mm512_permutex2var_ps(u[j], hi_blk, u[j + 4]);
    }
}

#endif /* FNN_TILE_ROWS_AVX512_H */
