/* The AVX2+FMA kernel of winograd_small.h: 8 tiles a vector, three vectors a group, blocks of
   4 output channels (12 accumulators); winograd_small_avx512.c's operations per output. A
   vector that is one run of 8 tiles within a row of tiles (images 16, 32, ... wide) loads its
   patch rows 16 floats at a time and splits them into the tiles' lanes by even/odd shuffles,
   and stores each output row with one (masked) store; other vectors go tile by tile. */
#include <immintrin.h>
#include <string.h>
#include "winograd_small.h"
#include "winograd_small_pack.h"
#include "winograd_small_avx2.h"
#include "winograd_tiles.h"
#include "winograd_transforms.h"
#include "winograd_patch.h"

#define FNN_WGS_NV (FNN_WGS_GROUP / 8)
_Static_assert(FNN_WGS_GROUP == FNN_WGSP_G && FNN_WGS_OB == FNN_WGSP_OB, "fnn_wgs_products' group and block");

/* Where one vector's 8 tiles read and write: one run of 8 tiles (run) or tile by tile. */
typedef struct {
    int run, cnt;
    long xoff, yoff;
    int xrow[4], yrow[2];  /* rows inside the image / the output */
    int xall[2], yall;     /* every column of the loads (s = 0, 1) / the stores inside */
    __m256i xm[2][2], ym[2]; /* else their lane masks: [s][half], [half] */
    long off[8], ooff[8];
    unsigned char km[32];
    int rows[8], full[8];
} fnn_wgs_vec;

static inline __m256i fnn_wgs_mask8(int lo, int hi, int first) {
    /* lanes i with lo <= first + i < hi */
    __m256i i = _mm256_add_epi32(_mm256_set1_epi32(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_and_si256(_mm256_cmpgt_epi32(i, _mm256_set1_epi32(lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), i));
}

static void fnn_wgs_locate(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t0,
                           int cnt, fnn_wgs_vec* g) {
    long n;
    int oy, ox;
    g->cnt = cnt < 0 ? 0 : (cnt > 8 ? 8 : cnt);
    g->run = g->cnt == 8 && (OW + 1) / 2 % 8 == 0 && fnn_wg_run(2, OH, OW, t0, 8, &n, &oy, &ox);
    if (g->run) {
        const int iy0 = oy - ph, ix0 = ox - pw;
        g->xoff = n * C * ((long)H * W) + (long)iy0 * W + ix0;
        g->yoff = n * O * ((long)OH * OW) + (long)oy * OW + ox;
        for (int r = 0; r < 4; r++) g->xrow[r] = iy0 + r >= 0 && iy0 + r < H;
        for (int s = 0; s < 2; s++) {  /* columns ix0 + 2s .. + 15 */
            g->xall[s] = ix0 + 2 * s >= 0 && ix0 + 2 * s + 16 <= W;
            g->xm[s][0] = fnn_wgs_mask8(0, W, ix0 + 2 * s);
            g->xm[s][1] = fnn_wgs_mask8(0, W, ix0 + 2 * s + 8);
        }
        g->yrow[0] = 1;
        g->yrow[1] = oy + 1 < OH;
        g->yall = ox + 16 <= OW;
        g->ym[0] = fnn_wgs_mask8(0, OW, ox);
        g->ym[1] = fnn_wgs_mask8(0, OW, ox + 8);
        return;
    }
    int cols[8];
    fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, t0, g->cnt, 8, g->off, g->km);
    fnn_wg_outputs(2, O, OH, OW, t0, g->cnt, 8, g->ooff, g->rows, cols);
    for (int q = 0; q < 8; q++) g->full[q] = cols[q] == 2;
}

/* d[r][j] = x[iy0 + r, ix0 + j] of each of the vector's tiles (zero outside the image) */
static inline void fnn_wgs_patch(const float* xc, const fnn_wgs_vec* g, long W, __m256 d[4][4]) {
    if (g->run) {
        const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
        for (int r = 0; r < 4; r++) {
            if (!g->xrow[r]) {
                for (int j = 0; j < 4; j++) d[r][j] = _mm256_setzero_ps();
                continue;
            }
            for (int s = 0; s < 2; s++) {
                const float* p = xc + g->xoff + r * W + 2 * s;
                __m256 a, b;
                if (g->xall[s]) {
                    a = _mm256_loadu_ps(p);
                    b = _mm256_loadu_ps(p + 8);
                } else {
                    a = _mm256_maskload_ps(p, g->xm[s][0]);
                    b = _mm256_maskload_ps(p + 8, g->xm[s][1]);
                }
                /* [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6] */
                d[r][2 * s] = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, 0x88), order);
                d[r][2 * s + 1] = _mm256_permutevar8x32_ps(_mm256_shuffle_ps(a, b, 0xDD), order);
            }
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
    const __m256 zero = _mm256_setzero_ps(), sv = _mm256_set1_ps(slope);
    int bad = 0;
    for (long g0 = t_lo; g0 < t_hi; g0 += G) {
        fnn_wgs_vec grp[NV];
        for (int k = 0; k < NV; k++)
            fnn_wgs_locate(C, H, W, O, OH, OW, ph, pw, g0 + 8 * k, (int)(t_hi - g0) - 8 * k,
                           grp + k);
        /* V[e][c][k*8 + q] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < NV; k++) {
                __m256 d[4][4];
                fnn_wgs_patch(x + c * HW, grp + k, W, d);
                fnn_wg2_bt(d, V + (long)c * G + 8 * k, (long)C * G);
            }
        for (int b = 0; b < NB; b++) {
            /* M[e][j][t] = sum_c U[e][b*OB + j][c] V[e][c][t], in registers per e */
            for (int e = 0; e < 16; e++)
                fnn_wgs_products(Us + ((long)e * NB + b) * C * OB, V + (long)e * C * G, C,
                                 M + (long)e * OB * G);
            /* Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], then bias and activation */
            const int jn = O - b * OB < OB ? O - b * OB : OB;
            for (int j = 0; j < jn; j++) {
                const int o = b * OB + j;
                const __m256 bv = bias ? _mm256_set1_ps(bias[o]) : zero;
                float* ob = out + (long)o * OHW;
                for (int k = 0; k < NV; k++) {
                    const fnn_wgs_vec* g = grp + k;
                    if (g->cnt == 0) continue;
                    const float* m = M + (long)j * G + 8 * k;
                    const long MS = (long)OB * G;
                    __m256 y[2][2], lo[2], hi[2];
                    const int lanes = (1 << g->cnt) - 1;
                    fnn_wg2_at(m, MS, bv, y);
                    for (int i = 0; i < 2; i++) {
                        for (int jj = 0; jj < 2; jj++) {
                            /* y - y is 0 unless y is NaN or infinite */
                            bad |= lanes & _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(y[i][jj], y[i][jj]),
                                                                             zero, _CMP_NEQ_UQ));
                            if (act == 1)
                                y[i][jj] = _mm256_blendv_ps(y[i][jj], zero, _mm256_cmp_ps(y[i][jj], zero, _CMP_LE_OQ));
                            else if (act == 2)
                                y[i][jj] = _mm256_blendv_ps(_mm256_mul_ps(y[i][jj], sv), y[i][jj],
                                                            _mm256_cmp_ps(y[i][jj], zero, _CMP_GT_OQ));
                        }
                        /* lo: pairs of tiles 0, 1 | 4, 5; hi: 2, 3 | 6, 7 */
                        lo[i] = _mm256_unpacklo_ps(y[i][0], y[i][1]);
                        hi[i] = _mm256_unpackhi_ps(y[i][0], y[i][1]);
                    }
                    if (g->run) {
                        for (int i = 0; i < 2; i++) {
                            if (!g->yrow[i]) continue;
                            float* p = ob + g->yoff + (long)i * OW;
                            __m256 r0 = _mm256_permute2f128_ps(lo[i], hi[i], 0x20);
                            __m256 r1 = _mm256_permute2f128_ps(lo[i], hi[i], 0x31);
                            if (g->yall) {
                                _mm256_storeu_ps(p, r0);
                                _mm256_storeu_ps(p + 8, r1);
                            } else {
                                _mm256_maskstore_ps(p, g->ym[0], r0);
                                _mm256_maskstore_ps(p + 8, g->ym[1], r1);
                            }
                        }
                        continue;
                    }
                    float buf[2][16] __attribute__((aligned(32)));
                    for (int i = 0; i < 2; i++) {
                        /* tiles 0-3's pairs, then 4-7's */
                        _mm256_store_ps(buf[i], _mm256_permute2f128_ps(lo[i], hi[i], 0x20));
                        _mm256_store_ps(buf[i] + 8, _mm256_permute2f128_ps(lo[i], hi[i], 0x31));
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
