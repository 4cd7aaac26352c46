/* The row operations of scaled dot-product attention (_attention.pxi runs them per batch and
   head between its GEMMs), float32 and float64:

     fnn_softmax_row_*(row, s, scale, mask)   row := softmax(scale * row + mask) in place; mask
         NULL adds nothing; a row of -inf only gives NaN (as torch), NaN propagates
     fnn_softmax_grad_row_*(p, g, s, scale)   g := scale * p * (g - sum(g * p)) in place (the
         scores' gradient from the probabilities' gradient g)

   The reductions keep FNN_ATT_LANES independent partial results (element j goes to lane j % 16,
   the lanes then combined pairwise in a fixed order), so the compiler vectorises them without
   reassociating anything: the same bits at every ISA level and thread count. Sums are float64;
   float32's exp is vecmath.h's, taken on the difference x - max with the difference's rounding
   error corrected to first order (two-sum), as numba's softmax (_fastmath._exp_diff). The float32
   selects are vecmath.h's fnn_selectf: with ?: GCC makes branches that it does not vectorise
   below AVX-512. */
#ifndef FNN_ATTENTION_H
#define FNN_ATTENTION_H

#include <math.h>
#include "isa.h"
#include "vecmath.h"

#define FNN_ATT_LANES 16

/* the lanes' maximum and sum, halving: lane t takes lane t + w for w = 8, 4, 2, 1 (a fixed
   order; log-depth instead of a chain of 16 dependent operations per row) */
static inline float fnn_att_max_f32(float* v) {
    for (int w = FNN_ATT_LANES / 2; w; w >>= 1)
        for (int t = 0; t < w; t++)
            v[t] = fnn_selectf(v[t + w] > v[t], v[t + w], v[t]);
    return v[0];
}

static inline double fnn_att_max_f64(double* v) {
    for (int w = FNN_ATT_LANES / 2; w; w >>= 1)
        for (int t = 0; t < w; t++)
            v[t] = v[t + w] > v[t] ? v[t + w] : v[t];
    return v[0];
}

static inline double fnn_att_sum(double* v) {
    for (int w = FNN_ATT_LANES / 2; w; w >>= 1)
        for (int t = 0; t < w; t++)
            v[t] += v[t + w];
    return v[0];
}

/* exp(a - m) with the difference's rounding error corrected to first order (two-sum) */
static inline float fnn_exp_diff_f32(float a, float m) {
    float d = a - m, u = d - a;
    float err = (a - (d - u)) + (-m - u);     /* a - m - d exactly */
    float e = fnn_expf(d);
    err = fnn_selectf(err == err, err, 0.0f);           /* inf or NaN difference: none */
    return fnn_selectf(e < INFINITY, e + e * err, e);  /* inf * 0 would be NaN */
}

#if FNN_ISA == 1
#include <immintrin.h>

/* fnn_exp_diff_f32 on 8 lanes (the same bits) */
static inline __m256 fnn_att_exp_diff8(__m256 a, __m256 m) {
    __m256 d = _mm256_sub_ps(a, m), u = _mm256_sub_ps(d, a);
    __m256 err = _mm256_add_ps(_mm256_sub_ps(a, _mm256_sub_ps(d, u)),
                               _mm256_sub_ps(_mm256_xor_ps(m, _mm256_set1_ps(-0.0f)), u));
    __m256 e = fnn_exp8(d);
    err = _mm256_and_ps(err, _mm256_cmp_ps(err, err, _CMP_ORD_Q));
    return _mm256_blendv_ps(e, _mm256_fmadd_ps(e, err, e),
                            _mm256_cmp_ps(e, _mm256_set1_ps(INFINITY), _CMP_LT_OQ));
}

/* fnn_softmax_row_f32 for s a multiple of 16, written out for AVX2 (GCC's version of the
   generic loops keeps five passes and the lanes' reductions in memory): the scaling and the
   maximum in one pass, the exponentials and the float64 lane sums in a second, the same lanes
   and pairwise order, so the same bits. */
static inline void fnn_softmax_row16_f32(float* row, int s, float scale, const float* mask) {
    __m256 sc = _mm256_set1_ps(scale);
    __m256 top0 = _mm256_set1_ps(-INFINITY), top1 = top0;
    for (int j = 0; j < s; j += 16) {
        __m256 x0, x1;
        if (mask) {  /* contracted, as GCC compiles the generic scale * row[j] + mask[j] */
            x0 = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row + j), _mm256_loadu_ps(mask + j));
            x1 = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row + j + 8), _mm256_loadu_ps(mask + j + 8));
        } else {
            x0 = _mm256_mul_ps(sc, _mm256_loadu_ps(row + j));
            x1 = _mm256_mul_ps(sc, _mm256_loadu_ps(row + j + 8));
        }
        _mm256_storeu_ps(row + j, x0);
        _mm256_storeu_ps(row + j + 8, x1);
        top0 = _mm256_blendv_ps(top0, x0, _mm256_cmp_ps(x0, top0, _CMP_GT_OQ));
        top1 = _mm256_blendv_ps(top1, x1, _mm256_cmp_ps(x1, top1, _CMP_GT_OQ));
    }
    float top[FNN_ATT_LANES];
    _mm256_storeu_ps(top, top0);
    _mm256_storeu_ps(top + 8, top1);
    __m256 m = _mm256_set1_ps(fnn_att_max_f32(top));
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    for (int j = 0; j < s; j += 16) {
        __m256 e0 = fnn_att_exp_diff8(_mm256_loadu_ps(row + j), m);
        __m256 e1 = fnn_att_exp_diff8(_mm256_loadu_ps(row + j + 8), m);
        _mm256_storeu_ps(row + j, e0);
        _mm256_storeu_ps(row + j + 8, e1);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e0)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1)));
        s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(e1)));
        s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(e1, 1)));
    }
    /* fnn_att_sum's order: lanes t += t + 8, then + 4, + 2, + 1 */
    s0 = _mm256_add_pd(s0, s2);
    s1 = _mm256_add_pd(s1, s3);
    s0 = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
    double total = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    __m256d inv = _mm256_set1_pd(1.0 / total);
    for (int j = 0; j < s; j += 4)
        _mm_storeu_ps(row + j, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(row + j)), inv)));
}
#endif

static inline void fnn_softmax_row_f32(float* row, int s, float scale, const float* mask) {
#if FNN_ISA == 1
    if (s % FNN_ATT_LANES == 0) {
        fnn_softmax_row16_f32(row, s, scale, mask);
        return;
    }
#endif
    float top[FNN_ATT_LANES];
    double sum[FNN_ATT_LANES];
    int j, t, full = s - s % FNN_ATT_LANES;
    for (t = 0; t < FNN_ATT_LANES; t++) {
        top[t] = -INFINITY;
        sum[t] = 0.0;
    }
    for (j = 0; j < s; j++)
        row[j] = mask ? scale * row[j] + mask[j] : scale * row[j];
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)  /* NaN never replaces: it reaches the sum */
            top[t] = fnn_selectf(row[j + t] > top[t], row[j + t], top[t]);
    for (t = 0; j + t < s; t++)
        top[t] = fnn_selectf(row[j + t] > top[t], row[j + t], top[t]);
    float m = fnn_att_max_f32(top);
    for (j = 0; j < s; j++)
        row[j] = fnn_exp_diff_f32(row[j], m);
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)
            sum[t] += row[j + t];
    for (t = 0; j + t < s; t++)
        sum[t] += row[j + t];
    double inv = 1.0 / fnn_att_sum(sum);
    for (j = 0; j < s; j++)
        row[j] = (float)(row[j] * inv);
}

static inline void fnn_softmax_row_f64(double* row, int s, double scale, const double* mask) {
    double top[FNN_ATT_LANES], sum[FNN_ATT_LANES];
    int j, t, full = s - s % FNN_ATT_LANES;
    for (t = 0; t < FNN_ATT_LANES; t++) {
        top[t] = -INFINITY;
        sum[t] = 0.0;
    }
    for (j = 0; j < s; j++)
        row[j] = mask ? scale * row[j] + mask[j] : scale * row[j];
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)
            top[t] = row[j + t] > top[t] ? row[j + t] : top[t];
    for (t = 0; j + t < s; t++)
        top[t] = row[j + t] > top[t] ? row[j + t] : top[t];
    double m = fnn_att_max_f64(top);
    for (j = 0; j < s; j++)
        row[j] = exp(row[j] - m);
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)
            sum[t] += row[j + t];
    for (t = 0; j + t < s; t++)
        sum[t] += row[j + t];
    double inv = 1.0 / fnn_att_sum(sum);
    for (j = 0; j < s; j++)
        row[j] *= inv;
}

static inline void fnn_softmax_grad_row_f32(const float* p, float* g, int s, float scale) {
    double dot[FNN_ATT_LANES];
    int j, t, full = s - s % FNN_ATT_LANES;
    for (t = 0; t < FNN_ATT_LANES; t++)
        dot[t] = 0.0;
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)
            dot[t] += (double)(g[j + t] * p[j + t]);
    for (t = 0; j + t < s; t++)
        dot[t] += (double)(g[j + t] * p[j + t]);
    double total = fnn_att_sum(dot);
    for (j = 0; j < s; j++)
        g[j] = (float)(scale * p[j] * (g[j] - total));
}

static inline void fnn_softmax_grad_row_f64(const double* p, double* g, int s, double scale) {
    double dot[FNN_ATT_LANES];
    int j, t, full = s - s % FNN_ATT_LANES;
    for (t = 0; t < FNN_ATT_LANES; t++)
        dot[t] = 0.0;
    for (j = 0; j < full; j += FNN_ATT_LANES)
        for (t = 0; t < FNN_ATT_LANES; t++)
            dot[t] += g[j + t] * p[j + t];
    for (t = 0; j + t < s; t++)
        dot[t] += g[j + t] * p[j + t];
    double total = fnn_att_sum(dot);
    for (j = 0; j < s; j++)
        g[j] = scale * p[j] * (g[j] - total);
}

#endif /* FNN_ATTENTION_H */
