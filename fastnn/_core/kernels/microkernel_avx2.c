/* The AVX2+FMA float32 microkernel entry points of microkernel.h. B is packed into the same
   32-column panels as the AVX-512 kernel (Bp[kk*32 + jj], FNN_MK_KC rows a step, zero past the
   matrix) and each panel runs as two 16-column halves in 6x16 register tiles (12 accumulators,
   two B vectors, one broadcast: 15 of the 16 ymm registers). Each entry of C is one FMA chain
   over k in order, C reloaded per k step: the AVX-512 kernel's order, so the same bits. Edges
   go through small buffers (plain loads and stores, which AddressSanitizer sees), not masks. */
#include "mk_avx2.h"

/* op(A) row i at a + i*ars, its k step at + kk*acs; op(B) packed per panel (the unblocked
   path, when the blocked one cannot allocate) */
static void fnn_mk2_gemm_panels(int m, int n, int k, const float* A, long ars, long acs, const float* B,
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

/* fnn_mk2_gemm_panels' sums blocked for the caches: k in equal steps of at most FNN_MK_KC, op(A)
   packed per row block (FNN_MK2_A_BYTES of packed op(A), the blocks of equal size) in 6-row
   panels, op(B) in 16-column panels. When all m rows fit one block, op(A) is packed first and
   each B panel just before its tiles (it stays in L1; no B block through L2). Else op(B) is
   packed whole (all k steps of up to FNN_MK2_NC columns, FNN_MK2_B_BYTES at most) and each row
   block runs all its k steps in a row, so its block of C stays in L2 between the steps (with
   op(B) per step, C went through L3 once a step). The same chains in the same order either
   way. Returns 0 when it could not allocate, and did nothing. */
static int fnn_mk2_gemm_blocked(int m, int n, int k, const float* A, long ars, long acs,
                                const float* B, int ldb, int trans_b, float* C, int ldc,
                                int accumulate) {
    /* k in equal steps of at most FNN_MK_KC (784: 3 x 262, not 3 x 256 + 16, whose short step
       reloads C for a few multiply-adds): each entry is still one chain over k in order */
    int ksteps = (k + FNN_MK_KC - 1) / FNN_MK_KC, kcmax = (k + ksteps - 1) / ksteps;
    int mcb = FNN_MK2_A_BYTES / ((int)sizeof(float) * kcmax) / FNN_MK2_MR * FNN_MK2_MR;
    if (mcb < FNN_MK2_MR) mcb = FNN_MK2_MR;
    int one = m <= mcb;  /* one row block: B packed per panel */
    /* row blocks of equal size (whole 6-row panels) */
    int mblocks = (m + mcb - 1) / mcb;
    mcb = ((m + mblocks - 1) / mblocks + FNN_MK2_MR - 1) / FNN_MK2_MR * FNN_MK2_MR;
    int nbmax = one ? FNN_MK2_NC1 : n < FNN_MK2_NC ? (n + 15) / 16 * 16 : FNN_MK2_NC;
    int whole = !one && (size_t)nbmax * k * sizeof(float) <= FNN_MK2_B_BYTES;
    int mcmax = m < mcb ? (m + FNN_MK2_MR - 1) / FNN_MK2_MR * FNN_MK2_MR : mcb;
    size_t bsize = (size_t)nbmax * (whole ? k : kcmax);
    size_t bytes = (bsize + (size_t)mcmax * kcmax) * sizeof(float);
    float* buf = (float*)aligned_alloc(64, (bytes + 63) / 64 * 64);  /* a multiple of the alignment */
    if (!buf) return 0;
    float *Bp = buf, *Ap = buf + bsize;
    if (one) {
        for (int k0 = 0; k0 < k; k0 += kcmax) {
            int kc = k - k0 < kcmax ? k - k0 : kcmax;
            fnn_mk2_pack_a6(A, ars, acs, 0, m, k0, kc, Ap);
            for (int j0 = 0; j0 < n; j0 += FNN_MK2_NC1) {
                int nb = n - j0 < FNN_MK2_NC1 ? n - j0 : FNN_MK2_NC1;
                if (trans_b) fnn_mk2_pack_t16(B, ldb, j0, nb, k0, kc, Bp);
                else fnn_mk2_pack_n16(B, ldb, j0, nb, k0, kc, Bp);
                fnn_mk2_macro(m, nb, kc, Ap, Bp, C + j0, ldc, accumulate || k0 > 0);
            }
        }
    } else if (whole) {
        for (int j0 = 0; j0 < n; j0 += FNN_MK2_NC) {
            int nb = n - j0 < FNN_MK2_NC ? n - j0 : FNN_MK2_NC;
            for (int k0 = 0; k0 < k; k0 += kcmax) {
                int kc = k - k0 < kcmax ? k - k0 : kcmax;
                float* bp = Bp + (size_t)nbmax * k0;
                if (trans_b) fnn_mk2_pack_t16(B, ldb, j0, nb, k0, kc, bp);
                else fnn_mk2_pack_n16(B, ldb, j0, nb, k0, kc, bp);
            }
            for (int i0 = 0; i0 < m; i0 += mcb) {
                int mc = m - i0 < mcb ? m - i0 : mcb;
                for (int k0 = 0; k0 < k; k0 += kcmax) {
                    int kc = k - k0 < kcmax ? k - k0 : kcmax;
                    fnn_mk2_pack_a6(A, ars, acs, i0, mc, k0, kc, Ap);
                    fnn_mk2_macro(mc, nb, kc, Ap, Bp + (size_t)nbmax * k0,
                                  C + (long)i0 * ldc + j0, ldc, accumulate || k0 > 0);
                }
            }
        }
    } else {
        for (int j0 = 0; j0 < n; j0 += FNN_MK2_NC) {
            int nb = n - j0 < FNN_MK2_NC ? n - j0 : FNN_MK2_NC;
            for (int k0 = 0; k0 < k; k0 += kcmax) {
                int kc = k - k0 < kcmax ? k - k0 : kcmax;
                if (trans_b) fnn_mk2_pack_t16(B, ldb, j0, nb, k0, kc, Bp);
                else fnn_mk2_pack_n16(B, ldb, j0, nb, k0, kc, Bp);
                for (int i0 = 0; i0 < m; i0 += mcb) {
                    int mc = m - i0 < mcb ? m - i0 : mcb;
                    fnn_mk2_pack_a6(A, ars, acs, i0, mc, k0, kc, Ap);
                    fnn_mk2_macro(mc, nb, kc, Ap, Bp, C + (long)i0 * ldc + j0, ldc,
                                  accumulate || k0 > 0);
                }
            }
        }
    }
    free(buf);
    return 1;
}

static void fnn_mk2_gemm(int m, int n, int k, const float* A, long ars, long acs, const float* B,
                         int ldb, int trans_b, float* C, int ldc, int accumulate) {
    if (!fnn_mk2_gemm_blocked(m, n, k, A, ars, acs, B, ldb, trans_b, C, ldc, accumulate))
        fnn_mk2_gemm_panels(m, n, k, A, ars, acs, B, ldb, trans_b, C, ldc, accumulate);
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
    /* the blocked GEMM packs op(A) itself (6-row panels per block) */
    if (fnn_mk2_gemm_blocked(m, n, k, A, 1, lda, B, ldb, 0, C, ldc, accumulate)) return 1;
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
