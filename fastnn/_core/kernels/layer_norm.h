/* Layer normalisation over the D features of a row (_attention.pxi runs it over row blocks, in
   parallel), float32 and float64:

     fnn_ln_forward_row_*(x, d, w, b, eps, out, mean, invstd)   out := (x - mean) * invstd * w + b,
         mean and invstd = 1 / sqrt(var + eps) of the row (biased variance) stored; w, b NULL: none
     fnn_ln_backward_rows_*(...)   rows [r0, r1): dx := invstd * (g - mean(g) - xhat * mean(g *
         xhat)) with g = dy * w, xhat = (x - mean) * invstd (dx NULL: skipped), and the rows' sums
         of dy * xhat and dy added into the float64 columns pw, pb (NULL: skipped)

   Statistics are float64, accumulated around the row's first value (shifted sums: an offset like
   x + 1000 does not cancel the variance away). The row reductions keep FNN_ATT_LANES
   independent partial sums combined in a fixed order (attention.h's fnn_att_sum), so the compiler
   vectorises them without reassociating: the same bits at every thread count. */
#ifndef FNN_LAYER_NORM_H
#define FNN_LAYER_NORM_H

#include <math.h>
#include "attention.h"

#define FNN_LN_DEFINE(T, SUF)                                                                     \
static inline void fnn_ln_forward_row_##SUF(const T* x, int d, const T* w, const T* b,           \
                                            double eps, T* out, double* mean, double* invstd) {   \
    double s[FNN_ATT_LANES], s2[FNN_ATT_LANES];                                                   \
    double shift = (double)x[0];                                                                  \
    int j, t, full = d - d % FNN_ATT_LANES;                                                       \
    for (t = 0; t < FNN_ATT_LANES; t++)                                                           \
        s[t] = s2[t] = 0.0;                                                                       \
    for (j = 0; j < full; j += FNN_ATT_LANES)                                                     \
        for (t = 0; t < FNN_ATT_LANES; t++) {                                                     \
            double v = (double)x[j + t] - shift;                                                  \
            s[t] += v;                                                                            \
            s2[t] += v * v;                                                                       \
        }                                                                                         \
    for (t = 0; j + t < d; t++) {                                                                 \
        double v = (double)x[j + t] - shift;                                                      \
        s[t] += v;                                                                                \
        s2[t] += v * v;                                                                           \
    }                                                                                             \
    double mu = fnn_att_sum(s) / d;                                                               \
    double var = fnn_att_sum(s2) / d - mu * mu;                                                   \
    var = var < 0.0 ? 0.0 : var;  /* rounding only; NaN stays NaN */                             \
    double r = 1.0 / sqrt(var + eps);                                                             \
    mu += shift;                                                                                  \
    *mean = mu;                                                                                   \
    *invstd = r;                                                                                  \
    if (w && b) {                                                                                 \
        for (j = 0; j < d; j++)                                                                   \
            out[j] = (T)(((double)x[j] - mu) * r * (double)w[j] + (double)b[j]);                  \
    } else {                                                                                      \
        for (j = 0; j < d; j++) {                                                                 \
            double v = ((double)x[j] - mu) * r;                                                   \
            if (w)                                                                                \
                v *= (double)w[j];                                                                \
            if (b)                                                                                \
                v += (double)b[j];                                                                \
            out[j] = (T)v;                                                                        \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
static inline void fnn_ln_backward_rows_##SUF(const T* x, const T* dy, const T* w,               \
                                              const double* mean, const double* invstd,           \
                                              int r0, int r1, int d, T* dx, double* pw,           \
                                              double* pb) {                                       \
    double sg[FNN_ATT_LANES], sgx[FNN_ATT_LANES];                                                 \
    int i, j, t, full = d - d % FNN_ATT_LANES;                                                    \
    for (i = r0; i < r1; i++) {                                                                   \
        const T* xr = x + (long)i * d;                                                            \
        const T* gr = dy + (long)i * d;                                                           \
        double mu = mean[i], r = invstd[i];                                                       \
        if (pw)                                                                                   \
            for (j = 0; j < d; j++)                                                               \
                pw[j] += (double)gr[j] * (((double)xr[j] - mu) * r);                              \
        if (pb)                                                                                   \
            for (j = 0; j < d; j++)                                                               \
                pb[j] += (double)gr[j];                                                           \
        if (!dx)                                                                                  \
            continue;                                                                             \
        for (t = 0; t < FNN_ATT_LANES; t++)                                                       \
            sg[t] = sgx[t] = 0.0;                                                                 \
        for (j = 0; j < full; j += FNN_ATT_LANES)                                                 \
            for (t = 0; t < FNN_ATT_LANES; t++) {                                                 \
                double g = w ? (double)gr[j + t] * (double)w[j + t] : (double)gr[j + t];          \
                sg[t] += g;                                                                       \
                sgx[t] += g * (((double)xr[j + t] - mu) * r);                                     \
            }                                                                                     \
        for (t = 0; j + t < d; t++) {                                                             \
            double g = w ? (double)gr[j + t] * (double)w[j + t] : (double)gr[j + t];              \
            sg[t] += g;                                                                           \
            sgx[t] += g * (((double)xr[j + t] - mu) * r);                                         \
        }                                                                                         \
        double mg = fnn_att_sum(sg) / d, mgx = fnn_att_sum(sgx) / d;                              \
        T* dr = dx + (long)i * d;                                                                 \
        for (j = 0; j < d; j++) {                                                                 \
            double g = w ? (double)gr[j] * (double)w[j] : (double)gr[j];                          \
            dr[j] = (T)(r * (g - mg - ((double)xr[j] - mu) * r * mgx));                           \
        }                                                                                         \
    }                                                                                             \
}

FNN_LN_DEFINE(float, f32_generic)
FNN_LN_DEFINE(double, f64)

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
/* float32 rows of a multiple of 16 features, written out for AVX2: GCC keeps the generic
   version's 16 lanes in memory. The lanes, their order and the operations are the generic
   version's (element j in lane j % 16, accumulator (j / 4) % 4), so the sums round alike. */
#define FNN_LN_F32_FAST(d) ((d) % FNN_ATT_LANES == 0)

static inline __m256d fnn_ln_ld4(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }

static inline void fnn_ln_lanes_sum2(const __m256d* a, const __m256d* b, double* sa, double* sb) {
    double la[FNN_ATT_LANES], lb[FNN_ATT_LANES];
    for (int q = 0; q < 4; q++) {
        _mm256_storeu_pd(la + 4 * q, a[q]);
        _mm256_storeu_pd(lb + 4 * q, b[q]);
    }
    *sa = fnn_att_sum(la);
    *sb = fnn_att_sum(lb);
}

static inline void fnn_ln_forward_row_f32_avx2(const float* x, int d, const float* w,
                                               const float* b, double eps, float* out,
                                               double* mean, double* invstd) {
    __m256d s[4], s2[4];
    __m256d shift = _mm256_set1_pd((double)x[0]);
    int j, q;
    for (q = 0; q < 4; q++)
        s[q] = s2[q] = _mm256_setzero_pd();
    for (j = 0; j < d; j += FNN_ATT_LANES)
        for (q = 0; q < 4; q++) {
            __m256d v = _mm256_sub_pd(fnn_ln_ld4(x + j + 4 * q), shift);
            s[q] = _mm256_add_pd(s[q], v);
            s2[q] = _mm256_fmadd_pd(v, v, s2[q]);
        }
    double ts, ts2;
    fnn_ln_lanes_sum2(s, s2, &ts, &ts2);
    double mu = ts / d;
    double var = ts2 / d - mu * mu;
    var = var < 0.0 ? 0.0 : var;
    double r = 1.0 / sqrt(var + eps);
    mu += (double)x[0];
    *mean = mu;
    *invstd = r;
    __m256d vm = _mm256_set1_pd(mu), vr = _mm256_set1_pd(r), one = _mm256_set1_pd(1.0);
    __m256d zero = _mm256_setzero_pd();
    for (j = 0; j < d; j += 4) {
        __m256d v = _mm256_mul_pd(_mm256_sub_pd(fnn_ln_ld4(x + j), vm), vr);
        __m256d vw = w ? fnn_ln_ld4(w + j) : one, vb = b ? fnn_ln_ld4(b + j) : zero;
        v = b ? _mm256_fmadd_pd(v, vw, vb) : _mm256_mul_pd(v, vw);
        _mm_storeu_ps(out + j, _mm256_cvtpd_ps(v));
    }
}

static inline void fnn_ln_backward_rows_f32_avx2(const float* x, const float* dy, const float* w,
                                                 const double* mean, const double* invstd,
                                                 int r0, int r1, int d, float* dx, double* pw,
                                                 double* pb) {
    __m256d one = _mm256_set1_pd(1.0);
    for (int i = r0; i < r1; i++) {
        const float* xr = x + (long)i * d;
        const float* gr = dy + (long)i * d;
        __m256d vm = _mm256_set1_pd(mean[i]), vr = _mm256_set1_pd(invstd[i]);
        __m256d sg[4], sgx[4];
        int j, q;
        for (q = 0; q < 4; q++)
            sg[q] = sgx[q] = _mm256_setzero_pd();
        for (j = 0; j < d; j += FNN_ATT_LANES)
            for (q = 0; q < 4; q++) {
                int c = j + 4 * q;
                __m256d xh = _mm256_mul_pd(_mm256_sub_pd(fnn_ln_ld4(xr + c), vm), vr);
                __m256d g0 = fnn_ln_ld4(gr + c);
                if (pw)
                    _mm256_storeu_pd(pw + c, _mm256_fmadd_pd(g0, xh, _mm256_loadu_pd(pw + c)));
                if (pb)
                    _mm256_storeu_pd(pb + c, _mm256_add_pd(_mm256_loadu_pd(pb + c), g0));
                if (dx) {
                    __m256d g = _mm256_mul_pd(g0, w ? fnn_ln_ld4(w + c) : one);
                    sg[q] = _mm256_add_pd(sg[q], g);
                    sgx[q] = _mm256_fmadd_pd(g, xh, sgx[q]);
                }
            }
        if (!dx)
            continue;
        double tg, tgx;
        fnn_ln_lanes_sum2(sg, sgx, &tg, &tgx);
        __m256d mg = _mm256_set1_pd(tg / d), mgx = _mm256_set1_pd(tgx / d);
        float* dr = dx + (long)i * d;
        for (j = 0; j < d; j += 4) {
            __m256d xh = _mm256_mul_pd(_mm256_sub_pd(fnn_ln_ld4(xr + j), vm), vr);
            __m256d g = _mm256_mul_pd(fnn_ln_ld4(gr + j), w ? fnn_ln_ld4(w + j) : one);
            __m256d v = _mm256_mul_pd(vr, _mm256_fnmadd_pd(xh, mgx, _mm256_sub_pd(g, mg)));
            _mm_storeu_ps(dr + j, _mm256_cvtpd_ps(v));
        }
    }
}
#endif


/* float32: the AVX2 rows where they apply, else the generic ones */
static inline void fnn_ln_forward_row_f32(const float* x, int d, const float* w, const float* b,
                                          double eps, float* out, double* mean, double* invstd) {
#if defined(__AVX2__) && defined(__FMA__)
    if (FNN_LN_F32_FAST(d)) {
        fnn_ln_forward_row_f32_avx2(x, d, w, b, eps, out, mean, invstd);
        return;
    }
#endif
    fnn_ln_forward_row_f32_generic(x, d, w, b, eps, out, mean, invstd);
}

static inline void fnn_ln_backward_rows_f32(const float* x, const float* dy, const float* w,
                                            const double* mean, const double* invstd, int r0,
                                            int r1, int d, float* dx, double* pw, double* pb) {
#if defined(__AVX2__) && defined(__FMA__)
    if (FNN_LN_F32_FAST(d)) {
        fnn_ln_backward_rows_f32_avx2(x, dy, w, mean, invstd, r0, r1, d, dx, pw, pb);
        return;
    }
#endif
    fnn_ln_backward_rows_f32_generic(x, dy, w, mean, invstd, r0, r1, d, dx, pw, pb);
}

#endif /* FNN_LAYER_NORM_H */
