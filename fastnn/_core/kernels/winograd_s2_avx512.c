/* The AVX-512 kernels of winograd_s2.h: F(4x4,2x2) over the four stride phases of a 4x4
   stride-2 convolution (forward and backward-data). Tiles are taken 16 at a time in their flat
   order (one tile per lane): patch rows loaded 8 floats a tile and put in the tiles' lanes by
   8x8 transposes, the GEMMs on the microkernel. */
#include <immintrin.h>
#include <string.h>
#include "winograd_s2.h"
#include "microkernel.h"
#include "tile_rows_avx512.h"
#include "winograd_s2_avx512.h"
#include "winograd_epilogue_avx512.h"

/* fpclass categories: quiet NaN, +inf, -inf, signalling NaN */
#define FNN_WS2_NONFINITE 0x99

/* t := G (g0, g1)^T, G = [1/2 0; 1/2 1/2; 1/6 -1/6; 1/6 1/3; 0 1], in double */
static inline void fnn_ws2_g(double g0, double g1, double t[5]) {
    t[0] = 0.5 * g0;
    t[1] = 0.5 * g0 + 0.5 * g1;
    t[2] = g0 / 6 - g1 / 6;
    t[3] = g0 / 6 + g1 / 3;
    t[4] = g1;
}

/* a 2x2 kernel phase g's 5x5 transform G g G^T, rounded once: u[e * OK] for e < 25 */
static inline void fnn_ws2_weight1(const double g[2][2], float* u, long OK) {
    double t[5][2], r[2][5], v[5];
    fnn_ws2_g(g[0][0], g[1][0], r[0]);  /* t = G g, column by column */
    fnn_ws2_g(g[0][1], g[1][1], r[1]);
    for (int i = 0; i < 5; i++) t[i][0] = r[0][i], t[i][1] = r[1][i];
    for (int i = 0; i < 5; i++) {  /* u = t G^T, row by row */
        fnn_ws2_g(t[i][0], t[i][1], v);
        for (int j = 0; j < 5; j++) u[(i * 5 + j) * OK] = (float)v[j];
    }
}

/* fnn_ws2_g on 8 double lanes */
static inline void fnn_ws2_g8(__m512d g0, __m512d g1, __m512d t[5]) {
    const __m512d h = _mm512_set1_pd(0.5), six = _mm512_set1_pd(6.0), three = _mm512_set1_pd(3.0);
    t[0] = _mm512_mul_pd(h, g0);
    t[1] = _mm512_add_pd(_mm512_mul_pd(h, g0), _mm512_mul_pd(h, g1));
    t[2] = _mm512_sub_pd(_mm512_div_pd(g0, six), _mm512_div_pd(g1, six));
    t[3] = _mm512_add_pd(_mm512_div_pd(g0, six), _mm512_div_pd(g1, three));
    t[4] = g1;
}

/* 8 kernel phases g (lanes) transformed as fnn_ws2_weight1 does, stored as 8 floats at
   dst + e * ld for e < 25 */
static inline void fnn_ws2_weight8(__m512d g[2][2], float* dst, long ld) {
    __m512d r[2][5], v[5];
    fnn_ws2_g8(g[0][0], g[1][0], r[0]);
    fnn_ws2_g8(g[0][1], g[1][1], r[1]);
    for (int i = 0; i < 5; i++) {
        fnn_ws2_g8(r[0][i], r[1][i], v);
        for (int j = 0; j < 5; j++) _mm256_storeu_ps(dst + (i * 5 + j) * ld, _mm512_cvtpd_ps(v[j]));
    }
}

/* 16 kernel phases, 8 lanes at a time gathered by gather(h, g) (h = 0, 1: lanes 0-7, 8-15),
   stored as rows of 16 floats (whole cache lines: the 25 rows, ld apart, may share L1 sets) */
#define FNN_WS2_WEIGHT16(gather, dst, ld)                                                      \
    do {                                                                                       \
        float rows_[25][16];                                                                   \
        for (int h_ = 0; h_ < 2; h_++) {                                                       \
            __m512d g_[2][2];                                                                  \
            gather(h_, g_);                                                                    \
            fnn_ws2_weight8(g_, rows_[0] + 8 * h_, 16);                                        \
        }                                                                                      \
        for (int e_ = 0; e_ < 25; e_++) _mm512_storeu_ps((dst) + e_ * (ld), _mm512_loadu_ps(rows_[e_])); \
    } while (0)

void fnn_ws2_weights(int O, int C, int o_lo, int o_hi, const float* w, float* U) {
    const long K = 4L * C, OK = (long)O * K;
    /* 8 channels at a time in double lanes (the operations of fnn_ws2_weight1) */
    const __m256i step = _mm256_set_epi32(112, 96, 80, 64, 48, 32, 16, 0);
    for (int o = o_lo; o < o_hi; o++)
        for (int p = 0; p < 4; p++) {
            const int a = p >> 1, b = p & 1;
            float* u = U + (long)o * K + (long)p * C;
            const float* wo = w + (long)o * C * 16;
            int c = 0;
#define FNN_WS2_GATHER(h, g)                                                                   \
            for (int i = 0; i < 2; i++)                                                        \
                for (int j = 0; j < 2; j++)                                                    \
                    g[i][j] = _mm512_cvtps_pd(_mm256_i32gather_ps(                             \
                        wo + (long)(c + 8 * (h)) * 16 + (2 * i + a) * 4 + 2 * j + b, step, 4))
            for (; c + 16 <= C; c += 16) FNN_WS2_WEIGHT16(FNN_WS2_GATHER, u + c, OK);
            for (; c + 8 <= C; c += 8) {
                __m512d g[2][2];
                FNN_WS2_GATHER(0, g);
                fnn_ws2_weight8(g, u + c, OK);
            }
#undef FNN_WS2_GATHER
            for (; c < C; c++) {
                const float* wk = wo + (long)c * 16;
                double g[2][2];
                for (int i = 0; i < 2; i++)
                    for (int v = 0; v < 2; v++) g[i][v] = wk[(2 * i + a) * 4 + 2 * v + b];
                fnn_ws2_weight1(g, u + c, OK);
            }
        }
}

int fnn_ws2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                  long t_hi, const float* U, const float* x, const float* bias, float* out,
                  float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15, K = 4 * C;
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)K * TL, MS = (long)O * TL;
    /* input transform: V[e][p*C + c][t] = (B^T d B)[e] of phase p's 5x5 patch d[r][j] =
       x[iy0 + 2r + a, ix0 + 2j + b], iy0 = 8ty - ph, ix0 = 8tx - pw (zero outside) */
    for (int g0 = 0; g0 < T; g0 += 16) {
        int idx[16] __attribute__((aligned(64)));
        __mmask16 rowm[10] = {0}, colm[10] = {0};
        __mmask8 km[10][16];  /* tile q's valid columns 0-7 of window row r */
        for (int q = 0; q < 16; q++) {
            idx[q] = 0;
            for (int r = 0; r < 10; r++) km[r][q] = 0;
            if (g0 + q >= T) continue;
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            fnn_ws2_window(q, n, (int)(rem / TW) * 8 - ph, (int)(rem % TW) * 8 - pw, C, H, W,
                           idx, rowm, colm, km);
        }
        const __m512i vidx = _mm512_load_si512(idx);
        for (int c = 0; c < C; c++) {
            const float* xc = x + c * HW;
            __m512 d[10][10];  /* d[r][j] lane q: x[iy0 + r, ix0 + j] of tile q */
            for (int r = 0; r < 10; r++)
                fnn_ws2_window_row(xc, r, W, idx, vidx, rowm, colm, km, d[r]);
            for (int p = 0; p < 4; p++)
                fnn_ws2_phase(d, p >> 1, p & 1, V + ((long)p * C + c) * TL + g0, VS);
        }
    }
    /* the 25 GEMMs: M[e] (O x T) = U[e] (O x 4C) @ V[e] (4C x T) */
    for (int e = 0; e < 25; e++)
        fnn_mk_sgemm_nn(O, T, K, U + (long)e * O * K, K, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform: Y = A^T M A, then bias and activation */
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    __mmask16 bad = 0;
    for (int g0 = 0; g0 < T; g0 += 16) {
        int cnt = T - g0 < 16 ? T - g0 : 16;
        long ooff[16];
        __mmask8 om[4][16];  /* row i of tile q: its columns inside out (none past cnt) */
        const __mmask16 lanes = (__mmask16)((1u << cnt) - 1);
        for (int q = 0; q < 16; q++) {
            ooff[q] = 0;
            for (int i = 0; i < 4; i++) om[i][q] = 0;
            if (q >= cnt) continue;
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int oy = (int)(rem / TW) * 4, ox = (int)(rem % TW) * 4;
            ooff[q] = n * O * OHW + (long)oy * OW + ox;
            int cols = OW - ox < 4 ? OW - ox : 4;
            for (int i = 0; i < 4 && oy + i < OH; i++) om[i][q] = (__mmask8)((1u << cols) - 1);
        }
        for (int o = 0; o < O; o++) {
            const float* m = M + (long)o * TL + g0;
            __m512 a[4][5], y[4][4], mv[5];
            for (int j = 0; j < 5; j++) {  /* columns: a[.][j] = A^T m[.][j] */
                __m512 y4[4];
                for (int i = 0; i < 5; i++) mv[i] = _mm512_load_ps(m + (5 * i + j) * MS);
                fnn_ws2_at(mv, y4);
                for (int i = 0; i < 4; i++) a[i][j] = y4[i];
            }
            __m512 bv = bias ? _mm512_set1_ps(bias[o]) : zero;
            float* ob = out + (long)o * OHW;
            for (int i = 0; i < 4; i++) {  /* rows: y[i][.] = a[i][.] A, bias, activation */
                fnn_ws2_at(a[i], y[i]);
                bad |= fnn_wg_epi_bias_act(y[i], bv, lanes, act, sv);
                __m512 pq[4];  /* block k of pq[g] = row i of tile 4k + g */
                fnn_wg_epi_transpose(y[i], pq);
                long ro = (long)i * OW;
#define FNN_WS2_ST(k, g) _mm_mask_storeu_ps(ob + ooff[4 * k + g] + ro, om[i][4 * k + g], \
                                            _mm512_extractf32x4_ps(pq[g], k));
                FNN_WS2_ST(0, 0) FNN_WS2_ST(0, 1) FNN_WS2_ST(0, 2) FNN_WS2_ST(0, 3)
                FNN_WS2_ST(1, 0) FNN_WS2_ST(1, 1) FNN_WS2_ST(1, 2) FNN_WS2_ST(1, 3)
                FNN_WS2_ST(2, 0) FNN_WS2_ST(2, 1) FNN_WS2_ST(2, 2) FNN_WS2_ST(2, 3)
                FNN_WS2_ST(3, 0) FNN_WS2_ST(3, 1) FNN_WS2_ST(3, 2) FNN_WS2_ST(3, 3)
#undef FNN_WS2_ST
            }
        }
    }
    return bad != 0;
}

/* ---- the backward-data pass (winograd_s2.h, fnn_ws2_dx_tiles) ---- */

void fnn_ws2_dx_weights(int O, int C, int c_lo, int c_hi, const float* w, float* U) {
    const long K = 4L * C, KO = K * O, CS = (long)C * 16;
    for (int p = 0; p < 4; p++) {
        const int a = p >> 1, b = p & 1;
        for (int c = c_lo; c < c_hi; c++) {
            float* u = U + ((long)p * C + c) * O;
            const float* wc = w + (long)c * 16;
            int o = 0;
            if (CS * 8 < (1L << 31)) {
                const __m256i step = _mm256_mullo_epi32(_mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                                                        _mm256_set1_epi32((int)CS));
#define FNN_WS2_GATHER(h, g)                                                                   \
                for (int i = 0; i < 2; i++)                                                    \
                    for (int j = 0; j < 2; j++)                                                \
                        g[i][j] = _mm512_cvtps_pd(_mm256_i32gather_ps(                         \
                            wc + (long)(o + 8 * (h)) * CS + (2 * (1 - i) + a) * 4 + 2 * (1 - j) + b, \
                            step, 4))
                for (; o + 16 <= O; o += 16) FNN_WS2_WEIGHT16(FNN_WS2_GATHER, u + o, KO);
                for (; o + 8 <= O; o += 8) {  /* 8 output channels in double lanes */
                    __m512d g[2][2];
                    FNN_WS2_GATHER(0, g);
                    fnn_ws2_weight8(g, u + o, KO);
                }
#undef FNN_WS2_GATHER
            }
            for (; o < O; o++) {
                const float* wk = wc + (long)o * CS;
                double g[2][2];
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) g[i][j] = wk[(2 * (1 - i) + a) * 4 + 2 * (1 - j) + b];
                fnn_ws2_weight1(g, u + o, KO);
            }
        }
    }
}

/* v through the backward of the ReLU (act 1) or leaky ReLU (act 2, slope s) whose output is
   m[0..7] (read under k): v where m > 0, else 0 (v * s), the float32 operations of
   relu_backward and leaky_relu_backward */
static inline __m256 fnn_ws2_dx_act(__m256 v, const float* m, __mmask8 k, int act, __m256 s) {
    const __mmask8 pos = _mm256_mask_cmp_ps_mask(k, _mm256_maskz_loadu_ps(k, m),
                                                 _mm256_setzero_ps(), _CMP_GT_OQ);
    return act == 1 ? _mm256_maskz_mov_ps(pos, v) : _mm256_mask_mov_ps(_mm256_mul_ps(v, s), pos, v);
}

int fnn_ws2_dx_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                     long t_hi, const float* U, const float* dy, const float* bias, float* dx,
                     float* V, float* M, const float* mask, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15, K = 4 * C;
    /* phase rows from ph / 2 on: the rows above are all padding (a shift of dy by mh rows) */
    const int rh = ph & 1, rw = pw & 1, mh = ph >> 1, mw = pw >> 1;
    const int TH = ((H + rh + 1) / 2 + 3) / 4, TW = ((W + rw + 1) / 2 + 3) / 4;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)O * TL, MS = (long)K * TL;
    /* input transform: V[e][o][t] = (B^T d B)[e] of dy's 5x5 patch d[r][j] =
       dy[4ty - 1 + mh + r, 4tx - 1 + mw + j] (zero outside) */
    for (int g0 = 0; g0 < T; g0 += 16) {
        long off[16];
        __mmask8 km[5][16];
        for (int q = 0; q < 16; q++) {
            off[q] = 0;
            for (int r = 0; r < 5; r++) km[r][q] = 0;
            if (g0 + q >= T) continue;
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int iy0 = (int)(rem / TW) * 4 - 1 + mh, ix0 = (int)(rem % TW) * 4 - 1 + mw;
            off[q] = n * O * OHW + (long)iy0 * OW + ix0;
            __mmask8 cm = 0;
            for (int j = 0; j < 5; j++)
                if (ix0 + j >= 0 && ix0 + j < OW) cm |= (__mmask8)(1u << j);
            for (int r = 0; r < 5; r++) km[r][q] = (iy0 + r >= 0 && iy0 + r < OH) ? cm : 0;
        }
        for (int o = 0; o < O; o++) {
            const float* go = dy + o * OHW;
            __m512 d[5][5];
            for (int r = 0; r < 5; r++) {  /* fnn_ws2_tiles' row loads, columns 0-4 */
                __m512 p[8], c8[8];
                const float* gr = go + (long)r * OW;
                for (int k = 0; k < 8; k++)
                    p[k] = _mm512_insertf32x8(
                        _mm512_castps256_ps512(_mm256_maskz_loadu_ps(km[r][k], gr + off[k])),
                        _mm256_maskz_loadu_ps(km[r][k + 8], gr + off[k + 8]), 1);
                fnn_tile_rows16(p, c8);
                for (int j = 0; j < 5; j++) d[r][j] = c8[j];
            }
            fnn_ws2_patch(d, V + (long)o * TL + g0, VS);
        }
    }
    /* the 25 GEMMs: M[e] (4C x T) = U[e] (4C x O) @ V[e] (O x T) */
    for (int e = 0; e < 25; e++)
        fnn_mk_sgemm_nn(K, T, O, U + (long)e * K * O, O, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform per phase: Y = A^T M A, to dx rows 2(4ty + i) + a - rh, columns
       2(4tx + j) + b - rw (those inside dx): per channel and row parity a, phases (a, 0) and
       (a, 1) give each tile's 8 columns of a dx row, transposed (8 vectors of 16 tiles to 8
       floats a tile) and stored under the tile's column mask */
    const __m512i lo_pair = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
    const __m512i hi_pair = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
    const __m256 sv = _mm256_set1_ps(slope);
    if (!mask) act = 0;
    __mmask16 bad = 0;
    for (int g0 = 0; g0 < T; g0 += 16) {
        int cnt = T - g0 < 16 ? T - g0 : 16;
        long off[16];
        __mmask16 rowm[8] = {0}, colm[8] = {0};  /* lanes whose dx row / column 8ty + k - rh is inside */
        __mmask8 sm[8][16];  /* tile q's columns inside dx in its row k (none past cnt) */
        for (int q = 0; q < 16; q++) {
            off[q] = 0;
            for (int k = 0; k < 8; k++) sm[k][q] = 0;
            if (q >= cnt) continue;
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int y0 = (int)(rem / TW) * 8 - rh, x0 = (int)(rem % TW) * 8 - rw;
            off[q] = n * C * HW + (long)y0 * W + x0;
            __mmask8 cm = 0;
            for (int k = 0; k < 8; k++) {
                if (y0 + k >= 0 && y0 + k < H) rowm[k] |= (__mmask16)(1u << q);
                if (x0 + k >= 0 && x0 + k < W) colm[k] |= (__mmask16)(1u << q), cm |= (__mmask8)(1u << k);
            }
            for (int k = 0; k < 8; k++) sm[k][q] = (y0 + k >= 0 && y0 + k < H) ? cm : 0;
        }
        for (int c = 0; c < C; c++) {
            float* xc = dx + c * HW;
            const float* mc = act ? mask + c * HW : NULL;
            const __m512 bv = bias ? _mm512_set1_ps(bias[c]) : _mm512_setzero_ps();
            for (int a = 0; a < 2; a++) {
                __m512 aa[2][4][5];  /* A^T m of phases (a, 0) and (a, 1) */
                for (int b = 0; b < 2; b++) {
                    const float* m = M + ((long)(2 * a + b) * C + c) * TL + g0;
                    __m512 mv[5], y4[4];
                    for (int j = 0; j < 5; j++) {
                        for (int i = 0; i < 5; i++) mv[i] = _mm512_load_ps(m + (5 * i + j) * MS);
                        fnn_ws2_at(mv, y4);
                        for (int i = 0; i < 4; i++) aa[b][i][j] = y4[i];
                    }
                }
                for (int i = 0; i < 4; i++) {
                    const int k = 2 * i + a;
                    __m512 r[8], y[4], t[8], u[8];
                    for (int b = 0; b < 2; b++) {
                        fnn_ws2_at(aa[b][i], y);
                        for (int j = 0; j < 4; j++) {
                            y[j] = _mm512_add_ps(y[j], bv);
                            bad |= _mm512_mask_fpclass_ps_mask(rowm[k] & colm[2 * j + b], y[j],
                                                               FNN_WS2_NONFINITE);
                            r[2 * j + b] = y[j];
                        }
                    }
                    /* r[col] lane q -> tile q's 8 columns: 4x4 transposes per 128-bit block
                       (u[g] block L: tile 4L + g, columns 0-3; u[g + 4]: columns 4-7), then
                       the two halves of tiles g, 4 + g (lo) and 8 + g, 12 + g (hi) paired */
                    for (int h = 0; h < 8; h += 4) {
                        t[h] = _mm512_unpacklo_ps(r[h], r[h + 1]);
                        t[h + 1] = _mm512_unpackhi_ps(r[h], r[h + 1]);
                        t[h + 2] = _mm512_unpacklo_ps(r[h + 2], r[h + 3]);
                        t[h + 3] = _mm512_unpackhi_ps(r[h + 2], r[h + 3]);
                        u[h] = _mm512_shuffle_ps(t[h], t[h + 2], 0x44);
                        u[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], 0xEE);
                        u[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0x44);
                        u[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
                    }
                    float* xr = xc + (long)k * W;
                    for (int g = 0; g < 4; g++) {
                        __m512 lo = _mm512_permutex2var_ps(u[g], lo_pair, u[g + 4]);
                        __m512 hi = _mm512_permutex2var_ps(u[g], hi_pair, u[g + 4]);
                        __m256 q[4] = {_mm512_castps512_ps256(lo), _mm512_extractf32x8_ps(lo, 1),
                                       _mm512_castps512_ps256(hi), _mm512_extractf32x8_ps(hi, 1)};
                        for (int h = 0; h < 4; h++) {
                            const int tq = g + 4 * h;
                            if (act)
                                q[h] = fnn_ws2_dx_act(q[h], mc + (long)k * W + off[tq], sm[k][tq],
                                                      act, sv);
                            _mm256_mask_storeu_ps(xr + off[tq], sm[k][tq], q[h]);
                        }
                    }
                }
            }
        }
    }
    return bad != 0;
}
