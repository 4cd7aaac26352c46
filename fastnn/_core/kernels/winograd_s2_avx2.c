/* The AVX2 kernels of winograd_s2.h: F(4x4,2x2) over the four stride phases of a 4x4
   stride-2 convolution (forward and backward-data), winograd_s2_avx512.c's with 8 tiles a
   vector and the same operations per tile (the transforms in winograd_transforms.h, the
   GEMMs on the microkernel, the kernel transforms' double steps). Window rows are loaded 8
   floats a tile and put in the tiles' lanes by 8x8 transposes (winograd_s2_avx2.h); the
   forward's output epilogue is winograd/f4's (winograd_f4_avx2.h: the same 4x4 tiles). */
#include <immintrin.h>
#include "winograd_s2.h"
#include "microkernel.h"
#include "mk_avx2.h"
#include "winograd_transforms.h"
#include "winograd_s2_avx2.h"
#include "winograd_f4_avx2.h"

/* ---- the kernel transforms, in double, each value rounded once (winograd_s2_avx512.c's
   operations: the bits of U do not depend on the level) ---- */

#define FNN_WS2_WB 16  /* kernel phases a block */

/* dst[e*ld + k] := (G g_k G^T)[e / 5][e % 5] for the kernel phases g_k[i][j] = g[i][j][k],
   k < nb, G = [1/2 0; 1/2 1/2; 1/6 -1/6; 1/6 1/3; 0 1]: t = G g column by column, then t G^T
   row by row, across the block */
static inline void fnn_ws2_wblock(const double g[2][2][FNN_WS2_WB], int nb, float* dst, long ld) {
    double t[5][2][FNN_WS2_WB];
    float row[5][FNN_WS2_WB];
    for (int j = 0; j < 2; j++)
        for (int k = 0; k < FNN_WS2_WB; k++) {
            const double g0 = g[0][j][k], g1 = g[1][j][k];
            t[0][j][k] = 0.5 * g0;
            t[1][j][k] = 0.5 * g0 + 0.5 * g1;
            t[2][j][k] = g0 / 6 - g1 / 6;
            t[3][j][k] = g0 / 6 + g1 / 3;
            t[4][j][k] = g1;
        }
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < FNN_WS2_WB; k++) {
            const double g0 = t[i][0][k], g1 = t[i][1][k];
            row[0][k] = (float)(0.5 * g0);
            row[1][k] = (float)(0.5 * g0 + 0.5 * g1);
            row[2][k] = (float)(g0 / 6 - g1 / 6);
            row[3][k] = (float)(g0 / 6 + g1 / 3);
            row[4][k] = (float)g1;
        }
        for (int j = 0; j < 5; j++) {
            float* d = dst + (long)(5 * i + j) * ld;
            if (nb == FNN_WS2_WB) {
                _mm256_storeu_ps(d, _mm256_loadu_ps(row[j]));
                _mm256_storeu_ps(d + 8, _mm256_loadu_ps(row[j] + 8));
            } else {
                for (int k = 0; k < nb; k++) d[k] = row[j][k];
            }
        }
    }
}

void fnn_ws2_weights(int O, int C, int o_lo, int o_hi, const float* w, float* U) {
    const long K = 4L * C, OK = (long)O * K;
    for (int o = o_lo; o < o_hi; o++) {
        const float* wo = w + (long)o * C * 16;
        for (int c = 0; c < C; c += FNN_WS2_WB) {  /* the block's filters read once */
            const int nb = C - c < FNN_WS2_WB ? C - c : FNN_WS2_WB;
            for (int p = 0; p < 4; p++) {
                const int a = p >> 1, b = p & 1;
                double g[2][2][FNN_WS2_WB];
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        for (int k = 0; k < FNN_WS2_WB; k++)
                            g[i][j][k] =
                                k < nb ? wo[(long)(c + k) * 16 + (2 * i + a) * 4 + 2 * j + b] : 0.0;
                fnn_ws2_wblock(g, nb, U + (long)o * K + (long)p * C + c, OK);
            }
        }
    }
}

void fnn_ws2_dx_weights(int O, int C, int c_lo, int c_hi, const float* w, float* U) {
    const long K = 4L * C, KO = K * O, CS = (long)C * 16;
    for (int c = c_lo; c < c_hi; c++) {
        const float* wc = w + (long)c * 16;
        for (int o = 0; o < O; o += FNN_WS2_WB) {  /* the block's filters read once */
            const int nb = O - o < FNN_WS2_WB ? O - o : FNN_WS2_WB;
            for (int p = 0; p < 4; p++) {
                const int a = p >> 1, b = p & 1;
                double g[2][2][FNN_WS2_WB];
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        for (int k = 0; k < FNN_WS2_WB; k++)
                            g[i][j][k] = k < nb ? wc[(long)(o + k) * CS + (2 * (1 - i) + a) * 4
                                                     + 2 * (1 - j) + b]
                                                : 0.0;
                fnn_ws2_wblock(g, nb, U + ((long)p * C + c) * O + o, KO);
            }
        }
    }
}

/* ---- the forward (fnn_ws2_tiles) ---- */

/* the output transform of one output channel's 8 tiles (lanes) at M column m (25 rows MS
   apart): Y = A^T m A, then bias, activation and stores (fnn_wg4_row8). Returns NaN where an
   output before the activation is NaN or infinite. */
static inline __attribute__((always_inline)) __m256 fnn_ws2_out8(
        const int act, const float* m, long MS, __m256 b, __m256 sv, float* ob, long OW,
        const fnn_wg4_vec8* g) {
    __m256 a[4][5], y[4], mv[5], bad = _mm256_setzero_ps();
    for (int j = 0; j < 5; j++) {  /* columns: a[.][j] = A^T m[.][j] */
        __m256 y4[4];
        for (int i = 0; i < 5; i++) mv[i] = _mm256_load_ps(m + (5 * i + j) * MS);
        fnn_ws2_at(mv, y4);
        for (int i = 0; i < 4; i++) a[i][j] = y4[i];
    }
    for (int i = 0; i < 4; i++) {  /* rows: y[.] = a[i][.] A, then the epilogue */
        fnn_ws2_at(a[i], y);
        bad = _mm256_or_ps(bad, fnn_wg4_row8(act, i, y, b, sv, ob + (long)i * OW, g));
    }
    return bad;
}

/* fnn_ws2_out8 with the activation a constant: one inlined copy per act */
static inline __m256 fnn_ws2_out8_act(int act, const float* m, long MS, __m256 b, __m256 sv,
                                      float* ob, long OW, const fnn_wg4_vec8* g) {
    if (act == 0) return fnn_ws2_out8(0, m, MS, b, sv, ob, OW, g);
    if (act == 1) return fnn_ws2_out8(1, m, MS, b, sv, ob, OW, g);
    return fnn_ws2_out8(2, m, MS, b, sv, ob, OW, g);
}

int fnn_ws2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                  long t_hi, const float* U, const float* x, const float* bias, float* out,
                  float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15, K = 4 * C;
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)K * TL + FNN_WS2_PAD, MS = (long)O * TL + FNN_WS2_PAD;
    /* input transform: V[e][p*C + c][t] = (B^T d B)[e] of phase p's 5x5 patch d[r][j] =
       x[iy0 + 2r + a, ix0 + 2j + b], iy0 = 8ty - ph, ix0 = 8tx - pw (zero outside; the
       padding columns up to TL: zero windows) */
    fnn_ws2_win8 win;
    for (int g0 = 0; g0 < TL; g0 += 8) {
        fnn_ws2_window8(C, H, W, TH, TW, ph, pw, t_lo + g0, T - g0, &win);
        const __m256i vidx = _mm256_load_si256((const __m256i*)win.idx);
        for (int c = 0; c < C; c++) {
            const float* xc = x + c * HW;
            __m256 d[10][10];  /* d[r][j] lane q: x[iy0 + r, ix0 + j] of tile q */
            if (c >= win.c_lo && c < win.c_hi)
                for (int r = 0; r < 10; r++) fnn_ws2_window_row8(1, xc, r, W, &win, vidx, d[r]);
            else
                for (int r = 0; r < 10; r++) fnn_ws2_window_row8(0, xc, r, W, &win, vidx, d[r]);
            for (int p = 0; p < 4; p++)
                fnn_ws2_phase(d, p >> 1, p & 1, V + ((long)p * C + c) * TL + g0, VS);
        }
    }
    /* the 25 GEMMs: M[e] (O x T) = U[e] (O x 4C) @ V[e] (4C x T) */
    for (int e = 0; e < 25; e++)
        fnn_mk_sgemm_nn(O, T, K, U + (long)e * O * K, K, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform: Y = A^T M A, then bias and activation */
    const __m256 zero = _mm256_setzero_ps(), sv = _mm256_set1_ps(slope);
    __m256 bad = zero;
    fnn_wg4_vec8 g;
    for (int g0 = 0; g0 < T; g0 += 8) {
        __m256 gbad = zero;
        fnn_wg4_outputs8(O, OH, OW, t_lo + g0, T - g0, &g);
        for (int o = 0; o < O; o++) {
            const __m256 bv = bias ? _mm256_set1_ps(bias[o]) : zero;
            gbad = _mm256_or_ps(gbad, fnn_ws2_out8_act(act, M + (long)o * TL + g0, MS, bv, sv,
                                                       out + (long)o * OHW, OW, &g));
        }
        bad = _mm256_or_ps(bad, _mm256_and_ps(gbad, fnn_wg4_live8(g.cnt)));
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(bad, zero, _CMP_NEQ_UQ)) != 0;
}

/* ---- the backward-data pass (winograd_s2.h, fnn_ws2_dx_tiles) ---- */

/* Where 8 consecutive dx tiles (the first cnt of them real) are stored: tile q's dx row k
   (dx rows y0 + k, columns x0 .. x0 + 7) at dx plane offset off[q] + k*W where bit k of
   rows[q] is set (row inside dx), its columns lo[q] .. hi[q] - 1 inside dx: all 8 (mode 0),
   at least 4 (mode 1: two 4-float stores at lo and hi - 4 of the row's lanes perm[q]), or
   fewer (mode 2: a vmaskmov store under cm[q]); rowin[k] / colin[k]: the lanes whose row
   y0 + k / column x0 + k is inside dx */
typedef struct {
    long off[8];
    __m256i cm[8], perm[8];
    int mode[8], lo[8], hi[8], rows[8];
    __m256 rowin[8], colin[8];
} fnn_ws2_dxout8;

static inline void fnn_ws2_dx_outputs8(int C, int H, int W, int TH, int TW, int rh, int rw,
                                       long t0, int cnt, fnn_ws2_dxout8* g) {
    const long tpi = (long)TH * TW, HW = (long)H * W;
    const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    int rbits[8] = {0}, cbits[8] = {0};
    for (int q = 0; q < 8; q++) {
        g->off[q] = 0;
        g->cm[q] = g->perm[q] = _mm256_setzero_si256();
        g->mode[q] = g->lo[q] = g->hi[q] = g->rows[q] = 0;
        if (q >= cnt) continue;
        long t = t0 + q, n = t / tpi, rem = t % tpi;
        int y0 = (int)(rem / TW) * 8 - rh, x0 = (int)(rem % TW) * 8 - rw;
        g->off[q] = n * C * HW + (long)y0 * W + x0;
        __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32(x0));
        g->cm[q] = _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                                    _mm256_cmpgt_epi32(_mm256_set1_epi32(W), col));
        const int lo = x0 < 0 ? -x0 : 0, hi = W - x0 < 8 ? W - x0 : 8;
        g->lo[q] = lo, g->hi[q] = hi;
        g->mode[q] = lo == 0 && hi == 8 ? 0 : (hi - lo >= 4 ? 1 : 2);
        g->perm[q] = _mm256_set_epi32(hi - 1, hi - 2, hi - 3, hi - 4, lo + 3, lo + 2, lo + 1, lo);
        for (int k = 0; k < 8; k++) {
            if (y0 + k >= 0 && y0 + k < H) g->rows[q] |= 1 << k, rbits[k] |= 1 << q;
            if (x0 + k >= 0 && x0 + k < W) cbits[k] |= 1 << q;
        }
    }
    const __m256i bit = _mm256_sllv_epi32(_mm256_set1_epi32(1), lane);
    for (int k = 0; k < 8; k++) {
        g->rowin[k] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_and_si256(_mm256_set1_epi32(rbits[k]), bit), _mm256_setzero_si256()));
        g->colin[k] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_and_si256(_mm256_set1_epi32(cbits[k]), bit), _mm256_setzero_si256()));
    }
}

/* dx's tiles of channel c (plane xc, mask plane mc) from M's phases: for each row parity a,
   phases (a, 0) and (a, 1) give each tile's 8 columns of a dx row (A^T m A, + bias), put in
   8 floats a tile by an 8x8 transpose, then through the activation's backward (act 1, 2: a
   constant where inlined) and stored under the tile's column mask. Returns NaN where a dx
   value inside dx (before the mask) is NaN or infinite. */
static inline __attribute__((always_inline)) __m256 fnn_ws2_dx_out8(
        const int act, const float* M, long MS, long PS, __m256 bv, __m256 sv, float* xc,
        const float* mc, int W, const fnn_ws2_dxout8* g) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 bad = zero;
    for (int a = 0; a < 2; a++) {
        __m256 aa[2][4][5];  /* A^T m of phases (a, 0) and (a, 1) */
        for (int b = 0; b < 2; b++) {
            const float* m = M + (2 * a + b) * PS;
            __m256 mv[5], y4[4];
            for (int j = 0; j < 5; j++) {
                for (int i = 0; i < 5; i++) mv[i] = _mm256_load_ps(m + (5 * i + j) * MS);
                fnn_ws2_at(mv, y4);
                for (int i = 0; i < 4; i++) aa[b][i][j] = y4[i];
            }
        }
        for (int i = 0; i < 4; i++) {
            const int k = 2 * i + a;
            __m256 r[8], y[4], nb = zero;
            for (int b = 0; b < 2; b++) {
                fnn_ws2_at(aa[b][i], y);
                for (int j = 0; j < 4; j++) {
                    y[j] = _mm256_add_ps(y[j], bv);
                    nb = _mm256_or_ps(nb, _mm256_and_ps(_mm256_sub_ps(y[j], y[j]),
                                                        g->colin[2 * j + b]));
                    r[2 * j + b] = y[j];
                }
            }
            bad = _mm256_or_ps(bad, _mm256_and_ps(nb, g->rowin[k]));
            fnn_mk2_tr8(r);  /* r[q]: tile q's 8 columns of dx row k */
            float* xr = xc + (long)k * W;
            for (int q = 0; q < 8; q++) {
                if (!(g->rows[q] >> k & 1)) continue;
                const int mode = g->mode[q], lo = g->lo[q], hi = g->hi[q];
                float* xq = xr + g->off[q];
                __m256 v = mode == 1 ? _mm256_permutevar8x32_ps(r[q], g->perm[q]) : r[q];
                if (act) {  /* the backward of the activation whose output is mc (lanes as v) */
                    const float* mr = mc + (long)k * W + g->off[q];
                    __m256 mk = mode == 0 ? _mm256_loadu_ps(mr)
                                : mode == 1 ? _mm256_insertf128_ps(
                                      _mm256_castps128_ps256(_mm_loadu_ps(mr + lo)),
                                      _mm_loadu_ps(mr + hi - 4), 1)
                                : _mm256_maskload_ps(mr, g->cm[q]);
                    __m256 pos = _mm256_cmp_ps(mk, zero, _CMP_GT_OQ);
                    v = act == 1 ? _mm256_and_ps(v, pos)
                                 : _mm256_blendv_ps(_mm256_mul_ps(v, sv), v, pos);
                }
                if (mode == 0) {
                    _mm256_storeu_ps(xq, v);
                } else if (mode == 1) {  /* the two stores may overlap: the same values */
                    _mm_storeu_ps(xq + lo, _mm256_castps256_ps128(v));
                    _mm_storeu_ps(xq + hi - 4, _mm256_extractf128_ps(v, 1));
                } else {
                    _mm256_maskstore_ps(xq, g->cm[q], v);
                }
            }
        }
    }
    return bad;
}

int fnn_ws2_dx_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                     long t_hi, const float* U, const float* dy, const float* bias, float* dx,
                     float* V, float* M, const float* mask, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15, K = 4 * C;
    /* phase rows from ph / 2 on: the rows above are all padding (a shift of dy by mh rows) */
    const int rh = ph & 1, rw = pw & 1, mh = ph >> 1, mw = pw >> 1;
    const int TH = ((H + rh + 1) / 2 + 3) / 4, TW = ((W + rw + 1) / 2 + 3) / 4;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)O * TL + FNN_WS2_PAD, MS = (long)K * TL + FNN_WS2_PAD;
    const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    /* input transform: V[e][o][t] = (B^T d B)[e] of dy's 5x5 patch d[r][j] =
       dy[4ty - 1 + mh + r, 4tx - 1 + mw + j] (zero outside; the padding columns up to TL:
       zero patches). Row r of tile q: 8 floats at go + off[r][q] under km[r][q] (the
       sample's first element for a row outside dy; a lane past T: lane 0's rows, no lanes),
       loaded unmasked for the channels o_lo .. o_hi - 1, whose loads all lie in the sample. */
    for (int g0 = 0; g0 < TL; g0 += 8) {
        long off[5][8], lo = 0, hi = 0;  /* the loads' extent relative to the sample's plane */
        __m256i km[5][8];
        for (int q = 0; q < 8; q++) {
            for (int r = 0; r < 5; r++)
                off[r][q] = q ? off[r][0] : 0, km[r][q] = _mm256_setzero_si256();
            if (g0 + q >= T) continue;
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int iy0 = (int)(rem / TW) * 4 - 1 + mh, ix0 = (int)(rem % TW) * 4 - 1 + mw;
            __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32(ix0));
            __m256i cm = _mm256_and_si256(
                _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                                 _mm256_cmpgt_epi32(_mm256_set1_epi32(OW), col)),
                _mm256_cmpgt_epi32(_mm256_set1_epi32(5), lane));
            for (int r = 0; r < 5; r++) {
                int in = iy0 + r >= 0 && iy0 + r < OH;
                long rel = in ? (long)(iy0 + r) * OW + ix0 : 0;
                off[r][q] = n * O * OHW + rel;
                km[r][q] = in ? cm : _mm256_setzero_si256();
                lo = rel < lo ? rel : lo;
                hi = rel + 8 > hi ? rel + 8 : hi;
            }
        }
        const int o_lo = T - g0 > 0 ? (int)((-lo + OHW - 1) / OHW) : O;
        const int o_hi = T - g0 > 0 && (long)O * OHW - hi >= 0
                             ? (int)(((long)O * OHW - hi) / OHW) + 1 : 0;
        for (int o = 0; o < O; o++) {
            const float* go = dy + o * OHW;
            const int plain = o >= o_lo && o < o_hi;
            __m256 d[5][5];
            for (int r = 0; r < 5; r++) {  /* rows of 8 floats, transposed: lane q = tile q */
                __m256 p[8];
                if (plain)
                    for (int q = 0; q < 8; q++)
                        p[q] = _mm256_and_ps(_mm256_loadu_ps(go + off[r][q]),
                                             _mm256_castsi256_ps(km[r][q]));
                else
                    for (int q = 0; q < 8; q++) p[q] = _mm256_maskload_ps(go + off[r][q], km[r][q]);
                fnn_mk2_tr8(p);
                for (int j = 0; j < 5; j++) d[r][j] = p[j];
            }
            fnn_ws2_patch(d, V + (long)o * TL + g0, VS);
        }
    }
    /* the 25 GEMMs: M[e] (4C x T) = U[e] (4C x O) @ V[e] (O x T) */
    for (int e = 0; e < 25; e++)
        fnn_mk_sgemm_nn(K, T, O, U + (long)e * K * O, O, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform per phase: Y = A^T M A, to dx rows 2(4ty + i) + a - rh, columns
       2(4tx + j) + b - rw (those inside dx) */
    const __m256 zero = _mm256_setzero_ps(), sv = _mm256_set1_ps(slope);
    if (!mask) act = 0;
    __m256 bad = zero;
    fnn_ws2_dxout8 g;
    const long PS = (long)C * TL;  /* phase p's rows of M: from p*PS */
    for (int g0 = 0; g0 < T; g0 += 8) {
        fnn_ws2_dx_outputs8(C, H, W, TH, TW, rh, rw, t_lo + g0, T - g0, &g);
        for (int c = 0; c < C; c++) {
            const float* m = M + (long)c * TL + g0;
            float* xc = dx + c * HW;
            const float* mc = act ? mask + c * HW : NULL;
            const __m256 bv = bias ? _mm256_set1_ps(bias[c]) : zero;
            __m256 cb;
            if (act == 0) cb = fnn_ws2_dx_out8(0, m, MS, PS, bv, sv, xc, mc, W, &g);
            else if (act == 1) cb = fnn_ws2_dx_out8(1, m, MS, PS, bv, sv, xc, mc, W, &g);
            else cb = fnn_ws2_dx_out8(2, m, MS, PS, bv, sv, xc, mc, W, &g);
            bad = _mm256_or_ps(bad, cb);
        }
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(bad, zero, _CMP_NEQ_UQ)) != 0;
}
