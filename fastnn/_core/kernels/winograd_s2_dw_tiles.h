/* winograd_s2_dw's plain-C parts, shared by its levels' kernels (winograd_s2_dw_avx512.c,
   winograd_s2_dw_avx2.c): the tiles' order (classes) and the double finish (fnn_ws2_dw_finish's
   body), so both levels order and sum alike. */
#ifndef FNN_WINOGRAD_S2_DW_TILES_H
#define FNN_WINOGRAD_S2_DW_TILES_H
#include <stdlib.h>

/* The tiles' order (winograd_s2_dw.h): groups of gi samples (gt = gi*TH*TW tiles), in a group
   class k = 2*(ty is a partial last row) + (tx a partial last column) after class k - 1, each
   class by sample, row, column. */
typedef struct {
    long start[5];  /* class k's tiles in the group: [start[k], start[k + 1]) */
    int rows[4], cols[4], row0[4], col0[4];
} fnn_ws2dw_classes;

static void fnn_ws2dw_classes_of(long ng, int OH, int OW, fnn_ws2dw_classes* cl) {
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4, rl = OH % 4 != 0, cp = OW % 4 != 0;
    cl->start[0] = 0;
    for (int k = 0; k < 4; k++) {
        cl->rows[k] = k < 2 ? TH - rl : rl;
        cl->row0[k] = k < 2 ? 0 : TH - rl;
        cl->cols[k] = k % 2 == 0 ? TW - cp : cp;
        cl->col0[k] = k % 2 == 0 ? 0 : TW - cp;
        cl->start[k + 1] = cl->start[k] + ng * cl->rows[k] * cl->cols[k];
    }
}

/* tile t's group start gbase, class k and the class's end (tiles), and its (n, ty, tx) */
static inline void fnn_ws2dw_tile(long N, int OH, int OW, int gi, long t, long* gbase, int* k,
                                  long* kend, long* n, int* ty, int* tx) {
    const long gt = (long)gi * ((OH + 3) / 4) * ((OW + 3) / 4), g = t / gt;
    fnn_ws2dw_classes cl;
    fnn_ws2dw_classes_of(N - g * gi < gi ? N - g * gi : gi, OH, OW, &cl);
    long r = t - g * gt;
    int c = 0;
    while (r >= cl.start[c + 1]) c++;
    *gbase = g * gt;
    *k = c;
    *kend = g * gt + cl.start[c + 1];
    r -= cl.start[c];
    long per = (long)cl.rows[c] * cl.cols[c], rem = r % per;
    *n = g * gi + r / per;
    *ty = cl.row0[c] + (int)(rem / cl.cols[c]);
    *tx = cl.col0[c] + (int)(rem % cl.cols[c]);
}

/* fnn_ws2_dw_finish (winograd_s2_dw.h) */
static inline int fnn_ws2dw_finish(int O, int C, int c_lo, int c_hi, int nchunks,
                                   const float* M, double* grad) {
    const long K = 4L * C, KO = K * O, MS = 25 * KO;
    const double sixth = 1.0 / 6;
    /* m[e][o]: one (channel, phase)'s 25 sums; tb[tap][o]: one channel's 16 taps; t0, t1: G^T m */
    double* m = (double*)malloc(sizeof(double) * (25 + 16 + 10) * (size_t)O);
    if (!m) return 2;
    double *tb = m + 25L * O, *t0 = tb + 16L * O, *t1 = t0 + 5L * O;
    int bad = 0;
    for (int c = c_lo; c < c_hi; c++) {
        for (int p = 0; p < 4; p++) {
            const int a = p >> 1, b = p & 1;
            for (int e = 0; e < 25; e++) {  /* the chunks' sums in chunk order, o innermost */
                const float* src = M + e * KO + (long)(p * C + c) * O;
                double* me = m + (long)e * O;
                for (int o = 0; o < O; o++) me[o] = src[o];
                for (int k = 1; k < nchunks; k++)
                    for (int o = 0; o < O; o++) me[o] += src[k * MS + o];
            }
            for (int j = 0; j < 5; j++) {  /* t = G^T m, G^T = [1/2 1/2 1/6 1/6 0; 0 1/2 -1/6 1/3 1] */
                const double *m0 = m + (long)j * O, *m1 = m0 + 5L * O, *m2 = m0 + 10L * O;
                const double *m3 = m0 + 15L * O, *m4 = m0 + 20L * O;
                for (int o = 0; o < O; o++) {
                    t0[j * O + o] = 0.5 * (m0[o] + m1[o]) + (m2[o] + m3[o]) * sixth;
                    t1[j * O + o] = 0.5 * m1[o] + (m3[o] + m3[o] - m2[o]) * sixth + m4[o];
                }
            }
            for (int u = 0; u < 2; u++) {  /* r = t G: taps (2u + a, b) and (2u + a, 2 + b) */
                const double* tu = u ? t1 : t0;
                double *r0 = tb + (long)((2 * u + a) * 4 + b) * O, *r1 = r0 + 2L * O;
                for (int o = 0; o < O; o++) {
                    r0[o] = 0.5 * (tu[o] + tu[O + o]) + (tu[2 * O + o] + tu[3 * O + o]) * sixth;
                    r1[o] = 0.5 * tu[O + o] + (tu[3 * O + o] + tu[3 * O + o] - tu[2 * O + o]) * sixth
                            + tu[4 * O + o];
                }
            }
        }
        for (int i = 0; i < 16 * O; i++) bad |= !(tb[i] - tb[i] == 0.0);
        for (int o = 0; o < O; o++) {
            double* r = grad + ((long)o * C + c) * 16;
            for (int k = 0; k < 16; k++) r[k] = tb[(long)k * O + o];
        }
    }
    free(m);
    return bad;
}

#endif /* FNN_WINOGRAD_S2_DW_TILES_H */
