/* Recurrent gate math, the elementwise half of a step (the product h @ W_hh^T is the
   microkernel's fnn_rec_mm or BLAS): float32 rows of LSTM and GRU forward and backward on the
   accurate vectorisable exp/tanh/sigmoid of vecmath.h, compiled at every level (the loops
   vectorise at the level's width); the LSTM rows as one AVX-512 pass are gates_avx512.c's. */
#ifndef FNN_GATES_H
#define FNN_GATES_H
#include <math.h>
#include "isa.h"
#include "vecmath.h"

/* the AVX-512 LSTM rows (gates_avx512.c) exist in this module */
#define FNN_GATES16 (FNN_ISA >= 2)

static inline double fnn_sigmoid(double v) {
    if (v >= 0) return 1.0 / (1.0 + exp(-v));
    double e = exp(v);
    return e / (1.0 + e);
}

/* float32 backward gate math of one batch row (restrict + omp simd: with this many
   pointers GCC gives up its runtime alias checks and the loop would stay scalar). */
static void fnn_lstm_bwd_row(int H, const float* restrict g, float* restrict d,
                             const float* restrict dy, const float* restrict c_prev,
                             const float* restrict c_row, const float* restrict dhr,
                             float* restrict dcr) {
    #pragma omp simd
    for (int j = 0; j < H; j++) {
        float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        float sech2, tc = fnn_tanh_sech2f(c_row[j], &sech2);
        float dhv = dy[j] + dhr[j];
        float dcv = dcr[j] + dhv * o * sech2;
        d[j] = dcv * gg * i * (1 - i);
        d[H + j] = dcv * c_prev[j] * f * (1 - f);
        d[2 * H + j] = dcv * i * fnn_one_minus_sq(gg);
        d[3 * H + j] = dhv * tc * o * (1 - o);
        dcr[j] = dcv * f;
    }
}
static void fnn_gru_bwd_row(int H, const float* restrict g, float* restrict dx,
                            float* restrict dhp, const float* restrict h_prev,
                            const float* restrict hnr, const float* restrict dy,
                            float* restrict dhr) {
    #pragma omp simd
    for (int j = 0; j < H; j++) {
        float r = g[j], z = g[H + j], nn = g[2 * H + j];
        float dhv = dy[j] + dhr[j];
        float dn = dhv * (1 - z) * fnn_one_minus_sq(nn);
        float dz = dhv * (h_prev[j] - nn) * z * (1 - z);
        float dr = dn * hnr[j] * r * (1 - r);
        dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dn;
        dhp[j] = dr; dhp[H + j] = dz; dhp[2 * H + j] = dn * r;
        dhr[j] = dhv * z;
    }
}
static void fnn_lstm_fwd_cell(int H, const float* restrict g, const float* restrict c_prev,
                              float* restrict c_new, float* restrict h_new) {
    #pragma omp simd
    for (int j = 0; j < H; j++) {
        float c = g[H + j] * c_prev[j] + g[j] * g[2 * H + j];
        c_new[j] = c;
        h_new[j] = g[3 * H + j] * fnn_tanhf(c);
    }
}
static void fnn_gru_fwd_row(int H, float* restrict g, const float* restrict x,
                            const float* restrict b_hh, float* restrict hnr,
                            const float* restrict h_prev, float* restrict h_new) {
    #pragma omp simd
    for (int j = 0; j < H; j++) g[j] = fnn_sigmoidf(g[j] + x[j] + b_hh[j]);
    #pragma omp simd
    for (int j = 0; j < H; j++) {
        /* 1 - z from z's pre-activation: 1 - z of a rounded z near 1 would be mostly error */
        float omz, z = fnn_sigmoid_compf(g[H + j] + x[H + j] + b_hh[H + j], &omz);
        float hn = g[2 * H + j] + b_hh[2 * H + j];
        float nn = fnn_tanhf(x[2 * H + j] + g[j] * hn);
        hnr[j] = hn;
        g[H + j] = z;
        g[2 * H + j] = nn;
        h_new[j] = omz * nn + z * h_prev[j];
    }
}
/* One LSTM row of the forward step in one pass: g (4H, the product h @ W_hh^T) := the
   activated gates of g + x + b, then c_new, h_new (the bits of the rows above). */
FNN_ISA_KERNEL void fnn_lstm_fwd_row16(int H, float* restrict g, const float* restrict x,
                                       const float* restrict b, const float* restrict c_prev,
                                       float* restrict c_new, float* restrict h_new);
/* fnn_lstm_bwd_row as one AVX-512 pass */
FNN_ISA_KERNEL void fnn_lstm_bwd_row16(int H, const float* restrict g, float* restrict d,
                                       const float* restrict dy, const float* restrict c_prev,
                                       const float* restrict c_row, const float* restrict dhr,
                                       float* restrict dcr);

#endif /* FNN_GATES_H */
