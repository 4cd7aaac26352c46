/* F(4x4,3x3)'s AVX2 patch loads, input and output transforms (winograd_transforms.h) and
   stores (8 tiles a vector, one tile per lane), shared by winograd/f4 (winograd_avx2.c) and
   winograd/small4 (winograd_small4_avx2.c) so both run the same float32 operations; the
   output tiles' stores and epilogue (fnn_wg4_outputs8, fnn_wg4_row8) also by winograd_s2's
   forward (winograd_s2_avx2.c: the same 4x4 output tiles). */
#ifndef FNN_WINOGRAD_F4_AVX2_H
#define FNN_WINOGRAD_F4_AVX2_H
#include <immintrin.h>
#include "mk_avx2.h"
#include "winograd_transforms.h"

/* Where 8 consecutive tiles (the first cnt of them real) read and write. Row r of tile q: a
   vmaskmov load at x + off[q * 6 + r] (per channel) with the lanes of its columns inside the
   image (none for a row outside it, whose offset is then the sample's first: any readable
   address). Tile q's 4x4 block is stored at ooff[q], its first rows[q] rows and cols[q]
   columns where it crosses the output's edge (cfull: all 4 rows and columns inside, whole: all
   8 tiles are). */
typedef struct {
    long off[48], ooff[8];
    __m256i km[48];
    int rows[8], cols[8], cfull[8], cnt, whole;
} fnn_wg4_vec8;

/* the output side of fnn_wg4_locate8 alone (ooff, rows, cols, cfull, cnt, whole): where 8
   consecutive 4x4 output tiles t0.. (the first cnt of them real) are stored */
static inline void fnn_wg4_outputs8(int O, int OH, int OW, long t0, int cnt, fnn_wg4_vec8* g) {
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long tpi = (long)TH * TW, OHW = (long)OH * OW;
    g->cnt = cnt < 0 ? 0 : (cnt > 8 ? 8 : cnt);
    g->whole = g->cnt == 8;
    for (int q = 0; q < 8; q++) {
        if (q >= g->cnt) {
            g->ooff[q] = 0;
            g->rows[q] = g->cols[q] = g->cfull[q] = 0;
            continue;
        }
        long t = t0 + q, n = t / tpi, rem = t % tpi;
        int oy = (int)(rem / TW) * 4, ox = (int)(rem % TW) * 4;
        g->ooff[q] = n * O * OHW + (long)oy * OW + ox;
        g->rows[q] = OH - oy < 4 ? OH - oy : 4;
        g->cols[q] = OW - ox < 4 ? OW - ox : 4;
        g->cfull[q] = g->rows[q] == 4 && g->cols[q] == 4;
        g->whole &= g->cfull[q];
    }
}

static inline void fnn_wg4_locate8(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                   long t0, int cnt, fnn_wg4_vec8* g) {
    const int TH = (OH + 3) / 4, TW = (OW + 3) / 4;
    const long tpi = (long)TH * TW, HW = (long)H * W;
    const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    fnn_wg4_outputs8(O, OH, OW, t0, cnt, g);
    for (int q = 0; q < 8; q++) {
        if (q >= g->cnt) {
            for (int r = 0; r < 6; r++) {
                g->off[q * 6 + r] = 0;
                g->km[q * 6 + r] = _mm256_setzero_si256();
            }
            continue;
        }
        long t = t0 + q, n = t / tpi, rem = t % tpi;
        int iy0 = (int)(rem / TW) * 4 - ph, ix0 = (int)(rem % TW) * 4 - pw;
        __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32(ix0));
        __m256i cm = _mm256_and_si256(
            _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(W), col)),
            _mm256_cmpgt_epi32(_mm256_set1_epi32(6), lane));
        for (int r = 0; r < 6; r++) {
            int in = iy0 + r >= 0 && iy0 + r < H;
            g->off[q * 6 + r] = in ? n * C * HW + (long)(iy0 + r) * W + ix0 : n * C * HW;
            g->km[q * 6 + r] = in ? cm : _mm256_setzero_si256();
        }
    }
}

/* v[(6i + j) * VS] := (B^T d B)[i][j] of the 8 tiles' patches d of channel plane xc (lane q:
   tile q; zero patches past cnt) */
static inline void fnn_wg4_in8(const float* xc, const fnn_wg4_vec8* g, float* v, long VS) {
    __m256 d[6][6], s[6][6], col[6], o6[6];
    for (int r = 0; r < 6; r++) {  /* p[q] = row r of tile q, transposed: lane q */
        __m256 p[8];
        for (int q = 0; q < 8; q++) p[q] = _mm256_maskload_ps(xc + g->off[q * 6 + r], g->km[q * 6 + r]);
        fnn_mk2_tr8(p);
        for (int j = 0; j < 6; j++) d[r][j] = p[j];
    }
    for (int j = 0; j < 6; j++) {  /* columns: s[.][j] = B^T d[.][j] */
        for (int r = 0; r < 6; r++) col[r] = d[r][j];
        fnn_wg4_bt(col, o6);
        for (int i = 0; i < 6; i++) s[i][j] = o6[i];
    }
    for (int i = 0; i < 6; i++) {  /* rows: V[i][.] = s[i][.] B */
        fnn_wg4_bt(s[i], o6);
        for (int j = 0; j < 6; j++) _mm256_store_ps(v + (6 * i + j) * VS, o6[j]);
    }
}

/* the first cols (1-4) floats of r4 at p (plain stores, not a masked one) */
static inline void fnn_wg4_store_part(float* p, int cols, __m128 r4) {
    if (cols == 4) {
        _mm_storeu_ps(p, r4);
        return;
    }
    if (cols >= 2) _mm_storel_pi((__m64*)p, r4);
    if (cols == 3) _mm_store_ss(p + 2, _mm_movehl_ps(r4, r4));
    else if (cols == 1) _mm_store_ss(p, r4);
}

/* row i of the 8 tiles' 4x4 outputs (y[j]: column j, lane q: tile q) := act(y + b) (act 0
   none, 1 ReLU, 2 leaky ReLU of slope sv; a constant where inlined, so its branches leave the
   loop), stored at oi + g->ooff[q] (its first cols[q] where the tile crosses the output's
   edge). Returns y + b - (y + b) or'ed over the row: NaN where one is NaN or infinite (the
   lanes past cnt are not outputs: the caller drops them). */
static inline __attribute__((always_inline)) __m256 fnn_wg4_row8(
        const int act, int i, __m256 y[4], __m256 b, __m256 sv, float* oi,
        const fnn_wg4_vec8* g) {
    const __m256 zero = _mm256_setzero_ps();
    __m256 bad = zero;
    for (int j = 0; j < 4; j++) {
        y[j] = _mm256_add_ps(y[j], b);
        bad = _mm256_or_ps(bad, _mm256_sub_ps(y[j], y[j]));
        if (act == 1)
            y[j] = _mm256_blendv_ps(y[j], zero, _mm256_cmp_ps(y[j], zero, _CMP_LE_OQ));
        else if (act == 2)
            y[j] = _mm256_blendv_ps(_mm256_mul_ps(y[j], sv), y[j],
                                    _mm256_cmp_ps(y[j], zero, _CMP_GT_OQ));
    }
    /* 4x4 transposes per 128-bit half: half h of p[k] = row i of tile 4h + k */
    __m256 t0 = _mm256_unpacklo_ps(y[0], y[1]), t1 = _mm256_unpackhi_ps(y[0], y[1]);
    __m256 t2 = _mm256_unpacklo_ps(y[2], y[3]), t3 = _mm256_unpackhi_ps(y[2], y[3]);
    __m256 p[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                   _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
    for (int k = 0; k < 4; k++)
        for (int h = 0; h < 2; h++) {
            const int q = 4 * h + k;
            __m128 r4 = h ? _mm256_extractf128_ps(p[k], 1) : _mm256_castps256_ps128(p[k]);
            if (g->whole || g->cfull[q])
                _mm_storeu_ps(oi + g->ooff[q], r4);
            else if (q < g->cnt && i < g->rows[q])
                fnn_wg4_store_part(oi + g->ooff[q], g->cols[q], r4);
        }
    return bad;
}

/* the output transform of one output channel's 8 tiles (lanes) at M column m (36 rows MS
   apart): Y = A^T m A + bias, the activation, the tiles' 4x4 blocks stored at ob +
   g->ooff[q] (fnn_wg4_row8). Returns NaN where an output is NaN or infinite. */
static inline __attribute__((always_inline)) __m256 fnn_wg4_out8(
        const int act, const float* m, long MS, __m256 b, __m256 sv, float* ob, long OW,
        const fnn_wg4_vec8* g) {
    __m256 a[4][6], y[4], mv[6], bad = _mm256_setzero_ps();
    for (int j = 0; j < 6; j++) {  /* columns: a[.][j] = A^T m[.][j] */
        __m256 y4[4];
        for (int i = 0; i < 6; i++) mv[i] = _mm256_load_ps(m + (6 * i + j) * MS);
        fnn_wg4_at(mv, y4);
        for (int i = 0; i < 4; i++) a[i][j] = y4[i];
    }
    for (int i = 0; i < 4; i++) {  /* rows: y[.] = a[i][.] A, then the epilogue */
        fnn_wg4_at(a[i], y);
        bad = _mm256_or_ps(bad, fnn_wg4_row8(act, i, y, b, sv, ob + (long)i * OW, g));
    }
    return bad;
}

/* fnn_wg4_out8 with the activation a constant: one inlined copy per act */
static inline __m256 fnn_wg4_out8_act(int act, const float* m, long MS, __m256 b, __m256 sv,
                                      float* ob, long OW, const fnn_wg4_vec8* g) {
    if (act == 0) return fnn_wg4_out8(0, m, MS, b, sv, ob, OW, g);
    if (act == 1) return fnn_wg4_out8(1, m, MS, b, sv, ob, OW, g);
    return fnn_wg4_out8(2, m, MS, b, sv, ob, OW, g);
}

/* the lanes of the first cnt tiles, as a float mask */
static inline __m256 fnn_wg4_live8(int cnt) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(cnt),
                                                  _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0)));
}

#endif /* FNN_WINOGRAD_F4_AVX2_H */
