/* tests/kernels/test_asan.py's canary: built with the AddressSanitizer build's flags (asan_masked.h
   force-included) and called through ctypes, it stores 16 floats with an AVX-512 masked store
   at `offset` floats into a buffer of n floats. With offset > n - 16 an enabled lane lands past
   the buffer: the run must end in an AddressSanitizer report (gcc instruments no masked store
   by itself; asan_masked.h is what makes it). */
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

int fnn_canary_masked_store(int n, int offset) {
    float* buf = (float*)malloc((size_t)n * sizeof(float));
    if (!buf) return -1;
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(buf + offset, (__mmask16)0xFFFF, _mm512_set1_ps(1.0f));
#else
    for (int i = 0; i < 16; i++) buf[offset + i] = 1.0f;
#endif
    int first = (int)buf[offset];
    free(buf);
    return first;
}
