/* winograd_s2's AVX2 input side (8 tiles a vector): the tiles' 10x10 windows of x located and
   loaded (their phases then transformed by winograd_transforms.h's fnn_ws2_phase, as at
   AVX-512). */
#ifndef FNN_WINOGRAD_S2_AVX2_H
#define FNN_WINOGRAD_S2_AVX2_H
#include <immintrin.h>
#include "mk_avx2.h"
#include "winograd_transforms.h"

/* Where 8 consecutive tiles' 10x10 windows of x (C, H, W planes a sample) lie. Row r of tile
   q: columns 0-7 by a vmaskmov load at xc + off[r][q] (channel plane xc) under km[r][q], the
   lanes of the columns inside x (none for a row outside x, whose offset is then the sample's
   first: any readable address); columns 8, 9 gathered at xc + r*W + 8 + j + idx[q] under
   gm[r][j], the lanes (tiles) whose row r and column 8 + j are inside x. Channels c_lo ..
   c_hi - 1 may load the 8 floats unmasked (then and'ed with km: the same values): for them
   every such load lies inside its sample's C planes. */
typedef struct {
    int idx[8] __attribute__((aligned(32)));
    int off[10][8];
    __m256i km[10][8];
    __m256 gm[10][2];
    int c_lo, c_hi;
} fnn_ws2_win8;

/* the windows of tiles t0 .. t0 + 7 (tile t = (n*TH + ty)*TW + tx: rows 8ty - ph.., columns
   8tx - pw..), the first cnt of them real (from cnt on: zero windows) */
static inline void fnn_ws2_window8(int C, int H, int W, int TH, int TW, int ph, int pw,
                                   long t0, int cnt, fnn_ws2_win8* g) {
    const long tpi = (long)TH * TW, HW = (long)H * W;
    const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    int gbits[10][2] = {{0}};
    long lo = 0, hi = 0;  /* the loads' extent relative to their sample's plane */
    for (int q = 0; q < 8; q++) {
        if (q >= cnt) {  /* no tile: lane 0's rows, loaded under an empty mask */
            g->idx[q] = 0;
            for (int r = 0; r < 10; r++) {
                g->off[r][q] = q ? g->off[r][0] : 0;
                g->km[r][q] = _mm256_setzero_si256();
            }
            continue;
        }
        long t = t0 + q, n = t / tpi, rem = t % tpi;
        int iy0 = (int)(rem / TW) * 8 - ph, ix0 = (int)(rem % TW) * 8 - pw;
        int base = (int)(n * C * HW);
        __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32(ix0));
        __m256i cm = _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                                      _mm256_cmpgt_epi32(_mm256_set1_epi32(W), col));
        g->idx[q] = base + iy0 * W + ix0;
        for (int r = 0; r < 10; r++) {
            int in = iy0 + r >= 0 && iy0 + r < H;
            g->off[r][q] = in ? g->idx[q] + r * W : base;
            g->km[r][q] = in ? cm : _mm256_setzero_si256();
            lo = g->off[r][q] - base < lo ? g->off[r][q] - base : lo;
            hi = g->off[r][q] - base + 8 > hi ? g->off[r][q] - base + 8 : hi;
            for (int j = 0; j < 2; j++)
                if (in && ix0 + 8 + j >= 0 && ix0 + 8 + j < W) gbits[r][j] |= 1 << q;
        }
    }
    /* plane c's loads lie in [c*HW + lo, c*HW + hi) of the sample's C*HW floats */
    g->c_lo = cnt > 0 ? (int)((-lo + HW - 1) / HW) : C;
    g->c_hi = cnt > 0 && (long)C * HW - hi >= 0 ? (int)(((long)C * HW - hi) / HW) + 1 : 0;
    for (int r = 0; r < 10; r++)
        for (int j = 0; j < 2; j++)
            g->gm[r][j] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                _mm256_and_si256(_mm256_set1_epi32(gbits[r][j]),
                                 _mm256_sllv_epi32(_mm256_set1_epi32(1), lane)),
                _mm256_setzero_si256()));
}

/* d[j] lane q := row r of tile q's window in channel plane xc, columns j < 10 (zero outside
   x): columns 0-7 loaded as rows (unmasked where whole, then and'ed with the columns' mask)
   and put in tile lanes by an 8x8 transpose, columns 8, 9 gathered */
static inline __attribute__((always_inline)) void fnn_ws2_window_row8(
        const int whole, const float* xc, int r, int W, const fnn_ws2_win8* g, __m256i vidx,
        __m256 d[10]) {
    __m256 p[8];
    for (int q = 0; q < 8; q++)
        p[q] = whole ? _mm256_and_ps(_mm256_loadu_ps(xc + g->off[r][q]),
                                     _mm256_castsi256_ps(g->km[r][q]))
                     : _mm256_maskload_ps(xc + g->off[r][q], g->km[r][q]);
    fnn_mk2_tr8(p);
    for (int j = 0; j < 8; j++) d[j] = p[j];
    const float* xr = xc + (long)r * W + 8;
    for (int j = 0; j < 2; j++)
        d[8 + j] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), xr + j, vidx, g->gm[r][j], 4);
}

#endif /* FNN_WINOGRAD_S2_AVX2_H */
