/* The AVX-512 Winograd F(2x2,3x3) kernels of winograd.h. Tiles are taken 16 at a time in their
   flat order (across rows and samples, so small images fill the vectors): the transforms run
   with one tile per lane, the GEMMs on the microkernel. */
#include <immintrin.h>
#include <string.h>
#include "winograd.h"
#include "microkernel.h"

void fnn_wg2_weights(int O, int C, const float* w, float* U) {
    const long OC = (long)O * C;
    for (long oc = 0; oc < OC; oc++) {
        const float* g = w + oc * 9;
        double t[4][3], u[4][4];
        for (int j = 0; j < 3; j++) {  /* t = G g, G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] */
            double g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (int i = 0; i < 4; i++) {  /* u = t G^T */
            u[i][0] = t[i][0];
            u[i][1] = 0.5 * (t[i][0] + t[i][1] + t[i][2]);
            u[i][2] = 0.5 * (t[i][0] - t[i][1] + t[i][2]);
            u[i][3] = t[i][2];
        }
        for (int e = 0; e < 16; e++) U[e * OC + oc] = (float)u[e / 4][e % 4];
    }
}

/* The rows of the 16 patches of one channel, lane q = tile q: d[r][j] = x[iy0 + r, ix0 + j] of
   each tile (zero outside the image). Each tile's row is one masked 4-float load into 128-bit
   block blk of p[g] for tile 4*blk + g; the 4x4 transpose per block then puts it in lane
   4*blk + g of d[r][j]. */
static inline void fnn_wg2_patch(const float* xc, const long* off, const __mmask8* km, long W,
                                 __m512 d[4][4]) {
    for (int r = 0; r < 4; r++) {
        __m512 p[4];
        for (int g = 0; g < 4; g++) {
            __m512 v = _mm512_castps128_ps512(
                _mm_maskz_loadu_ps(km[g * 4 + r], xc + off[g] + r * W));
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(4 + g) * 4 + r], xc + off[4 + g] + r * W), 1);
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(8 + g) * 4 + r], xc + off[8 + g] + r * W), 2);
            v = _mm512_insertf32x4(v, _mm_maskz_loadu_ps(km[(12 + g) * 4 + r], xc + off[12 + g] + r * W), 3);
            p[g] = v;
        }
        __m512 t0 = _mm512_unpacklo_ps(p[0], p[1]), t1 = _mm512_unpackhi_ps(p[0], p[1]);
        __m512 t2 = _mm512_unpacklo_ps(p[2], p[3]), t3 = _mm512_unpackhi_ps(p[2], p[3]);
        d[r][0] = _mm512_shuffle_ps(t0, t2, 0x44);
        d[r][1] = _mm512_shuffle_ps(t0, t2, 0xEE);
        d[r][2] = _mm512_shuffle_ps(t1, t3, 0x44);
        d[r][3] = _mm512_shuffle_ps(t1, t3, 0xEE);
    }
}

void fnn_wg2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                   long t_hi, const float* U, const float* x, const float* bias, float* out,
                   float* V, float* M, int act, float slope) {
    const int T = (int)(t_hi - t_lo), TL = (T + 15) & ~15;
    const int TH = (OH + 1) / 2, TW = (OW + 1) / 2;
    const long tpi = (long)TH * TW, HW = (long)H * W, OHW = (long)OH * OW;
    const long VS = (long)C * TL, MS = (long)O * TL;
    /* input transform: V[e][c][t] = (B^T d B)[e], B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
    for (int g0 = 0; g0 < T; g0 += 16) {
        long off[16];
        __mmask8 km[64];
        for (int q = 0; q < 16; q++) {
            long t = t_lo + g0 + q;
            if (g0 + q >= T) {
                off[q] = 0;
                for (int r = 0; r < 4; r++) km[q * 4 + r] = 0;
                continue;
            }
            long n = t / tpi, rem = t % tpi;
            int iy0 = (int)(rem / TW) * 2 - ph, ix0 = (int)(rem % TW) * 2 - pw;
            off[q] = n * C * HW + (long)iy0 * W + ix0;
            __mmask8 cm = 0;
            for (int j = 0; j < 4; j++)
                if (ix0 + j >= 0 && ix0 + j < W) cm |= (__mmask8)(1u << j);
            for (int r = 0; r < 4; r++)
                km[q * 4 + r] = (iy0 + r >= 0 && iy0 + r < H) ? cm : 0;
        }
        for (int c = 0; c < C; c++) {
            __m512 d[4][4], s[4][4];
            fnn_wg2_patch(x + c * HW, off, km, W, d);
            for (int j = 0; j < 4; j++) {
                s[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
                s[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
                s[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
                s[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
            }
            float* v = V + (long)c * TL + g0;
            for (int i = 0; i < 4; i++) {
                _mm512_store_ps(v + (4 * i + 0) * VS, _mm512_sub_ps(s[i][0], s[i][2]));
                _mm512_store_ps(v + (4 * i + 1) * VS, _mm512_add_ps(s[i][1], s[i][2]));
                _mm512_store_ps(v + (4 * i + 2) * VS, _mm512_sub_ps(s[i][2], s[i][1]));
                _mm512_store_ps(v + (4 * i + 3) * VS, _mm512_sub_ps(s[i][1], s[i][3]));
            }
        }
    }
    /* the 16 GEMMs: M[e] (O x T) = U[e] (O x C) @ V[e] (C x T) */
    for (int e = 0; e < 16; e++)
        fnn_mk_sgemm_nn(O, T, C, U + (long)e * O * C, C, V + e * VS, TL, M + e * MS, TL, 0);
    /* output transform: Y = A^T M A, A^T = [1 1 1 0; 0 1 -1 -1], then bias and activation */
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    const __m512 zero = _mm512_setzero_ps(), sv = _mm512_set1_ps(slope);
    for (int g0 = 0; g0 < T; g0 += 16) {
        int cnt = T - g0 < 16 ? T - g0 : 16;
        long ooff[16];
        int rows[16], full[16];
        for (int q = 0; q < cnt; q++) {
            long t = t_lo + g0 + q, n = t / tpi, rem = t % tpi;
            int oy = (int)(rem / TW) * 2, ox = (int)(rem % TW) * 2;
            ooff[q] = n * O * OHW + (long)oy * OW + ox;
            rows[q] = oy + 1 < OH ? 2 : 1;
            full[q] = ox + 1 < OW;
        }
        for (int o = 0; o < O; o++) {
            const float* m = M + (long)o * TL + g0;
            __m512 a[2][4], y[2][2];
            for (int j = 0; j < 4; j++) {
                __m512 m0 = _mm512_load_ps(m + (0 * 4 + j) * MS), m1 = _mm512_load_ps(m + (1 * 4 + j) * MS);
                __m512 m2 = _mm512_load_ps(m + (2 * 4 + j) * MS), m3 = _mm512_load_ps(m + (3 * 4 + j) * MS);
                a[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                a[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
            }
            __m512 b = bias ? _mm512_set1_ps(bias[o]) : zero;
            for (int i = 0; i < 2; i++) {
                y[i][0] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[i][0], a[i][1]), a[i][2]), b);
                y[i][1] = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a[i][1], a[i][2]), a[i][3]), b);
                for (int j = 0; j < 2; j++) {
                    if (act == 1)
                        y[i][j] = _mm512_mask_mov_ps(y[i][j], _mm512_cmp_ps_mask(y[i][j], zero, _CMP_LE_OQ), zero);
                    else if (act == 2)
                        y[i][j] = _mm512_mask_mov_ps(_mm512_mul_ps(y[i][j], sv),
                                                     _mm512_cmp_ps_mask(y[i][j], zero, _CMP_GT_OQ), y[i][j]);
                }
            }
            float buf[2][32] __attribute__((aligned(64)));
            for (int i = 0; i < 2; i++) {
                _mm512_store_ps(buf[i], _mm512_permutex2var_ps(y[i][0], lo_idx, y[i][1]));
                _mm512_store_ps(buf[i] + 16, _mm512_permutex2var_ps(y[i][0], hi_idx, y[i][1]));
            }
            float* ob = out + (long)o * OHW;
            for (int q = 0; q < cnt; q++) {
                float* p = ob + ooff[q];
                for (int i = 0; i < rows[q]; i++) {
                    if (full[q]) memcpy(p + (long)i * OW, buf[i] + 2 * q, 2 * sizeof(float));
                    else p[(long)i * OW] = buf[i][2 * q];
                }
            }
        }
    }
}
