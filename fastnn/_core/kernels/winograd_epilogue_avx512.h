/* The output epilogue the AVX-512 F(4x4,*) forwards share (fnn_wg4_tiles in winograd_avx512.c,
   winograd_small4_avx512.c, fnn_ws2_tiles in winograd_s2_avx512.c): a 4x4 tile row of 16
   tiles (one per lane), bias, the non-finite flag, the activation, and the 4x4 transposes that
   put each tile's row in 4 consecutive floats. */
#ifndef FNN_WINOGRAD_EPILOGUE_AVX512_H
#define FNN_WINOGRAD_EPILOGUE_AVX512_H
#include <immintrin.h>

/* fpclass categories: quiet NaN, +inf, -inf, signalling NaN */
#define FNN_WG_EPI_NONFINITE 0x99

/* y[j] := act(y[j] + bias) for the 4 columns of a tile row (act 0 none, 1 ReLU, 2 leaky ReLU of
   slope s, bitwise as fnn_act_f32); returns the lanes (of those in lanes) whose sum before the
   activation is NaN or infinite */
static inline __mmask16 fnn_wg_epi_bias_act(__m512 y[4], __m512 bias, __mmask16 lanes, int act,
                                            __m512 s) {
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int j = 0; j < 4; j++) {
        y[j] = _mm512_add_ps(y[j], bias);
        bad |= _mm512_mask_fpclass_ps_mask(lanes, y[j], FNN_WG_EPI_NONFINITE);
        if (act == 1)
            y[j] = _mm512_mask_mov_ps(y[j], _mm512_cmp_ps_mask(y[j], zero, _CMP_LE_OQ), zero);
        else if (act == 2)
            y[j] = _mm512_mask_mov_ps(_mm512_mul_ps(y[j], s),
                                      _mm512_cmp_ps_mask(y[j], zero, _CMP_GT_OQ), y[j]);
    }
    return bad;
}

/* 4x4 transposes per 128-bit block: block k of p[g] = the row (columns 0-3, y[0..3]) of the
   tile in lane 4k + g */
static inline void fnn_wg_epi_transpose(const __m512 y[4], __m512 p[4]) {
    __m512 t0 = _mm512_unpacklo_ps(y[0], y[1]), t1 = _mm512_unpackhi_ps(y[0], y[1]);
    __m512 t2 = _mm512_unpacklo_ps(y[2], y[3]), t3 = _mm512_unpackhi_ps(y[2], y[3]);
    p[0] = _mm512_shuffle_ps(t0, t2, 0x44);
    p[1] = _mm512_shuffle_ps(t0, t2, 0xEE);
    p[2] = _mm512_shuffle_ps(t1, t3, 0x44);
    p[3] = _mm512_shuffle_ps(t1, t3, 0xEE);
}

#endif /* FNN_WINOGRAD_EPILOGUE_AVX512_H */
