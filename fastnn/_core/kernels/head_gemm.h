/* Small float32 GEMMs for attention's per-head products (_attention.pxi: Q K^T, P V and the
   backward's four), on the calling thread with a caller-owned scratch: no allocation and no
   packing of op(A) per call. op(B) (k x n) is copied once into 16-column panels of the scratch
   (Bp[p][kk*16 + j], columns past n zero; transposed in registers for B^T), op(A) is read in
   place (row-major or transposed, any stride: a head's block is small enough to stay in L1),
   and C is written in 6x16 register tiles. Each entry of C is one FMA chain over k in order from
   zero, the microkernel's chain (microkernel.h), so the bits are the microkernel's at every
   ISA level and thread count.

     fnn_hg_sgemm(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, scratch)
         C (m x n, ldc) := op(A) @ op(B); scratch holds FNN_HG_SCRATCH(n, k) floats, 32-byte
         aligned. Only where FNN_HG_AVAILABLE (AVX2+FMA and up). */
#ifndef FNN_HEAD_GEMM_H
#define FNN_HEAD_GEMM_H
#include <string.h>
#include "isa.h"

#define FNN_HG_AVAILABLE (FNN_ISA >= 1)
/* floats of scratch for op(B) (k x n) in 16-column panels */
#define FNN_HG_SCRATCH(n, k) ((long)(((n) + 15) / 16) * 16 * (k))

#if FNN_ISA >= 1
#include <immintrin.h>

/* R rows x 16 columns (nc real) of C at c := op(A) rows @ one B panel: op(A)[r, kk] at
   a[r*lda + kk], or a[kk*lda + r] with TA, the panel's rows 16 floats apart. R and TA are
   constants where inlined. */
static inline __attribute__((always_inline)) void fnn_hg_tile(
        const int R, const int TA, int k, const float* a, long lda, const float* bp, float* c,
        long ldc, int nc) {
    long ars = TA ? 1 : lda, acs = TA ? lda : 1;
    __m256 c0[6], c1[6];
    for (int r = 0; r < R; r++) {
        c0[r] = _mm256_setzero_ps();
        c1[r] = _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int kk = 0; kk < k; kk++, bp += 16, a += acs) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        for (int r = 0; r < R; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * ars);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    for (int r = 0; r < R; r++) {
        if (nc == 16) {
            _mm256_storeu_ps(c + r * ldc, c0[r]);
            _mm256_storeu_ps(c + r * ldc + 8, c1[r]);
        } else {
            float t[16];
            _mm256_storeu_ps(t, c0[r]);
            _mm256_storeu_ps(t + 8, c1[r]);
            memcpy(c + r * ldc, t, sizeof(float) * (size_t)nc);
        }
    }
}

/* Bp := op(B) (k x n) in 16-column panels: B[kk*ldb + j] (trans_b 0) or B[j*ldb + kk] (1);
   the transposed copy 8 x 8 at a time in registers */
static inline void fnn_hg_pack(int trans_b, int n, int k, const float* B, long ldb, float* Bp) {
    for (int p = 0; p < n; p += 16, Bp += (long)k * 16) {
        int nr = n - p < 16 ? n - p : 16;
        if (!trans_b) {
            for (int kk = 0; kk < k; kk++) {
                const float* s = B + (long)kk * ldb + p;
                float* d = Bp + kk * 16;
                if (nr == 16) {
                    _mm256_store_ps(d, _mm256_loadu_ps(s));
                    _mm256_store_ps(d + 8, _mm256_loadu_ps(s + 8));
                } else {
                    int j = 0;
                    for (; j < nr; j++) d[j] = s[j];
                    for (; j < 16; j++) d[j] = 0.0f;
                }
            }
            continue;
        }
        for (int g = 0; g < 16; g += 8) {
            int rows = nr - g < 8 ? nr - g : 8, kk = 0;
            const float* w = B + (long)(p + g) * ldb;
            if (rows == 8)
                for (; kk + 8 <= k; kk += 8) {
                    __m256 r[8];
                    for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(w + q * ldb + kk);
                    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
                    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
                    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
                    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
                    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
                    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
                    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
                    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
                    float* d = Bp + (long)kk * 16 + g;
                    _mm256_store_ps(d + 0 * 16, _mm256_permute2f128_ps(u0, u4, 0x20));
                    _mm256_store_ps(d + 1 * 16, _mm256_permute2f128_ps(u1, u5, 0x20));
                    _mm256_store_ps(d + 2 * 16, _mm256_permute2f128_ps(u2, u6, 0x20));
                    _mm256_store_ps(d + 3 * 16, _mm256_permute2f128_ps(u3, u7, 0x20));
                    _mm256_store_ps(d + 4 * 16, _mm256_permute2f128_ps(u0, u4, 0x31));
                    _mm256_store_ps(d + 5 * 16, _mm256_permute2f128_ps(u1, u5, 0x31));
                    _mm256_store_ps(d + 6 * 16, _mm256_permute2f128_ps(u2, u6, 0x31));
                    _mm256_store_ps(d + 7 * 16, _mm256_permute2f128_ps(u3, u7, 0x31));
                }
            for (; kk < k; kk++)
                for (int q = 0; q < 8; q++)
                    Bp[(long)kk * 16 + g + q] = q < rows ? w[(long)q * ldb + kk] : 0.0f;
        }
    }
}

/* every row tile of one 16-column panel (noinline: the tile gets the register file) */
static inline __attribute__((always_inline)) void fnn_hg_panel_t(
        const int TA, int m, int k, const float* A, long lda, const float* bp, float* c, long ldc,
        int nc) {
    long ars = TA ? 1 : lda;
    int i = 0;
    for (; i + 6 <= m; i += 6)
        fnn_hg_tile(6, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc);
    switch (m - i) {
        case 5: fnn_hg_tile(5, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc); break;
        case 4: fnn_hg_tile(4, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc); break;
        case 3: fnn_hg_tile(3, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc); break;
        case 2: fnn_hg_tile(2, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc); break;
        case 1: fnn_hg_tile(1, TA, k, A + i * ars, lda, bp, c + i * ldc, ldc, nc); break;
        default: break;
    }
}

/* fnn_hg_panel_t for op(A) = A or A^T (noinline: the tile gets the register file) */
__attribute__((noinline)) static void fnn_hg_panel(int trans_a, int m, int k, const float* A,
                                                   long lda, const float* bp, float* c, long ldc,
                                                   int nc) {
    if (trans_a) fnn_hg_panel_t(1, m, k, A, lda, bp, c, ldc, nc);
    else fnn_hg_panel_t(0, m, k, A, lda, bp, c, ldc, nc);
}

static inline void fnn_hg_sgemm(int trans_a, int trans_b, int m, int n, int k, const float* A,
                                long lda, const float* B, long ldb, float* C, long ldc,
                                float* scratch) {
    fnn_hg_pack(trans_b, n, k, B, ldb, scratch);
    for (int p = 0; p < n; p += 16)
        fnn_hg_panel(trans_a, m, k, A, lda, scratch + (long)(p / 16) * k * 16, C + p, ldc,
                     n - p < 16 ? n - p : 16);
}

#else  /* below AVX2 the attention tasks keep their BLAS calls */
static inline void fnn_hg_sgemm(int trans_a, int trans_b, int m, int n, int k, const float* A,
                                long lda, const float* B, long ldb, float* C, long ldc,
                                float* scratch) {
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)A; (void)lda; (void)B;
    (void)ldb; (void)C; (void)ldc; (void)scratch;
}
#endif

#endif /* FNN_HEAD_GEMM_H */
