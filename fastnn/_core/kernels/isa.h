/* The instruction-set level this translation unit is compiled for (setup.py builds every
   extension module once per level and fastnn._core.isa imports the one the CPU supports):
   FNN_ISA 0 baseline x86-64, 1 AVX2+FMA (x86-64-v3), 2 AVX-512 F/BW/CD/DQ/VL (x86-64-v4). */
#ifndef FNN_ISA_H
#define FNN_ISA_H

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define FNN_ISA 2
#elif defined(__AVX2__) && defined(__FMA__)
#define FNN_ISA 1
#else
#define FNN_ISA 0
#endif

/* A kernel that exists only from some level up: defined in a kernels/<family>_<level>.c file
   linked into that level's modules, declared once in its family header with this mark. Below
   its level the weak reference resolves to null; the Cython side checks the level's flag
   (FNN_MK_AVAILABLE, FNN_CONV_KERNELS, FNN_GATES16) before any call, and every level is compiled
   by every build, so a declaration that does not match its definition fails the build. */
#define FNN_ISA_KERNEL __attribute__((weak))

#endif /* FNN_ISA_H */
