# Why Cython and not numba: a convolution here is im2col + one large BLAS GEMM + a scatter. The
# GEMM must be a nogil sgemm/dgemm call on raw pointers into caller-owned and workspace buffers
# (scipy.linalg.cython_blas; numba only has np.dot, which allocates and cannot write into a
# strided chunk), and the shared row-major GEMM wrapper lives in _blas.pxd. The element loops
# (im2col, col2im, gather, scatter) are OpenMP prange loops over independent rows/planes.
"""Convolution: im2col / col2im, conv2d and conv_transpose2d forward and backward.

Plan (chosen by measurement, see benchmarks/kernels.py). The batch is cut into chunks of ``nb``
samples whose im2col matrix (C*KH*KW, nb*OH*OW) is about COL_CHUNK_BYTES, so the column matrix
is still in cache when the GEMM reads it, and the GEMM is large (nb*OH*OW columns) even for
small images. Per chunk: im2col in a prange (no BLAS inside), one multithreaded GEMM, then a
prange pass that scatters (O, nb*P) to NCHW and adds the bias. One level of parallelism at a
time: OpenMP loops and BLAS threads never run nested. A chunk of one sample needs no
scatter/gather: the GEMM reads and writes the NCHW sample directly.

Two drivers cover all four kernels, because conv_transpose2d's forward is conv2d's
backward-data and vice versa:
    _im2col_driver   out := W @ im2col(img) (+ bias)   and/or   dW += gather(g) @ im2col(img).T
    _col2im_driver   out := col2im(W.T @ gather(g)) (+ bias)
"""
from cython cimport floating
from cython.parallel cimport prange
cimport openmp
from libc.string cimport memcpy, memset
cimport numpy as cnp
import threading

import numpy as np

from ._blas cimport gemm_rm, gemm_threads, took, tracing
from ._checks import (activation_code, check_float, check_like, check_optional_out, check_out,
                      check_pair, conv_out_size)

cnp.import_array()

# Loops over fewer elements than this run on the calling thread: waking an OpenMP team costs
# more than the copy, and on a busy machine a team barrier can wait a whole scheduler slice.
cdef enum:
    PARALLEL_MIN_ELEMENTS = 32768

# Target size of one chunk's im2col matrix (see _chunk_samples and _default_chunk_bytes).
cdef Py_ssize_t _col_chunk_bytes = 4 << 20


def _default_chunk_bytes():
    """Half the core's L2 on Intel, 4 MB elsewhere. A chunk's column matrix is written by im2col
    and read back by its GEMM on the same core: on the 2-core Emerald Rapids VM (2 MB L2, a mesh
    L3) 1 MB chunks stayed in L2 and measured fastest at 2 threads (dW vgg 32->32 11.1 -> 8.0 ms,
    64->64 8.4 -> 7.7, dcgan-d 64->128 6.7 -> 6.2, its forward 6.6 -> 6.1 vs 4 MB chunks), while
    on the 2-core EPYC VM (2 MB L2, a fast 32 MB L3) 4 MB chunks measured fastest."""
    try:
        with open("/proc/cpuinfo") as f:
            intel = "GenuineIntel" in f.read(4096)
        if not intel:
            return 4 << 20
        for index in range(8):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{index}/"
            with open(base + "level") as f:
                if f.read().strip() != "2":
                    continue
            with open(base + "size") as f:
                text = f.read().strip().upper()
            size = int(text.rstrip("KMB")) << (20 if text.endswith("M") else 10)
            return max(256 << 10, min(4 << 20, size // 2))
    except (OSError, ValueError):
        pass
    return 4 << 20


_col_chunk_bytes = _default_chunk_bytes()


# Stride-1 same-width float32 forward convolutions as an implicit GEMM (see _conv_s1_forward).
cdef bint _implicit_s1 = True


# Threads take the implicit and sub-pixel routes' tasks dynamically: every output is computed
# whole inside one task, so which thread runs it changes nothing, and on the shared VM one of the
# two cores is often slowed by other tenants for a while, which a static split waits out.
# Interleaved A/B, dcgan-d conv2 forward, 2 threads, 80 samples, medians (p75): dynamic 3.57
# (3.75) / static 4.07 (4.45) / torch 3.91 (4.01) ms; another run 3.95 (4.86) / 4.62 (5.08) /
# 4.35 (4.74). The best cases were alike (3.1-3.3 / 3.0-3.6).
cdef bint _dynamic = True


def _set_dynamic(bint on):
    """Tuning hook for benchmarks: dynamic (True) or static thread schedules on the implicit
    and sub-pixel routes; returns the old value."""
    global _dynamic
    old = _dynamic
    _dynamic = on
    return old



def _set_implicit_gemm(bint on):
    """Tuning hook for benchmarks and tests: route stride-1 same-width float32 forward
    convolutions through the implicit GEMM (True) or im2col + GEMM; returns the old value."""
    global _implicit_s1
    old = _implicit_s1
    _implicit_s1 = on
    return old


def _set_col_chunk_bytes(Py_ssize_t nbytes):
    """Tuning hook for benchmarks: set the im2col chunk size in bytes; returns the old value."""
    global _col_chunk_bytes
    old = _col_chunk_bytes
    _col_chunk_bytes = max(1, nbytes)
    return old


# ---- float32 GEMM microkernel (AVX-512) ---------------------------------------------------------
#
# Why not BLAS here: the GEMMs of a convolution are short and wide (O = 32..128 rows, C*KH*KW =
# 288..1024 deep, thousands of columns), and the microkernel packs its B panels straight from
# the image (implicit GEMMs below), which no BLAS call can. On the 2-core EPYC VM, whose scipy
# OpenBLAS ran its AVX2 "Haswell" kernels, sgemm reached 68-90 GFLOP/s per core on these shapes
# and this 8x32 AVX-512 register tile 140-228 (2 threads); on the Emerald Rapids VM, where
# OpenBLAS picks its SkylakeX kernels, the tile still measured ~1.2x sgemm on dense shapes. Built
# only where the compiler targets AVX-512 (setup.py compiles with -march=native); float64 and
# other machines keep BLAS. Each entry of C is one sum over k in a fixed order whatever the
# thread count, as with BLAS.
from ._microkernel cimport FNN_MK_AVAILABLE, FNN_MK_KC, fnn_mk_sgemm_nn, fnn_mk_sgemm_nt, fnn_mk_sgemm_tn


# The convolution-specific kernels below use the microkernel's FNN_MK_* macros.
cdef extern from *:
    """
    #include "_microkernel.h"
    #if defined(__AVX512F__)
    /* Implicit-GEMM convolution of one sample at stride 1 with OW == W (same-width output):
       Cout[i, p] := sum_r A[i, r] * im2col(plane)[r, p] for columns p in [p_lo, p_hi), ldc
       apart. Row r = (c, ki, kj) of im2col is the plane read flat from (ki - ph)*W + kj - pw
       on, with the lanes whose pixel falls off the image masked to zero, so the B panel is
       packed straight from the image: no column matrix is written or read back. */
    static void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW,
                               int ph, int pw, const float* A, const float* plane, float* Cout,
                               int ldc) {
        float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
        unsigned rowm[32], colm[32];
        int k = C * KH * KW, lda = k, OW = W;
        /* the panels read every channel plane at once, too many streams for the hardware
           prefetcher: fetch the sample into L2 first, and the output rows for writing (32->32 at 28x28, one
           thread, batch 64: 108 -> 147 GFLOP/s) */
        for (long q = 0; q < (long)C * H * W; q += 16) _mm_prefetch((const char*)(plane + q), _MM_HINT_T1);
        for (int i = 0; i < m; i++)
            for (int q = p_lo; q < p_hi; q += 16) _m_prefetchw(Cout + (long)i * ldc + q);
        for (int j0 = p_lo; j0 < p_hi; j0 += 32) {
            int nr = p_hi - j0 < 32 ? p_hi - j0 : 32;
            __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
            __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
            for (int a = 0; a < KH; a++) rowm[a] = 0;
            for (int b = 0; b < KW; b++) colm[b] = 0;
            for (int q = 0; q < nr; q++) {
                int oh = (j0 + q) / OW, ow = (j0 + q) - oh * OW;
                for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
                for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
            }
            for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
                int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
                int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
                for (int kk = 0; kk < kc; kk++) {
                    unsigned mk = rowm[ki] & colm[kj];
                    const float* src = plane + (long)c * H * W + (long)(ki - ph) * W + (kj - pw) + j0;
                    _mm512_store_ps(Bp + kk * 32, _mm512_maskz_loadu_ps((__mmask16)mk, src));
                    _mm512_store_ps(Bp + kk * 32 + 16, _mm512_maskz_loadu_ps((__mmask16)(mk >> 16), src + 16));
                    if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
                }
                int acc_in = k0 > 0;
                FNN_MK_TILES(FNN_MK_IDX_N, Cout)
            }
        }
    }
    /* dst (nb*P, O) := src (nb, O, P) viewed as (O, nb*P), transposed: 16 channels of one
       pixel per gather (the 16 source rows are read in step, so their lines stay in L1) and one
       contiguous store, where scalar stores O apart touched a new cache line each. */
    static void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) {
        const __m512i step = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
        __m512i idx = _mm512_mullo_epi32(step, _mm512_set1_epi32((int)P));
        for (int n = 0; n < nb; n++) {
            for (int o0 = 0; o0 < O; o0 += 16) {
                int cnt = O - o0 < 16 ? O - o0 : 16;
                __mmask16 mk = cnt == 16 ? 0xFFFF : (__mmask16)((1u << cnt) - 1);
                const float* s = src + ((long)n * O + o0) * P;
                float* d = dst + (long)n * P * O + o0;
                for (long p = 0; p < P; p++)
                    _mm512_mask_storeu_ps(d + p * O, mk,
                        _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, s + p, 4));
            }
        }
    }
    /* y[0:n] := act(y) in place: 1 ReLU (0 where y <= 0; NaN stays), 2 leaky ReLU (y * slope
       where y is not > 0, slope rounded to float and multiplied in float, as numba's
       leaky_relu_forward and torch's leaky_relu do), so the values are bitwise those of the
       activation layer. */
    static void fnn_act_f32(float* y, long n, int act, double slope) {
        long i = 0;
        const __m512 zero = _mm512_setzero_ps();
        const float sf = (float)slope;
        if (act == 1) {
            for (; i + 16 <= n; i += 16) {
                __m512 v = _mm512_loadu_ps(y + i);
                _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ), zero));
            }
        } else if (act == 2) {
            const __m512 s = _mm512_set1_ps(sf);
            for (; i + 16 <= n; i += 16) {
                __m512 v = _mm512_loadu_ps(y + i);
                __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
                _mm512_storeu_ps(y + i, _mm512_mask_mov_ps(_mm512_mul_ps(v, s), pos, v));
            }
        }
        for (; i < n; i++) {
            float v = y[i];
            if (act == 1) y[i] = v <= 0 ? 0.0f : v;
            else if (act == 2 && !(v > 0)) y[i] = v * sf;
        }
    }
    /* lanes [a, b) of a 16-lane mask, a and b clipped to [0, 16] */
    static inline __mmask16 fnn_lanes(int a, int b) {
        a = a < 0 ? 0 : (a > 16 ? 16 : a);
        b = b < 0 ? 0 : (b > 16 ? 16 : b);
        return b > a ? (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u)) : 0;
    }
    /* One im2col row of a float32 plane at stride 1 or 2: dst[oh*OW + ow] := plane[oh*sh - ph
       + i, ow*sw + j - pw], zero outside. Stride 1 with OW == W (same-size convolutions) is
       one shifted flat copy of the plane plus zeros on the padded border; otherwise 16 outputs
       per masked load (two and an even-lane permute at stride 2), masks hoisted out of the row
       loop; the masks drop the padding, so no lane reads outside the row. */
    static void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw,
                                   int ph, int pw, int OH, int OW, float* dst) {
        int off = j - pw;
        if (sh == 1 && sw == 1 && OW == W) {
            int oh_lo = ph - i > 0 ? ph - i : 0;
            int oh_hi = H + ph - i < OH ? H + ph - i : OH;
            if (oh_hi < oh_lo) oh_hi = oh_lo;
            if (oh_lo > OH) oh_lo = oh_hi = OH;
            memset(dst, 0, sizeof(float) * (size_t)oh_lo * OW);
            memset(dst + (long)oh_hi * OW, 0, sizeof(float) * (size_t)(OH - oh_hi) * OW);
            long n = (long)(oh_hi - oh_lo) * OW;
            long s = (long)(oh_lo + i - ph) * W + off;  /* source of dst[oh_lo*OW] */
            long a = s < 0 ? -s : 0, b = s + n > (long)H * W ? (long)H * W - s : n;
            if (b > a) memcpy(dst + (long)oh_lo * OW + a, plane + s + a, sizeof(float) * (size_t)(b - a));
            /* columns whose source falls off the row (this also covers [0, a) and [b, n)) */
            int lo = off < 0 ? -off : 0, hi = W - off < OW ? W - off : OW;
            if (hi < lo) hi = lo;
            for (int oh = oh_lo; oh < oh_hi; oh++) {
                float* d = dst + (long)oh * OW;
                for (int ow = 0; ow < lo; ow++) d[ow] = 0;
                for (int ow = hi; ow < OW; ow++) d[ow] = 0;
            }
            return;
        }
        const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        for (int ow0 = 0; ow0 < OW; ow0 += 16) {
            int cnt = OW - ow0 < 16 ? OW - ow0 : 16;
            __mmask16 dm = fnn_lanes(0, cnt);
            long s0 = (long)ow0 * sw + off;  /* source column of lane 0 */
            int lo = s0 < 0 ? (int)-s0 : 0;
            long hi_l = (long)W - s0;
            int hi = hi_l > 32 ? 32 : (hi_l < 0 ? 0 : (int)hi_l);
            int lim = hi < sw * cnt ? hi : sw * cnt;
            __mmask16 ma = fnn_lanes(lo, lim), mb = fnn_lanes(lo - 16, lim - 16);
            for (int oh = 0; oh < OH; oh++) {
                float* d = dst + (long)oh * OW + ow0;
                int ih = oh * sh - ph + i;
                __m512 v = _mm512_setzero_ps();
                if (ih >= 0 && ih < H) {
                    const float* src = plane + (long)ih * W + s0;
                    if (sw == 1) {
                        v = _mm512_maskz_loadu_ps(ma, src);
                    } else {
                        __m512 x0 = _mm512_maskz_loadu_ps(ma, src);
                        __m512 x1 = _mm512_maskz_loadu_ps(mb, src + 16);
                        v = _mm512_permutex2var_ps(x0, even, x1);
                    }
                }
                if (cnt == 16) _mm512_storeu_ps(d, v);
                else _mm512_mask_storeu_ps(d, dm, v);
            }
        }
    }
    #else
    static void fnn_act_f32(float* y, long n, int act, double slope) {
        for (long i = 0; i < n; i++) {
            float v = y[i];
            if (act == 1) y[i] = v <= 0 ? 0.0f : v;
            else if (act == 2 && !(v > 0)) y[i] = v * (float)slope;
        }
    }
    static void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw,
                                   int ph, int pw, int OH, int OW, float* dst) {}
    static void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) {}
    static void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW,
                               int ph, int pw, const float* A, const float* plane, float* Cout,
                               int ldc) {}
    #endif
    """
    void fnn_im2col_row_f32(const float* plane, int H, int W, int i, int j, int sh, int sw, int ph,
                            int pw, int OH, int OW, float* dst) noexcept nogil
    void fnn_gather_t_f32(const float* src, int nb, int O, long P, float* dst) noexcept nogil
    void fnn_act_f32(float* y, long n, int act, double slope) noexcept nogil
    void fnn_mk_conv_s1(int m, int p_lo, int p_hi, int C, int H, int W, int KH, int KW, int ph,
                        int pw, const float* A, const float* plane, float* Cout, int ldc) noexcept nogil



# Weight gradients through fnn_mk_sgemm_nt (True) or dW.T = col @ G.T (False); see _set_dw_nt.
cdef bint _dw_nt = True


def _set_dw_nt(bint on):
    """Tuning hook for benchmarks and tests: float32 weight gradients as G @ col.T on the
    transposing microkernel (True) or as col @ G.T after transposing G (False); returns the old value."""
    global _dw_nt
    old = _dw_nt
    _dw_nt = on
    return old


cdef inline bint _dw_on_nt(int O) noexcept nogil:
    """Whether an im2col weight gradient with O output channels runs as dW += G @ col.T (else
    dW.T = col @ G.T) on the microkernel (see _im2col_chunk)."""
    return _dw_nt and (O >= 64 or O % 32 != 0)


cdef inline void _mk_xn(bint trans_a, bint trans_b, int m, int n, int k, const float* a,
                        int lda, const float* b, int ldb, bint accumulate, float* c,
                        int ldc) noexcept nogil:
    if trans_a:
        fnn_mk_sgemm_tn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    elif trans_b:
        fnn_mk_sgemm_nt(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    else:
        fnn_mk_sgemm_nn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)


cdef void _gemm_xn(bint trans_a, bint trans_b, int m, int n, int k, const floating* a, int lda,
                   const floating* b, int ldb, bint accumulate, floating* c, int ldc) noexcept nogil:
    """C (m, n) := op(A) @ op(B) (+ C if accumulate), not both transposed: float32 through the
    microkernel (columns cut into per-thread blocks of whole 32-column panels when worth
    sharing; one block inside a parallel region), else gemm_rm."""
    cdef int nt, t, block, lo
    if floating is float:
        if FNN_MK_AVAILABLE and k > 0:
            nt = gemm_threads(<Py_ssize_t>m * n * k)
            if nt > 1:
                block = (((n + nt - 1) // nt + 31) // 32) * 32
                for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                    lo = t * block
                    if lo < n:
                        _mk_xn(trans_a, trans_b, m, min(block, n - lo), k, a, lda,
                               b + (<Py_ssize_t>lo * ldb if trans_b else lo), ldb, accumulate,
                               c + lo, ldc)
            else:
                _mk_xn(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc)
            return
    gemm_rm(trans_a, trans_b, m, n, k, <floating>1, a, lda, b, ldb,
            <floating>1 if accumulate else <floating>0, c, ldc)


def _microkernel_available():
    """True when float32 convolution GEMMs run on the AVX-512 microkernel (tests, benchmarks)."""
    return bool(FNN_MK_AVAILABLE)


# ---- element loops -----------------------------------------------------------------------------

cdef inline void _valid_range(int size, int out_size, int stride, int offset, int* lo, int* hi) noexcept nogil:
    """[lo, hi) = the output positions o with 0 <= o*stride + offset < size."""
    cdef int a, b
    a = 0 if offset >= 0 else (-offset + stride - 1) // stride
    b = 0 if size - 1 - offset < 0 else (size - 1 - offset) // stride + 1
    a = min(a, out_size)
    b = min(b, out_size)
    lo[0] = a
    hi[0] = max(a, b)


cdef void _im2col_row(const floating* plane, int H, int W, int i, int j, int sh, int sw, int ph,
                      int pw, int OH, int OW, floating* dst) noexcept nogil:
    """dst[oh*OW + ow] := plane[oh*sh - ph + i, ow*sw - pw + j], zero outside the plane."""
    cdef int oh, ow, ih, lo, hi
    cdef int off = j - pw
    cdef floating* d
    cdef const floating* src
    if floating is float:
        if FNN_MK_AVAILABLE and sw <= 2:
            # memcpy/memset calls on rows of 7-28 floats cost more than the copy (11-24 GB/s
            # from cache); masked AVX-512 loads do a row in 1-2 instructions per 16 outputs
            fnn_im2col_row_f32(plane, H, W, i, j, sh, sw, ph, pw, OH, OW, dst)
            return
    _valid_range(W, OW, sw, off, &lo, &hi)
    for oh in range(OH):
        d = dst + <Py_ssize_t>oh * OW
        ih = oh * sh - ph + i
        if ih < 0 or ih >= H:
            memset(d, 0, OW * sizeof(floating))
            continue
        src = plane + <Py_ssize_t>ih * W
        for ow in range(lo):
            d[ow] = 0
        if sw == 1:
            memcpy(d + lo, src + lo + off, (hi - lo) * sizeof(floating))
        else:
            for ow in range(lo, hi):
                d[ow] = src[ow * sw + off]
        for ow in range(hi, OW):
            d[ow] = 0


cdef void _im2col(const floating* x, int nb, int C, int H, int W, int KH, int KW, int sh, int sw,
                  int ph, int pw, int OH, int OW, floating* col, Py_ssize_t row_stride,
                  Py_ssize_t sample_stride, bint par) noexcept nogil:
    """col[(c*KH + i)*KW + j, n, :] := window (i, j) of x[n, c]; row r of sample n starts at
    col + r*row_stride + n*sample_stride, so one loop serves the public (N, CKK, P) layout and
    the chunk layout (CKK, nb*P)."""
    cdef Py_ssize_t task
    cdef Py_ssize_t ntasks = <Py_ssize_t>nb * C * KH * KW
    cdef int n, r, c, i, j
    cdef int ckk = C * KH * KW
    for task in prange(ntasks, schedule="static",
                       use_threads_if=par and ntasks * OH * OW > PARALLEL_MIN_ELEMENTS):
        n = task // ckk
        r = task % ckk
        c = r // (KH * KW)
        i = (r // KW) % KH
        j = r % KW
        _im2col_row(x + (<Py_ssize_t>n * C + c) * H * W, H, W, i, j, sh, sw, ph, pw, OH, OW,
                    col + r * row_stride + n * sample_stride)


cdef void _col2im(const floating* col, int nb, int C, int H, int W, int KH, int KW, int sh, int sw,
                  int ph, int pw, int OH, int OW, floating* out, const floating* bias,
                  Py_ssize_t row_stride, Py_ssize_t sample_stride, bint par) noexcept nogil:
    """out[n, c] := bias[c] (or 0) + sum over (i, j) of the window columns added back; one
    thread owns each (n, c) plane, so the overlapping adds need no atomics."""
    cdef Py_ssize_t task, q
    cdef Py_ssize_t plane_size = <Py_ssize_t>H * W
    cdef int n, c, i, j, oh, ow, ih, lo, hi, off
    cdef floating* plane
    cdef floating* dst
    cdef const floating* src
    cdef floating b
    for task in prange(<Py_ssize_t>nb * C, schedule="static",
                       use_threads_if=par and <Py_ssize_t>nb * C * KH * KW * OH * OW > PARALLEL_MIN_ELEMENTS):
        n = task // C
        c = task % C
        plane = out + task * plane_size
        if bias == NULL:
            memset(plane, 0, plane_size * sizeof(floating))
        else:
            b = bias[c]
            for q in range(plane_size):
                plane[q] = b
        for i in range(KH):
            for j in range(KW):
                src = col + ((c * KH + i) * KW + j) * row_stride + n * sample_stride
                off = j - pw
                # assigned here so that Cython makes them thread-private: set only through
                # pointers, prange left them shared, and two threads' ranges raced (out-of-bounds
                # adds, heap corruption under 2 threads)
                lo = 0
                hi = 0
                _valid_range(W, OW, sw, off, &lo, &hi)
                for oh in range(OH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    dst = plane + <Py_ssize_t>ih * W + off
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow] += src[oh * OW + ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw] += src[oh * OW + ow]


cdef void _gather(const floating* src, int nb, int O, Py_ssize_t P, floating* dst,
                  bint par) noexcept nogil:
    """dst (O, nb*P) := src (nb, O, P) with the sample axis moved inside the channel axis."""
    cdef Py_ssize_t task
    cdef int n, o
    for task in prange(<Py_ssize_t>nb * O, schedule="static",
                       use_threads_if=par and nb * O * P > PARALLEL_MIN_ELEMENTS):
        n = task // O
        o = task % O
        memcpy(dst + (o * <Py_ssize_t>nb + n) * P, src + task * P, P * sizeof(floating))


cdef void _gather_t(const floating* src, int nb, int O, Py_ssize_t P, floating* dst) noexcept nogil:
    """dst (nb*P, O) := src (nb, O, P) viewed as (O, nb*P), transposed (serial: the caller is one
    thread of a fused chunk loop)."""
    cdef int n, o
    cdef Py_ssize_t p
    cdef const floating* s
    cdef floating* d
    if floating is float:
        # measured: gathers win at O <= 32 (vgg's first conv dW 0.74 -> 0.40 ms); at O = 64..128
        # the scalar stores' lines stay in cache long enough and the gathers were ~7% slower
        if FNN_MK_AVAILABLE and O <= 32 and P * O < 2147483647:
            fnn_gather_t_f32(src, nb, O, P, dst)
            return
    for n in range(nb):
        for o in range(O):
            s = src + (<Py_ssize_t>n * O + o) * P
            d = dst + <Py_ssize_t>n * P * O + o
            for p in range(P):
                d[p * O] = s[p]


cdef void _add_into(const floating* src, Py_ssize_t size, floating* dst) noexcept nogil:
    """dst += src (serial: called per chunk, from one thread of the fused loop)."""
    cdef Py_ssize_t q
    for q in range(size):
        dst[q] += src[q]


cdef void _add_transposed(const floating* src, int rows, int cols, floating* dst) noexcept nogil:
    """dst (cols, rows) += src (rows, cols).T"""
    cdef int r, c
    for c in range(cols):
        for r in range(rows):
            dst[<Py_ssize_t>c * rows + r] += src[<Py_ssize_t>r * cols + c]


cdef void _scatter_bias(const floating* src, int nb, int O, Py_ssize_t P, const floating* bias,
                        floating* dst, bint par) noexcept nogil:
    """dst (nb, O, P) := src (O, nb*P) rearranged, + bias[o] (the inverse of _gather)."""
    cdef Py_ssize_t task, p
    cdef int n, o
    cdef const floating* s
    cdef floating* d
    cdef floating b
    for task in prange(<Py_ssize_t>nb * O, schedule="static",
                       use_threads_if=par and nb * O * P > PARALLEL_MIN_ELEMENTS):
        n = task // O
        o = task % O
        s = src + (o * <Py_ssize_t>nb + n) * P
        d = dst + task * P
        if bias == NULL:
            memcpy(d, s, P * sizeof(floating))
        else:
            b = bias[o]
            for p in range(P):
                d[p] = s[p] + b


cdef void _add_bias(floating* y, int O, Py_ssize_t P, const floating* bias,
                    bint par) noexcept nogil:
    cdef Py_ssize_t p
    cdef int o
    cdef floating b
    for o in prange(O, schedule="static", use_threads_if=par and O * P > PARALLEL_MIN_ELEMENTS):
        b = bias[o]
        for p in range(P):
            y[o * P + p] += b


cdef void _activate_blocks(floating* y, Py_ssize_t n, int act, double slope,
                           bint par) noexcept nogil:
    """y := act(y) in place (see _activate), blocks of 64K values split between the threads when
    par (from one thread of a fused chunk loop: par False, its own chunk, still in its cache)."""
    cdef Py_ssize_t block = 65536, i
    if act == 0:
        return
    for i in prange((n + block - 1) // block, schedule="static",
                    use_threads_if=par and n > PARALLEL_MIN_ELEMENTS):
        _activate(y + i * block, min(block, n - i * block), act, slope)


cdef void _activate(floating* y, Py_ssize_t n, int act, double slope) noexcept nogil:
    """y := act(y) in place, act 0 none, 1 ReLU, 2 leaky ReLU (see fnn_act_f32), serial."""
    cdef Py_ssize_t i
    cdef floating v
    if act == 0:
        return
    if floating is float:
        fnn_act_f32(y, n, act, slope)
        return
    for i in range(n):
        v = y[i]
        if act == 1:
            y[i] = 0 if v <= 0 else v
        elif not v > 0:
            y[i] = <floating>(v * slope)


cdef inline double _row_sum(const floating* row, Py_ssize_t P) noexcept nogil:
    """sum of row[0:P] in double over 16 lanes, added up in a fixed tree: one add chain waited on
    the adder's latency (vgg's 32-channel dbias took ~1 ms at 2 threads); these vectorise."""
    cdef double acc[16]
    cdef Py_ssize_t p = 0
    cdef int j
    for j in range(16):
        acc[j] = 0
    while p + 16 <= P:
        for j in range(16):
            acc[j] += row[p + j]
        p += 16
    for j in range(<int>(P - p)):
        acc[j] += row[p + j]
    for j in range(8):
        acc[j] += acc[j + 8]
    for j in range(4):
        acc[j] += acc[j + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef void _channel_sum(const floating* g, int N, int O, Py_ssize_t P, floating* acc) noexcept nogil:
    """acc[o] += sum over n and p of g[n, o, p] (summed in double, then added once; one thread
    per channel, so the order of the sum does not depend on the thread count)."""
    cdef int n, o
    cdef double s
    for o in prange(O, schedule="static",
                    use_threads_if=<Py_ssize_t>N * O * P > PARALLEL_MIN_ELEMENTS):
        s = 0
        for n in range(N):
            s = s + _row_sum(g + (<Py_ssize_t>n * O + o) * P, P)
        acc[o] += <floating>s


# ---- the two drivers ---------------------------------------------------------------------------
#
# Two ways to use the threads. Batches of at least as many chunks as threads run FUSED: one
# OpenMP region per call, each thread takes whole chunks of samples and does their im2col, its
# own single-threaded GEMM and the scatter with no barrier in between (weight gradients go into
# one accumulator per thread, added up at the end). Smaller batches run chunk by chunk with
# every step parallel inside (prange loops, gemm_rm's split GEMM).

cdef void _im2col_chunk(const floating* img, int n0, int nb, int C, int H, int W,
                        const floating* w, int O, int KH, int KW, int sh, int sw, int ph, int pw,
                        int OH, int OW, const floating* bias, floating* out,
                        const floating* g, floating* dw, floating* col, floating* buf,
                        floating* dwt, bint par, int act=0, double slope=0) noexcept nogil:
    """One chunk of samples [n0, n0 + nb): col := im2col(img); if out: out := act(w (O, CKK) @
    col + bias) (act: see _activate); if dw: dw (O, CKK) += gather(g) @ col.T (float32 with the microkernel: dwt (CKK, O)
    := col @ gather(g).T, then added transposed; buf holds nb*P*O)."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t nbp = nb * P
    cdef const floating* gc
    _im2col(img + <Py_ssize_t>n0 * C * H * W, nb, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW,
            col, nbp, P, par)
    if out != NULL:
        if nb == 1:
            _gemm_xn(False, False, O, <int>P, ckk, w, ckk, col, <int>P, False,
                     out + <Py_ssize_t>n0 * O * P, <int>P)
            if bias != NULL:
                _add_bias(out + <Py_ssize_t>n0 * O * P, O, P, bias, par)
        else:
            _gemm_xn(False, False, O, <int>nbp, ckk, w, ckk, col, <int>nbp, False, buf, <int>nbp)
            _scatter_bias(buf, nb, O, P, bias, out + <Py_ssize_t>n0 * O * P, par)
        _activate_blocks(out + <Py_ssize_t>n0 * O * P, nb * O * P, act, slope, par)
    if dw != NULL and floating is float and FNN_MK_AVAILABLE and _dw_on_nt(O):
        # The weight gradient is the deepest GEMM of a convolution (k = nb*P): dW += G @ col.T
        # with col's panels transposed in registers as they are packed. dW.T = col @ G.T (below)
        # only where O fills its 32-lane panels and the rows are few: O = 32 (interleaved A/B,
        # 1 / 2 threads, this route vs that: vgg 32->32 0.94 / 0.90x, 1->32 0.84 / 0.88x; but
        # LeNet 1->6 1.77 / 1.43x, 6->16 1.24 / 1.18x, O = 8 1.47x, O = 48 1.27 / 1.19x, O >= 64
        # 1.04-1.20x)
        if nb == 1:
            gc = g + <Py_ssize_t>n0 * O * P
        else:
            _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
            gc = buf
        # the chunk's sum in scratch, then added: one float32 chain per chunk, not per batch
        _gemm_xn(False, True, O, ckk, <int>nbp, gc, <int>nbp, col, <int>nbp, False, dwt, ckk)
        _add_into(dwt, <Py_ssize_t>O * ckk, dw)
    elif dw != NULL and floating is float and FNN_MK_AVAILABLE:
        # dW.T = col @ g.T on the microkernel, whose operands are row-major once g is transposed
        _gather_t(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf)
        _gemm_xn(False, False, ckk, O, <int>nbp, col, <int>nbp, buf, O, False, dwt, O)
        _add_transposed(dwt, ckk, O, dw)
    elif dw != NULL:
        if nb == 1:
            gc = g + <Py_ssize_t>n0 * O * P
        else:
            _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
            gc = buf
        gemm_rm(False, True, O, ckk, <int>nbp, <floating>1, gc, <int>nbp, col, <int>nbp,
                <floating>1, dw, ckk)


cdef void _im2col_driver(const floating* img, int N, int C, int H, int W,
                         const floating* w, int O, int KH, int KW, int sh, int sw, int ph, int pw,
                         int OH, int OW, const floating* bias, floating* out,
                         const floating* g, floating* dw,
                         int nbmax, int nt, floating* col, floating* buf,
                         floating* dw_acc, int act=0, double slope=0) noexcept nogil:
    """Per chunk of samples: col := im2col(img); if out: out := act(w (O, CKK) @ col + bias);
    if dw: dw (O, CKK) += gather(g) @ col.T. img (N, C, H, W); out and g (N, O, OH, OW).
    nt > 1 runs fused: col, buf hold nt workspaces and dw_acc nt - 1 zeroed (O, CKK) blocks;
    after those, dw_acc holds nt (CKK, O) scratch blocks (one with nt = 1)."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t col_size = <Py_ssize_t>ckk * nbmax * P
    cdef Py_ssize_t buf_size = <Py_ssize_t>O * nbmax * P
    cdef Py_ssize_t wsize = <Py_ssize_t>O * ckk
    cdef Py_ssize_t q
    cdef int n0, nb, t, chunk, nchunks, u
    cdef floating* my_dw
    cdef floating acc
    nchunks = (N + nbmax - 1) // nbmax
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            my_dw = NULL
            if dw != NULL:
                my_dw = dw if t == 0 else dw_acc + (t - 1) * wsize
            chunk = t  # chunks t, t + nt, ...: static, so the dw sums are reproducible
            while chunk < nchunks:
                n0 = chunk * nbmax
                _im2col_chunk(img, n0, min(nbmax, N - n0), C, H, W, w, O, KH, KW, sh, sw, ph,
                              pw, OH, OW, bias, out, g, my_dw, col + t * col_size,
                              buf + t * buf_size, dw_acc + (nt - 1 + t) * wsize, False, act,
                              slope)
                chunk = chunk + nt
        if dw != NULL:
            for q in prange(wsize, schedule="static", use_threads_if=wsize > PARALLEL_MIN_ELEMENTS):
                acc = dw[q]
                for u in range(nt - 1):
                    acc = acc + dw_acc[u * wsize + q]
                dw[q] = acc
        return
    n0 = 0
    while n0 < N:
        nb = min(nbmax, N - n0)
        _im2col_chunk(img, n0, nb, C, H, W, w, O, KH, KW, sh, sw, ph, pw, OH, OW, bias, out, g,
                      dw, col, buf, dw_acc, True, act, slope)
        n0 += nb


cdef void _col2im_chunk(const floating* g, int n0, int nb, int O, int OH, int OW,
                        const floating* w, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                        int H, int W, const floating* bias, floating* out, floating* col,
                        floating* buf, bint par) noexcept nogil:
    """One chunk: out[n0:n0+nb] := col2im(w.T (CKK, O) @ gather(g[n0:n0+nb])) + bias."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t nbp = nb * P
    cdef const floating* gc
    if nb == 1:
        gc = g + <Py_ssize_t>n0 * O * P
    else:
        _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
        gc = buf
    _gemm_xn(True, False, ckk, <int>nbp, O, w, ckk, gc, <int>nbp, False, col, <int>nbp)
    _col2im(col, nb, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW,
            out + <Py_ssize_t>n0 * C * H * W, bias, nbp, P, par)


cdef void _col2im_driver(const floating* g, int N, int O, int OH, int OW,
                         const floating* w, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                         int H, int W, const floating* bias, floating* out,
                         int nbmax, int nt, floating* col, floating* buf) noexcept nogil:
    """Per chunk: out := col2im(w.T (CKK, O) @ gather(g)) + bias. g (N, O, OH, OW) lives on the
    output grid of the convolution whose input grid (N, C, H, W) is out. nt > 1 runs fused."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef Py_ssize_t col_size = <Py_ssize_t>C * KH * KW * nbmax * P
    cdef Py_ssize_t buf_size = <Py_ssize_t>O * nbmax * P
    cdef int n0, nb, t, chunk, nchunks
    nchunks = (N + nbmax - 1) // nbmax
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            chunk = t
            while chunk < nchunks:
                n0 = chunk * nbmax
                _col2im_chunk(g, n0, min(nbmax, N - n0), O, OH, OW, w, C, KH, KW, sh, sw, ph,
                              pw, H, W, bias, out, col + t * col_size, buf + t * buf_size, False)
                chunk = chunk + nt
        return
    n0 = 0
    while n0 < N:
        nb = min(nbmax, N - n0)
        _col2im_chunk(g, n0, nb, O, OH, OW, w, C, KH, KW, sh, sw, ph, pw, H, W, bias, out, col,
                      buf, True)
        n0 += nb


# ---- implicit GEMM: stride 1, output as wide as the input ---------------------------------------

cdef void _conv_s1_forward(const float* x, int N, int C, int H, int W, const float* w, int O,
                           int KH, int KW, int ph, int pw, int OH, const float* bias, float* out,
                           int nt) noexcept nogil:
    """out[n] := w (O, CKK) @ im2col(x[n]) + bias with the microkernel packing straight from the
    image (fnn_mk_conv_s1). Tasks are whole samples, or column ranges of a sample when the
    batch is too small to give every thread two samples."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * W
    cdef int npanels = <int>((P + 31) // 32)
    cdef int splits = 1
    cdef int task
    if nt > 1 and N < 2 * nt:
        splits = min(npanels, (2 * nt + N - 1) // N)
    cdef int per = ((npanels + splits - 1) // splits) * 32
    if _dynamic and nt > 1:
        for task in prange(N * splits, num_threads=nt, schedule="dynamic", chunksize=1):
            _conv_s1_task(x, N, C, H, W, w, O, KH, KW, ph, pw, P, bias, out, splits, per, task)
    else:
        for task in prange(N * splits, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            _conv_s1_task(x, N, C, H, W, w, O, KH, KW, ph, pw, P, bias, out, splits, per, task)


cdef inline void _conv_s1_task(const float* x, int N, int C, int H, int W, const float* w, int O,
                               int KH, int KW, int ph, int pw, Py_ssize_t P, const float* bias,
                               float* out, int splits, int per, int task) noexcept nogil:
    """Columns [sp*per, (sp+1)*per) of sample n = task // splits (sp = task % splits)."""
    cdef int n = task // splits, sp = task % splits, o
    cdef int lo = sp * per
    cdef int hi = <int>min(P, lo + per)
    cdef Py_ssize_t q
    cdef float b
    cdef float* y
    if lo < hi:
        y = out + <Py_ssize_t>n * O * P
        fnn_mk_conv_s1(O, lo, hi, C, H, W, KH, KW, ph, pw, w, x + <Py_ssize_t>n * C * H * W,
                       y, <int>P)
        if bias != NULL:
            for o in range(O):
                b = bias[o]
                for q in range(lo, hi):
                    y[o * P + q] += b


# ---- implicit GEMM: strided forwards ---------------------------------------------------------
#
# conv2d forwards at stride >= 2 (and conv_transpose2d's dx, the same operation) as an implicit
# GEMM: out (O, N*P) = W (O, CKK) @ im2col(x) with the 32-column B panels gathered straight from
# the image (no column matrix, no scatter pass). The panels run on across output rows and
# samples (column p = n*P + oh*OW + ow), so 7x7 planes fill whole panels. Each panel is
# computed for all O rows into a small (O8, 32) scratch tile and then written to NCHW with the
# bias. The weight is first copied into 8-row tiles Ap (per FNN_MK_KC block, tile by tile,
# kk*8 + r): the broadcasts of one k step are then 32 contiguous bytes, where W's own rows are
# CKK floats apart (4 KB for 64 channels at k4) and 8 of them fell into the same L1 sets as the
# packed panel. Every output is one sum over k in a fixed order, whatever the thread split.
cdef bint _implicit_sn = True


def _set_implicit_strided(bint on):
    """Tuning hook for benchmarks and tests: route float32 strided forward convolutions through
    the implicit GEMM where it measured faster (True) or im2col + GEMM + scatter (False);
    returns the old value. See _strided_fits for the measurements."""
    global _implicit_sn
    old = _implicit_sn
    _implicit_sn = on
    return old


cdef bint _implicit_sn_force = False
cdef bint _implicit_sn_convt = True


def _set_implicit_strided_convt(bint on):
    """Benchmarks: conv_transpose2d_backward's dx on the implicit strided route (True) or fused
    with dW in one im2col pass (False); returns the old value. dx + dW + db of dcgan-g's
    128->64 k4 s2 p1 on 7x7, batch 64, interleaved medians of 21 on the shared VM, old / new /
    torch: 24.6 / 23.0 / 17.8 ms, 1 thread CPU time (2 threads wall 44.6 / 44.2 / 39.4, the
    other core busy); its 64->1 layer (C*KH*KW = 16) keeps the fused pass."""
    global _implicit_sn_convt
    old = _implicit_sn_convt
    _implicit_sn_convt = on
    return old


def _set_implicit_strided_force(bint on):
    """Tests: take the implicit strided route for every shape it can run (see _strided_fits)."""
    global _implicit_sn_force
    old = _implicit_sn_force
    _implicit_sn_force = on
    return old


cdef extern from *:
    """
    #define FNN_DWT_ROWS 128  /* fnn_mk_conv_dwt_s1's im2col row block */
    #if FNN_MK_AVAILABLE
    /* Ap := A (m, k) row-major in 8-row tiles: block k0 (FNN_MK_KC deep, kc = its depth) at
       k0 * mt * 8, tile t of it at + t * kc * 8, element (i, k0 + kk) at + kk * 8 + (i % 8);
       rows past m are zero. */
    static void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap) {
        int mt = (m + mr - 1) / mr;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            for (int t = 0; t < mt; t++) {
                float* d = Ap + (long)k0 * mt * mr + (long)t * kc * mr;
                for (int kk = 0; kk < kc; kk++)
                    for (int r = 0; r < mr; r++) {
                        int i = t * mr + r;
                        d[kk * mr + r] = i < m ? A[(long)i * k + k0 + kk] : 0.0f;
                    }
            }
        }
    }
    #define FNN_SN_FMA(r) a0 = _mm512_set1_ps(ap[r]);                                          \
        c##r##0 = _mm512_fmadd_ps(a0, b0, c##r##0); c##r##1 = _mm512_fmadd_ps(a0, b1, c##r##1);
    #define FNN_SN_LD(r) if (acc_in) { c##r##0 = _mm512_load_ps(cr + r * 32);                  \
        c##r##1 = _mm512_load_ps(cr + r * 32 + 16); }                                          \
        else { c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps(); }
    #define FNN_SN_ST(r) _mm512_store_ps(cr + r * 32, c##r##0); _mm512_store_ps(cr + r * 32 + 16, c##r##1);
    /* out (N, m, OH, OW) columns p in [p_lo, p_hi) of the batch (p = n*P + oh*OW + ow) :=
       A (m, C*KH*KW) @ im2col(x) + bias, A packed by fnn_pack_a8, x (N, C, H, W), any stride.
       Lane q of a panel reads x at off[q] + c*H*W + (ki - ph)*W + (kj - pw) (off relative to
       the panel's first sample), masked to the lanes whose pixel lies on the image. */
    static void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW,
                               int sh, int sw, int ph, int pw, int OH, int OW, int mr,
                               const float* Ap, const float* x, const float* bias, float* out,
                               float* Ct) {
        float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
        int mt = (m + mr - 1) / mr;
        unsigned rowm[32], colm[32];
        int offs[32] __attribute__((aligned(64)));
        int k = C * KH * KW;
        long P = (long)OH * OW, HW = (long)H * W, CHW = (long)C * HW;
        for (long j0 = p_lo; j0 < p_hi; j0 += 32) {
            int nr = p_hi - j0 < 32 ? (int)(p_hi - j0) : 32;
            long nfirst = j0 / P;
            for (int a = 0; a < KH; a++) rowm[a] = 0;
            for (int b = 0; b < KW; b++) colm[b] = 0;
            for (int q = 0; q < 32; q++) {
                if (q >= nr) { offs[q] = 0; continue; }
                long p = j0 + q, n = p / P, pp = p - n * P;
                int oh = (int)(pp / OW), ow = (int)(pp - (long)oh * OW);
                int ih = oh * sh - ph, iw = ow * sw - pw;
                offs[q] = (int)((n - nfirst) * CHW + (long)oh * sh * W + (long)ow * sw);
                for (int a = 0; a < KH; a++) if (ih + a >= 0 && ih + a < H) rowm[a] |= 1u << q;
                for (int b = 0; b < KW; b++) if (iw + b >= 0 && iw + b < W) colm[b] |= 1u << q;
            }
            __m512i ix0 = _mm512_load_si512((const void*)offs);
            __m512i ix1 = _mm512_load_si512((const void*)(offs + 16));
            const float* xs = x + nfirst * CHW;
            for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
                int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
                int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
                for (int kk = 0; kk < kc; kk++) {
                    unsigned mk = rowm[ki] & colm[kj];
                    const float* src = xs + (long)c * HW + (long)(ki - ph) * W + (kj - pw);
                    _mm512_store_ps(Bp + kk * 32, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)mk, ix0, src, 4));
                    _mm512_store_ps(Bp + kk * 32 + 16, (mk >> 16) ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)(mk >> 16), ix1, src, 4) : _mm512_setzero_ps());
                    if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
                }
                int acc_in = k0 > 0;
                for (int t = 0; t < mt; t++) {
                    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
                    float* cr = Ct + t * 8 * 32;
                    FNN_SN_LD(0) FNN_SN_LD(1) FNN_SN_LD(2) FNN_SN_LD(3)
                    FNN_SN_LD(4) FNN_SN_LD(5) FNN_SN_LD(6) FNN_SN_LD(7)
                    const float* bp = Bp;
                    const float* ap = Ap + (long)k0 * mt * 8 + (long)t * kc * 8;
                    for (int kk = 0; kk < kc; kk++, bp += 32, ap += 8) {
                        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16), a0;
                        FNN_SN_FMA(0) FNN_SN_FMA(1) FNN_SN_FMA(2) FNN_SN_FMA(3)
                        FNN_SN_FMA(4) FNN_SN_FMA(5) FNN_SN_FMA(6) FNN_SN_FMA(7)
                    }
                    FNN_SN_ST(0) FNN_SN_ST(1) FNN_SN_ST(2) FNN_SN_ST(3)
                    FNN_SN_ST(4) FNN_SN_ST(5) FNN_SN_ST(6) FNN_SN_ST(7)
                }
            }
            /* the panel to NCHW: one run of lanes per sample it touches */
            for (int q0 = 0; q0 < nr;) {
                long p = j0 + q0, n = p / P, pp = p - n * P;
                int q1 = (int)(q0 + (P - pp) < nr ? q0 + (P - pp) : nr);
                __mmask16 ma = fnn_lanes(q0, q1), mb = fnn_lanes(q0 - 16, q1 - 16);
                float* dst = out + n * m * P + pp - q0;
                for (int i = 0; i < m; i++) {
                    __m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
                    float* d = dst + (long)i * P;
                    const float* s = Ct + i * 32;
                    if (ma) _mm512_mask_storeu_ps(d, ma, _mm512_add_ps(_mm512_load_ps(s), bv));
                    if (mb) _mm512_mask_storeu_ps(d + 16, mb, _mm512_add_ps(_mm512_load_ps(s + 16), bv));
                }
                q0 = q1;
            }
        }
    }
    /* dw (O, C*KH*KW) += g @ im2col(x).T for dw's 32-column panels [plo, phi), any stride,
       over the output pixels [q_lo, q_hi) of the batch (p = n*OH*OW + oh*OW + ow; the GEMM's
       k) in FNN_MK_KC steps; gsum (when not NULL, O doubles) += the channel sums of g over
       those pixels, each step's sum formed on its own and then added. Per step, g's
       pixels are packed into 8-row tiles (Ap, (O8, FNN_MK_KC) floats, the caller's), and each
       panel's rows of im2col(x).T are gathered straight from x: lane q of pixel p reads
       x[n, c, oh*sh - ph + ki, ow*sw - pw + kj] for the panel's column (c, ki, kj), masked off
       the image. Each entry of dw is one chain over p in order, whichever thread owns its
       panel. */
    static void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH,
                               int KW, int sh, int sw, int ph, int pw, int OH, int OW,
                               const float* x, const float* g, float* dw, float* Ap,
                               long q_lo, long q_hi, double* gsum) {
        float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
        int offs[32] __attribute__((aligned(64))), kis[32] __attribute__((aligned(64)));
        int kjs[32] __attribute__((aligned(64)));
        int k = C * KH * KW, mt = (O + 7) / 8;
        long P = (long)OH * OW, np = (long)N * P, HW = (long)H * W, CHW = (long)C * HW;
        const __m512i Hv = _mm512_set1_epi32(H), Wv = _mm512_set1_epi32(W);
        const __m512i gidx = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32((int)P));
        (void)np;
        for (long p0 = q_lo; p0 < q_hi; p0 += FNN_MK_KC) {
            int kc = q_hi - p0 < FNN_MK_KC ? (int)(q_hi - p0) : FNN_MK_KC;
            long n0 = p0 / P, pp0 = p0 - n0 * P;
            /* two tiles per pixel: channels t*8 .. t*8 + 15 of g[n, :, pp], P apart, one gather */
            for (int t = 0; t < mt; t += 2) {
                __mmask16 om = fnn_lanes(0, O - t * 8);
                float* d0 = Ap + (long)t * kc * 8;
                float* d1 = d0 + (long)kc * 8;  /* past the last tile when t + 1 == mt: unused */
                long n = n0, pp = pp0;
                __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
                for (int kk = 0; kk < kc; kk++) {
                    __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), om, gidx,
                                                        g + (n * O + t * 8) * P + pp, 4);
                    __m256 lo = _mm512_castps512_ps256(v), hi = _mm512_extractf32x8_ps(v, 1);
                    _mm256_store_ps(d0 + kk * 8, lo);
                    if (t + 1 < mt) _mm256_store_ps(d1 + kk * 8, hi);
                    if (gsum) {
                        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(lo));
                        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(hi));
                    }
                    if (++pp == P) { pp = 0; n++; }
                }
                if (gsum) {
                    double sums[16];
                    _mm512_storeu_pd(sums, s0);
                    _mm512_storeu_pd(sums + 8, s1);
                    for (int r = 0; r < 16 && t * 8 + r < O; r++) gsum[t * 8 + r] += sums[r];
                }
            }
            for (int pn = plo; pn < phi; pn++) {
                int j0 = pn * 32, nr = k - j0 < 32 ? k - j0 : 32;
                __mmask16 m0 = fnn_lanes(0, nr), m1 = fnn_lanes(-16, nr - 16);
                for (int q = 0; q < 32; q++) {
                    int r = j0 + (q < nr ? q : 0);
                    int c = r / (KH * KW), ki = (r / KW) % KH, kj = r % KW;
                    offs[q] = (int)(c * HW + (long)ki * W + kj);
                    kis[q] = ki;
                    kjs[q] = kj;
                }
                const __m512i off0 = _mm512_load_si512((const void*)offs);
                const __m512i off1 = _mm512_load_si512((const void*)(offs + 16));
                const __m512i ki0 = _mm512_load_si512((const void*)kis);
                const __m512i ki1 = _mm512_load_si512((const void*)(kis + 16));
                const __m512i kj0 = _mm512_load_si512((const void*)kjs);
                const __m512i kj1 = _mm512_load_si512((const void*)(kjs + 16));
                long n = n0;
                int oh = (int)(pp0 / OW), ow = (int)(pp0 - (long)oh * OW);
                for (int kk = 0; kk < kc; kk++) {
                    int ih = oh * sh - ph, iw = ow * sw - pw;
                    __m512i ihv = _mm512_set1_epi32(ih), iwv = _mm512_set1_epi32(iw);
                    /* unsigned compares: ih + ki < 0 wraps above H */
                    __mmask16 k0 = m0 & _mm512_cmplt_epu32_mask(_mm512_add_epi32(ki0, ihv), Hv)
                                      & _mm512_cmplt_epu32_mask(_mm512_add_epi32(kj0, iwv), Wv);
                    __mmask16 k1 = m1 & _mm512_cmplt_epu32_mask(_mm512_add_epi32(ki1, ihv), Hv)
                                      & _mm512_cmplt_epu32_mask(_mm512_add_epi32(kj1, iwv), Wv);
                    const float* src = x + n * CHW + (long)ih * W + iw;
                    _mm512_store_ps(Bp + kk * 32, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k0, off0, src, 4));
                    _mm512_store_ps(Bp + kk * 32 + 16, k1 ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k1, off1, src, 4) : _mm512_setzero_ps());
                    if (++ow == OW) { ow = 0; if (++oh == OH) { oh = 0; n++; } }
                }
                fnn_mk_tiles_pa(O, kc, Ap, Bp, dw + j0, k, 1, m0, m1);
            }
        }
    }
    /* dwt (C*KH*KW, O) rows [r_lo, r_hi) += im2col(x) @ g.T at stride 1 with OW == W: the
       weight gradient transposed (row r = (c, ki, kj), column o), and gsum (when not NULL, O
       doubles) += g's channel sums. The GEMM's k, the batch's pixels, runs in steps inside one
       sample (P cut into ceil(P / FNN_MK_KC) equal steps), each step's sum formed from zero
       and then added. Per step, g's block is packed into 32-channel panels (Bp: g's rows are
       contiguous in the pixels, so 16x16 register transposes), and the thread's im2col rows
       are plain masked copies of x's planes (Ar, row-major): row (c, ki, kj) of pixel p is
       x[n, c] read flat at p + (ki - ph)*W + kj - pw, lanes off the image masked to zero.
       No gathers: fnn_mk_conv_dw gathers every panel row from 32 scattered addresses, which
       cost it a third of its time at stride 1. The rows go in blocks of FNN_DWT_ROWS, so a
       block (139 KB) and g's panels stay in L2 while every panel passes over it (one thread
       over all 2304 rows of a 256-channel 3x3 ran at 95 GFLOP/s, the gathers at 133).
       Ar: FNN_DWT_ROWS rows of FNN_MK_RA_LDA floats; Bp: ceil(O/32) x FNN_MK_KC x 32
       floats; both 64-byte aligned, the caller's.
       Each entry of dwt is one chain over the steps in order, whichever thread owns its row. */
    static int _fnn_dwt_narrow_on = 1;
    static int fnn_set_dwt_narrow(int on) { int old = _fnn_dwt_narrow_on; _fnn_dwt_narrow_on = on; return old; }
    static void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W,
                                   int KH, int KW, int ph, int pw, int OH, const float* x,
                                   const float* g, float* dwt, float* Ar, float* Bp,
                                   double* gsum) {
        long P = (long)OH * W, HW = (long)H * W;
        int steps = (int)((P + FNN_MK_KC - 1) / FNN_MK_KC);
        int per = (int)((P + steps - 1) / steps);
        int npan = (O + 31) / 32;
        unsigned short rowm[32][FNN_MK_KC / 16], colm[32][FNN_MK_KC / 16];
        for (int n = 0; n < N; n++) {
            const float* xn = x + (long)n * C * HW;
            const float* gn = g + (long)n * O * P;
            for (long pp0 = 0; pp0 < P; pp0 += per) {
                int kc = P - pp0 < per ? (int)(P - pp0) : per;
                int ng = (kc + 15) / 16;
                for (int a = 0; a < KH; a++) for (int q = 0; q < ng; q++) rowm[a][q] = 0;
                for (int b = 0; b < KW; b++) for (int q = 0; q < ng; q++) colm[b][q] = 0;
                int oh = (int)(pp0 / W), ow = (int)(pp0 - (long)oh * W);
                for (int l = 0; l < kc; l++) {
                    unsigned short bit = (unsigned short)(1u << (l & 15));
                    for (int a = 0; a < KH; a++)
                        if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a][l >> 4] |= bit;
                    for (int b = 0; b < KW; b++)
                        if (ow + b - pw >= 0 && ow + b - pw < W) colm[b][l >> 4] |= bit;
                    if (++ow == W) { ow = 0; oh++; }
                }
                for (int jp = 0; jp < npan; jp++) {
                    int nr = O - jp * 32 < 32 ? O - jp * 32 : 32;
                    fnn_mk_pack_t(gn, (int)P, jp * 32, nr, (int)pp0, kc, Bp + (long)jp * FNN_MK_KC * 32);
                }
                if (gsum) {
                    for (int o = 0; o < O; o++) {
                        const float* row = gn + (long)o * P + pp0;
                        __m512d acc = _mm512_setzero_pd();
                        for (int q = 0; q < ng; q++) {
                            __m512 v = _mm512_maskz_loadu_ps(fnn_lanes(0, kc - 16 * q), row + 16 * q);
                            acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                            acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
                        }
                        gsum[o] += _mm512_reduce_add_pd(acc);
                    }
                }
                int c = r_lo / (KH * KW), ki = (r_lo / KW) % KH, kj = r_lo % KW;
                for (int b0 = r_lo; b0 < r_hi; b0 += FNN_DWT_ROWS) {
                    int b1 = r_hi - b0 < FNN_DWT_ROWS ? r_hi : b0 + FNN_DWT_ROWS;
                    for (int r = b0; r < b1; r++) {
                        const float* src = xn + c * HW + (long)(ki - ph) * W + (kj - pw) + pp0;
                        float* d = Ar + (long)(r - b0) * FNN_MK_RA_LDA;
                        for (int q = 0; q < ng; q++)
                            _mm512_store_ps(d + 16 * q, _mm512_maskz_loadu_ps(
                                (__mmask16)(rowm[ki][q] & colm[kj][q]), src + 16 * q));
                        if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
                    }
                    for (int jp = 0; jp < npan; jp++) {
                        int nr = O - jp * 32 < 32 ? O - jp * 32 : 32;
                        if (nr <= 16 && _fnn_dwt_narrow_on)
                            fnn_mk_tiles_ra16(b1 - b0, kc, Ar, Bp + (long)jp * FNN_MK_KC * 32,
                                              dwt + (long)b0 * O + jp * 32, O, 1, fnn_lanes(0, nr));
                        else
                            fnn_mk_tiles_ra(b1 - b0, kc, Ar, Bp + (long)jp * FNN_MK_KC * 32,
                                            dwt + (long)b0 * O + jp * 32, O, 1, fnn_lanes(0, nr),
                                            fnn_lanes(-16, nr - 16));
                    }
                }
            }
        }
    }
    #else
    static void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap) {}
    static void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW,
                               int sh, int sw, int ph, int pw, int OH, int OW, int mr,
                               const float* Ap, const float* x, const float* bias, float* out,
                               float* Ct) {}
    static void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH,
                               int KW, int sh, int sw, int ph, int pw, int OH, int OW,
                               const float* x, const float* g, float* dw, float* Ap,
                               long q_lo, long q_hi, double* gsum) {}
    static void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W,
                                   int KH, int KW, int ph, int pw, int OH, const float* x,
                                   const float* g, float* dwt, float* Ar, float* Bp,
                                   double* gsum) {}
    static int fnn_set_dwt_narrow(int on) { return on; }
    #endif
    """
    void fnn_pack_a8(int m, int k, int mr, const float* A, float* Ap) noexcept nogil
    void fnn_mk_conv_sn(int m, long p_lo, long p_hi, int C, int H, int W, int KH, int KW, int sh,
                        int sw, int ph, int pw, int OH, int OW, int mr, const float* Ap,
                        const float* x, const float* bias, float* out, float* Ct) noexcept nogil
    void fnn_mk_conv_dw(int O, int plo, int phi, int N, int C, int H, int W, int KH, int KW,
                        int sh, int sw, int ph, int pw, int OH, int OW, const float* x,
                        const float* g, float* dw, float* Ap, long q_lo, long q_hi,
                        double* gsum) noexcept nogil
    void fnn_mk_conv_dwt_s1(int O, int r_lo, int r_hi, int N, int C, int H, int W, int KH,
                            int KW, int ph, int pw, int OH, const float* x, const float* g,
                            float* dwt, float* Ar, float* Bp, double* gsum) noexcept nogil
    int FNN_MK_RA_LDA
    int fnn_set_dwt_narrow(int on) noexcept nogil
    int FNN_DWT_ROWS


cdef extern from *:
    """
    #if FNN_MK_AVAILABLE
    /* Direct stride-2 convolution: the output's pixels are the broadcasts and its channels the
       vectors, so the image is read where it lies (no gathered panel: on Zen 4 the 16-lane
       gathers of fnn_mk_conv_sn took a quarter of dcgan-d's conv2 forward). One tile: TW <= 7
       output pixels of a row x 32 channels, 14 accumulators, over k = (c, ki, kj) in order; the
       image is zero-padded beforehand (xr: the tile's first input row of the padded image,
       planes `plane` apart, rows Wp apart), wt the 32 channels' weights k-major (32 floats a
       tap, 64-byte aligned). tmp (TW x 32) := the tile's sums. TW is a constant where this
       is inlined (fnn_d2_block's switch), so the accumulators stay in registers. */
    static inline __attribute__((always_inline)) void fnn_d2_tile(
            const int TW, const float* xr, long plane, int Wp, int C, int KH, int KW,
            const float* wt, float* tmp) {
        __m512 a0[7], a1[7];
        for (int j = 0; j < TW; j++) { a0[j] = _mm512_setzero_ps(); a1[j] = _mm512_setzero_ps(); }
        for (int c = 0; c < C; c++) {
            const float* xc = xr + (long)c * plane;
            for (int ki = 0; ki < KH; ki++) {
                const float* r = xc + (long)ki * Wp;
                for (int kj = 0; kj < KW; kj++, wt += 32) {
                    __m512 w0 = _mm512_load_ps(wt), w1 = _mm512_load_ps(wt + 16);
                    for (int j = 0; j < TW; j++) {
                        __m512 b = _mm512_set1_ps(r[2 * j + kj]);
                        a0[j] = _mm512_fmadd_ps(b, w0, a0[j]);
                        a1[j] = _mm512_fmadd_ps(b, w1, a1[j]);
                    }
                }
            }
        }
        for (int j = 0; j < TW; j++) {
            _mm512_store_ps(tmp + j * 32, a0[j]);
            _mm512_store_ps(tmp + j * 32 + 16, a1[j]);
        }
    }
    /* out (O, OH, OW) of one sample, channels [32*ob, 32*ob + 32) := conv2d at stride 2 of the
       padded sample xp (C planes of Hp x Wp) + bias, wt: the channel block's weights (see
       fnn_d2_tile), tiles of 7 pixels along each output row. */
    static void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
                             const float* xp, const float* wt, int ob, const float* bias,
                             float* out) {
        float tmp[7 * 32] __attribute__((aligned(64)));
        long plane = (long)Hp * Wp, P = (long)OH * OW;
        int o0 = ob * 32, no = O - o0 < 32 ? O - o0 : 32;
        for (int oh = 0; oh < OH; oh++) {
            for (int j0 = 0; j0 < OW; j0 += 7) {
                int tw = OW - j0 < 7 ? OW - j0 : 7;
                const float* xr = xp + (long)(2 * oh) * Wp + 2 * j0;
                switch (tw) {
                    case 7: fnn_d2_tile(7, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    case 6: fnn_d2_tile(6, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    case 5: fnn_d2_tile(5, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    case 4: fnn_d2_tile(4, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    case 3: fnn_d2_tile(3, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    case 2: fnn_d2_tile(2, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                    default: fnn_d2_tile(1, xr, plane, Wp, C, KH, KW, wt, tmp); break;
                }
                float* d = out + (long)o0 * P + (long)oh * OW + j0;
                for (int o = 0; o < no; o++) {
                    float bv = bias ? bias[o0 + o] : 0.0f;
                    for (int j = 0; j < tw; j++) d[o * P + j] = tmp[j * 32 + o] + bv;
                }
            }
        }
    }
    /* wt[ob][k][j] := w[32*ob + j, k] (w: (O, K) row-major), zero for channels past O: 16x16
       register transposes (fnn_mk_pack_t) */
    static void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) {
        int nob = (O + 31) / 32;
        for (int ob = 0; ob < nob; ob++) {
            int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
            fnn_mk_pack_t(w, K, ob * 32, nr, 0, K, wt + (long)ob * K * 32);
        }
    }
    /* xp (Hp, Wp) := the plane x (H, W) placed ph rows and pw columns in, zeros around */
    static void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
                              float* xp) {
        /* 16-lane stores, not libc calls: the runs are a few dozen floats (dcgan-d: 16 and
           14), and memset's and memcpy's call overhead was 5% of a direct weight gradient */
        const __m512 z = _mm512_setzero_ps();
        for (long j = 0; j < (long)ph * Wp; j += 16)
            _mm512_mask_storeu_ps(xp + j, fnn_lanes(0, (int)((long)ph * Wp - j)), z);
        for (int i = 0; i < H; i++) {
            float* d = xp + (long)(ph + i) * Wp;
            const float* s = x + (long)i * W;
            for (int j = 0; j < pw; j++) d[j] = 0.0f;
            for (int j = 0; j < W; j += 16) {
                __mmask16 m = fnn_lanes(0, W - j);
                _mm512_mask_storeu_ps(d + pw + j, m, _mm512_maskz_loadu_ps(m, s + j));
            }
            for (int j = pw + W; j < Wp; j++) d[j] = 0.0f;
        }
        for (long j = (long)(ph + H) * Wp; j < (long)Hp * Wp; j += 16)
            _mm512_mask_storeu_ps(xp + j, fnn_lanes(0, (int)((long)Hp * Wp - j)), z);
    }
    /* Direct stride-2 weight gradient, the transpose of fnn_d2_block's layout: the taps of x
       are the broadcasts and dy's channels the vectors. dst rows r of one tile (R <= 8
       consecutive taps r = (c, ki, kj), offs[r] their offsets in the padded sample, 32
       floats apart: a channel block of dwt) x 32 channels += sum over the batch's pixels [0, npix) of
       x_padded tap * dyt, where dyt holds the 32 channels' dy pixel-major (32 floats a pixel,
       the batch's pixels in order); in steps of FNN_MK_KC pixels, each step's sum formed from
       zero and then added: each entry's sums in the order of fnn_mk_conv_dw's, so the same
       bits. xp: the padded batch (samples img floats apart, rows Wp apart). */
    static inline __attribute__((always_inline)) void fnn_dw2_tile(
            const int R, const float* xp, long img, int Wp, int OH, int OW, long npix,
            const long* offs, const float* dyt, float* dst) {
        long o0 = offs[0], o1 = offs[R > 1], o2 = offs[R > 2 ? 2 : 0], o3 = offs[R > 3 ? 3 : 0];
        long o4 = offs[R > 4 ? 4 : 0], o5 = offs[R > 5 ? 5 : 0], o6 = offs[R > 6 ? 6 : 0];
        long o7 = offs[R > 7 ? 7 : 0];
        long P = (long)OH * OW;
        for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
            long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
            long n = p0 / P, pp = p0 - n * P;
            int oh = (int)(pp / OW), ow = (int)(pp - (long)oh * OW);
            const float* base = xp + n * img + (long)(2 * oh) * Wp + 2 * ow;
            __m512 a0[8], a1[8];
            for (int r = 0; r < R; r++) { a0[r] = _mm512_setzero_ps(); a1[r] = _mm512_setzero_ps(); }
            const float* d = dyt + p0 * 32;
            for (long p = p0; p < p1; p++, d += 32) {
                __m512 w0 = _mm512_load_ps(d), w1 = _mm512_load_ps(d + 16), b;
    #define FNN_DW2_FMA(r) if (R > r) { b = _mm512_set1_ps(base[o##r]);                    \
                a0[r] = _mm512_fmadd_ps(b, w0, a0[r]); a1[r] = _mm512_fmadd_ps(b, w1, a1[r]); }
                FNN_DW2_FMA(0) FNN_DW2_FMA(1) FNN_DW2_FMA(2) FNN_DW2_FMA(3)
                FNN_DW2_FMA(4) FNN_DW2_FMA(5) FNN_DW2_FMA(6) FNN_DW2_FMA(7)
    #undef FNN_DW2_FMA
                base += 2;
                if (++ow == OW) {
                    ow = 0;
                    base += 2 * (long)Wp - 2 * OW;
                    if (++oh == OH) { oh = 0; n++; base = xp + n * img; }
                }
            }
            for (int r = 0; r < R; r++) {
                float* q = dst + r * 32;
                _mm512_store_ps(q, _mm512_add_ps(_mm512_load_ps(q), a0[r]));
                _mm512_store_ps(q + 16, _mm512_add_ps(_mm512_load_ps(q + 16), a1[r]));
            }
        }
    }
    /* dwt rows [r_lo, r_hi) of every channel block += im2col(x) @ dy.T at stride 2: tiles of
       8 taps (then the rest) x 32 channels over the batch's pixels (fnn_dw2_tile); dwt holds
       dw transposed by blocks of 32 channels (block ob: K x 32 floats, as fnn_d2_pack_weights
       lays out weights), dyt the channel blocks one after another, npix * 32 floats each. */
    static void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane,
                             long img, int Wp, int OH, int OW, long npix, const float* xp,
                             const float* dyt, float* dwt) {
        int nob = (O + 31) / 32;
        long offs[8];
        for (int ob = 0; ob < nob; ob++) {
            const float* d = dyt + (long)ob * npix * 32;
            for (int r0 = r_lo; r0 < r_hi; r0 += 8) {
                int R = r_hi - r0 < 8 ? r_hi - r0 : 8;
                for (int r = 0; r < R; r++) {
                    int t = r0 + r, c = t / (KH * KW), ki = (t / KW) % KH, kj = t % KW;
                    offs[r] = (long)c * plane + (long)ki * Wp + kj;
                }
                float* dst = dwt + ((long)ob * K + r0) * 32;
                switch (R) {
                    case 8: fnn_dw2_tile(8, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 7: fnn_dw2_tile(7, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 6: fnn_dw2_tile(6, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 5: fnn_dw2_tile(5, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 4: fnn_dw2_tile(4, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 3: fnn_dw2_tile(3, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    case 2: fnn_dw2_tile(2, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                    default: fnn_dw2_tile(1, xp, img, Wp, OH, OW, npix, offs, d, dst); break;
                }
            }
        }
    }
    /* dw (O, K) := dwt's channel blocks (see fnn_dw2_rows) transposed back */
    static void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw) {
        for (int o = 0; o < O; o++) {
            const float* src = dwt + (long)(o / 32) * K * 32 + o % 32;
            float* d = dw + (long)o * K;
            for (int k = 0; k < K; k++) d[k] = src[(long)k * 32];
        }
    }
    /* gsum[o] += g's sum over the batch's pixels for the 32 channels of block ob, from dyt
       (see fnn_dw2_rows), as fnn_mk_conv_dw forms it: in double, each step of FNN_MK_KC
       pixels summed from zero in pixel order, the steps' sums added in order */
    static void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) {
        const float* d = dyt + (long)ob * npix * 32;
        __m512d t[4], s[4];
        for (int v = 0; v < 4; v++) t[v] = _mm512_setzero_pd();
        for (long p0 = 0; p0 < npix; p0 += FNN_MK_KC) {
            long p1 = npix - p0 < FNN_MK_KC ? npix : p0 + FNN_MK_KC;
            for (int v = 0; v < 4; v++) s[v] = _mm512_setzero_pd();
            for (long p = p0; p < p1; p++)
                for (int v = 0; v < 4; v++)
                    s[v] = _mm512_add_pd(s[v], _mm512_cvtps_pd(_mm256_load_ps(d + p * 32 + 8 * v)));
            for (int v = 0; v < 4; v++) t[v] = _mm512_add_pd(t[v], s[v]);
        }
        double sums[32];
        for (int v = 0; v < 4; v++) _mm512_storeu_pd(sums + 8 * v, t[v]);
        for (int j = 0; j < 32 && ob * 32 + j < O; j++) gsum[ob * 32 + j] += sums[j];
    }
    /* dyt's pixels of sample n (the channel blocks, see fnn_dw2_rows) := g's sample n (O, P)
       transposed, 16x16 register transposes */
    static void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g, float* dyt) {
        int nob = (O + 31) / 32;
        const float* gn = g + (long)n * O * P;
        for (int ob = 0; ob < nob; ob++) {
            int nr = O - ob * 32 < 32 ? O - ob * 32 : 32;
            fnn_mk_pack_t(gn, (int)P, ob * 32, nr, 0, (int)P, dyt + ((long)ob * npix + (long)n * P) * 32);
        }
    }
    #else
    static void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
                             const float* xp, const float* wt, int ob, const float* bias,
                             float* out) {}
    static void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) {}
    static void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
                              float* xp) {}
    static void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane,
                             long img, int Wp, int OH, int OW, long npix, const float* xp,
                             const float* dyt, float* dwt) {}
    static void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw) {}
    static void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) {}
    static void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g, float* dyt) {}
    #endif
    """
    void fnn_d2_block(int O, int C, int KH, int KW, int OH, int OW, int Hp, int Wp,
                      const float* xp, const float* wt, int ob, const float* bias,
                      float* out) noexcept nogil
    void fnn_d2_pack_weights(int O, int K, const float* w, float* wt) noexcept nogil
    void fnn_pad_plane(const float* x, int H, int W, int ph, int pw, int Hp, int Wp,
                       float* xp) noexcept nogil
    void fnn_dw2_rows(int r_lo, int r_hi, int K, int O, int KH, int KW, long plane, long img,
                      int Wp, int OH, int OW, long npix, const float* xp, const float* dyt,
                      float* dwt) noexcept nogil
    void fnn_dw2_unpack(int O, int K, const float* dwt, float* dw) noexcept nogil
    void fnn_dw2_bias(int O, int ob, long npix, const float* dyt, double* gsum) noexcept nogil
    void fnn_dw2_pack_dy(int O, long P, long npix, int n, const float* g,
                         float* dyt) noexcept nogil


cdef bint _direct_s2_on = True


def _set_direct_s2(bint on):
    """Tuning/A-B hook: float32 stride-2 forward convolutions on the direct kernel (fnn_d2_block,
    on) or the gathered implicit GEMM (fnn_mk_conv_sn, off); returns the old value."""
    global _direct_s2_on
    old = _direct_s2_on
    _direct_s2_on = on
    return old


def _direct_s2_fits(int o, int sh, int sw):
    """Whether a float32 strided forward (already on the implicit route) takes fnn_d2_block:
    stride 2 both ways and 32 output channels or more (its tiles are 32 channels wide).
    dcgan-d conv2 (N64 C64 14x14 O128 k4 s2 p1), interleaved with torch in one process on the
    2-core Zen 4 VM, medians, gathered / direct / torch (oneDNN): 1 thread 10.6 / 9.1 / 8.1 ms,
    2 threads 5.7 / 5.5 / 4.4. Both give the same bits (each output one chain over k in
    order)."""
    return _direct_s2_on and sh == 2 and sw == 2 and o >= 32


cdef bint _d2_private = True


def _set_d2_private(bint on):
    """Tuning/A-B hook: _direct_s2_forward's tasks take a sample each, padded into the thread's
    own buffer (on; batches of at least 2 samples a thread), or (sample, channel block) each on
    one padded copy of the batch (off); returns the old value. Same bits either way. dcgan-d
    conv2, interleaved with torch, 2-core Zen 4 VM: 2 threads 6.6 -> 4.9 ms (torch 4.7),
    1 thread 10.0 -> 9.1 (torch 8.9): the sample stays in the core's L2 for its 4 blocks."""
    global _d2_private
    old = _d2_private
    _d2_private = on
    return old


def _direct_s2_forward(x, weight, bias, out, int ph, int pw):
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW, nob = (O + 31) // 32
    # every tap of every output pixel inside the padded plane, padding past the image included
    cdef int Hp = max(H + 2 * ph, 2 * (OH - 1) + KH), Wp = max(W + 2 * pw, 2 * (OW - 1) + KW)
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef Py_ssize_t task, plane = <Py_ssize_t>Hp * Wp, img = <Py_ssize_t>C * Hp * Wp
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, q
    # a sample per task, padded into the thread's own buffer (it stays in that core's L2 for
    # all the channel blocks), unless the batch is too small to keep the threads busy: then
    # (sample, channel block) tasks on one padded copy of the batch
    cdef bint per_sample = _d2_private and N >= 2 * NT
    took("direct_s2_forward/per_sample" if per_sample else "direct_s2_forward/batch")
    xpad = _cached(np.float32, "d2_x", NT * img if per_sample else N * img)
    wt = _cached(np.float32, "d2_w", <Py_ssize_t>nob * K * 32 + 16)
    cdef float* px = <float*>_ptr(x)
    cdef float* pxp = <float*>_ptr(xpad)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pwt = _aligned64(wt)
    cdef float* mine
    cdef int n, ob
    with nogil:
        fnn_d2_pack_weights(O, K, pw_, pwt)
        if per_sample:
            for task in prange(N, num_threads=NT, schedule="dynamic", chunksize=1,
                               use_threads_if=NT > 1):
                mine = pxp + openmp.omp_get_thread_num() * img
                for q in range(C):
                    fnn_pad_plane(px + (task * C + q) * H * W, H, W, ph, pw, Hp, Wp,
                                  mine + q * plane)
                for ob in range(nob):
                    fnn_d2_block(O, C, KH, KW, OH, OW, Hp, Wp, mine, pwt + ob * K * 32, ob, pb,
                                 po + task * O * P)
        else:
            for task in prange(<Py_ssize_t>N * C, num_threads=NT, schedule="static",
                               use_threads_if=NT > 1):
                fnn_pad_plane(px + task * H * W, H, W, ph, pw, Hp, Wp, pxp + task * plane)
            for task in prange(<Py_ssize_t>N * nob, num_threads=NT, schedule="dynamic",
                               chunksize=1, use_threads_if=NT > 1):
                n = <int>(task // nob)
                ob = <int>(task % nob)
                fnn_d2_block(O, C, KH, KW, OH, OW, Hp, Wp, pxp + n * img, pwt + ob * K * 32,
                             ob, pb, po + n * O * P)
    return out


cdef void _conv_sn_forward(const float* x, int N, int C, int H, int W, const float* ap, int O,
                           int KH, int KW, int sh, int sw, int ph, int pw, int OH, int OW,
                           int mr, const float* bias, float* out, int nt,
                           float* tiles) noexcept nogil:
    """out := conv2d(x) + bias through fnn_mk_conv_sn, the batch's 32-column panels taken 4 at
    a time by the threads (or cut into nt contiguous ranges, the static schedule), each thread
    with its own (O8, 32) scratch tile in ``tiles``, 64-byte aligned and O8*32 floats apart."""
    cdef Py_ssize_t ncols = <Py_ssize_t>N * OH * OW
    cdef Py_ssize_t npanels = (ncols + 31) // 32
    cdef Py_ssize_t per, lo, hi, task, ntasks
    cdef int t
    nt = <int>min(nt, npanels)
    if _dynamic and nt > 1:  # tasks of 4 panels
        per = 4 * 32
        ntasks = (ncols + per - 1) // per
        for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
            lo = task * per
            hi = min(ncols, lo + per)
            t = openmp.omp_get_thread_num()
            fnn_mk_conv_sn(O, lo, hi, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, mr, ap, x, bias, out,
                           tiles + <Py_ssize_t>t * ((O + mr - 1) // mr) * mr * 32)
        return
    per = ((npanels + nt - 1) // nt) * 32
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1, use_threads_if=nt > 1):
        lo = t * per
        hi = min(ncols, lo + per)
        if lo < hi:
            fnn_mk_conv_sn(O, lo, hi, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, mr, ap, x, bias, out,
                           tiles + <Py_ssize_t>t * ((O + mr - 1) // mr) * mr * 32)


def _strided_fits(x, int n, int c, int h, int w, int o, int kh, int kw, int sh, int sw, int oh, int ow):
    """Whether a strided float32 forward takes the implicit route. Interleaved A/B against
    im2col + GEMM + scatter, medians of 21, ms, 1 thread CPU time | 2 threads wall; the
    machine was shared with another engineer's runs (load ~2 on 2 cores), so the 2-thread
    numbers are about as slow as 1 thread; old / new / torch (oneDNN):
      N64 C64 14x14 O128 k4 s2 p1 (dcgan-d conv2)  16.6 / 12.2 / 10.3 | 17.2 / 12.8 / 12.8
          (a quieter run: 13.3 / 10.6 / 9.1 | 11.5 / 10.5 / 11.0)
      N64 C128 on 7x7 -> O64 (dcgan-g convT dx)    13.6 / 10.3 /  9.4 | 14.6 / 11.2 / 11.4
      N32 C64 28x28 O128 k3 s2 p1                  14.2 / 13.7 / 12.4 | 17.3 / 15.7 / 17.0
      N64 C32 16x16 O64 k3 s2 p1                    2.9 /  2.2 /  2.4 |  4.7 /  3.3 /  5.5
      N32 C128 8x8 O256 k3 s2 p1                    6.4 /  4.4 /  4.3 |  6.6 /  4.7 /  5.8
      N64 C3 32x32 O64 k4 s2 p1                     2.7 /  2.3 /  2.8 |  2.2 /  2.1 /  3.0
      N4 C64 14x14 O128 k4 s2 p1                    1.08 / 1.12 / 0.97 | 1.28 / 1.13 / 2.08
      N64 C1 28x28 O64 k4 s2 p1 (dcgan-d conv1)     0.87 / 0.96 / 1.04 | 1.82 / 1.58 / 3.17
    C*KH*KW < 32 (conv1, dcgan-g's 64->1 dx) keeps im2col: a 16-deep GEMM does not pay for
    the gathered panels and the per-panel write-out."""
    if not (_implicit_sn and x.dtype == np.float32 and FNN_MK_AVAILABLE and (sh > 1 or sw > 1)
            and kh <= 32 and kw <= 32):
        return False
    # int32 gather offsets: a panel spans at most 32 // P + 2 samples
    if (32 // max(1, oh * ow) + 2) * c * h * w >= 2 ** 31:
        return False
    return _implicit_sn_force or c * kh * kw >= 32


def _strided_forward(x, weight, bias, out, int sh, int sw, int ph, int pw):
    """out := conv2d(x) + bias on the implicit strided route: stride 2 with 32 channels or more
    on the direct kernel (_direct_s2_forward), the rest on fnn_mk_conv_sn's gathered panels."""
    if _direct_s2_fits(weight.shape[0], sh, sw):
        return _direct_s2_forward(x, weight, bias, out, ph, pw)
    took("strided_gathered")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef int MR = 8  # 12-row tiles measured no faster (dcgan-d conv2 12.2 ms either way, 1 thread)
    ap = _cached(np.float32, "sn_a", ((O + MR - 1) // MR) * MR * K)
    # the threads' scratch tiles, 16 floats spare to start on a 64-byte line (aligned stores)
    tiles = _cached(np.float32, "sn_tiles", NT * ((O + MR - 1) // MR) * MR * 32 + 16)
    cdef float* px = <float*>_ptr(x)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pap = <float*>_ptr(ap)
    cdef float* pt = _aligned64(tiles)
    with nogil:
        fnn_pack_a8(O, K, MR, pw_, pap)
        _conv_sn_forward(px, N, C, H, W, pap, O, KH, KW, sh, sw, ph, pw, OH, OW, MR, pb, po, NT,
                         pt)
    return out


# ---- implicit GEMM weight gradient ---------------------------------------------------------------
cdef bint _implicit_dw_on = True
cdef bint _implicit_dw_force = False
cdef int _MK_KC = FNN_MK_KC


def _set_implicit_dw(bint on, bint force=False):
    """Tuning hook for benchmarks and tests: float32 weight gradients on the implicit GEMM where
    it measured faster (on), for every shape it can run (on and force: tests), or through im2col
    chunks (off); returns the old (on, force)."""
    global _implicit_dw_on, _implicit_dw_force
    old = (_implicit_dw_on, _implicit_dw_force)
    _implicit_dw_on, _implicit_dw_force = on, force
    return old


cdef bint _side_by_side = True


def _set_side_by_side(bint on):
    """Tuning hook for benchmarks: a strided conv's sub-pixel dx and implicit dW run as one pool
    of tasks, each thread one group of dW's panels and then dx's tasks as they come (True), or
    one kernel after the other, each split over the threads (False); returns the old value."""
    global _side_by_side
    old = _side_by_side
    _side_by_side = on
    return old


def _implicit_dw_fits(x, int o, int c, int h, int w, int kh, int kw, int oh, int ow):
    """Whether a float32 weight gradient dW (O, C, KH, KW) of x (N, C, H, W) takes
    fnn_mk_conv_dw. Interleaved A/B against im2col chunks + G @ col.T, medians of 25, ms, 1 | 2
    threads, implicit / im2col / torch (oneDNN), N = 64:
      C64 14x14 O128 k4 s2 p1 (dcgan-d conv2)         8.8 / 10.1 / 8.0 | 4.7 / 5.7 / 4.6
      dy C64 14x14 -> O128 7x7 (dcgan-g convT 128->64) 1.3 /  3.6 / 1.9 | 1.4 / 3.3 / 1.6
      C64 14x14 O64 k3 s1 p1                           8.1 /  9.1 / 8.8 | 7.8 / 8.7 / 8.3
      C32 28x28 O32 k3 s1 p1 (vgg-bn's first block)   14.9 / 13.1 / 13.5 | 9.0 / 8.1 / 10.9
    and with the bias gradient (summed while g is packed, a pass of its own on the im2col route):
      C1 28x28 O64 k4 s2 p1 (dcgan-d conv1, 16 columns: the threads split the pixels)
                                                       1.07 / 1.57     | 0.59 / 0.80
      dcgan-d conv2                                                    | 5.71 / 6.26
    Each pixel's gathered panel row feeds O/8 register tiles, so O >= 64; the gather offsets
    are int32."""
    if not (_implicit_dw_on and x.dtype == np.float32 and FNN_MK_AVAILABLE
            and <Py_ssize_t>c * h * w < 2 ** 31 and 16 * <Py_ssize_t>oh * ow < 2 ** 31):
        return False
    return _implicit_dw_force or o >= 64


cdef bint _direct_dw_on = True
cdef int _dw2_tasks_per_thread = 4


def _set_dw2_tasks_per_thread(int k):
    """Tuning/A-B hook: the direct weight gradient's tasks per thread (4; 1: one range of taps
    each, the static split); same bits. Returns the old value."""
    global _dw2_tasks_per_thread
    old = _dw2_tasks_per_thread
    _dw2_tasks_per_thread = max(1, k)
    return old


def _set_direct_dw(bint on):
    """Tuning/A-B hook: float32 stride-2 weight gradients on the implicit route on the direct
    kernel (fnn_dw2_rows, on; the threads split dw's taps, 8 at a time) or fnn_mk_conv_dw's
    gathered panels (off); returns the old value. dW + db, interleaved with torch on the 2-core
    Zen 4 VM, medians, gathered / direct / torch (oneDNN):
      dcgan-d conv2 (N64 C64 14x14 O128 k4 s2 p1)  1 thread 11.6 / 9.1 / 8.2 ms,
                                                   2 threads 6.9 / 4.9 / 5.3
      dcgan-d conv1 (N64 C1 28x28 O64, 16 taps)    1 thread 1.24 / 0.48 / 0.54,
                                                   2 threads 0.96 / 0.46 / 0.51
    The same bits either way (db too), for any thread count."""
    global _direct_dw_on
    old = _direct_dw_on
    _direct_dw_on = on
    return old


cdef class _DwJob:
    """An implicit weight gradient dw (O, C, KH, KW) += g (N, O, OH, OW) @ im2col(x).T (and db
    (O,), when not None, += g's channel sums, summed in double while g is packed) cut into
    ``ntasks`` tasks for up to nt threads: ``run(task, thread)`` in a parallel region (on the
    thread's own Ap), then ``finish``. With at least as many 32-column panels of dw as threads
    the tasks are groups of panels over all pixels, each entry one chain over the pixels in
    order, so the result does not depend on the thread count (group 0 sums db); with fewer
    (C*KH*KW < 32 * threads) they are ranges of the batch's pixels, each into a zeroed scratch
    dw and sums of its own, added in task order by ``finish``."""
    cdef int N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, npanels, ntasks, per
    cdef int nthreads  # the threads its tasks are cut for (the direct route: several tasks each)
    cdef bint by_pixels, direct
    cdef Py_ssize_t npix, qper, a_size, wsize
    # the direct stride-2 route (fnn_dw2_rows): the padded batch, dy pixel-major, dw transposed
    cdef int Hp, Wp, K, rows_per
    cdef float* xp
    cdef float* dyt
    cdef float* dwt
    cdef const float* x
    cdef const float* g
    cdef float* dw
    cdef float* db
    cdef float* ap
    cdef float* scratch
    cdef double* sums
    cdef object arrays  # keeps what the pointers point into alive

    cdef void prepare(self, int nt) noexcept nogil:
        """The direct route's operands, before any task runs: x padded, dy transposed by
        samples, dwt := dw transposed (its entries then take the steps' sums in order)."""
        cdef Py_ssize_t q, plane = <Py_ssize_t>self.Hp * self.Wp
        cdef Py_ssize_t P = <Py_ssize_t>self.OH * self.OW
        for q in prange(<Py_ssize_t>self.N * self.C, num_threads=nt, schedule="static",
                        use_threads_if=nt > 1):
            fnn_pad_plane(self.x + q * self.H * self.W, self.H, self.W, self.ph, self.pw,
                          self.Hp, self.Wp, self.xp + q * plane)
        for q in prange(self.N, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            fnn_dw2_pack_dy(self.O, P, self.npix, <int>q, self.g, self.dyt)
        fnn_d2_pack_weights(self.O, self.K, self.dw, self.dwt)

    cdef void run(self, int task, int thread) noexcept nogil:
        cdef Py_ssize_t q_lo = task * self.qper
        cdef Py_ssize_t plane = <Py_ssize_t>self.Hp * self.Wp
        if self.direct:
            if task * self.rows_per < self.K:
                fnn_dw2_rows(task * self.rows_per, min(self.K, (task + 1) * self.rows_per), self.K, self.O,
                             self.KH, self.KW, plane, self.C * plane, self.Wp, self.OH, self.OW,
                             self.npix, self.xp, self.dyt, self.dwt)
            return
        if self.by_pixels:
            if q_lo < self.npix:
                fnn_mk_conv_dw(self.O, 0, self.npanels, self.N, self.C, self.H, self.W, self.KH,
                               self.KW, self.sh, self.sw, self.ph, self.pw, self.OH, self.OW,
                               self.x, self.g,
                               self.dw if task == 0 else self.scratch + (task - 1) * self.wsize,
                               self.ap + thread * self.a_size, q_lo,
                               min(self.npix, q_lo + self.qper),
                               self.sums + task * self.O if self.db != NULL else NULL)
        else:
            fnn_mk_conv_dw(self.O, task * self.per, min(self.npanels, task * self.per + self.per),
                           self.N, self.C, self.H, self.W, self.KH, self.KW, self.sh, self.sw,
                           self.ph, self.pw, self.OH, self.OW, self.x, self.g, self.dw,
                           self.ap + thread * self.a_size, 0, self.npix,
                           self.sums if self.db != NULL and task == 0 else NULL)

    cdef void run_all(self) noexcept nogil:
        """Every task, task t on thread t, then finish."""
        cdef int t
        if self.direct:
            for t in prange(self.ntasks, num_threads=self.nthreads, schedule="dynamic",
                            chunksize=1, use_threads_if=self.nthreads > 1):
                self.run(t, openmp.omp_get_thread_num())
        else:
            for t in prange(self.ntasks, num_threads=self.ntasks, schedule="static",
                            chunksize=1, use_threads_if=self.ntasks > 1):
                self.run(t, t)
        self.finish()

    cdef void finish(self) noexcept nogil:
        cdef Py_ssize_t q
        cdef int u, t, o
        cdef float acc
        cdef double total
        if self.direct:
            fnn_dw2_unpack(self.O, self.K, self.dwt, self.dw)
            if self.db != NULL:
                for o in range((self.O + 31) // 32):
                    fnn_dw2_bias(self.O, o, self.npix, self.dyt, self.sums)
                for o in range(self.O):
                    self.db[o] += <float>self.sums[o]
            return
        if self.by_pixels and self.ntasks > 1:
            for q in prange(self.wsize, schedule="static",
                            use_threads_if=self.wsize > PARALLEL_MIN_ELEMENTS):
                acc = self.dw[q]
                for u in range(self.ntasks - 1):
                    acc = acc + self.scratch[u * self.wsize + q]
                self.dw[q] = acc
        if self.db != NULL:
            for u in range(self.O):
                total = 0
                for t in range(self.ntasks if self.by_pixels else 1):
                    total = total + self.sums[t * self.O + u]
                self.db[u] += <float>total


cdef _DwJob _dw_job(x, g, dw, db, int sh, int sw, int ph, int pw, int nt):
    """The _DwJob of dw += g @ im2col(x).T (and db) for nt threads."""
    cdef _DwJob j = _DwJob()
    j.N, j.C, j.H, j.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    j.O, j.KH, j.KW = dw.shape[0], dw.shape[2], dw.shape[3]
    j.OH, j.OW = g.shape[2], g.shape[3]
    j.sh, j.sw, j.ph, j.pw = sh, sw, ph, pw
    j.K = j.C * j.KH * j.KW
    j.npanels = (j.K + 31) // 32
    j.npix = <Py_ssize_t>j.N * j.OH * j.OW
    j.wsize = <Py_ssize_t>j.O * j.K
    # the direct route splits dw's taps over the threads, 8 at a time (dcgan-d's conv1: 16 taps)
    j.direct = (_direct_dw_on and sh == 2 and sw == 2 and j.O >= 32 and (j.K + 7) // 8 >= nt)
    j.by_pixels = not j.direct and nt > j.npanels
    if j.direct:
        took("direct_s2_dw")
        # a few tasks a thread, taken as they come: a thread held up for a while (a shared
        # VM's other load) no longer holds up half of dW
        j.ntasks = <int>min(_dw2_tasks_per_thread * nt, (j.K + 7) // 8)
        j.rows_per = <int>(((j.K + 7) // 8 + j.ntasks - 1) // j.ntasks * 8)
        j.ntasks = (j.K + j.rows_per - 1) // j.rows_per
        j.nthreads = min(nt, j.ntasks)
    else:
        if j.by_pixels:
            took("implicit_dw/pixels")
            j.ntasks = <int>min(nt, (j.npix + _MK_KC - 1) // _MK_KC)
            j.qper = ((j.npix + j.ntasks - 1) // j.ntasks + _MK_KC - 1) // _MK_KC * _MK_KC
        else:
            took("implicit_dw/panels")
            j.ntasks = min(nt, j.npanels)
            j.per = (j.npanels + j.ntasks - 1) // j.ntasks
        j.nthreads = j.ntasks
    j.x, j.g, j.dw, j.db = <float*>_ptr(x), <float*>_ptr(g), <float*>_ptr(dw), <float*>_ptr(db)
    # the tasks' db sums in double (the direct route's: one set, summed from dy at the end)
    sums = _cached(np.float64, "dw_sums", (1 if j.direct else j.ntasks) * j.O)
    sums[:] = 0
    j.sums = <double*>_ptr(sums)
    if j.direct:
        j.Hp, j.Wp = j.H + 2 * ph, j.W + 2 * pw
        o32 = (j.O + 31) // 32 * 32  # dyt's and dwt's channel blocks of 32
        xp = _cached(np.float32, "dw2_x", <Py_ssize_t>j.N * j.C * j.Hp * j.Wp)
        dyt = _cached(np.float32, "dw2_dy", <Py_ssize_t>o32 * j.npix + 16)
        dwt = _cached(np.float32, "dw2_w", <Py_ssize_t>j.K * o32 + 16)
        j.arrays = (x, g, dw, db, sums, xp, dyt, dwt)
        j.xp = <float*>_ptr(xp)
        j.dyt = _aligned64(dyt)
        j.dwt = _aligned64(dwt)
        with nogil:
            j.prepare(nt)
        return j
    j.a_size = <Py_ssize_t>((j.O + 7) // 8) * 8 * _MK_KC
    ap = _cached(np.float32, "dw_a", nt * j.a_size + 16)
    scratch = None
    if j.by_pixels:
        scratch = _cached(np.float32, "dw_scratch", (j.ntasks - 1) * j.wsize + 1)
        scratch[:] = 0
    j.arrays = (x, g, dw, db, sums, ap, scratch)
    j.ap = _aligned64(ap)
    j.scratch = <float*>_ptr(scratch)
    return j


def _implicit_dw(x, g, dw, db, int sh, int sw, int ph, int pw):
    """dw (O, C, KH, KW) += g (N, O, OH, OW) @ im2col(x).T with no column matrix, and db += g's
    channel sums, on gemm_threads' count (see _DwJob)."""
    cdef int nt = gemm_threads(<Py_ssize_t>x.shape[0] * dw.shape[0] * x.shape[1] * dw.shape[2]
                               * dw.shape[3] * g.shape[2] * g.shape[3])
    cdef _DwJob job = _dw_job(x, g, dw, db, sh, sw, ph, pw, nt)
    with nogil:
        job.run_all()


cdef bint _dwt_s1_on = True


def _set_dwt_s1(bint on):
    """Tuning hook for benchmarks and tests: stride-1 same-width float32 weight gradients on
    fnn_mk_conv_dwt_s1 (True) or on the routes before it (implicit gathers for O >= 64, im2col
    chunks below); returns the old value."""
    global _dwt_s1_on
    old = _dwt_s1_on
    _dwt_s1_on = on
    return old


def _set_dwt_narrow(bint on):
    """Tuning hook for benchmarks and tests: fnn_mk_conv_dwt_s1's panels of at most 16 channels
    on 16-lane tiles (True) or on the 32-lane ones (False); returns the old value."""
    return bool(fnn_set_dwt_narrow(on))


def _dwt_s1_fits(x, int o, int c, int w, int kh, int kw, int sh, int sw, int ow):
    """Whether a float32 weight gradient takes fnn_mk_conv_dwt_s1: stride 1, an output as wide
    as the input (the im2col rows are shifted flat copies of the planes), kernels up to 32 (its
    mask tables), at least 8 im2col rows (a tile) and 16 output channels, the lanes of its
    panels (LeNet's 1->6 5x5, 2 threads: 1.94 ms, the im2col route 0.56; 16->8 3x3 at 14x14
    0.96 / 0.85, 16->16 0.99 / 1.04, 16->24 0.99 / 1.23)."""
    return (_dwt_s1_on and x.dtype == np.float32 and FNN_MK_AVAILABLE and sh == 1 and sw == 1
            and ow == w and kh <= 32 and kw <= 32 and c * kh * kw >= 8 and o >= 16
            and <Py_ssize_t>c * x.shape[2] * w < 2 ** 31)


def _dwt_s1(x, g, dw, db, int ph, int pw):
    """dw (O, C, KH, KW) += g (N, O, OH, W) @ im2col(x).T at stride 1 (OW == W), and db += g's
    channel sums (in double), on gemm_threads' count. With at least 16 im2col rows per thread
    the threads own contiguous blocks of rows (dw's columns) over all pixels, so the result does
    not depend on their number; with fewer (a first layer's 1 or 3 channels: 9 or 27 rows) they
    split the batch's samples, each into its own zeroed copy, added in thread order after.
    The kernel accumulates into dw transposed (C*KH*KW, O), copied in and out here."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = dw.shape[0], KH = dw.shape[2], KW = dw.shape[3], OH = g.shape[2]
    cdef int PH = ph, PW = pw
    cdef int ckk = C * KH * KW, npan = (O + 31) // 32
    cdef int nt = gemm_threads(<Py_ssize_t>N * O * ckk * OH * W)
    cdef bint by_samples = nt > 1 and ckk < 16 * nt and N >= nt
    took("dwt_s1/samples" if by_samples else "dwt_s1/rows")
    if not by_samples:
        nt = max(1, min(nt, (ckk + 7) // 8))
    cdef int per = ckk if by_samples else ((ckk + 7) // 8 + nt - 1) // nt * 8
    cdef int nper = (N + nt - 1) // nt
    cdef Py_ssize_t a_size = <Py_ssize_t>min(per, FNN_DWT_ROWS) * FNN_MK_RA_LDA, b_size = <Py_ssize_t>npan * _MK_KC * 32
    cdef Py_ssize_t wsize = <Py_ssize_t>ckk * O
    dwt = _cached(np.float32, "dwt", (nt if by_samples else 1) * wsize).reshape(-1, ckk, O)
    np.copyto(dwt[0], dw.reshape(O, ckk).T)
    if by_samples:
        dwt[1:] = 0
    ar = _cached(np.float32, "dwt_a", nt * a_size + 16)
    bp = _cached(np.float32, "dwt_b", nt * b_size + 16)
    sums = np.zeros((nt, O), np.float64)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pg = <float*>_ptr(g)
    cdef float* pdwt = <float*>_ptr(dwt)
    cdef float* par = _aligned64(ar)
    cdef float* pbp = _aligned64(bp)
    cdef double* psums = <double*>_ptr(sums) if db is not None else NULL
    cdef Py_ssize_t xs = <Py_ssize_t>C * H * W, gs = <Py_ssize_t>O * OH * W
    cdef int t, n0
    with nogil:
        if by_samples:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                n0 = t * nper
                if n0 < N:
                    fnn_mk_conv_dwt_s1(O, 0, ckk, min(nper, N - n0), C, H, W, KH, KW, PH, PW, OH,
                                       px + n0 * xs, pg + n0 * gs, pdwt + t * wsize,
                                       par + t * a_size, pbp + t * b_size,
                                       psums + t * O if psums != NULL else NULL)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1, use_threads_if=nt > 1):
                fnn_mk_conv_dwt_s1(O, t * per, min(ckk, t * per + per), N, C, H, W, KH, KW, PH, PW,
                                   OH, px, pg, pdwt, par + t * a_size, pbp + t * b_size,
                                   psums if t == 0 else NULL)
    total = dwt[0]
    for t in range(1, nt if by_samples else 1):
        total += dwt[t]
    dw.reshape(O, ckk)[...] = total.T
    if db is not None:
        db += sums.sum(axis=0).astype(np.float32)


# ---- sub-pixel (phase) decomposition of the strided backward-data pass ------------------------
#
# conv2d's input gradient at stride s (and conv_transpose2d's forward, the same operation) splits
# into s_h*s_w independent stride-1 convolutions, one per output phase (a, b): the rows
# ih = a + sh*i' of dx only meet kernel rows kh = r + sh*u with r = (a + ph) mod sh, and
#     dx[n, c, a + sh*i', b + sw*j'] = sum_{o,u,v} W[o, c, r + sh*u, rw + sw*v]
#                                       * dy[n, o, q0 + i' - u, q0w + j' - v]
# with q0 = (a + ph) div sh (dy zero outside its grid). Each phase is one dense GEMM
# Wphase (C, O*Ju*Jv) @ im2col_s1(dy) (O*Ju*Jv, nb*Ha*Wb) whose result is written (not added)
# to the phase's strided sub-grid of dx: no (C*KH*KW, nb*P) column matrix, no scatter-add, and
# the GEMM is O*KH*KW/(sh*sw) deep instead of O. Tasks are (chunk of samples, phase) pairs, all
# independent (the phases write disjoint sub-grids), each on its thread's own workspace and a
# single-threaded microkernel GEMM; every entry of dx is one GEMM sum in a fixed order, so the
# result does not depend on the thread count or the chunking.
cdef bint _subpixel_on = True
cdef bint _subpixel_implicit = True


def _set_subpixel_implicit(bint on):
    """Tuning hook for tests: sub-pixel phases as wide as dy pack their panels straight from dy
    (True, fnn_mk_subpixel) or through an im2col matrix (False; the route for every other
    phase); returns the old value. Implicit measured 8.0 vs 13.7 ms on dcgan-d conv2's dx, one
    thread."""
    global _subpixel_implicit
    old = _subpixel_implicit
    _subpixel_implicit = on
    return old


cdef bint _subpixel_force = False


def _set_subpixel(bint on, bint force=False):
    """Tuning hook for benchmarks and tests: route float32 strided backward-data passes (conv2d's
    dx, conv_transpose2d's forward) through the sub-pixel decomposition where it measured
    faster (True; with force, for every shape, as the tests do) or the GEMM + col2im (False);
    returns the old value of on."""
    global _subpixel_on, _subpixel_force
    old = _subpixel_on
    _subpixel_on = on
    _subpixel_force = force
    return old


# The sub-pixel phases' implicit GEMM (see _subpixel_phase). Uses the microkernel's macros above.
cdef extern from *:
    """
    #if FNN_MK_AVAILABLE
    static int _fnn_panel_direct_on = 1;
    static int fnn_set_panel_direct(int on) { int old = _fnn_panel_direct_on; _fnn_panel_direct_on = on; return old; }
    /* One 32-column panel of an implicit stride-1 GEMM whose columns run on across samples:
       Cp (m x 32 lanes m0/m1, ldc apart) := A @ B over all k = C*KH*KW in FNN_MK_KC steps
       (A packed by fnn_pack_a8), where B's row (c, ki, kj) is, in the lanes of segment s
       (segm[s], one per sample the panel touches), the plane read flat from
       base + segoff[s] + c*H*W + (ki - ph)*W + kj - pw, masked by rowm[ki] & colm[kj] (the
       lanes whose pixel sees the image). Bp: the caller's FNN_MK_KC x 32 aligned floats. */
    /* One row of a cross-sample panel: lanes of segment s read base + segoff[s] + shift, masked
       by mk (the lanes whose pixel sees the image), zero elsewhere. */
    static inline void fnn_panel_row(unsigned mk, long shift, int nseg, const unsigned* segm,
                                     const long* segoff, const float* base, __m512* v0,
                                     __m512* v1) {
        __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        for (int s = 0; s < nseg; s++) {
            unsigned ms = mk & segm[s];
            const float* src = base + segoff[s] + shift;
            a = _mm512_mask_loadu_ps(a, (__mmask16)ms, src);
            b = _mm512_mask_loadu_ps(b, (__mmask16)(ms >> 16), src + 16);
        }
        *v0 = a;
        *v1 = b;
    }
    #define FNN_PD_ZERO(r) c##r##0 = _mm512_setzero_ps(); c##r##1 = _mm512_setzero_ps();
    #define FNN_PD_FMA(r) a = _mm512_set1_ps(ap[r]);                                            \
        c##r##0 = _mm512_fmadd_ps(a, v0, c##r##0); c##r##1 = _mm512_fmadd_ps(a, v1, c##r##1);
    #define FNN_PD_ST(r) if (r < m) {                                                          \
        float* cr = Cp + (long)r * ldc;                                                        \
        if (k0 > 0) { c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, cr));         \
                      c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m1, cr + 16)); } \
        _mm512_mask_storeu_ps(cr, m0, c##r##0); _mm512_mask_storeu_ps(cr + 16, m1, c##r##1); }
    /* fnn_panel_gemm for m <= 8 rows: B's values go from the masked loads straight into the
       FMAs of all 8 (zero-padded) rows, never packed. With few rows a packed panel served too
       little work: LeNet's 16->6 dx spent more time packing than multiplying. Each entry is
       the same sum in the same order as the packed path's 4-, 2- and 1-row tiles, so the
       same bits. */
    static void fnn_panel_direct(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                                 const unsigned* rowm, const unsigned* colm, int nseg,
                                 const unsigned* segm, const long* segoff, const float* base,
                                 const float* Ap, float* Cp, long ldc, __mmask16 m0,
                                 __mmask16 m1) {
        int k = C * KH * KW;
        long HW = (long)H * W;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71, a;
            FNN_MK_REP8(FNN_PD_ZERO)
            const float* ap = Ap + (long)k0 * 8;
            for (int kk = 0; kk < kc; kk++, ap += 8) {
                unsigned mk = rowm[ki] & colm[kj];
                long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw);
                __m512 v0, v1;
                fnn_panel_row(mk, shift, nseg, segm, segoff, base, &v0, &v1);
                FNN_MK_REP8(FNN_PD_FMA)
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            FNN_MK_REP8(FNN_PD_ST)
        }
    }
    static inline void fnn_panel_gemm(int m, int C, int H, int W, int KH, int KW, int ph, int pw,
                                      const unsigned* rowm, const unsigned* colm, int nseg,
                                      const unsigned* segm, const long* segoff, const float* base,
                                      const float* Ap, float* Bp, float* Cp, long ldc,
                                      __mmask16 m0, __mmask16 m1) {
        if (m <= 8 && _fnn_panel_direct_on) {
            fnn_panel_direct(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, base, Ap,
                             Cp, ldc, m0, m1);
            return;
        }
        int k = C * KH * KW, mt = (m + 7) / 8;
        long HW = (long)H * W;
        for (int k0 = 0; k0 < k; k0 += FNN_MK_KC) {
            int kc = k - k0 < FNN_MK_KC ? k - k0 : FNN_MK_KC;
            int c = k0 / (KH * KW), ki = (k0 / KW) % KH, kj = k0 % KW;
            for (int kk = 0; kk < kc; kk++) {
                unsigned mk = rowm[ki] & colm[kj];
                long shift = (long)c * HW + (long)(ki - ph) * W + (kj - pw);
                __m512 v0, v1;
                fnn_panel_row(mk, shift, nseg, segm, segoff, base, &v0, &v1);
                _mm512_store_ps(Bp + kk * 32, v0);
                _mm512_store_ps(Bp + kk * 32 + 16, v1);
                if (++kj == KW) { kj = 0; if (++ki == KH) { ki = 0; c++; } }
            }
            fnn_mk_tiles_pa(m, kc, Ap + (long)k0 * mt * 8, Bp, Cp, ldc, k0 > 0, m0, m1);
        }
    }
    /* Cout[i, p] := sum_r A[i, r] * B[r, p] for p in [0, ncols), ldc apart (A packed by
       fnn_pack_a8), where the columns
       p = n*P + oh*W + ow (P = ncols / nb) run over the output pixels of nb samples one after
       another and row r = (c, ki, kj) of B is the stride-1 im2col of sample n's (C, H, W)
       plane (sample_stride apart) at offset (ki - ph, kj - pw), zero off the plane: the
       output is as wide as the plane, so within one sample a row of a B panel is the plane
       read flat, and a 32-column panel that crosses samples is a few masked loads (one per
       sample it touches). fnn_mk_conv_s1 with panels that run on across samples, so small
       images (7x7 = 49 pixels) do not waste a ragged panel per sample. */
    static void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW,
                                int ph, int pw, const float* Ap, const float* g,
                                long sample_stride, float* Cout, int ldc) {
        float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
        unsigned rowm[32], colm[32], segm[33];
        long segoff[33];
        long ncols = (long)nb * P;
        for (long j0 = 0; j0 < ncols; j0 += 32) {
            int nr = ncols - j0 < 32 ? (int)(ncols - j0) : 32;
            __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
            __mmask16 m1 = nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : (__mmask16)((1u << (nr - 16)) - 1));
            for (int a = 0; a < KH; a++) rowm[a] = 0;
            for (int b = 0; b < KW; b++) colm[b] = 0;
            int nseg = 0;
            long nprev = -1;
            for (int q = 0; q < nr; q++) {
                long p = j0 + q, n = p / P, pp = p - n * P;
                int oh = (int)(pp / W), ow = (int)(pp - (long)oh * W);
                for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
                for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
                if (n != nprev) {
                    segm[nseg] = 0;
                    /* lane q of this sample reads plane_n + (j0 + q - n*P) + shift */
                    segoff[nseg] = n * sample_stride - n * P + j0;
                    nseg++;
                    nprev = n;
                }
                segm[nseg - 1] |= 1u << q;
            }
            fnn_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, g, Ap, Bp,
                           Cout + j0, ldc, m0, m1);
        }
    }
    /* out (N, m, P) columns [j_lo, j_hi) of the batch (p = n*P + pp) := A @ im2col(x) + bias
       at stride 1 with OW == W (P = OH*W), A packed by fnn_pack_a8: fnn_mk_conv_s1 with the
       32-column panels of fnn_mk_subpixel, which run on across samples, so an image whose P is
       not a multiple of 32 does not cost a ragged panel per sample (14x14: 7 panels for 196
       columns, 12.5% of the FMAs for nothing). A panel inside one sample is written in place;
       one that crosses samples is formed in Ct (m x 32 floats) and copied out, a run of lanes
       per sample. */
    static void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W,
                                int KH, int KW, int ph, int pw, const float* Ap, const float* x,
                                const float* bias, float* out, float* Ct) {
        float Bp[FNN_MK_KC * 32] __attribute__((aligned(64)));
        unsigned rowm[32], colm[32], segm[33];
        long segoff[33], segdst[33];
        int segq[34];
        long CHW = (long)C * H * W;
        for (long j0 = j_lo; j0 < j_hi; j0 += 32) {
            int nr = j_hi - j0 < 32 ? (int)(j_hi - j0) : 32;
            __mmask16 m0 = fnn_lanes(0, nr), m1 = fnn_lanes(-16, nr - 16);
            for (int a = 0; a < KH; a++) rowm[a] = 0;
            for (int b = 0; b < KW; b++) colm[b] = 0;
            int nseg = 0;
            long n = j0 / P, pp = j0 - n * P;
            int oh = (int)(pp / W), ow = (int)(pp - (long)oh * W);
            for (int q = 0; q < nr; q++) {
                if (q == 0 || pp == 0) {
                    segm[nseg] = 0;
                    segoff[nseg] = n * CHW - n * P + j0;  /* lane q reads x + segoff + q + shift */
                    segdst[nseg] = n * m * P + pp - q;    /* lane q of row i goes to out + segdst + i*P + q */
                    segq[nseg] = q;
                    nseg++;
                }
                segm[nseg - 1] |= 1u << q;
                for (int a = 0; a < KH; a++) if (oh + a - ph >= 0 && oh + a - ph < H) rowm[a] |= 1u << q;
                for (int b = 0; b < KW; b++) if (ow + b - pw >= 0 && ow + b - pw < W) colm[b] |= 1u << q;
                if (++ow == W) { ow = 0; oh++; }
                if (++pp == P) { pp = 0; oh = 0; n++; }
            }
            segq[nseg] = nr;
            float* Cp = nseg == 1 ? out + segdst[0] : Ct;
            long ldc = nseg == 1 ? P : 32;
            fnn_panel_gemm(m, C, H, W, KH, KW, ph, pw, rowm, colm, nseg, segm, segoff, x, Ap, Bp,
                           Cp, ldc, m0, m1);
            for (int s = 0; s < nseg; s++) {
                __mmask16 ma = fnn_lanes(segq[s], segq[s + 1]), mb = fnn_lanes(segq[s] - 16, segq[s + 1] - 16);
                float* dst = out + segdst[s];
                for (int i = 0; i < m; i++) {
                    __m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
                    const float* src = nseg == 1 ? dst + (long)i * P : Ct + i * 32;
                    float* d = dst + (long)i * P;
                    if (ma) _mm512_mask_storeu_ps(d, ma, _mm512_add_ps(_mm512_maskz_loadu_ps(ma, src), bv));
                    if (mb) _mm512_mask_storeu_ps(d + 16, mb, _mm512_add_ps(_mm512_maskz_loadu_ps(mb, src + 16), bv));
                }
            }
        }
    }
    /* Row i < ha of dst (rstep apart, W wide) := its two stride-2 phases interleaved,
       dst[i*rstep + 2j + b] = src_b[i*wb_b + j] + bv (wb_0 = ceil(W/2), wb_1 = floor(W/2)):
       8 + 8 sources per full 16-lane store, so every line of dx is written once, whole. */
    static void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0,
                                  const float* src1, int ha, float bv) {
        const __m512i mix = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        __m512 b = _mm512_set1_ps(bv);
        int wb0 = (W + 1) / 2, wb1 = W / 2;
        for (int i = 0; i < ha; i++) {
            const float* s0 = src0 + (long)i * wb0;
            const float* s1 = src1 + (long)i * wb1;
            float* d = dst + (long)i * rstep;
            for (int j0 = 0; j0 < wb0; j0 += 8) {
                int c0 = wb0 - j0 < 8 ? wb0 - j0 : 8, c1 = wb1 - j0 < 8 ? wb1 - j0 : 8;
                int cnt = W - 2 * j0 < 16 ? W - 2 * j0 : 16;
                __m512 v0 = _mm512_maskz_loadu_ps((__mmask16)((1u << c0) - 1), s0 + j0);
                __m512 v1 = _mm512_maskz_loadu_ps((__mmask16)((1u << c1) - 1), s1 + j0);
                __m512 v = _mm512_add_ps(_mm512_permutex2var_ps(v0, mix, v1), b);
                _mm512_mask_storeu_ps(d + 2 * j0, (__mmask16)((1u << cnt) - 1), v);
            }
        }
    }
    #else
    static void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW,
                                int ph, int pw, const float* Ap, const float* g,
                                long sample_stride, float* Cout, int ldc) {}
    static void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0,
                                  const float* src1, int ha, float bv) {}
    static void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W,
                                int KH, int KW, int ph, int pw, const float* Ap, const float* x,
                                const float* bias, float* out, float* Ct) {}
    static int fnn_set_panel_direct(int on) { return on; }
    #endif
    """
    int fnn_set_panel_direct(int on) noexcept nogil
    void fnn_mk_conv_s1x(int m, long j_lo, long j_hi, long P, int C, int H, int W, int KH,
                         int KW, int ph, int pw, const float* Ap, const float* x,
                         const float* bias, float* out, float* Ct) noexcept nogil
    void fnn_mk_subpixel(int m, int nb, long P, int C, int H, int W, int KH, int KW, int ph,
                         int pw, const float* Ap, const float* g, long sample_stride,
                         float* Cout, int ldc) noexcept nogil
    void fnn_phase_rows_s2(float* dst, int W, long rstep, const float* src0, const float* src1,
                           int ha, float bv) noexcept nogil


cdef inline int _phase_taps(int K, int s, int r) noexcept nogil:
    """Kernel taps r, r + s, ... below K."""
    return (K - r + s - 1) // s if r < K else 0


cdef void _subpixel_weights(const float* w, int O, int C, int KH, int KW, int sh, int sw, int ph,
                            int pw, float* wph, Py_ssize_t* tab) noexcept nogil:
    """wph := the phases' (C, O*Ju*Jv) blocks one after another (phase a*sw + b), with
    wph[c, (o*Ju + u')*Jv + v'] = w[o, c, r + sh*(Ju-1-u'), rw + sw*(Jv-1-v')] (taps reversed,
    so the phase's dy columns are a plain stride-1 im2col). w is read in order, each tap t =
    (kh, kw) sent through a table of its phase's offsets (loops over the phases' taps cost ~5
    cycles an element: half of a vgg-like 128->256 k3 s2 dx at batch 8); tab holds 3*KH*KW."""
    cdef int kk = KH * KW
    cdef int t, kh, kw, a, b, r, rw, ju, jv, o, c, c0, q
    cdef Py_ssize_t base, k
    cdef const float* src
    for t in range(kk):
        kh = t // KW
        kw = t % KW
        # phase rows a with (a + ph) % sh == kh % sh: a = (kh - ph) mod sh, likewise b
        a = ((kh % sh) - ph % sh + sh) % sh
        b = ((kw % sw) - pw % sw + sw) % sw
        base = 0
        for q in range(a * sw + b):
            base += (<Py_ssize_t>C * O * _phase_taps(KH, sh, (q // sw + ph) % sh)
                     * _phase_taps(KW, sw, (q % sw + pw) % sw))
        r = kh % sh
        rw = kw % sw
        ju = _phase_taps(KH, sh, r)
        jv = _phase_taps(KW, sw, rw)
        tab[3 * t] = base + (ju - 1 - kh // sh) * jv + (jv - 1 - kw // sw)
        tab[3 * t + 1] = <Py_ssize_t>O * ju * jv   # the phase block's row length k
        tab[3 * t + 2] = ju * jv
    for c0 in range(0, C, 16):
        for o in range(O):
            for c in range(c0, min(C, c0 + 16)):
                src = w + (<Py_ssize_t>o * C + c) * kk
                for t in range(kk):
                    wph[tab[3 * t] + c * tab[3 * t + 1] + o * tab[3 * t + 2]] = src[t]


cdef inline bint _phase_from_dy(int wb, int OW, int ju, int jv) noexcept nogil:
    """Whether a phase with taps, wb columns wide, packs its panels straight from dy (OW wide,
    fnn_mk_subpixel) rather than through a stride-1 im2col: its sub-grid is as wide as dy."""
    return _subpixel_implicit and wb == OW and ju <= 32 and jv <= 32


cdef _trace_phases(int O, int OW, int KH, int KW, int sh, int sw, int ph, int pw, int H, int W):
    """The routes _subpixel_rows takes for the phases (a, b) of a pass (see _subpixel_gemm)."""
    cdef int a, b, ju, jv
    for a in range(sh):
        if (H - a + sh - 1) // sh <= 0:
            continue
        ju = _phase_taps(KH, sh, (a + ph) % sh)
        for b in range(min(sw, W)):
            jv = _phase_taps(KW, sw, (b + pw) % sw)
            if O * ju * jv == 0:
                took("subpixel_phase/no_taps")
            elif _phase_from_dy((W - b + sw - 1) // sw, OW, ju, jv):
                took("subpixel_phase/implicit")
            else:
                took("subpixel_phase/im2col")


cdef void _subpixel_gemm(const float* g, int n0, int nb, int O, int OH, int OW,
                         const float* wph, const float* wpk, int C, int KH, int KW, int sh,
                         int sw, int ph, int pw, int H, int W, int a, int b, float* col,
                         float* buf) noexcept nogil:
    """buf (C, nb*Ha*Wb) := phase (a, b) of samples [n0, n0 + nb) (zeros without taps); wph is
    the phase's (C, O*Ju*Jv) weight block, wpk the same packed by fnn_pack_a8."""
    cdef int r = (a + ph) % sh, q0 = (a + ph) // sh
    cdef int rw = (b + pw) % sw, q0w = (b + pw) // sw
    cdef int ha = (H - a + sh - 1) // sh, wb = (W - b + sw - 1) // sw
    cdef int ju = _phase_taps(KH, sh, r), jv = _phase_taps(KW, sw, rw)
    cdef int k = O * ju * jv
    cdef Py_ssize_t pa = <Py_ssize_t>ha * wb
    cdef Py_ssize_t nbp = nb * pa
    if k == 0:
        memset(buf, 0, <Py_ssize_t>C * nbp * sizeof(float))
    elif _phase_from_dy(wb, OW, ju, jv):
        fnn_mk_subpixel(C, nb, pa, O, OH, OW, ju, jv, ju - 1 - q0, jv - 1 - q0w, wpk,
                        g + <Py_ssize_t>n0 * O * OH * OW, <Py_ssize_t>O * OH * OW, buf, <int>nbp)
    else:
        _im2col(g + <Py_ssize_t>n0 * O * OH * OW, nb, O, OH, OW, ju, jv, 1, 1, ju - 1 - q0,
                jv - 1 - q0w, ha, wb, col, nbp, pa, False)
        fnn_mk_sgemm_nn(C, <int>nbp, k, wph, k, col, <int>nbp, buf, <int>nbp, 0)


cdef void _subpixel_rows(const float* g, int n0, int nb, int O, int OH, int OW,
                         const float* wph, const float* wpk, int C, int KH, int KW, int sh,
                         int sw, int ph, int pw, int H, int W, int a, const float* bias,
                         float* out, float* col, float* buf, Py_ssize_t phase_size) noexcept nogil:
    """Rows a, a + sh, ... of out[n0:n0+nb]: the sw phases (a, b) into buf (phase_size apart),
    then each of those rows written whole, its sw phases interleaved, + bias[c]."""
    cdef int ha = (H - a + sh - 1) // sh
    cdef int b, q, n, c, i, j, wb
    cdef Py_ssize_t off = 0, hw = <Py_ssize_t>H * W, rstep = <Py_ssize_t>sh * W
    cdef Py_ssize_t c8 = (C + 7) // 8 * 8  # wpk's blocks have C rounded up to whole tiles
    cdef Py_ssize_t pa, pa0, pa1
    cdef float bv
    cdef float* dst
    cdef const float* src
    if ha <= 0:
        return
    for q in range(a * sw):  # the phase weight blocks run in phase order a*sw + b
        off += (<Py_ssize_t>C * O * _phase_taps(KH, sh, (q // sw + ph) % sh)
                * _phase_taps(KW, sw, (q % sw + pw) % sw))
    for b in range(min(sw, W)):
        _subpixel_gemm(g, n0, nb, O, OH, OW, wph + off, wpk + off // C * c8, C, KH, KW, sh, sw,
                       ph, pw, H, W, a, b, col, buf + b * phase_size)
        off += <Py_ssize_t>C * O * _phase_taps(KH, sh, (a + ph) % sh) * _phase_taps(KW, sw, (b + pw) % sw)
    if sw == 2 and W >= 2:
        pa0 = <Py_ssize_t>ha * ((W + 1) // 2)
        pa1 = <Py_ssize_t>ha * (W // 2)
        for n in range(nb):
            for c in range(C):
                bv = 0 if bias == NULL else bias[c]
                fnn_phase_rows_s2(out + (<Py_ssize_t>(n0 + n) * C + c) * hw + <Py_ssize_t>a * W,
                                  W, rstep, buf + (c * nb + n) * pa0,
                                  buf + phase_size + (c * nb + n) * pa1, ha, bv)
        return
    for b in range(min(sw, W)):
        wb = (W - b + sw - 1) // sw
        pa = <Py_ssize_t>ha * wb
        for n in range(nb):
            for c in range(C):
                bv = 0 if bias == NULL else bias[c]
                dst = out + (<Py_ssize_t>(n0 + n) * C + c) * hw + <Py_ssize_t>a * W + b
                src = buf + b * phase_size + (c * nb + n) * pa
                for i in range(ha):
                    for j in range(wb):
                        dst[i * rstep + j * sw] = src[i * wb + j] + bv


cdef void _subpixel_driver(const float* g, int N, int O, int OH, int OW, const float* wph,
                           const float* wpk, int C, int KH, int KW, int sh, int sw, int ph, int pw, int H, int W,
                           const float* bias, float* out, int nbmax, int nt, float* col,
                           float* buf, Py_ssize_t col_size, Py_ssize_t phase_size) noexcept nogil:
    """out (N, C, H, W) := the backward-data pass of g (N, O, OH, OW) phase by phase. Tasks
    (chunk of samples, row phase a) go to nt threads dynamically (round-robin on the static
    schedule), each thread with its own col_size and sw*phase_size workspaces."""
    cdef int nchunks = (N + nbmax - 1) // nbmax
    cdef int ntasks = nchunks * sh
    cdef int t, task, n0
    cdef Py_ssize_t buf_size = sw * phase_size
    if nt > 1 and _dynamic:
        for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
            t = openmp.omp_get_thread_num()
            n0 = (task // sh) * nbmax
            _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw,
                           ph, pw, H, W, task % sh, bias, out, col + t * col_size,
                           buf + t * buf_size, phase_size)
        return
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            task = t
            while task < ntasks:
                n0 = (task // sh) * nbmax
                _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw,
                               ph, pw, H, W, task % sh, bias, out, col + t * col_size,
                               buf + t * buf_size, phase_size)
                task = task + nt
        return
    for task in range(ntasks):
        n0 = (task // sh) * nbmax
        _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw, ph,
                       pw, H, W, task % sh, bias, out, col, buf, phase_size)


def _subpixel_fits(x, int n, int c, int o, int oh, int ow, int sh, int sw):
    """Whether a backward-data pass of n samples (C = c input-grid channels, O = o channels on
    the (oh, ow) output grid) takes the sub-pixel route. Measured against GEMM + col2im,
    interleaved A/B on the 2-core VM (dx of conv2d C->O, new/old time, 1 thread | 2 threads):
      N64 C64 14x14 O128 k4 s2 p1 (dcgan-d conv2)  0.64 | 0.65
      N64 C32 16x16 O64 k3 s2 p1                   0.71 | 0.88
      N64 C16 28x28 O32 k3 s2 p1                   0.75 | 0.99
      N64 C32 32x32 O64 k2 s2 p0 (kernel = stride) 0.88 | 0.87
      N32 C128 8x8 O256 k3 s2 p1                   0.67 | 0.96
      N64 C1 28x28 O64 k4 s2 p1 (dcgan-d conv1)    3.7  | 4.0   C < 16: the GEMM's C rows are
      N64 C3 32x32 / C8 28x28 O64 k4 s2 p1     2.3 / 1.13 | 2.5 / 1.08  too few for the 8-row tile
      N8 C128 8x8 O256 k3 s2 p1                    1.11 | 1.48  N*OH*OW < 512: the weight
      N1 / N4 C64 14x14 O128 k4 s2 p1       1.46 / 0.97 | 2.16 / 1.01  reshuffle and ragged
                                                                      panels are not paid back
    Stride 1 keeps the flipped forward convolution (conv2d_backward's dx_as_forward).
    dcgan shapes, interleaved old / phases / torch (oneDNN) medians of 25, ms, 1 thread CPU time
    | 2 threads wall (busy machine; the 1-thread numbers are the steadier):
      conv2d dx (64,64,14,14)->128 k4 s2 p1      14.1 / 7.6 / 7.2  |  6.7 / 3.7 / 3.7
      convT fwd 128->64 k4 s2 p1 on 7x7          13.5 / 7.3 / 9.7  |  7.4 / 3.7 / 4.9
      conv2d dx (64,1,28,28)->64, convT 64->1 on 14x14 keep col2im: 1.0-1.4 ms (torch 3.8-5.6)"""
    return (_subpixel_on and x.dtype == np.float32 and FNN_MK_AVAILABLE and (sh > 1 or sw > 1)
            and (_subpixel_force or (c >= 16 and n * oh * ow >= 512)))


def _subpixel_backward_data(g, weight, bias, out, int sh, int sw, int ph, int pw,
                            _DwJob beside=None):
    """out (N, C, H, W) := conv2d's input gradient for output gradient g (N, O, OH, OW) and
    weight (O, C, KH, KW) (+ bias[c]), float32, by phases (see _subpixel_driver). ``beside``:
    a weight gradient whose panel tasks go first into this pass's pool of tasks (the threads
    take both kinds dynamically: a thread's dW is its share of a GEMM that scales poorly when
    split finer, and the dx tasks even the two out)."""
    cdef int N = g.shape[0], O = g.shape[1], OH = g.shape[2], OW = g.shape[3]
    cdef int C = weight.shape[1], KH = weight.shape[2], KW = weight.shape[3]
    cdef int H = out.shape[2], W = out.shape[3]
    cdef int a, b, ju, jv, ha, wb, NB, NT
    if tracing():
        took("subpixel" if beside is None else "subpixel/beside_dw")
        _trace_phases(O, OW, KH, KW, sh, sw, ph, pw, H, W)
    cdef Py_ssize_t kmax = 0, pamax = 0, colmax = 0, wtotal = 0
    for a in range(sh):
        ju = _phase_taps(KH, sh, (a + ph) % sh)
        ha = (H - a + sh - 1) // sh
        for b in range(sw):
            jv = _phase_taps(KW, sw, (b + pw) % sw)
            wb = (W - b + sw - 1) // sw
            wtotal += <Py_ssize_t>C * O * ju * jv
            if ha > 0 and wb > 0:
                pamax = max(pamax, <Py_ssize_t>ha * wb)
                colmax = max(colmax, <Py_ssize_t>O * ju * jv * ha * wb)
    work = <Py_ssize_t>N * O * C * KH * KW * H * W // (sh * sw)
    nt, nb = _plan(N, colmax * 4, work)  # chunks evened out over the threads
    nb = -(-N // -(-N // nb))  # and in size when the batch runs unfused
    # the row phases are tasks too: a batch smaller than the thread count still shares
    nt = min(gemm_threads(work), -(-N // nb) * sh)
    if beside is not None:
        nt = beside.nthreads  # its tasks were cut for gemm_threads' count
    NB, NT = nb, nt
    cdef Py_ssize_t col_size = max(1, colmax * nb), phase_size = max(1, <Py_ssize_t>C * pamax * nb)
    col = _cached(np.float32, 0, NT * col_size)
    buf = _cached(np.float32, 1, NT * sw * phase_size)
    wph = _cached(np.float32, "subpixel_w", wtotal)
    wpk = _cached(np.float32, "subpixel_wpk", wtotal // C * ((C + 7) // 8 * 8))
    tab = _cached(np.intp, "subpixel_tab", 3 * KH * KW)
    cdef float* pg = <float*>_ptr(g)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pwph = <float*>_ptr(wph)
    cdef float* pwpk = <float*>_ptr(wpk)
    cdef Py_ssize_t off = 0, kq
    cdef int task, ntasks, t, n0
    cdef Py_ssize_t* ptab = <Py_ssize_t*>_ptr(tab)
    cdef float* pcol = <float*>_ptr(col)
    cdef float* pbuf = <float*>_ptr(buf)
    with nogil:
        _subpixel_weights(pw_, O, C, KH, KW, sh, sw, ph, pw, pwph, ptab)
        for a in range(sh * sw):  # each phase block into 8-row tiles
            kq = <Py_ssize_t>O * _phase_taps(KH, sh, (a // sw + ph) % sh) * _phase_taps(KW, sw, (a % sw + pw) % sw)
            fnn_pack_a8(C, <int>kq, 8, pwph + off * C, pwpk + off * ((C + 7) // 8 * 8))
            off += kq
        if beside is None:
            _subpixel_driver(pg, N, O, OH, OW, pwph, pwpk, C, KH, KW, sh, sw, ph, pw, H, W, pb,
                             po, NB, NT, pcol, pbuf, col_size, phase_size)
        else:
            ntasks = beside.ntasks + ((N + NB - 1) // NB) * sh
            for task in prange(ntasks, num_threads=NT, schedule="dynamic", chunksize=1):
                t = openmp.omp_get_thread_num()
                if task < beside.ntasks:
                    beside.run(task, t)
                else:
                    n0 = ((task - beside.ntasks) // sh) * NB
                    _subpixel_rows(pg, n0, min(NB, N - n0), O, OH, OW, pwph, pwpk, C, KH, KW,
                                   sh, sw, ph, pw, H, W, (task - beside.ntasks) % sh, pb, po,
                                   pcol + t * col_size, pbuf + t * sw * phase_size, phase_size)
            beside.finish()
    return out


# ---- one-pixel inputs of conv_transpose2d ------------------------------------------------------
#
# A transposed convolution of a 1x1 image with no padding whose output is exactly one kernel
# (the first layer of a DCGAN generator: z (N, Cin, 1, 1) -> (N, Cout, KH, KW)) is a dense layer:
# out (N, Cout*KH*KW) = x (N, Cin) @ W (Cin, Cout*KH*KW), and NCHW is that matrix row-major. One
# GEMM replaces the chunked GEMM + col2im, and backward is two GEMMs.

cdef void _pixel_transpose_forward(const floating* x, const floating* w, const floating* bias,
                                   floating* out, int N, int CIN, int COUT, Py_ssize_t KK) noexcept nogil:
    """out (N, COUT*KK) := x (N, CIN) @ w (CIN, COUT*KK) + bias[c] on the KK pixels of channel c."""
    cdef int n, c
    cdef Py_ssize_t q
    cdef floating b
    cdef floating* row
    _gemm_xn(False, False, N, <int>(COUT * KK), CIN, x, CIN, w, <int>(COUT * KK), False, out,
             <int>(COUT * KK))
    if bias != NULL:
        for n in range(N):
            for c in range(COUT):
                b = bias[c]
                row = out + (<Py_ssize_t>n * COUT + c) * KK
                for q in range(KK):
                    row[q] = row[q] + b


cdef void _pixel_transpose_backward(const floating* x, const floating* w, const floating* dy,
                                    floating* dx, floating* dw, int N, int CIN, int COUT,
                                    Py_ssize_t KK) noexcept nogil:
    """dx (N, CIN) := dy (N, COUT*KK) @ w.T; dw (CIN, COUT*KK) += x.T @ dy (NULL outputs skipped)."""
    cdef int ck = <int>(COUT * KK)
    if dx != NULL:
        gemm_rm(False, True, N, CIN, ck, <floating>1, dy, ck, w, ck, <floating>0, dx, CIN)
    if dw != NULL:
        gemm_rm(True, False, CIN, ck, N, <floating>1, x, CIN, dy, ck, <floating>1, dw, ck)


def _is_pixel_transpose(x, out_shape, kh, kw, ph, pw):
    return (x.shape[2] == 1 and x.shape[3] == 1 and ph == 0 and pw == 0
            and out_shape[2] == kh and out_shape[3] == kw and x.shape[0] > 0)


# ---- validation and workspaces (Python) --------------------------------------------------------

def _geometry(where, kernel_size, stride, padding):
    kh, kw = check_pair(where, "kernel_size", kernel_size, 1)
    sh, sw = check_pair(where, "stride", stride, 1)
    ph, pw = check_pair(where, "padding", padding, 0)
    return kh, kw, sh, sw, ph, pw


def _output_grid(where, name, shape, kh, kw, sh, sw, ph, pw):
    oh = conv_out_size(shape[2], kh, sh, ph)
    ow = conv_out_size(shape[3], kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: kernel {(kh, kw)} with padding {(ph, pw)} does not fit in "
                         f"{name} {tuple(shape)} (padded size {(shape[2] + 2 * ph, shape[3] + 2 * pw)})")
    return oh, ow


def _chunk_samples(n, col_bytes_per_sample):
    # Chunks of about _col_chunk_bytes: whole-batch im2col of a VGG-ish layer (58 MB) spills to
    # DRAM between im2col and the GEMM, while 1-sample chunks make GEMMs too small to share
    # well between threads (see benchmarks/kernels.py for the sweep).
    return int(max(1, min(n, _col_chunk_bytes // max(1, col_bytes_per_sample))))


def _plan(n, col_bytes_per_sample, work):
    """(threads, samples per chunk): fused over ``threads`` when the work is worth sharing and
    the batch gives every thread a chunk; chunks are then evened out so threads get equal shares."""
    cdef int nt = gemm_threads(work)
    nb = _chunk_samples(n, col_bytes_per_sample)
    if nt > 1 and n >= nt:
        nchunks = -(-n // nb)
        nchunks = -(-nchunks // nt) * nt
        return nt, -(-n // nchunks)
    return 1, nb


# Workspaces are kept between calls (one set per Python thread, so concurrent callers never
# share one): a fresh np.empty of megabytes is new pages, and first-touch page faults inside the
# parallel loops cost more than the GEMM they feed (measured: vgg-bn steps with ~1000 faults
# took 52-54 ms, steps with none 44 ms).
_workspace_cache = threading.local()


def _cached(dtype, slot, size):
    """A 1-D array of ``size`` elements of ``dtype`` owned by this thread's cache ``slot``."""
    cache = getattr(_workspace_cache, "arrays", None)
    if cache is None:
        cache = _workspace_cache.arrays = {}
    key = (np.dtype(dtype), slot)
    arr = cache.get(key)
    if arr is None or arr.size < size:
        arr = cache[key] = np.empty(max(size, 1), dtype=dtype)
    return arr[:max(size, 1)]


def _clear_workspaces():
    """Drop this thread's cached workspaces (tests, memory-conscious callers)."""
    _workspace_cache.arrays = {}


def _workspaces(dtype, nb, col_rows, other_rows, p, nt=1, dw_size=0):
    """Per thread: the im2col matrix, a (other_rows, nb*p) GEMM output / gathered gradient, and
    for weight gradients one zeroed accumulator per extra thread then one scratch block each."""
    col = _cached(dtype, 0, nt * col_rows * nb * p)
    buf = _cached(dtype, 1, nt * other_rows * nb * p)
    dw_acc = _cached(dtype, 2, (2 * nt - 1) * dw_size)
    dw_acc[:(nt - 1) * dw_size] = 0
    return col, buf, dw_acc


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline float* _aligned64(object a):
    """The first 64-byte boundary in float32 workspace ``a`` (allocated 16 floats longer)."""
    return <float*>((<size_t>_ptr(a) + 63) & ~(<size_t>63))


# ---- public kernels ----------------------------------------------------------------------------

def im2col(x, kernel_size, stride, padding, out):
    """out[n, (c, i, j), oh*OW + ow] := x_padded[n, c, oh*sh + i, ow*sw + j]."""
    where = "im2col"
    kh, kw, sh, sw, ph, pw = _geometry(where, kernel_size, stride, padding)
    check_float(where, "x", x, ndim=4)
    n, c, h, w = x.shape
    oh, ow = _output_grid(where, "x", x.shape, kh, kw, sh, sw, ph, pw)
    check_out(where, "out", out, (n, c * kh * kw, oh * ow), x.dtype,
              f"x {x.shape}, kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}")
    cdef void* px = _ptr(x)
    cdef void* po = _ptr(out)
    cdef int N = n, C = c, H = h, W = w, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow
    cdef Py_ssize_t P = oh * ow
    if x.dtype == np.float32:
        with nogil:
            _im2col(<float*>px, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <float*>po, P, C * KH * KW * P, True)
    else:
        with nogil:
            _im2col(<double*>px, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <double*>po, P, C * KH * KW * P, True)
    return out


def col2im(col, kernel_size, stride, padding, out):
    """out := the adjoint of im2col applied to col: every column entry added back onto its pixel."""
    where = "col2im"
    kh, kw, sh, sw, ph, pw = _geometry(where, kernel_size, stride, padding)
    check_float(where, "col", col, ndim=3)
    check_float(where, "out", out, ndim=4, dtype=col.dtype)
    n, c, h, w = out.shape
    oh, ow = _output_grid(where, "out", out.shape, kh, kw, sh, sw, ph, pw)
    if tuple(col.shape) != (n, c * kh * kw, oh * ow):
        raise ValueError(f"col2im: col must have shape {(n, c * kh * kw, oh * ow)} for out {out.shape}, "
                         f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}; got {col.shape}")
    check_out(where, "out", out, out.shape, col.dtype)
    cdef void* pc = _ptr(col)
    cdef void* po = _ptr(out)
    cdef int N = n, C = c, H = h, W = w, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow
    cdef Py_ssize_t P = oh * ow
    if col.dtype == np.float32:
        with nogil:
            _col2im(<float*>pc, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <float*>po, NULL, P, C * KH * KW * P, True)
    else:
        with nogil:
            _col2im(<double*>pc, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <double*>po, NULL, P, C * KH * KW * P, True)
    return out


def _check_conv(where, x, weight, stride, padding, transposed):
    """Validates x and weight; returns the geometry. weight is (O, C, KH, KW) for conv2d and
    (Cin, Cout, KH, KW) for conv_transpose2d; either way weight.shape[0 or 1] must match x."""
    check_float(where, "x", x, ndim=4)
    check_float(where, "weight", weight, ndim=4, dtype=x.dtype)
    sh, sw = check_pair(where, "stride", stride, 1)
    ph, pw = check_pair(where, "padding", padding, 0)
    kh, kw = weight.shape[2], weight.shape[3]
    layout = "(in, out, kh, kw)" if transposed else "(out, in, kh, kw)"
    expected = weight.shape[0] if transposed else weight.shape[1]
    if x.shape[1] != expected:
        raise ValueError(f"{where}: x {x.shape} has {x.shape[1]} channels but weight {weight.shape} "
                         f"{layout} expects {expected}")
    if kh < 1 or kw < 1 or weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"{where}: weight {weight.shape} must have non-zero sizes")
    return kh, kw, sh, sw, ph, pw


def _check_transposed_out(where, name, x, weight, a, kh, kw, sh, sw, ph, pw):
    """For conv_transpose2d: the output grid of a is (H-1)*s - 2p + k + op with 0 <= op < s."""
    n, _, h, w = x.shape
    base_h = (h - 1) * sh - 2 * ph + kh
    base_w = (w - 1) * sw - 2 * pw + kw
    check_float(where, name, a, ndim=4, dtype=x.dtype)
    oph, opw = a.shape[2] - base_h, a.shape[3] - base_w
    if (a.shape[0] != n or a.shape[1] != weight.shape[1] or not 0 <= oph < sh or not 0 <= opw < sw
            or a.shape[2] < 1 or a.shape[3] < 1):
        raise ValueError(
            f"{where}: {name} must have shape ({n}, {weight.shape[1]}, {base_h} + oph, {base_w} + opw) "
            f"with output padding 0 <= oph < {sh}, 0 <= opw < {sw} for x {x.shape}, weight "
            f"{weight.shape}, stride {(sh, sw)}, padding {(ph, pw)}; got {a.shape}")


cdef _trace_im2col_dw(dtype, int o):
    """The route of an im2col weight gradient with o output channels (see _im2col_chunk)."""
    if dtype == np.float32 and FNN_MK_AVAILABLE:
        took("im2col_dw/nt" if _dw_on_nt(o) else "im2col_dw/tn")
    else:
        took("im2col_dw/blas")


cdef void _s1_forward_call(x, weight, bias, out, int n, int c, int h, int w, int o, int kh, int kw,
                           int ph, int pw, int oh, int nt):
    cdef float* px = <float*>_ptr(x)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    with nogil:
        _conv_s1_forward(px, n, c, h, w, pw_, o, kh, kw, ph, pw, oh, pb, po, nt)


cdef bint _widen_s1 = True


def _set_widen_s1(bint on):
    """Tuning hook for benchmarks and tests: stride-1 forwards whose output is wider than the
    input (padding >= K-1) on the implicit route over a widened copy of x (True) or through
    im2col chunks (False); returns the old value."""
    global _widen_s1
    old = _widen_s1
    _widen_s1 = on
    return old


cdef int _s1_cross = 1


def _set_s1_cross(int mode):
    """Tuning hook for benchmarks and tests: the stride-1 implicit forward's panels run on across
    samples (fnn_mk_conv_s1x) where a sample's ragged last panel would waste more than 5% of
    the FMAs (1), for every shape (2: tests), or never (0); returns the old mode. Interleaved
    A/B, batch 64, 2 threads, ms, across / per sample / torch: 64->64 at 14x14 forward 6.83 /
    7.51 / 11.92 (a slow hour of the VM), its dx 7.83 / 8.80; 32->64 at 14x14 forward 4.14 /
    4.70; at 28x28 (2% waste) the per-sample panels were faster (7.64 / 8.68)."""
    global _s1_cross
    old = _s1_cross
    _s1_cross = mode
    return old


def _set_panel_direct(bint on):
    """Tuning hook for benchmarks and tests: the cross-sample panels of fnn_mk_conv_s1x and
    fnn_mk_subpixel with up to 8 rows multiply straight from their masked loads (True) or from
    a packed panel (False); returns the old value."""
    return bool(fnn_set_panel_direct(on))


def _s1_across_samples(Py_ssize_t p):
    """Whether a stride-1 implicit forward of p = OH*W columns a sample takes fnn_mk_conv_s1x
    (see _set_s1_cross)."""
    return _s1_cross == 2 or (_s1_cross == 1 and 20 * ((32 - p % 32) % 32) > p)


cdef void _s1x_forward_call(x, weight, bias, out, int n, int c, int h, int w, int o, int kh,
                            int kw, int ph, int pw, int oh, int nt):
    """out := conv2d(x) + bias on fnn_mk_conv_s1x: tasks of 8 panels (256 columns of the batch)
    taken dynamically, each thread with its own 32-column scratch for panels that cross samples."""
    cdef int k = c * kh * kw, mt = (o + 7) // 8
    cdef Py_ssize_t P = <Py_ssize_t>oh * w, total = <Py_ssize_t>n * oh * w
    cdef Py_ssize_t ct_size = <Py_ssize_t>mt * 8 * 32
    cdef Py_ssize_t span = 8 * 32
    cdef int ntasks = <int>((total + span - 1) // span)
    ap = _cached(np.float32, "s1x_a", <Py_ssize_t>mt * 8 * k + 16)
    ct = _cached(np.float32, "s1x_ct", nt * ct_size + 16)
    cdef float* pap = _aligned64(ap)
    cdef float* pct = _aligned64(ct)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pw_ = <float*>_ptr(weight)
    cdef const float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef int task, t
    with nogil:
        fnn_pack_a8(o, k, 8, pw_, pap)
        if nt > 1:
            for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
                t = openmp.omp_get_thread_num()
                fnn_mk_conv_s1x(o, task * span, min(total, task * span + span), P, c, h, w, kh, kw,
                                ph, pw, pap, px, pb, po, pct + t * ct_size)
        else:
            fnn_mk_conv_s1x(o, 0, total, P, c, h, w, kh, kw, ph, pw, pap, px, pb, po, pct)


def conv2d_forward(x, weight, bias, out, stride, padding, relu=False, negative_slope=None):
    """out[n, o] := bias[o] + sum_{c,i,j} weight[o, c, i, j] * x_padded[n, c, oh*sh + i, ow*sw + j];
    ``relu``: then max(out, 0), or with ``negative_slope`` (>= 0) leaky_relu(out, negative_slope),
    bitwise as the activation kernels (a Conv2D followed by a ReLU or LeakyReLU)."""
    where = "conv2d_forward"
    act, slope = activation_code(where, relu, negative_slope)
    kh, kw, sh, sw, ph, pw = _check_conv(where, x, weight, stride, padding, False)
    n, c, h, w = x.shape
    o = weight.shape[0]
    oh, ow = _output_grid(where, "x", x.shape, kh, kw, sh, sw, ph, pw)
    if bias is not None:
        check_like(where, "bias", bias, (o,), x.dtype, f"weight {weight.shape}")
    check_out(where, "out", out, (n, o, oh, ow), x.dtype,
              f"x {x.shape}, weight {weight.shape}, stride {(sh, sw)}, padding {(ph, pw)}")
    cdef int NT1
    if (_implicit_s1 and _widen_s1 and x.dtype == np.float32 and FNN_MK_AVAILABLE and sh == 1
            and sw == 1 and ow > w and pw >= kw - 1 and kh <= 32 and kw <= 32 and x.size > 0):
        # an output wider than the input (the dx of a valid convolution, padding K-1): the
        # same-width route on x placed pw columns in on a zeroed plane as wide as the output
        # (LeNet's 16->6 5x5 dx at 10x10 -> 14x14 went through im2col at 12 GFLOP/s)
        wide = _cached(np.float32, "s1_wide", <Py_ssize_t>n * c * h * ow).reshape(n, c, h, ow)
        wide[..., :pw] = 0
        wide[..., pw + w:] = 0
        wide[..., pw:pw + w] = x
        x, w, pw = wide, ow, 0
        took("s1_widened")
    if (_implicit_s1 and x.dtype == np.float32 and FNN_MK_AVAILABLE and sh == 1 and sw == 1 and ow == w
            and kh <= 32 and kw <= 32):
        # implicit GEMM: no column matrix, no scatter (vgg-bn shapes fwd and stride-1 dx 9-18%
        # faster than im2col + GEMM, interleaved A/B on the 2-core VM)
        NT1 = gemm_threads(<Py_ssize_t>n * o * c * kh * kw * oh * ow)
        if _s1_across_samples(oh * ow):
            took("s1_across_samples")
            _s1x_forward_call(x, weight, bias, out, n, c, h, w, o, kh, kw, ph, pw, oh, NT1)
        else:
            took("s1_implicit")
            _s1_forward_call(x, weight, bias, out, n, c, h, w, o, kh, kw, ph, pw, oh, NT1)
        return _activate_all(out, act, slope)
    if _strided_fits(x, n, c, h, w, o, kh, kw, sh, sw, oh, ow):
        return _activate_all(_strided_forward(x, weight, bias, out, sh, sw, ph, pw), act, slope)
    nt, nb = _plan(n, c * kh * kw * oh * ow * x.itemsize, n * o * c * kh * kw * oh * ow)
    col, buf, _ = _workspaces(x.dtype, nb, c * kh * kw, o, oh * ow, nt)
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    cdef void* pcol = _ptr(col)
    cdef void* pbuf = _ptr(buf)
    cdef int N = n, C = c, H = h, W = w, O = o, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow, NB = nb, NT = nt, ACT = act
    cdef double SLOPE = slope
    took("im2col_forward/f32" if x.dtype == np.float32 else "im2col_forward/f64")
    if x.dtype == np.float32:
        with nogil:
            _im2col_driver(<float*>px, N, C, H, W, <float*>pw_, O, KH, KW, SH, SW, PH, PW, OH, OW,
                           <float*>pb, <float*>po, NULL, NULL, NB, NT, <float*>pcol, <float*>pbuf,
                           NULL, ACT, SLOPE)
    else:
        with nogil:
            _im2col_driver(<double*>px, N, C, H, W, <double*>pw_, O, KH, KW, SH, SW, PH, PW, OH, OW,
                           <double*>pb, <double*>po, NULL, NULL, NB, NT, <double*>pcol,
                           <double*>pbuf, NULL, ACT, SLOPE)
    return out


def _activate_all(out, int act, double slope):
    """out := act(out) in place, in parallel (the implicit routes write their outputs panel by
    panel across channels: the activation runs after)."""
    cdef Py_ssize_t size = out.size
    cdef bint single = out.dtype == np.float32
    cdef float* pf = <float*>_ptr(out)
    cdef double* pd = <double*>_ptr(out)
    with nogil:
        if single:
            _activate_blocks(pf, size, act, slope, True)
        else:
            _activate_blocks(pd, size, act, slope, True)
    return out


def conv2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding):
    """dx := conv2d's input gradient (col2im of weight.T @ dy); dweight += dy @ im2col(x).T;
    dbias += dy.sum((0, 2, 3)). None outputs are skipped."""
    where = "conv2d_backward"
    kh, kw, sh, sw, ph, pw = _check_conv(where, x, weight, stride, padding, False)
    n, c, h, w = x.shape
    o = weight.shape[0]
    oh, ow = _output_grid(where, "x", x.shape, kh, kw, sh, sw, ph, pw)
    check_float(where, "dy", dy, ndim=4, dtype=x.dtype)
    if tuple(dy.shape) != (n, o, oh, ow):
        raise ValueError(f"{where}: dy must have shape {(n, o, oh, ow)} for x {x.shape}, weight "
                         f"{weight.shape}, stride {(sh, sw)}, padding {(ph, pw)}; got {dy.shape}")
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, weight.shape, x.dtype, "the shape of weight")
    check_optional_out(where, "dbias", dbias, (o,), x.dtype, f"weight {weight.shape}")
    cdef bint dx_as_forward = (dx is not None and x.dtype == np.float32 and FNN_MK_AVAILABLE
                               and sh == 1 and sw == 1 and ph < kh and pw < kw)
    if dx_as_forward:
        # At stride 1, dx is the convolution of dy with the flipped, channel-swapped kernel and
        # padding K-1-p: a forward pass whose GEMM is O*KH*KW deep, where col2im's weight.T @ dy
        # is only O deep (vgg 32->32 at 28x28: 6.9 ms -> ~4 ms)
        flipped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        conv2d_forward(dy, flipped, None, dx, 1, (kh - 1 - ph, kw - 1 - pw))
        dx_out, dx = dx, None
    elif dx is not None and _subpixel_fits(x, n, c, o, oh, ow, sh, sw):
        beside = None
        nt_dw = gemm_threads(<Py_ssize_t>n * o * c * kh * kw * oh * ow)
        if (_side_by_side and dweight is not None and nt_dw > 1
                and _implicit_dw_fits(x, o, c, h, w, kh, kw, oh, ow) and c * kh * kw >= 32 * nt_dw):
            # dW's panel groups and dx's tasks in one pool (see _set_side_by_side)
            beside = _dw_job(x, dy, dweight, dbias, sh, sw, ph, pw, nt_dw)
            dweight = dbias = None
        _subpixel_backward_data(dy, weight, None, dx, sh, sw, ph, pw, beside)
        dx_as_forward, dx_out, dx = True, dx, None
    if dweight is not None and _dwt_s1_fits(x, o, c, w, kh, kw, sh, sw, ow):
        _dwt_s1(x, dy, dweight, dbias, ph, pw)
        dweight = dbias = None
    if dweight is not None and _implicit_dw_fits(x, o, c, h, w, kh, kw, oh, ow):
        _implicit_dw(x, dy, dweight, dbias, sh, sw, ph, pw)
        dweight = dbias = None
    cdef int N = n, C = c, H = h, W = w, O = o, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow, NB = 1, NT = 1
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pdy = _ptr(dy)
    cdef void* pdx = _ptr(dx)
    cdef void* pdw = _ptr(dweight)
    cdef void* pdb = _ptr(dbias)
    cdef void* pcol = NULL
    cdef void* pbuf = NULL
    cdef void* pdwa = NULL
    if dweight is not None or dx is not None:
        NT, NB = _plan(n, c * kh * kw * oh * ow * x.itemsize, n * o * c * kh * kw * oh * ow)
        col, buf, dw_acc = _workspaces(x.dtype, NB, c * kh * kw, o, oh * ow, NT, o * c * kh * kw)
        pcol, pbuf, pdwa = _ptr(col), _ptr(buf), _ptr(dw_acc)
    if tracing():
        if pdw != NULL:
            _trace_im2col_dw(x.dtype, o)
        if pdx != NULL:
            took("col2im/f32" if x.dtype == np.float32 else "col2im/f64")
    if x.dtype == np.float32:
        with nogil:
            if pdw != NULL:
                _im2col_driver(<float*>px, N, C, H, W, <float*>pw_, O, KH, KW, SH, SW, PH, PW, OH, OW,
                               NULL, NULL, <float*>pdy, <float*>pdw, NB, NT, <float*>pcol, <float*>pbuf,
                               <float*>pdwa)
            if pdx != NULL:
                _col2im_driver(<float*>pdy, N, O, OH, OW, <float*>pw_, C, KH, KW, SH, SW, PH, PW, H, W,
                               NULL, <float*>pdx, NB, NT, <float*>pcol, <float*>pbuf)
            if pdb != NULL:
                _channel_sum(<float*>pdy, N, O, <Py_ssize_t>OH * OW, <float*>pdb)
    else:
        with nogil:
            if pdw != NULL:
                _im2col_driver(<double*>px, N, C, H, W, <double*>pw_, O, KH, KW, SH, SW, PH, PW, OH, OW,
                               NULL, NULL, <double*>pdy, <double*>pdw, NB, NT, <double*>pcol,
                               <double*>pbuf, <double*>pdwa)
            if pdx != NULL:
                _col2im_driver(<double*>pdy, N, O, OH, OW, <double*>pw_, C, KH, KW, SH, SW, PH, PW, H, W,
                               NULL, <double*>pdx, NB, NT, <double*>pcol, <double*>pbuf)
            if pdb != NULL:
                _channel_sum(<double*>pdy, N, O, <Py_ssize_t>OH * OW, <double*>pdb)
    return dx_out if dx_as_forward else dx


def conv_transpose2d_forward(x, weight, bias, out, stride, padding):
    """out := conv2d's input gradient applied to x (col2im of weight.T @ x) + bias; weight is
    (Cin, Cout, KH, KW) and the output padding is implied by out.shape."""
    where = "conv_transpose2d_forward"
    kh, kw, sh, sw, ph, pw = _check_conv(where, x, weight, stride, padding, True)
    _check_transposed_out(where, "out", x, weight, out, kh, kw, sh, sw, ph, pw)
    n, cin, h, w = x.shape
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    if bias is not None:
        check_like(where, "bias", bias, (cout,), x.dtype, f"weight {weight.shape}")
    check_out(where, "out", out, out.shape, x.dtype)
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    cdef Py_ssize_t KK = kh * kw
    cdef int PN = n, PCIN = cin, PCOUT = cout
    if not _is_pixel_transpose(x, out.shape, kh, kw, ph, pw) and _subpixel_fits(x, n, cout, cin, h, w, sh, sw):
        return _subpixel_backward_data(x, weight, bias, out, sh, sw, ph, pw)
    if _is_pixel_transpose(x, out.shape, kh, kw, ph, pw):
        took("pixel_transpose")
        if x.dtype == np.float32:
            with nogil:
                _pixel_transpose_forward(<float*>px, <float*>pw_, <float*>pb, <float*>po, PN, PCIN, PCOUT, KK)
        else:
            with nogil:
                _pixel_transpose_forward(<double*>px, <double*>pw_, <double*>pb, <double*>po, PN, PCIN, PCOUT, KK)
        return out
    nt, nb = _plan(n, cout * kh * kw * h * w * x.itemsize, n * cin * cout * kh * kw * h * w)
    col, buf, _ = _workspaces(x.dtype, nb, cout * kh * kw, cin, h * w, nt)
    cdef void* pcol = _ptr(col)
    cdef void* pbuf = _ptr(buf)
    cdef int N = n, CIN = cin, H = h, W = w, COUT = cout, KH = kh, KW = kw, SH = sh, SW = sw
    cdef int PH = ph, PW = pw, OH = oh, OW = ow, NB = nb, NT = nt
    # The transposed convolution of x is the backward-data pass of the conv2d that maps an
    # (N, Cout, OH, OW) image to x's (N, Cin, H, W) grid with the same weight.
    took("col2im/f32" if x.dtype == np.float32 else "col2im/f64")
    if x.dtype == np.float32:
        with nogil:
            _col2im_driver(<float*>px, N, CIN, H, W, <float*>pw_, COUT, KH, KW, SH, SW, PH, PW, OH, OW,
                           <float*>pb, <float*>po, NB, NT, <float*>pcol, <float*>pbuf)
    else:
        with nogil:
            _col2im_driver(<double*>px, N, CIN, H, W, <double*>pw_, COUT, KH, KW, SH, SW, PH, PW, OH, OW,
                           <double*>pb, <double*>po, NB, NT, <double*>pcol, <double*>pbuf)
    return out


def conv_transpose2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding):
    """dx := conv2d(dy, weight) (no bias); dweight += x @ im2col(dy).T; dbias += dy.sum((0, 2, 3))."""
    where = "conv_transpose2d_backward"
    kh, kw, sh, sw, ph, pw = _check_conv(where, x, weight, stride, padding, True)
    _check_transposed_out(where, "dy", x, weight, dy, kh, kw, sh, sw, ph, pw)
    n, cin, h, w = x.shape
    cout, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, weight.shape, x.dtype, "the shape of weight")
    check_optional_out(where, "dbias", dbias, (cout,), x.dtype, f"weight {weight.shape}")
    cdef int N = n, CIN = cin, H = h, W = w, COUT = cout, KH = kh, KW = kw, SH = sh, SW = sw
    cdef int PH = ph, PW = pw, OH = oh, OW = ow, NB = 1, NT = 1
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pdy = _ptr(dy)
    cdef void* pdx = _ptr(dx)
    cdef void* pdw = _ptr(dweight)
    cdef void* pdb = _ptr(dbias)
    cdef void* pcol = NULL
    cdef void* pbuf = NULL
    cdef void* pdwa = NULL
    cdef Py_ssize_t KK = kh * kw
    if _is_pixel_transpose(x, dy.shape, kh, kw, ph, pw):
        took("pixel_transpose")
        if x.dtype == np.float32:
            with nogil:
                _pixel_transpose_backward(<float*>px, <float*>pw_, <float*>pdy, <float*>pdx,
                                          <float*>pdw, N, CIN, COUT, KK)
                if pdb != NULL:
                    _channel_sum(<float*>pdy, N, COUT, KK, <float*>pdb)
        else:
            with nogil:
                _pixel_transpose_backward(<double*>px, <double*>pw_, <double*>pdy, <double*>pdx,
                                          <double*>pdw, N, CIN, COUT, KK)
                if pdb != NULL:
                    _channel_sum(<double*>pdy, N, COUT, KK, <double*>pdb)
        return dx
    if (dx is not None and _implicit_sn_convt
            and _strided_fits(x, n, cout, oh, ow, cin, kh, kw, sh, sw, h, w)):
        # dx = conv2d(dy, weight) on the implicit strided route; the weight gradient keeps
        # its own im2col pass (see _set_implicit_strided_convt for the numbers)
        _strided_forward(dy, weight, None, dx, sh, sw, ph, pw)
        pdx = NULL
    if dweight is not None and _implicit_dw_fits(dy, cin, cout, oh, ow, kh, kw, h, w):
        # dweight is conv2d's weight gradient of the convolution dy -> x (weight (Cin, Cout, ..))
        _implicit_dw(dy, x, dweight, None, sh, sw, ph, pw)
        pdw = NULL
        dweight = None
    if dweight is not None or pdx != NULL:
        NT, NB = _plan(n, cout * kh * kw * h * w * x.itemsize, n * cin * cout * kh * kw * h * w)
        col, buf, dw_acc = _workspaces(x.dtype, NB, cout * kh * kw, cin, h * w, NT,
                                       cin * cout * kh * kw)
        pcol, pbuf, pdwa = _ptr(col), _ptr(buf), _ptr(dw_acc)
    if tracing():
        if pdw != NULL:
            _trace_im2col_dw(x.dtype, cin)
        if pdx != NULL:
            took("im2col_forward/f32" if x.dtype == np.float32 else "im2col_forward/f64")
    # One pass over im2col(dy) serves both: dx is the conv2d forward of dy and dweight its
    # weight gradient with x in the role of the output gradient.
    if x.dtype == np.float32:
        with nogil:
            if pdx != NULL or pdw != NULL:
                _im2col_driver(<float*>pdy, N, COUT, OH, OW, <float*>pw_, CIN, KH, KW, SH, SW, PH, PW,
                               H, W, NULL, <float*>pdx, <float*>px, <float*>pdw, NB, NT, <float*>pcol,
                               <float*>pbuf, <float*>pdwa)
            if pdb != NULL:
                _channel_sum(<float*>pdy, N, COUT, <Py_ssize_t>OH * OW, <float*>pdb)
    else:
        with nogil:
            if pdx != NULL or pdw != NULL:
                _im2col_driver(<double*>pdy, N, COUT, OH, OW, <double*>pw_, CIN, KH, KW, SH, SW, PH, PW,
                               H, W, NULL, <double*>pdx, <double*>px, <double*>pdw, NB, NT,
                               <double*>pcol, <double*>pbuf, <double*>pdwa)
            if pdb != NULL:
                _channel_sum(<double*>pdy, N, COUT, <Py_ssize_t>OH * OW, <double*>pdb)
    return dx
