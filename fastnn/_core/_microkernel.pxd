# The float32 AVX-512 GEMM microkernel of _microkernel.h, for _blas.pyx and _conv.pyx.
# C (m, n, ldc) (+)= op(A) @ op(B): nn, tn (A transposed), nt (B transposed), tt; tn_pa packs
# the transposed A per k step (returns 0 when it could not allocate, and did nothing).
cdef extern from "_microkernel.h":
    bint FNN_MK_AVAILABLE
    int FNN_MK_KC
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
