/* float32 GEMM microkernels: AVX-512 (microkernel_avx512.c, an 8x32 register tile) and AVX2+FMA
   (microkernel_avx2.c, 6x16 tiles over the same 32-column B panels). Shared by _blas (dense
   layers), _conv (convolution GEMMs) and _recurrent (the step products). Each entry of C is one
   FMA chain over k in order (k in steps of FNN_MK_KC, each step reloading C), whatever the
   caller's thread split and whichever level: both levels give the same bits. */
#ifndef FNN_MICROKERNEL_H
#define FNN_MICROKERNEL_H
#include <stdlib.h>
#include "isa.h"

#define FNN_MK_AVAILABLE (FNN_ISA >= 1)
#ifndef FNN_MK_KC
#define FNN_MK_KC 256
#endif
/* per-thread column blocks of C (_blas's split of a GEMM over the threads) start on whole B
   panels of the level's kernel: 32 columns (AVX-512), 16 (the AVX2 blocked GEMM) */
#if FNN_ISA >= 2
#define FNN_MK_COL_ALIGN 32
#else
#define FNN_MK_COL_ALIGN 16
#endif
/* the row stride of the row-major A blocks of fnn_mk_tiles_ra (mk_avx512.h) */
#define FNN_MK_RA_LDA (FNN_MK_KC + 16)

/* C (m x n, ldc) (+)= op(A) (m x k) @ op(B) (k x n), row-major float32: nn, tn (A transposed),
   nt (B transposed), tt; accumulate: C += instead of C =. */
FNN_ISA_KERNEL void fnn_mk_sgemm_nn(int m, int n, int k, const float* A, int lda, const float* B,
                                    int ldb, float* C, int ldc, int accumulate);
FNN_ISA_KERNEL void fnn_mk_sgemm_tn(int m, int n, int k, const float* A, int lda, const float* B,
                                    int ldb, float* C, int ldc, int accumulate);
FNN_ISA_KERNEL void fnn_mk_sgemm_nt(int m, int n, int k, const float* A, int lda, const float* B,
                                    int ldb, float* C, int ldc, int accumulate);
FNN_ISA_KERNEL void fnn_mk_sgemm_tt(int m, int n, int k, const float* A, int lda, const float* B,
                                    int ldb, float* C, int ldc, int accumulate);
/* fnn_mk_sgemm_tn with op(A) packed per k step (rows of A lda apart, a multiple of 1 KB, fall
   into few L1 sets); the same bits. Returns 0 when it could not allocate, and did nothing. */
FNN_ISA_KERNEL int fnn_mk_sgemm_tn_pa(int m, int n, int k, const float* A, int lda,
                                      const float* B, int ldb, float* C, int ldc, int accumulate);
/* C (m x n, ldc) (+)= A (m x k, lda) @ Bp, Bp packed by fnn_rec_pack; k in blocks of kc_block
   (each entry still one chain over k in order) */
FNN_ISA_KERNEL void fnn_rec_mm(int m, int n, int k, const float* A, int lda, const float* Bp,
                               float* C, int ldc, int accumulate, int kc_block);

/* B (k x n) packed as ceil(n/32) panels of k x 32 (zero-padded columns), 64-byte aligned;
   B[p, j] = src[p*sk + j*sj]. NULL when it cannot allocate; free() it. */
static inline float* fnn_rec_pack(const float* src, long sk, long sj, int k, int n) {
    int panels = (n + 31) / 32;
    float* out = (float*)aligned_alloc(64, (size_t)panels * k * 32 * sizeof(float) + 64);
    if (!out) return NULL;
    for (int p = 0; p < panels; p++)
        for (int kk = 0; kk < k; kk++)
            for (int c = 0; c < 32; c++) {
                int j = p * 32 + c;
                out[((long)p * k + kk) * 32 + c] = j < n ? src[kk * sk + j * sj] : 0.0f;
            }
    return out;
}

#endif /* FNN_MICROKERNEL_H */
