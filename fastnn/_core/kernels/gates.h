/* Recurrent gate math, the elementwise half of a step (the product h @ W_hh^T is the
   microkernel's fnn_rec_mm or BLAS), one batch row at a time: RNN, LSTM and GRU forward and
   backward rows in float32 (the accurate vectorisable exp/tanh/sigmoid of vecmath.h; the loops
   vectorise at the level's width; the LSTM rows as one AVX-512 pass are gates_avx512.c's) and
   float64 (libm), and fnn_cell_forward_* / fnn_cell_backward_*, which pick the cell's row: the
   only cell-specific code of _recurrent.pyx's one sequence driver. */
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


/* The cells of the sequence driver; gates per hidden unit: 1, 4 (i, f, g, o), 3 (r, z, n). */
enum { FNN_CELL_RNN = 0, FNN_CELL_LSTM = 1, FNN_CELL_GRU = 2 };
static inline int fnn_cell_gates(int cell) {
    return cell == FNN_CELL_LSTM ? 4 : cell == FNN_CELL_GRU ? 3 : 1;
}

/* ---- float64 rows (libm; the same formulas as the float32 rows above) ---- */
static void fnn_lstm_fwd_row_d(int H, double* g, const double* x, const double* b,
                               const double* c_prev, double* c_new, double* h_new) {
    for (int j = 0; j < 2 * H; j++) g[j] = fnn_sigmoid(g[j] + x[j] + b[j]);
    for (int j = 2 * H; j < 3 * H; j++) g[j] = tanh(g[j] + x[j] + b[j]);
    for (int j = 3 * H; j < 4 * H; j++) g[j] = fnn_sigmoid(g[j] + x[j] + b[j]);
    for (int j = 0; j < H; j++) {
        double c = g[H + j] * c_prev[j] + g[j] * g[2 * H + j];
        c_new[j] = c;
        h_new[j] = g[3 * H + j] * tanh(c);
    }
}
static void fnn_lstm_bwd_row_d(int H, const double* g, double* d, const double* dy,
                               const double* c_prev, const double* c_row, double* dhr,
                               double* dcr) {
    for (int j = 0; j < H; j++) {
        double i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
        double tc = tanh(c_row[j]);
        double dhv = dy[j] + dhr[j];
        double dcv = dcr[j] + dhv * o * (1 - tc * tc);
        d[j] = dcv * gg * i * (1 - i);
        d[H + j] = dcv * c_prev[j] * f * (1 - f);
        d[2 * H + j] = dcv * i * (1 - gg * gg);
        d[3 * H + j] = dhv * tc * o * (1 - o);
        dcr[j] = dcv * f;
    }
}
static void fnn_gru_fwd_row_d(int H, double* g, const double* x, const double* b, double* hnr,
                              const double* h_prev, double* h_new) {
    for (int j = 0; j < 2 * H; j++) g[j] = fnn_sigmoid(g[j] + x[j] + b[j]);
    for (int j = 0; j < H; j++) hnr[j] = g[2 * H + j] + b[2 * H + j];
    for (int j = 0; j < H; j++) g[2 * H + j] = tanh(x[2 * H + j] + g[j] * hnr[j]);
    for (int j = 0; j < H; j++) {
        double z = g[H + j];
        h_new[j] = (1 - z) * g[2 * H + j] + z * h_prev[j];
    }
}
static void fnn_gru_bwd_row_d(int H, const double* g, double* dx, double* dhp,
                              const double* h_prev, const double* hnr, const double* dy,
                              double* dhr) {
    for (int j = 0; j < H; j++) {
        double r = g[j], z = g[H + j], nn = g[2 * H + j];
        double dhv = dy[j] + dhr[j];
        double dn = dhv * (1 - z) * (1 - nn * nn);
        double dz = dhv * (h_prev[j] - nn) * z * (1 - z);
        double dr = dn * hnr[j] * r * (1 - r);
        dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dn;
        dhp[j] = dr; dhp[H + j] = dz; dhp[2 * H + j] = dn * r;
        dhr[j] = dhv * z;  /* the direct path h_t = ... + z * h_{t-1} */
    }
}

/* ---- one batch row of one step, any cell ----
   Forward: g holds the row of the product h_{t-1} @ W_hh^T (RNN: in h_new itself) and becomes
   the activated gates; x is the row of xw = x @ W_ih^T + b_ih, b is b_hh; LSTM: c_prev, c_new
   (c_{t-1}, c_t); GRU: hn := the row of h_{t-1} @ W_hn^T + b_hn. vec: the LSTM's float32 rows
   as one AVX-512 pass where the level has them. */
static inline void fnn_cell_forward_f(int cell, int H, int vec, float* g, const float* x,
                                      const float* b, const float* h_prev, float* h_new,
                                      const float* c_prev, float* c_new, float* hn) {
    if (cell == FNN_CELL_RNN) {
        for (int j = 0; j < H; j++) h_new[j] = fnn_tanhf(h_new[j] + x[j] + b[j]);
    } else if (cell == FNN_CELL_LSTM) {
        if (FNN_GATES16 && vec) {
            fnn_lstm_fwd_row16(H, g, x, b, c_prev, c_new, h_new);
            return;
        }
        for (int j = 0; j < 2 * H; j++) g[j] = fnn_sigmoidf(g[j] + x[j] + b[j]);
        for (int j = 2 * H; j < 3 * H; j++) g[j] = fnn_tanhf(g[j] + x[j] + b[j]);
        for (int j = 3 * H; j < 4 * H; j++) g[j] = fnn_sigmoidf(g[j] + x[j] + b[j]);
        fnn_lstm_fwd_cell(H, g, c_prev, c_new, h_new);
    } else {
        fnn_gru_fwd_row(H, g, x, b, hn, h_prev, h_new);
    }
}
static inline void fnn_cell_forward_d(int cell, int H, int vec, double* g, const double* x,
                                      const double* b, const double* h_prev, double* h_new,
                                      const double* c_prev, double* c_new, double* hn) {
    (void)vec;
    if (cell == FNN_CELL_RNN) {
        for (int j = 0; j < H; j++) h_new[j] = tanh(h_new[j] + x[j] + b[j]);
    } else if (cell == FNN_CELL_LSTM) {
        fnn_lstm_fwd_row_d(H, g, x, b, c_prev, c_new, h_new);
    } else {
        fnn_gru_fwd_row_d(H, g, x, b, hn, h_prev, h_new);
    }
}
/* Backward: d := the row of dL/d(pre-activations) of step t from dy (dL/dh_t from above) and
   dh, dc (dL/dh_t, dL/dc_t through the recurrence, which become their parts through the cell's
   direct paths: LSTM dc_{t-1}, GRU z * dh_t; the product adds the rest); GRU: d is dL/dxw and
   d_h dL/d(h @ W_hh^T + b_hh), which differ in the n block by the factor r. h_new, c_new: h_t,
   c_t; g, h_prev, c_prev, hn: the forward's. */
static inline void fnn_cell_backward_f(int cell, int H, int vec, const float* g, float* d,
                                       float* d_h, const float* dy, float* dh, float* dc,
                                       const float* h_prev, const float* h_new,
                                       const float* c_prev, const float* c_new,
                                       const float* hn) {
    if (cell == FNN_CELL_RNN) {
        for (int j = 0; j < H; j++) d[j] = (dy[j] + dh[j]) * fnn_one_minus_sq(h_new[j]);
    } else if (cell == FNN_CELL_LSTM) {
        if (FNN_GATES16 && vec)
            fnn_lstm_bwd_row16(H, g, d, dy, c_prev, c_new, dh, dc);
        else
            fnn_lstm_bwd_row(H, g, d, dy, c_prev, c_new, dh, dc);
    } else {
        fnn_gru_bwd_row(H, g, d, d_h, h_prev, hn, dy, dh);
    }
}
static inline void fnn_cell_backward_d(int cell, int H, int vec, const double* g, double* d,
                                       double* d_h, const double* dy, double* dh, double* dc,
                                       const double* h_prev, const double* h_new,
                                       const double* c_prev, const double* c_new,
                                       const double* hn) {
    (void)vec;
    if (cell == FNN_CELL_RNN) {
        for (int j = 0; j < H; j++) d[j] = (dy[j] + dh[j]) * (1 - h_new[j] * h_new[j]);
    } else if (cell == FNN_CELL_LSTM) {
        fnn_lstm_bwd_row_d(H, g, d, dy, c_prev, c_new, dh, dc);
    } else {
        fnn_gru_bwd_row_d(H, g, d, d_h, h_prev, hn, dy, dh);
    }
}

#endif /* FNN_GATES_H */
