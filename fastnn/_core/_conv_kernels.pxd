# The convolution kernels of kernels/conv.h: the AVX2 and AVX-512 levels (FNN_CONV_KERNELS 1),
# except fnn_act_f32, which every level has.
cdef extern from "kernels/conv.h":
    bint FNN_CONV_KERNELS
    int FNN_ISA  # isa.h: 0 baseline, 1 AVX2+FMA, 2 AVX-512
    int FNN_DWT_ROWS
    void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw, int ph,
                            int pw, int OH, int OW, float* dst) noexcept nogil
    void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) noexcept nogil
    void fnn_act_f32(float* y, long n, int act, double slope) noexcept nogil
    void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW, int ph,
                        int pw, const float* A, const float* plane, float* Cout, int ldc) noexcept nogil
    void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap) noexcept nogil
    void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW, int sh,
                        int sw, int ph, int pw, int OH, int OW, int mr, const float* Ap,
                        const float* x, const float* bias, float* out, float* Ct) noexcept nogil
    void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH, int KW,
                        int sh, int sw, int ph, int pw, int OH, int OW, const float* x,
                        const float* g, float* dw, float* Ap, long q_lo, long q_hi,
                        double* gsum) noexcept nogil
    void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W, int KH,
                            int KW, int ph, int pw, int OH, const float* x, const float* g,
                            float* dwt, float* Ar, float* Bp, double* gsum) noexcept nogil
    int fnn_set_dwt_narrow(int on) noexcept nogil
    void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
                      const float* xp, const float* wt, int ob, const float* bias,
                      float* out) noexcept nogil
    void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) noexcept nogil
    void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
                       float* xp) noexcept nogil
    void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane, long img,
                      int Wp, int OH, int OW, long npix, const float* xp, const float* dyt,
                      float* dwt) noexcept nogil
    void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw) noexcept nogil
    void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) noexcept nogil
    void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g,
                         float* dyt) noexcept nogil
    int fnn_set_panel_direct(int on) noexcept nogil
    void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W, int KH,
                         int KW, int ph, int pw, const float* Ap, const float* x,
                         const float* bias, float* out, float* Ct) noexcept nogil
    void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW, int ph,
                         int pw, const float* Ap, const float* g, long sample_stride,
                         float* Cout, int ldc) noexcept nogil
    void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0, const float* src1,
                           int ha, float bv) noexcept nogil
