/* The AVX-512 kernels of winograd_s2_dw.h: F(2x2,4x4) with the roles swapped over the four
   stride phases of a 4x4 stride-2 convolution's weight gradient. Tiles are taken 16 at a time
   in their flat order (one tile per lane): x's 10x10 windows and dy's 4x4 tiles loaded a row
   at a time and put in the tiles' lanes by transposes, the sums over tiles on the microkernel's
   tiles (k = the tiles). */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "winograd_s2_dw.h"
#include "mk_avx512.h"
#include "tile_rows_avx512.h"
#include "winograd_s2_avx512.h"
#include "winograd_s2_dw_tiles.h"

/* o := A g for 4 vectors, A = (A^T)^T = [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 0 0 0 1] */
static inline void fnn_ws2dw_a(const __m512 g[4], __m512 o[5]) {
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 s02 = _mm512_add_ps(g[0], g[2]), s13 = _mm512_add_ps(g[1], g[3]);
    o[0] = g[0];
    o[1] = _mm512_add_ps(s02, s13);
    o[2] = _mm512_sub_ps(s02, s13);
    o[3] = _mm512_fmadd_ps(two, _mm512_fmadd_ps(two, _mm512_fmadd_ps(two, g[3], g[2]), g[1]), g[0]);
    o[4] = g[3];
}

void fnn_ws2_dw_chunk(int N, int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                      long t_hi, int a, int kc, const float* x, const float* dy, float* Mk,
                      double* db8, float* V, float* G, float* Bp) {
    const int K = 4 * C, TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long HW = (long)H * W, OHW = (long)OH * OW;
    const long tpi = (long)TH * TW;
    const int gi = tpi <= kc ? (int)(kc / tpi) : 1, bt = tpi <= kc ? (int)(gi * tpi) : kc;
    int started[25] = {0};  /* Mk[e] holds a block's sums */
    const long VS = (long)K * FNN_MK_RA_LDA, GS = (long)O * kc, KO = (long)K * O;
    const int a0 = a == 1, a1 = a == 0 ? 1 : 2, ra = a == 2 ? 1 : 2;  /* row parities [a0, a1) */
    for (long b0 = t_lo; b0 < t_hi; b0 += bt) {
        const int T = t_hi - b0 < bt ? (int)(t_hi - b0) : bt, TL = (T + 15) & ~15;
        for (int g0 = 0; g0 < TL; g0 += 16) {
            int idx[16] __attribute__((aligned(64)));
            long ooff[16];
            __mmask16 rowm[10] = {0}, colm[10] = {0};
            __mmask8 km[10][16], okm[4][16];  /* valid columns 0-7 of window row r, 0-3 of dy row i */
            for (int q = 0; q < 16; q++) {
                idx[q] = 0;
                ooff[q] = 0;
                for (int r = 0; r < 10; r++) km[r][q] = 0;
                for (int i = 0; i < 4; i++) okm[i][q] = 0;
                if (g0 + q >= T) continue;
                long n, gb, ke;
                int ty, tx, k;
                fnn_ws2dw_tile(N, OH, OW, gi, b0 + g0 + q, &gb, &k, &ke, &n, &ty, &tx);
                int oy = 4 * ty, ox = 4 * tx;
                fnn_ws2_window(q, n, 8 * ty - ph, 8 * tx - pw, C, H, W, idx, rowm, colm, km);
                ooff[q] = n * O * OHW + (long)oy * OW + ox;
                int cols = OW - ox < 4 ? OW - ox : 4;
                for (int i = 0; i < 4; i++) okm[i][q] = oy + i < OH ? (__mmask8)((1u << cols) - 1) : 0;
            }
            /* V[e][p*C + c][t] = (B^T d B)[e] of phase p's 5x5 patch d[r][j] = window[2r + a][2j + b],
               p = 2a + b: the window's rows of parity a only */
            const __m512i vidx = _mm512_load_si512(idx);
            for (int c = 0; c < C; c++) {
                const float* xc = x + c * HW;
                __m512 d[10][10];  /* d[r][j] lane q: x[iy0 + r, ix0 + j] of tile q */
                for (int r = a0; r < 10; r += ra)
                    fnn_ws2_window_row(xc, r, W, idx, vidx, rowm, colm, km, d[r]);
                for (int p = 2 * a0; p < 2 * a1; p++)
                    fnn_ws2_phase(d, p >> 1, p & 1, V + (long)(p * C + c) * FNN_MK_RA_LDA + g0, VS);
            }
            /* G[e][o][t] = (A g A^T)[e] of dy's 4x4 tile g */
            for (int o = 0; o < O; o++) {
                const float* go = dy + o * OHW;
                __m512 g[4][4], s[5][4], col[4], o5[5];
                for (int i = 0; i < 4; i++) {  /* row i: 4x4 transposes per 128-bit block */
                    __m512 p[4];
                    for (int k = 0; k < 4; k++) {
                        __m512 v = _mm512_castps128_ps512(
                            _mm_maskz_loadu_ps(okm[i][k], go + ooff[k] + i * OW));
                        v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(okm[i][4 + k], go + ooff[4 + k] + i * OW), 1);
                        v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(okm[i][8 + k], go + ooff[8 + k] + i * OW), 2);
                        v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(okm[i][12 + k], go + ooff[12 + k] + i * OW), 3);
                        p[k] = v;
                    }
                    __m512 t0 = _mm512_unpacklo_ps(p[0], p[1]), t1 = _mm512_unpackhi_ps(p[0], p[1]);
                    __m512 t2 = _mm512_unpacklo_ps(p[2], p[3]), t3 = _mm512_unpackhi_ps(p[2], p[3]);
                    g[i][0] = _mm512_shuffle_ps(t0, t2, 0x44);
                    g[i][1] = _mm512_shuffle_ps(t0, t2, 0xEE);
                    g[i][2] = _mm512_shuffle_ps(t1, t3, 0x44);
                    g[i][3] = _mm512_shuffle_ps(t1, t3, 0xEE);
                }
                for (int j = 0; j < 4; j++) {  /* columns: s[.][j] = A g[.][j] */
                    for (int i = 0; i < 4; i++) col[i] = g[i][j];
                    fnn_ws2dw_a(col, o5);
                    for (int e = 0; e < 5; e++) s[e][j] = o5[e];
                }
                float* gp = G + (long)o * kc + g0;
                for (int i = 0; i < 5; i++) {  /* rows: G[i][.] = s[i][.] A^T */
                    fnn_ws2dw_a(s[i], o5);
                    for (int j = 0; j < 5; j++) _mm512_store_ps(gp + (5 * i + j) * GS, o5[j]);
                }
            }
        }
        if (db8)  /* element 6 of a tile's transform is the sum of its 4x4 dy */
            for (int o = 0; o < O; o++) {
                const float* gp = G + 6 * GS + (long)o * kc;
                __m512d acc = _mm512_loadu_pd(db8 + o * 8);
                for (int q = 0; q < TL; q += 8)
                    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_load_ps(gp + q)));
                _mm512_storeu_pd(db8 + o * 8, acc);
            }
        /* Mk[e]'s rows of phases [2a0, 2a1) (+)= V[e]'s @ G[e]^T over the block's tiles whose
           element e can be nonzero: a partial last row (column) of dy tiles has a zero row 4
           (column 4) of A g A^T (g's last row is zero), so those tiles' classes are skipped
           there; each run of tiles summed from zero, then added */
        const long r0 = 2L * a0 * C;
        const int m = 2 * (a1 - a0) * C;
        for (int e = 0; e < 25; e++) {
            int lo = -1, hi = -1;
            for (long t = b0;;) {  /* runs of the block's tiles of the classes that reach e */
                const int end = t >= b0 + T;
                long s1 = t, gb, n;
                int k = 0, ty, tx, use = 0;
                if (!end) {
                    fnn_ws2dw_tile(N, OH, OW, gi, t, &gb, &k, &s1, &n, &ty, &tx);
                    if (s1 > b0 + T) s1 = b0 + T;
                    use = (e / 5 < 4 || k < 2) && (e % 5 < 4 || k % 2 == 0);
                }
                if (use) {
                    if (lo < 0) lo = (int)(t - b0);
                    hi = (int)(s1 - b0);
                    t = s1;
                    continue;
                }
                if (lo >= 0) {
                    for (int j0 = 0; j0 < O; j0 += 32) {  /* the run [lo, hi) */
                        int nr = O - j0 < 32 ? O - j0 : 32;
                        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
                        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
                        fnn_mk_pack_t(G + e * GS, kc, j0, nr, lo, hi - lo, Bp);
                        const float* A = V + e * VS + r0 * FNN_MK_RA_LDA + lo;
                        float* Ce = Mk + e * KO + r0 * O + j0;
                        if (nr <= 16)
                            fnn_mk_tiles_ra16(m, hi - lo, A, Bp, Ce, O, started[e], m0);
                        else
                            fnn_mk_tiles_ra(m, hi - lo, A, Bp, Ce, O, started[e], m0, m1);
                    }
                    started[e] = 1;
                    lo = -1;
                }
                if (end) break;
                t = s1;
            }
        }
    }
    for (int e = 0; e < 25; e++)  /* no tile of the chunk reaches element e */
        if (!started[e])
            for (int r = 0; r < 2 * (a1 - a0) * C; r++)
                memset(Mk + e * KO + (2L * a0 * C + r) * O, 0, sizeof(float) * O);
}

int fnn_ws2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks, const float* M,
                      double* grad) {
    return fnn_ws2dw_finish(O, C, c_lo, c_hi, nchunks, M, grad);
}
