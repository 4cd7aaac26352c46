/* Winograd for 4x4 stride-2 float32 convolutions (the DCGAN discriminator's downsampling conv):
   split into its four stride phases (a, b) (input rows 2i + a, columns 2j + b; kernel taps
   (2u + a, 2v + b)) it is one 2x2 stride-1 convolution over 4C channels, run by F(4x4,2x2):
   a 4x4 output tile from a 5x5 patch of each phase image (a 10x10 window of x), 25 multiplies
   per tile per channel pair instead of 64 (2.56x fewer). Points 0, 1, -1, 2, inf:
   A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 0; 0 1 -1 8 1],
   G = [1/2 0; 1/2 1/2; 1/6 -1/6; 1/6 1/3; 0 1],
   B^T = [2 -1 -2 1 0; 0 2 1 -1 0; 0 -2 3 -1 0; 0 -1 0 1 0; 0 2 -1 -2 1].
   Each output is one fixed sequence of float32 operations whatever the tile block or thread,
   so the bits do not depend on the thread count. The AVX2 kernels (winograd_s2_avx2.c) run
   the AVX-512 ones' float32 operations per output, 8 tiles a vector instead of 16. The
   Cython side (_conv_winograd_s2.pxi) calls these only where FNN_WS2_KERNELS is 1. */
#ifndef FNN_WINOGRAD_S2_H
#define FNN_WINOGRAD_S2_H
#include "isa.h"

#define FNN_WS2_KERNELS (FNN_ISA >= 1)
/* floats of padding after each of the 25 blocks of the V and M scratch (64 bytes: the rows a
   tile's transform writes or reads in the 25 blocks then do not all fall in one L1 set; the
   AVX-512 kernels leave it unused) */
#define FNN_WS2_PAD 16

/* U[(e*O + o)*4C + p*C + c] := (G g G^T)[e / 5, e % 5] for phase p = 2a + b of w[o, c]
   (O, C, 4, 4), g[u][v] = w[o, c, 2u + a, 2v + b]; formed in double, rounded once; output
   channels [o_lo, o_hi) (the threads split them). */
FNN_ISA_KERNEL void fnn_ws2_weights(int O, int C, int o_lo, int o_hi, const float* w, float* U);

/* out's tiles [t_lo, t_hi) := bias + conv(x, w) (stride 2, pad ph, pw), then the activation
   (act 0 none, 1 ReLU, 2 leaky ReLU with slope, bitwise as fnn_act_f32); tile t =
   (n*TH + ty)*TW + tx covers out[n, :, 4ty:4ty+4, 4tx:4tx+4] (TH = ceil(OH/4), TW =
   ceil(OW/4)). x (N, C, H, W) with N*C*H*W < 2^31, out (N, O, OH, OW); U from
   fnn_ws2_weights; bias may be NULL. V (25*(4C*TL + FNN_WS2_PAD) floats) and M
   (25*(O*TL + FNN_WS2_PAD) floats) are the caller's 64-byte aligned scratch, TL = t_hi - t_lo
   rounded up to 16. Returns 1 when an output before the activation is NaN or infinite (a
   non-finite input spreads to all outputs of its tiles: the caller then recomputes on an
   exact route). */
FNN_ISA_KERNEL int fnn_ws2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                                 long t_lo, long t_hi, const float* U, const float* x,
                                 const float* bias, float* out, float* V, float* M, int act,
                                 float slope);

/* ---- the backward-data pass: dx of the same convolution, phase by phase. Output phase
   (a, b) of dx (padded rows 2i + a, columns 2j + b) is the 2x2 stride-1 correlation of dy,
   padded by one row and column before, with the flipped phase kernel
   h[u][v] = w[o, c, 2(1 - u) + a, 2(1 - v) + b]: one F(4x4,2x2) over O channels with 4C
   outputs (each dy patch transformed once for all four phases). */

/* U[(e*4C + p*C + c)*O + o] := (G h G^T)[e / 5, e % 5] for phase p = 2a + b of w[o, c]
   (O, C, 4, 4); formed in double, rounded once; input channels [c_lo, c_hi) (the threads
   split them). */
FNN_ISA_KERNEL void fnn_ws2_dx_weights(int O, int C, int c_lo, int c_hi, const float* w, float* U);

/* dx's tiles [t_lo, t_hi) := the backward-data pass of the stride-2 4x4 convolution (pad ph,
   pw) x (N, C, H, W) -> dy (N, O, OH, OW); tile t = (n*TH + ty)*TW + tx covers the phase
   rows ph/2 + 4ty .. ph/2 + 4ty+3 and columns pw/2 + 4tx .. pw/2 + 4tx+3 of each phase (the
   phase rows above ph/2 are padding), i.e. dx rows 8ty - ph%2 .. 8ty + 7 - ph%2 and columns
   8tx - pw%2 .. 8tx + 7 - pw%2 (those inside dx); TH = ceil(ceil((H + ph%2) / 2) / 4), TW
   likewise; plus bias[c] (bias may be NULL: conv_transpose2d's forward is this pass).
   dx (N, C, H, W) with N*C*H*W < 2^31; U from fnn_ws2_dx_weights. V (25*(O*TL +
   FNN_WS2_PAD) floats) and M (25*(4C*TL + FNN_WS2_PAD) floats): the caller's 64-byte
   aligned scratch, TL = t_hi - t_lo rounded up to 16. With act 1 (2) and a mask (dx's
   shape), each dx value then goes through the backward of the ReLU (leaky ReLU of slope)
   whose output is mask: kept where mask > 0, else 0 (times slope), bitwise that backward run
   after. Returns 1 when a dx value (before the mask) is NaN or infinite (the caller then uses
   an exact route). */
FNN_ISA_KERNEL int fnn_ws2_dx_tiles(int C, int H, int W, int O, int OH, int OW, int ph,
                                    int pw, long t_lo, long t_hi, const float* U,
                                    const float* dy, const float* bias, float* dx, float* V,
                                    float* M, const float* mask, int act, float slope);

#endif /* FNN_WINOGRAD_S2_H */
