/* The AVX2+FMA kernel of winograd_small4.h: 8 tiles a vector, three vectors a group, blocks of
   4 output channels (12 accumulators); winograd/f4's patches, transforms and stores
   (winograd_f4_avx2.h) around winograd/small's products (winograd_small_avx2.h). */
#include <immintrin.h>
#include "winograd_small4.h"
#include "winograd_small4_pack.h"
#include "winograd_f4_avx2.h"
#include "winograd_small_avx2.h"
#include "winograd_tiles.h"

_Static_assert(FNN_WGS4_GROUP == FNN_WGSP_G && FNN_WGS4_OB == FNN_WGSP_OB, "fnn_wgs_products' group and block");

#define FNN_WGS4_NV (FNN_WGS4_GROUP / 8)

int fnn_wgs4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* Us, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    enum { G = FNN_WGS4_GROUP, NV = FNN_WGS4_NV, OB = FNN_WGS4_OB };
    const long HW = (long)H * W, OHW = (long)OH * OW, VS = (long)C * G, MS = (long)OB * G;
    const int NB = (O + OB - 1) / OB;
    const __m256 zero = _mm256_setzero_ps(), sv = _mm256_set1_ps(slope);
    __m256 bad = zero;
    fnn_wg4_vec8 grp[NV];
    for (long g0 = t_lo; g0 < t_hi; g0 += G) {
        for (int k = 0; k < NV; k++)
            fnn_wg4_locate8(C, H, W, O, OH, OW, ph, pw, g0 + 8 * k, (int)(t_hi - g0) - 8 * k,
                            grp + k);
        /* the next group's input rows, prefetched a channel at a time beside this group's */
        long pst[4], pln[4];
        const long g1 = g0 + G < t_hi ? g0 + G : t_hi;
        const int npf = fnn_wg_rows_ahead(4, C, H, W, OH, OW, ph, g1,
                                          g1 + G < t_hi ? g1 + G : t_hi, 4, pst, pln);
        /* V[e][c][k*8 + q] = (B^T d B)[e] (fnn_wg4_tiles' operations) */
        for (int c = 0; c < C; c++) {
            for (int i = 0; i < npf; i++)
                for (long p = 0; p < pln[i]; p += 16)
                    _mm_prefetch((const char*)(x + c * HW + pst[i] + p), _MM_HINT_T0);
            for (int k = 0; k < NV; k++) fnn_wg4_in8(x + c * HW, grp + k, V + (long)c * G + 8 * k, VS);
        }
        for (int b = 0; b < NB; b++) {
            /* M[e][j][t] = sum_c U[e][b*OB + j][c] V[e][c][t], in registers per e */
            for (int e = 0; e < 36; e++)
                fnn_wgs_products(Us + ((long)e * NB + b) * C * OB, V + (long)e * VS, C,
                                 M + (long)e * OB * G);
            /* Y = A^T M A, bias, activation, stored per tile (fnn_wg4_tiles' operations) */
            const int jn = O - b * OB < OB ? O - b * OB : OB;
            for (int j = 0; j < jn; j++) {
                const int o = b * OB + j;
                const __m256 bv = bias ? _mm256_set1_ps(bias[o]) : zero;
                for (int k = 0; k < NV; k++) {
                    const fnn_wg4_vec8* g = grp + k;
                    if (g->cnt == 0) continue;
                    __m256 y = fnn_wg4_out8_act(act, M + (long)j * G + 8 * k, MS, bv, sv,
                                                out + (long)o * OHW, OW, g);
                    bad = _mm256_or_ps(bad, _mm256_and_ps(y, fnn_wg4_live8(g->cnt)));
                }
            }
        }
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(bad, zero, _CMP_NEQ_UQ)) != 0;
}
