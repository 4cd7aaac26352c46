/* The AVX-512 kernel of winograd_small4.h: 16 tiles a vector, two vectors a group, blocks of 8
   output channels (16 accumulators); the patches, transforms and stores of winograd/f4. */
#include <immintrin.h>
#include "winograd_small4.h"
#include "winograd_small4_pack.h"
#include "winograd_f4_avx512.h"
#include "winograd_epilogue_avx512.h"
#include "winograd_small_avx512.h"
#include "winograd_tiles.h"

_Static_assert(FNN_WGS4_GROUP == FNN_WGSP_G && FNN_WGS4_OB == FNN_WGSP_OB, "fnn_wgs_products' group and block");

/* fpclass categories: quiet NaN, +inf, -inf, signalling NaN */
#define FNN_WGS4_NONFINITE 0x99
#define FNN_WGS4_NV (FNN_WGS4_GROUP / 16)

/* Where one vector's 16 tiles read and write: runs of R = 8 or 4 consecutive tiles within a
   row of tiles (TW a multiple of R: images 32, 64, ... or 16, 48, ... wide), whose patch rows
   are loaded 16 floats at a time (8 slots a row: R = 8, runs h: columns 0, 16, 2, 18 from the
   run's first; R = 4: columns 0 and 2) and whose output rows are stored as 4 segments of 4
   tiles (16 floats); or tile by tile (patch offsets, row masks). */
typedef struct {
    int cnt, whole, runs;
    long off[16], ooff[16];
    __mmask8 km[16 * 6], cmask[16];
    int rows[16];
    long xs[8], soff[4];
    __mmask16 xm[8][6], sm[4][4];
} fnn_wgs4_vec;

static void fnn_wgs4_locate(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t0,
                            int cnt, fnn_wgs4_vec* g) {
    const int TW = (OW + 3) / 4;
    const long HW = (long)H * W, OHW = (long)OH * OW;
    g->cnt = cnt < 0 ? 0 : (cnt > 16 ? 16 : cnt);
    const int R = TW % 8 == 0 ? 8 : 4;
    g->runs = g->cnt == 16 && TW % 4 == 0;
    for (int h = 0; h < 16 / R && g->runs; h++) {
        long n;
        int oy, ox;
        if (!fnn_wg_run(4, OH, OW, t0 + R * h, R, &n, &oy, &ox)) {
            g->runs = 0;
            break;
        }
        const int iy0 = oy - ph, ix0 = ox - pw;
        for (int s = 0; s < 8 / (16 / R); s++) {
            /* slot: R = 8: h*2 + s (s 0, 1: columns 0, 16) and 4 + h*2 + s - 2 (columns 2,
               18); R = 4: h (column 0) and 4 + h (column 2) */
            const int start = R == 8 ? (s & 1) * 16 + (s >> 1) * 2 : s * 2;
            const int slot = R == 8 ? (s >> 1) * 4 + h * 2 + (s & 1) : s * 4 + h;
            const __mmask16 cm = (__mmask16)fnn_wg_inside(ix0 + start, 16, W);
            g->xs[slot] = n * C * HW + (long)iy0 * W + ix0 + start;
            for (int r = 0; r < 6; r++) g->xm[slot][r] = (iy0 + r >= 0 && iy0 + r < H) ? cm : 0;
        }
        for (int s = 0; s < R / 4; s++) {
            const int seg = h * (R / 4) + s;
            const __mmask16 om = (__mmask16)fnn_wg_inside(ox + 16 * s, 16, OW);
            g->soff[seg] = n * O * OHW + (long)oy * OW + ox + 16 * s;
            for (int i = 0; i < 4; i++) g->sm[seg][i] = oy + i < OH ? om : 0;
        }
    }
    int cols[16];
    fnn_wg_patches(4, C, H, W, OH, OW, ph, pw, t0, g->cnt, 16, g->off, g->km);
    fnn_wg_outputs(4, O, OH, OW, t0, g->cnt, 16, g->ooff, g->rows, cols);
    g->whole = g->cnt == 16;
    for (int q = 0; q < 16; q++) {
        g->cmask[q] = (__mmask8)((1u << cols[q]) - 1);
        g->whole &= q >= g->cnt || (g->rows[q] == 4 && cols[q] == 4);
    }
}

/* Row r of the runs' patches: d[j] lane l = column 4(l % 8) + j of slots 0, 1 (lanes 0-7) and
   2, 3 (lanes 8-15) for j < 4, column 4(l % 8) + j - 2 of slots 4-7 for j = 4, 5; two-source
   permutes and a blend. */
static inline void fnn_wgs4_run_row(const float* xc, const fnn_wgs4_vec* g, long rW, int r,
                                    __m512 d[6]) {
    const __m512i i0 = _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 a[8];
    for (int s = 0; s < 8; s++) a[s] = _mm512_maskz_loadu_ps(g->xm[s][r], xc + g->xs[s] + rW);
    __m512i idx = i0;
    for (int j = 0; j < 4; j++) {
        d[j] = _mm512_mask_mov_ps(_mm512_permutex2var_ps(a[0], idx, a[1]), 0xFF00,
                                  _mm512_permutex2var_ps(a[2], idx, a[3]));
        if (j >= 2)
            d[j + 2] = _mm512_mask_mov_ps(_mm512_permutex2var_ps(a[4], idx, a[5]), 0xFF00,
                                          _mm512_permutex2var_ps(a[6], idx, a[7]));
        idx = _mm512_add_epi32(idx, one);
    }
}

int fnn_wgs4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* Us, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    enum { G = FNN_WGS4_GROUP, NV = FNN_WGS4_NV, OB = FNN_WGS4_OB };
    const long HW = (long)H * W, OHW = (long)OH * OW, VS = (long)C * G, MS = (long)OB * G;
    const int NB = (O + OB - 1) / OB;
    /* lane 2m + c of lo (hi): column c of tile m (8 + m); lane 4m + c of za (zb): tile m
       (4 + m) of the pairs of columns 0, 1 and 2, 3 */
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512i za_idx = _mm512_set_epi32(23, 22, 7, 6, 21, 20, 5, 4, 19, 18, 3, 2, 17, 16, 1, 0);
    const __m512i zb_idx = _mm512_add_epi32(za_idx, _mm512_set1_epi32(8));
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    __mmask16 bad = 0;
    fnn_wgs4_vec both[2][NV];
    for (int k = 0; k < NV; k++)
        fnn_wgs4_locate(C, H, W, O, OH, OW, ph, pw, t_lo + 16 * k, (int)(t_hi - t_lo) - 16 * k,
                        both[0] + k);
    for (long g0 = t_lo, gi = 0; g0 < t_hi; g0 += G, gi ^= 1) {
        const fnn_wgs4_vec* grp = both[gi];
        fnn_wgs4_vec* nxt = both[gi ^ 1];
        for (int k = 0; k < NV; k++)
            fnn_wgs4_locate(C, H, W, O, OH, OW, ph, pw, g0 + G + 16 * k,
                            (int)(t_hi - g0 - G) - 16 * k, nxt + k);
        /* V[e][c][k*16 + q] = (B^T d B)[e] (fnn_wg4_tiles' operations) */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < NV; k++) {
                const fnn_wgs4_vec* g = grp + k;
                __m512 d[6][6], s[6][6], col[6], o6[6];
                if (nxt[k].runs)  /* the next group's patch rows of this channel, into L1 */
                    for (int sl = 0; sl < 4; sl++)
                        for (int r = 0; r < 6; r++) {
                            const char* p = (const char*)(x + c * HW + nxt[k].xs[sl] + (long)r * W);
                            _mm_prefetch(p, _MM_HINT_T0);
                            _mm_prefetch(p + 68, _MM_HINT_T0);
                        }
                for (int r = 0; r < 6; r++) {
                    if (g->runs)
                        fnn_wgs4_run_row(x + c * HW, g, (long)r * W, r, d[r]);
                    else
                        fnn_wg4_patch_row(x + c * HW, g->off, g->km, (long)r * W, r, d[r]);
                }
                for (int j = 0; j < 6; j++) {
                    for (int r = 0; r < 6; r++) col[r] = d[r][j];
                    fnn_wg4_bt(col, o6);
                    for (int i = 0; i < 6; i++) s[i][j] = o6[i];
                }
                float* v = V + (long)c * G + 16 * k;
                for (int i = 0; i < 6; i++) {
                    fnn_wg4_bt(s[i], o6);
                    for (int j = 0; j < 6; j++) _mm512_store_ps(v + (6 * i + j) * VS, o6[j]);
                }
            }
        for (int b = 0; b < NB; b++) {
            /* M[e][j][t] = sum_c U[e][b*OB + j][c] V[e][c][t], in registers per e */
            for (int e = 0; e < 36; e++)
                fnn_wgs_products(Us + ((long)e * NB + b) * C * OB, V + (long)e * VS,
                                 C, M + (long)e * OB * G);
            /* Y = A^T M A, bias, activation, stored per tile row (fnn_wg4_tiles' operations) */
            const int jn = O - b * OB < OB ? O - b * OB : OB;
            for (int j = 0; j < jn; j++) {
                const int o = b * OB + j;
                const __m512 bv = bias ? _mm512_set1_ps(bias[o]) : zero;
                float* ob = out + (long)o * OHW;
                for (int k = 0; k < NV; k++) {
                    const fnn_wgs4_vec* g = grp + k;
                    if (g->cnt == 0) continue;
                    const float* m = M + (long)j * G + 16 * k;
                    const __mmask16 lanes = (__mmask16)((1u << g->cnt) - 1);
                    __m512 a[4][6], y[4][4], mv[6];
                    for (int jj = 0; jj < 6; jj++) {
                        __m512 y4[4];
                        for (int i = 0; i < 6; i++) mv[i] = _mm512_load_ps(m + (6 * i + jj) * MS);
                        fnn_wg4_at(mv, y4);
                        for (int i = 0; i < 4; i++) a[i][jj] = y4[i];
                    }
                    for (int i = 0; i < 4; i++) {
                        fnn_wg4_at(a[i], y[i]);
                        bad |= fnn_wg_epi_bias_act(y[i], bv, lanes, act, sv);
                        const long ro = (long)i * OW;
                        if (g->runs) {
                            /* u: columns 0, 1 (u[0], u[1]: tiles 0-7, 8-15) and 2, 3 (u[2],
                               u[3]) interleaved; z[k]: tiles 4k..4k+3's rows, contiguous */
                            __m512 u[4], z[4];
                            u[0] = _mm512_permutex2var_ps(y[i][0], lo_idx, y[i][1]);
                            u[1] = _mm512_permutex2var_ps(y[i][0], hi_idx, y[i][1]);
                            u[2] = _mm512_permutex2var_ps(y[i][2], lo_idx, y[i][3]);
                            u[3] = _mm512_permutex2var_ps(y[i][2], hi_idx, y[i][3]);
                            z[0] = _mm512_permutex2var_ps(u[0], za_idx, u[2]);
                            z[1] = _mm512_permutex2var_ps(u[0], zb_idx, u[2]);
                            z[2] = _mm512_permutex2var_ps(u[1], za_idx, u[3]);
                            z[3] = _mm512_permutex2var_ps(u[1], zb_idx, u[3]);
                            for (int sg = 0; sg < 4; sg++)
                                _mm512_mask_storeu_ps(ob + g->soff[sg] + ro, g->sm[sg][i], z[sg]);
                            continue;
                        }
                        __m512 p[4];  /* block q of p[r] = row i of tile 4q + r */
                        fnn_wg_epi_transpose(y[i], p);
                        if (g->whole) {
                            for (int r = 0; r < 4; r++) {
                                _mm_storeu_ps(ob + g->ooff[r] + ro, _mm512_extractf32x4_ps(p[r], 0));
                                _mm_storeu_ps(ob + g->ooff[4 + r] + ro, _mm512_extractf32x4_ps(p[r], 1));
                                _mm_storeu_ps(ob + g->ooff[8 + r] + ro, _mm512_extractf32x4_ps(p[r], 2));
                                _mm_storeu_ps(ob + g->ooff[12 + r] + ro, _mm512_extractf32x4_ps(p[r], 3));
                            }
                        } else {
                            float buf[4][16] __attribute__((aligned(64)));
                            for (int r = 0; r < 4; r++) _mm512_store_ps(buf[r], p[r]);
                            for (int q = 0; q < g->cnt; q++)
                                if (i < g->rows[q])
                                    _mm_mask_storeu_ps(ob + g->ooff[q] + ro, g->cmask[q],
                                                       _mm_load_ps(buf[q % 4] + 4 * (q / 4)));
                        }
                    }
                }
            }
        }
    }
    return bad != 0;
}
