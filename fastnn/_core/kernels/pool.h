/* 2x2 stride-2 max pooling of float32 planes (P, H, W) -> (P, OH, OW), argmax as the flat
   h*W + w of the chosen element. The window's four values are compared in row order: a value
   replaces the best when strictly greater or NaN (the first maximum wins, a NaN propagates), as
   PyTorch selects. The vector paths (16 or 8 outputs a step: the row pair deinterleaved into
   even and odd columns) make the same comparisons in the same order, so every level gives the
   same values and indices. Planes must have fewer than 2^31 elements (indices in 32-bit lanes). */
#ifndef FNN_POOL_H
#define FNN_POOL_H

#include <stdint.h>
#include <string.h>
#include "isa.h"
#include "vecmath.h"
#if FNN_ISA >= 1
#include <immintrin.h>
#endif

/* best/where updated by candidate v at flat index k (the scalar step every path mirrors), by
   selects: on random data a branch would be mispredicted half the time */
#define FNN_MP_STEP(v, k) do { float v_ = (v); int c_ = (v_ > best) | (v_ != v_); \
        best = fnn_selectf(c_, v_, best); where ^= (where ^ (k)) & -(int64_t)c_; } while (0)

static inline void fnn_maxpool2x2_row_scalar(const float* row0, const float* row1, float* o,
                                             int64_t* a, int64_t k0, int64_t w, int64_t j0,
                                             int64_t ow) {
    for (int64_t j = j0; j < ow; j++) {
        int64_t k1 = k0 + w;
        float best = row0[2 * j];
        int64_t where = k0 + 2 * j;
        FNN_MP_STEP(row0[2 * j + 1], k0 + 2 * j + 1);
        FNN_MP_STEP(row1[2 * j], k1 + 2 * j);
        FNN_MP_STEP(row1[2 * j + 1], k1 + 2 * j + 1);
        o[j] = best;
        a[j] = where;
    }
}

#if FNN_ISA >= 2
/* one candidate step on 16 lanes: take v where v > best or v is NaN */
static inline void fnn_mp_step16(__m512 v, __m512i kv, __m512* best, __m512i* where) {
    __mmask16 c = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *best = _mm512_mask_mov_ps(*best, c, v);
    *where = _mm512_mask_mov_epi32(*where, c, kv);
}

static inline void fnn_maxpool2x2_row(const float* row0, const float* row1, float* o, int64_t* a,
                                      int64_t k0, int64_t w, int64_t ow) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i lane2 = _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                              12, 13, 14, 15), 1);
    for (int64_t j = 0; j < ow; j += 16) {
        int64_t n = ow - j < 16 ? ow - j : 16;
        __mmask16 m = (__mmask16)((1u << n) - 1);
        __mmask16 lo = (__mmask16)(n >= 8 ? 0xFFFF : (1u << (2 * n)) - 1);
        __mmask16 hi = (__mmask16)(n <= 8 ? 0 : (1u << (2 * (n - 8))) - 1);
        __m512 r0a = _mm512_maskz_loadu_ps(lo, row0 + 2 * j);
        __m512 r0b = _mm512_maskz_loadu_ps(hi, row0 + 2 * j + 16);
        __m512 r1a = _mm512_maskz_loadu_ps(lo, row1 + 2 * j);
        __m512 r1b = _mm512_maskz_loadu_ps(hi, row1 + 2 * j + 16);
        __m512i k = _mm512_add_epi32(_mm512_set1_epi32((int)(k0 + 2 * j)), lane2);
        __m512i kw = _mm512_add_epi32(k, _mm512_set1_epi32((int)w));
        __m512i one = _mm512_set1_epi32(1);
        __m512 best = _mm512_permutex2var_ps(r0a, even, r0b);
        __m512i where = k;
        fnn_mp_step16(_mm512_permutex2var_ps(r0a, odd, r0b), _mm512_add_epi32(k, one), &best, &where);
        fnn_mp_step16(_mm512_permutex2var_ps(r1a, even, r1b), kw, &best, &where);
        fnn_mp_step16(_mm512_permutex2var_ps(r1a, odd, r1b), _mm512_add_epi32(kw, one), &best, &where);
        _mm512_mask_storeu_ps(o + j, m, best);
        _mm512_mask_storeu_epi64(a + j, (__mmask8)m,
                                 _mm512_cvtepi32_epi64(_mm512_castsi512_si256(where)));
        _mm512_mask_storeu_epi64(a + j + 8, (__mmask8)(m >> 8),
                                 _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(where, 1)));
    }
}
#elif FNN_ISA == 1
static inline void fnn_mp_step8(__m256 v, __m256i kv, __m256* best, __m256i* where) {
    __m256 c = _mm256_or_ps(_mm256_cmp_ps(v, *best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    *best = _mm256_blendv_ps(*best, v, c);
    *where = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*where),
                                                  _mm256_castsi256_ps(kv), c));
}

/* columns 2j..2j+15 of a row as (even, odd) 8-lane vectors */
static inline void fnn_mp_split8(const float* r, __m256* e, __m256* o) {
    __m256 a = _mm256_loadu_ps(r), b = _mm256_loadu_ps(r + 8);
    *e = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    *o = _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
}

static inline void fnn_maxpool2x2_row(const float* row0, const float* row1, float* o, int64_t* a,
                                      int64_t k0, int64_t w, int64_t ow) {
    const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i one = _mm256_set1_epi32(1);
    int64_t j = 0;
    for (; j + 8 <= ow; j += 8) {
        __m256 e0, o0, e1, o1;
        fnn_mp_split8(row0 + 2 * j, &e0, &o0);
        fnn_mp_split8(row1 + 2 * j, &e1, &o1);
        __m256i k = _mm256_add_epi32(_mm256_set1_epi32((int)(k0 + 2 * j)), lane2);
        __m256i kw = _mm256_add_epi32(k, _mm256_set1_epi32((int)w));
        __m256 best = e0;
        __m256i where = k;
        fnn_mp_step8(o0, _mm256_add_epi32(k, one), &best, &where);
        fnn_mp_step8(e1, kw, &best, &where);
        fnn_mp_step8(o1, _mm256_add_epi32(kw, one), &best, &where);
        _mm256_storeu_ps(o + j, best);
        _mm256_storeu_si256((__m256i*)(a + j), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(where)));
        _mm256_storeu_si256((__m256i*)(a + j + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(where, 1)));
    }
    fnn_maxpool2x2_row_scalar(row0, row1, o, a, k0, w, j, ow);
}
#else
static inline void fnn_maxpool2x2_row(const float* row0, const float* row1, float* o, int64_t* a,
                                      int64_t k0, int64_t w, int64_t ow) {
    fnn_maxpool2x2_row_scalar(row0, row1, o, a, k0, w, 0, ow);
}
#endif

/* planes [lo, hi) of x (P, h, w) into out, argmax (P, oh, ow) */
static inline void fnn_maxpool2x2_f32(const float* x, float* out, int64_t* argmax, int64_t lo,
                                      int64_t hi, int64_t h, int64_t w, int64_t oh, int64_t ow) {
    for (int64_t p = lo; p < hi; p++)
        for (int64_t i = 0; i < oh; i++) {
            const float* row0 = x + (p * h + 2 * i) * w;
            fnn_maxpool2x2_row(row0, row0 + w, out + (p * oh + i) * ow, argmax + (p * oh + i) * ow,
                               2 * i * w, w, ow);
        }
}

#undef FNN_MP_STEP
#endif /* FNN_POOL_H */
