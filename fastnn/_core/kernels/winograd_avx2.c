/* The AVX2+FMA Winograd kernels of winograd.h (F(2x2,3x3), its weight gradient, F(4x4,3x3)):
   winograd_avx512.c's algorithms with 8 tiles per vector (the same float32 operations per
   output), edges through vmaskmov loads and small buffers. */
#include <immintrin.h>
#include <string.h>
#include "winograd.h"
#include "mk_avx2.h"
#include "winograd_weights.h"
#include "winograd_tiles.h"
#include "winograd_transforms.h"
#include "winograd_patch.h"
#include "winograd_f4_avx2.h"

int fnn_wg2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* U, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15;
    const int TH = (OH + 1) / 2, TW = (OW + 1) / 2;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * TL, MS = (long)O * TL;
    for (int g0 = 0; g0 < TL; g0 += 8) {  /* TL: the padding columns get zero patches */
        long off[8];
        unsigned char km[32];
        fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, t_lo + g0, T - g0, 8, off, km);
        for (int c = 0; c < C; c++) {
            __m256 d[4][4];
            fnn_wg2_patch(x + c * HW, off, km, W, d);
            fnn_wg2_bt(d, V + (long)c * TL + g0, VS);
        }
    }
    for (int e = 0; e < 16; e++)
        fnn_mk_sgemm_nn(O, T, C, U + (long)e * O * C, C, V + e * VS, TL, M + e * MS, TL, 0);
    const __m256 zero = _mm256_setzero_ps(), sv = _mm256_set1_ps(slope);
    int bad = 0;
    for (int g0 = 0; g0 < T; g0 += 8) {
        int cnt = T - g0 < 8 ? T - g0 : 8;
        long ooff[8];
        int rows[8], full[8];
        for (int q = 0; q < cnt; q++) {
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int oy = (int)(rem / TW) * 2, ox = (int)(rem % TW) * 2;
            ooff[q] = n * O * OHW + (long)oy * OW + ox;
            rows[q] = oy + 1 < OH ? 2 : 1;
            full[q] = ox + 1 < OW;
        }
        const int lanes = (1 << cnt) - 1;
        int whole = cnt == 8;
        for (int q = 0; q < cnt; q++) whole &= rows[q] == 2 && full[q];
        for (int o = 0; o < O; o++) {
            const float* m = M + (long)o * TL + g0;
            __m256 y[2][2], lo[2], hi[2];
            __m256 b = bias ? _mm256_set1_ps(bias[o]) : zero;
            fnn_wg2_at(m, MS, b, y);
            for (int i = 0; i < 2; i++) {
                for (int j = 0; j < 2; j++) {
                    /* y - y is 0 unless y is NaN or infinite */
                    bad |= lanes & _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(y[i][j], y[i][j]),
                                                                     zero, _CMP_NEQ_UQ));
                    if (act == 1)
                        y[i][j] = _mm256_blendv_ps(y[i][j], zero, _mm256_cmp_ps(y[i][j], zero, _CMP_LE_OQ));
                    else if (act == 2)
                        y[i][j] = _mm256_blendv_ps(_mm256_mul_ps(y[i][j], sv), y[i][j],
                                                   _mm256_cmp_ps(y[i][j], zero, _CMP_GT_OQ));
                }
                /* lo: pairs of tiles 0, 1 | 4, 5; hi: 2, 3 | 6, 7 */
                lo[i] = _mm256_unpacklo_ps(y[i][0], y[i][1]);
                hi[i] = _mm256_unpackhi_ps(y[i][0], y[i][1]);
            }
            float* ob = out + (long)o * OHW;
            if (whole) {
                for (int i = 0; i < 2; i++) {
                    long ro = (long)i * OW;
                    __m128 l0 = _mm256_castps256_ps128(lo[i]), l1 = _mm256_extractf128_ps(lo[i], 1);
                    __m128 h0 = _mm256_castps256_ps128(hi[i]), h1 = _mm256_extractf128_ps(hi[i], 1);
                    _mm_storel_pi((__m64*)(ob + ooff[0] + ro), l0);
                    _mm_storeh_pi((__m64*)(ob + ooff[1] + ro), l0);
                    _mm_storel_pi((__m64*)(ob + ooff[2] + ro), h0);
                    _mm_storeh_pi((__m64*)(ob + ooff[3] + ro), h0);
                    _mm_storel_pi((__m64*)(ob + ooff[4] + ro), l1);
                    _mm_storeh_pi((__m64*)(ob + ooff[5] + ro), l1);
                    _mm_storel_pi((__m64*)(ob + ooff[6] + ro), h1);
                    _mm_storeh_pi((__m64*)(ob + ooff[7] + ro), h1);
                }
                continue;
            }
            float buf[2][16] __attribute__((aligned(32)));
            for (int i = 0; i < 2; i++) {
                _mm256_store_ps(buf[i], lo[i]);
                _mm256_store_ps(buf[i] + 8, hi[i]);
            }
            for (int q = 0; q < cnt; q++) {
                int pos = (q & 2 ? 8 : 0) + (q & 4 ? 4 : 0) + 2 * (q & 1);
                float* p = ob + ooff[q];
                for (int i = 0; i < rows[q]; i++) {
                    if (full[q]) memcpy(p + (long)i * OW, buf[i] + pos, 2 * sizeof(float));
                    else p[(long)i * OW] = buf[i][pos];
                }
            }
        }
    }
    return bad != 0;
}

/* ---- the weight gradient (winograd.h, fnn_wg2_dw_chunk): winograd_avx512.c's algorithm with
   8 tiles per vector, the same float32 operations per entry of Mk ---- */

/* lanes first .. first + 7 that lie inside [0, n) */
static inline __m256i fnn_wg2_inside(int first, int n) {
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(first), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(-1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}

/* the 8 floats at p whose lanes first .. first + 7 lie inside [0, n), zero elsewhere: a plain
   load when all do (vmaskmovps is several times slower) */
static inline __m256 fnn_wg2_load8(const float* p, int first, int n) {
    if (first >= 0 && first + 8 <= n) return _mm256_loadu_ps(p);
    return _mm256_maskload_ps(p, fnn_wg2_inside(first, n));
}

/* the even and the odd elements of the 16 floats a, b (lane q: element 2q, 2q + 1) */
static inline void fnn_wg2_deinterleave(__m256 a, __m256 b, __m256* even, __m256* odd) {
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

/* 8 consecutive tiles in one row of tiles (a run): their patch rows are the 18 contiguous
   columns ix0 .. ix0 + 17 of 4 input rows, loaded 8 floats at a time and split into the tiles'
   lanes by even/odd shuffles instead of one masked 4-float load per tile and row. xrows: the
   rows inside the image. */
typedef struct {
    long xoff;
    int ix0, xrows;
} fnn_wg2_run8;

static inline int fnn_wg2_dw_run8(int H, int W, int C, int OH, int OW, int ph, int pw, long t0,
                                  int cnt, fnn_wg2_run8* r) {
    long n;
    int oy, ox;
    if (cnt < 8 || !fnn_wg_run(2, OH, OW, t0, 8, &n, &oy, &ox)) return 0;
    const int iy0 = oy - ph, ix0 = ox - pw;
    r->xoff = n * C * ((long)H * W) + (long)iy0 * W + ix0;
    r->ix0 = ix0;
    r->xrows = (int)fnn_wg_inside(iy0, 4, H);
    return 1;
}
/* r[p] := pixel p < cols of the 8 rows at g + i*stride (lanes i < rows; zero elsewhere):
   8 row loads transposed in registers */
static inline void fnn_wg2_dw_rows(const float* g, long stride, int rows, int cols, long pf,
                                   __m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < rows ? fnn_wg2_load8(g + i * stride, 0, cols) : _mm256_setzero_ps();
    for (int i = 0; i < rows; i++)  /* 8 strided streams: too many for the prefetchers */
        _mm_prefetch((const char*)(g + i * stride + pf), _MM_HINT_T0);
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
        t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
        u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
        u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x20);
        r[q + 4] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x31);
    }
}

void fnn_wg2_dw_chunk(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                      long t_hi, int kc, const float* x, const float* dy, float* Mk,
                      double* db8, float* V, float* P) {
    const int TH = (OH + 1) / 2, TW = (OW + 1) / 2, O16 = (O + 15) & ~15;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * FNN_MK_RA_LDA, PS = FNN_WG2_DW_PS(O, kc), CO = (long)C * O;
    for (long b0 = t_lo; b0 < t_hi; b0 += kc) {
        const int T = t_hi - b0 < kc ? (int)(t_hi - b0) : kc, TL = (T + 15) & ~15;
        long offs[FNN_MK_KC];
        unsigned char kms[FNN_MK_KC * 4];
        fnn_wg2_run8 runs[FNN_MK_KC / 8];
        int isrun[FNN_MK_KC / 8];
        for (int g0 = 0; g0 < TL; g0 += 8)
            isrun[g0 / 8] = fnn_wg2_dw_run8(H, W, C, OH, OW, ph, pw, b0 + g0, T - g0, runs + g0 / 8);
        /* the block's tile offsets and masks, then its patches a channel at a time (the
           channel's rows in order: few streams for the prefetchers) */
        fnn_wg_patches(2, C, H, W, OH, OW, ph, pw, b0, T, TL, offs, kms);
        for (int c = 0; c < C; c++)
            for (int g0 = 0; g0 < TL; g0 += 8) {
                const long* off = offs + g0;
                const unsigned char* km = kms + g0 * 4;
                const float* xc = x + c * HW;
                __m256 d[4][4];
                if (isrun[g0 / 8]) {
                    const fnn_wg2_run8* ru = runs + g0 / 8;
                    const int x0 = ru->ix0;
                    for (int r = 0; r < 4; r++) {
                        if (!(ru->xrows >> r & 1)) {
                            for (int j = 0; j < 4; j++) d[r][j] = _mm256_setzero_ps();
                            continue;
                        }
                        const float* row = xc + ru->xoff + (long)r * W;
                        if (c + 1 < C) {  /* the next channel's rows: its channel image is a
                                             fresh page, where the prefetchers start late */
                            _mm_prefetch((const char*)(row + HW), _MM_HINT_T0);
                            _mm_prefetch((const char*)(row + HW + 17), _MM_HINT_T0);
                        }
                        for (int sh = 0; sh < 2; sh++)
                            fnn_wg2_deinterleave(fnn_wg2_load8(row + 2 * sh, x0 + 2 * sh, W),
                                                 fnn_wg2_load8(row + 2 * sh + 8, x0 + 2 * sh + 8, W),
                                                 &d[r][2 * sh], &d[r][2 * sh + 1]);
                    }
                } else {
                    fnn_wg2_patch(xc, off, km, W, d);
                }
                fnn_wg2_bt(d, V + (long)c * FNN_MK_RA_LDA + g0, VS);
            }
        /* P[e] = (A' g A'^T)[e] straight in the microkernel's packed panels (winograd_avx512.c):
           a piece of up to 4 tiles of one row of tiles at a time, 8 channels' 2 dy rows
           transposed into pixel vectors (lanes o) */
        for (int q0 = 0; q0 < T;) {
            const long t = b0 + q0, n = t / tpi, rem = t % tpi;
            const int tx = (int)(rem % TW), oy = (int)(rem / TW) * 2, ox = 2 * tx;
            int R = TW - tx < 4 ? TW - tx : 4;
            if (R > T - q0) R = T - q0;
            const int cols = OW - ox < 2 * R ? OW - ox : 2 * R, row1 = oy + 1 < OH;
            for (int ob = 0; ob < O16; ob += 8) {
                const int rows = O - ob < 0 ? 0 : (O - ob < 8 ? O - ob : 8);
                const float* g0 = dy + (n * O + ob) * OHW + (long)oy * OW + ox;
                __m256 p0[8], p1[8];
                fnn_wg2_dw_rows(g0, OHW, rows, cols, 2 * OW, p0);
                if (row1) fnn_wg2_dw_rows(g0 + OW, OHW, rows, cols, 2 * OW, p1);
                else for (int i = 0; i < 8; i++) p1[i] = _mm256_setzero_ps();
                float* pp = P + (long)(ob / 32) * kc * 32 + ob % 32 + (long)q0 * 32;
                for (int q = 0; q < R; q++, pp += 32)
                    fnn_wg2_gt(p0 + 2 * q, p1 + 2 * q, pp, PS);
            }
            q0 += R;
        }
        if (db8)  /* element 5 of a tile's transform is the sum of its 2x2 dy: lane l of o's 8
                     sums the tiles l mod 8 in order, in double (as winograd_avx512.c) */
            for (int o0 = 0; o0 < O; o0 += 4) {
                const int no = O - o0 < 4 ? O - o0 : 4;
                const float* pp = P + 5 * PS + (long)(o0 / 32) * kc * 32 + o0 % 32;
                double s[8][4] = {{0}};
                __m256d acc[8];
                for (int l = 0; l < 8; l++) {
                    for (int i = 0; i < no; i++) s[l][i] = db8[(o0 + i) * 8 + l];
                    acc[l] = _mm256_loadu_pd(s[l]);
                }
                int q = 0;
                for (; q + 8 <= T; q += 8)
                    for (int l = 0; l < 8; l++)
                        acc[l] = _mm256_add_pd(acc[l], _mm256_cvtps_pd(_mm_loadu_ps(pp + (long)(q + l) * 32)));
                for (int l = 0; q + l < T; l++)
                    acc[l] = _mm256_add_pd(acc[l], _mm256_cvtps_pd(_mm_loadu_ps(pp + (long)(q + l) * 32)));
                for (int l = 0; l < 8; l++) {
                    _mm256_storeu_pd(s[l], acc[l]);
                    for (int i = 0; i < no; i++) db8[(o0 + i) * 8 + l] = s[l][i];
                }
            }
        const int acc_in = b0 > t_lo ? 2 : 0;
        for (int e = 0; e < 16; e++)
            for (int j0 = 0; j0 < O; j0 += 32) {
                int nr = O - j0 < 32 ? O - j0 : 32;
                fnn_mk2_panel(C, T, V + e * VS, FNN_MK_RA_LDA, 1, P + e * PS + (long)(j0 / 32) * kc * 32,
                              Mk + e * CO, O, j0, nr, acc_in);
            }
    }
}

/* ---- F(4x4,3x3): winograd_avx512.c's fnn_wg4_tiles with 8 tiles per vector and the same
   transforms (winograd_transforms.h), so both levels give the same bits; patches, transforms
   and stores in winograd_f4_avx2.h (shared with winograd/small4) ---- */
int fnn_wg4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* U, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15;
    const long HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * TL, MS = (long)O * TL;
    fnn_wg4_vec8 g;
    for (int g0 = 0; g0 < TL; g0 += 8) {  /* TL: the padding columns get zero patches */
        fnn_wg4_locate8(C, H, W, O, OH, OW, ph, pw, t_lo + g0, T - g0, &g);
        for (int c = 0; c < C; c++) fnn_wg4_in8(x + c * HW, &g, V + (long)c * TL + g0, VS);
    }
    for (int e = 0; e < 36; e++)
        fnn_mk_sgemm_nn(O, T, C, U + (long)e * O * C, C, V + e * VS, TL, M + e * MS, TL, 0);
    const __m256 sv = _mm256_set1_ps(slope);
    __m256 bad = _mm256_setzero_ps();
    for (int g0 = 0; g0 < T; g0 += 8) {
        __m256 gbad = _mm256_setzero_ps();
        fnn_wg4_locate8(C, H, W, O, OH, OW, ph, pw, t_lo + g0, T - g0, &g);
        for (int o = 0; o < O; o++) {
            __m256 b = bias ? _mm256_set1_ps(bias[o]) : _mm256_setzero_ps();
            gbad = _mm256_or_ps(gbad, fnn_wg4_out8_act(act, M + (long)o * TL + g0, MS, b, sv,
                                                       out + (long)o * OHW, OW, &g));
        }
        bad = _mm256_or_ps(bad, _mm256_and_ps(gbad, fnn_wg4_live8(g.cnt)));
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(bad, _mm256_setzero_ps(), _CMP_NEQ_UQ)) != 0;
}
