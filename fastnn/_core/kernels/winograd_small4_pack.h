/* fnn_wgs4_weights of winograd_small4.h (winograd_filters.h's transforms in the level's block
   order): included by each level's winograd_small4_<level>.c (one definition per module). */
#ifndef FNN_WINOGRAD_SMALL4_PACK_H
#define FNN_WINOGRAD_SMALL4_PACK_H
#include "winograd_small4.h"
#include "winograd_filters.h"

void fnn_wgs4_weights(int O, int C, int b_lo, int b_hi, const float* w, float* Us) {
    fnn_wgf_packed(4, FNN_WGS4_OB, O, C, b_lo, b_hi, w, Us);
}

#endif /* FNN_WINOGRAD_SMALL4_PACK_H */
