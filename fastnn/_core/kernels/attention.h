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

static inline void fnn_softmax_row_f32(float* row, int s, float scale, const float* mask) {
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
