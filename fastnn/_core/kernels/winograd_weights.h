/* The kernel transforms of winograd.h (fnn_wg2_weights, fnn_wg4_weights: winograd_filters.h's,
   in double, each value rounded once to float); and the weight gradient's output transform
   (fnn_wg2_dw_finish), in double. Included by each level's winograd_<level>.c (one
   definition per module). */
#ifndef FNN_WINOGRAD_WEIGHTS_H
#define FNN_WINOGRAD_WEIGHTS_H
#include <math.h>
#include <stdlib.h>
#include "winograd.h"
#include "winograd_filters.h"

void fnn_wg2_weights(int O, int C, long lo, long hi, const float* w, float* U) {
    fnn_wgf_plain(2, O, C, lo, hi, w, U);
}

void fnn_wg4_weights(int O, int C, long lo, long hi, const float* w, float* U) {
    fnn_wgf_plain(4, O, C, lo, hi, w, U);
}

int fnn_wg2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks, const float* M,
                      double* grad) {
    const long CO = (long)C * O, MS = 16 * CO;
    double* m = (double*)malloc(sizeof(double) * 16 * (size_t)O);
    if (!m) return 2;
    int bad = 0;
    for (int c = c_lo; c < c_hi; c++) {
        /* m[e][o]: the chunks' sums of (c, o) in chunk order, o innermost (vectorized) */
        for (int e = 0; e < 16; e++) {
            const float* p = M + e * CO + (long)c * O;
            double* me = m + (long)e * O;
            for (int o = 0; o < O; o++) me[o] = p[o];
            for (int k = 1; k < nchunks; k++)
                for (int o = 0; o < O; o++) me[o] += p[k * MS + o];
        }
        for (int o = 0; o < O; o++) {
            double t[3][4];
            for (int j = 0; j < 4; j++) {  /* t = G'^T m, G'^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 -1] */
                double m0 = m[j * O + o], m1 = m[(4 + j) * O + o];
                double m2 = m[(8 + j) * O + o], m3 = m[(12 + j) * O + o];
                t[0][j] = m0 + 0.5 * (m1 + m2);
                t[1][j] = 0.5 * (m1 - m2);
                t[2][j] = 0.5 * (m1 + m2) - m3;
            }
            double* r = grad + ((long)o * C + c) * 9;
            for (int i = 0; i < 3; i++) {  /* r = t G' */
                r[i * 3 + 0] = t[i][0] + 0.5 * (t[i][1] + t[i][2]);
                r[i * 3 + 1] = 0.5 * (t[i][1] - t[i][2]);
                r[i * 3 + 2] = 0.5 * (t[i][1] + t[i][2]) - t[i][3];
                for (int j = 0; j < 3; j++) bad |= !(r[i * 3 + j] - r[i * 3 + j] == 0.0);
            }
        }
    }
    free(m);
    return bad;
}

#endif /* FNN_WINOGRAD_WEIGHTS_H */
