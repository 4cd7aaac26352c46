"""Convolution: conv2d and conv_transpose2d, forward and backward, as a package of named routes.

A route is one way to compute one pass (forward, dx or dW) of a convolution; its name is in
fastnn._core.routes.ROUTES (with the lowest ISA level that has it). This module is one extension
(compiled once per ISA level) made of one unit per route family, each a ``_conv_<route>.pxi``
included below with its forward, dx and dW where it has them:

    _conv_common.pxi       the GEMM (microkernel or BLAS), element loops, chunking, workspaces
    _conv_im2col.pxi       im2col_forward, col2im, im2col_dw: chunked im2col + GEMM (any level,
                           any dtype; the fallback of every other route)
    _conv_s1.pxi           s1_implicit, s1_across_samples, s1_widened: stride-1 forwards (and
                           stride-1 dx, the forward of the flipped kernel) packed from x
    _conv_strided.pxi      strided_gathered: strided forwards on panels gathered from x
    _conv_direct_s2.pxi    direct_s2_forward/per_sample|batch, direct_s2_dw: stride 2 on a padded x
    _conv_implicit_dw.pxi  implicit_dw/panels|pixels: dW on gathered panels (the _DwJob classes)
    _conv_dwt_s1.pxi       dwt_s1/rows|samples: stride-1 same-width dW
    _conv_subpixel.pxi     subpixel, subpixel/beside_dw: strided backward-data by output phases
    _conv_pixel.pxi        pixel_transpose: conv_transpose2d of a 1x1 image as one dense GEMM
    _conv_winograd.pxi     winograd: 3x3 stride-1 float32 forwards (and dx) by Winograd F(2x2,3x3)
                           or F(4x4,3x3) (kernels/winograd.h); winograd_dw: their weight
                           gradient by F(2x2,3x3) with the roles swapped
    _conv_winograd_s2_dw.pxi  winograd_s2_dw: 4x4 stride-2 float32 weight gradients by
                           F(2x2,4x4) per stride phase with the roles swapped

conv_transpose2d's forward is conv2d's backward-data pass and its dx is conv2d's forward, so the
same routes serve both. The entry points at the end validate their arguments, ask the planner
(fastnn._core.conv_plan: geometry, dtype, ISA level and thread count -> a route name per pass,
cached per geometry) and dispatch on the names; they are the only callers of the units.
Tuning constants and switches are knobs of fastnn._core.tuning (TUNING below, and conv_plan's).

Adding a route: a unit ``_conv_<route>.pxi`` included here, its name in routes.ROUTES, its
eligibility and its rule in conv_plan.py, and a branch on its name in the entry point.

Why Cython: the GEMMs are nogil calls on raw pointers into caller-owned and workspace buffers
(the microkernel of kernels/microkernel.h, or scipy.linalg.cython_blas), and the element loops are
OpenMP prange loops; one level of parallelism at a time (OpenMP loops and BLAS threads never
nest). Every output is one sum in a fixed order whatever the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
cimport openmp
from libc.string cimport memcpy, memset
cimport numpy as cnp
import threading

import numpy as np

from ._blas cimport gemm_rm, gemm_threads, took, tracing
from .. import conv_plan as _planner
from .._checks import (activation_code, check_float, check_like, check_optional_out, check_out,
                      check_pair, conv_out_size)

cnp.import_array()

# Loops over fewer elements than this run on the calling thread: waking an OpenMP team costs
# more than the copy, and on a busy machine a team barrier can wait a whole scheduler slice.
cdef enum:
    PARALLEL_MIN_ELEMENTS = 32768

# ---- float32 GEMM microkernel (kernels/microkernel.h; the conv kernels: kernels/conv.h) --------
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
include "_conv_winograd.pxi"
include "_conv_winograd_s2.pxi"
include "_conv_winograd_s2_dw.pxi"


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


# ---- tuning knobs (fastnn._core.tuning) ---------------------------------------------------------
# The knobs the compiled code reads without the GIL; the route choices' knobs are conv_plan's.
TUNING = {
    "conv_dynamic_schedule": "threads take the implicit and sub-pixel routes' tasks dynamically "
                             "(else static shares); the same bits",
    "conv_col_chunk_bytes": "target size in bytes of one chunk's im2col matrix",
    "conv_dw2_tasks_per_thread": "direct_s2_dw's tasks per thread (1: the static split); the "
                                 "same bits",
    "conv_dwt_narrow": "dwt_s1's panels of at most 16 channels on 16-lane tiles (else 32-lane)",
    "conv_panel_direct": "the cross-sample panels of fnn_mk_conv_s1x/fnn_mk_subpixel with up to 8 "
                         "rows (4 at the AVX2 level) multiplied straight from their masked loads "
                         "(else packed)",
}


def _tune(str name, value):
    """fastnn._core.tuning's access to TUNING: sets knob ``name`` to ``value`` (None: leaves it)
    and returns the old value."""
    global _dynamic, _col_chunk_bytes, _dw2_tasks_per_thread
    if name == "conv_dynamic_schedule":
        old = bool(_dynamic)
        if value is not None:
            _dynamic = value
    elif name == "conv_col_chunk_bytes":
        old = _col_chunk_bytes
        if value is not None:
            _col_chunk_bytes = max(1, value)
    elif name == "conv_dw2_tasks_per_thread":
        old = _dw2_tasks_per_thread
        if value is not None:
            _dw2_tasks_per_thread = max(1, value)
    elif name == "conv_dwt_narrow":
        if not FNN_CONV_KERNELS:
            return True if value is None else bool(value)
        old = bool(fnn_set_dwt_narrow(True))
        fnn_set_dwt_narrow(old if value is None else bool(value))
    elif name == "conv_panel_direct":
        if not FNN_CONV_KERNELS:
            return True if value is None else bool(value)
        old = bool(fnn_set_panel_direct(True))
        fnn_set_panel_direct(old if value is None else bool(value))
    else:
        raise ValueError(f"_conv: no knob {name!r}")
    return old


# ---- the entry points: validate, plan (conv_plan), dispatch on the route names -----------------

# the level of this module's kernels (a planner argument: the module may be another level's)
_LEVEL = ("baseline", "avx2", "avx512")[FNN_ISA]


cdef inline int _threads() noexcept:
    return openmp.omp_get_max_threads()


def _forward(str route, x, weight, bias, out, int sh, int sw, int ph, int pw, int act,
             double slope):
    """out := act(conv2d(x) + bias) on forward route ``route`` (conv2d's forward, its stride-1 dx
    as a forward of the flipped kernel, conv_transpose2d's dx)."""
    took(route)
    if route == "winograd" or route == "winograd/small" or route == "winograd/f4" \
            or route == "winograd/small4":
        if route == "winograd/small" or route == "winograd/small4":
            if _winograd_small_forward(x, weight, bias, out, ph, pw, act, slope,
                                       4 if route == "winograd/small4" else 2) is not None:
                return out
        elif _winograd_forward(x, weight, bias, out, ph, pw, act, slope, 0,
                               4 if route == "winograd/f4" else 2) is not None:
            return out
        route = _planner.exact_forward(
            x.shape[0], x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
            weight.shape[3], sh, sw, ph, pw, out.shape[2], out.shape[3], True, _LEVEL, _threads())
        took(route)
    elif route == "winograd_s2" or route == "winograd_s2/3x3":
        if _winograd_s2_forward(x, weight, bias, out, ph, pw, act, slope) is not None:
            return out
        route = _planner.exact_forward(
            x.shape[0], x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
            weight.shape[3], sh, sw, ph, pw, out.shape[2], out.shape[3], True, _LEVEL, _threads())
        took(route)
    if route.startswith("s1_"):
        return _activate_all(_s1_forward(route, x, weight, bias, out, ph, pw), act, slope)
    if route.startswith("direct_s2_forward/"):
        return _direct_s2_forward(x, weight, bias, out, ph, pw,
                                  route == "direct_s2_forward/per_sample", act, slope)
    if route == "strided_gathered":
        return _activate_all(_strided_gathered_forward(x, weight, bias, out, sh, sw, ph, pw),
                             act, slope)
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int oh = out.shape[2], ow = out.shape[3]
    nt, nb = _plan(n, c * kh * kw * oh * ow * x.itemsize, n * o * c * kh * kw * oh * ow)
    col, buf, _ = _workspaces(x.dtype, nb, c * kh * kw, o, oh * ow, nt)
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    cdef void* pcol = _ptr(col)
    cdef void* pbuf = _ptr(buf)
    cdef int NB = nb, NT = nt
    if x.dtype == np.float32:
        with nogil:
            _im2col_driver(<float*>px, n, c, h, w, <float*>pw_, o, kh, kw, sh, sw, ph, pw, oh, ow,
                           <float*>pb, <float*>po, NULL, NULL, NB, NT, <float*>pcol, <float*>pbuf,
                           NULL, act, slope)
    else:
        with nogil:
            _im2col_driver(<double*>px, n, c, h, w, <double*>pw_, o, kh, kw, sh, sw, ph, pw, oh,
                           ow, <double*>pb, <double*>po, NULL, NULL, NB, NT, <double*>pcol,
                           <double*>pbuf, NULL, act, slope)
    return out


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
    plan = _planner.conv2d(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow,
                           x.dtype == np.float32, False, _LEVEL, _threads())
    return _forward(plan.forward, x, weight, bias, out, sh, sw, ph, pw, act, slope)


def _im2col_passes(x, weight, dy, dx, dweight, dbias, int sh, int sw, int ph, int pw,
                   bint dw_nt):
    """conv2d_backward's im2col routes: dweight += dy @ im2col(x).T (im2col_dw/*), dx :=
    col2im(weight.T @ dy) (col2im/*), dbias += dy's channel sums (None outputs skipped)."""
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int oh = dy.shape[2], ow = dy.shape[3], NB = 1, NT = 1
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
    if x.dtype == np.float32:
        with nogil:
            if pdw != NULL:
                _im2col_driver(<float*>px, n, c, h, w, <float*>pw_, o, kh, kw, sh, sw, ph, pw, oh,
                               ow, NULL, NULL, <float*>pdy, <float*>pdw, NB, NT, <float*>pcol,
                               <float*>pbuf, <float*>pdwa, 0, 0, dw_nt)
            if pdx != NULL:
                _col2im_driver(<float*>pdy, n, o, oh, ow, <float*>pw_, c, kh, kw, sh, sw, ph, pw,
                               h, w, NULL, <float*>pdx, NB, NT, <float*>pcol, <float*>pbuf)
            if pdb != NULL:
                _channel_sum(<float*>pdy, n, o, <Py_ssize_t>oh * ow, <float*>pdb)
    else:
        with nogil:
            if pdw != NULL:
                _im2col_driver(<double*>px, n, c, h, w, <double*>pw_, o, kh, kw, sh, sw, ph, pw,
                               oh, ow, NULL, NULL, <double*>pdy, <double*>pdw, NB, NT,
                               <double*>pcol, <double*>pbuf, <double*>pdwa, 0, 0, dw_nt)
            if pdx != NULL:
                _col2im_driver(<double*>pdy, n, o, oh, ow, <double*>pw_, c, kh, kw, sh, sw, ph,
                               pw, h, w, NULL, <double*>pdx, NB, NT, <double*>pcol, <double*>pbuf)
            if pdb != NULL:
                _channel_sum(<double*>pdy, n, o, <Py_ssize_t>oh * ow, <double*>pdb)


def conv2d_backward(x, weight, dy, dx, dweight, dbias, stride, padding, relu=False,
                    negative_slope=None):
    """dx := conv2d's input gradient (col2im of weight.T @ dy); dweight += dy @ im2col(x).T;
    dbias += dy.sum((0, 2, 3)). None outputs are skipped. ``relu`` (with ``negative_slope``
    >= 0, a leaky ReLU's): dx then goes through the backward of the activation whose output is
    x (dx where x > 0, else 0, or negative_slope * dx), bitwise relu_backward(x, dx, dx)
    (leaky_relu_backward) run after; folded into the dx stores where the route allows."""
    where = "conv2d_backward"
    act, slope = activation_code(where, relu, negative_slope)
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
    plan = _planner.conv2d(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow,
                           x.dtype == np.float32, dweight is not None, _LEVEL, _threads())
    dx_out = dx
    masked = act == 0 or dx is None
    if dx is not None and (plan.dx == "winograd_s2_dx" or plan.dx == "winograd_s2_dx/3x3"):
        took(plan.dx)
        if _winograd_s2_dx(dy, weight, None, dx, ph, pw, 0, x if act else None, act,
                           slope) is not None:
            dx = None
            masked = True
        else:  # a NaN or infinite value: recomputed where a non-finite dy reaches fewer
            took("subpixel")
            _subpixel_backward_data(dy, weight, None, dx, sh, sw, ph, pw, None)
            dx = None
    if dx is not None and plan.dx.startswith("subpixel"):
        beside = None
        if dweight is not None and plan.dx == "subpixel/beside_dw":
            # dW's task groups and dx's tasks in one pool
            took(plan.dw)
            beside = _dw_job(plan.dw, x, dy, dweight, dbias, sh, sw, ph, pw,
                             gemm_threads(<Py_ssize_t>n * o * c * kh * kw * oh * ow))
            dweight = dbias = None
        took(plan.dx)
        _subpixel_backward_data(dy, weight, None, dx, sh, sw, ph, pw, beside)
        dx = None
    elif dx is not None and not plan.dx.startswith("col2im/"):
        # the stride-1 dx is the forward convolution of dy with the flipped, channel-swapped
        # kernel and padding K-1-p: a GEMM O*KH*KW deep, where col2im's weight.T @ dy is O deep
        flipped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        _forward(plan.dx, dy, flipped, None, dx, 1, 1, kh - 1 - ph, kw - 1 - pw, 0, 0)
        dx = None
    dw_route = plan.dw
    if dweight is not None and dw_route == "winograd_s2_dw":
        if _winograd_s2_dw(x, dy, dweight, dbias, ph, pw) is not None:
            dweight = dbias = None
        else:  # a NaN or infinite tap: recomputed where a non-finite input reaches fewer
            dw_route = _planner.exact_dw(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, True,
                                         _LEVEL, _threads())
    if dweight is not None and dw_route == "winograd_dw":
        if _winograd_dw(x, dy, dweight, dbias, ph, pw) is not None:
            dweight = dbias = None
        else:  # a NaN or infinite tap: recomputed where a non-finite input reaches fewer
            dw_route = _planner.exact_dw(n, c, h, w, o, kh, kw, sh, sw, ph, pw, oh, ow, True,
                                         _LEVEL, _threads())
    if dweight is not None and dw_route.startswith("dwt_s1/"):
        took(dw_route)
        _dwt_s1(x, dy, dweight, dbias, ph, pw, dw_route == "dwt_s1/samples")
        dweight = dbias = None
    elif dweight is not None and not dw_route.startswith("im2col_dw/"):
        took(dw_route)
        _implicit_dw(dw_route, x, dy, dweight, dbias, sh, sw, ph, pw)
        dweight = dbias = None
    if dweight is not None:
        took(dw_route)
    if dx is not None:
        took(plan.dx)
    _im2col_passes(x, weight, dy, dx, dweight, dbias, sh, sw, ph, pw, dw_route == "im2col_dw/nt")
    if not masked:  # the activation's backward after dx, in place (elementwise)
        from .. import activation, basic
        if act == 1:
            basic.relu_backward(x, dx_out, dx_out)
        else:
            activation.leaky_relu_backward(x, dx_out, slope, dx_out)
    return dx_out


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
    plan = _planner.conv_transpose2d(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow,
                                     x.dtype == np.float32, _LEVEL, _threads())
    took(plan.forward)
    if plan.forward == "winograd_s2_dx" or plan.forward == "winograd_s2_dx/3x3":
        if _winograd_s2_dx(x, weight, bias, out, ph, pw) is not None:
            return out
        took("subpixel")  # a NaN or infinite value: the exact route
        return _subpixel_backward_data(x, weight, bias, out, sh, sw, ph, pw)
    if plan.forward == "subpixel":
        return _subpixel_backward_data(x, weight, bias, out, sh, sw, ph, pw)
    if plan.forward == "pixel_transpose":
        return _pixel_transpose_forward_call(x, weight, bias, out)
    # The transposed convolution of x is the backward-data pass of the conv2d that maps an
    # (N, Cout, OH, OW) image to x's (N, Cin, H, W) grid with the same weight.
    nt, nb = _plan(n, cout * kh * kw * h * w * x.itemsize, n * cin * cout * kh * kw * h * w)
    col, buf, _ = _workspaces(x.dtype, nb, cout * kh * kw, cin, h * w, nt)
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    cdef void* pcol = _ptr(col)
    cdef void* pbuf = _ptr(buf)
    cdef int N = n, CIN = cin, H = h, W = w, COUT = cout, KH = kh, KW = kw, SH = sh, SW = sw
    cdef int PH = ph, PW = pw, OH = oh, OW = ow, NB = nb, NT = nt
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
    plan = _planner.conv_transpose2d(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh, ow,
                                     x.dtype == np.float32, _LEVEL, _threads())
    if plan.dx == "pixel_transpose":
        took("pixel_transpose")
        return _pixel_transpose_backward_call(x, weight, dy, dx, dweight, dbias)
    cdef int N = n, CIN = cin, H = h, W = w, COUT = cout, KH = kh, KW = kw, SH = sh, SW = sw
    cdef int PH = ph, PW = pw, OH = oh, OW = ow, NB = 1, NT = 1
    cdef bint dw_nt = plan.dw == "im2col_dw/nt"
    if dx is not None and not plan.dx.startswith("im2col_forward/"):
        # dx = conv2d(dy, weight) on an implicit strided route; dW keeps its own pass
        _forward(plan.dx, dy, weight, None, dx, sh, sw, ph, pw, 0, 0)
        dx_done = True
    else:
        dx_done = False
    dw_route = plan.dw
    if dweight is not None and dw_route == "winograd_s2_dw":
        if _winograd_s2_dw(dy, x, dweight, None, ph, pw) is not None:
            dweight = None
        else:  # a NaN or infinite tap: the exact route
            dw_route = _planner.exact_dw_convt(n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, oh,
                                               ow, True, _LEVEL, _threads())
    if dweight is not None and not dw_route.startswith("im2col_dw/"):
        # dweight is conv2d's weight gradient of the convolution dy -> x (weight (Cin, Cout, ..))
        took(dw_route)
        _implicit_dw(dw_route, dy, x, dweight, None, sh, sw, ph, pw)
        dweight = None
    dw_nt = dw_route == "im2col_dw/nt"
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pdy = _ptr(dy)
    cdef void* pdx = NULL if dx_done else _ptr(dx)
    cdef void* pdw = _ptr(dweight)
    cdef void* pdb = _ptr(dbias)
    cdef void* pcol = NULL
    cdef void* pbuf = NULL
    cdef void* pdwa = NULL
    if dweight is not None or pdx != NULL:
        NT, NB = _plan(n, cout * kh * kw * h * w * x.itemsize, n * cin * cout * kh * kw * h * w)
        col, buf, dw_acc = _workspaces(x.dtype, NB, cout * kh * kw, cin, h * w, NT,
                                       cin * cout * kh * kw)
        pcol, pbuf, pdwa = _ptr(col), _ptr(buf), _ptr(dw_acc)
    if pdw != NULL:
        took(dw_route)
    if pdx != NULL:
        took(plan.dx)
    # One pass over im2col(dy) serves both: dx is the conv2d forward of dy and dweight its
    # weight gradient with x in the role of the output gradient.
    if x.dtype == np.float32:
        with nogil:
            if pdx != NULL or pdw != NULL:
                _im2col_driver(<float*>pdy, N, COUT, OH, OW, <float*>pw_, CIN, KH, KW, SH, SW, PH, PW,
                               H, W, NULL, <float*>pdx, <float*>px, <float*>pdw, NB, NT, <float*>pcol,
                               <float*>pbuf, <float*>pdwa, 0, 0, dw_nt)
            if pdb != NULL:
                _channel_sum(<float*>pdy, N, COUT, <Py_ssize_t>OH * OW, <float*>pdb)
    else:
        with nogil:
            if pdx != NULL or pdw != NULL:
                _im2col_driver(<double*>pdy, N, COUT, OH, OW, <double*>pw_, CIN, KH, KW, SH, SW, PH, PW,
                               H, W, NULL, <double*>pdx, <double*>px, <double*>pdw, NB, NT,
                               <double*>pcol, <double*>pbuf, <double*>pdwa, 0, 0, dw_nt)
            if pdb != NULL:
                _channel_sum(<double*>pdy, N, COUT, <Py_ssize_t>OH * OW, <double*>pdb)
    return dx
