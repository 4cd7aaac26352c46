/* Internals of the AVX-512 float32 microkernel (included by microkernel_avx512.c and
   conv_avx512.c only): one 8x32 register tile over a B panel packed FNN_MK_KC rows x 32 columns
   at a time into L1, the B packings, and the A-packed tile loops the convolution kernels reuse.
   Each entry of C is one sum over k in a fixed order (k in steps of FNN_MK_KC, each step's
   partial sums added into C), whatever the caller's thread split over columns or rows. */
#ifndef FNN_MK_AVX512_H
#define FNN_MK_AVX512_H
#include <immintrin.h>
#include <stdlib.h>
#include "microkernel.h"
/* C (m x n, ldc) (+)= op(A) (m x k) @ op(B) (k x n), row-major float32; op(A)[i, p] is
   A[i*lda + p] or, transposed, A[p*lda + i]; op(B)[p, j] is B[p*ldb + j] (PACK = FNN_MK_PACK_N)
   or, transposed, B[j*ldb + p] (FNN_MK_PACK_T); accumulate: C += instead of C =. The packing
   only moves values, so both B layouts give bit-identical C. */
#define FNN_MK_BODY(NAME, AIDX) FNN_MK_BODY_P(NAME, AIDX, FNN_MK_PACK_N)
#define FNN_MK_BODY_P(NAME, AIDX, PACK)                                                  \
void NAME(int m, int n, int k, const float* A, int lda, const float* B, int ldb,    \
                 float* C, int ldc, int accumulate) {                                      \
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));                                  \
    for (int j0 = 0; j0 < n; j0 += 32) {                                                   \
        int nr = n - j0 < 32 ? n - j0 : 32;                                                \
        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);                    \
        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1)); \
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {                                        \
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;                              \
            PACK(B, ldb, j0, nr, k0, kc, m0, m1, Bp);                                      \
            int acc_in = accumulate || k0 > 0;                                             \
            FNN_MK_TILES(AIDX, C)                                                          \
        }                                                                                  \
    }                                                                                      \
}
/* All m rows of C's 32-column panel j0 over one packed k step (Bp, kc deep, from k0): 8-row
   tiles, then the tail. Expects m, kc, k0, j0, ldc, acc_in, m0, m1, Bp, A, lda in scope. */
#define FNN_MK_TILES(AIDX, CC)                                                            \
    int i0 = 0;                                                                            \
    for (; i0 + 8 <= m; i0 += 8) {                                                         \
        __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71; \
        float* cr = CC + (long)i0 * ldc + j0;                                              \
        FNN_MK_LD(0) FNN_MK_LD(1) FNN_MK_LD(2) FNN_MK_LD(3)                                \
        FNN_MK_LD(4) FNN_MK_LD(5) FNN_MK_LD(6) FNN_MK_LD(7)                                \
        const float* bp = Bp;                                                              \
        for (int kk = 0; kk < kc; kk++, bp += 32) {                                        \
            __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;              \
            FNN_MK_FMA(0, AIDX) FNN_MK_FMA(1, AIDX) FNN_MK_FMA(2, AIDX) FNN_MK_FMA(3, AIDX) \
            FNN_MK_FMA(4, AIDX) FNN_MK_FMA(5, AIDX) FNN_MK_FMA(6, AIDX) FNN_MK_FMA(7, AIDX) \
        }                                                                                  \
        FNN_MK_ST(0) FNN_MK_ST(1) FNN_MK_ST(2) FNN_MK_ST(3)                                \
        FNN_MK_ST(4) FNN_MK_ST(5) FNN_MK_ST(6) FNN_MK_ST(7)                                \
    }                                                                                      \
    FNN_MK_TAIL(AIDX, CC)
/* The rows left below a multiple of 8: tiles of 4 and 2 rows (8 and 4 independent
   accumulators), then single rows; one row alone waits on its FMA chain's latency. Same
   summation order as the 8-row tile. */
#define FNN_MK_TAIL(AIDX, CC)                                                             \
    for (; i0 + 4 <= m; i0 += 4) {                                                         \
        __m512 c00, c01, c10, c11, c20, c21, c30, c31;                                     \
        float* cr = CC + (long)i0 * ldc + j0;                                              \
        FNN_MK_LD(0) FNN_MK_LD(1) FNN_MK_LD(2) FNN_MK_LD(3)                                \
        const float* bp = Bp;                                                              \
        for (int kk = 0; kk < kc; kk++, bp += 32) {                                        \
            __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;              \
            FNN_MK_FMA(0, AIDX) FNN_MK_FMA(1, AIDX) FNN_MK_FMA(2, AIDX) FNN_MK_FMA(3, AIDX) \
        }                                                                                  \
        FNN_MK_ST(0) FNN_MK_ST(1) FNN_MK_ST(2) FNN_MK_ST(3)                                \
    }                                                                                      \
    for (; i0 + 2 <= m; i0 += 2) {                                                         \
        __m512 c00, c01, c10, c11;                                                         \
        float* cr = CC + (long)i0 * ldc + j0;                                              \
        FNN_MK_LD(0) FNN_MK_LD(1)                                                          \
        const float* bp = Bp;                                                              \
        for (int kk = 0; kk < kc; kk++, bp += 32) {                                        \
            __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;              \
            FNN_MK_FMA(0, AIDX) FNN_MK_FMA(1, AIDX)                                        \
        }                                                                                  \
        FNN_MK_ST(0) FNN_MK_ST(1)                                                          \
    }                                                                                      \
    for (; i0 < m; i0++) {                                                                 \
        float* cr = CC + (long)i0 * ldc + j0;                                              \
        __m512 c0 = acc_in ? _mm512_maskz_loadu_ps(m0, cr) : _mm512_setzero_ps();          \
        __m512 c1 = acc_in ? _mm512_maskz_loadu_ps(m1, cr + 16) : _mm512_setzero_ps();     \
        for (int kk = 0; kk < kc; kk++) {                                                  \
            __m512 a0 = _mm512_set1_ps(A[AIDX(i0, k0 + kk)]);                              \
            c0 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32), c0);                    \
            c1 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32 + 16), c1);               \
        }                                                                                  \
        _mm512_mask_storeu_ps(cr, m0, c0);                                                 \
        _mm512_mask_storeu_ps(cr + 16, m1, c1);                                            \
    }
#define FNN_MK_LD(r) if (acc_in) { c##r##0 = _mm512_maskz_loadu_ps(m0, cr + (long)r * ldc); \
    c##r##1 = _mm512_maskz_loadu_ps(m1, cr + (long)r * ldc + 16); }                          \
    else { c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps(); }
#define FNN_MK_FMA(r, AIDX) a0 = _mm512_set1_ps(A[AIDX(i0 + r, k0 + kk)]);                  \
    c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
#define FNN_MK_ST(r) _mm512_mask_storeu_ps(cr + (long)r * ldc, m0, c##r##0);               \
    _mm512_mask_storeu_ps(cr + (long)r * ldc + 16, m1, c##r##1);
#define FNN_MK_IDX_N(i, p) ((long)(i) * lda + (p))
#define FNN_MK_IDX_T(i, p) ((long)(p) * lda + (i))
/* Bp[kk*32 + jj] := op(B)[k0 + kk, j0 + jj] for kk < kc, jj < nr (zero for nr <= jj < 32) */
#define FNN_MK_PACK_N(B, ldb, j0, nr, k0, kc, m0, m1, Bp)                                \
    for (int kk = 0; kk < kc; kk++) {                                                    \
        const float* src = B + (long)(k0 + kk) * ldb + j0;                               \
        _mm512_store_ps(Bp + kk * 32, _mm512_maskz_loadu_ps(m0, src));                    \
        _mm512_store_ps(Bp + kk * 32 + 16, _mm512_maskz_loadu_ps(m1, src + 16));          \
    }
#define FNN_MK_PACK_T(B, ldb, j0, nr, k0, kc, m0, m1, Bp) fnn_mk_pack_t(B, ldb, j0, nr, k0, kc, Bp)

/* 4 columns c, c+4, c+8, c+12 of a 16x16 block from the stage-2 vectors (see fnn_mk_tr16) */
#define FNN_MK_TR_COLS(c, u0, u4, u8, u12)                                                 \
    { __m512 v0 = _mm512_shuffle_f32x4(u0, u4, 0x88), v1 = _mm512_shuffle_f32x4(u0, u4, 0xDD); \
      __m512 v2 = _mm512_shuffle_f32x4(u8, u12, 0x88), v3 = _mm512_shuffle_f32x4(u8, u12, 0xDD); \
      o[c] = _mm512_shuffle_f32x4(v0, v2, 0x88); o[c + 8] = _mm512_shuffle_f32x4(v0, v2, 0xDD); \
      o[c + 4] = _mm512_shuffle_f32x4(v1, v3, 0x88); o[c + 12] = _mm512_shuffle_f32x4(v1, v3, 0xDD); }

/* o[p] lane i := r[i] lane p: a 16x16 block transposed in registers (unpack, shuffle, two
   128-bit lane shuffles: 64 shuffles per 256 values) */
static inline void fnn_mk_tr16(const __m512 r[16], __m512 o[16]) {
    __m512 t[16], u[16];
    for (int q = 0; q < 16; q += 2) {
        t[q] = _mm512_unpacklo_ps(r[q], r[q + 1]);
        t[q + 1] = _mm512_unpackhi_ps(r[q], r[q + 1]);
    }
    for (int q = 0; q < 16; q += 4) {
        u[q] = _mm512_shuffle_ps(t[q], t[q + 2], 0x44);
        u[q + 1] = _mm512_shuffle_ps(t[q], t[q + 2], 0xEE);
        u[q + 2] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        u[q + 3] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    FNN_MK_TR_COLS(0, u[0], u[4], u[8], u[12])
    FNN_MK_TR_COLS(1, u[1], u[5], u[9], u[13])
    FNN_MK_TR_COLS(2, u[2], u[6], u[10], u[14])
    FNN_MK_TR_COLS(3, u[3], u[7], u[11], u[15])
}

/* Bp[kk*32 + jj] := B[(j0 + jj)*ldb + k0 + kk] (the panel of a transposed B, e.g. the weight
   (N, K) of a dense layer, whose rows are the columns of op(B)): 16 rows x 16 k at a time, 16
   row loads transposed in registers (fnn_mk_tr16) and 16 aligned stores; rows past nr are
   zero, k past kc is never stored. */
static inline void fnn_mk_pack_t(const float* B, int ldb, int j0, int nr, int k0, int kc,
                                 float* Bp) {
    for (int h = 0; h < 2; h++) {
        int rows = nr - 16 * h;
        if (rows <= 0) {
            for (int kk = 0; kk < kc; kk++) _mm512_store_ps(Bp + kk * 32 + 16, _mm512_setzero_ps());
            continue;
        }
        if (rows > 16) rows = 16;
        const float* w0 = B + (long)(j0 + 16 * h) * ldb + k0;
        for (int kb = 0; kb < kc; kb += 16) {
            int cnt = kc - kb < 16 ? kc - kb : 16;
            __mmask16 km = cnt == 16 ? 0xFFFF : (__mmask16)((1u << cnt) - 1);
            __m512 r[16], o[16];
            for (int q = 0; q < 16; q++)
                r[q] = q < rows ? _mm512_maskz_loadu_ps(km, w0 + (long)q * ldb + kb) : _mm512_setzero_ps();
            fnn_mk_tr16(r, o);
            float* d = Bp + (long)kb * 32 + 16 * h;
            for (int q = 0; q < cnt; q++) _mm512_store_ps(d + q * 32, o[q]);
        }
    }
}

/* fnn_mk_sgemm_tn with op(A) packed: C (m x n) (+)= A.T @ B, A stored k x m (row stride lda),
   B k x n. The tile's 8 broadcasts of step kk are A[kk, i0..i0+7], 32 bytes of a new row lda
   apart for every kk: with lda a multiple of 1 KB (dy of a dense layer) those rows fall into a
   few L1 sets, evict each other and the B panel (benchmarks/decisions.md). Here
   k runs outside (in FNN_MK_KC steps) and each step's A block is copied once into 8-wide tiles
   Ap[(i0/8)*kc*8 + kk*8 + r] (malloc'd, about m*1 KB) that every 32-column panel then reads
   contiguously. Same sums in the same order as fnn_mk_sgemm_tn (bit-identical C). Returns 0
   when the buffer cannot be allocated (the caller then uses fnn_mk_sgemm_tn). */
#define FNN_MK_FMA_AP(r) a0 = _mm512_set1_ps(ap[r]);                                       \
    c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
/* C rows [0, m) x one 32-column panel (lanes m0, m1) := (or, with add, +=) op(A) @ Bp over one
   packed k step, the step's sum formed in registers from zero and then added to C (one chain of
   kc terms per step instead of one over the whole k: the weight gradient's k is a batch's
   pixels, thousands deep, and one chain that long loses accuracy):
   Ap holds op(A)'s rows in 8-row tiles, kc deep (tile t at t*kc*8, element (i, kk) at
   + kk*8 + i%8, rows past m zero), Bp kc x 32. 8-row tiles, then the last tile's rows in 4, 2
   and 1. noinline: the 16 accumulators get the whole register file whatever the caller keeps
   live (a caller gathering its panel held 8 index vectors, and gcc spilled b0/b1 inside the FMA
   loop). */
#define FNN_MK_TILE_A(R, AP0, ASTEP, FMA, ...)                                             \
    {   __m512 __VA_ARGS__;                                                                \
        float* cr = C + (long)i0 * ldc;                                                    \
        const float* bp = Bp;                                                              \
        const float* ap = AP0;                                                             \
        FNN_MK_REP##R(FNN_MK_ZERO)                                                         \
        for (int kk = 0; kk < kc; kk++, bp += 32, ap += ASTEP) {                           \
            __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;              \
            FNN_MK_REP##R(FMA)                                                             \
        }                                                                                  \
        if (add) { FNN_MK_REP##R(FNN_MK_ADD) }                                             \
        FNN_MK_REP##R(FNN_MK_ST)                                                           \
        i0 += R; }
#define FNN_MK_TILE_PA(R, ...)                                                             \
    FNN_MK_TILE_A(R, Ap + (long)(i0 / 8) * kc * 8 + i0 % 8, 8, FNN_MK_FMA_AP, __VA_ARGS__)
/* All rows of one panel in 8-row tiles, then the last tile's rows in 4, 2 and 1 (TILE: one
   tile of R rows, FNN_MK_TILE_PA or FNN_MK_TILE_RA) */
#define FNN_MK_TILES_A(TILE)                                                               \
    int i0 = 0;                                                                            \
    while (i0 + 8 <= m)                                                                    \
        TILE(8, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71) \
    if (i0 + 4 <= m) TILE(4, c00, c01, c10, c11, c20, c21, c30, c31)                       \
    if (i0 + 2 <= m) TILE(2, c00, c01, c10, c11)                                           \
    if (i0 < m) TILE(1, c00, c01)
#define FNN_MK_ZERO(r) c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps();
#define FNN_MK_ADD(r)                                                                      \
    c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, cr + (long)r * ldc));      \
    c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m1, cr + (long)r * ldc + 16));
#define FNN_MK_REP1(F) F(0)
#define FNN_MK_REP2(F) F(0) F(1)
#define FNN_MK_REP4(F) F(0) F(1) F(2) F(3)
#define FNN_MK_REP8(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)
__attribute__((noinline, unused)) static void fnn_mk_tiles_pa(int m, int kc, const float* Ap,
                                                      const float* Bp, float* C, long ldc,
                                                      int add, __mmask16 m0, __mmask16 m1) {
    FNN_MK_TILES_A(FNN_MK_TILE_PA)
}

/* fnn_mk_tiles_pa with a row-major A: rows FNN_MK_RA_LDA floats apart (a compile-time stride,
   so the 8 broadcasts of a step are one base register plus constant offsets; the 16 floats past
   a row's FNN_MK_KC keep rows of consecutive tiles off the same L1 sets). For operands packed
   by plain copies, e.g. an image's shifted rows (fnn_mk_conv_dwt_s1). */
#define FNN_MK_FMA_RA(r) a0 = _mm512_set1_ps(ap[r * FNN_MK_RA_LDA]);                       \
    c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
#define FNN_MK_TILE_RA(R, ...)                                                             \
    FNN_MK_TILE_A(R, A + (long)i0 * FNN_MK_RA_LDA, 1, FNN_MK_FMA_RA, __VA_ARGS__)
/* fnn_mk_tiles_ra for a panel of at most 16 columns (lanes m0; Bp keeps its 32-float rows):
   16-row tiles of one vector each, so the 16 idle lanes of b1 cost no FMAs (a 16-channel
   weight gradient had half its FMAs on them), then the last rows in 8, 4, 2 and 1. */
#define FNN_MK_ZERO16(r) c##r = _mm512_setzero_ps();
#define FNN_MK_FMA16(r) c##r = _mm512_fmadd_ps(_mm512_set1_ps(ap[r * FNN_MK_RA_LDA]), b0, c##r);
#define FNN_MK_ADD16(r) c##r = _mm512_add_ps(c##r, _mm512_maskz_loadu_ps(m0, cr + (long)r * ldc));
#define FNN_MK_ST16(r) _mm512_mask_storeu_ps(cr + (long)r * ldc, m0, c##r);
#define FNN_MK_REP16(F) FNN_MK_REP8(F) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
#define FNN_MK_TILE_RA16(R, ...)                                                           \
    {   __m512 __VA_ARGS__;                                                                \
        float* cr = C + (long)i0 * ldc;                                                    \
        const float* bp = Bp;                                                              \
        const float* ap = A + (long)i0 * FNN_MK_RA_LDA;                                    \
        FNN_MK_REP##R(FNN_MK_ZERO16)                                                       \
        for (int kk = 0; kk < kc; kk++, bp += 32, ap++) {                                  \
            __m512 b0 = _mm512_load_ps(bp);                                                \
            FNN_MK_REP##R(FNN_MK_FMA16)                                                    \
        }                                                                                  \
        if (add) { FNN_MK_REP##R(FNN_MK_ADD16) }                                           \
        FNN_MK_REP##R(FNN_MK_ST16)                                                         \
        i0 += R; }
__attribute__((noinline, unused)) static void fnn_mk_tiles_ra16(int m, int kc, const float* A,
                                                        const float* Bp, float* C, long ldc,
                                                        int add, __mmask16 m0) {
    int i0 = 0;
    while (i0 + 16 <= m)
        FNN_MK_TILE_RA16(16, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15)
    if (i0 + 8 <= m) FNN_MK_TILE_RA16(8, c0, c1, c2, c3, c4, c5, c6, c7)
    if (i0 + 4 <= m) FNN_MK_TILE_RA16(4, c0, c1, c2, c3)
    if (i0 + 2 <= m) FNN_MK_TILE_RA16(2, c0, c1)
    if (i0 < m) FNN_MK_TILE_RA16(1, c0)
}
__attribute__((noinline, unused)) static void fnn_mk_tiles_ra(int m, int kc, const float* A,
                                                      const float* Bp, float* C, long ldc,
                                                      int add, __mmask16 m0, __mmask16 m1) {
    FNN_MK_TILES_A(FNN_MK_TILE_RA)
}


#endif /* FNN_MK_AVX512_H */
