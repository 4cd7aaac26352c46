# The float32 GEMM microkernels of kernels/microkernel.h (AVX-512 or AVX2+FMA, the module's
# level; FNN_MK_AVAILABLE 0 at the baseline level, where nothing here may be called but
# fnn_rec_pack). C (m, n, ldc) (+)= op(A) @ op(B): nn, tn (A transposed), nt (B transposed), tt;
# tn_pa packs the transposed A per k step (returns 0 when it could not allocate, and did nothing).
cdef extern from "kernels/microkernel.h":
    int FNN_ISA
    bint FNN_MK_AVAILABLE
    int FNN_MK_KC
    int FNN_MK_RA_LDA
    int FNN_MK_COL_ALIGN  # per-thread column blocks of C: whole B panels
    void fnn_mk_sgemm_nn(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                         float* C, int ldc, int accumulate) noexcept nogil
    void fnn_mk_sgemm_tn(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                         float* C, int ldc, int accumulate) noexcept nogil
    void fnn_mk_sgemm_nt(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                         float* C, int ldc, int accumulate) noexcept nogil
    void fnn_mk_sgemm_tt(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                         float* C, int ldc, int accumulate) noexcept nogil
    int fnn_mk_sgemm_tn_pa(int m, int n, int k, const float* A, int lda, const float* B, int ldb,
                           float* C, int ldc, int accumulate) noexcept nogil
    void fnn_rec_mm(int m, int n, int k, const float* A, int lda, const float* Bp,
                    float* C, int ldc, int accumulate, int kc_block) noexcept nogil
    float* fnn_rec_pack(const float* src, long sk, long sj, int k, int n) noexcept nogil
