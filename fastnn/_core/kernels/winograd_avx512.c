/* The AVX-512 Winograd F(2x2,3x3) kernels of winograd.h. Tiles are taken 16 at a time in their
   flat order (across rows and samples, so small images fill the vectors): the transforms run
   with one tile per lane, the GEMMs on the microkernel. */
#include <immintrin.h>
#include <string.h>
#include "winograd.h"
#include "mk_avx512.h"
#include "winograd_weights.h"
#include "winograd_f4_avx512.h"
#include "winograd_tiles.h"
#include "winograd_transforms.h"
#include "winograd_patch.h"
#include "winograd_epilogue_avx512.h"

/* fpclass categories: quiet NaN, +inf, -inf, signalling NaN */
#define FNN_WG_NONFINITE 0x99

/* the 2x2 outputs of tiles q0 + 2k and q0 + 2k + 1: 128-bit block k of V[0] (row 0) and V[1]
   (row 1) holds their column pairs */
#define FNN_WG2_PAIRS(V, q0, k)                                                             \
    {   const int q = q0 + 2 * k;                                                           \
        __m128 r0 = _mm512_extractf32x4_ps(V[0], k), r1 = _mm512_extractf32x4_ps(V[1], k); \
        _mm_storel_pi((__m64*)(ob + ooff[q]), r0);                                          \
        _mm_storel_pi((__m64*)(ob + ooff[q] + OW), r1);                                     \
        _mm_storeh_pi((__m64*)(ob + ooff[q + 1]), r0);                                      \
        _mm_storeh_pi((__m64*)(ob + ooff[q + 1] + OW), r1); }

int fnn_wg2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* U, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15;
    const int TH = (OH + 1) / 2, TW = (OW + 1) / 2;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * TL, MS = (long)O * TL;
    /* input transform: V[e][c][t] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
    for (int g0 = 0; g0 < T; g0 += 16) {
        long off[16];
        __mmask8 km[64];
        fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, t_lo + g0, T - g0, 16, off, km);
        for (int c = 0; c < C; c++) {
            __m512 d[4][4];
            fnn_wg2_patch(x + c * HW, off, km, W, d);
            fnn_wg2_bt(d, V + (long)c * TL + g0, VS);
        }
    }
    /* the 16 GEMMs: M[e] (O x T) = U[e] (O x C) @ V[e] (C x T) */
    for (int e = 0; e < 16; e++)
        fnn_mk_sgemm_nn(O, T, C, U + (long)e * O * C, C, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform: Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], then bias and activation */
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    __mmask16 bad = 0;
    for (int g0 = 0; g0 < T; g0 += 16) {
        int cnt = T - g0 < 16 ? T - g0 : 16;
        long ooff[16];
        int rows[16], full[16];
        for (int q = 0; q < cnt; q++) {
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int oy = (int)(rem / TW) * 2, ox = (int)(rem % TW) * 2;
            ooff[q] = n * O * OHW + (long)oy * OW + ox;
            rows[q] = oy + 1 < OH ? 2 : 1;
            full[q] = ox + 1 < OW;
        }
        const __mmask16 lanes = (__mmask16)((1u << cnt) - 1);
        int whole = cnt == 16;  /* every tile of the group inside the output: no edge cases */
        for (int q = 0; q < cnt; q++) whole &= rows[q] == 2 && full[q];
        for (int o = 0; o < O; o++) {
            const float* m = M + (long)o * TL + g0;
            __m512 y[2][2];
            __m512 b = bias ? _mm512_set1_ps(bias[o]) : zero;
            fnn_wg2_at(m, MS, b, y);
            for (int i = 0; i < 2; i++) {
                for (int j = 0; j < 2; j++) {
                    bad |= _mm512_mask_fpclass_ps_mask(lanes, y[i][j], FNN_WG_NONFINITE);
                    if (act == 1)
                        y[i][j] = _mm512_mask_mov_ps(y[i][j], _mm512_cmp_ps_mask(y[i][j], zero, _CMP_LE_OQ), zero);
                    else if (act == 2)
                        y[i][j] = _mm512_mask_mov_ps(_mm512_mul_ps(y[i][j], sv),
                                                     _mm512_cmp_ps_mask(y[i][j], zero, _CMP_GT_OQ), y[i][j]);
                }
            }
            __m512 lo[2], hi[2];
            for (int i = 0; i < 2; i++) {
                lo[i] = _mm512_permutex2var_ps(y[i][0], lo_idx, y[i][1]);
                hi[i] = _mm512_permutex2var_ps(y[i][0], hi_idx, y[i][1]);
            }
            float* ob = out + (long)o * OHW;
            if (whole) {
                FNN_WG2_PAIRS(lo, 0, 0) FNN_WG2_PAIRS(lo, 0, 1) FNN_WG2_PAIRS(lo, 0, 2)
                FNN_WG2_PAIRS(lo, 0, 3) FNN_WG2_PAIRS(hi, 8, 0) FNN_WG2_PAIRS(hi, 8, 1)
                FNN_WG2_PAIRS(hi, 8, 2) FNN_WG2_PAIRS(hi, 8, 3)
                continue;
            }
            float buf[2][32] __attribute__((aligned(64)));
            for (int i = 0; i < 2; i++) {
                _mm512_store_ps(buf[i], lo[i]);
                _mm512_store_ps(buf[i] + 16, hi[i]);
            }
            for (int q = 0; q < cnt; q++) {
                float* p = ob + ooff[q];
                for (int i = 0; i < rows[q]; i++) {
                    if (full[q]) memcpy(p + (long)i * OW, buf[i] + 2 * q, 2 * sizeof(float));
                    else p[(long)i * OW] = buf[i][2 * q];
                }
            }
        }
    }
    return bad != 0;
}

/* ---- the weight gradient (winograd.h, fnn_wg2_dw_chunk) ---- */

/* one group of 16 tiles' loads: two runs of 8 whose patch rows are contiguous, loaded 16 floats
   at a time and split into the tiles' lanes by even/odd permutes (fnn_wg2_runs16), or one
   masked 4-float load a tile row (fnn_wg_patches) */
typedef struct {
    int runs;
    long xoff[2], off[16];
    __mmask16 xm[2][4][2];
    __mmask8 km[64];
} fnn_wg2_dw_group;

/* the 16 floats at p in lanes m, zero elsewhere: a plain load and a blend where all 16 lie in
   [lo, hi) (a masked load is several times slower), else a masked load */
static inline __m512 fnn_wg2_dw_load(__mmask16 m, const float* p, const float* lo,
                                     const float* hi) {
    if (m == 0) return _mm512_setzero_ps();
    if (p >= lo && p + 16 <= hi) {
        __m512 v = _mm512_loadu_ps(p);
        __asm__("" : "+v"(v));  /* keeps gcc from folding the two back into a masked load */
        return m == 0xFFFF ? v : _mm512_maskz_mov_ps(m, v);
    }
    return _mm512_maskz_loadu_ps(m, p);
}

/* r[p] := pixel p of the 16 floats at g + i*stride (lanes i < rows, columns cm; zero
   elsewhere): 16 row loads transposed in registers (fnn_mk_tr16) */
static inline void fnn_wg2_dw_rows(const float* g, long stride, int rows, __mmask16 cm,
                                   const float* lo, const float* hi, long pf, __m512 r[16]) {
    __m512 o[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? fnn_wg2_dw_load(cm, g + i * stride, lo, hi) : _mm512_setzero_ps();
    for (int i = 0; i < rows; i++)  /* 16 strided streams: too many for the prefetchers */
        _mm_prefetch((const char*)(g + i * stride + pf), _MM_HINT_T0);
    fnn_mk_tr16(r, o);
    for (int i = 0; i < 16; i++) r[i] = o[i];
}

void fnn_wg2_dw_chunk(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                      long t_hi, int kc, const float* x, const float* dy, float* Mk,
                      double* db8, float* V, float* P) {
    const int TW = (OW + 1) / 2, O16 = (O + 15) & ~15;
    const long tpi = (long)((OH + 1) / 2) * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * FNN_MK_RA_LDA, PS = FNN_WG2_DW_PS(O, kc), CO = (long)C * O;
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    /* the end of the images this chunk reads: plain loads stay inside x and dy */
    const long nend = (t_hi - 1) / tpi + 1;
    const float *xend = x + nend * C * HW, *dyend = dy + nend * O * OHW;
    fnn_wg2_dw_group grp[FNN_MK_KC / 16];
    for (long b0 = t_lo; b0 < t_hi; b0 += kc) {
        const int T = t_hi - b0 < kc ? (int)(t_hi - b0) : kc, TL = (T + 15) & ~15;
        const int ng = TL / 16;
        for (int k = 0; k < ng; k++) {
            fnn_wg2_dw_group* gr = grp + k;
            gr->runs = fnn_wg2_runs16(C, H, W, OH, OW, ph, pw, b0 + 16 * k, T - 16 * k,
                                      gr->xoff, gr->xm);
            if (!gr->runs)
                fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, b0 + 16 * k, T - 16 * k, 16, gr->off,
                               gr->km);
        }
        /* V[e][c][t] = (B^T d B)[e], as fnn_wg2_tiles; a channel's groups in turn (its rows
           in order: few streams for the prefetchers) */
        for (int c = 0; c < C; c++)
            for (int k = 0; k < ng; k++) {
                const fnn_wg2_dw_group* gr = grp + k;
                const float* xc = x + c * HW;
                __m512 d[4][4];
                if (gr->runs) {
                    if (c + 1 < C)  /* the next channel's rows, a channel's groups ahead */
                        for (int r = 0; r < 4; r++)
                            for (int h = 0; h < 2; h++) {
                                const char* nx = (const char*)(xc + HW + gr->xoff[h] + r * W);
                                _mm_prefetch(nx, _MM_HINT_T0);
                                _mm_prefetch(nx + 64, _MM_HINT_T0);
                            }
                    for (int r = 0; r < 4; r++)
                        for (int sh = 0; sh < 2; sh++) {
                            __m512 a = fnn_wg2_dw_load(gr->xm[0][r][sh], xc + gr->xoff[0] + r * W + 2 * sh, x, xend);
                            __m512 b = fnn_wg2_dw_load(gr->xm[1][r][sh], xc + gr->xoff[1] + r * W + 2 * sh, x, xend);
                            d[r][2 * sh] = _mm512_permutex2var_ps(a, even, b);
                            d[r][2 * sh + 1] = _mm512_permutex2var_ps(a, odd, b);
                        }
                } else {
                    fnn_wg2_patch(xc, gr->off, gr->km, W, d);
                }
                fnn_wg2_bt(d, V + (long)c * FNN_MK_RA_LDA + 16 * k, VS);
            }
        /* P[e] = (A' g A'^T)[e] straight in the microkernel's packed panels (tile q's row of
           32 output channels at q*32, lanes o): a piece of up to 8 tiles of one row of tiles
           at a time, 16 channels' 2 dy rows transposed into pixel vectors (lanes o), then
           each tile's transform (fnn_wg2_gt) */
        for (int q0 = 0; q0 < T;) {
            const long t = b0 + q0, n = t / tpi, rem = t % tpi;
            const int tx = (int)(rem % TW), oy = (int)(rem / TW) * 2, ox = 2 * tx;
            int R = TW - tx < 8 ? TW - tx : 8;
            if (R > T - q0) R = T - q0;
            __mmask16 cm = 0;
            for (int i = 0; i < 2 * R; i++)
                if (ox + i < OW) cm |= (__mmask16)(1u << i);
            const int row1 = oy + 1 < OH, both = row1 && 2 * R == OW && OW <= 8;
            for (int ob = 0; ob < O16; ob += 16) {
                const int rows = O - ob < 16 ? O - ob : 16;
                const float* g0 = dy + (n * O + ob) * OHW + (long)oy * OW + ox;
                __m512 p0[16], p1[16];
                if (both) {  /* the two rows are one load's lanes [0, OW) and [OW, 2 OW) */
                    fnn_wg2_dw_rows(g0, OHW, rows, (__mmask16)((1u << 2 * OW) - 1), dy, dyend,
                                    2 * OW, p0);
                    for (int i = 0; i < OW; i++) p1[i] = p0[OW + i];
                } else {
                    fnn_wg2_dw_rows(g0, OHW, rows, cm, dy, dyend, 2 * OW, p0);
                    if (row1) fnn_wg2_dw_rows(g0 + OW, OHW, rows, cm, dy, dyend, 2 * OW, p1);
                    else for (int i = 0; i < 16; i++) p1[i] = _mm512_setzero_ps();
                }
                float* pp = P + (long)(ob / 32) * kc * 32 + ob % 32 + (long)q0 * 32;
                for (int q = 0; q < R; q++, pp += 32)
                    fnn_wg2_gt(p0 + 2 * q, p1 + 2 * q, pp, PS);
            }
            q0 += R;
        }
        if (db8)  /* element 5 of a tile's transform is the sum of its 2x2 dy: lane l of o's 8
                     sums the tiles l mod 8 in order, in double */
            for (int o0 = 0; o0 < O; o0 += 8) {
                const int no = O - o0 < 8 ? O - o0 : 8;
                const float* pp = P + 5 * PS + (long)(o0 / 32) * kc * 32 + o0 % 32;
                double s[8][8] = {{0}};
                __m512d acc[8];
                for (int l = 0; l < 8; l++) {
                    for (int i = 0; i < no; i++) s[l][i] = db8[(o0 + i) * 8 + l];
                    acc[l] = _mm512_loadu_pd(s[l]);
                }
                int q = 0;
                for (; q + 8 <= T; q += 8)
                    for (int l = 0; l < 8; l++)
                        acc[l] = _mm512_add_pd(acc[l], _mm512_cvtps_pd(_mm256_loadu_ps(pp + (long)(q + l) * 32)));
                for (int l = 0; q + l < T; l++)
                    acc[l] = _mm512_add_pd(acc[l], _mm512_cvtps_pd(_mm256_loadu_ps(pp + (long)(q + l) * 32)));
                for (int l = 0; l < 8; l++) {
                    _mm512_storeu_pd(s[l], acc[l]);
                    for (int i = 0; i < no; i++) db8[(o0 + i) * 8 + l] = s[l][i];
                }
            }
        /* Mk[e] (C x O) (+)= V[e] (C x T) @ P[e], each block's sums formed from zero */
        const int add = b0 > t_lo;
        for (int e = 0; e < 16; e++)
            for (int j0 = 0; j0 < O; j0 += 32) {
                int nr = O - j0 < 32 ? O - j0 : 32;
                __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
                __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
                const float* Bp = P + e * PS + (long)(j0 / 32) * kc * 32;
                if (nr <= 16)
                    fnn_mk_tiles_ra16(C, T, V + e * VS, Bp, Mk + e * CO + j0, O, add, m0);
                else
                    fnn_mk_tiles_ra(C, T, V + e * VS, Bp, Mk + e * CO + j0, O, add, m0, m1);
            }
    }
}

/* ---- F(4x4,3x3): 6x6 patches, 36 GEMMs, 4x fewer multiplies; transforms with the points
   0, +-1, +-2 (Lavin and Gray's matrices), so the error grows with the 4, 5 and 8 in them. */
int fnn_wg4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* U, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15;
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * TL, MS = (long)O * TL;
    for (int g0 = 0; g0 < T; g0 += 16) {
        long off[16];
        __mmask8 km[16 * 6];
        fnn_wg_patches(4, C, H, W, OH, OW, ph, pw, t_lo + g0, T - g0, 16, off, km);
        for (int c = 0; c < C; c++) {
            __m512 d[6][6], s[6][6], col[6], o6[6];
            for (int r = 0; r < 6; r++)
                fnn_wg4_patch_row(x + c * HW, off, km, (long)r * W, r, d[r]);
            for (int j = 0; j < 6; j++) {  /* columns: s[.][j] = B^T d[.][j] */
                for (int r = 0; r < 6; r++) col[r] = d[r][j];
                fnn_wg4_bt(col, o6);
                for (int i = 0; i < 6; i++) s[i][j] = o6[i];
            }
            float* v = V + (long)c * TL + g0;
            for (int i = 0; i < 6; i++) {  /* rows: V[i][.] = s[i][.] B */
                fnn_wg4_bt(s[i], o6);
                for (int j = 0; j < 6; j++) _mm512_store_ps(v + (6 * i + j) * VS, o6[j]);
            }
        }
    }
    for (int e = 0; e < 36; e++)
        fnn_mk_sgemm_nn(O, T, C, U + (long)e * O * C, C, V + e * VS, TL, M + e * MS, TL, 0);
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    __mmask16 bad = 0;
    for (int g0 = 0; g0 < T; g0 += 16) {
        int cnt = T - g0 < 16 ? T - g0 : 16;
        long ooff[16];
        int rows[16];
        __mmask8 cmask[16];
        const __mmask16 lanes = (__mmask16)((1u << cnt) - 1);
        int whole = cnt == 16;
        for (int q = 0; q < cnt; q++) {
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int oy = (int)(rem / TW) * 4, ox = (int)(rem % TW) * 4;
            ooff[q] = n * O * OHW + (long)oy * OW + ox;
            rows[q] = OH - oy < 4 ? OH - oy : 4;
            int cols = OW - ox < 4 ? OW - ox : 4;
            cmask[q] = (__mmask8)((1u << cols) - 1);
            whole &= rows[q] == 4 && cols == 4;
        }
        for (int o = 0; o < O; o++) {
            const float* m = M + (long)o * TL + g0;
            __m512 a[4][6], y[4][4], mv[6];
            for (int j = 0; j < 6; j++) {  /* columns: a[.][j] = A^T m[.][j] */
                __m512 y4[4];
                for (int i = 0; i < 6; i++) mv[i] = _mm512_load_ps(m + (6 * i + j) * MS);
                fnn_wg4_at(mv, y4);
                for (int i = 0; i < 4; i++) a[i][j] = y4[i];
            }
            __m512 b = bias ? _mm512_set1_ps(bias[o]) : zero;
            float* ob = out + (long)o * OHW;
            for (int i = 0; i < 4; i++) {  /* rows: y[i][.] = a[i][.] A, bias, activation */
                fnn_wg4_at(a[i], y[i]);
                bad |= fnn_wg_epi_bias_act(y[i], b, lanes, act, sv);
                __m512 p[4];  /* block k of p[g] = row i of tile 4k + g */
                fnn_wg_epi_transpose(y[i], p);
                long ro = (long)i * OW;
                if (whole) {
                    for (int g = 0; g < 4; g++) {
                        _mm_storeu_ps(ob + ooff[g] + ro, _mm512_extractf32x4_ps(p[g], 0));
                        _mm_storeu_ps(ob + ooff[4 + g] + ro, _mm512_extractf32x4_ps(p[g], 1));
                        _mm_storeu_ps(ob + ooff[8 + g] + ro, _mm512_extractf32x4_ps(p[g], 2));
                        _mm_storeu_ps(ob + ooff[12 + g] + ro, _mm512_extractf32x4_ps(p[g], 3));
                    }
                } else {
                    float buf[4][16] __attribute__((aligned(64)));
                    for (int g = 0; g < 4; g++) _mm512_store_ps(buf[g], p[g]);
                    for (int q = 0; q < cnt; q++)
                        if (i < rows[q])
                            _mm_mask_storeu_ps(ob + ooff[q] + ro, cmask[q],
                                               _mm_load_ps(buf[q % 4] + 4 * (q / 4)));
                }
            }
        }
    }
    return bad != 0;
}
