/* The Winograd kernel transforms of 3x3 filters, U = G g G^T for F(2x2,3x3) (4x4 values) and
   F(4x4,3x3) (6x6), a block of filters at a time: the filters gathered into double columns,
   the transform run across the block (one vector operation per step of the formula), each
   value rounded once to float and stored as rows of contiguous floats, one row per element e
   of the transformed tile. The per-filter arithmetic is fixed (the same double operations and
   fma calls whatever the level vectorises), so U has the same bits at every level and every
   block split. Static: included by the files that lay U out (winograd_weights.h, the
   winograd/small packs). */
#ifndef FNN_WINOGRAD_FILTERS_H
#define FNN_WINOGRAD_FILTERS_H
#include <math.h>

#define FNN_WGF_B 16  /* filters per block */

/* The block's filters as columns: g[i][k] = w[9*src[k] + i] for k < nb, zero for src[k] < 0
   and for k >= nb (a filter of zeros transforms to zeros). */
static inline void fnn_wgf_gather(const float* w, const long* src, int nb,
                                  double g[9][FNN_WGF_B]) {
    for (int k = 0; k < FNN_WGF_B; k++) {
        const float* f = k < nb && src[k] >= 0 ? w + 9 * src[k] : 0;
        for (int i = 0; i < 9; i++) g[i][k] = f ? f[i] : 0.0;
    }
}

/* dst[e*estride + k] := (G g_k G^T)[e / 4][e % 4], k < nb, G = [1 0 0; .5 .5 .5; .5 -.5 .5;
   0 0 1] */
static inline void fnn_wgf2_block(const float* w, const long* src, int nb, float* dst,
                                  long estride) {
    double g[9][FNN_WGF_B], t[4][3][FNN_WGF_B];
    fnn_wgf_gather(w, src, nb, g);
    for (int j = 0; j < 3; j++)  /* t = G g */
        for (int k = 0; k < FNN_WGF_B; k++) {
            double g0 = g[j][k], g1 = g[3 + j][k], g2 = g[6 + j][k];
            t[0][j][k] = g0;
            t[1][j][k] = 0.5 * (g0 + g1 + g2);
            t[2][j][k] = 0.5 * (g0 - g1 + g2);
            t[3][j][k] = g2;
        }
    for (int i = 0; i < 4; i++) {  /* u = t G^T, row e = 4i + j */
        float* d = dst + (long)(4 * i) * estride;
        for (int k = 0; k < nb; k++) {
            double t0 = t[i][0][k], t1 = t[i][1][k], t2 = t[i][2][k];
            d[k] = (float)t0;
            d[estride + k] = (float)(0.5 * (t0 + t1 + t2));
            d[2 * estride + k] = (float)(0.5 * (t0 - t1 + t2));
            d[3 * estride + k] = (float)t2;
        }
    }
}

/* dst[e*estride + k] := (G g_k G^T)[e / 6][e % 6], k < nb, G the 6x3 matrix of F(4x4,3x3);
   explicit fma: the same double operations whatever the compiler contracts at each level (1/6,
   1/12, 1/24 are not exact) */
static inline void fnn_wgf4_block(const float* w, const long* src, int nb, float* dst,
                                  long estride) {
    static const double G[6][3] = {{1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    double g[9][FNN_WGF_B], t[6][3][FNN_WGF_B];
    fnn_wgf_gather(w, src, nb, g);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < FNN_WGF_B; k++)
                t[i][j][k] = fma(G[i][0], g[j][k], fma(G[i][1], g[3 + j][k], G[i][2] * g[6 + j][k]));
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++) {
            float* d = dst + (long)(i * 6 + j) * estride;
            for (int k = 0; k < nb; k++)
                d[k] = (float)fma(t[i][0][k], G[j][0], fma(t[i][1][k], G[j][1], t[i][2][k] * G[j][2]));
        }
}

/* U[e*O*C + f] := element e of filter f's transform (tile 2: F(2x2,3x3), 4: F(4x4,3x3)) for
   the filters [lo, hi) of w's O*C (winograd.h's layout: U[(e*O + o)*C + c]) */
static inline void fnn_wgf_plain(int tile, int O, int C, long lo, long hi, const float* w,
                                 float* U) {
    const long OC = (long)O * C;
    long src[FNN_WGF_B];
    for (long f0 = lo; f0 < hi; f0 += FNN_WGF_B) {
        int nb = hi - f0 < FNN_WGF_B ? (int)(hi - f0) : FNN_WGF_B;
        for (int k = 0; k < nb; k++) src[k] = f0 + k;
        if (tile == 4)
            fnn_wgf4_block(w, src, nb, U + f0, OC);
        else
            fnn_wgf2_block(w, src, nb, U + f0, OC);
    }
}

/* Us[((e*NB + b)*C + c)*OB + j] := element e of filter (b*OB + j, c)'s transform, zero for the
   output channels past O, for the output-channel blocks [b_lo, b_hi) (NB = ceil(O / OB)):
   the register-blocked kernels' order (winograd/small, winograd/small4), OB dividing
   FNN_WGF_B */
static inline void fnn_wgf_packed(int tile, int OB, int O, int C, int b_lo, int b_hi,
                                  const float* w, float* Us) {
    const int NB = (O + OB - 1) / OB, CB = FNN_WGF_B / OB;
    const long estride = (long)NB * C * OB;
    long src[FNN_WGF_B];
    for (int b = b_lo; b < b_hi; b++)
        for (int c0 = 0; c0 < C; c0 += CB) {
            int nc = C - c0 < CB ? C - c0 : CB;
            for (int k = 0; k < nc * OB; k++) {
                int o = b * OB + k % OB;
                src[k] = o < O ? (long)o * C + c0 + k / OB : -1;
            }
            float* d = Us + ((long)b * C + c0) * OB;
            if (tile == 4)
                fnn_wgf4_block(w, src, nc * OB, d, estride);
            else
                fnn_wgf2_block(w, src, nc * OB, d, estride);
        }
}

#endif /* FNN_WINOGRAD_FILTERS_H */
