/* The weight gradient of 4x4 stride-2 float32 convolutions by Winograd with the roles swapped
   (route winograd_s2_dw; the forward and dx are winograd_s2.h's). Over the four stride phases
   (a, b), dW's taps (2u + a, 2v + b) are the 2x2 correlation of x's phase (rows 2i + a,
   columns 2j + b of the padded x) with dy: F(2x2,4x4), the transpose of winograd_s2.h's
   F(4x4,2x2) with the same points 0, 1, -1, 2, inf. Over every 4x4 tile g of dy and the 5x5
   patch d of each phase under it,
       dW = G^T [(A g A^T) (.) (B^T d B)] G
   (A^T, G, B^T as in winograd_s2.h: the input transform is the forward's), so each tile's 25
   products are sums over the tiles, M[e] (4C x O) = V[e] (4C x T) @ Gt[e]^T (T x O), on the
   microkernel's tiles: 25 multiplies per tile per channel pair instead of 64 (2.56x fewer;
   a partial last tile row or column needs 20, a corner 16).
   The tiles are summed in chunks fixed by the geometry, the chunks in order in double, so the
   bits do not depend on the thread count. The Cython side (_conv_winograd_s2_dw.pxi) calls
   these only where FNN_WS2_DW_KERNELS is 1: winograd_s2_dw_avx512.c and winograd_s2_dw_avx2.c
   (16 or 8 tiles a vector, the same float32 operations per sum: the same bits). */
#ifndef FNN_WINOGRAD_S2_DW_H
#define FNN_WINOGRAD_S2_DW_H
#include "isa.h"

#define FNN_WS2_DW_KERNELS (FNN_ISA >= 1)

/* One chunk [t_lo, t_hi) of the tiles of x (N, C, H, W) -> dy (N, O, OH, OW) (pad ph, pw;
   N*C*H*W < 2^31): tile (n, ty, tx) covers dy[n, :, 4ty:4ty+4, 4tx:4tx+4], zero past dy, and
   the 10x10 window of x from row 8ty - ph, column 8tx - pw, zero outside x (TH = ceil(OH/4),
   TW = ceil(OW/4)). The tiles are ordered in groups of gi = kc / (TH*TW) samples (1 if
   fewer), in a group by class: full tiles, then those of a partial last column (OW % 4 != 0),
   of a partial last row, the corner, each class by sample, row, column; where g's last row
   (column) is zero so is row (column) 4 of A g A^T, and those classes' products are skipped
   there (a partial last tile row or column: 20 of the 25, the corner 16). Blocks of gi*TH*TW
   tiles (kc where a sample has more) from t_lo, a multiple of the block
   (conv_plan.winograd_s2_dw_blocks); kc: 16 <= kc <= FNN_MK_KC, a multiple of 16.
   The phases 2a, 2a + 1 (a = 0 or 1: x's padded rows of parity a; the two calls of a chunk
   share no output, so they can be two threads' tasks with no further sums), or all four
   (a = 2: dy transformed once; the same bits as a = 0 then 1). Per block both transforms,
   then the runs of tiles of each of the 25 products summed from zero and added to Mk's rows
   of those phases (Mk: 25*4C*O floats, M[e][p*C + c][o]; the first run stores, an element no
   tile reaches is zeroed). db8 (O*8 doubles, or NULL) += dy's sums, lane l of o's 8 summing
   the tiles l mod 8 of each block, in double. Scratch, 64-byte aligned: V
   25*4C*FNN_MK_RA_LDA, G 25*O*kc, Bp FNN_MK_KC*32 floats. */
FNN_ISA_KERNEL void fnn_ws2_dw_chunk(int N, int C, int H, int W, int O, int OH, int OW, int ph,
                                     int pw, long t_lo, long t_hi, int a, int kc,
                                     const float* x, const float* dy, float* Mk, double* db8,
                                     float* V, float* G, float* Bp);

/* dW's taps from the chunks' sums: for each (o, c, phase) the nchunks partial M (each
   25*4C*O floats) summed in chunk order in double, G^T m G, then into grad[o, c] (O x C x 16
   doubles, :=). Channels [c_lo, c_hi) only. Returns 1 when a tap is NaN or infinite, 2 when
   it could not allocate its 25*O doubles (the caller then runs an exact route). */
FNN_ISA_KERNEL int fnn_ws2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks,
                                     const float* M, double* grad);

#endif /* FNN_WINOGRAD_S2_DW_H */
