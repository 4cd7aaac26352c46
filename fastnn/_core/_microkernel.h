/* float32 GEMM microkernel (AVX-512): one 8x32 register tile over a B panel packed 256 rows x
   32 columns at a time into L1. Shared by _conv.pyx (convolution GEMMs) and _blas.pyx (dense
   layers). Compiled only where the compiler targets AVX-512 (setup.py passes -march=native);
   elsewhere FNN_MK_AVAILABLE is 0 and the entry points are empty stubs the callers never reach.
   Each entry of C is one sum over k in a fixed order (k in steps of FNN_MK_KC, each step's
   partial sums added into C), whatever the caller's thread split over columns or rows. */
#ifndef FNN_MICROKERNEL_H
#define FNN_MICROKERNEL_H

#if defined(__AVX512F__)
#include <immintrin.h>
#define FNN_MK_AVAILABLE 1
#define FNN_MK_KC 256
/* C (m x n, ldc) (+)= op(A) (m x k) @ B (k x n, ldb), row-major float32; op(A)[i, p] is
   A[i*lda + p] or, transposed, A[p*lda + i]; accumulate: C += instead of C =. */
#define FNN_MK_BODY(NAME, AIDX)                                                          \
static void NAME(int m, int n, int k, const float* A, int lda, const float* B, int ldb,    \
                 float* C, int ldc, int accumulate) {                                      \
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));                                  \
    for (int j0 = 0; j0 < n; j0 += 32) {                                                   \
        int nr = n - j0 < 32 ? n - j0 : 32;                                                \
        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);                    \
        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1)); \
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {                                        \
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;                              \
            for (int kk = 0; kk < kc; kk++) {                                              \
                const float* src = B + (long)(k0 + kk) * ldb + j0;                         \
                _mm512_store_ps(Bp + kk * 32, _mm512_maskz_loadu_ps(m0, src));              \
                _mm512_store_ps(Bp + kk * 32 + 16, _mm512_maskz_loadu_ps(m1, src + 16));    \
            }                                                                              \
            int acc_in = accumulate || k0 > 0;                                             \
            int i0 = 0;                                                                    \
            for (; i0 + 8 <= m; i0 += 8) {                                                 \
                __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71; \
                float* cr = C + (long)i0 * ldc + j0;                                       \
                FNN_MK_LD(0) FNN_MK_LD(1) FNN_MK_LD(2) FNN_MK_LD(3)                        \
                FNN_MK_LD(4) FNN_MK_LD(5) FNN_MK_LD(6) FNN_MK_LD(7)                        \
                const float* bp = Bp;                                                      \
                for (int kk = 0; kk < kc; kk++, bp += 32) {                                \
                    __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;      \
                    FNN_MK_FMA(0, AIDX) FNN_MK_FMA(1, AIDX) FNN_MK_FMA(2, AIDX) FNN_MK_FMA(3, AIDX) \
                    FNN_MK_FMA(4, AIDX) FNN_MK_FMA(5, AIDX) FNN_MK_FMA(6, AIDX) FNN_MK_FMA(7, AIDX) \
                }                                                                          \
                FNN_MK_ST(0) FNN_MK_ST(1) FNN_MK_ST(2) FNN_MK_ST(3)                        \
                FNN_MK_ST(4) FNN_MK_ST(5) FNN_MK_ST(6) FNN_MK_ST(7)                        \
            }                                                                              \
            for (; i0 < m; i0++) {                                                         \
                float* cr = C + (long)i0 * ldc + j0;                                       \
                __m512 c0 = acc_in ? _mm512_maskz_loadu_ps(m0, cr) : _mm512_setzero_ps();  \
                __m512 c1 = acc_in ? _mm512_maskz_loadu_ps(m1, cr + 16) : _mm512_setzero_ps(); \
                for (int kk = 0; kk < kc; kk++) {                                          \
                    __m512 a0 = _mm512_set1_ps(A[AIDX(i0, k0 + kk)]);                      \
                    c0 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32), c0);            \
                    c1 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32 + 16), c1);       \
                }                                                                          \
                _mm512_mask_storeu_ps(cr, m0, c0);                                         \
                _mm512_mask_storeu_ps(cr + 16, m1, c1);                                    \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
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
FNN_MK_BODY(fnn_mk_sgemm_nn, FNN_MK_IDX_N)
FNN_MK_BODY(fnn_mk_sgemm_tn, FNN_MK_IDX_T)

#else
#define FNN_MK_AVAILABLE 0
#define FNN_MK_KC 256
static void fnn_mk_sgemm_nn(int m, int n, int k, const float* A, int lda, const float* B,
                            int ldb, float* C, int ldc, int accumulate) {}
static void fnn_mk_sgemm_tn(int m, int n, int k, const float* A, int lda, const float* B,
                            int ldb, float* C, int ldc, int accumulate) {}
#endif

#endif /* FNN_MICROKERNEL_H */
