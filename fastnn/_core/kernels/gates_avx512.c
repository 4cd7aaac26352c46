/* The LSTM gate rows of gates.h as one AVX-512 pass each (vecmath.h's 16-lane functions,
   whose activations are its scalar ones' bits). */
#include <immintrin.h>
#include "gates.h"

static inline __mmask16 fnn_tail16(int j, int H) {
    return H - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (H - j)) - 1);
}
/* One row of the forward step in one pass: g (4H, the product h @ W_hh^T) := the activated
   gates of g + x + b_hh, then c_new, h_new. */
void fnn_lstm_fwd_row16(int H, float* restrict g, const float* restrict x,
                               const float* restrict b, const float* restrict c_prev,
                               float* restrict c_new, float* restrict h_new) {
    for (int j = 0; j < H; j += 16) {
        __mmask16 m = fnn_tail16(j, H);
        #define FNN_PRE(o) _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, g + (o) + j), \
            _mm512_maskz_loadu_ps(m, x + (o) + j)), _mm512_maskz_loadu_ps(m, b + (o) + j))
        __m512 i = fnn_sigmoid16(FNN_PRE(0));
        __m512 f = fnn_sigmoid16(FNN_PRE(H));
        __m512 gg = fnn_tanh16(FNN_PRE(2 * H));
        __m512 o = fnn_sigmoid16(FNN_PRE(3 * H));
        #undef FNN_PRE
        _mm512_mask_storeu_ps(g + j, m, i);
        _mm512_mask_storeu_ps(g + H + j, m, f);
        _mm512_mask_storeu_ps(g + 2 * H + j, m, gg);
        _mm512_mask_storeu_ps(g + 3 * H + j, m, o);
        __m512 c = _mm512_fmadd_ps(f, _mm512_maskz_loadu_ps(m, c_prev + j), _mm512_mul_ps(i, gg));
        _mm512_mask_storeu_ps(c_new + j, m, c);
        _mm512_mask_storeu_ps(h_new + j, m, _mm512_mul_ps(o, fnn_tanh16(c)));
    }
}
void fnn_lstm_bwd_row16(int H, const float* restrict g, float* restrict d,
                               const float* restrict dy, const float* restrict c_prev,
                               const float* restrict c_row, const float* restrict dhr,
                               float* restrict dcr) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int j = 0; j < H; j += 16) {
        __mmask16 m = fnn_tail16(j, H);
        __m512 i = _mm512_maskz_loadu_ps(m, g + j), f = _mm512_maskz_loadu_ps(m, g + H + j);
        __m512 gg = _mm512_maskz_loadu_ps(m, g + 2 * H + j), o = _mm512_maskz_loadu_ps(m, g + 3 * H + j);
        __m512 sech2, tc = fnn_tanh_sech2_16(_mm512_maskz_loadu_ps(m, c_row + j), &sech2);
        __m512 dhv = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dy + j), _mm512_maskz_loadu_ps(m, dhr + j));
        __m512 dcv = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dcr + j),
            _mm512_mul_ps(_mm512_mul_ps(dhv, o), sech2));
        _mm512_mask_storeu_ps(d + j, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dcv, gg), i), _mm512_sub_ps(one, i)));
        _mm512_mask_storeu_ps(d + H + j, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dcv,
            _mm512_maskz_loadu_ps(m, c_prev + j)), f), _mm512_sub_ps(one, f)));
        _mm512_mask_storeu_ps(d + 2 * H + j, m, _mm512_mul_ps(_mm512_mul_ps(dcv, i), _mm512_fnmadd_ps(gg, gg, one)));
        _mm512_mask_storeu_ps(d + 3 * H + j, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dhv, tc), o), _mm512_sub_ps(one, o)));
        _mm512_mask_storeu_ps(dcr + j, m, _mm512_mul_ps(dcv, f));
    }
}
