/* The AVX2+FMA float32 microkernel entry points of microkernel.h. B is packed into the same
   32-column panels as the AVX-512 kernel (Bp[kk*32 + jj], FNN_MK_KC rows a step, zero past the
   matrix) and each panel runs as two 16-column halves in 6x16 register tiles (12 accumulators,
   two B vectors, one broadcast: 15 of the 16 ymm registers). Each entry of C is one FMA chain
   over k in order, C reloaded per k step: the AVX-512 kernel's order, so the same bits. Edges
   go through small buffers (plain loads and stores, which AddressSanitizer sees), not masks. */
#include <immintrin.h>
#include <string.h>
#include "microkernel.h"

#define FNN_MK2_MR 6

/* R rows x 16 columns (nc of them real) of C at cr (+)= op(A) @ Bp over kc steps: op(A)[r, kk]
   is a[r*ars + kk*acs], Bp rows 32 floats apart. R is a constant where this is inlined. */
static inline __attribute__((always_inline)) void fnn_mk2_tile(
        const int R, int kc, const float* a, long ars, long acs, const float* bp, float* cr,
        long ldc, int nc, int acc_in) {
    __m256 c0[FNN_MK2_MR], c1[FNN_MK2_MR];
    for (int r = 0; r < R; r++) {
        if (!acc_in) {
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

/* All m rows of C's columns [j0, j0 + nr) (nr <= 32) over one packed k step: each 16-column
   half in 6-row tiles, then the last rows in one tile of 1..5. Row i of op(A) starts at
   a0 + i*ars, its k step at + kk*acs. */
static void fnn_mk2_panel(int m, int kc, const float* a0, long ars, long acs, const float* Bp,
                          float* C, long ldc, int j0, int nr, int acc_in) {
    for (int h = 0; h * 16 < nr; h++) {
        int nc = nr - h * 16 < 16 ? nr - h * 16 : 16;
        const float* bp = Bp + h * 16;
        float* c = C + j0 + h * 16;
        int i0 = 0;
        for (; i0 + FNN_MK2_MR <= m; i0 += FNN_MK2_MR)
            fnn_mk2_tile(FNN_MK2_MR, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc,
                         nc, acc_in);
        switch (m - i0) {
            case 5: fnn_mk2_tile(5, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 4: fnn_mk2_tile(4, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 3: fnn_mk2_tile(3, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 2: fnn_mk2_tile(2, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            case 1: fnn_mk2_tile(1, kc, a0 + i0 * ars, ars, acs, bp, c + (long)i0 * ldc, ldc, nc, acc_in); break;
            default: break;
        }
    }
}

/* Bp[kk*32 + jj] := B[(k0 + kk)*ldb + j0 + jj] for jj < nr, zero for nr <= jj < 32 */
static void fnn_mk2_pack_n(const float* B, int ldb, int j0, int nr, int k0, int kc, float* Bp) {
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

/* Bp[kk*32 + jj] := B[(j0 + jj)*ldb + k0 + kk] (a transposed B, e.g. a dense layer's weight):
   8 rows x 8 k transposed in registers, the ragged rows and k by scalar copies; zero past nr */
static void fnn_mk2_pack_t(const float* B, int ldb, int j0, int nr, int k0, int kc, float* Bp) {
    for (int g = 0; g < 32; g += 8) {
        int rows = nr - g < 8 ? nr - g : 8;
        int kk = 0;
        if (rows == 8) {
            const float* w0 = B + (long)(j0 + g) * ldb + k0;
            for (; kk + 8 <= kc; kk += 8) {
                __m256 r[8];
                for (int q = 0; q < 8; q++) r[q] = _mm256_loadu_ps(w0 + (long)q * ldb + kk);
                fnn_mk2_tr8(r);
                for (int q = 0; q < 8; q++) _mm256_store_ps(Bp + (long)(kk + q) * 32 + g, r[q]);
            }
        }
        for (; kk < kc; kk++)
            for (int q = 0; q < 8; q++)
                Bp[(long)kk * 32 + g + q] = q < rows ? B[(long)(j0 + g + q) * ldb + k0 + kk] : 0.0f;
    }
}

/* op(A) row i at a + i*ars, its k step at + kk*acs; op(B) packed by PACK */
static void fnn_mk2_gemm(int m, int n, int k, const float* A, long ars, long acs, const float* B,
                         int ldb, int trans_b, float* C, int ldc, int accumulate) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    for (int j0 = 0; j0 < n; j0 += 32) {
        int nr = n - j0 < 32 ? n - j0 : 32;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            if (trans_b) fnn_mk2_pack_t(B, ldb, j0, nr, k0, kc, Bp);
            else fnn_mk2_pack_n(B, ldb, j0, nr, k0, kc, Bp);
            fnn_mk2_panel(m, kc, A + k0 * acs, ars, acs, Bp, C, ldc, j0, nr, accumulate || k0 > 0);
        }
    }
}

void fnn_mk_sgemm_nn(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                     float* C, int ldc, int accumulate) {
    fnn_mk2_gemm(m, n, k, A, lda, 1, B, ldb, 0, C, ldc, accumulate);
}
void fnn_mk_sgemm_tn(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                     float* C, int ldc, int accumulate) {
    fnn_mk2_gemm(m, n, k, A, 1, lda, B, ldb, 0, C, ldc, accumulate);
}
void fnn_mk_sgemm_nt(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                     float* C, int ldc, int accumulate) {
    fnn_mk2_gemm(m, n, k, A, lda, 1, B, ldb, 1, C, ldc, accumulate);
}
void fnn_mk_sgemm_tt(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                     float* C, int ldc, int accumulate) {
    fnn_mk2_gemm(m, n, k, A, 1, lda, B, ldb, 1, C, ldc, accumulate);
}

/* fnn_mk_sgemm_tn with each k step of A.T copied once into rows Ap[i*FNN_MK_RA_LDA + kk]
   (malloc'd; the 16 floats past FNN_MK_KC keep a tile's rows off the same L1 sets), read
   contiguously by every panel */
int fnn_mk_sgemm_tn_pa(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                       float* C, int ldc, int accumulate) {
    float* Ap = (float*)aligned_alloc(64, (size_t)m * FNN_MK_RA_LDA * sizeof(float) + 64);
    if (!Ap) return 0;
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        for (int kk = 0; kk < kc; kk++) {
            const float* src = A + (long)(k0 + kk) * lda;
            for (int i = 0; i < m; i++) Ap[(long)i * FNN_MK_RA_LDA + kk] = src[i];
        }
        for (int j0 = 0; j0 < n; j0 += 32) {
            int nr = n - j0 < 32 ? n - j0 : 32;
            fnn_mk2_pack_n(B, ldb, j0, nr, k0, kc, Bp);
            fnn_mk2_panel(m, kc, Ap, FNN_MK_RA_LDA, 1, Bp, C, ldc, j0, nr, accumulate || k0 > 0);
        }
    }
    free(Ap);
    return 1;
}

void fnn_rec_mm(int m, int n, int k, const float* A, int lda, const float* Bp, float* C, int ldc,
                int accumulate, int kc_block) {
    for (int p = 0; p * 32 < n; p++) {
        int j0 = p * 32, nr = n - j0 < 32 ? n - j0 : 32;
        for (int k0 = 0; k0 < k; k0 += kc_block) {
            int kc = k - k0 < kc_block ? k - k0 : kc_block;
            fnn_mk2_panel(m, kc, A + k0, lda, 1, Bp + ((long)p * k + k0) * 32, C, ldc, j0, nr,
                          accumulate || k0 > 0);
        }
    }
}
