/* Winograd F(2x2,3x3) for few channels (the winograd/small route): winograd.h's transforms and
   float32 operations per output, but the channel products done by a register-blocked kernel
   written for tiny C and O instead of 16 microkernel GEMMs on packed panels. A group of
   FNN_WGS_GROUP tiles at a time (flat order over rows and samples, one tile per vector lane):
   input transform straight from NCHW into V (16*C*G floats, L1/L2), then per block of
   FNN_WGS_OB output channels and per element e of the 4x4 tile the products summed over the
   channels in registers (M[e][o][t] = sum_c U[e][o][c] V[e][c][t], one FMA chain over c from a
   product, in channel order), then the output transform with bias and activation stored
   straight to NCHW. Each output is one fixed sequence of float32 operations whatever the
   group, block or thread, so the bits do not depend on the thread count; the AVX2 and
   AVX-512 levels run the same operations (8 or 16 tiles a vector). The Cython side
   (_conv_winograd.pxi) calls these only where FNN_WGS_KERNELS is 1. */
#ifndef FNN_WINOGRAD_SMALL_H
#define FNN_WINOGRAD_SMALL_H
#include "isa.h"

#define FNN_WGS_KERNELS (FNN_ISA >= 1)
#if FNN_ISA >= 2
#define FNN_WGS_GROUP 32 /* tiles per group: two 16-lane vectors */
#define FNN_WGS_OB 8     /* output channels per register block (16 accumulators) */
#else
#define FNN_WGS_GROUP 24 /* three 8-lane vectors */
#define FNN_WGS_OB 4     /* (12 accumulators of the 16 registers) */
#endif

/* Us := the F(2x2,3x3) transforms of w (O, C, 3, 3), fnn_wg2_weights' values, in the kernel's
   order: Us[((e*NB + b)*C + c)*FNN_WGS_OB + j] = U[e][b*FNN_WGS_OB + j][c], zero for the output
   channels past O (NB = ceil(O / FNN_WGS_OB); 16*NB*FNN_WGS_OB*C floats), for the blocks of
   output channels [b_lo, b_hi) (the threads split the NB blocks). */
FNN_ISA_KERNEL void fnn_wgs_weights(int O, int C, int b_lo, int b_hi, const float* w, float* Us);

/* fnn_wg2_tiles' contract (tiles [t_lo, t_hi), t_lo a multiple of FNN_WGS_GROUP; bias may be
   NULL; act 0 none, 1 ReLU, 2 leaky ReLU with slope) with Us from fnn_wgs_weights and the
   64-byte aligned scratch V (16*C*FNN_WGS_GROUP floats) and M (16*FNN_WGS_OB*FNN_WGS_GROUP
   floats). Returns 1 when an output before the activation is NaN or infinite (the caller then
   recomputes on an exact route). */
FNN_ISA_KERNEL int fnn_wgs_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                 long t_lo, long t_hi, const float* Us, const float* x,
                                 const float* bias, float* out, float* V, float* M, int act,
                                 float slope);

#endif /* FNN_WINOGRAD_SMALL_H */
