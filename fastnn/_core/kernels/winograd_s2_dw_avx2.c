/* The AVX2+FMA kernels of winograd_s2_dw.h: winograd_s2_dw_avx512.c's algorithm with 8 tiles
   per vector (the same chunks, blocks and float32 operations per entry of Mk, so the same
   bits): x's 10x10 windows and dy's 4x4 tiles loaded a row at a time and put in the tiles'
   lanes by transposes, a channel at a time over all the block's groups of 8 tiles, the sums
   over tiles on the AVX2 microkernel's 6x16 tiles (k = the tiles), each run of tiles summed
   from zero and then added as fnn_mk_tiles_ra does. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "winograd_s2_dw.h"
#include "mk_avx2.h"
#include "winograd_s2_dw_avx2.h"
#include "winograd_s2_dw_tiles.h"

/* o := A g for 4 vectors (winograd_s2_dw_avx512.c's fnn_ws2dw_a, the same operations) */
static inline void fnn_ws2dw_a8(const __m256 g[4], __m256 o[5]) {
    const __m256 two = _mm256_set1_ps(2.0f);
    __m256 s02 = _mm256_add_ps(g[0], g[2]), s13 = _mm256_add_ps(g[1], g[3]);
    o[0] = g[0];
    o[1] = _mm256_add_ps(s02, s13);
    o[2] = _mm256_sub_ps(s02, s13);
    o[3] = _mm256_fmadd_ps(two, _mm256_fmadd_ps(two, _mm256_fmadd_ps(two, g[3], g[2]), g[1]), g[0]);
    o[4] = g[3];
}

/* row i of dy's 4x4 tile at p (cols of its columns inside dy, none for a row outside); the
   same row pf floats on prefetched (0: none) */
static inline __m128 fnn_ws2dw_row4(const float* p, int in, int cols, __m128i cm, long pf) {
    if (!in) return _mm_setzero_ps();
    if (pf) _mm_prefetch((const char*)(p + pf), _MM_HINT_T0);
    return cols == 4 ? _mm_loadu_ps(p) : _mm_maskload_ps(p, cm);
}

/* C's rows [i0, i0 + 6) of a 16-column half, for the next tile: the runs' partial sums (25
   4C x O blocks) live in L3 between blocks, and the tiles' C loads would wait on them */
static inline void fnn_ws2dw_prefetch(const float* c, long ldc, int rows) {
    for (int r = 0; r < rows; r++) _mm_prefetch((const char*)(c + r * ldc), _MM_HINT_T0);
}

/* One run's product: C's columns [j0, j0 + nr) (+)= A (m x kc, rows FNN_MK_RA_LDA apart) @ Bp,
   fnn_mk2_panel's tiles (the same sums) with the next tile's C prefetched. noinline, so the
   6x16 tiles get the register file whatever the chunk keeps live. */
static __attribute__((noinline)) void fnn_ws2dw_run(int m, int kc, const float* A, const float* Bp,
                                                    float* C, int O, int j0, int nr, int acc_in) {
    const long L = FNN_MK_RA_LDA;
    int tail = m % FNN_MK2_MR, wide = nr > 16 && tail <= 2, mn = m - tail;
    for (int h = 0; h * 16 < nr; h++) {
        int nc = nr - h * 16 < 16 ? nr - h * 16 : 16;
        const float* bp = Bp + h * 16;
        float* c = C + j0 + h * 16;
        int i0 = 0;
        for (; i0 < mn; i0 += FNN_MK2_MR) {
            int next = i0 + FNN_MK2_MR < m ? i0 + FNN_MK2_MR : -1;  /* the next tile's rows */
            if (next >= 0) fnn_ws2dw_prefetch(c + (long)next * O, O, m - next < 6 ? m - next : 6);
            else if (h * 16 + 16 < nr) fnn_ws2dw_prefetch(c + 16, O, m < 6 ? m : 6);
            fnn_mk2_tile(FNN_MK2_MR, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in);
        }
        switch (wide ? 0 : m - i0) {
            case 5: fnn_mk2_tile(5, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in); break;
            case 4: fnn_mk2_tile(4, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in); break;
            case 3: fnn_mk2_tile(3, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in); break;
            case 2: fnn_mk2_tile(2, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in); break;
            case 1: fnn_mk2_tile(1, kc, A + i0 * L, L, 1, bp, c + (long)i0 * O, O, nc, acc_in); break;
            default: break;
        }
    }
    if (wide && tail == 2)
        fnn_mk2_tile_w(2, kc, A + mn * L, L, 1, Bp, C + j0 + (long)mn * O, O, nr, acc_in);
    else if (wide && tail == 1)
        fnn_mk2_tile_w(1, kc, A + mn * L, L, 1, Bp, C + j0 + (long)mn * O, O, nr, acc_in);
}

/* Where a group of 8 tiles reads x (win) and dy: tile q's 4x4 block at ooff[q], orows[q] x
   ocols[q] of it inside dy (ocm[q]: its columns) */
typedef struct {
    fnn_ws2dw_win8 win;
    long ooff[8];
    int orows[8], ocols[8];
    __m128i ocm[8];
} fnn_ws2dw_grp8;

/* V[e][p*C + c][8g + q] of the ng groups' tiles, the row parities [a0, a1) (window rows a0,
   a0 + ra, ...): a channel at a time, so its planes stay in cache for every group (and the next
   channel's rows are prefetched: the samples' planes are C*H*W apart, too many streams for the
   hardware prefetchers) */
static __attribute__((noinline)) void fnn_ws2dw_x(int C, long HW, int W, int a0, int a1, int ra,
                                                  const float* x, const fnn_ws2dw_grp8* grp,
                                                  int ng, float* V, long VS) {
    for (int c = 0; c < C; c++) {
        const float* xc = x + c * HW;
        for (int gq = 0; gq < ng; gq++) {
            __m256 d[10][10];  /* d[r][j] lane q: x[iy0 + r, ix0 + j] of tile q */
            for (int r = a0; r < 10; r += ra)
                fnn_ws2_window_row8(xc, r, W, c + 1 < C ? HW : 0, &grp[gq].win, d[r]);
            for (int p = 2 * a0; p < 2 * a1; p++)  /* phase p = 2a + b: d[2r + a][2j + b] */
                fnn_ws2_phase8(d, p >> 1, p & 1, V + (long)(p * C + c) * FNN_MK_RA_LDA + 8 * gq, VS);
        }
    }
}

/* G[e][o][8g + q] (rows kc apart) = (A g A^T)[e] of the ng groups' 4x4 tiles g of dy, a channel
   at a time */
static __attribute__((noinline)) void fnn_ws2dw_dy(int O, long OHW, int OW, const float* dy,
                                                   const fnn_ws2dw_grp8* grp, int ng, int kc,
                                                   float* G, long GS) {
    for (int o = 0; o < O; o++) {
        const float* go = dy + o * OHW;
        const long pf = o + 1 < O ? OHW : 0;  /* the next channel's rows */
        for (int gq = 0; gq < ng; gq++) {
            const fnn_ws2dw_grp8* u = grp + gq;
            __m256 g[4][4], s[5][4], col[4], o5[5];
            for (int i = 0; i < 4; i++) {  /* row i: 4x4 transposes per 128-bit half */
                __m256 p[4];
                for (int k = 0; k < 4; k++)
                    p[k] = _mm256_set_m128(
                        fnn_ws2dw_row4(go + u->ooff[4 + k] + i * OW, i < u->orows[4 + k], u->ocols[4 + k], u->ocm[4 + k], pf),
                        fnn_ws2dw_row4(go + u->ooff[k] + i * OW, i < u->orows[k], u->ocols[k], u->ocm[k], pf));
                __m256 t0 = _mm256_unpacklo_ps(p[0], p[1]), t1 = _mm256_unpackhi_ps(p[0], p[1]);
                __m256 t2 = _mm256_unpacklo_ps(p[2], p[3]), t3 = _mm256_unpackhi_ps(p[2], p[3]);
                g[i][0] = _mm256_shuffle_ps(t0, t2, 0x44);
                g[i][1] = _mm256_shuffle_ps(t0, t2, 0xEE);
                g[i][2] = _mm256_shuffle_ps(t1, t3, 0x44);
                g[i][3] = _mm256_shuffle_ps(t1, t3, 0xEE);
            }
            for (int j = 0; j < 4; j++) {  /* columns: s[.][j] = A g[.][j] */
                for (int i = 0; i < 4; i++) col[i] = g[i][j];
                fnn_ws2dw_a8(col, o5);
                for (int e = 0; e < 5; e++) s[e][j] = o5[e];
            }
            float* gp = G + (long)o * kc + 8 * gq;
            for (int i = 0; i < 5; i++) {  /* rows: G[i][.] = s[i][.] A^T */
                fnn_ws2dw_a8(s[i], o5);
                for (int j = 0; j < 5; j++) _mm256_store_ps(gp + (5 * i + j) * GS, o5[j]);
            }
        }
    }
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
    fnn_ws2dw_grp8 grp[FNN_MK_KC / 8];
    for (long b0 = t_lo; b0 < t_hi; b0 += bt) {
        const int T = t_hi - b0 < bt ? (int)(t_hi - b0) : bt, TL = (T + 15) & ~15;
        for (int g0 = 0; g0 < TL; g0 += 8) {  /* where the groups of 8 tiles read */
            fnn_ws2dw_grp8* u = grp + g0 / 8;
            fnn_ws2dw_win8_clear(&u->win);
            for (int q = 0; q < 8; q++) {
                u->ooff[q] = 0;
                u->orows[q] = u->ocols[q] = 0;
                u->ocm[q] = _mm_setzero_si128();
                if (g0 + q >= T) continue;
                long n, gb, ke;
                int ty, tx, k;
                fnn_ws2dw_tile(N, OH, OW, gi, b0 + g0 + q, &gb, &k, &ke, &n, &ty, &tx);
                int oy = 4 * ty, ox = 4 * tx;
                fnn_ws2dw_window8(q, n, 8 * ty - ph, 8 * tx - pw, C, H, W, &u->win);
                u->ooff[q] = n * O * OHW + (long)oy * OW + ox;
                u->orows[q] = OH - oy < 4 ? OH - oy : 4;
                u->ocols[q] = OW - ox < 4 ? OW - ox : 4;
                u->ocm[q] = _mm_cmpgt_epi32(_mm_set1_epi32(u->ocols[q]), _mm_set_epi32(3, 2, 1, 0));
            }
        }
        fnn_ws2dw_x(C, HW, W, a0, a1, ra, x, grp, TL / 8, V, VS);
        fnn_ws2dw_dy(O, OHW, OW, dy, grp, TL / 8, kc, G, GS);
        if (db8)  /* element 6 of a tile's transform is the sum of its 4x4 dy: lane l of o's 8
                     sums the tiles l mod 8 in order, in double (as winograd_s2_dw_avx512.c) */
            for (int o = 0; o < O; o++) {
                const float* gp = G + 6 * GS + (long)o * kc;
                __m256d lo = _mm256_loadu_pd(db8 + o * 8), hi = _mm256_loadu_pd(db8 + o * 8 + 4);
                for (int q = 0; q < TL; q += 8) {
                    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_load_ps(gp + q)));
                    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_load_ps(gp + q + 4)));
                }
                _mm256_storeu_pd(db8 + o * 8, lo);
                _mm256_storeu_pd(db8 + o * 8 + 4, hi);
            }
        /* Mk[e]'s rows of phases [2a0, 2a1) (+)= V[e]'s @ G[e]^T over the block's tiles whose
           element e can be nonzero (winograd_s2_dw_avx512.c: the classes of partial last rows
           and columns skipped where their element is zero); each run summed from zero, then
           added */
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
                        fnn_mk2_pack_t(G + e * GS, kc, j0, nr, lo, hi - lo, Bp);
                        fnn_ws2dw_run(m, hi - lo, V + e * VS + r0 * FNN_MK_RA_LDA + lo, Bp,
                                      Mk + e * KO + r0 * O, O, j0, nr, started[e] ? 2 : 0);
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
