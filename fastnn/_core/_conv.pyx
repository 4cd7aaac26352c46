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


# The routes, one unit each (see the docstring); the order matters only for the cdef class
# _DwJob, declared before the sub-pixel route takes one.
include "_conv_common.pxi"
include "_conv_im2col.pxi"
include "_conv_s1.pxi"
include "_conv_strided.pxi"
include "_conv_implicit_dw.pxi"
include "_conv_direct_s2.pxi"
include "_conv_dwt_s1.pxi"
include "_conv_subpixel.pxi"
include "_conv_pixel.pxi"


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
