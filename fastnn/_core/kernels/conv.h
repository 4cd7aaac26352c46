/* Convolution kernels, one file per level (conv_avx512.c: 8x32 AVX-512 tiles; conv_avx2.c:
   AVX2+FMA 6x16 and 4x16 tiles; the scalar pieces in conv_common.h): implicit-GEMM panels
   packed straight from the image (stride 1, across samples, strided, sub-pixel), the direct
   stride-2 forward and weight gradient, the implicit weight gradients, and the im2col rows and
   transposes of the im2col route. The Cython planner (_conv.pyx) calls them only where
   FNN_CONV_KERNELS is 1 (the AVX2 and AVX-512 levels); at the baseline level the im2col route
   runs on BLAS. */
#ifndef FNN_CONV_H
#define FNN_CONV_H
#include "isa.h"
#include "microkernel.h"
#if FNN_ISA >= 1
#include <immintrin.h>
#endif

#define FNN_CONV_KERNELS (FNN_ISA >= 1)
#define FNN_DWT_ROWS 128  /* fnn_mk_conv_dwt_s1's im2col row block */

FNN_ISA_KERNEL void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int
        sw, int ph, int pw, int OH, int OW, float* dst);
FNN_ISA_KERNEL void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst);
FNN_ISA_KERNEL void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW,
        int ph, int pw, const float* A, const float* plane, float* Cout, int ldc);
FNN_ISA_KERNEL void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap);
FNN_ISA_KERNEL void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int
        KW, int sh, int sw, int ph, int pw, int OH, int OW, int mr, const float* Ap, const float*
        x, const float* bias, float* out, float* Ct);
FNN_ISA_KERNEL void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH, int
        KW, int sh, int sw, int ph, int pw, int OH, int OW, const float* x, const float* g, float*
        dw, float* Ap, long q_lo, long q_hi, double* gsum);
FNN_ISA_KERNEL void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W, int
        KH, int KW, int ph, int pw, int OH, const float* x, const float* g, float* dwt, float* Ar,
        float* Bp, double* gsum);
FNN_ISA_KERNEL int fnn_set_dwt_narrow(int on);
FNN_ISA_KERNEL void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
        const float* xp, const float* wt, int ob, const float* bias, float* out);
FNN_ISA_KERNEL void fnn_d2_pack_weights(int O, int K, const float* w, float* wt);
FNN_ISA_KERNEL void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
        float* xp);
FNN_ISA_KERNEL void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane, long
        img, int Wp, int OH, int OW, long npix, const float* xp, const float* dyt, float* dwt);
FNN_ISA_KERNEL void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw);
FNN_ISA_KERNEL void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum);
FNN_ISA_KERNEL void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g, float* dyt);
FNN_ISA_KERNEL int fnn_set_panel_direct(int on);
FNN_ISA_KERNEL void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W, int
        KH, int KW, int ph, int pw, const float* Ap, const float* x, const float* bias, float* out,
        float* Ct);
FNN_ISA_KERNEL void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW, int
        ph, int pw, const float* Ap, const float* g, long sample_stride, float* Cout, int ldc);
FNN_ISA_KERNEL void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0, const
        float* src1, int ha, float bv);

/* y[0:n] := act(y) in place: 1 ReLU (0 where y <= 0; NaN stays), 2 leaky ReLU (y * slope
   where y is not > 0, slope rounded to float and multiplied in float, as numba's
   leaky_relu_forward and torch's leaky_relu do), so the values are bitwise those of the
   activation layer. */
static inline void fnn_act_f32(float* y, long n, int act, double slope) {
    long i = 0;
    const float sf = (float)slope;
#if FNN_ISA >= 2
    const __m512 zero = _mm512_setzero_ps();
    if (act == 1) {
        for (; i + 16 <= n; i += 16) {
            __m512 v = _mm512_loadu_ps(y + i);
            _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ), zero));
        }
    } else if (act == 2) {
        const __m512 s = _mm512_set1_ps(sf);
        for (; i + 16 <= n; i += 16) {
            __m512 v = _mm512_loadu_ps(y + i);
            __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
            _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(_mm512_mul_ps(v, s), pos, v));
        }
    }
#elif FNN_ISA == 1
    const __m256 zero = _mm256_setzero_ps();
    if (act == 1) {
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(y + i);
            _mm256_storeu_ps(y + i, _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LE_OQ)));
        }
    } else if (act == 2) {
        const __m256 s = _mm256_set1_ps(sf);
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(y + i);
            __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
            _mm256_storeu_ps(y + i, _mm256_blendv_ps(_mm256_mul_ps(v, s), v, pos));
        }
    }
#endif
    for (; i < n; i++) {
        float v = y[i];
        if (act == 1) y[i] = v <= 0 ? 0.0f : v;
        else if (act == 2 && !(v > 0)) y[i] = v * sf;
    }
}

#endif /* FNN_CONV_H */
