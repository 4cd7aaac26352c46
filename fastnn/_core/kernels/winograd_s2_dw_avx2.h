/* winograd_s2's AVX2 input side (8 tiles a vector): the tiles' 10x10 windows of x located and
   loaded, and their phases transformed, with winograd_s2_avx512.h's float operations (so the
   same V). Used by the weight gradient (winograd_s2_dw_avx2.c); an AVX2 forward reads and
   transforms x alike, so the two can share it. */
#ifndef FNN_WINOGRAD_S2_DW_AVX2_H
#define FNN_WINOGRAD_S2_DW_AVX2_H
#include <immintrin.h>
#include "mk_avx2.h"
#include "winograd_transforms.h"

/* 8 tiles' windows: lane q's offset idx[q] in x, rows[q] bit r where window row r is inside x;
   its columns 0-7: mode[q] 0 all inside x (a plain load), 1 a plain load at + sh[q] (inside the
   row) put in place by perm[q] and masked by cm[q], 2 a masked load (cm[q]; a row narrower
   than 8); c89[q] bit j where column 8 + j is inside x */
typedef struct {
    __m256i perm[8], cm[8];
    int idx[8], sh[8];
    unsigned short rows[8];
    unsigned char mode[8], c89[8];
} fnn_ws2dw_win8;

/* lanes without a tile: no row inside, offset 0 */
static inline void fnn_ws2dw_win8_clear(fnn_ws2dw_win8* g) {
    memset(g, 0, sizeof(*g));
}

/* lane q's 10x10 window of x (C, H, W planes a sample) at sample n, rows iy0.., columns ix0.. */
static inline void fnn_ws2dw_window8(int q, long n, int iy0, int ix0, int C, int H, int W,
                                   fnn_ws2dw_win8* g) {
    int cm[8], perm[8], full = 1, rows = 0;
    const int s = ix0 < 0 ? 0 : (ix0 > W - 8 ? W - 8 : ix0);  /* the in-row load's first column */
    g->idx[q] = (int)(n * C * ((long)H * W) + (long)iy0 * W + ix0);
    for (int j = 0; j < 8; j++) {
        cm[j] = ix0 + j >= 0 && ix0 + j < W ? -1 : 0;
        perm[j] = cm[j] ? ix0 + j - s : 0;
        full &= cm[j] != 0;
    }
    g->cm[q] = _mm256_loadu_si256((const __m256i*)cm);
    g->perm[q] = _mm256_loadu_si256((const __m256i*)perm);
    g->sh[q] = s - ix0;
    g->mode[q] = full ? 0 : (W >= 8 ? 1 : 2);
    for (int r = 0; r < 10; r++)
        if (iy0 + r >= 0 && iy0 + r < H) rows |= 1 << r;
    g->rows[q] = (unsigned short)rows;
    g->c89[q] = (unsigned char)((ix0 + 8 >= 0 && ix0 + 8 < W) | (ix0 + 9 >= 0 && ix0 + 9 < W) << 1);
}

/* columns 8 and 9 of a window row at p (bits c89: which are inside x) in lanes 0, 1 */
static inline __m128 fnn_ws2_cols89(const float* p, int c89) {
    switch (c89) {
        case 3: return _mm_castpd_ps(_mm_load_sd((const double*)p));
        case 1: return _mm_load_ss(p);
        case 2: return _mm_unpacklo_ps(_mm_setzero_ps(), _mm_load_ss(p + 1));
        default: return _mm_setzero_ps();
    }
}

/* d[j] lane q := row r of tile q's window in channel plane xc, columns j < 10 (zero outside
   x): columns 0-7 loaded as rows (fnn_ws2dw_win8's modes) and transposed into the tiles' lanes,
   columns 8 and 9 loaded in pairs and shuffled into them; the same row pf floats on (the next
   channel's, or 0: none) prefetched */
static inline void fnn_ws2_window_row8(const float* xc, int r, int W, long pf,
                                       const fnn_ws2dw_win8* g, __m256 d[10]) {
    const float* xr = xc + (long)r * W;
    __m128 c89[8];
    for (int k = 0; k < 8; k++) {
        const float* p = xr + g->idx[k];
        if (!(g->rows[k] >> r & 1)) {
            d[k] = _mm256_setzero_ps();
            c89[k] = _mm_setzero_ps();
            continue;
        }
        if (pf) _mm_prefetch((const char*)(p + pf), _MM_HINT_T0);
        if (g->mode[k] == 0) d[k] = _mm256_loadu_ps(p);
        else if (g->mode[k] == 1)
            d[k] = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(p + g->sh[k]), g->perm[k]),
                                 _mm256_castsi256_ps(g->cm[k]));
        else d[k] = _mm256_maskload_ps(p, g->cm[k]);
        c89[k] = fnn_ws2_cols89(p + 8, g->c89[k]);
    }
    fnn_mk2_tr8(d);
    /* lanes 0-3 | 4-7 of (8, 9, 8, 9) pairs, then the even and the odd elements */
    __m256 y0 = _mm256_set_m128(_mm_movelh_ps(c89[4], c89[5]), _mm_movelh_ps(c89[0], c89[1]));
    __m256 y1 = _mm256_set_m128(_mm_movelh_ps(c89[6], c89[7]), _mm_movelh_ps(c89[2], c89[3]));
    d[8] = _mm256_shuffle_ps(y0, y1, 0x88);
    d[9] = _mm256_shuffle_ps(y0, y1, 0xDD);
}

/* V[e][.] := (B^T d B)[e] of phase (a, b)'s 5x5 patch d[2r + a][2j + b] of a 10x10 window
   (element e at v + e * VS) */
static inline void fnn_ws2_phase8(__m256 d[10][10], int a, int b, float* v, long VS) {
    __m256 s[5][5], col[5], o5[5];
    for (int j = 0; j < 5; j++) {  /* columns: s[.][j] = B^T d[.][j] */
        for (int r = 0; r < 5; r++) col[r] = d[2 * r + a][2 * j + b];
        fnn_ws2_bt(col, o5);
        for (int i = 0; i < 5; i++) s[i][j] = o5[i];
    }
    for (int i = 0; i < 5; i++) {  /* rows: V[i][.] = s[i][.] B */
        fnn_ws2_bt(s[i], o5);
        for (int j = 0; j < 5; j++) _mm256_store_ps(v + (5 * i + j) * VS, o5[j]);
    }
}

#endif /* FNN_WINOGRAD_S2_DW_AVX2_H */
