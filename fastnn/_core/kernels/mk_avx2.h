/* Internals of the AVX2+FMA float32 microkernel (included by microkernel_avx2.c and
   conv_avx2.c only): the 6x16 register tile over 32-column B panels (FNN_MK_KC rows a step),
   the panel loop over a strided op(A), and the B packings. */
#ifndef FNN_MK_AVX2_H
#define FNN_MK_AVX2_H
#include <immintrin.h>
#include <string.h>
#include "microkernel.h"

#define FNN_MK2_MR 6

/* R rows x 16 columns (nc of them real) of C at cr over kc steps of op(A) @ Bp: op(A)[r, kk]
   is a[r*ars + kk*acs], Bp rows 32 floats apart. acc_in 0: C := the sums; 1: C's entries are
   the chains' starting values (C += in one chain); 2: the sums formed from zero, then added to
   C (the weight gradients' per-step partial sums). R is a constant where this is inlined. */
static inline __attribute__((always_inline)) void fnn_mk2_tile(
        const int R, int kc, const float* a, long ars, long acs, const float* bp, float* cr,
        long ldc, int nc, int acc_in) {
    __m256 c0[FNN_MK2_MR], c1[FNN_MK2_MR];
    for (int r = 0; r < R; r++) {
        if (acc_in != 1) {
            c0[r] = _mm256_setzero_ps();
            c1[r] = _mm256_setzero_ps();
        } else if (nc == 16) {
            c0[r] = _mm256_loadu_ps(cr + r * ldc);
            c1[r] = _mm256_loadu_ps(cr + r * ldc + 8);
        } else {
            float t[16] = {0};
            memcpy(t, cr + r * ldc, sizeof(float) * (size_t)nc);
            c0[r] = _mm256_loadu_ps(t);
            c1[r] = _mm256_loadu_ps(t + 8);
        }
    }
    for (int kk = 0; kk < kc; kk++, bp += 32, a += acs) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        for (int r = 0; r < R; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * ars);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    if (acc_in == 2) {
        for (int r = 0; r < R; r++) {
            float t[16] = {0};
            const float* s = cr + r * ldc;
            if (nc < 16) { memcpy(t, s, sizeof(float) * (size_t)nc); s = t; }
            c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(s));
            c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(s + 8));
        }
    }
    for (int r = 0; r < R; r++) {
        if (nc == 16) {
            _mm256_storeu_ps(cr + r * ldc, c0[r]);
            _mm256_storeu_ps(cr + r * ldc + 8, c1[r]);
        } else {
            float t[16];
            _mm256_storeu_ps(t, c0[r]);
            _mm256_storeu_ps(t + 8, c1[r]);
            memcpy(cr + r * ldc, t, sizeof(float) * (size_t)nc);
        }
    }
}

/* fnn_mk2_tile over a whole 32-column panel (nr columns real) for R <= 2 rows: 4 vectors a
   row, so one or two rows still keep 4 or 8 FMA chains in flight (a 16-column tile of 1 or 2
   rows waits on their latency). The same sums in the same order as fnn_mk2_tile. */
static inline __attribute__((always_inline)) void fnn_mk2_tile_w(
        const int R, int kc, const float* a, long ars, long acs, const float* bp, float* cr,
        long ldc, int nr, int acc_in) {
    /* named accumulators, not an array: GCC kept an array's 8 vectors on the stack as well,
       a store of each per k step */
    __m256 c00, c01, c02, c03, c10, c11, c12, c13;
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = _mm256_setzero_ps();
    if (acc_in == 1) {
        float t[64] = {0};
        const float* s0 = cr;
        const float* s1 = cr + (R == 2 ? ldc : 0);
        if (nr < 32) {
            memcpy(t, cr, sizeof(float) * (size_t)nr);
            if (R == 2) memcpy(t + 32, cr + ldc, sizeof(float) * (size_t)nr);
            s0 = t; s1 = t + 32;
        }
        c00 = _mm256_loadu_ps(s0); c01 = _mm256_loadu_ps(s0 + 8);
        c02 = _mm256_loadu_ps(s0 + 16); c03 = _mm256_loadu_ps(s0 + 24);
        if (R == 2) {
            c10 = _mm256_loadu_ps(s1); c11 = _mm256_loadu_ps(s1 + 8);
            c12 = _mm256_loadu_ps(s1 + 16); c13 = _mm256_loadu_ps(s1 + 24);
        }
    }
    for (int kk = 0; kk < kc; kk++, bp += 32, a += acs) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        __m256 b2 = _mm256_load_ps(bp + 16), b3 = _mm256_load_ps(bp + 24);
        __m256 av = _mm256_broadcast_ss(a);
        c00 = _mm256_fmadd_ps(av, b0, c00);
        c01 = _mm256_fmadd_ps(av, b1, c01);
        c02 = _mm256_fmadd_ps(av, b2, c02);
        c03 = _mm256_fmadd_ps(av, b3, c03);
        if (R == 2) {
            av = _mm256_broadcast_ss(a + ars);
            c10 = _mm256_fmadd_ps(av, b0, c10);
            c11 = _mm256_fmadd_ps(av, b1, c11);
            c12 = _mm256_fmadd_ps(av, b2, c12);
            c13 = _mm256_fmadd_ps(av, b3, c13);
        }
    }
    for (int r = 0; r < R; r++) {
        __m256 v0 = r ? c10 : c00, v1 = r ? c11 : c01, v2 = r ? c12 : c02, v3 = r ? c13 : c03;
        float t[32] = {0};
        float* d = cr + r * ldc;
        if (acc_in == 2) {
            const float* s = d;
            if (nr < 32) { memcpy(t, d, sizeof(float) * (size_t)nr); s = t; }
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(s));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(s + 8));
            v2 = _mm256_add_ps(v2, _mm256_loadu_ps(s + 16));
            v3 = _mm256_add_ps(v3, _mm256_loadu_ps(s + 24));
        }
        float* o = nr == 32 ? d : t;
        _mm256_storeu_ps(o, v0); _mm256_storeu_ps(o + 8, v1);
        _mm256_storeu_ps(o + 16, v2); _mm256_storeu_ps(o + 24, v3);
        if (nr < 32) memcpy(d, t, sizeof(float) * (size_t)nr);
    }
}

/* All m rows of C's columns [j0, j0 + nr) (nr <= 32) over one packed k step: each 16-column
   half in 6-row tiles, then the last rows in one tile of 1..5 (1 or 2 over the whole panel
   when it is wider than 16). Row i of op(A) starts at a0 + i*ars, its k step at + kk*acs. */
__attribute__((unused)) static void fnn_mk2_panel(int m, int kc, const float* a0, long ars, long acs, const float* Bp,
                          float* C, long ldc, int j0, int nr, int acc_in) {
    int tail = m % FNN_MK2_MR, wide = nr > 16 && tail <= 2;
    for (int h = 0; h * 16 < nr; h++) {
        int nc = nr - h * 16 < 16 ? nr - h * 16 : 16;
        const float* bp = Bp + h * 16;
        float* c = C + j0 + h * 16;
        int i0 = 0;
        for (; i0 + FNN_MK2_MR <= m; i0 += FNN_MK2_MR)
            fnn_mk2_tile(FNN_MK2_MR, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc,
                         nc, acc_in);
        switch (wide ? 0 : m - i0) {
            case 5: fnn_mk2_tile(5, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 4: fnn_mk2_tile(4, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 3: fnn_mk2_tile(3, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 2: fnn_mk2_tile(2, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 1: fnn_mk2_tile(1, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            default: break;
        }
    }
    int i0 = m - tail;
    if (wide && tail == 2)
        fnn_mk2_tile_w(2, kc, a0 + i0 * ars, ars, acs, Bp, C + j0 + (long)i0 * ldc, ldc, nr, acc_in);
    else if (wide && tail == 1)
        fnn_mk2_tile_w(1, kc, a0 + i0 * ars, ars, acs, Bp, C + j0 + (long)i0 * ldc, ldc, nr, acc_in);
}

/* Bp[kk*32 + jj] := B[(k0 + kk)*ldb + j0 + jj] for jj < nr, zero for nr <= jj < 32 */
__attribute__((unused)) static void fnn_mk2_pack_n(const float* B, int ldb, int j0, int nr, int k0, int kc, float* Bp) {
    for (int kk = 0; kk < kc; kk++) {
        const float* src = B + (long)(k0 + kk) * ldb + j0;
        float* d = Bp + kk * 32;
        if (nr == 32) {
            _mm256_store_ps(d, _mm256_loadu_ps(src));
            _mm256_store_ps(d + 8, _mm256_loadu_ps(src + 8));
            _mm256_store_ps(d + 16, _mm256_loadu_ps(src + 16));
            _mm256_store_ps(d + 24, _mm256_loadu_ps(src + 24));
        } else {
            int jj = 0;
            for (; jj < nr; jj++) d[jj] = src[jj];
            for (; jj < 32; jj++) d[jj] = 0.0f;
        }
    }
}

/* 8x8 transpose of rows r[0..7] in registers */
static inline void fnn_mk2_tr8(__m256* r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Bp := columns [j0, j0 + nb) of a transposed B over steps [k0, k0 + kc) in panels W columns
   wide (kc*W floats each): panel p's [kk*W + jj] := B[(j0 + p*W + jj)*ldb + k0 + kk], zero past
   nb (e.g. a dense layer's weight rows). 8 rows x 8 k transposed in registers, the ragged rows
   and k by scalar copies. W (16 or 32) is a constant where this is inlined. */
static inline __attribute__((always_inline)) void fnn_mk2_pack_tw(
        const int W, const float* B, int ldb, int j0, int nb, int k0, int kc, float* Bp) {
    for (int p = 0; p < nb; p += W, Bp += (long)kc * W)
        for (int g = 0; g < W; g += 8) {
            int rows = nb - p - g < 8 ? nb - p - g : 8;
            int kk = 0;
            if (rows <= 0) {  /* a group past nb: zeros, a vector at a time */
                for (; kk < kc; kk++) _mm256_store_ps(Bp + (long)kk * W + g, _mm256_setzero_ps());
                continue;
            }
            const float* w0 = B + (long)(j0 + p + g) * ldb + k0;
            if (rows == 8)
                for (; kk + 8 <= kc; kk += 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(w0 + (long)q * ldb + kk);
                    fnn_mk2_tr8(r);
                    for (int q = 0; q < 8; q++) _mm256_store_ps(Bp + (long)(kk + q) * W + g, r[q]);
                }
            for (; kk < kc; kk++)
                for (int q = 0; q < 8; q++)
                    Bp[(long)kk * W + g + q] = q < rows ? w0[(long)q * ldb + kk] : 0.0f;
        }
}

/* one 32-column panel (nr <= 32 columns real): Bp[kk*32 + jj] := B[(j0 + jj)*ldb + k0 + kk] */
__attribute__((unused)) static void fnn_mk2_pack_t(const float* B, int ldb, int j0, int nr, int k0, int kc, float* Bp) {
    fnn_mk2_pack_tw(32, B, ldb, j0, nr, k0, kc, Bp);
}


/* fnn_mk2_tile with op(A)'s rows at their own pointers (row r, step kk at ar[r][kk*8]): a
   6-row tile over fnn_pack_a8's 8-row tiles, whose rows may lie in two of them. R is a
   constant where this is inlined. */
static inline __attribute__((always_inline)) void fnn_mk2_tile_rp(
        const int R, int kc, const float* const* ar, const float* bp, float* cr, long ldc, int nc,
        int acc_in) {
    __m256 c0[FNN_MK2_MR], c1[FNN_MK2_MR];
    const float* a0 = ar[0];
    long d[FNN_MK2_MR];  /* row r's offset from row 0's pointer: one base register, fixed offsets */
    for (int r = 0; r < R; r++) {
        d[r] = ar[r] - a0;
        if (acc_in != 1) {
            c0[r] = _mm256_setzero_ps();
            c1[r] = _mm256_setzero_ps();
        } else if (nc == 16) {
            c0[r] = _mm256_loadu_ps(cr + r * ldc);
            c1[r] = _mm256_loadu_ps(cr + r * ldc + 8);
        } else {
            float t[16] = {0};
            memcpy(t, cr + r * ldc, sizeof(float) * (size_t)nc);
            c0[r] = _mm256_loadu_ps(t);
            c1[r] = _mm256_loadu_ps(t + 8);
        }
    }
    for (int kk = 0; kk < kc; kk++, bp += 32, a0 += 8) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        for (int r = 0; r < R; r++) {
            __m256 av = _mm256_broadcast_ss(a0 + d[r]);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    if (acc_in == 2) {
        for (int r = 0; r < R; r++) {
            float t[16] = {0};
            const float* s = cr + r * ldc;
            if (nc < 16) { memcpy(t, s, sizeof(float) * (size_t)nc); s = t; }
            c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(s));
            c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(s + 8));
        }
    }
    for (int r = 0; r < R; r++) {
        if (nc == 16) {
            _mm256_storeu_ps(cr + r * ldc, c0[r]);
            _mm256_storeu_ps(cr + r * ldc + 8, c1[r]);
        } else {
            float t[16];
            _mm256_storeu_ps(t, c0[r]);
            _mm256_storeu_ps(t + 8, c1[r]);
            memcpy(cr + r * ldc, t, sizeof(float) * (size_t)nc);
        }
    }
}

/* All m rows of a 32-column panel (nr columns real) of C over one packed k step, op(A) packed
   in 8-row tiles kc deep (fnn_pack_a8's layout: row i, step kk at (i/8)*kc*8 + kk*8 + i%8):
   each 16-column half in 6-row tiles (12 independent accumulators: 4-row tiles' 8 chains
   just cover the FMA latency and left the FMA units idle a quarter of the time), the last
   rows in one tile of 1..5 (1 or 2 over the whole panel); acc_in as fnn_mk2_tile's.
   noinline: the tile gets the register file whatever the caller keeps live. */
__attribute__((noinline, unused)) static void fnn_mk2_panel_pa(int m, int kc, const float* Ap,
                                                              const float* Bp, float* C, long ldc,
                                                              int nr, int acc_in) {
    int tail = m % FNN_MK2_MR, wide = nr > 16 && tail > 0 && tail <= 2, mn = wide ? m - tail : m;
    const float* ar[FNN_MK2_MR];
    for (int h = 0; h * 16 < nr; h++) {
        int nc = nr - h * 16 < 16 ? nr - h * 16 : 16;
        const float* bp = Bp + h * 16;
        for (int i0 = 0; i0 < mn; i0 += FNN_MK2_MR) {
            int R = m - i0 < FNN_MK2_MR ? m - i0 : FNN_MK2_MR;
            for (int r = 0; r < R; r++)
                ar[r] = Ap + (long)((i0 + r) / 8) * kc * 8 + (i0 + r) % 8;
            float* cr = C + (long)i0 * ldc + h * 16;
            switch (R) {
                case 6: fnn_mk2_tile_rp(6, kc, ar, bp, cr, ldc, nc, acc_in); break;
                case 5: fnn_mk2_tile_rp(5, kc, ar, bp, cr, ldc, nc, acc_in); break;
                case 4: fnn_mk2_tile_rp(4, kc, ar, bp, cr, ldc, nc, acc_in); break;
                case 3: fnn_mk2_tile_rp(3, kc, ar, bp, cr, ldc, nc, acc_in); break;
                case 2: fnn_mk2_tile_rp(2, kc, ar, bp, cr, ldc, nc, acc_in); break;
                default: fnn_mk2_tile_rp(1, kc, ar, bp, cr, ldc, nc, acc_in); break;
            }
        }
    }
    if (wide) {
        const float* a = Ap + (long)(mn / 8) * kc * 8 + mn % 8;
        /* the tail's rows in one 8-row tile when they do not straddle two */
        if (tail == 2 && mn % 8 != 7) fnn_mk2_tile_w(2, kc, a, 1, 8, Bp, C + (long)mn * ldc, ldc, nr, acc_in);
        else if (tail == 2) {
            fnn_mk2_tile_w(1, kc, a, 1, 8, Bp, C + (long)mn * ldc, ldc, nr, acc_in);
            fnn_mk2_tile_w(1, kc, Ap + (long)((mn + 1) / 8) * kc * 8, 1, 8, Bp,
                           C + (long)(mn + 1) * ldc, ldc, nr, acc_in);
        } else fnn_mk2_tile_w(1, kc, a, 1, 8, Bp, C + (long)mn * ldc, ldc, nr, acc_in);
    }
}

/* The blocked GEMM's tiles: op(A) packed per (FNN_MK2_MC x kc) block into 6-row panels
   (Ap[kk*6 + r], rows past m zero) and op(B) per (kc x FNN_MK2_NC) block into 16-column panels
   (Bp[kk*16 + j], columns past n zero). A tile streams both contiguously: its B panel stays in
   L1 across the block's row tiles, the A block in L2 across the column panels. */
#define FNN_MK2_MC 144
/* the packed op(A) block's budget: FNN_MK2_MC rows at FNN_MK_KC deep, more rows when k is short */
#define FNN_MK2_A_BYTES (FNN_MK2_MC * FNN_MK_KC * 4)
#define FNN_MK2_NC 512
/* one row block: op(B) packed this many columns at a time, just before their tiles */
#define FNN_MK2_NC1 64
/* the packed op(B) of all k steps (FNN_MK2_NC columns at most) when it is at most this */
#define FNN_MK2_B_BYTES (256 << 10)

/* 6 x 16 of C at cr (mr rows and nc columns of them real) over kc steps of a packed A panel
   and B panel; acc_in 0: C := the sums, 1: C's entries start the chains. The same chains as
   fnn_mk2_tile. */
static inline __attribute__((always_inline)) void fnn_mk2_tile_pp(
        int kc, const float* ap, const float* bp, float* cr, long ldc, int mr, int nc, int acc_in) {
    __m256 c0[FNN_MK2_MR], c1[FNN_MK2_MR];
    float t[FNN_MK2_MR * 16];
    int full = mr == FNN_MK2_MR && nc == 16;
    float* d = full ? cr : t;
    long ld = full ? ldc : 16;
    if (!full && acc_in == 1) {
        memset(t, 0, sizeof t);
        for (int r = 0; r < mr; r++) memcpy(t + r * 16, cr + r * ldc, sizeof(float) * (size_t)nc);
    }
    for (int r = 0; r < FNN_MK2_MR; r++) {
        c0[r] = acc_in == 1 ? _mm256_loadu_ps(d + r * ld) : _mm256_setzero_ps();
        c1[r] = acc_in == 1 ? _mm256_loadu_ps(d + r * ld + 8) : _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int kk = 0; kk < kc; kk++, bp += 16, ap += FNN_MK2_MR) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        for (int r = 0; r < FNN_MK2_MR; r++) {
            __m256 av = _mm256_broadcast_ss(ap + r);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    for (int r = 0; r < FNN_MK2_MR; r++) {
        _mm256_storeu_ps(d + r * ld, c0[r]);
        _mm256_storeu_ps(d + r * ld + 8, c1[r]);
    }
    if (!full)
        for (int r = 0; r < mr; r++) memcpy(cr + r * ldc, t + r * 16, sizeof(float) * (size_t)nc);
}

/* Ap := rows [i0, i0 + mc) of op(A) over steps [k0, k0 + kc) in 6-row panels (kc*6 floats
   each, rows past mc zero); op(A)[i, kk] is A[i*ars + kk*acs] */
__attribute__((unused)) static void fnn_mk2_pack_a6(const float* A, long ars, long acs, int i0, int mc,
                                                   int k0, int kc, float* Ap) {
    int q = 0;
    if (ars == 1 && acs > 1) {
        /* op(A) transposed (its rows are A's columns, each step one row of A): step by step
           over all the whole panels, so each row of A is read once, front to back, and the
           row 8 steps on is fetched meanwhile; each panel's 6 floats stored as 8, the 2 extra
           overwritten by the next step's (the last step: 4 + 2). The 8-float reads stay
           inside A's rows (i0 + q + 8 <= acs). */
        int qe = mc / FNN_MK2_MR * FNN_MK2_MR;
        while (qe > 0 && i0 + qe + 2 > acs) qe -= FNN_MK2_MR;
        if (qe > 0) {
            long ps = (long)kc * FNN_MK2_MR;
            const float* a = A + i0 + (long)k0 * acs;
            for (int kk = 0; kk < kc; kk++, a += acs) {
                float* d = Ap + kk * FNN_MK2_MR;
                if (kk + 8 < kc)
                    for (int c = 0; c < qe; c += 16) __builtin_prefetch(a + 8 * acs + c, 0, 3);
                if (kk + 1 < kc)
                    for (int p = 0; p < qe; p += FNN_MK2_MR, d += ps)
                        _mm256_storeu_ps(d, _mm256_loadu_ps(a + p));
                else
                    for (int p = 0; p < qe; p += FNN_MK2_MR, d += ps) memcpy(d, a + p, sizeof(float) * FNN_MK2_MR);
            }
            q = qe;
            Ap += (long)(qe / FNN_MK2_MR) * ps;
        }
    }
    for (; q < mc; q += FNN_MK2_MR, Ap += (long)kc * FNN_MK2_MR) {
        int rows = mc - q < FNN_MK2_MR ? mc - q : FNN_MK2_MR;
        const float* a = A + (long)(i0 + q) * ars + (long)k0 * acs;
        if (rows == FNN_MK2_MR && acs == 1) {
            const float *a0 = a, *a1 = a + ars, *a2 = a + 2 * ars, *a3 = a + 3 * ars,
                        *a4 = a + 4 * ars, *a5 = a + 5 * ars;
            /* the next panel's rows, fetched while this one is transposed */
            const float* an = q + 2 * FNN_MK2_MR <= mc ? a + FNN_MK2_MR * ars : NULL;
            int kk = 0;
            /* 6 rows x 8 steps transposed in registers (two zero rows); each step's 6 floats
               stored as 8, the 2 extra overwritten by the next step's (the last step's: 4 + 2) */
            for (; kk + 8 <= kc; kk += 8) {
                if (an && kk % 16 == 0)
                    for (int r = 0; r < FNN_MK2_MR; r++) __builtin_prefetch(an + r * ars + kk, 0, 3);
                __m256 r[8] = {_mm256_loadu_ps(a0 + kk), _mm256_loadu_ps(a1 + kk),
                               _mm256_loadu_ps(a2 + kk), _mm256_loadu_ps(a3 + kk),
                               _mm256_loadu_ps(a4 + kk), _mm256_loadu_ps(a5 + kk),
                               _mm256_setzero_ps(), _mm256_setzero_ps()};
                fnn_mk2_tr8(r);
                float* d = Ap + kk * FNN_MK2_MR;
                for (int q = 0; q < 7; q++) _mm256_storeu_ps(d + q * FNN_MK2_MR, r[q]);
                _mm_storeu_ps(d + 7 * FNN_MK2_MR, _mm256_castps256_ps128(r[7]));
                _mm_storel_pi((__m64*)(d + 7 * FNN_MK2_MR + 4), _mm256_extractf128_ps(r[7], 1));
            }
            for (; kk < kc; kk++) {
                float* d = Ap + kk * FNN_MK2_MR;
                d[0] = a0[kk]; d[1] = a1[kk]; d[2] = a2[kk];
                d[3] = a3[kk]; d[4] = a4[kk]; d[5] = a5[kk];
            }
        } else if (rows == FNN_MK2_MR && ars == 1) {
            for (int kk = 0; kk < kc; kk++) memcpy(Ap + kk * FNN_MK2_MR, a + kk * acs, sizeof(float) * FNN_MK2_MR);
        } else {
            for (int kk = 0; kk < kc; kk++)
                for (int r = 0; r < FNN_MK2_MR; r++)
                    Ap[kk * FNN_MK2_MR + r] = r < rows ? a[r * ars + kk * acs] : 0.0f;
        }
    }
}

/* Bp := columns [j0, j0 + nb) of B (k x n, ldb) over steps [k0, k0 + kc) in 16-column panels
   (kc*16 floats each, columns past nb zero) */
__attribute__((unused)) static void fnn_mk2_pack_n16(const float* B, int ldb, int j0, int nb, int k0,
                                                    int kc, float* Bp) {
    int full = nb / 16 * 16;
    if (full > 16) {
        /* whole panels step by step: each row of B read once, front to back, the row about
           4 KB of reading on fetched meanwhile */
        int ahead = 1024 / full < 2 ? 2 : 1024 / full;
        for (int kk = 0; kk < kc; kk++) {
            const float* src = B + (long)(k0 + kk) * ldb + j0;
            float* d = Bp + kk * 16;
            if (kk + ahead < kc)
                for (int c = 0; c < full; c += 16) __builtin_prefetch(src + ahead * (long)ldb + c, 0, 3);
            for (int p = 0; p < full; p += 16, d += (long)kc * 16) {
                _mm256_store_ps(d, _mm256_loadu_ps(src + p));
                _mm256_store_ps(d + 8, _mm256_loadu_ps(src + p + 8));
            }
        }
        Bp += (long)(full / 16) * kc * 16;
    } else full = 0;
    for (int p = full; p < nb; p += 16, Bp += (long)kc * 16) {
        int nr = nb - p < 16 ? nb - p : 16;
        for (int kk = 0; kk < kc; kk++) {
            const float* src = B + (long)(k0 + kk) * ldb + j0 + p;
            float* d = Bp + kk * 16;
            if (kk + 64 < kc) __builtin_prefetch(src + 64L * ldb, 0, 3);
            if (nr == 16) {
                _mm256_store_ps(d, _mm256_loadu_ps(src));
                _mm256_store_ps(d + 8, _mm256_loadu_ps(src + 8));
            } else {
                int jj = 0;
                for (; jj < nr; jj++) d[jj] = src[jj];
                for (; jj < 16; jj++) d[jj] = 0.0f;
            }
        }
    }
}

/* fnn_mk2_pack_n16 from a transposed B (16-column panels) */
__attribute__((unused)) static void fnn_mk2_pack_t16(const float* B, int ldb, int j0, int nb, int k0,
                                                    int kc, float* Bp) {
    fnn_mk2_pack_tw(16, B, ldb, j0, nb, k0, kc, Bp);
}

/* C's rows [0, mc) x columns [0, nb) (+)= a packed A block @ a packed B block, kc steps:
   each 16-column panel over all the block's 6-row panels (noinline: the tile gets the
   register file) */
__attribute__((noinline, unused)) static void fnn_mk2_macro(int mc, int nb, int kc, const float* Ap,
                                                          const float* Bp, float* C, long ldc,
                                                          int acc_in) {
    for (int p = 0; p < nb; p += 16) {
        int nc = nb - p < 16 ? nb - p : 16;
        const float* bp = Bp + (long)(p / 16) * kc * 16;
        for (int q = 0; q < mc; q += FNN_MK2_MR) {
            int mr = mc - q < FNN_MK2_MR ? mc - q : FNN_MK2_MR;
            /* the next tile's rows of C on their way to L1 while this one runs (C may be in L3:
               its loads start the chains, its stores need the lines) */
            {
                int qn = q + FNN_MK2_MR, pn = p;
                if (qn >= mc) { qn = 0; pn = p + 16; }
                if (pn < nb) {
                    const float* cn = C + (long)qn * ldc + pn;
                    int rn = mc - qn < FNN_MK2_MR ? mc - qn : FNN_MK2_MR;
                    for (int r = 0; r < rn; r++) {
                        __builtin_prefetch(cn + r * ldc, 1, 3);
                        __builtin_prefetch(cn + r * ldc + 15, 1, 3);
                    }
                }
            }
            fnn_mk2_tile_pp(kc, Ap + (long)(q / FNN_MK2_MR) * kc * FNN_MK2_MR, bp,
                            C + (long)q * ldc + p, ldc, mr, nc, acc_in);
        }
    }
}

#endif /* FNN_MK_AVX2_H */
