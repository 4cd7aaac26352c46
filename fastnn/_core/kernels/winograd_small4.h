/* Winograd F(4x4,3x3) for few channels (the winograd/small4 route): winograd/f4's transforms
   (fnn_wg4_weights, winograd_f4_avx512.h) and float32 operations per output, with the 36
   channel products done by winograd/small's register-blocked kernel (winograd_small.h)
   instead of 36 microkernel GEMMs. A group of FNN_WGS4_GROUP tiles at a time (flat order over
   rows and samples, one tile per vector lane): input transform from NCHW into V (36*C*G
   floats), then per block of FNN_WGS4_OB output channels and per element e of the 6x6 tile
   M[e][o][t] = sum_c U[e][o][c] V[e][c][t] in registers (one FMA chain over c from a product,
   in channel order, as the microkernel sums), then the output transform with bias and
   activation stored straight to NCHW. The outputs are winograd/f4's bit for bit, whatever the
   group, block or thread. AVX2 and AVX-512 (8 or 16 tiles a vector); the Cython side
   (_conv_winograd.pxi) calls these only where FNN_WGS4_KERNELS is 1. */
#ifndef FNN_WINOGRAD_SMALL4_H
#define FNN_WINOGRAD_SMALL4_H
#include "isa.h"

#define FNN_WGS4_KERNELS (FNN_ISA >= 1)
#if FNN_ISA >= 2
#define FNN_WGS4_GROUP 32 /* tiles per group: two 16-lane vectors */
#define FNN_WGS4_OB 8     /* output channels per register block (16 accumulators) */
#else
#define FNN_WGS4_GROUP 24 /* three 8-lane vectors */
#define FNN_WGS4_OB 4     /* (12 accumulators of the 16 registers) */
#endif

/* Us := the F(4x4,3x3) transforms of w (O, C, 3, 3), fnn_wg4_weights' values, in the kernel's
   order: Us[((e*NB + b)*C + c)*FNN_WGS4_OB + j] = U[e][b*FNN_WGS4_OB + j][c], zero for the
   output channels past O (NB = ceil(O / FNN_WGS4_OB); 36*NB*FNN_WGS4_OB*C floats), for the
   blocks of output channels [b_lo, b_hi). */
FNN_ISA_KERNEL void fnn_wgs4_weights(int O, int C, int b_lo, int b_hi, const float* w, float* Us);

/* fnn_wg4_tiles' contract (tiles [t_lo, t_hi) of 4x4 outputs, t_lo a multiple of
   FNN_WGS4_GROUP; bias may be NULL; act 0 none, 1 ReLU, 2 leaky ReLU with slope) with Us from
   fnn_wgs4_weights and the 64-byte aligned scratch V (36*C*FNN_WGS4_GROUP floats) and M
   (36*FNN_WGS4_OB*FNN_WGS4_GROUP floats). Returns 1 when an output before the activation is
   NaN or infinite (the caller then recomputes on an exact route). */
FNN_ISA_KERNEL int fnn_wgs4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                  long t_lo, long t_hi, const float* Us, const float* x,
                                  const float* bias, float* out, float* V, float* M, int act,
                                  float slope);

#endif /* FNN_WINOGRAD_SMALL4_H */
