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
from .._checks import (activation_code, check_float, check_like, check_optional_out, check_out,
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


# ---- float32 GEMM microkernel (kernels/microkernel.h; the AVX-512 conv kernels: kernels/conv.h) --
#
# Why not BLAS here: the GEMMs of a convolution are short and wide (O = 32..128 rows, C*KH*KW =
# 288..1024 deep, thousands of columns), and the microkernel packs its B panels straight from
# the image (the implicit GEMMs below), which no BLAS call can (benchmarks/decisions.md).
# float64 and the baseline level keep BLAS. Each entry of C is one sum over k in a fixed order
# whatever the thread count, as with BLAS.
from ._microkernel cimport (FNN_MK_AVAILABLE, FNN_MK_KC, FNN_MK_RA_LDA, fnn_mk_sgemm_nn,
                            fnn_mk_sgemm_nt, fnn_mk_sgemm_tn)
from ._conv_kernels cimport *


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
    """True when float32 convolution GEMMs run on the microkernel (AVX2 or AVX-512 levels)."""
    return bool(FNN_MK_AVAILABLE)


def _conv_kernels_available():
    """True when this level has the AVX-512 convolution kernels (implicit, direct, sub-pixel
    routes); below it convolutions take the im2col routes on the level's GEMM."""
    return bool(FNN_CONV_KERNELS)


def _require_conv_kernels(route):
    """A route entry point's guard: its kernels are not in this level's module."""
    if not FNN_CONV_KERNELS:
        raise RuntimeError(f"{route}: the AVX-512 convolution kernels are not in this ISA "
                           f"level's module (_conv_kernels_available() is False)")


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
        if FNN_CONV_KERNELS and sw <= 2:
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
        if FNN_CONV_KERNELS and O <= 32 and P * O < 2147483647:
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
    _require_conv_kernels("_direct_s2_forward")
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
    if not (_implicit_sn and x.dtype == np.float32 and FNN_CONV_KERNELS and (sh > 1 or sw > 1)
            and kh <= 32 and kw <= 32):
        return False
    # int32 gather offsets: a panel spans at most 32 // P + 2 samples
    if (32 // max(1, oh * ow) + 2) * c * h * w >= 2 ** 31:
        return False
    return _implicit_sn_force or c * kh * kw >= 32


def _strided_forward(x, weight, bias, out, int sh, int sw, int ph, int pw):
    """out := conv2d(x) + bias on the implicit strided route: stride 2 with 32 channels or more
    on the direct kernel (_direct_s2_forward), the rest on fnn_mk_conv_sn's gathered panels."""
    _require_conv_kernels("_strided_forward")
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
    if not (_implicit_dw_on and x.dtype == np.float32 and FNN_CONV_KERNELS
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
    _require_conv_kernels("_implicit_dw")
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
    return bool(fnn_set_dwt_narrow(on)) if FNN_CONV_KERNELS else on


def _dwt_s1_fits(x, int o, int c, int w, int kh, int kw, int sh, int sw, int ow):
    """Whether a float32 weight gradient takes fnn_mk_conv_dwt_s1: stride 1, an output as wide
    as the input (the im2col rows are shifted flat copies of the planes), kernels up to 32 (its
    mask tables), at least 8 im2col rows (a tile) and 16 output channels, the lanes of its
    panels (LeNet's 1->6 5x5, 2 threads: 1.94 ms, the im2col route 0.56; 16->8 3x3 at 14x14
    0.96 / 0.85, 16->16 0.99 / 1.04, 16->24 0.99 / 1.23)."""
    return (_dwt_s1_on and x.dtype == np.float32 and FNN_CONV_KERNELS and sh == 1 and sw == 1
            and ow == w and kh <= 32 and kw <= 32 and c * kh * kw >= 8 and o >= 16
            and <Py_ssize_t>c * x.shape[2] * w < 2 ** 31)


def _dwt_s1(x, g, dw, db, int ph, int pw):
    """dw (O, C, KH, KW) += g (N, O, OH, W) @ im2col(x).T at stride 1 (OW == W), and db += g's
    channel sums (in double), on gemm_threads' count. With at least 16 im2col rows per thread
    the threads own contiguous blocks of rows (dw's columns) over all pixels, so the result does
    not depend on their number; with fewer (a first layer's 1 or 3 channels: 9 or 27 rows) they
    split the batch's samples, each into its own zeroed copy, added in thread order after.
    The kernel accumulates into dw transposed (C*KH*KW, O), copied in and out here."""
    _require_conv_kernels("_dwt_s1")
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
    return (_subpixel_on and x.dtype == np.float32 and FNN_CONV_KERNELS and (sh > 1 or sw > 1)
            and (_subpixel_force or (c >= 16 and n * oh * ow >= 512)))


def _subpixel_backward_data(g, weight, bias, out, int sh, int sw, int ph, int pw,
                            _DwJob beside=None):
    """out (N, C, H, W) := conv2d's input gradient for output gradient g (N, O, OH, OW) and
    weight (O, C, KH, KW) (+ bias[c]), float32, by phases (see _subpixel_driver). ``beside``:
    a weight gradient whose panel tasks go first into this pass's pool of tasks (the threads
    take both kinds dynamically: a thread's dW is its share of a GEMM that scales poorly when
    split finer, and the dx tasks even the two out)."""
    _require_conv_kernels("_subpixel_backward_data")
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
    return bool(fnn_set_panel_direct(on)) if FNN_CONV_KERNELS else on


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
    if (_implicit_s1 and _widen_s1 and x.dtype == np.float32 and FNN_CONV_KERNELS and sh == 1
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
    if (_implicit_s1 and x.dtype == np.float32 and FNN_CONV_KERNELS and sh == 1 and sw == 1 and ow == w
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
    cdef bint dx_as_forward = (dx is not None and x.dtype == np.float32 and FNN_CONV_KERNELS
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
