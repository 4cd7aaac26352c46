/* winograd_s2's AVX-512 input transform (16 tiles a vector), shared by the forward
   (winograd_s2_avx512.c) and the weight gradient (winograd_s2_dw_avx512.c), which transform
   x's phases alike. */
#ifndef FNN_WINOGRAD_S2_AVX512_H
#define FNN_WINOGRAD_S2_AVX512_H
#include <immintrin.h>

/* o := B^T d for 5 vectors, B^T = [2 -1 -2 1 0; 0 2 1 -1 0; 0 -2 3 -1 0; 0 -1 0 1 0;
   0 2 -1 -2 1] */
static inline void fnn_ws2_bt(const __m512 d[5], __m512 o[5]) {
    const __m512 two = _mm512_set1_ps(2.0f), three = _mm512_set1_ps(3.0f);
    __m512 d31 = _mm512_sub_ps(d[3], d[1]);
    o[0] = _mm512_fmadd_ps(two, _mm512_sub_ps(d[0], d[2]), d31);
    o[1] = _mm512_fmadd_ps(two, d[1], _mm512_sub_ps(d[2], d[3]));
    o[2] = _mm512_fmsub_ps(three, d[2], _mm512_fmadd_ps(two, d[1], d[3]));
    o[3] = d31;
    o[4] = _mm512_fmadd_ps(two, _mm512_sub_ps(d[1], d[3]), _mm512_sub_ps(d[4], d[2]));
}

/* V[e][.] := (B^T d B)[e] of phase (a, b)'s 5x5 patch d[2r + a][2j + b] of a 10x10 window
   (element e at v + e * VS) */
static inline void fnn_ws2_phase(__m512 d[10][10], int a, int b, float* v, long VS) {
    __m512 s[5][5], col[5], o5[5];
    for (int j = 0; j < 5; j++) {  /* columns: s[.][j] = B^T d[.][j] */
        for (int r = 0; r < 5; r++) col[r] = d[2 * r + a][2 * j + b];
        fnn_ws2_bt(col, o5);
        for (int i = 0; i < 5; i++) s[i][j] = o5[i];
    }
    for (int i = 0; i < 5; i++) {  /* rows: V[i][.] = s[i][.] B */
        fnn_ws2_bt(s[i], o5);
        for (int j = 0; j < 5; j++) _mm512_store_ps(v + (5 * i + j) * VS, o5[j]);
    }
}

#endif /* FNN_WINOGRAD_S2_AVX512_H */
