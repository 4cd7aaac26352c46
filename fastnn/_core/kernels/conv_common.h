/* The convolution kernels of conv.h that need no vector instructions, and scalar pieces both
   levels' kernel files share (included by conv_avx2.c and conv_avx512.c only: each level's
   module compiles its own copy). */
#ifndef FNN_CONV_COMMON_H
#define FNN_CONV_COMMON_H
#include <string.h>
#include "conv.h"

/* fnn_im2col_row_f32 at stride 1 with OW == W (same-size convolutions): one shifted flat copy
   of the plane plus zeros on the padded border (off = j - pw) */
static inline void fnn_im2col_row_same(const float* plane, int H, int W, int i, int ph, int off,
                                       int OH, int OW, float* dst) {
    int oh_lo = ph - i > 0 ? ph - i : 0;
    int oh_hi = H + ph - i < OH ? H + ph - i : OH;
    if (oh_hi < oh_lo) oh_hi = oh_lo;
    if (oh_lo > OH) oh_lo = oh_hi = OH;
    memset(dst, 0, sizeof(float) * (size_t)oh_lo * OW);
    memset(dst + (long)oh_hi * OW, 0, sizeof(float) * (size_t)(OH - oh_hi) * OW);
    long n = (long)(oh_hi - oh_lo) * OW;
    long s = (long)(oh_lo + i - ph) * W + off;  /* source of dst[oh_lo*OW] */
    long a = s < 0 ? -s : 0, b = s + n > (long)H * W ? (long)H * W - s : n;
    if (b > a) memcpy(dst + (long)oh_lo * OW + a, plane + s + a, sizeof(float) * (size_t)(b - a));
    /* columns whose source falls off the row (this also covers [0, a) and [b, n)) */
    int lo = off < 0 ? -off : 0, hi = W - off < OW ? W - off : OW;
    if (hi < lo) hi = lo;
    for (int oh = oh_lo; oh < oh_hi; oh++) {
        float* d = dst + (long)oh * OW;
        for (int ow = 0; ow < lo; ow++) d[ow] = 0;
        for (int ow = hi; ow < OW; ow++) d[ow] = 0;
    }
}

/* Ap := A (m, k) row-major in 8-row tiles: block k0 (FNN_MK_KC deep, kc = its depth) at
   k0 * mt * 8, tile t of it at + t * kc * 8, element (i, k0 + kk) at + kk * 8 + (i % 8);
   rows past m are zero. */
void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap) {
    int mt = (m + mr - 1) / mr;
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        for (int t = 0; t < mt; t++) {
            float* d = Ap + (long)k0 * mt * mr + (long)t * kc * mr;
            for (int kk = 0; kk < kc; kk++)
                for (int r = 0; r < mr; r++) {
                    int i = t * mr + r;
                    d[kk * mr + r] = i < m ? A[(long)i * k + k0 + kk] : 0.0f;
                }
        }
    }
}
/* dw (O, K) := dwt's channel blocks (see fnn_dw2_rows) transposed back */
void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw) {
    for (int o = 0; o < O; o++) {
        const float* src = dwt + (long)(o / 32) * K * 32 + o % 32;
        float* d = dw + (long)o * K;
        for (int k = 0; k < K; k++) d[k] = src[(long)k * 32];
    }
}
#endif /* FNN_CONV_COMMON_H */
