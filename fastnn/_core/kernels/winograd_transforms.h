/* The Winograd transforms of F(2x2,3x3), F(4x4,3x3) and F(4x4,2x2), one tile per vector lane,
   written once for both vector widths: fnn_v is the translation unit's vector (AVX-512: 16
   floats, AVX2: 8) and fnn_v_* its intrinsics, so every level runs the same float32 operations
   per tile (the same bits). */
#ifndef FNN_WINOGRAD_TRANSFORMS_H
#define FNN_WINOGRAD_TRANSFORMS_H
#include <immintrin.h>
#include "isa.h"

#if FNN_ISA >= 2
typedef __m512 fnn_v;
#define fnn_v_add _mm512_add_ps
#define fnn_v_sub _mm512_sub_ps
#define fnn_v_mul _mm512_mul_ps
#define fnn_v_fmadd _mm512_fmadd_ps
#define fnn_v_fmsub _mm512_fmsub_ps
#define fnn_v_set1 _mm512_set1_ps
#define fnn_v_load _mm512_load_ps
#define fnn_v_store _mm512_store_ps
#else
typedef __m256 fnn_v;
#define fnn_v_add _mm256_add_ps
#define fnn_v_sub _mm256_sub_ps
#define fnn_v_mul _mm256_mul_ps
#define fnn_v_fmadd _mm256_fmadd_ps
#define fnn_v_fmsub _mm256_fmsub_ps
#define fnn_v_set1 _mm256_set1_ps
#define fnn_v_load _mm256_load_ps
#define fnn_v_store _mm256_store_ps
#endif

/* v[e*VS] := (B^T d B)[e] for the 16 elements e of the tiles' 4x4 patches d (aligned stores),
   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
static inline void fnn_wg2_bt(const fnn_v d[4][4], float* v, long VS) {
    fnn_v s[4][4];
    for (int j = 0; j < 4; j++) {
        s[0][j] = fnn_v_sub(d[0][j], d[2][j]);
        s[1][j] = fnn_v_add(d[1][j], d[2][j]);
        s[2][j] = fnn_v_sub(d[2][j], d[1][j]);
        s[3][j] = fnn_v_sub(d[1][j], d[3][j]);
    }
    for (int i = 0; i < 4; i++) {
        fnn_v_store(v + (4 * i + 0) * VS, fnn_v_sub(s[i][0], s[i][2]));
        fnn_v_store(v + (4 * i + 1) * VS, fnn_v_add(s[i][1], s[i][2]));
        fnn_v_store(v + (4 * i + 2) * VS, fnn_v_sub(s[i][2], s[i][1]));
        fnn_v_store(v + (4 * i + 3) * VS, fnn_v_sub(s[i][1], s[i][3]));
    }
}

/* y := A^T M A + b for the tiles' 4x4 products M (element e at m + e*MS, aligned),
   A^T = [1 1 1 0; 0 1 -1 -1] */
static inline void fnn_wg2_at(const float* m, long MS, fnn_v b, fnn_v y[2][2]) {
    fnn_v a[2][4];
    for (int j = 0; j < 4; j++) {
        fnn_v m0 = fnn_v_load(m + (0 * 4 + j) * MS), m1 = fnn_v_load(m + (1 * 4 + j) * MS);
        fnn_v m2 = fnn_v_load(m + (2 * 4 + j) * MS), m3 = fnn_v_load(m + (3 * 4 + j) * MS);
        a[0][j] = fnn_v_add(fnn_v_add(m0, m1), m2);
        a[1][j] = fnn_v_sub(fnn_v_sub(m1, m2), m3);
    }
    for (int i = 0; i < 2; i++) {
        y[i][0] = fnn_v_add(fnn_v_add(fnn_v_add(a[i][0], a[i][1]), a[i][2]), b);
        y[i][1] = fnn_v_add(fnn_v_sub(fnn_v_sub(a[i][1], a[i][2]), a[i][3]), b);
    }
}

/* pp[e*PS] := (A' g A'^T)[e] for the 16 elements e of one 2x2 tile of dy per lane (the weight
   gradient's roles swapped: lanes are output channels), g's rows g0 = r0[0..1], g1 = r1[0..1]
   (aligned stores), A'^T = [1 0; 1 1; 1 -1; 0 1] */
static inline void fnn_wg2_gt(const fnn_v r0[2], const fnn_v r1[2], float* pp, long PS) {
    fnn_v a[4][2];
    for (int j = 0; j < 2; j++) {
        a[0][j] = r0[j];
        a[1][j] = fnn_v_add(r0[j], r1[j]);
        a[2][j] = fnn_v_sub(r0[j], r1[j]);
        a[3][j] = r1[j];
    }
    for (int i = 0; i < 4; i++) {
        fnn_v_store(pp + (4 * i + 0) * PS, a[i][0]);
        fnn_v_store(pp + (4 * i + 1) * PS, fnn_v_add(a[i][0], a[i][1]));
        fnn_v_store(pp + (4 * i + 2) * PS, fnn_v_sub(a[i][0], a[i][1]));
        fnn_v_store(pp + (4 * i + 3) * PS, a[i][1]);
    }
}

/* o := B^T d for 6 vectors, B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
   0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1] */
static inline void fnn_wg4_bt(const fnn_v d[6], fnn_v o[6]) {
    const fnn_v four = fnn_v_set1(4.0f), mfour = fnn_v_set1(-4.0f);
    const fnn_v mfive = fnn_v_set1(-5.0f), two = fnn_v_set1(2.0f);
    fnn_v a = fnn_v_fmadd(mfour, d[2], d[4]), b = fnn_v_fmadd(mfour, d[1], d[3]);
    fnn_v c = fnn_v_sub(d[4], d[2]), e = fnn_v_mul(two, fnn_v_sub(d[3], d[1]));
    o[0] = fnn_v_fmadd(four, d[0], fnn_v_fmadd(mfive, d[2], d[4]));
    o[1] = fnn_v_add(a, b);
    o[2] = fnn_v_sub(a, b);
    o[3] = fnn_v_add(c, e);
    o[4] = fnn_v_sub(c, e);
    o[5] = fnn_v_fmadd(four, d[1], fnn_v_fmadd(mfive, d[3], d[5]));
}

/* y := A^T m for 6 vectors, A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1] */
static inline void fnn_wg4_at(const fnn_v m[6], fnn_v y[4]) {
    fnn_v s12 = fnn_v_add(m[1], m[2]), d12 = fnn_v_sub(m[1], m[2]);
    fnn_v s34 = fnn_v_add(m[3], m[4]), d34 = fnn_v_sub(m[3], m[4]);
    y[0] = fnn_v_add(fnn_v_add(m[0], s12), s34);
    y[1] = fnn_v_fmadd(fnn_v_set1(2.0f), d34, d12);
    y[2] = fnn_v_fmadd(fnn_v_set1(4.0f), s34, s12);
    y[3] = fnn_v_add(fnn_v_fmadd(fnn_v_set1(8.0f), d34, d12), m[5]);
}

/* ---- F(4x4,2x2) (winograd_s2.h: the stride phases of a 4x4 stride-2 convolution) ---- */

/* o := B^T d for 5 vectors, B^T = [2 -1 -2 1 0; 0 2 1 -1 0; 0 -2 3 -1 0; 0 -1 0 1 0;
   0 2 -1 -2 1] */
static inline void fnn_ws2_bt(const fnn_v d[5], fnn_v o[5]) {
    const fnn_v two = fnn_v_set1(2.0f), three = fnn_v_set1(3.0f);
    fnn_v d31 = fnn_v_sub(d[3], d[1]);
    o[0] = fnn_v_fmadd(two, fnn_v_sub(d[0], d[2]), d31);
    o[1] = fnn_v_fmadd(two, d[1], fnn_v_sub(d[2], d[3]));
    o[2] = fnn_v_fmsub(three, d[2], fnn_v_fmadd(two, d[1], d[3]));
    o[3] = d31;
    o[4] = fnn_v_fmadd(two, fnn_v_sub(d[1], d[3]), fnn_v_sub(d[4], d[2]));
}

/* v[e*VS] := (B^T d B)[e] for the 25 elements e of the tiles' 5x5 patches d (aligned stores) */
static inline void fnn_ws2_patch(fnn_v d[5][5], float* v, long VS) {
    fnn_v s[5][5], col[5], o5[5];
    for (int j = 0; j < 5; j++) {  /* columns: s[.][j] = B^T d[.][j] */
        for (int r = 0; r < 5; r++) col[r] = d[r][j];
        fnn_ws2_bt(col, o5);
        for (int i = 0; i < 5; i++) s[i][j] = o5[i];
    }
    for (int i = 0; i < 5; i++) {  /* rows: V[i][.] = s[i][.] B */
        fnn_ws2_bt(s[i], o5);
        for (int j = 0; j < 5; j++) fnn_v_store(v + (5 * i + j) * VS, o5[j]);
    }
}

/* the same for phase (a, b)'s 5x5 patch d[2r + a][2j + b] of the tiles' 10x10 windows */
static inline void fnn_ws2_phase(fnn_v d[10][10], int a, int b, float* v, long VS) {
    fnn_v p[5][5];
    for (int r = 0; r < 5; r++)
        for (int j = 0; j < 5; j++) p[r][j] = d[2 * r + a][2 * j + b];
    fnn_ws2_patch(p, v, VS);
}

/* y := A^T m for 5 vectors, A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 0; 0 1 -1 8 1] */
static inline void fnn_ws2_at(const fnn_v m[5], fnn_v y[4]) {
    fnn_v s12 = fnn_v_add(m[1], m[2]), d12 = fnn_v_sub(m[1], m[2]);
    y[0] = fnn_v_add(fnn_v_add(m[0], s12), m[3]);
    y[1] = fnn_v_fmadd(fnn_v_set1(2.0f), m[3], d12);
    y[2] = fnn_v_fmadd(fnn_v_set1(4.0f), m[3], s12);
    y[3] = fnn_v_add(fnn_v_fmadd(fnn_v_set1(8.0f), m[3], d12), m[4]);
}

#endif /* FNN_WINOGRAD_TRANSFORMS_H */
