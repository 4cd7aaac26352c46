/* The AVX-512 convolution kernels declared in conv.h (see there); the tile loops and packings
   they share with the GEMM are mk_avx512.h's. */
#include <string.h>
#include "mk_avx512.h"
#include "conv_common.h"

/* Implicit-GEMM convolution of one sample at stride 1 with OW == W (same-width output):
   Cout[i, p] := sum_r A[i, r] * im2col(plane)[r, p] for columns p in [p_lo, p_hi), ldc
   apart. Row r = (c, ki, kj) of im2col is the plane read flat from (ki - ph)*W + kj - pw
   on, with the lanes whose pixel falls off the image masked to zero, so the B panel is
   packed straight from the image: no column matrix is written or read back. */
void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW,
                           int ph, int pw, const float* A, const float* plane, float* Cout,
                           int ldc) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32];
    int k = C * KH * KW, lda = k, OW = W;
    /* the panels read every channel plane at once, too many streams for the hardware
       prefetcher: fetch the sample into L2 first, and the output rows for writing */
    for (long q = 0; q < (long)C * H * W; q += 16) _mm_prefetch((const char*)(plane + q), _MM_HINT_T1);
    for (int i = 0; i < m; i++)
        for (int q = p_lo; q < p_hi; q += 16) _m_prefetchw(Cout + (long)i * ldc + q);
    for (int j0 = p_lo; j0 < p_hi; j0 += 32) {
        int nr = p_hi - j0 < 32 ? p_hi - j0 : 32;
        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
        for (int a = 0; a < KH; a++) rowm[a] = 0;
        for (int b = 0; b < KW; b++) colm[b] = 0;
        for (int q = 0; q < nr; q++) {
            int oh = (j0 + q) / OW, ow = (j0 + q) - oh * OW;
            for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
            for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
        }
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            for (int kk = 0; kk < kc; kk++) {
                unsigned mk = rowm[ki] & colm[kj];
                const float* src = plane + (long)c * H * W + (long)(ki - ph) * W + (kj - pw) + j0;
                _mm512_store_ps(Bp + kk * 32, _mm512_maskz_loadu_ps((__mmask16)mk, src));
                _mm512_store_ps(Bp + kk * 32 + 16, _mm512_maskz_loadu_ps((__mmask16)(mk >> 16), src + 16));
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            int acc_in = k0 > 0;
            FNN_MK_TILES(FNN_MK_IDX_N, Cout)
        }
    }
}
/* dst (nb*P, O) := src (nb, O, P) viewed as (O, nb*P), transposed: 16 channels of one
   pixel per gather (the 16 source rows are read in step, so their lines stay in L1) and one
   contiguous store, where scalar stores O apart touched a new cache line each. */
void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) {
    const __m512i step = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i idx = _mm512_mullo_epi32(step, _mm512_set1_epi32((int)P));
    for (int n = 0; n < nb; n++) {
        for (int o0 = 0; o0 < O; o0 += 16) {
            int cnt = O - o0 < 16 ? O - o0 : 16;
            __mmask16 mk = cnt == 16 ? 0xFFFF : (__mmask16)((1u << cnt) - 1);
            const float* s = src + ((long)n * O + o0) * P;
            float* d = dst + (long)n * P * O + o0;
            for (long p = 0; p < P; p++)
                _mm512_mask_storeu_ps(d + p * O, mk,
                    _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, s + p, 4));
        }
    }
}
/* lanes [a, b) of a 16-lane mask, a and b clipped to [0, 16] */
static inline __mmask16 fnn_lanes(int a, int b) {
    a = a < 0 ? 0 : (a > 16 ? 16 : a);
    b = b < 0 ? 0 : (b > 16 ? 16 : b);
    return b > a ? (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u)) : 0;
}
/* One im2col row of a float32 plane at stride 1 or 2: dst[oh*OW + ow] := plane[oh*sh - ph
   + i, ow*sw + j - pw], zero outside. Stride 1 with OW == W (same-size convolutions) is
   one shifted flat copy of the plane plus zeros on the padded border; otherwise 16 outputs
   per masked load (two and an even-lane permute at stride 2), masks hoisted out of the row
   loop; the masks drop the padding, so no lane reads outside the row. */
void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw,
                               int ph, int pw, int OH, int OW, float* dst) {
    int off = j - pw;
    if (sh == 1 && sw == 1 && OW == W) {
        fnn_im2col_row_same(plane, H, W, i, ph, off, OH, OW, dst);
        return;
    }
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int ow0 = 0; ow0 < OW; ow0 += 16) {
        int cnt = OW - ow0 < 16 ? OW - ow0 : 16;
        __mmask16 dm = fnn_lanes(0, cnt);
        long s0 = (long)ow0 * sw + off;  /* source column of lane 0 */
        int lo = s0 < 0 ? (int)-s0 : 0;
        long hi_l = (long)W - s0;
        int hi = hi_l > 32 ? 32 : (hi_l < 0 ? 0 : (int)hi_l);
        int lim = hi < sw * cnt ? hi : sw * cnt;
        __mmask16 ma = fnn_lanes(lo, lim), mb = fnn_lanes(lo - 16, lim - 16);
        for (int oh = 0; oh < OH; oh++) {
            float* d = dst + (long)oh * OW + ow0;
            int ih = oh * sh - ph + i;
            __m512 v = _mm512_setzero_ps();
            if (ih >= 0 && ih < H) {
                const float* src = plane + (long)ih * W + s0;
                if (sw == 1) {
                    v = _mm512_maskz_loadu_ps(ma, src);
                } else {
                    __m512 x0 = _mm512_maskz_loadu_ps(ma, src);
                    __m512 x1 = _mm512_maskz_loadu_ps(mb, src + 16);
                    v = _mm512_permutex2var_ps(x0, even, x1);
                }
            }
            if (cnt == 16) _mm512_storeu_ps(d, v);
            else _mm512_mask_storeu_ps(d, dm, v);
        }
    }
}

#define FNN_SN_FMA(r) a0 = _mm512_set1_ps(ap[r]);                                          \
    c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
#define FNN_SN_LD(r) if (acc_in) { c##r##0 = _mm512_load_ps(cr + r * 32);                  \
    c##r##1 = _mm512_load_ps(cr + r * 32 + 16); }                                          \
    else { c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps(); }
#define FNN_SN_ST(r) _mm512_store_ps(cr + r * 32, c##r##0); _mm512_store_ps(cr + r * 32 + 16, c##r##1);
/* out (N, m, OH, OW) columns p in [p_lo, p_hi) of the batch (p = n*P + oh*OW + ow) :=
   A (m, C*KH*KW) @ im2col(x) + bias, A packed by fnn_pack_a8, x (N, C, H, W), any stride.
   Lane q of a panel reads x at off[q] + c*H*W + (ki - ph)*W + (kj - pw) (off relative to
   the panel's first sample), masked to the lanes whose pixel lies on the image. */
void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW,
                           int sh, int sw, int ph, int pw, int OH, int OW, int mr,
                           const float* Ap, const float* x, const float* bias, float* out,
                           float* Ct) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    int mt = (m + mr - 1) / mr;
    unsigned rowm[32], colm[32];
    int offs[32] __attribute__((aligned(64)));
    int k = C * KH * KW;
    long P = (long)OH * OW, HW = (long)H * W, CHW = (long)C * HW;
    for (long j0 = p_lo; j0 < p_hi; j0 += 32) {
        int nr = p_hi - j0 < 32 ? (int)(p_hi - j0) : 32;
        long nfirst = j0 / P;
        for (int a = 0; a < KH; a++) rowm[a] = 0;
        for (int b = 0; b < KW; b++) colm[b] = 0;
        for (int q = 0; q < 32; q++) {
            if (q >= nr) { offs[q] = 0; continue; }
            long p = j0 + q, n = p / P, pp = p - n * P;
            int oh = (int)(pp / OW), ow = (int)(pp - (long)oh * OW);
            int ih = oh * sh - ph, iw = ow * sw - pw;
            offs[q] = (int)((n - nfirst) * CHW + (long)oh * sh * W + (long)ow * sw);
            for (int a = 0; a < KH; a++) if (ih + a >= 0 && ih + a < H) rowm[a] |= 1u << q;
            for (int b = 0; b < KW; b++) if (iw + b >= 0 && iw + b < W) colm[b] |= 1u << q;
        }
        __m512i ix0 = _mm512_load_si512((const void*)offs);
        __m512i ix1 = _mm512_load_si512((const void*)(offs + 16));
        const float* xs = x + nfirst * CHW;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            for (int kk = 0; kk < kc; kk++) {
                unsigned mk = rowm[ki] & colm[kj];
                const float* src = xs + (long)c * HW + (long)(ki - ph) * W + (kj - pw);
                _mm512_store_ps(Bp + kk * 32, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)mk, ix0, src, 4));
                _mm512_store_ps(Bp + kk * 32 + 16, (mk >> 16) ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)(mk >> 16), ix1, src, 4) : _mm512_setzero_ps());
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            int acc_in = k0 > 0;
            for (int t = 0; t < mt; t++) {
                __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
                float* cr = Ct + t * 8 * 32;
                FNN_SN_LD(0) FNN_SN_LD(1) FNN_SN_LD(2) FNN_SN_LD(3)
                FNN_SN_LD(4) FNN_SN_LD(5) FNN_SN_LD(6) FNN_SN_LD(7)
                const float* bp = Bp;
                const float* ap = Ap + (long)k0 * mt * 8 + (long)t * kc * 8;
                for (int kk = 0; kk < kc; kk++, bp += 32, ap += 8) {
                    __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;
                    FNN_SN_FMA(0) FNN_SN_FMA(1) FNN_SN_FMA(2) FNN_SN_FMA(3)
                    FNN_SN_FMA(4) FNN_SN_FMA(5) FNN_SN_FMA(6) FNN_SN_FMA(7)
                }
                FNN_SN_ST(0) FNN_SN_ST(1) FNN_SN_ST(2) FNN_SN_ST(3)
                FNN_SN_ST(4) FNN_SN_ST(5) FNN_SN_ST(6) FNN_SN_ST(7)
            }
        }
        /* the panel to NCHW: one run of lanes per sample it touches */
        for (int q0 = 0; q0 < nr;) {
            long p = j0 + q0, n = p / P, pp = p - n * P;
            int q1 = (int)(q0 + (P - pp) < nr ? q0 + (P - pp) : nr);
            __mmask16 ma = fnn_lanes(q0, q1), mb = fnn_lanes(q0 - 16, q1 - 16);
            float* dst = out + n * m * P + pp - q0;
            for (int i = 0; i < m; i++) {
                __m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
                float* d = dst + (long)i * P;
                const float* s = Ct + i * 32;
                if (ma) _mm512_mask_storeu_ps(d, ma, _mm512_add_ps(_mm512_load_ps(s), bv));
                if (mb) _mm512_mask_storeu_ps(d + 16, mb, _mm512_add_ps(_mm512_load_ps(s + 16), bv));
            }
            q0 = q1;
        }
    }
}
/* dw (O, C*KH*KW) += g @ im2col(x).T for dw's 32-column panels [plo, phi), any stride,
   over the output pixels [q_lo, q_hi) of the batch (p = n*OH*OW + oh*OW + ow; the GEMM's
   k) in FNN_MK_KC steps; gsum (when not NULL, O doubles) += the channel sums of g over
   those pixels, each step's sum formed on its own and then added. Per step, g's
   pixels are packed into 8-row tiles (Ap, (O8, FNN_MK_KC) floats, the caller's), and each
   panel's rows of im2col(x).T are gathered straight from x: lane q of pixel p reads
   x[n, c, oh*sh - ph + ki, ow*sw - pw + kj] for the panel's column (c, ki, kj), masked off
   the image. Each entry of dw is one chain over p in order, whichever thread owns its
   panel. */
void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH,
                           int KW, int sh, int sw, int ph, int pw, int OH, int OW,
                           const float* x, const float* g, float* dw, float* Ap,
                           long q_lo, long q_hi, double* gsum) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    int offs[32] __attribute__((aligned(64))), kis[32] __attribute__((aligned(64)));
    int kjs[32] __attribute__((aligned(64)));
    int k = C * KH * KW, mt = (O + 7) / 8;
    long P = (long)OH * OW, np = (long)N * P, HW = (long)H * W, CHW = (long)C * HW;
    const __m512i Hv = _mm512_set1_epi32(H), Wv = _mm512_set1_epi32(W);
    const __m512i gidx = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)P));
    (void)np;
    for (long p0 = q_lo; p0 < q_hi; p0 += FNN_MK_KC) {
        int kc = q_hi - p0 < FNN_MK_KC ? (int)(q_hi - p0) : FNN_MK_KC;
        long n0 = p0 / P, pp0 = p0 - n0 * P;
        /* two tiles per pixel: channels t*8 .. t*8 + 15 of g[n, :, pp], P apart, one gather */
        for (int t = 0; t < mt; t += 2) {
            __mmask16 om = fnn_lanes(0, O - t * 8);
            float* d0 = Ap + (long)t * kc * 8;
            float* d1 = d0 + (long)kc * 8;  /* past the last tile when t + 1 == mt: unused */
            long n = n0, pp = pp0;
            __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
            for (int kk = 0; kk < kc; kk++) {
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), om, gidx,
                                                    g + (n * O + t * 8) * P + pp, 4);
                __m256 lo = _mm512_castps512_ps256(v), hi = _mm512_extractf32x8_ps(v, 1);
                _mm256_store_ps(d0 + kk * 8, lo);
                if (t + 1 < mt) _mm256_store_ps(d1 + kk * 8, hi);
                if (gsum) {
                    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(lo));
                    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(hi));
                }
                if (++pp == P) { pp = 0; n++; }
            }
            if (gsum) {
                double sums[16];
                _mm512_storeu_pd(sums, s0);
                _mm512_storeu_pd(sums + 8, s1);
                for (int r = 0; r < 16 && t * 8 + r < O; r++) gsum[t * 8 + r] += sums[r];
            }
        }
        for (int pn = plo; pn < phi; pn++) {
            int j0 = pn * 32, nr = k - j0 < 32 ? k - j0 : 32;
            __mmask16 m0 = fnn_lanes(0, nr), m1 = fnn_lanes(-16, nr - 16);
            for (int q = 0; q < 32; q++) {
                int r = j0 + (q < nr ? q : 0);
                int c = r / (KH * KW), ki = (r / KW) % KH, kj = r % KW;
                offs[q] = (int)(c * HW + (long)ki * W + kj);
                kis[q] = ki;
                kjs[q] = kj;
            }
            const __m512i off0 = _mm512_load_si512((const void*)offs);
            const __m512i off1 = _mm512_load_si512((const void*)(offs + 16));
            const __m512i ki0 = _mm512_load_si512((const void*)kis);
            const __m512i ki1 = _mm512_load_si512((const void*)(kis + 16));
            const __m512i kj0 = _mm512_load_si512((const void*)kjs);
            const __m512i kj1 = _mm512_load_si512((const void*)(kjs + 16));
            long n = n0;
            int oh = (int)(pp0 / OW), ow = (int)(pp0 - (long)oh * OW);
            for (int kk = 0; kk < kc; kk++) {
                int ih = oh * sh - ph, iw = ow * sw - pw;
                __m512i ihv = _mm512_set1_epi32(ih), iwv = _mm512_set1_epi32(iw);
                /* unsigned compares: ih + ki < 0 wraps above H */
                __mmask16 k0 = m0 & _mm512_cmplt_epu32_mask(_mm512_add_epi32(ki0, ihv), Hv)
                                  & _mm512_cmplt_epu32_mask(_mm512_add_epi32(kj0, iwv), Wv);
                __mmask16 k1 = m1 & _mm512_cmplt_epu32_mask(_mm512_add_epi32(ki1, ihv), Hv)
                                  & _mm512_cmplt_epu32_mask(_mm512_add_epi32(kj1, iwv), Wv);
                const float* src = x + n * CHW + (long)ih * W + iw;
                _mm512_store_ps(Bp + kk * 32, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k0, off0, src, 4));
                _mm512_store_ps(Bp + kk * 32 + 16, k1 ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k1, off1, src, 4) : _mm512_setzero_ps());
                if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
            }
            fnn_mk_tiles_pa(O, kc, Ap, Bp, dw + j0, k, 1, m0, m1);
        }
    }
}
/* dwt (C*KH*KW, O) rows [r_lo, r_hi) += im2col(x) @ g.T at stride 1 with OW == W: the
   weight gradient transposed (row r = (c, ki, kj), column o), and gsum (when not NULL, O
   doubles) += g's channel sums. The GEMM's k, the batch's pixels, runs in steps inside one
   sample (P cut into ceil(P / FNN_MK_KC) equal steps), each step's sum formed from zero
   and then added. Per step, g's block is packed into 32-channel panels (Bp: g's rows are
   contiguous in the pixels, so 16x16 register transposes), and the thread's im2col rows
   are plain masked copies of x's planes (Ar, row-major): row (c, ki, kj) of pixel p is
   x[n, c] read flat at p + (ki - ph)*W + kj - pw, lanes off the image masked to zero.
   No gathers: fnn_mk_conv_dw gathers every panel row from 32 scattered addresses, a large
   share of its time at stride 1. The rows go in blocks of FNN_DWT_ROWS, so a block (139 KB)
   and g's panels stay in L2 while every panel passes over it.
   Ar: FNN_DWT_ROWS rows of FNN_MK_RA_LDA floats; Bp: ceil(O/32) x FNN_MK_KC x 32
   floats; both 64-byte aligned, the caller's.
   Each entry of dwt is one chain over the steps in order, whichever thread owns its row. */
static int _fnn_dwt_narrow_on = 1;
int fnn_set_dwt_narrow(int on) { int old = _fnn_dwt_narrow_on; _fnn_dwt_narrow_on = on; return old; }
void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W,
                               int KH, int KW, int ph, int pw, int OH, const float* x,
                               const float* g, float* dwt, float* Ar, float* Bp,
                               double* gsum) {
    long P = (long)OH * W, HW = (long)H * W;
    int steps = (int)((P + FNN_MK_KC - 1) / FNN_MK_KC);
    int per = (int)((P + steps - 1) / steps);
    int npan = (O + 31) / 32;
    unsigned short rowm[32][FNN_MK_KC / 16], colm[32][FNN_MK_KC / 16];
    for (int n = 0; n < N; n++) {
        const float* xn = x + (long)n * C * HW;
        const float* gn = g + (long)n * O * P;
        for (long pp0 = 0; pp0 < P; pp0 += per) {
            int kc = P - pp0 < per ? (int)(P - pp0) : per;
            int ng = (kc + 15) / 16;
            for (int a = 0; a < KH; a++) for (int q = 0; q < ng; q++) rowm[a][q] = 0;
            for (int b = 0; b < KW; b++) for (int q = 0; q < ng; q++) colm[b][q] = 0;
            int oh = (int)(pp0 / W), ow = (int)(pp0 - (long)oh * W);
            for (int l = 0; l < kc; l++) {
                unsigned short bit = (unsigned short)(1u << (l & 15));
                for (int a = 0; a < KH; a++)
                    if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a][l >> 4] |= bit;
                for (int b = 0; b < KW; b++)
                    if (ow + b - pw >= 0 && ow + b - pw < W) colm[b][l >> 4] |= bit;
                if (++ow == W) { ow = 0; oh++; }
            }
            for (int jp = 0; jp < npan; jp++) {
                int nr = O - jp * 32 < 32 ? O - jp * 32 : 32;
                fnn_mk_pack_t(gn, (int)P, jp * 32, nr, (int)pp0, kc, Bp + (long)jp * FNN_MK_KC * 32);
            }
            if (gsum) {
                for (int o = 0; o < O; o++) {
                    const float* row = gn + (long)o * P + pp0;
                    __m512d acc = _mm512_setzero_pd();
                    for (int q = 0; q < ng; q++) {
                        __m512 v = _mm512_maskz_loadu_ps(fnn_lanes(0, kc - 16 * q), row + 16 * q);
                        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
                    }
                    gsum[o] += _mm512_reduce_add_pd(acc);
                }
            }
            int c = r_lo / (KH * KW), ki = (r_lo / KW) % KH, kj = r_lo % KW;
            for (int b0 = r_lo; b0 < r_hi; b0 += FNN_DWT_ROWS) {
                int b1 = r_hi - b0 < FNN_DWT_ROWS ? r_hi : b0 + FNN_DWT_ROWS;
                for (int r = b0; r < b1; r++) {
                    const float* src = xn + c * HW + (long)(ki - ph) * W + (kj - pw) + pp0;
                    float* d = Ar + (long)(r - b0) * FNN_MK_RA_LDA;
                    for (int q = 0; q < ng; q++)
                        _mm512_store_ps(d + 16 * q, _mm512_maskz_loadu_ps(
                            (__mmask16)(rowm[ki][q] & colm[kj][q]), src + 16 * q));
                    if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
                }
                for (int jp = 0; jp < npan; jp++) {
                    int nr = O - jp * 32 < 32 ? O - jp * 32 : 32;
                    if (nr <= 16 && _fnn_dwt_narrow_on)
                        fnn_mk_tiles_ra16(b1 - b0, kc, Ar, Bp + (long)jp * FNN_MK_KC * 32,
                                          dwt + (long)b0 * O + jp * 32, O, 1, fnn_lanes(0, nr));
                    else
                        fnn_mk_tiles_ra(b1 - b0, kc, Ar, Bp + (long)jp * FNN_MK_KC * 32,
                                        dwt + (long)b0 * O + jp * 32, O, 1, fnn_lanes(0, nr),
                                        fnn_lanes(-16, nr - 16));
                }
            }
        }
    }
}

/* Direct stride-2 convolution: the output's pixels are the broadcasts and its channels the
   vectors, so the image is read where it lies (no gathered panel: the 16-lane gathers of
   fnn_mk_conv_sn are slow on some CPUs, see benchmarks/decisions.md). One tile: TW <= 7
   output pixels of a row x 32 channels, 14 accumulators, over k = (c, ki, kj) in order; the
   image is zero-padded beforehand (xr: the tile's first input row of the padded image,
   planes `plane` apart, rows Wp apart), wt the 32 channels' weights k-major (32 floats a
   tap, 64-byte aligned). tmp (TW x 32) := the tile's sums. TW is a constant where this
   is inlined (fnn_d2_block's switch), so the accumulators stay in registers. */
static inline __attribute__((always_inline)) void fnn_d2_tile(
        const int TW, const float* xr, long plane, int Wp, int C, int KH, int KW,
        const float* wt, float* tmp) {
    __m512 a0[7], a1[7];
    for (int j = 0; j < TW; j++) { a0[j] = _mm512_setzero_ps(); a1[j] = _mm512_setzero_ps(); }
    for (int c = 0; c < C; c++) {
        const float* xc = xr + (long)c * plane;
        for (int ki = 0; ki < KH; ki++) {
            const float* r = xc + (long)ki * Wp;
            for (int kj = 0; kj < KW; kj++, wt += 32) {
                __m512 w0 = _mm512_load_ps(wt), w1 = _mm512_load_ps(wt + 16);
                for (int j = 0; j < TW; j++) {
                    __m512 b = _mm512_set1_ps(r[2 * j + kj]);
                    a0[j] = _mm512_fmadd_ps(b, w0, a0[j]);
                    a1[j] = _mm512_fmadd_ps(b, w1, a1[j]);
                }
            }
        }
    }
    for (int j = 0; j < TW; j++) {
        _mm512_store_ps(tmp + j * 32, a0[j]);
        _mm512_store_ps(tmp + j * 32 + 16, a1[j]);
    }
}
/* out (O, OH, OW) of one sample, channels [32*ob, 32*ob + 32) := conv2d at stride 2 of the
   padded sample xp (C planes of Hp x Wp) + bias, wt: the channel block's weights (see
   fnn_d2_tile), tiles of 7 pixels along each output row. */
void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
                         const float* xp, const float* wt, int ob, const float* bias,
                         float* out) {
    float tmp[7 * 32] __attribute__((aligned(64)));
    long plane = (long)Hp * Wp, P = (long)OH * OW;
    int o0 = ob * 32, no = O - o0 < 32 ? O - o0 : 32;
    for (int oh = 0; oh < OH; oh++) {
        for (int j0 = 0; j0 < OW; j0 += 7) {
            int tw = OW - j0 < 7 ? OW - j0 : 7;
            const float* xr = xp + (long)(2 * oh) * Wp + 2 * j0;
            switch (tw) {
                case 7: fnn_d2_tile(7, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                case 6: fnn_d2_tile(6, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                case 5: fnn_d2_tile(5, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                case 4: fnn_d2_tile(4, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                case 3: fnn_d2_tile(3, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                case 2: fnn_d2_tile(2, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                default: fnn_d2_tile(1, xr, plane, Wp, C, KH, KW, wt, tmp); break;
            }
            float* d = out + (long)o0 * P + (long)oh * OW + j0;
            for (int o = 0; o < no; o++) {
                float bv = bias ? bias[o0 + o] : 0.0f;
                for (int j = 0; j < tw; j++) d[o * P + j] = tmp[j * 32 + o] + bv;
            }
        }
    }
}
/* wt[ob][k][j] := w[32*ob + j, k] (w: (O, K) row-major), zero for channels past O: 16x16
   register transposes (fnn_mk_pack_t) */
void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) {
    int nob = (O + 31) / 32;
    for (int ob = 0; ob < nob; ob++) {
        int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
        fnn_mk_pack_t(w, K, ob * 32, nr, 0, K, wt + (long)ob * K * 32);
    }
}
/* xp (Hp, Wp) := the plane x (H, W) placed ph rows and pw columns in, zeros around */
void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
                          float* xp) {
    /* 16-lane stores, not libc calls: the runs are a few dozen floats, shorter than
       memset's and memcpy's call overhead pays for */
    const __m512 z = _mm512_setzero_ps();
    for (long j = 0; j < (long)ph * Wp; j += 16)
        _mm512_mask_storeu_ps(xp + j, fnn_lanes(0, (int)((long)ph * Wp - j)), z);
    for (int i = 0; i < H; i++) {
        float* d = xp + (long)(ph + i) * Wp;
        const float* s = x + (long)i * W;
        for (int j = 0; j < pw; j++) d[j] = 0.0f;
        for (int j = 0; j < W; j += 16) {
            __mmask16 m = fnn_lanes(0, W - j);
            _mm512_mask_storeu_ps(d + pw + j, m, _mm512_maskz_loadu_ps(m, s + j));
        }
        for (int j = pw + W; j < Wp; j++) d[j] = 0.0f;
    }
    for (long j = (long)(ph + H) * Wp; j < (long)Hp * Wp; j += 16)
        _mm512_mask_storeu_ps(xp + j, fnn_lanes(0, (int)((long)Hp * Wp - j)), z);
}
/* Direct stride-2 weight gradient, the transpose of fnn_d2_block's layout: the taps of x
   are the broadcasts and dy's channels the vectors. dst rows r of one tile (R <= 8
   consecutive taps r = (c, ki, kj), offs[r] their offsets in the padded sample, 32
   floats apart: a channel block of dwt) x 32 channels += sum over the pixels [p0, p1) of
   x_padded tap * dyt, where dyt holds the 32 channels' dy pixel-major (32 floats a pixel,
   the batch's pixels in order); [p0, p1) is one step of FNN_MK_KC pixels, its sum formed
   from zero and then added (fnn_dw2_rows runs the steps in order): each entry's sums in the
   order of fnn_mk_conv_dw's, so the same bits. xp: the padded batch (samples img floats
   apart, rows Wp apart). */
static inline __attribute__((always_inline)) void fnn_dw2_tile(
        const int R, const float* xp, long img, int Wp, int OH, int OW, long p0, long p1,
        const long* offs, const float* dyt, float* dst) {
    long o0 = offs[0], o1 = offs[R > 1], o2 = offs[R > 2 ? 2 : 0], o3 = offs[R > 3 ? 3 : 0];
    long o4 = offs[R > 4 ? 4 : 0], o5 = offs[R > 5 ? 5 : 0], o6 = offs[R > 6 ? 6 : 0];
    long o7 = offs[R > 7 ? 7 : 0];
    long P = (long)OH * OW;
    {
        long n = p0 / P, pp = p0 - n * P;
        int oh = (int)(pp / OW), ow = (int)(pp - (long)oh * OW);
        const float* base = xp + n * img + (long)(2 * oh) * Wp + 2 * ow;
        __m512 a0[8], a1[8];
        for (int r = 0; r < R; r++) { a0[r] = _mm512_setzero_ps(); a1[r] = _mm512_setzero_ps(); }
        const float* d = dyt + p0 * 32;
        for (long p = p0; p < p1; p++, d += 32) {
            __m512 w0 = _mm512_load_ps(d), w1 = _mm512_load_ps(d + 16), b;
#define FNN_DW2_FMA(r) if (R > r) { b = _mm512_set1_ps(base[o##r]);                    \
            a0[r] = _mm512_fmadd_ps(b, w0, a0[r]); a1[r] = _mm512_fmadd_ps(b, w1, a1[r]); }
            FNN_DW2_FMA(0) FNN_DW2_FMA(1) FNN_DW2_FMA(2) FNN_DW2_FMA(3)
            FNN_DW2_FMA(4) FNN_DW2_FMA(5) FNN_DW2_FMA(6) FNN_DW2_FMA(7)
#undef FNN_DW2_FMA
            base += 2;
            if (++ow == OW) {
                ow = 0;
                base += 2 * (long)Wp - 2 * OW;
                if (++oh == OH) { oh = 0; n++; base = xp + n * img; }
            }
        }
        for (int r = 0; r < R; r++) {
            float* q = dst + r * 32;
            _mm512_store_ps(q, _mm512_add_ps(_mm512_load_ps(q), a0[r]));
            _mm512_store_ps(q + 16, _mm512_add_ps(_mm512_load_ps(q + 16), a1[r]));
        }
    }
}
/* dwt rows [r_lo, r_hi) of every channel block += im2col(x) @ dy.T at stride 2: tiles of
   8 taps (then the rest) x 32 channels over the batch's pixels (fnn_dw2_tile); dwt holds
   dw transposed by blocks of 32 channels (block ob: K x 32 floats, as fnn_d2_pack_weights
   lays out weights), dyt the channel blocks one after another, npix * 32 floats each. */
void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane,
                         long img, int Wp, int OH, int OW, long npix, const float* xp,
                         const float* dyt, float* dwt) {
    int nob = (O + 31) / 32;
    long offs[8];
    for (int ob = 0; ob < nob; ob++) {
        const float* d = dyt + (long)ob * npix * 32;
        /* steps outer, tiles inner: a step's dy (FNN_MK_KC pixels x 32 channels) stays in L1
           while every tile passes over it; each entry still takes the steps' sums in order */
        for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
            long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
            for (int r0 = r_lo; r0 < r_hi; r0 += 8) {
                int R = r_hi - r0 < 8 ? r_hi - r0 : 8;
                for (int r = 0; r < R; r++) {
                    int t = r0 + r, c = t / (KH * KW), ki = (t / KW) % KH, kj = t % KW;
                    offs[r] = (long)c * plane + (long)ki * Wp + kj;
                }
                float* dst = dwt + ((long)ob * K + r0) * 32;
                switch (R) {
                    case 8: fnn_dw2_tile(8, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 7: fnn_dw2_tile(7, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 6: fnn_dw2_tile(6, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 5: fnn_dw2_tile(5, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 4: fnn_dw2_tile(4, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 3: fnn_dw2_tile(3, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    case 2: fnn_dw2_tile(2, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                    default: fnn_dw2_tile(1, xp, img, Wp, OH, OW, p0, p1, offs, d, dst); break;
                }
            }
        }
    }
}
/* gsum[o] += g's sum over the batch's pixels for the 32 channels of block ob, from dyt
   (see fnn_dw2_rows), as fnn_mk_conv_dw forms it: in double, each step of FNN_MK_KC
   pixels summed from zero in pixel order, the steps' sums added in order */
void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) {
    const float* d = dyt + (long)ob * npix * 32;
    __m512d t[4], s[4];
    for (int v = 0; v < 4; v++) t[v] = _mm512_setzero_pd();
    for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
        long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
        for (int v = 0; v < 4; v++) s[v] = _mm512_setzero_pd();
        for (long p = p0; p < p1; p++)
            for (int v = 0; v < 4; v++)
                s[v] = _mm512_add_pd(s[v], _mm512_cvtps_pd(_mm256_load_ps(d + p * 32 + 8 * v)));
        for (int v = 0; v < 4; v++) t[v] = _mm512_add_pd(t[v], s[v]);
    }
    double sums[32];
    for (int v = 0; v < 4; v++) _mm512_storeu_pd(sums + 8 * v, t[v]);
    for (int j = 0; j < 32 && ob * 32 + j < O; j++) gsum[ob * 32 + j] += sums[j];
}
/* dyt's pixels of sample n (the channel blocks, see fnn_dw2_rows) := g's sample n (O, P)
   transposed, 16x16 register transposes */
void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g, float* dyt) {
    int nob = (O + 31) / 32;
    const float* gn = g + (long)n * O * P;
    for (int ob = 0; ob < nob; ob++) {
        int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
        fnn_mk_pack_t(gn, (int)P, ob * 32, nr, 0, (int)P, dyt + ((long)ob * npix + (long)n * P) * 32);
    }
}

static int _fnn_panel_direct_on = 1;
int fnn_set_panel_direct(int on) { int old = _fnn_panel_direct_on; _fnn_panel_direct_on = on; return old; }
/* One 32-column panel of an implicit stride-1 GEMM whose columns run on across samples:
   Cp (m x 32 lanes m0/m1, ldc apart) := A @ B over all k = C*KH*KW in FNN_MK_KC steps
   (A packed by fnn_pack_a8), where B's row (c, ki, kj) is, in the lanes of segment s
   (segm[s], one per sample the panel touches), the plane read flat from
   base + segoff[s] + c*H*W + (ki - ph)*W + kj - pw, masked by rowm[ki] & colm[kj] (the
   lanes whose pixel sees the image). Bp: the caller's FNN_MK_KC x 32 aligned floats. */
/* One row of a cross-sample panel: lanes of segment s read base + segoff[s] + shift, masked
   by mk (the lanes whose pixel sees the image), zero elsewhere. */
static inline void fnn_panel_row(unsigned mk, long shift, int nseg, const unsigned* segm,
                                 const long* segoff, const float* base, __m512* v0,
                                 __m512* v1) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        unsigned ms = mk & segm[s];
        const float* src = base + segoff[s] + shift;
        a = _mm512_mask_loadu_ps(a, (__mmask16)ms, src);
        b = _mm512_mask_loadu_ps(b, (__mmask16)(ms >> 16), src + 16);
    }
    *v0 = a;
    *v1 = b;
}
#define FNN_PD_ZERO(r) c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps();
#define FNN_PD_FMA(r) a = _mm512_set1_ps(ap[r]);                                            \
    c##r##0 = _mm512_fmadd_ps(a, v0, c##r##0); c##r##1 = _mm512_fmadd_ps(a, v1, c##r##1);
#define FNN_PD_ST(r) if (r < m) {                                                          \
    float* cr = Cp + (long)r * ldc;                                                        \
    if (k0 > 0) { c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, cr));         \
                  c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m1, cr + 16)); } \
    _mm512_mask_storeu_ps(cr, m0, c##r##0); _mm512_mask_storeu_ps(cr + 16, m1, c##r##1); }
/* fnn_panel_gemm for m <= 8 rows: B's values go from the masked loads straight into the
   FMAs of all 8 (zero-padded) rows, never packed. With few rows a packed panel served too
   little work: LeNet's 16->6 dx spent more time packing than multiplying. Each entry is
   the same sum in the same order as the packed path's 4-, 2- and 1-row tiles, so the
   same bits. */
static void fnn_panel_direct(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                             const unsigned* rowm, const unsigned* colm, int nseg,
                             const unsigned* segm, const long* segoff, const float* base,
                             const float* Ap, float* Cp, long ldc, __mmask16 m0,
                             __mmask16 m1) {
    int k = C * KH * KW;
    long HW = (long)H * W;
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
        __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, a;
        FNN_MK_REP8(FNN_PD_ZERO)
        const float* ap = Ap + (long)k0 * 8;
        for (int kk = 0; kk < kc; kk++, ap += 8) {
            unsigned mk = rowm[ki] & colm[kj];
            long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw);
            __m512 v0, v1;
            fnn_panel_row(mk, shift, nseg, segm, segoff, base, &v0, &v1);
            FNN_MK_REP8(FNN_PD_FMA)
            if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
        }
        FNN_MK_REP8(FNN_PD_ST)
    }
}
static inline void fnn_panel_gemm(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                                  const unsigned* rowm, const unsigned* colm, int nseg,
                                  const unsigned* segm, const long* segoff, const float* base,
                                  const float* Ap, float* Bp, float* Cp, long ldc,
                                  __mmask16 m0, __mmask16 m1) {
    if (m <= 8 && _fnn_panel_direct_on) {
        fnn_panel_direct(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, base, Ap,
                         Cp, ldc, m0, m1);
        return;
    }
    int k = C * KH * KW, mt = (m + 7) / 8;
    long HW = (long)H * W;
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
        for (int kk = 0; kk < kc; kk++) {
            unsigned mk = rowm[ki] & colm[kj];
            long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw);
            __m512 v0, v1;
            fnn_panel_row(mk, shift, nseg, segm, segoff, base, &v0, &v1);
            _mm512_store_ps(Bp + kk * 32, v0);
            _mm512_store_ps(Bp + kk * 32 + 16, v1);
            if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
        }
        fnn_mk_tiles_pa(m, kc, Ap + (long)k0 * mt * 8, Bp, Cp, ldc, k0 > 0, m0, m1);
    }
}
/* Cout[i, p] := sum_r A[i, r] * B[r, p] for p in [0, ncols), ldc apart (A packed by
   fnn_pack_a8), where the columns
   p = n*P + oh*W + ow (P = ncols / nb) run over the output pixels of nb samples one after
   another and row r = (c, ki, kj) of B is the stride-1 im2col of sample n's (C, H, W)
   plane (sample_stride apart) at offset (ki - ph, kj - pw), zero off the plane: the
   output is as wide as the plane, so within one sample a row of a B panel is the plane
   read flat, and a 32-column panel that crosses samples is a few masked loads (one per
   sample it touches). fnn_mk_conv_s1 with panels that run on across samples, so small
   images (7x7 = 49 pixels) do not waste a ragged panel per sample. */
void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW,
                            int ph, int pw, const float* Ap, const float* g,
                            long sample_stride, float* Cout, int ldc) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32], segm[33];
    long segoff[33];
    long ncols = (long)nb * P;
    for (long j0 = 0; j0 < ncols; j0 += 32) {
        int nr = ncols - j0 < 32 ? (int)(ncols - j0) : 32;
        __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
        __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
        for (int a = 0; a < KH; a++) rowm[a] = 0;
        for (int b = 0; b < KW; b++) colm[b] = 0;
        int nseg = 0;
        long nprev = -1;
        for (int q = 0; q < nr; q++) {
            long p = j0 + q, n = p / P, pp = p - n * P;
            int oh = (int)(pp / W), ow = (int)(pp - (long)oh * W);
            for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
            for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
            if (n != nprev) {
                segm[nseg] = 0;
                /* lane q of this sample reads plane_n + (j0 + q - n*P) + shift */
                segoff[nseg] = n * sample_stride - n * P + j0;
                nseg++;
                nprev = n;
            }
            segm[nseg - 1] |= 1u << q;
        }
        fnn_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, g, Ap, Bp,
                       Cout + j0, ldc, m0, m1);
    }
}
/* out (N, m, P) columns [j_lo, j_hi) of the batch (p = n*P + pp) := A @ im2col(x) + bias
   at stride 1 with OW == W (P = OH*W), A packed by fnn_pack_a8: fnn_mk_conv_s1 with the
   32-column panels of fnn_mk_subpixel, which run on across samples, so an image whose P is
   not a multiple of 32 does not cost a ragged panel per sample (14x14: 7 panels for 196
   columns, 12.5% of the FMAs for nothing). A panel inside one sample is written in place;
   one that crosses samples is formed in Ct (m x 32 floats) and copied out, a run of lanes
   per sample. */
void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W,
                            int KH, int KW, int ph, int pw, const float* Ap, const float* x,
                            const float* bias, float* out, float* Ct) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32], segm[33];
    long segoff[33], segdst[33];
    int segq[34];
    long CHW = (long)C * H * W;
    for (long j0 = j_lo; j0 < j_hi; j0 += 32) {
        int nr = j_hi - j0 < 32 ? (int)(j_hi - j0) : 32;
        __mmask16 m0 = fnn_lanes(0, nr), m1 = fnn_lanes(-16, nr - 16);
        for (int a = 0; a < KH; a++) rowm[a] = 0;
        for (int b = 0; b < KW; b++) colm[b] = 0;
        int nseg = 0;
        long n = j0 / P, pp = j0 - n * P;
        int oh = (int)(pp / W), ow = (int)(pp - (long)oh * W);
        for (int q = 0; q < nr; q++) {
            if (q == 0 || pp == 0) {
                segm[nseg] = 0;
                segoff[nseg] = n * CHW - n * P + j0;  /* lane q reads x + segoff + q + shift */
                segdst[nseg] = n * m * P + pp - q;    /* lane q of row i goes to out + segdst + i*P + q */
                segq[nseg] = q;
                nseg++;
            }
            segm[nseg - 1] |= 1u << q;
            for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
            for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
            if (++ow == W) { ow = 0; oh++; }
            if (++pp == P) { pp = 0; oh = 0; n++; }
        }
        segq[nseg] = nr;
        float* Cp = nseg == 1 ? out + segdst[0] : Ct;
        long ldc = nseg == 1 ? P : 32;
        fnn_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, x, Ap, Bp,
                       Cp, ldc, m0, m1);
        for (int s = 0; s < nseg; s++) {
            __mmask16 ma = fnn_lanes(segq[s], segq[s + 1]), mb = fnn_lanes(segq[s] - 16, segq[s + 1] - 16);
            float* dst = out + segdst[s];
            for (int i = 0; i < m; i++) {
                __m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
                const float* src = nseg == 1 ? dst + (long)i * P : Ct + i * 32;
                float* d = dst + (long)i * P;
                if (ma) _mm512_mask_storeu_ps(d, ma, _mm512_add_ps(_mm512_maskz_loadu_ps(ma, src), bv));
                if (mb) _mm512_mask_storeu_ps(d + 16, mb, _mm512_add_ps(_mm512_maskz_loadu_ps(mb, src + 16), bv));
            }
        }
    }
}
/* Row i < ha of dst (rstep apart, W wide) := its two stride-2 phases interleaved,
   dst[i*rstep + 2j + b] = src_b[i*wb_b + j] + bv (wb_0 = ceil(W/2), wb_1 = floor(W/2)):
   8 + 8 sources per full 16-lane store, so every line of dx is written once, whole. */
void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0,
                              const float* src1, int ha, float bv) {
    const __m512i mix = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512 b = _mm512_set1_ps(bv);
    int wb0 = (W + 1) / 2, wb1 = W / 2;
    for (int i = 0; i < ha; i++) {
        const float* s0 = src0 + (long)i * wb0;
        const float* s1 = src1 + (long)i * wb1;
        float* d = dst + (long)i * rstep;
        for (int j0 = 0; j0 < wb0; j0 += 8) {
            int c0 = wb0 - j0 < 8 ? wb0 - j0 : 8, c1 = wb1 - j0 < 8 ? wb1 - j0 : 8;
            int cnt = W - 2 * j0 < 16 ? W - 2 * j0 : 16;
            __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)((1u << c0) - 1), s0 + j0);
            __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)((1u << c1) - 1), s1 + j0);
            __m512 v = _mm512_add_ps(_mm512_permutex2var_ps(v0, mix, v1), b);
            _mm512_mask_storeu_ps(d + 2 * j0, (__mmask16)((1u << cnt) - 1), v);
        }
    }
}
