/* Force-included (gcc -include) into the AddressSanitizer build of the compiled core only (see
   tests/fuzz/test_fuzz.py): gcc's ASan does not instrument AVX-512 masked loads and stores nor
   gathers, nor AVX2's maskload, maskstore and masked gathers: the very accesses of the kernels'
   ragged edges. Each such intrinsic is wrapped so that every lane its mask enables is first
   read as a plain (instrumented) scalar: an enabled lane outside its buffer is then an ASan
   report. The wrapped intrinsic itself is unchanged (a macro does not expand its own name
   again), so results are those of the normal build. */
#ifndef FNN_ASAN_MASKED_H
#define FNN_ASAN_MASKED_H

#ifndef PY_SSIZE_T_CLEAN
#define PY_SSIZE_T_CLEAN
#endif
#include <Python.h> /* first, as the Cython module it is forced into would have it */

#if defined(__AVX2__)
#include <immintrin.h>

/* The enabled lanes of a (mask, base, element size) access, each read as one scalar. */
static inline void fnn_asan_lanes(const void* base, unsigned long long mask, int size) {
    const volatile char* p = (const volatile char*)base;
    for (int i = 0; mask; i++, mask >>= 1)
        if (mask & 1) {
            if (size == 4) (void)*(const volatile float*)(p + (long)i * 4);
            else (void)*(const volatile double*)(p + (long)i * 8);
        }
}

/* The enabled lanes of a gather: base + idx[i] * scale, 4-byte elements. */
static inline void fnn_asan_gather(const void* base, const int* idx, unsigned mask, int scale) {
    const volatile char* p = (const volatile char*)base;
    for (int i = 0; i < 16; i++)
        if (mask >> i & 1) (void)*(const volatile float*)(p + (long)idx[i] * scale);
}

/* AVX2's vector-masked forms (the AVX2 level's kernels): a lane is enabled where the sign bit
   of its mask element is set */
#define fnn_asan_vmask(m) ((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(m)))
#define _mm256_maskload_ps(p, m) __extension__ ({                                        \
    const float* fnn_p_ = (p); __m256i fnn_m_ = (m);                                     \
    fnn_asan_lanes(fnn_p_, fnn_asan_vmask(fnn_m_), 4); _mm256_maskload_ps(fnn_p_, fnn_m_); })
#define _mm256_maskstore_ps(p, m, v) do {                                                \
    float* fnn_p_ = (p); __m256i fnn_m_ = (m);                                           \
    fnn_asan_lanes(fnn_p_, fnn_asan_vmask(fnn_m_), 4);                                   \
    _mm256_maskstore_ps(fnn_p_, fnn_m_, (v)); } while (0)
#define _mm256_mask_i32gather_ps(src, base, idx, m, scale) __extension__ ({              \
    const float* fnn_b_ = (base); __m256i fnn_i_ = (idx); __m256 fnn_m_ = (m);           \
    int fnn_ix_[8] __attribute__((aligned(32)));                                         \
    _mm256_store_si256((__m256i*)fnn_ix_, fnn_i_);                                       \
    fnn_asan_gather(fnn_b_, fnn_ix_, (unsigned)_mm256_movemask_ps(fnn_m_), (scale));     \
    _mm256_mask_i32gather_ps((src), fnn_b_, fnn_i_, fnn_m_, scale); })
#endif

#if defined(__AVX512F__)
#define _mm512_maskz_loadu_ps(k, p) __extension__ ({                                     \
    __mmask16 fnn_k_ = (k); const void* fnn_p_ = (p);                                    \
    fnn_asan_lanes(fnn_p_, fnn_k_, 4); _mm512_maskz_loadu_ps(fnn_k_, fnn_p_); })
#define _mm512_mask_loadu_ps(src, k, p) __extension__ ({                                 \
    __mmask16 fnn_k_ = (k); const void* fnn_p_ = (p);                                    \
    fnn_asan_lanes(fnn_p_, fnn_k_, 4); _mm512_mask_loadu_ps((src), fnn_k_, fnn_p_); })
#define _mm256_maskz_loadu_ps(k, p) __extension__ ({                                     \
    __mmask8 fnn_k_ = (k); const void* fnn_p_ = (p);                                     \
    fnn_asan_lanes(fnn_p_, fnn_k_, 4); _mm256_maskz_loadu_ps(fnn_k_, fnn_p_); })
#define _mm_maskz_loadu_ps(k, p) __extension__ ({                                         \
    __mmask8 fnn_k_ = (k); const void* fnn_p_ = (p);                                     \
    fnn_asan_lanes(fnn_p_, fnn_k_ & 0xF, 4); _mm_maskz_loadu_ps(fnn_k_, fnn_p_); })
#define _mm_mask_storeu_ps(p, k, v) do {                                                 \
    void* fnn_p_ = (p); __mmask8 fnn_k_ = (k);                                           \
    fnn_asan_lanes(fnn_p_, fnn_k_ & 0xF, 4); _mm_mask_storeu_ps(fnn_p_, fnn_k_, (v)); } while (0)
#define _mm256_mask_storeu_ps(p, k, v) do {                                              \
    void* fnn_p_ = (p); __mmask8 fnn_k_ = (k);                                           \
    fnn_asan_lanes(fnn_p_, fnn_k_, 4); _mm256_mask_storeu_ps(fnn_p_, fnn_k_, (v)); } while (0)
#define _mm512_mask_storeu_ps(p, k, v) do {                                              \
    void* fnn_p_ = (p); __mmask16 fnn_k_ = (k);                                          \
    fnn_asan_lanes(fnn_p_, fnn_k_, 4); _mm512_mask_storeu_ps(fnn_p_, fnn_k_, (v)); } while (0)
#define _mm512_mask_storeu_epi64(p, k, v) do {                                           \
    void* fnn_p_ = (p); __mmask8 fnn_k_ = (k);                                           \
    fnn_asan_lanes(fnn_p_, fnn_k_, 8); _mm512_mask_storeu_epi64(fnn_p_, fnn_k_, (v)); } while (0)
#define _mm512_mask_i32gather_ps(src, k, idx, base, scale) __extension__ ({              \
    __mmask16 fnn_k_ = (k); __m512i fnn_i_ = (idx); const void* fnn_b_ = (base);         \
    int fnn_ix_[16] __attribute__((aligned(64)));                                        \
    _mm512_store_si512((void*)fnn_ix_, fnn_i_);                                          \
    fnn_asan_gather(fnn_b_, fnn_ix_, fnn_k_, (scale));                                   \
    _mm512_mask_i32gather_ps((src), fnn_k_, fnn_i_, fnn_b_, scale); })
/* a scatter's enabled lanes are read first (a lane outside its buffer: a report) */
#define _mm512_mask_i32scatter_ps(base, k, idx, v, scale) do {                          \
    void* fnn_b_ = (base); __mmask16 fnn_k_ = (k); __m512i fnn_i_ = (idx);               \
    int fnn_ix_[16] __attribute__((aligned(64)));                                        \
    _mm512_store_si512((void*)fnn_ix_, fnn_i_);                                          \
    fnn_asan_gather(fnn_b_, fnn_ix_, fnn_k_, (scale));                                   \
    _mm512_mask_i32scatter_ps(fnn_b_, fnn_k_, fnn_i_, (v), scale); } while (0)
#endif

#endif /* FNN_ASAN_MASKED_H */
