/* Accurate float32 exp, tanh and sigmoid that compilers vectorise: within 1-3.5 ulp of the exact
   value over the whole float32 range (tiny and subnormal inputs and results, saturation, +-inf,
   NaN propagates). Shared by gates.h (the recurrent cells' gate math) and _blas.pyx (the dense
   epilogue); numba's kernels use the same algorithms (_fastmath.py).

   The scalar versions (fnn_expf, fnn_tanhf, fnn_tanh_sech2f, fnn_sigmoidf, fnn_sigmoid_compf)
   are branch-free but for selects, so a loop calling them vectorises on any x86-64 build; where
   the compiler targets AVX-512, the 16-lane versions (fnn_exp16, fnn_tanh16, fnn_tanh_sech2_16,
   fnn_sigmoid16) do the same operations in the same order and so give the same bits, as does
   the 8-lane fnn_exp8 where it targets AVX2.

   exp(x): k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite: k * hi is exact and so
   is the subtraction, |r| <= ln2 / 2), exp(r) = 1 + r + r^2 P(r) (Cephes' minimax P), then
   scaled by 2^k with one rounding (subnormal results come out right; x is clamped to
   [-104, 89], beyond which the result is 0 or inf anyway).
   tanh(x): x + x^3 Q(x^2) (Cephes) for |x| < 0.625, else sign(x) (1 - 2e / (1 + e)) with
   e = exp(-2|x|), exactly +-1 from where 2e rounds away against 1.
   sigmoid(x): with e = exp(-|x|) (never overflows), 1 / (1 + e) for x >= 0 and e / (1 + e)
   below, so the tail keeps its relative precision down to the subnormals.
   Measured over every float32 (an exhaustive run against libm's double functions): exp 1.0,
   tanh 1.5, sigmoid 2.4, 1 - tanh^2 3.5 ulp at most. */
#ifndef FNN_VECMATH_H
#define FNN_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__FMA__) || defined(__AVX512F__)
#define FNN_FMAF(a, b, c) fmaf((a), (b), (c))
#else
#define FNN_FMAF(a, b, c) ((a) * (b) + (c))
#endif

#define FNN_EXP_LO (-104.0f)                   /* exp(x) rounds to 0 below (< 2^-150) */
#define FNN_EXP_HI 89.0f                       /* exp(x) > FLT_MAX above */
#define FNN_LOG2E 1.44269504088896341f
#define FNN_ROUND_MAGIC 12582912.0f            /* 1.5 * 2^23: t + magic - magic = round(t) */
#define FNN_LN2_HI 0.693359375f                /* 9 bits: k * hi exact for |k| < 2^15 */
#define FNN_LN2_LO (-2.12194440e-4f)           /* ln 2 - hi */
#define FNN_EXP_P0 1.9875691500e-4f
#define FNN_EXP_P1 1.3981999507e-3f
#define FNN_EXP_P2 8.3334519073e-3f
#define FNN_EXP_P3 4.1665795894e-2f
#define FNN_EXP_P4 1.6666665459e-1f
#define FNN_EXP_P5 5.0000001201e-1f
#define FNN_TANH_CUT 0.625f                    /* the polynomial below, the exp formula above */
#define FNN_TANH_Q0 (-5.70498872745e-3f)
#define FNN_TANH_Q1 2.06390887954e-2f
#define FNN_TANH_Q2 (-5.37397155531e-2f)
#define FNN_TANH_Q3 1.33314422036e-1f
#define FNN_TANH_Q4 (-3.33332819422e-1f)

static inline float fnn_bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t fnn_float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
/* c ? a : b on the bits: with ?: GCC threads or sinks the arithmetic around it into branches,
   which it then does not vectorise without AVX-512's masks (or -fno-trapping-math) */
static inline float fnn_selectf(int c, float a, float b) {
    uint32_t m = -(uint32_t)(c != 0);
    return fnn_bits_to_float((fnn_float_to_bits(a) & m) | (fnn_float_to_bits(b) & ~m));
}

static inline float fnn_expf(float x) {
    float xc = fnn_selectf(x < FNN_EXP_LO, FNN_EXP_LO, x);  /* NaN fails both tests: stays NaN */
    xc = fnn_selectf(xc > FNN_EXP_HI, FNN_EXP_HI, xc);
    float t = FNN_FMAF(xc, FNN_LOG2E, FNN_ROUND_MAGIC);
    float kf = t - FNN_ROUND_MAGIC;
    float r = FNN_FMAF(kf, -FNN_LN2_HI, xc);
    r = FNN_FMAF(kf, -FNN_LN2_LO, r);
    float p = FNN_FMAF(FNN_EXP_P0, r, FNN_EXP_P1);
    p = FNN_FMAF(p, r, FNN_EXP_P2);
    p = FNN_FMAF(p, r, FNN_EXP_P3);
    p = FNN_FMAF(p, r, FNN_EXP_P4);
    p = FNN_FMAF(p, r, FNN_EXP_P5);
    float y = FNN_FMAF(p, r * r, r) + 1.0f;
    /* y * 2^k for k in [-150, 128] as two exact-range factors: the first product is exact,
       the second rounds once (to a subnormal, or to inf) */
    uint32_t k = fnn_float_to_bits(t) - fnn_float_to_bits(FNN_ROUND_MAGIC);
    uint32_t k1 = (uint32_t)((int32_t)k >> 1);
    float s1 = fnn_bits_to_float((k1 + 127u) << 23);
    float s2 = fnn_bits_to_float((k - k1 + 127u) << 23);
    return y * s1 * s2;
}

/* tanh(x), and in *sech2 1 - tanh(x)^2 (the derivative) with its own relative precision, which
   1 - t*t of a rounded t near +-1 would lose: (1 - t)(1 + t) = 1 - t^2 of the polynomial's t
   below the cutoff (no cancellation there), d (2 - d) with d = 2e / (1 + e) = 1 - |t|,
   e = exp(-2|x|), above (down to the subnormals, no overflow) */
static inline float fnn_tanh_sech2f(float x, float* sech2) {
    float ax = fabsf(x);
    float z = x * x;
    float q = FNN_FMAF(FNN_TANH_Q0, z, FNN_TANH_Q1);
    q = FNN_FMAF(q, z, FNN_TANH_Q2);
    q = FNN_FMAF(q, z, FNN_TANH_Q3);
    q = FNN_FMAF(q, z, FNN_TANH_Q4);
    float small = FNN_FMAF(x * z, q, x);
    float e = fnn_expf(-2.0f * ax);
    float d = (e + e) / (1.0f + e);
    int use_small = ax < FNN_TANH_CUT;  /* NaN takes 1 - d, which is NaN */
    *sech2 = fnn_selectf(use_small, FNN_FMAF(-small, small, 1.0f), d * (2.0f - d));
    /* |tanh| then x's sign: also tanh(-0) = -0, which x + x^3 Q rounds to +0 */
    return copysignf(fnn_selectf(use_small, fabsf(small), 1.0f - d), x);
}

static inline float fnn_tanhf(float x) {
    float unused;
    return fnn_tanh_sech2f(x, &unused);
}

/* 1 - t^2 (a tanh's derivative from its output t): rounded once with an FMA, else as
   (1 - t)(1 + t), whose factors are exact or rounded once (1 - t*t would keep t*t's rounding
   error, all of the result's precision where |t| is near 1) */
static inline float fnn_one_minus_sq(float t) {
#if defined(__FMA__) || defined(__AVX512F__)
    return fmaf(-t, t, 1.0f);
#else
    return (1.0f - t) * (1.0f + t);
#endif
}

/* sigmoid(x), and in *comp 1 - sigmoid(x) = sigmoid(-x) from the same exp (1 - s of a rounded
   s near 1 would keep none of its relative precision) */
static inline float fnn_sigmoid_compf(float x, float* comp) {
    float e = fnn_expf(-fabsf(x)), den = 1.0f + e;
    *comp = fnn_selectf(x >= 0.0f, e, 1.0f) / den;
    return fnn_selectf(x >= 0.0f, 1.0f, e) / den;
}

static inline float fnn_sigmoidf(float x) {
    float unused;
    return fnn_sigmoid_compf(x, &unused);
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* fnn_expf on 8 lanes: the same operations in the same order (the same bits) */
static inline __m256 fnn_exp8(__m256 x) {
    __m256 xc = _mm256_blendv_ps(x, _mm256_set1_ps(FNN_EXP_LO),
                                 _mm256_cmp_ps(x, _mm256_set1_ps(FNN_EXP_LO), _CMP_LT_OQ));
    xc = _mm256_blendv_ps(xc, _mm256_set1_ps(FNN_EXP_HI),
                          _mm256_cmp_ps(xc, _mm256_set1_ps(FNN_EXP_HI), _CMP_GT_OQ));
    __m256 t = _mm256_fmadd_ps(xc, _mm256_set1_ps(FNN_LOG2E), _mm256_set1_ps(FNN_ROUND_MAGIC));
    __m256 kf = _mm256_sub_ps(t, _mm256_set1_ps(FNN_ROUND_MAGIC));
    __m256 r = _mm256_fmadd_ps(kf, _mm256_set1_ps(-FNN_LN2_HI), xc);
    r = _mm256_fmadd_ps(kf, _mm256_set1_ps(-FNN_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(FNN_EXP_P0), r, _mm256_set1_ps(FNN_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FNN_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FNN_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FNN_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FNN_EXP_P5));
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i k = _mm256_sub_epi32(_mm256_castps_si256(t),
                                 _mm256_castps_si256(_mm256_set1_ps(FNN_ROUND_MAGIC)));
    __m256i k1 = _mm256_srai_epi32(k, 1), bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(k, k1), bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
}
#endif

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 fnn_exp16(__m512 x) {
    __m512 xc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(FNN_EXP_LO), _CMP_LT_OQ),
                                     x, _mm512_set1_ps(FNN_EXP_LO));
    xc = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(xc, _mm512_set1_ps(FNN_EXP_HI), _CMP_GT_OQ),
                              xc, _mm512_set1_ps(FNN_EXP_HI));
    __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(FNN_LOG2E), _mm512_set1_ps(FNN_ROUND_MAGIC));
    __m512 kf = _mm512_sub_ps(t, _mm512_set1_ps(FNN_ROUND_MAGIC));
    __m512 r = _mm512_fmadd_ps(kf, _mm512_set1_ps(-FNN_LN2_HI), xc);
    r = _mm512_fmadd_ps(kf, _mm512_set1_ps(-FNN_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(FNN_EXP_P0), r, _mm512_set1_ps(FNN_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FNN_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FNN_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FNN_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FNN_EXP_P5));
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, kf);  /* y * 2^kf, one rounding: the scalar version's bits */
}

static inline __m512 fnn_tanh_sech2_16(__m512 x, __m512* sech2) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_abs_ps(x);
    __m512 z = _mm512_mul_ps(x, x);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(FNN_TANH_Q0), z, _mm512_set1_ps(FNN_TANH_Q1));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(FNN_TANH_Q2));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(FNN_TANH_Q3));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(FNN_TANH_Q4));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, z), q, x);
    __m512 e = fnn_exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), ax));
    __m512 d = _mm512_div_ps(_mm512_add_ps(e, e), _mm512_add_ps(one, e));
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __mmask16 use_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(FNN_TANH_CUT), _CMP_LT_OQ);
    *sech2 = _mm512_mask_blend_ps(use_small, _mm512_mul_ps(d, _mm512_sub_ps(_mm512_set1_ps(2.0f), d)),
                                  _mm512_fnmadd_ps(small, small, one));
    __m512 mag = _mm512_mask_blend_ps(use_small, _mm512_sub_ps(one, d), _mm512_abs_ps(small));
    return _mm512_or_ps(_mm512_andnot_ps(sign, mag), _mm512_and_ps(sign, x));  /* copysign */
}

static inline __m512 fnn_tanh16(__m512 x) {
    __m512 unused;
    return fnn_tanh_sech2_16(x, &unused);
}

static inline __m512 fnn_sigmoid16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 e = fnn_exp16(_mm512_or_ps(x, _mm512_set1_ps(-0.0f)));  /* exp(-|x|) */
    __mmask16 nonneg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_div_ps(_mm512_mask_blend_ps(nonneg, e, one), _mm512_add_ps(one, e));
}
#endif

#endif
