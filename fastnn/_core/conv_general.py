"""General 2-D convolution: dilation, groups and asymmetric zero padding (NCHW).

The dense case (dilation 1, one group, symmetric padding) has its own tuned kernels in
``_conv.pyx``; the layers send everything else here. Two routes, chosen by the convolution
planner (``conv_plan.plan_conv2d_general``, through :func:`conv2d_route`):

``depthwise``
    one input channel per group (groups == C, O = m*C): direct sliding-window loops, in parallel
    over planes (forward and dX) and output channels (dW). Stride 1 works on zero-padded planes
    where each tap is one long contiguous update; other strides go row by row. A GEMM would have
    m rows (a GEMV per plane) and an im2col copy k*k times the input.
``im2col``
    per sample, per group: a dilated, strided, padded im2col of the group's channels and a BLAS
    GEMM (``np.dot`` in numba calls scipy's BLAS, pinned to one thread), with threads on samples.
    dW accumulates per fixed block of samples (the block count depends on N only, so results do
    not depend on the thread count), then the blocks are summed.

``padding`` is ``(top, bottom, left, right)``; an int or an ``(h, w)`` pair means symmetric.
Output size: ``OH = (H + top + bottom - dh*(KH - 1) - 1) // sh + 1`` (likewise OW), as
``torch.nn.functional.conv2d``.
"""
import numpy as np
from numba import njit, prange

from . import conv_plan, threads
from ._checks import check_float, check_optional_out, check_out, check_pair
from .activation import pick, serial_twin

threads.sync_numba_threads()
# np.dot in the kernels below calls scipy's BLAS from inside OpenMP regions: one thread only
import scipy.linalg.cython_blas  # noqa: E402,F401
threads.pin_kernel_blas()

ROUTES = conv_plan.GENERAL_ROUTES
# dW of the im2col route is summed over at most this many blocks of samples
_DW_BLOCKS = 8


# ----------------------------------------------------------------------------------------------
# compiled kernels; no validation here
# ----------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _span(off, s, size, n):
    """[j0, j1): the j in [0, n) with 0 <= j*s + off < size"""
    j0 = 0 if off >= 0 else (-off + s - 1) // s
    j1 = (size - 1 - off) // s + 1
    if j1 > n:
        j1 = n
    if j1 < j0:
        j1 = j0
    return j0, j1


@njit(cache=True)
def _spans(kw, dw, pl, sw, wd, ow):
    """_span of every kernel column b (offset b*dw - pl), computed once per call"""
    spans = np.empty((kw, 2), dtype=np.int64)
    for b in range(kw):
        spans[b, 0], spans[b, 1] = _span(b * dw - pl, sw, wd, ow)
    return spans


# The kernels run their inner loops over row slices indexed from 0: numba then emits no
# negative-index wrap-around and LLVM vectorises the row updates (a computed signed offset,
# y[base + j], keeps the wrap-around check in the loop).

@njit(cache=True)
def _im2col_group(x, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, col):
    """col[(c*kh + a)*kw + b, i*ow + j] := x[c0 + c, i*sh - pt + a*dh, j*sw - pl + b*dw] (0 outside)"""
    h, w = x.shape[1], x.shape[2]
    for c in range(cg):
        for a in range(kh):
            for b in range(kw):
                row = (c * kh + a) * kw + b
                off = b * dw - pl
                j0, j1 = _span(off, sw, w, ow)
                for i in range(oh):
                    crow = col[row, i * ow:(i + 1) * ow]
                    r = i * sh - pt + a * dh
                    if r < 0 or r >= h or j1 == j0:
                        crow[:] = 0.0
                        continue
                    crow[:j0] = 0.0
                    crow[j1:] = 0.0
                    inner = crow[j0:j1]
                    if sw == 1:   # a step-less slice is contiguous: the copy vectorises
                        xrow = x[c0 + c, r, j0 + off:j1 + off]
                        for j in range(j1 - j0):
                            inner[j] = xrow[j]
                    else:
                        xstep = x[c0 + c, r, j0 * sw + off:(j1 - 1) * sw + off + 1:sw]
                        for j in range(j1 - j0):
                            inner[j] = xstep[j]


@njit(cache=True)
def _col2im_group(col, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, x):
    """the adjoint of _im2col_group: x[c0 + c, ...] += the columns (x zeroed by the caller)"""
    h, w = x.shape[1], x.shape[2]
    for c in range(cg):
        for a in range(kh):
            for b in range(kw):
                row = (c * kh + a) * kw + b
                off = b * dw - pl
                j0, j1 = _span(off, sw, w, ow)
                if j1 == j0:
                    continue
                for i in range(oh):
                    r = i * sh - pt + a * dh
                    if r < 0 or r >= h:
                        continue
                    crow = col[row, i * ow + j0:i * ow + j1]
                    if sw == 1:
                        xrow = x[c0 + c, r, j0 + off:j1 + off]
                        for j in range(j1 - j0):
                            xrow[j] += crow[j]
                    else:
                        xstep = x[c0 + c, r, j0 * sw + off:(j1 - 1) * sw + off + 1:sw]
                        for j in range(j1 - j0):
                            xstep[j] += crow[j]


@njit(parallel=True, cache=True)
def _im2col_forward(x, w3, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, out4):
    """out4[n, g] := w3[g] @ im2col(x[n], group g) (+ bias); w3 (G, O/G, C/G*kh*kw),
    out4 (N, G, O/G, OH*OW)"""
    n_samples, groups, og = out4.shape[0], out4.shape[1], out4.shape[2]
    cg = x.shape[1] // groups
    for n in prange(n_samples):
        col = np.empty((w3.shape[2], oh * ow), dtype=x.dtype)
        for g in range(groups):
            _im2col_group(x[n], g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, col)
            y = out4[n, g]
            np.dot(w3[g], col, y)
            if has_bias:
                for o in range(og):
                    bv = bias[g * og + o]
                    for j in range(oh * ow):
                        y[o, j] += bv


@njit(parallel=True, cache=True)
def _im2col_backward(x, w3, dy4, need_dx, need_dw, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow,
                     n_blocks, dx, dw_blocks):
    """dx[n] := col2im(w3[g].T @ dy4[n, g]) over the groups; dw_blocks[b, g] := sum over the
    samples of block b (of n_blocks) of dy4[n, g] @ im2col(x[n], group g).T"""
    n_samples, groups = dy4.shape[0], dy4.shape[1]
    cg = x.shape[1] // groups
    k = w3.shape[2]
    for blk in prange(n_blocks):
        col = np.empty((k, oh * ow), dtype=x.dtype)
        acc = np.empty((w3.shape[1], k), dtype=x.dtype)
        n0 = blk * n_samples // n_blocks
        n1 = (blk + 1) * n_samples // n_blocks
        if need_dw:
            dw_blocks[blk] = 0.0
        for n in range(n0, n1):
            if need_dx:
                dx[n] = 0.0
            for g in range(groups):
                if need_dw:
                    _im2col_group(x[n], g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, col)
                    np.dot(dy4[n, g], col.T, acc)
                    dw_blocks[blk, g] += acc
                if need_dx:
                    np.dot(w3[g].T, dy4[n, g], col)
                    _col2im_group(col, g * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, dx[n])


@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, bias, has_bias, n_in, h, wd, n_out, oh, ow, kh, kw, sh, sw, pt, pl,
                       dh, dw, out):
    """out[n, o, i, j] := bias[o] + sum_{a, b} w[o, a, b] * x[n, o // m, i*sh - pt + a*dh,
    j*sw - pl + b*dw], m = O / C (x, w, out flat)"""
    m = n_out // n_in
    spans = _spans(kw, dw, pl, sw, wd, ow)
    n_samples = out.shape[0] // (n_out * oh * ow)
    for p in prange(n_samples * n_out):
        n = p // n_out
        o = p - n * n_out
        xplane = (n * n_in + o // m) * h * wd
        bv = bias[o] if has_bias else 0.0
        for i in range(oh):
            yb = (p * oh + i) * ow
            out[yb:yb + ow] = bv
            for a in range(kh):
                r = i * sh - pt + a * dh
                if r < 0 or r >= h:
                    continue
                xb = xplane + r * wd
                for b in range(kw):
                    wv = w[(o * kh + a) * kw + b]
                    off = b * dw - pl
                    j0, j1 = spans[b, 0], spans[b, 1]
                    yrow = out[yb + j0:yb + j1]
                    if sw == 1:   # a step-less slice: contiguous, so the loop vectorises
                        xrow = x[xb + j0 + off:xb + j1 + off]
                        for j in range(j1 - j0):
                            yrow[j] += wv * xrow[j]
                    else:
                        xstep = x[xb + j0 * sw + off:xb + (j1 - 1) * sw + off + 1:sw]
                        for j in range(j1 - j0):
                            yrow[j] += wv * xstep[j]


@njit(parallel=True, cache=True)
def _depthwise_backward_data(dy, w, n_in, h, wd, n_out, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw,
                             dx):
    """dx[n, c] := sum over the m outputs o of channel c of the adjoint of _depthwise_forward"""
    m = n_out // n_in
    spans = _spans(kw, dw, pl, sw, wd, ow)
    n_samples = dx.shape[0] // (n_in * h * wd)
    for p in prange(n_samples * n_in):
        n = p // n_in
        c = p - n * n_in
        xplane = p * h * wd
        dx[xplane:xplane + h * wd] = 0.0
        for o in range(c * m, c * m + m):
            yplane = (n * n_out + o) * oh * ow
            for i in range(oh):
                yb = yplane + i * ow
                for a in range(kh):
                    r = i * sh - pt + a * dh
                    if r < 0 or r >= h:
                        continue
                    xb = xplane + r * wd
                    for b in range(kw):
                        wv = w[(o * kh + a) * kw + b]
                        off = b * dw - pl
                        j0, j1 = spans[b, 0], spans[b, 1]
                        drow = dy[yb + j0:yb + j1]
                        if sw == 1:
                            xrow = dx[xb + j0 + off:xb + j1 + off]
                            for j in range(j1 - j0):
                                xrow[j] += wv * drow[j]
                        else:
                            xstep = dx[xb + j0 * sw + off:xb + (j1 - 1) * sw + off + 1:sw]
                            for j in range(j1 - j0):
                                xstep[j] += wv * drow[j]


@njit(parallel=True, cache=True)
def _depthwise_backward_weight(x, dy, n_in, h, wd, n_out, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw,
                               dweight):
    """dweight[o, a, b] += sum_{n, i, j} dy[n, o, i, j] * x[n, o // m, i*sh - pt + a*dh,
    j*sw - pl + b*dw]; per tap, products summed by output column in float64, then the columns"""
    m = n_out // n_in
    spans = _spans(kw, dw, pl, sw, wd, ow)
    n_samples = dy.shape[0] // (n_out * oh * ow)
    for o in prange(n_out):
        c = o // m
        acc = np.zeros(kh * kw * ow, dtype=np.float64)
        for n in range(n_samples):
            yplane = (n * n_out + o) * oh * ow
            xplane = (n * n_in + c) * h * wd
            for i in range(oh):
                yb = yplane + i * ow
                for a in range(kh):
                    r = i * sh - pt + a * dh
                    if r < 0 or r >= h:
                        continue
                    xb = xplane + r * wd
                    for b in range(kw):
                        t = (a * kw + b) * ow
                        off = b * dw - pl
                        j0, j1 = spans[b, 0], spans[b, 1]
                        arow = acc[t + j0:t + j1]
                        drow = dy[yb + j0:yb + j1]
                        if sw == 1:
                            xrow = x[xb + j0 + off:xb + j1 + off]
                            for j in range(j1 - j0):
                                arow[j] += drow[j] * xrow[j]
                        else:
                            xstep = x[xb + j0 * sw + off:xb + (j1 - 1) * sw + off + 1:sw]
                            for j in range(j1 - j0):
                                arow[j] += drow[j] * xstep[j]
        for t in range(kh * kw):
            total = 0.0
            for j in range(ow):
                total += acc[t * ow + j]
            dweight[o * kh * kw + t] += total


# Stride 1: each plane is copied into a zero-padded buffer of width Wp = W + left + right, and
# the output is computed on rows of that same width (the last Wp - OW columns of each are
# discarded). A tap (a, b) is then ONE contiguous update of (OH - 1)*Wp + OW elements,
# acc[t] += w * xpad[a*dh*Wp + b*dw + t], instead of OH rows of OW: long loops that vectorise
# fully, where rows of a few dozen elements fall to the scalar remainder loop.

@njit(cache=True)
def _pad_plane(x, start, h, wd, pt, pl, wp, buf):
    """buf[(r + pt)*wp + pl + j] := x[start + r*wd + j] (buf's border left as it is)"""
    for r in range(h):
        dst = buf[(r + pt) * wp + pl:(r + pt) * wp + pl + wd]
        src = x[start + r * wd:start + (r + 1) * wd]
        for j in range(wd):
            dst[j] = src[j]


@njit(parallel=True, cache=True)
def _depthwise_s1_forward(x, w, bias, has_bias, n_in, h, wd, n_out, oh, ow, kh, kw, pt, pb, pl,
                          pr, dh, dw, out):
    """_depthwise_forward for stride 1, on padded planes; threads on input planes"""
    m = n_out // n_in
    hp, wp = h + pt + pb, wd + pl + pr
    span = (oh - 1) * wp + ow
    n_samples = out.shape[0] // (n_out * oh * ow)
    for p in prange(n_samples * n_in):
        n = p // n_in
        c = p - n * n_in
        xpad = np.zeros(hp * wp, dtype=x.dtype)
        _pad_plane(x, p * h * wd, h, wd, pt, pl, wp, xpad)
        acc = np.empty(span, dtype=x.dtype)
        for o in range(c * m, c * m + m):
            acc[:] = bias[o] if has_bias else 0.0
            for a in range(kh):
                for b in range(kw):
                    wv = w[(o * kh + a) * kw + b]
                    src = xpad[a * dh * wp + b * dw:a * dh * wp + b * dw + span]
                    for t in range(span):
                        acc[t] += wv * src[t]
            ybase = (n * n_out + o) * oh * ow
            for i in range(oh):
                yrow = out[ybase + i * ow:ybase + (i + 1) * ow]
                arow = acc[i * wp:i * wp + ow]
                for j in range(ow):
                    yrow[j] = arow[j]


@njit(parallel=True, cache=True)
def _depthwise_s1_backward_data(dy, w, n_in, h, wd, n_out, oh, ow, kh, kw, pt, pb, pl, pr, dh,
                                dw, dx):
    """_depthwise_backward_data for stride 1, on padded planes"""
    m = n_out // n_in
    hp, wp = h + pt + pb, wd + pl + pr
    span = (oh - 1) * wp + ow
    n_samples = dx.shape[0] // (n_in * h * wd)
    for p in prange(n_samples * n_in):
        n = p // n_in
        c = p - n * n_in
        dxpad = np.zeros(hp * wp, dtype=dx.dtype)
        dyext = np.zeros(span, dtype=dx.dtype)   # dy on rows of width wp; the rest stays 0
        for o in range(c * m, c * m + m):
            ybase = (n * n_out + o) * oh * ow
            for i in range(oh):
                drow = dyext[i * wp:i * wp + ow]
                src = dy[ybase + i * ow:ybase + (i + 1) * ow]
                for j in range(ow):
                    drow[j] = src[j]
            for a in range(kh):
                for b in range(kw):
                    wv = w[(o * kh + a) * kw + b]
                    dst = dxpad[a * dh * wp + b * dw:a * dh * wp + b * dw + span]
                    for t in range(span):
                        dst[t] += wv * dyext[t]
        for r in range(h):
            dst = dx[p * h * wd + r * wd:p * h * wd + (r + 1) * wd]
            src = dxpad[(r + pt) * wp + pl:(r + pt) * wp + pl + wd]
            for j in range(wd):
                dst[j] = src[j]


@njit(parallel=True, cache=True)
def _depthwise_s1_backward_weight(x, dy, n_in, h, wd, n_out, oh, ow, kh, kw, pt, pb, pl, pr, dh,
                                  dw, dweight):
    """_depthwise_backward_weight for stride 1: per tap, the products of the padded plane and dy
    on rows of width Wp accumulate elementwise in float64 over the samples (a vectorised
    update, not a reduction), then each tap's row is summed"""
    m = n_out // n_in
    hp, wp = h + pt + pb, wd + pl + pr
    span = (oh - 1) * wp + ow
    n_samples = dy.shape[0] // (n_out * oh * ow)
    for o in prange(n_out):
        c = o // m
        acc = np.zeros(kh * kw * span, dtype=np.float64)
        xpad = np.zeros(hp * wp, dtype=x.dtype)
        dyext = np.zeros(span, dtype=x.dtype)
        for n in range(n_samples):
            _pad_plane(x, (n * n_in + c) * h * wd, h, wd, pt, pl, wp, xpad)
            ybase = (n * n_out + o) * oh * ow
            for i in range(oh):
                drow = dyext[i * wp:i * wp + ow]
                src = dy[ybase + i * ow:ybase + (i + 1) * ow]
                for j in range(ow):
                    drow[j] = src[j]
            for a in range(kh):
                for b in range(kw):
                    arow = acc[(a * kw + b) * span:(a * kw + b + 1) * span]
                    src = xpad[a * dh * wp + b * dw:a * dh * wp + b * dw + span]
                    for t in range(span):
                        arow[t] += dyext[t] * src[t]
        for t in range(kh * kw):
            total = 0.0
            for e in range(t * span, (t + 1) * span):
                total += acc[e]
            dweight[o * kh * kw + t] += total


_im2col_forward_serial = serial_twin(_im2col_forward)
_im2col_backward_serial = serial_twin(_im2col_backward)
_depthwise_forward_serial = serial_twin(_depthwise_forward)
_depthwise_backward_data_serial = serial_twin(_depthwise_backward_data)
_depthwise_backward_weight_serial = serial_twin(_depthwise_backward_weight)
_depthwise_s1_forward_serial = serial_twin(_depthwise_s1_forward)
_depthwise_s1_backward_data_serial = serial_twin(_depthwise_s1_backward_data)
_depthwise_s1_backward_weight_serial = serial_twin(_depthwise_s1_backward_weight)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

def conv_padding(where, padding):
    """(top, bottom, left, right) from an int, an (h, w) pair or a 4-tuple, each >= 0."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        try:
            pads = tuple(int(p) for p in padding)
            if any(p != q for p, q in zip(pads, padding)):
                raise TypeError
        except (TypeError, ValueError):
            raise TypeError(f"{where}: padding must be an int, a pair or (top, bottom, left, "
                            f"right) of ints, got {padding!r}") from None
        if min(pads) < 0:
            raise ValueError(f"{where}: padding must be >= 0, got {pads}")
        return pads
    ph, pw = check_pair(where, "padding", padding, 0)
    return ph, ph, pw, pw


def conv2d_route(in_channels, out_channels, groups):
    """The route a grouped convolution takes (the planner's rule, ``conv_plan.plan_conv2d_general``):
    "depthwise" when every group has one input channel, else "im2col"."""
    return conv_plan.plan_conv2d_general(in_channels, groups)


def _geometry(where, x_shape, weight, stride, padding, dilation, groups):
    """Validated (stride, pads, dilation, groups, (OH, OW)) for x_shape and weight."""
    check_float(where, "weight", weight, ndim=4)
    sh, sw = check_pair(where, "stride", stride, 1)
    pt, pb, pl, pr = conv_padding(where, padding)
    dh, dw = check_pair(where, "dilation", dilation, 1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    _, c, h, w = x_shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups:
        raise ValueError(f"{where}: input channels {c} and output channels {o} (weight "
                         f"{weight.shape}) must both be divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(f"{where}: weight {weight.shape} needs {cg * groups} input channels for "
                         f"groups={groups}, x {tuple(x_shape)} has {c}")
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if h + pt + pb < eh or w + pl + pr < ew:
        raise ValueError(f"{where}: x {tuple(x_shape)} padded by {(pt, pb, pl, pr)} is smaller than "
                         f"the dilated kernel {(eh, ew)} of weight {weight.shape}")
    oh = (h + pt + pb - eh) // sh + 1
    ow = (w + pl + pr - ew) // sw + 1
    return (sh, sw), (pt, pb, pl, pr), (dh, dw), groups, (oh, ow)


def _check_route(where, route, c, groups):
    if route is None:
        return conv2d_route(c, None, groups)
    if route not in ROUTES:
        raise ValueError(f"{where}: route must be one of {ROUTES} or None, got {route!r}")
    if route == "depthwise" and groups != c:
        raise ValueError(f"{where}: the depthwise route needs groups == input channels, got "
                         f"groups={groups} for {c} channels")
    return route


def conv2d_general_forward(x, weight, bias, out, stride, padding, dilation, groups, route=None):
    """out[n, o] := bias[o] + sum over the C/G channels c of o's group and the taps (a, b) of
    weight[o, c, a, b] * xpad[n, g*C/G + c, i*sh + a*dh, j*sw + b*dw] (``route``: force one of
    ROUTES, for tests and benchmarks)."""
    where = "conv2d_general_forward"
    check_float(where, "x", x, ndim=4)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), groups, (oh, ow) = _geometry(
        where, x.shape, weight, stride, padding, dilation, groups)
    check_float(where, "weight", weight, dtype=x.dtype)
    n, c = x.shape[:2]
    o = weight.shape[0]
    check_optional_out(where, "bias", bias, (o,), x.dtype, f"weight {weight.shape}")
    check_out(where, "out", out, (n, o, oh, ow), x.dtype, f"x {x.shape}, weight {weight.shape}")
    route = _check_route(where, route, c, groups)
    has_bias = bias is not None
    b = bias if has_bias else np.zeros(1, x.dtype)
    if out.size == 0:
        return
    kh, kw = weight.shape[2:]
    work = out.size * weight.shape[1] * kh * kw
    if route == "depthwise" and (sh, sw) == (1, 1):
        pick(_depthwise_s1_forward, _depthwise_s1_forward_serial, work)(
            x.reshape(-1), weight.reshape(-1), b, has_bias, c, x.shape[2], x.shape[3], o, oh, ow,
            kh, kw, pt, pb, pl, pr, dh, dw, out.reshape(-1))
    elif route == "depthwise":
        pick(_depthwise_forward, _depthwise_forward_serial, work)(
            x.reshape(-1), weight.reshape(-1), b, has_bias, c, x.shape[2], x.shape[3], o, oh, ow,
            kh, kw, sh, sw, pt, pl, dh, dw, out.reshape(-1))
    else:
        pick(_im2col_forward, _im2col_forward_serial, work)(
            x, weight.reshape(groups, o // groups, -1), b, has_bias, kh, kw, sh, sw, pt, pl, dh, dw,
            oh, ow, out.reshape(n, groups, o // groups, oh * ow))


def conv2d_general_backward(x, weight, dy, dx, dweight, dbias, stride, padding, dilation, groups,
                            route=None):
    """dx := grad wrt x; dweight += grad wrt weight; dbias += dy.sum((0, 2, 3)) of
    conv2d_general_forward (None outputs are skipped)."""
    where = "conv2d_general_backward"
    check_float(where, "x", x, ndim=4)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), groups, (oh, ow) = _geometry(
        where, x.shape, weight, stride, padding, dilation, groups)
    check_float(where, "weight", weight, dtype=x.dtype)
    n, c = x.shape[:2]
    o, cg, kh, kw = weight.shape
    check_float(where, "dy", dy, ndim=4, dtype=x.dtype)
    if dy.shape != (n, o, oh, ow):
        raise ValueError(f"{where}: dy must have shape {(n, o, oh, ow)} (x {x.shape}, weight "
                         f"{weight.shape}), got {dy.shape}")
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, weight.shape, x.dtype, "the shape of weight")
    check_optional_out(where, "dbias", dbias, (o,), x.dtype, f"weight {weight.shape}")
    route = _check_route(where, route, c, groups)
    if dbias is not None:
        dbias += dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(x.dtype)
    if dx is not None and (dy.size == 0 or x.size == 0):
        dx[...] = 0
    if dy.size == 0 or x.size == 0:
        return
    work = dy.size * cg * kh * kw
    if route == "depthwise" and (sh, sw) == (1, 1):
        geometry = (c, x.shape[2], x.shape[3], o, oh, ow, kh, kw, pt, pb, pl, pr, dh, dw)
        if dx is not None:
            pick(_depthwise_s1_backward_data, _depthwise_s1_backward_data_serial, work)(
                dy.reshape(-1), weight.reshape(-1), *geometry, dx.reshape(-1))
        if dweight is not None:
            pick(_depthwise_s1_backward_weight, _depthwise_s1_backward_weight_serial, work)(
                x.reshape(-1), dy.reshape(-1), *geometry, dweight.reshape(-1))
        return
    if route == "depthwise":
        geometry = (c, x.shape[2], x.shape[3], o, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw)
        if dx is not None:
            pick(_depthwise_backward_data, _depthwise_backward_data_serial, work)(
                dy.reshape(-1), weight.reshape(-1), *geometry, dx.reshape(-1))
        if dweight is not None:
            pick(_depthwise_backward_weight, _depthwise_backward_weight_serial, work)(
                x.reshape(-1), dy.reshape(-1), *geometry, dweight.reshape(-1))
        return
    if dx is None and dweight is None:
        return
    og = o // groups
    need_dx, need_dw = dx is not None, dweight is not None
    # dW: a fixed number of blocks (independent of the thread count); dX alone: one per sample
    blocks = min(n, _DW_BLOCKS) if need_dw else n
    dw_blocks = np.empty((blocks if need_dw else 1, groups, og, cg * kh * kw), x.dtype)
    pick(_im2col_backward, _im2col_backward_serial, work)(
        x, weight.reshape(groups, og, -1), dy.reshape(n, groups, og, oh * ow), need_dx, need_dw,
        kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, blocks,
        dx if need_dx else np.empty((1, 1, 1, 1), x.dtype), dw_blocks)
    if need_dw:
        dweight += dw_blocks.sum(axis=0).reshape(weight.shape)
