/* The AVX2+FMA convolution kernels declared in conv.h (see there for what each computes; the
   comments of conv_avx512.c describe the layouts, which both levels share). The register
   tiles are mk_avx2.h's 16-column halves of the 32-column panels: 6 rows over a strided A,
   4 rows over 8-row packed A tiles, 6 pixels or 6 taps for the direct stride-2 kernels. Each
   entry is the same sum in the same order as at the AVX-512 level; 16-lane masks become
   8-lane vector masks (maskload/maskstore, masked gathers). */
#include "mk_avx2.h"
#include "conv_common.h"

/* the lanes of bits 0..7 of m as an 8-lane vector mask: bit i of m shifted into lane i's sign
   bit, the only bit maskload, maskstore and the masked gathers read */
static inline __m256i fnn2_mask8(unsigned m) {
    return _mm256_sllv_epi32(_mm256_set1_epi32((int)m), _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24));
}
/* 8 floats from p in the lanes of bits 0..7 of m, zero elsewhere (the others are not read) */
static inline __m256 fnn2_load_m(unsigned m, const float* p) {
    m &= 0xFFu;
    if (m == 0xFFu) return _mm256_loadu_ps(p);
    return m ? _mm256_maskload_ps(p, fnn2_mask8(m)) : _mm256_setzero_ps();
}
/* p[lane] := v[lane] for the lanes of bits 0..7 of m */
static inline void fnn2_store_m(unsigned m, float* p, __m256 v) {
    m &= 0xFFu;
    if (m == 0xFFu) _mm256_storeu_ps(p, v);
    else if (m) _mm256_maskstore_ps(p, fnn2_mask8(m), v);
}
/* lanes [a, b) of a 32-lane mask, a and b clipped to [0, 32] */
static inline unsigned fnn2_lanes(int a, int b) {
    a = a < 0 ? 0 : (a > 32 ? 32 : a);
    b = b < 0 ? 0 : (b > 32 ? 32 : b);
    return b > a ? (unsigned)(((1ull << b) - 1ull) & ~((1ull << a) - 1ull)) : 0u;
}
/* 32 floats at dst (32-byte aligned) := src's lanes of mk, zero elsewhere */
static inline void fnn2_row32(unsigned mk, const float* src, float* dst) {
    for (int v = 0; v < 4; v++) _mm256_store_ps(dst + 8 * v, fnn2_load_m(mk >> (8 * v), src + 8 * v));
}

void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW, int ph,
                    int pw, const float* A, const float* plane, float* Cout, int ldc) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32];
    int k = C * KH * KW, lda = k, OW = W;
    /* the sample into L2 first and the output rows for writing (see conv_avx512.c) */
    for (long q = 0; q < (long)C * H * W; q += 16) _mm_prefetch((const char*)(plane + q), _MM_HINT_T1);
    for (int i = 0; i < m; i++)
        for (int q = p_lo; q < p_hi; q += 16) __builtin_prefetch(Cout + (long)i * ldc + q, 1, 3);
    for (int j0 = p_lo; j0 < p_hi; j0 += 32) {
        int nr = p_hi - j0 < 32 ? p_hi - j0 : 32;
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
                const float* src = plane + (long)c * H * W + (long)(ki - ph) * W + (kj - pw) + j0;
                fnn2_row32(rowm[ki] & colm[kj], src, Bp + kk * 32);
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            fnn_mk2_panel(m, kc, A + k0, lda, 1, Bp, Cout, ldc, j0, nr, k0 > 0);
        }
    }
}

void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) {
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)P));
    for (int n = 0; n < nb; n++) {
        for (int o0 = 0; o0 < O; o0 += 8) {
            unsigned lanes = fnn2_lanes(0, O - o0) & 0xFFu;
            __m256 mk = _mm256_castsi256_ps(fnn2_mask8(lanes));
            const float* s = src + ((long)n * O + o0) * P;
            float* d = dst + (long)n * P * O + o0;
            for (long p = 0; p < P; p++)
                fnn2_store_m(lanes, d + p * O,
                             _mm256_mask_i32gather_ps(_mm256_setzero_ps(), s + p, idx, mk, 4));
        }
    }
}

/* The output rows [lo, hi) whose source row (kernel row i) lies on the plane; dst's rows
   above and below them zeroed */
static inline void fnn_im2col_rows_on_plane(int H, int i, int sh, int ph, int OH, int OW,
                                            float* dst, int* lo, int* hi) {
    int oh_lo = ph - i > 0 ? (ph - i + sh - 1) / sh : 0;
    int oh_hi = H - 1 + ph - i < 0 ? 0 : (H - 1 + ph - i) / sh + 1;
    if (oh_hi > OH) oh_hi = OH;
    if (oh_lo > oh_hi) oh_lo = oh_hi;
    for (long q = 0; q < (long)oh_lo * OW; q++) dst[q] = 0.0f;
    for (long q = (long)oh_hi * OW; q < (long)OH * OW; q++) dst[q] = 0.0f;
    *lo = oh_lo;
    *hi = oh_hi;
}

void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw, int ph,
                        int pw, int OH, int OW, float* dst) {
    int off = j - pw;
    if (sh == 1 && sw == 1 && OW == W && !(OW >= 8 && OW <= 64)) {
        fnn_im2col_row_same(plane, H, W, i, ph, off, OH, OW, dst);
        return;
    }
    /* [lo, hi): the output columns whose source column lies on the row */
    int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
    int hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
    if (lo > OW) lo = OW;
    if (hi > OW) hi = OW;
    if (hi < lo) hi = lo;
    if (sw == 1 && lo == 0 && hi == OW && OW >= 8) {
        /* every column on the row (no horizontal padding), rows of 8 floats or more: the rows
           on the plane as vector copies, the last vector overlapping the one before it (the
           same values), the rows above and below it zero */
        int oh_lo, oh_hi;
        fnn_im2col_rows_on_plane(H, i, sh, ph, OH, OW, dst, &oh_lo, &oh_hi);
        const float* src = plane + (long)(oh_lo * sh - ph + i) * W + off;
        float* d = dst + (long)oh_lo * OW;
        long sstep = (long)sh * W;
        for (int oh = oh_lo; oh < oh_hi; oh++, src += sstep, d += OW) {
            int ow = 0;
            for (; ow + 8 < OW; ow += 8) _mm256_storeu_ps(d + ow, _mm256_loadu_ps(src + ow));
            _mm256_storeu_ps(d + OW - 8, _mm256_loadu_ps(src + OW - 8));
        }
        return;
    }
    if (sw == 1 && OW >= 8 && OW <= 64) {
        /* columns off the plane too (horizontal padding): each row as the same few masked
           vector loads (a masked-off lane reads nothing and gives 0, the padding), the last
           vector overlapping the one before it */
        int oh_lo, oh_hi;
        fnn_im2col_rows_on_plane(H, i, sh, ph, OH, OW, dst, &oh_lo, &oh_hi);
        int nv = (OW + 7) / 8, pos[8];
        __m256i mask[8];
        const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (int v = 0; v < nv; v++) {
            pos[v] = v == nv - 1 ? OW - 8 : 8 * v;
            __m256i col = _mm256_add_epi32(_mm256_set1_epi32(pos[v]), step);
            mask[v] = _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(lo - 1)),
                                       _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), col));
        }
        float* d = dst + (long)oh_lo * OW;
        long sstep = (long)sh * W;
        const float* src = plane + (long)(oh_lo * sh - ph + i) * W + off;
        for (int oh = oh_lo; oh < oh_hi; oh++, src += sstep, d += OW)
            for (int v = 0; v < nv; v++)
                _mm256_storeu_ps(d + pos[v], _mm256_maskload_ps(src + pos[v], mask[v]));
        return;
    }
    for (int oh = 0; oh < OH; oh++) {
        float* d = dst + (long)oh * OW;
        int ih = oh * sh - ph + i;
        if (ih < 0 || ih >= H) {
            for (int ow = 0; ow < OW; ow++) d[ow] = 0.0f;
            continue;
        }
        const float* src = plane + (long)ih * W + off;
        for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
        if (sw == 1) {
            int ow = lo;
            for (; ow + 8 <= hi; ow += 8) _mm256_storeu_ps(d + ow, _mm256_loadu_ps(src + ow));
            /* the tail as one vector ending at hi, overlapping the last one (same values): rows
               of 10-14 floats otherwise spend most of their time in the scalar loop */
            if (ow < hi && hi - lo >= 8) {
                _mm256_storeu_ps(d + hi - 8, _mm256_loadu_ps(src + hi - 8));
                ow = hi;
            }
            for (; ow < hi; ow++) d[ow] = src[ow];
        } else if (sw == 2) {
            /* stride 2 (a strided 1x1 projection's gather): 8 outputs from two 8-float loads,
               their even lanes; only while both loads stay inside the row (W - off floats) */
            int ow = lo;
            for (; ow + 8 <= hi && 2L * ow + 16 <= (long)W - off; ow += 8) {
                __m256 a = _mm256_loadu_ps(src + 2L * ow), b = _mm256_loadu_ps(src + 2L * ow + 8);
                __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
                _mm256_storeu_ps(d + ow, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                             _mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
            }
            for (; ow < hi; ow++) d[ow] = src[2L * ow];
        } else {
            for (int ow = lo; ow < hi; ow++) d[ow] = src[(long)ow * sw];
        }
        for (int ow = hi; ow < OW; ow++) d[ow] = 0.0f;
    }
}

void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW, int sh,
                    int sw, int ph, int pw, int OH, int OW, int mr, const float* Ap,
                    const float* x, const float* bias, float* out, float* Ct) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    int mt = (m + mr - 1) / mr;
    unsigned rowm[32], colm[32];
    int offs[32] __attribute__((aligned(32)));
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
        const float* xs = x + nfirst * CHW;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            for (int kk = 0; kk < kc; kk++) {
                unsigned mk = rowm[ki] & colm[kj];
                const float* src = xs + (long)c * HW + (long)(ki - ph) * W + (kj - pw);
                for (int v = 0; v < 4; v++) {
                    unsigned lanes = (mk >> (8 * v)) & 0xFFu;
                    __m256 g = _mm256_setzero_ps();
                    if (lanes)
                        g = _mm256_mask_i32gather_ps(g, src, _mm256_load_si256((const __m256i*)(offs + 8 * v)),
                                                     _mm256_castsi256_ps(fnn2_mask8(lanes)), 4);
                    _mm256_store_ps(Bp + kk * 32 + 8 * v, g);
                }
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            fnn_mk2_panel_pa(mt * 8, kc, Ap + (long)k0 * mt * 8, Bp, Ct, 32, 32, k0 > 0);
        }
        /* the panel to NCHW: one run of lanes per sample it touches */
        for (int q0 = 0; q0 < nr;) {
            long p = j0 + q0, n = p / P, pp = p - n * P;
            int q1 = (int)(q0 + (P - pp) < nr ? q0 + (P - pp) : nr);
            float* dst = out + n * m * P + pp - q0;
            for (int i = 0; i < m; i++) {
                float bv = bias ? bias[i] : 0.0f;
                float* d = dst + (long)i * P;
                const float* s = Ct + i * 32;
                for (int q = q0; q < q1; q++) d[q] = s[q] + bv;
            }
            q0 = q1;
        }
    }
}

void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH, int KW, int sh,
                    int sw, int ph, int pw, int OH, int OW, const float* x, const float* g,
                    float* dw, float* Ap, long q_lo, long q_hi, double* gsum) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    int offs[32] __attribute__((aligned(32))), kis[32] __attribute__((aligned(32)));
    int kjs[32] __attribute__((aligned(32)));
    int k = C * KH * KW, mt = (O + 7) / 8;
    long P = (long)OH * OW, HW = (long)H * W, CHW = (long)C * HW;
    const __m256i Hv = _mm256_set1_epi32(H), Wv = _mm256_set1_epi32(W), m1v = _mm256_set1_epi32(-1);
    const __m256i gidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                            _mm256_set1_epi32((int)P));
    (void)N;
    for (long p0 = q_lo; p0 < q_hi; p0 += FNN_MK_KC) {
        int kc = q_hi - p0 < FNN_MK_KC ? (int)(q_hi - p0) : FNN_MK_KC;
        long n0 = p0 / P, pp0 = p0 - n0 * P;
        /* a tile per pixel: channels t*8 .. t*8 + 7 of g[n, :, pp], P apart, one gather */
        for (int t = 0; t < mt; t++) {
            __m256 om = _mm256_castsi256_ps(fnn2_mask8(fnn2_lanes(0, O - t * 8)));
            float* d0 = Ap + (long)t * kc * 8;
            long n = n0, pp = pp0;
            __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
            for (int kk = 0; kk < kc; kk++) {
                __m256 v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), g + (n * O + t * 8) * P + pp,
                                                    gidx, om, 4);
                _mm256_store_ps(d0 + kk * 8, v);
                if (gsum) {
                    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
                    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
                }
                if (++pp == P) { pp = 0; n++; }
            }
            if (gsum) {
                double sums[8];
                _mm256_storeu_pd(sums, s0);
                _mm256_storeu_pd(sums + 4, s1);
                for (int r = 0; r < 8 && t * 8 + r < O; r++) gsum[t * 8 + r] += sums[r];
            }
        }
        for (int pn = plo; pn < phi; pn++) {
            int j0 = pn * 32, nr = k - j0 < 32 ? k - j0 : 32;
            for (int q = 0; q < 32; q++) {
                int r = j0 + (q < nr ? q : 0);
                int c = r / (KH * KW), ki = (r / KW) % KH, kj = r % KW;
                offs[q] = (int)(c * HW + (long)ki * W + kj);
                kis[q] = ki;
                kjs[q] = kj;
            }
            int nv = (nr + 7) / 8;
            long n = n0;
            int oh = (int)(pp0 / OW), ow = (int)(pp0 - (long)oh * OW);
            for (int kk = 0; kk < kc; kk++) {
                int ih = oh * sh - ph, iw = ow * sw - pw;
                __m256i ihv = _mm256_set1_epi32(ih), iwv = _mm256_set1_epi32(iw);
                const float* src = x + n * CHW + (long)ih * W + iw;
                for (int v = 0; v < 4; v++) {
                    __m256 b = _mm256_setzero_ps();
                    if (v < nv) {
                        __m256i a = _mm256_add_epi32(_mm256_load_si256((const __m256i*)(kis + 8 * v)), ihv);
                        __m256i c = _mm256_add_epi32(_mm256_load_si256((const __m256i*)(kjs + 8 * v)), iwv);
                        __m256i ok = _mm256_and_si256(
                            _mm256_and_si256(_mm256_cmpgt_epi32(a, m1v), _mm256_cmpgt_epi32(Hv, a)),
                            _mm256_and_si256(_mm256_cmpgt_epi32(c, m1v), _mm256_cmpgt_epi32(Wv, c)));
                        ok = _mm256_and_si256(ok, fnn2_mask8(fnn2_lanes(0, nr - 8 * v)));
                        b = _mm256_mask_i32gather_ps(b, src, _mm256_load_si256((const __m256i*)(offs + 8 * v)),
                                                     _mm256_castsi256_ps(ok), 4);
                    }
                    _mm256_store_ps(Bp + kk * 32 + 8 * v, b);
                }
                if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
            }
            fnn_mk2_panel_pa(O, kc, Ap, Bp, dw + j0, k, nr, 2);
        }
    }
}

/* no effect at this level: its tiles are 16 columns wide, so a panel of at most 16 columns
   already runs one vector per row (the AVX-512 level's narrow tiles) */
static int _fnn_dwt_narrow_on = 1;
int fnn_set_dwt_narrow(int on) { int old = _fnn_dwt_narrow_on; _fnn_dwt_narrow_on = on; return old; }
void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W, int KH, int KW,
                        int ph, int pw, int OH, const float* x, const float* g, float* dwt,
                        float* Ar, float* Bp, double* gsum) {
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
                fnn_mk2_pack_t(gn, (int)P, jp * 32, nr, (int)pp0, kc, Bp + (long)jp * FNN_MK_KC * 32);
            }
            if (gsum) {
                /* lane j % 8 sums element j, then the lanes as the AVX-512 level reduces them */
                for (int o = 0; o < O; o++) {
                    const float* row = gn + (long)o * P + pp0;
                    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
                    for (int q = 0; q < 2 * ng; q++) {
                        __m256 v = fnn2_load_m(fnn2_lanes(0, kc - 8 * q), row + 8 * q);
                        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
                        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
                    }
                    __m256d t = _mm256_add_pd(lo, hi);
                    __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
                    gsum[o] += _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
                }
            }
            int c = r_lo / (KH * KW), ki = (r_lo / KW) % KH, kj = r_lo % KW;
            for (int b0 = r_lo; b0 < r_hi; b0 += FNN_DWT_ROWS) {
                int b1 = r_hi - b0 < FNN_DWT_ROWS ? r_hi : b0 + FNN_DWT_ROWS;
                for (int r = b0; r < b1; r++) {
                    const float* src = xn + c * HW + (long)(ki - ph) * W + (kj - pw) + pp0;
                    float* d = Ar + (long)(r - b0) * FNN_MK_RA_LDA;
                    for (int q = 0; q < ng; q++) {
                        unsigned mk = rowm[ki][q] & colm[kj][q];
                        _mm256_store_ps(d + 16 * q, fnn2_load_m(mk, src + 16 * q));
                        _mm256_store_ps(d + 16 * q + 8, fnn2_load_m(mk >> 8, src + 16 * q + 8));
                    }
                    if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
                }
                for (int jp = 0; jp < npan; jp++) {
                    int nr = O - jp * 32 < 32 ? O - jp * 32 : 32;
                    fnn_mk2_panel(b1 - b0, kc, Ar, FNN_MK_RA_LDA, 1, Bp + (long)jp * FNN_MK_KC * 32,
                                  dwt + (long)b0 * O, O, jp * 32, nr, 2);
                }
            }
        }
    }
}

/* Direct stride-2 forward (see conv_avx512.c's fnn_d2_tile): TW <= 6 output pixels x 16
   channels (one half of the block's 32, wt at the half: 32 floats a tap), 12 accumulators.
   Pixel j's taps start at xp + off[j] (its padded input row and column), so a tile may span
   output rows: fnn_d2_block cuts a plane's pixels into tiles of 5-6 where rows of 7 would leave
   a 1-pixel tile waiting on its FMA chains. tmp rows 32 floats apart. */
static inline __attribute__((always_inline)) void fnn2_d2_tile(
        const int TW, const float* xp, const long* off, long plane, int Wp, int C, int KH,
        int KW, const float* wt, float* tmp) {
    __m256 a0[6], a1[6];
    const float* b[6];
    for (int j = 0; j < TW; j++) {
        b[j] = xp + off[j];
        a0[j] = _mm256_setzero_ps();
        a1[j] = _mm256_setzero_ps();
    }
    for (int c = 0; c < C; c++) {
        for (int ki = 0; ki < KH; ki++) {
            long r = (long)c * plane + (long)ki * Wp;
            for (int kj = 0; kj < KW; kj++, wt += 32) {
                __m256 w0 = _mm256_loadu_ps(wt), w1 = _mm256_loadu_ps(wt + 8);
                for (int j = 0; j < TW; j++) {
                    __m256 v = _mm256_broadcast_ss(b[j] + r + kj);
                    a0[j] = _mm256_fmadd_ps(v, w0, a0[j]);
                    a1[j] = _mm256_fmadd_ps(v, w1, a1[j]);
                }
            }
        }
    }
    for (int j = 0; j < TW; j++) {
        _mm256_storeu_ps(tmp + j * 32, a0[j]);
        _mm256_storeu_ps(tmp + j * 32 + 8, a1[j]);
    }
}
/* out (O, OH, OW) of one sample, channels [32*ob, 32*ob + 32) := conv2d at stride 2 of the
   padded sample xp + bias: the plane's pixels in order, in ceil(P/6) tiles of balanced sizes */
void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp, const float* xp,
                  const float* wt, int ob, const float* bias, float* out) {
    float tmp[6 * 32] __attribute__((aligned(64)));
    long off[6];
    long plane = (long)Hp * Wp, P = (long)OH * OW;
    int o0 = ob * 32, no = O - o0 < 32 ? O - o0 : 32;
    long nt = (P + 5) / 6;
    for (long t = 0, p0 = 0; t < nt; t++) {
        int tw = (int)((P - p0 + (nt - t) - 1) / (nt - t));
        for (int j = 0; j < tw; j++) {
            long p = p0 + j, oh = p / OW, ow = p - oh * OW;
            off[j] = 2 * oh * Wp + 2 * ow;
        }
        for (int h = 0; h * 16 < no; h++) {
            const float* w = wt + h * 16;
            float* tm = tmp + h * 16;
            switch (tw) {
                case 6: fnn2_d2_tile(6, xp, off, plane, Wp, C, KH, KW, w, tm); break;
                case 5: fnn2_d2_tile(5, xp, off, plane, Wp, C, KH, KW, w, tm); break;
                case 4: fnn2_d2_tile(4, xp, off, plane, Wp, C, KH, KW, w, tm); break;
                case 3: fnn2_d2_tile(3, xp, off, plane, Wp, C, KH, KW, w, tm); break;
                case 2: fnn2_d2_tile(2, xp, off, plane, Wp, C, KH, KW, w, tm); break;
                default: fnn2_d2_tile(1, xp, off, plane, Wp, C, KH, KW, w, tm); break;
            }
        }
        float* d = out + (long)o0 * P + p0;
        for (int o = 0; o < no; o++) {
            float bv = bias ? bias[o0 + o] : 0.0f;
            for (int j = 0; j < tw; j++) d[o * P + j] = tmp[j * 32 + o] + bv;
        }
        p0 += tw;
    }
}
void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) {
    int nob = (O + 31) / 32;
    for (int ob = 0; ob < nob; ob++) {
        int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
        fnn_mk2_pack_t(w, K, ob * 32, nr, 0, K, wt + (long)ob * K * 32);
    }
}
/* zeros over n floats at p, 8-lane stores (the runs are short: no libc call) */
static inline void fnn2_zero(float* p, long n) {
    long j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_setzero_ps());
    if (j < n) fnn2_store_m(fnn2_lanes(0, (int)(n - j)), p + j, _mm256_setzero_ps());
}
void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp, float* xp) {
    fnn2_zero(xp, (long)ph * Wp);
    for (int i = 0; i < H; i++) {
        float* d = xp + (long)(ph + i) * Wp;
        const float* s = x + (long)i * W;
        for (int j = 0; j < pw; j++) d[j] = 0.0f;
        for (int j = 0; j < W; j += 8) {
            unsigned m = fnn2_lanes(0, W - j);
            fnn2_store_m(m, d + pw + j, fnn2_load_m(m, s + j));
        }
        for (int j = pw + W; j < Wp; j++) d[j] = 0.0f;
    }
    fnn2_zero(xp + (long)(ph + H) * Wp, (long)(Hp - ph - H) * Wp);
}
/* Direct stride-2 weight gradient (see conv_avx512.c's fnn_dw2_tile): R <= 6 taps x 16
   channels (dyt and dst at the half; both 32 floats a pixel / a row), 12 accumulators, over
   the pixels [p0, p1) of one FNN_MK_KC step: dst += the step's sums, formed from zero */
static inline __attribute__((always_inline)) void fnn2_dw2_tile(
        const int R, const float* xp, long img, int Wp, int OH, int OW, long p0, long p1,
        const long* offs, const float* dyt, float* dst) {
    long o[6];
    for (int r = 0; r < 6; r++) o[r] = offs[r < R ? r : 0];
    long P = (long)OH * OW;
    long n = p0 / P, pp = p0 - n * P;
    int oh = (int)(pp / OW), ow = (int)(pp - (long)oh * OW);
    const float* base = xp + n * img + (long)(2 * oh) * Wp + 2 * ow;
    __m256 a0[6], a1[6];
    for (int r = 0; r < R; r++) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
    const float* d = dyt + p0 * 32;
    for (long p = p0; p < p1; p++, d += 32) {
        __m256 w0 = _mm256_loadu_ps(d), w1 = _mm256_loadu_ps(d + 8);
        for (int r = 0; r < R; r++) {
            __m256 b = _mm256_broadcast_ss(base + o[r]);
            a0[r] = _mm256_fmadd_ps(b, w0, a0[r]);
            a1[r] = _mm256_fmadd_ps(b, w1, a1[r]);
        }
        base += 2;
        if (++ow == OW) {
            ow = 0;
            base += 2 * (long)Wp - 2 * OW;
            if (++oh == OH) { oh = 0; n++; base = xp + n * img; }
        }
    }
    for (int r = 0; r < R; r++) {
        float* q = dst + r * 32;
        _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), a0[r]));
        _mm256_storeu_ps(q + 8, _mm256_add_ps(_mm256_loadu_ps(q + 8), a1[r]));
    }
}
/* The steps of pixels are the outer loop and the tiles of taps the inner one: a step's dy
   (FNN_MK_KC pixels x 16 channels, 16 KB) stays in L1 while every tile passes over it, where
   tiles over all the pixels streamed the whole of dy from L2 once per 6 taps. Each entry
   still takes the steps' sums in order: the same bits. */
void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane, long img, int Wp,
                  int OH, int OW, long npix, const float* xp, const float* dyt, float* dwt) {
    int nob = (O + 31) / 32;
    long offs[6];
    /* ceil(n/6) tiles of balanced sizes: no 1- or 2-tap tile waiting on its FMA chains */
    int ntl = (r_hi - r_lo + 5) / 6;
    for (int ob = 0; ob < nob; ob++) {
        const float* d = dyt + (long)ob * npix * 32;
        int no = O - ob * 32 < 32 ? O - ob * 32 : 32;
        for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
            long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
            /* the channels past O are zero in dyt and never unpacked: their half is skipped */
            for (int h = 0; h * 16 < no; h++) {
                for (int tl = 0, r0 = r_lo, R = 0; tl < ntl; tl++, r0 += R) {
                    R = (r_hi - r0 + (ntl - tl) - 1) / (ntl - tl);
                    for (int r = 0; r < R; r++) {
                        int t = r0 + r, c = t / (KH * KW), ki = (t / KW) % KH, kj = t % KW;
                        offs[r] = (long)c * plane + (long)ki * Wp + kj;
                    }
                    float* dst = dwt + ((long)ob * K + r0) * 32 + h * 16;
                    const float* dh = d + h * 16;
                    switch (R) {
                        case 6: fnn2_dw2_tile(6, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                        case 5: fnn2_dw2_tile(5, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                        case 4: fnn2_dw2_tile(4, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                        case 3: fnn2_dw2_tile(3, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                        case 2: fnn2_dw2_tile(2, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                        default: fnn2_dw2_tile(1, xp, img, Wp, OH, OW, p0, p1, offs, dh, dst); break;
                    }
                }
            }
        }
    }
}
void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) {
    const float* d = dyt + (long)ob * npix * 32;
    __m256d t[8], s[8];
    for (int v = 0; v < 8; v++) t[v] = _mm256_setzero_pd();
    for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
        long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
        for (int v = 0; v < 8; v++) s[v] = _mm256_setzero_pd();
        for (long p = p0; p < p1; p++)
            for (int v = 0; v < 8; v++)
                s[v] = _mm256_add_pd(s[v], _mm256_cvtps_pd(_mm_loadu_ps(d + p * 32 + 4 * v)));
        for (int v = 0; v < 8; v++) t[v] = _mm256_add_pd(t[v], s[v]);
    }
    double sums[32];
    for (int v = 0; v < 8; v++) _mm256_storeu_pd(sums + 4 * v, t[v]);
    for (int j = 0; j < 32 && ob * 32 + j < O; j++) gsum[ob * 32 + j] += sums[j];
}
void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g, float* dyt) {
    int nob = (O + 31) / 32;
    const float* gn = g + (long)n * O * P;
    for (int ob = 0; ob < nob; ob++) {
        int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
        fnn_mk2_pack_t(gn, (int)P, ob * 32, nr, 0, (int)P, dyt + ((long)ob * npix + (long)n * P) * 32);
    }
}

/* One row of a cross-sample panel (see conv_avx512.c's fnn_panel_row) into dst (32 floats,
   aligned): lanes of segment s read base + segoff[s] + shift where mk has them, zero
   elsewhere (the segments' lanes are disjoint, so OR merges them) */
static inline void fnn2_panel_row(unsigned mk, long shift, int nseg, const unsigned* segm,
                                  const long* segoff, const float* base, float* dst) {
    /* branch-free: the lane masks change from row to row (a 7-pixel-wide image cuts every
       group of 8 lanes somewhere), so tests on them predict poorly; a masked load of no
       lanes reads nothing */
    const __m256i sh = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    __m256 v[4];
    for (int u = 0; u < 4; u++) v[u] = _mm256_setzero_ps();
    for (int s = 0; s < nseg; s++) {
        unsigned ms = mk & segm[s];
        const float* src = base + segoff[s] + shift;
        for (int u = 0; u < 4; u++)
            v[u] = _mm256_or_ps(v[u], _mm256_maskload_ps(src + 8 * u, _mm256_sllv_epi32(
                _mm256_set1_epi32((int)(ms >> (8 * u))), sh)));
    }
    for (int u = 0; u < 4; u++) _mm256_store_ps(dst + 8 * u, v[u]);
}
/* fnn_panel_direct of the AVX-512 level (m <= 8 rows multiplied straight from the masked
   loads, never packed) for m <= 4: 4 rows x 32 lanes would take 16 accumulators, so each
   16-lane half of the panel takes its own pass over k (the loads of the other half are not
   made). The same sums in the same order as the packed path. */
static int _fnn_panel_direct_on = 1;
int fnn_set_panel_direct(int on) { int old = _fnn_panel_direct_on; _fnn_panel_direct_on = on; return old; }
static void fnn2_panel_direct(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                              const unsigned* rowm, const unsigned* colm, int nseg,
                              const unsigned* segm, const long* segoff, const float* base,
                              const float* Ap, float* Cp, long ldc, int nr) {
    int k = C * KH * KW;
    long HW = (long)H * W;
    for (int h = 0; h * 16 < nr; h++) {
        int nc = nr - h * 16 < 16 ? nr - h * 16 : 16;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            __m256 c0[4], c1[4];
            for (int r = 0; r < 4; r++) { c0[r] = _mm256_setzero_ps(); c1[r] = _mm256_setzero_ps(); }
            const float* ap = Ap + (long)k0 * 8;
            for (int kk = 0; kk < kc; kk++, ap += 8) {
                unsigned mk = (rowm[ki] & colm[kj]) >> (16 * h);
                long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw) + 16 * h;
                __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
                for (int s = 0; s < nseg; s++) {
                    unsigned ms = mk & (segm[s] >> (16 * h));
                    if (!(ms & 0xFFFFu)) continue;
                    const float* src = base + segoff[s] + shift;
                    v0 = _mm256_or_ps(v0, fnn2_load_m(ms, src));
                    v1 = _mm256_or_ps(v1, fnn2_load_m(ms >> 8, src + 8));
                }
                for (int r = 0; r < 4; r++) {
                    __m256 a = _mm256_broadcast_ss(ap + r);
                    c0[r] = _mm256_fmadd_ps(a, v0, c0[r]);
                    c1[r] = _mm256_fmadd_ps(a, v1, c1[r]);
                }
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            for (int r = 0; r < m; r++) {
                float t[16];
                float* cr = Cp + (long)r * ldc + 16 * h;
                _mm256_storeu_ps(t, c0[r]);
                _mm256_storeu_ps(t + 8, c1[r]);
                for (int q = 0; q < nc; q++) cr[q] = k0 > 0 ? t[q] + cr[q] : t[q];
            }
        }
    }
}
/* Cp (m x nr columns, ldc apart) := A @ B over all k, B's rows built by fnn2_panel_row per
   FNN_MK_KC step into Bp, A packed by fnn_pack_a8; each step's sums added to Cp */
static void fnn2_panel_gemm(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                            const unsigned* rowm, const unsigned* colm, int nseg,
                            const unsigned* segm, const long* segoff, const float* base,
                            const float* Ap, float* Bp, float* Cp, long ldc, int nr) {
    if (m <= 4 && _fnn_panel_direct_on) {
        fnn2_panel_direct(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, base, Ap,
                          Cp, ldc, nr);
        return;
    }
    int k = C * KH * KW, mt = (m + 7) / 8;
    long HW = (long)H * W;
    for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
        int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
        int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
        for (int kk = 0; kk < kc; kk++) {
            long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw);
            fnn2_panel_row(rowm[ki] & colm[kj], shift, nseg, segm, segoff, base, Bp + kk * 32);
            if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
        }
        fnn_mk2_panel_pa(m, kc, Ap + (long)k0 * mt * 8, Bp, Cp, ldc, nr, k0 > 0 ? 2 : 0);
    }
}
void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW, int ph, int pw,
                     const float* Ap, const float* g, long sample_stride, float* Cout, int ldc) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32], segm[33];
    long segoff[33];
    long ncols = (long)nb * P;
    for (long j0 = 0; j0 < ncols; j0 += 32) {
        int nr = ncols - j0 < 32 ? (int)(ncols - j0) : 32;
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
                segoff[nseg] = n * sample_stride - n * P + j0;
                nseg++;
                nprev = n;
            }
            segm[nseg - 1] |= 1u << q;
        }
        fnn2_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, g, Ap, Bp,
                        Cout + j0, ldc, nr);
    }
}
void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W, int KH, int KW,
                     int ph, int pw, const float* Ap, const float* x, const float* bias,
                     float* out, float* Ct) {
    float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
    unsigned rowm[32], colm[32], segm[33];
    long segoff[33], segdst[33];
    int segq[34];
    long CHW = (long)C * H * W;
    for (long j0 = j_lo; j0 < j_hi; j0 += 32) {
        int nr = j_hi - j0 < 32 ? (int)(j_hi - j0) : 32;
        for (int a = 0; a < KH; a++) rowm[a] = 0;
        for (int b = 0; b < KW; b++) colm[b] = 0;
        int nseg = 0;
        long n = j0 / P, pp = j0 - n * P;
        int oh = (int)(pp / W), ow = (int)(pp - (long)oh * W);
        for (int q = 0; q < nr; q++) {
            if (q == 0 || pp == 0) {
                segm[nseg] = 0;
                segoff[nseg] = n * CHW - n * P + j0;
                segdst[nseg] = n * m * P + pp - q;
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
        fnn2_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, x, Ap, Bp,
                        Cp, ldc, nr);
        for (int s = 0; s < nseg; s++) {
            float* dst = out + segdst[s];
            for (int i = 0; i < m; i++) {
                float bv = bias ? bias[i] : 0.0f;
                const float* src = nseg == 1 ? dst + (long)i * P : Ct + i * 32;
                float* d = dst + (long)i * P;
                for (int q = segq[s]; q < segq[s + 1]; q++) d[q] = src[q] + bv;
            }
        }
    }
}
void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0, const float* src1,
                       int ha, float bv) {
    /* 4 + 4 sources interleaved per 8-lane store (unpack, then the 128-bit halves in order) */
    __m256 b = _mm256_set1_ps(bv);
    int wb0 = (W + 1) / 2, wb1 = W / 2;
    for (int i = 0; i < ha; i++) {
        const float* s0 = src0 + (long)i * wb0;
        const float* s1 = src1 + (long)i * wb1;
        float* d = dst + (long)i * rstep;
        for (int j0 = 0; j0 < wb0; j0 += 8) {
            __m256 v0 = fnn2_load_m(fnn2_lanes(0, wb0 - j0), s0 + j0);
            __m256 v1 = fnn2_load_m(fnn2_lanes(0, wb1 - j0), s1 + j0);
            __m256 lo = _mm256_unpacklo_ps(v0, v1), hi = _mm256_unpackhi_ps(v0, v1);
            __m256 e0 = _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), b);
            __m256 e1 = _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x31), b);
            int cnt = W - 2 * j0;
            fnn2_store_m(fnn2_lanes(0, cnt), d + 2 * j0, e0);
            fnn2_store_m(fnn2_lanes(0, cnt - 8), d + 2 * j0 + 8, e1);
        }
    }
}
