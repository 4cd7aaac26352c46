/* The kernel transforms of winograd.h (fnn_wg2_weights, fnn_wg4_weights): plain C in double,
   each value rounded once to float; and the weight gradient's output transform
   (fnn_wg2_dw_finish), in double. Included by each level's winograd_<level>.c (one
   definition per module). */
#ifndef FNN_WINOGRAD_WEIGHTS_H
#define FNN_WINOGRAD_WEIGHTS_H
#include <math.h>
#include <stdlib.h>
#include "winograd.h"

void fnn_wg2_weights(int O, int C, const float* w, float* U) {
    const long OC = (long)O * C;
    for (long oc = 0; oc < OC; oc++) {
        const float* g = w + oc * 9;
        double t[4][3], u[4][4];
        for (int j = 0; j < 3; j++) {  /* t = G g, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] */
            double g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (int i = 0; i < 4; i++) {  /* u = t G^T */
            u[i][0] = t[i][0];
            u[i][1] = 0.5 * (t[i][0] + t[i][1] + t[i][2]);
            u[i][2] = 0.5 * (t[i][0] - t[i][1] + t[i][2]);
            u[i][3] = t[i][2];
        }
        for (int e = 0; e < 16; e++) U[e * OC + oc] = (float)u[e / 4][e % 4];
    }
}

void fnn_wg4_weights(int O, int C, const float* w, float* U) {
    static const double G[6][3] = {{1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    const long OC = (long)O * C;
    for (long oc = 0; oc < OC; oc++) {
        const float* g = w + oc * 9;
        double t[6][3];
        /* explicit fma: the same double operations whatever the compiler contracts at each
           level (1/6, 1/12, 1/24 are not exact), so U has the same bits at every level */
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 3; j++)
                t[i][j] = fma(G[i][0], g[j], fma(G[i][1], g[3 + j], G[i][2] * g[6 + j]));
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++)
                U[(i * 6 + j) * OC + oc] =
                    (float)fma(t[i][0], G[j][0], fma(t[i][1], G[j][1], t[i][2] * G[j][2]));
    }
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
