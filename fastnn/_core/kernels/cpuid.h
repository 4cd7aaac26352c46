/* The best instruction-set level (isa.h's numbering) this CPU and OS support, from CPUID and
   XGETBV (gcc's __builtin_cpu_supports checks both: AVX-512 needs the OS to save zmm state). */
#ifndef FNN_CPUID_H
#define FNN_CPUID_H

static inline int fnn_cpu_level(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("x86-64-v3"))
        return 2;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 1;
#endif
    return 0;
}

#endif /* FNN_CPUID_H */
