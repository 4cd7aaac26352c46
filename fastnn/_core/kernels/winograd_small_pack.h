/* fnn_wgs_pack of winograd_small.h, plain C: included by each level's winograd_small_<level>.c
   (one definition per module). */
#ifndef FNN_WINOGRAD_SMALL_PACK_H
#define FNN_WINOGRAD_SMALL_PACK_H
#include "winograd_small.h"

void fnn_wgs_pack(int O, int C, const float* U, float* Us) {
    const int NB = (O + FNN_WGS_OB - 1) / FNN_WGS_OB;
    for (int e = 0; e < 16; e++)
        for (int b = 0; b < NB; b++)
            for (int c = 0; c < C; c++)
                for (int j = 0; j < FNN_WGS_OB; j++) {
                    int o = b * FNN_WGS_OB + j;
                    Us[(((long)e * NB + b) * C + c) * FNN_WGS_OB + j] =
                        o < O ? U[((long)e * O + o) * C + c] : 0.0f;
                }
}

#endif /* FNN_WINOGRAD_SMALL_PACK_H */
