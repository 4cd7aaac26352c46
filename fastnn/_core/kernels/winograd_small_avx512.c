/* The AVX-512 kernel of winograd_small.h: 16 tiles a vector, two vectors a group, blocks of 8
   output channels (16 accumulators). Groups of whole runs of 8 tiles within a row of tiles
   (images 16, 32, ... wide) load their patch rows 16 floats at a time and split them into the
   tiles' lanes by even/odd permutes, and store each output row of a run with one masked store;
   other groups go tile by tile. */
#include <immintrin.h>
#include <string.h>
#include "winograd_small.h"
#include "winograd_small_pack.h"
#include "winograd_small_avx512.h"
#include "winograd_tiles.h"
#include "winograd_transforms.h"
#include "winograd_patch.h"

_Static_assert(FNN_WGS_GROUP == FNN_WGSP_G && FNN_WGS_OB == FNN_WGSP_OB, "fnn_wgs_products' group and block");

/* fpclass categories: quiet NaN, +inf, -inf, signalling NaN */
#define FNN_WGS_NONFINITE 0x99
#define FNN_WGS_NV (FNN_WGS_GROUP / 16)

/* Where one vector's 16 tiles read and write: two runs of 8 tiles (runs) or tile by tile. */
typedef struct {
    int runs, cnt;
    long xoff[2], yoff[2];
    __mmask16 xm[2][4][2], ym[2][2];
    long off[16], ooff[16];
    __mmask8 km[64];
    int rows[16], full[16];
} fnn_wgs_vec;

static void fnn_wgs_locate(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t0,
                           int cnt, fnn_wgs_vec* g) {
    g->cnt = cnt < 0 ? 0 : (cnt > 16 ? 16 : cnt);
    g->runs = fnn_wg2_runs16(C, H, W, OH, OW, ph, pw, t0, g->cnt, g->xoff, g->xm);
    if (g->runs) {
        for (int h = 0; h < 2; h++) {  /* the run's output rows oy, oy + 1: 16 columns each */
            int oy, ox;
            const long n = fnn_wg_tile(2, OH, OW, t0 + 8 * h, &oy, &ox);
            const __mmask16 om = (__mmask16)fnn_wg_inside(ox, 16, OW);
            g->yoff[h] = n * O * ((long)OH * OW) + (long)oy * OW + ox;
            g->ym[h][0] = om;
            g->ym[h][1] = oy + 1 < OH ? om : 0;
        }
        return;
    }
    int cols[16];
    fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, t0, g->cnt, 16, g->off, g->km);
    fnn_wg_outputs(2, O, OH, OW, t0, g->cnt, 16, g->ooff, g->rows, cols);
    for (int q = 0; q < 16; q++) g->full[q] = cols[q] == 2;
}

/* d[r][j] = x[iy0 + r, ix0 + j] of each of the vector's tiles (zero outside the image) */
static inline void fnn_wgs_patch(const float* xc, const fnn_wgs_vec* g, long W, __m512 d[4][4]) {
    if (g->runs) {
        const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        for (int r = 0; r < 4; r++)
            for (int s = 0; s < 2; s++) {
                __m512 a = _mm512_maskz_loadu_ps(g->xm[0][r][s], xc + g->xoff[0] + r * W + 2 * s);
                __m512 b = _mm512_maskz_loadu_ps(g->xm[1][r][s], xc + g->xoff[1] + r * W + 2 * s);
                d[r][2 * s] = _mm512_permutex2var_ps(a, even, b);
                d[r][2 * s + 1] = _mm512_permutex2var_ps(a, odd, b);
            }
        return;
    }
    fnn_wg2_patch(xc, g->off, g->km, W, d);
}

int fnn_wgs_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                  long t_hi, const float* Us, const float* x, const float* bias, float* out,
                  float* V, float* M, int act, float slope) {
    enum { G = FNN_WGS_GROUP, NV = FNN_WGS_NV, OB = FNN_WGS_OB };
    const long HW = (long)H * W, OHW = (long)OH * OW;
    const int NB = (O + OB - 1) / OB;
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    __mmask16 bad = 0;
    for (long g0 = t_lo; g0 < t_hi; g0 += G) {
        fnn_wgs_vec grp[NV];
        for (int k = 0; k < NV; k++)
            fnn_wgs_locate(C, H, W, O, OH, OW, ph, pw, g0 + 16 * k, (int)(t_hi - g0) - 16 * k,
                           grp + k);
        /* V[e][c][k*16 + q] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < NV; k++) {
                __m512 d[4][4];
                fnn_wgs_patch(x + c * HW, grp + k, W, d);
                fnn_wg2_bt(d, V + (long)c * G + 16 * k, (long)C * G);
            }
        for (int b = 0; b < NB; b++) {
            /* M[e][j][t] = sum_c U[e][b*OB + j][c] V[e][c][t], in registers per e */
            for (int e = 0; e < 16; e++)
                fnn_wgs_products(Us + ((long)e * NB + b) * C * OB, V + (long)e * C * G,
                                 C, M + (long)e * OB * G);
            /* Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], then bias and activation */
            const int jn = O - b * OB < OB ? O - b * OB : OB;
            for (int j = 0; j < jn; j++) {
                const int o = b * OB + j;
                const __m512 bv = bias ? _mm512_set1_ps(bias[o]) : zero;
                float* ob = out + (long)o * OHW;
                for (int k = 0; k < NV; k++) {
                    const fnn_wgs_vec* g = grp + k;
                    if (g->cnt == 0) continue;
                    const float* m = M + (long)j * G + 16 * k;
                    const long MS = (long)OB * G;
                    __m512 y[2][2];
                    const __mmask16 lanes = (__mmask16)((1u << g->cnt) - 1);
                    fnn_wg2_at(m, MS, bv, y);
                    for (int i = 0; i < 2; i++) {
                        for (int jj = 0; jj < 2; jj++) {
                            bad |= _mm512_mask_fpclass_ps_mask(lanes, y[i][jj], FNN_WGS_NONFINITE);
                            if (act == 1)
                                y[i][jj] = _mm512_mask_mov_ps(y[i][jj], _mm512_cmp_ps_mask(y[i][jj], zero, _CMP_LE_OQ), zero);
                            else if (act == 2)
                                y[i][jj] = _mm512_mask_mov_ps(_mm512_mul_ps(y[i][jj], sv),
                                                              _mm512_cmp_ps_mask(y[i][jj], zero, _CMP_GT_OQ), y[i][jj]);
                        }
                    }
                    /* lo: tiles 0-7's two columns interleaved (run 0's rows), hi: tiles 8-15 */
                    __m512 lo[2], hi[2];
                    for (int i = 0; i < 2; i++) {
                        lo[i] = _mm512_permutex2var_ps(y[i][0], lo_idx, y[i][1]);
                        hi[i] = _mm512_permutex2var_ps(y[i][0], hi_idx, y[i][1]);
                    }
                    if (g->runs) {
                        for (int i = 0; i < 2; i++) {
                            _mm512_mask_storeu_ps(ob + g->yoff[0] + (long)i * OW, g->ym[0][i], lo[i]);
                            _mm512_mask_storeu_ps(ob + g->yoff[1] + (long)i * OW, g->ym[1][i], hi[i]);
                        }
                        continue;
                    }
                    float buf[2][32] __attribute__((aligned(64)));
                    for (int i = 0; i < 2; i++) {
                        _mm512_store_ps(buf[i], lo[i]);
                        _mm512_store_ps(buf[i] + 16, hi[i]);
                    }
                    for (int q = 0; q < g->cnt; q++) {
                        float* p = ob + g->ooff[q];
                        for (int i = 0; i < g->rows[q]; i++) {
                            if (g->full[q]) memcpy(p + (long)i * OW, buf[i] + 2 * q, 2 * sizeof(float));
                            else p[(long)i * OW] = buf[i][2 * q];
                        }
                    }
                }
            }
        }
    }
    return bad != 0;
}
