/* Winograd convolution for 3x3 stride-1 float32 convolutions: F(2x2,3x3) and F(4x4,3x3) at the
   AVX2 and AVX-512 levels (winograd_avx2.c, winograd_avx512.c).
   Each 2x2 output tile comes from a 4x4 input patch: V = B^T d B per channel, then 16
   element-wise products summed over channels, M[e] (O x T) = U[e] (O x C) @ V[e] (C x T), one
   microkernel GEMM per element e of the 4x4 tile (fnn_mk_sgemm_nn), then Y = A^T M A. 16
   multiplies per tile per channel pair instead of 36: 2.25x fewer. Each output is one fixed
   sequence of float32 operations whatever the tile block or thread split, so the result does
   not depend on the thread count. The Cython side (_conv_winograd.pxi) calls these only where
   FNN_WINOGRAD_KERNELS (F(4x4,3x3): FNN_WINOGRAD_F4) is 1. */
#ifndef FNN_WINOGRAD_H
#define FNN_WINOGRAD_H
#include "isa.h"

#define FNN_WINOGRAD_KERNELS (FNN_ISA >= 1)  /* F(2x2,3x3) */
#define FNN_WINOGRAD_F4 (FNN_ISA >= 1)       /* F(4x4,3x3) */

/* U[(e*O + o)*C + c] := (G w[o, c] G^T)[e / 4, e % 4] for the 3x3 kernel w[o, c] (O, C, 3, 3),
   formed in double and rounded once to float, for the filters o*C + c in [lo, hi) (the
   threads split the O*C filters). */
FNN_ISA_KERNEL void fnn_wg2_weights(int O, int C, long lo, long hi, const float* w, float* U);

/* out's tiles [t_lo, t_hi) := bias + conv(x, w) (pad ph, pw), then the activation (act 0 none,
   1 ReLU, 2 leaky ReLU with slope, bitwise as fnn_act_f32); tile t = (n*TH + ty)*TW + tx
   covers out[n, :, 2ty:2ty+2, 2tx:2tx+2] (TH = ceil(OH/2), TW = ceil(OW/2)). x (N, C, H, W),
   out (N, O, OH, OW); U from fnn_wg2_weights; bias may be NULL. V (16*C*TL floats) and M
   (16*O*TL floats) are the caller's 64-byte aligned scratch, TL = t_hi - t_lo rounded up to 16.
   Returns 1 when an output before the activation is NaN or infinite: a non-finite input spreads
   to every output of its tiles (NaN - NaN, inf - inf), not only to those whose 3x3 window holds
   it, so the caller then recomputes the convolution on an exact route. */
FNN_ISA_KERNEL int fnn_wg2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                  long t_lo, long t_hi, const float* U, const float* x,
                                  const float* bias, float* out, float* V, float* M, int act,
                                  float slope);

/* F(4x4,3x3), the same contract with 4x4 output tiles from 6x6 patches (TH = ceil(OH/4),
   TW = ceil(OW/4)), 36 GEMMs, U of 36*O*C floats, V 36*C*TL and M 36*O*TL floats. */
FNN_ISA_KERNEL void fnn_wg4_weights(int O, int C, long lo, long hi, const float* w, float* U);
FNN_ISA_KERNEL int fnn_wg4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                  long t_lo, long t_hi, const float* U, const float* x,
                                  const float* bias, float* out, float* V, float* M, int act,
                                  float slope);

/* ---- the weight gradient by F(2x2,3x3) with the roles swapped (F(3x3,2x2)): over every 2x2
   tile of dy, dW's 3x3 taps are the correlation of the 4x4 input patch with the 2x2 dy tile,
   dW = G'^T [(A' g A'^T) (.) (B^T d B)] G' (B^T as in the forward, A'^T = [1 1 1 0; 0 1 -1 1],
   G'^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 -1]): 16 sums over the tiles, one per element of the
   transformed tile, M[e] (C x O) = V[e] (C x T) @ Gt[e]^T (T x O), on the microkernel's tiles.
   One chunk [t_lo, t_hi) of the tiles (tile t as in fnn_wg2_tiles, over dy's OH x OW grid):
   blocks of kc tiles (16 <= kc <= FNN_MK_KC, a multiple of 16): both transforms (dy's
   straight into the microkernel's packed 32-column panels, its tiles' pixels transposed in
   registers), then each block's 16 products summed from zero and added to Mk (16*C*O floats,
   M[e][c][o]; the first block stores). db8 (O*8 doubles, or NULL) += dy's sums, lane l of o's
   8 summing the tiles l mod 8 of each block, in double. Scratch, 64-byte aligned: V
   16*C*FNN_MK_RA_LDA floats, P 16*FNN_WG2_DW_PS(O, kc) floats. Each entry of Mk is the same
   float32 sum at both levels. */
/* floats per element of fnn_wg2_dw_chunk's packed dy transforms: ceil(O/32) panels of kc rows
   of 32, and 16 more so the 16 elements' rows fall on different L1 sets */
#define FNN_WG2_DW_PS(O, kc) ((long)(((O) + 31) / 32) * (kc) * 32 + 16)
FNN_ISA_KERNEL void fnn_wg2_dw_chunk(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                     long t_lo, long t_hi, int kc, const float* x,
                                     const float* dy, float* Mk, double* db8, float* V,
                                     float* P);

/* dW's 3x3 taps from the chunks' sums (plain C, every level): for each (o, c) the nchunks
   partial M (each 16*C*O floats) summed in chunk order in double, G'^T m G', then into
   grad[o, c] (O x C x 9 doubles, :=). Channels [c_lo, c_hi) only. Returns 1 when a tap is
   NaN or infinite, 2 when it could not allocate its 16*O doubles (the caller then runs an exact route: a non-finite input reaches all 9
   taps of its channel here, fewer there). */
FNN_ISA_KERNEL int fnn_wg2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks,
                                     const float* M, double* grad);

#endif /* FNN_WINOGRAD_H */
