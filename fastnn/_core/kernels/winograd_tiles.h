/* Where the Winograd kernels' tiles read and write, for every level's F(2x2,3x3) (m = 2) and
   F(4x4,3x3) (m = 4) kernels: m x m outputs from (m + 2) x (m + 2) input patches, the tiles
   numbered in flat order over the rows of tiles and the samples. Offsets and bit masks only
   (plain C): the kernels turn them into their level's loads and stores. */
#ifndef FNN_WINOGRAD_TILES_H
#define FNN_WINOGRAD_TILES_H

/* tile t's sample (returned) and its first output row *oy and column *ox */
static inline long fnn_wg_tile(int m, int OH, int OW, long t, int* oy, int* ox) {
    const int TW = (OW + m - 1) / m;
    const long tpi = (long)((OH + m - 1) / m) * TW, rem = t % tpi;
    *oy = (int)(rem / TW) * m;
    *ox = (int)(rem % TW) * m;
    return t / tpi;
}

/* bits i < k of the positions first + i inside [0, n) (a row's columns inside the image) */
static inline unsigned fnn_wg_inside(int first, int k, int n) {
    unsigned bits = 0;
    for (int i = 0; i < k; i++)
        if (first + i >= 0 && first + i < n) bits |= 1u << i;
    return bits;
}

/* Tiles t0 + q, q < nq (from cnt on: no tile, zero): off[q] the offset in x of the patch's
   first element (sample n's channel 0, row oy - ph, column ox - pw: outside the image where
   the patch crosses its edge), km[q*(m + 2) + r] the bits j of patch row r's columns inside
   the image (0 for a row outside it). */
static inline void fnn_wg_patches(int m, int C, int H, int W, int OH, int OW, int ph, int pw,
                                  long t0, int cnt, int nq, long* off, unsigned char* km) {
    const int p = m + 2;
    for (int q = 0; q < nq; q++) {
        if (q >= cnt) {
            off[q] = 0;
            for (int r = 0; r < p; r++) km[q * p + r] = 0;
            continue;
        }
        int oy, ox;
        const long n = fnn_wg_tile(m, OH, OW, t0 + q, &oy, &ox);
        const int iy0 = oy - ph, ix0 = ox - pw;
        const unsigned char cm = (unsigned char)fnn_wg_inside(ix0, p, W);
        off[q] = n * C * ((long)H * W) + (long)iy0 * W + ix0;
        for (int r = 0; r < p; r++) km[q * p + r] = iy0 + r >= 0 && iy0 + r < H ? cm : 0;
    }
}

/* Tiles t0 + q, q < nq (from cnt on: zero): ooff[q] the offset in out of the tile's first
   output (sample n's channel 0), rows[q] and cols[q] how many of its m rows and columns lie
   inside the output. */
static inline void fnn_wg_outputs(int m, int O, int OH, int OW, long t0, int cnt, int nq,
                                  long* ooff, int* rows, int* cols) {
    for (int q = 0; q < nq; q++) {
        if (q >= cnt) {
            ooff[q] = 0;
            rows[q] = cols[q] = 0;
            continue;
        }
        int oy, ox;
        const long n = fnn_wg_tile(m, OH, OW, t0 + q, &oy, &ox);
        ooff[q] = n * O * ((long)OH * OW) + (long)oy * OW + ox;
        rows[q] = OH - oy < m ? OH - oy : m;
        cols[q] = OW - ox < m ? OW - ox : m;
    }
}

/* Whether tiles t .. t + R - 1 lie in one row of tiles (a run: their patch rows and output
   rows are contiguous); then *n, *oy, *ox are tile t's (fnn_wg_tile). */
static inline int fnn_wg_run(int m, int OH, int OW, long t, int R, long* n, int* oy, int* ox) {
    *n = fnn_wg_tile(m, OH, OW, t, oy, ox);
    return *ox / m + R <= (OW + m - 1) / m;
}

/* F(2x2,3x3)'s tiles t0 .. t0 + 15 as two runs of 8 (rows of tiles a multiple of 8 long;
   cnt < 16: not), whose patch rows are loaded 16 floats at a time from columns ix0 + 2s
   (s = 0, 1): xoff[h] the offset in x of run h's first patch element, xm[h][r][s] the bits of
   those 16 columns of its row r inside the image. Returns 0 when they are not two runs. */
static inline int fnn_wg2_runs16(int C, int H, int W, int OH, int OW, int ph, int pw, long t0,
                                 int cnt, long xoff[2], unsigned short xm[2][4][2]) {
    if (cnt < 16 || (OW + 1) / 2 % 8 != 0) return 0;
    for (int h = 0; h < 2; h++) {
        long n;
        int oy, ox;
        if (!fnn_wg_run(2, OH, OW, t0 + 8 * h, 8, &n, &oy, &ox)) return 0;
        const int iy0 = oy - ph, ix0 = ox - pw;
        xoff[h] = n * C * ((long)H * W) + (long)iy0 * W + ix0;
        for (int s = 0; s < 2; s++) {
            const unsigned short cm = (unsigned short)fnn_wg_inside(ix0 + 2 * s, 16, W);
            for (int r = 0; r < 4; r++) xm[h][r][s] = iy0 + r >= 0 && iy0 + r < H ? cm : 0;
        }
    }
    return 1;
}

/* The input rows tiles [t0, t1) read, as up to nmax ranges of channel 0 of x (one a sample:
   start[i] its offset, len[i] its floats; the caller adds c*H*W for channel c): what a kernel
   prefetches for its next group of tiles while it transforms this one (a channel's plane is
   its own page or pages, where the hardware prefetchers start late). Returns the count. */
static inline int fnn_wg_rows_ahead(int m, int C, int H, int W, int OH, int OW, int ph, long t0,
                                    long t1, int nmax, long* start, long* len) {
    if (t1 <= t0) return 0;
    int oyf, oxf, oyl, oxl, k = 0;
    const long nf = fnn_wg_tile(m, OH, OW, t0, &oyf, &oxf);
    const long nl = fnn_wg_tile(m, OH, OW, t1 - 1, &oyl, &oxl);
    for (long n = nf; n <= nl && k < nmax; n++) {
        int r0 = n == nf ? oyf - ph : 0, r1 = n == nl ? oyl - ph + m + 2 : H;
        if (r0 < 0) r0 = 0;
        if (r1 > H) r1 = H;
        if (r1 <= r0) continue;
        start[k] = n * C * ((long)H * W) + (long)r0 * W;
        len[k++] = (long)(r1 - r0) * W;
    }
    return k;
}

#endif /* FNN_WINOGRAD_TILES_H */
