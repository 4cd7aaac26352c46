/* The AVX-512 float32 microkernel entry points of microkernel.h (tiles and packings:
   mk_avx512.h) and the recurrent step product on pre-packed panels. */
#include "mk_avx512.h"

int fnn_mk_sgemm_tn_pa(int m, int n, int k, const float* A, int lda, const float* B,
                              int ldb, float* C, int ldc, int accumulate) {
    int mt = (m + 7) / 8;
    float* Ap = (float*)aligned_alloc(64, (size_t)mt * FNN_MK_KC * 8 * sizeof(float) + 64);
    if (!Ap) return 0;
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        int acc_in = accumulate || k0 > 0;
        for (int t = 0; t < mt; t++) {
            int cnt = m - t * 8 < 8 ? m - t * 8 : 8;
            __mmask8 am = (__mmask8)((1u << cnt) - 1);
            const float* src = A + (long)k0 * lda + t * 8;
            float* dst = Ap + (long)t * kc * 8;
            for (int kk = 0; kk < kc; kk++)
                _mm256_store_ps(dst + kk * 8, _mm256_maskz_loadu_ps(am, src + (long)kk * lda));
        }
        for (int j0 = 0; j0 < n; j0 += 32) {
            int nr = n - j0 < 32 ? n - j0 : 32;
            __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
            __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
            FNN_MK_PACK_N(B, ldb, j0, nr, k0, kc, m0, m1, Bp)
            int i0 = 0;
            for (; i0 + 8 <= m; i0 += 8) {
                __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
                float* cr = C + (long)i0 * ldc + j0;
                FNN_MK_LD(0) FNN_MK_LD(1) FNN_MK_LD(2) FNN_MK_LD(3)
                FNN_MK_LD(4) FNN_MK_LD(5) FNN_MK_LD(6) FNN_MK_LD(7)
                const float* bp = Bp;
                const float* ap = Ap + (long)(i0 / 8) * kc * 8;
                for (int kk = 0; kk < kc; kk++, bp += 32, ap += 8) {
                    __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;
                    FNN_MK_FMA_AP(0) FNN_MK_FMA_AP(1)
                    FNN_MK_FMA_AP(2) FNN_MK_FMA_AP(3)
                    FNN_MK_FMA_AP(4) FNN_MK_FMA_AP(5)
                    FNN_MK_FMA_AP(6) FNN_MK_FMA_AP(7)
                }
                FNN_MK_ST(0) FNN_MK_ST(1) FNN_MK_ST(2) FNN_MK_ST(3)
                FNN_MK_ST(4) FNN_MK_ST(5) FNN_MK_ST(6) FNN_MK_ST(7)
            }
            for (; i0 < m; i0++) {
                float* cr = C + (long)i0 * ldc + j0;
                const float* ap = Ap + (long)(i0 / 8) * kc * 8 + (i0 % 8);
                __m512 c0 = acc_in ? _mm512_maskz_loadu_ps(m0, cr) : _mm512_setzero_ps();
                __m512 c1 = acc_in ? _mm512_maskz_loadu_ps(m1, cr + 16) : _mm512_setzero_ps();
                for (int kk = 0; kk < kc; kk++) {
                    __m512 a0 = _mm512_set1_ps(ap[kk * 8]);
                    c0 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32), c0);
                    c1 = _mm512_fmadd_ps(a0, _mm512_load_ps(Bp + kk * 32 + 16), c1);
                }
                _mm512_mask_storeu_ps(cr, m0, c0);
                _mm512_mask_storeu_ps(cr + 16, m1, c1);
            }
        }
    }
    free(Ap);
    return 1;
}
FNN_MK_BODY(fnn_mk_sgemm_nn, FNN_MK_IDX_N)
FNN_MK_BODY(fnn_mk_sgemm_tn, FNN_MK_IDX_T)
FNN_MK_BODY_P(fnn_mk_sgemm_nt, FNN_MK_IDX_N, FNN_MK_PACK_T)
FNN_MK_BODY_P(fnn_mk_sgemm_tt, FNN_MK_IDX_T, FNN_MK_PACK_T)

/* C (m x n, ldc) (+)= A (m x k, lda) @ Bp (packed by fnn_rec_pack). 8x32 register tile;
   k in blocks of kc_block so the panel slice (KC x 32 floats) stays in L1 while every
   row tile reads it (each entry still sums over k in order: C is reloaded per block). */
#define FNN_R_LD(r) if (acc) { c##r##0 = _mm512_maskz_loadu_ps(m0, cr + (long)r * ldc); \
    c##r##1 = _mm512_maskz_loadu_ps(m1, cr + (long)r * ldc + 16); } \
    else { c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps(); }
#define FNN_R_FMA(r) a0 = _mm512_set1_ps(ar[(long)r * lda + kk]); \
    c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
#define FNN_R_ST(r) _mm512_mask_storeu_ps(cr + (long)r * ldc, m0, c##r##0); \
    _mm512_mask_storeu_ps(cr + (long)r * ldc + 16, m1, c##r##1);
void fnn_rec_mm(int m, int n, int k, const float* A, int lda, const float* Bp,
                       float* C, int ldc, int accumulate, int kc_block) {
    for (int p = 0; p * 32 < n; p++) {
        int j0 = p * 32, nr = n - j0 < 32 ? n - j0 : 32;
        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
        for (int k0 = 0; k0 < k; k0 += kc_block) {
        int kc = k - k0 < kc_block ? k - k0 : kc_block;
        int acc = accumulate || k0 > 0;
        const float* panel = Bp + ((long)p * k + k0) * 32;
        const float* Ak = A + k0;
        int i0 = 0;
        for (; i0 + 8 <= m; i0 += 8) {
            __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
            float* cr = C + (long)i0 * ldc + j0;
            const float* ar = Ak + (long)i0 * lda;
            FNN_R_LD(0) FNN_R_LD(1) FNN_R_LD(2) FNN_R_LD(3)
            FNN_R_LD(4) FNN_R_LD(5) FNN_R_LD(6) FNN_R_LD(7)
            const float* bp = panel;
            for (int kk = 0; kk < kc; kk++, bp += 32) {
                __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;
                FNN_R_FMA(0) FNN_R_FMA(1) FNN_R_FMA(2) FNN_R_FMA(3)
                FNN_R_FMA(4) FNN_R_FMA(5) FNN_R_FMA(6) FNN_R_FMA(7)
            }
            FNN_R_ST(0) FNN_R_ST(1) FNN_R_ST(2) FNN_R_ST(3)
            FNN_R_ST(4) FNN_R_ST(5) FNN_R_ST(6) FNN_R_ST(7)
        }
        for (; i0 < m; i0++) {
            float* cr = C + (long)i0 * ldc + j0;
            const float* ar = Ak + (long)i0 * lda;
            __m512 c0 = acc ? _mm512_maskz_loadu_ps(m0, cr) : _mm512_setzero_ps();
            __m512 c1 = acc ? _mm512_maskz_loadu_ps(m1, cr + 16) : _mm512_setzero_ps();
            const float* bp = panel;
            for (int kk = 0; kk < kc; kk++, bp += 32) {
                __m512 a0 = _mm512_set1_ps(ar[kk]);
                c0 = _mm512_fmadd_ps(a0, _mm512_load_ps(bp), c0);
                c1 = _mm512_fmadd_ps(a0, _mm512_load_ps(bp + 16), c1);
            }
            _mm512_mask_storeu_ps(cr, m0, c0);
            _mm512_mask_storeu_ps(cr + 16, m1, c1);
        }
        }
    }
}
