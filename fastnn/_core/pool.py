"""Pooling and upsampling kernels: max pool (with argmax) for windows other than 2x2/stride 2, average
pool, nearest upsampling. The 2x2 max pool and the max pool's backward are compiled at install
(:mod:`fastnn._core.basic`), whose wrappers call the general window loop here.

Why numba rather than Cython: each is a small sliding-window loop nest over independent (n, c)
planes, with no BLAS call and nothing to gain from Cython's static typing; numba compiles the
float32/float64 versions from one readable source, ``prange`` over the planes parallelises it,
and there is no build step. As everywhere in the numba families, each kernel has a serial twin
for small inputs (see :mod:`fastnn._core.activation`).

Images are viewed as planes: (N, C, H, W) -> (N*C, H, W), so every kernel has one signature per
dtype and the parallel loop is over all N*C independent planes.
"""
import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_out, check_writable
from .activation import pick, serial_twin
from .basic import _planes, _pooled_shape, _window

threads.sync_numba_threads()


# ----------------------------------------------------------------------------------------------
# compiled kernels on planes (P, H, W); no validation here
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, out, argmax):
    """out[p, i, j] := max of x[p] over the window at (i*sh - ph, j*sw - pw); argmax := its h*W + w"""
    planes, h, w = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for p in prange(planes):
        for i in range(oh):
            top = i * sh - ph
            h1 = min(top + kh, h)
            h0 = max(top, 0)
            for j in range(ow):
                left = j * sw - pw
                w1 = min(left + kw, w)
                w0 = max(left, 0)
                best = -np.inf
                where = h0 * w + w0
                for a in range(h0, h1):
                    for b in range(w0, w1):
                        v = x[p, a, b]
                        # strictly greater: the first maximum wins; NaN propagates (as PyTorch)
                        if v > best or v != v:
                            best = v
                            where = a * w + b
                out[p, i, j] = best
                argmax[p, i, j] = where


@njit(parallel=True, cache=True)
def _avgpool2d_forward(x, kh, kw, sh, sw, ph, pw, out):
    """out[p, i, j] := sum of x[p] over the window / (kh*kw) (padding counts as zeros)"""
    planes, h, w = x.shape
    oh, ow = out.shape[1], out.shape[2]
    inv = 1.0 / (kh * kw)
    for p in prange(planes):
        for i in range(oh):
            h0 = max(i * sh - ph, 0)
            h1 = min(i * sh - ph + kh, h)
            for j in range(ow):
                w0 = max(j * sw - pw, 0)
                w1 = min(j * sw - pw + kw, w)
                total = 0.0
                for a in range(h0, h1):
                    for b in range(w0, w1):
                        total += x[p, a, b]
                out[p, i, j] = total * inv


@njit(parallel=True, cache=True)
def _avgpool2d_backward(dy, kh, kw, sh, sw, ph, pw, dx):
    """dx[p] := sum over windows of dy[p, i, j] / (kh*kw) spread over each window"""
    planes, h, w = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    inv = 1.0 / (kh * kw)
    for p in prange(planes):
        for a in range(h):
            for b in range(w):
                dx[p, a, b] = 0.0
        for i in range(oh):
            h0 = max(i * sh - ph, 0)
            h1 = min(i * sh - ph + kh, h)
            for j in range(ow):
                w0 = max(j * sw - pw, 0)
                w1 = min(j * sw - pw + kw, w)
                g = dy[p, i, j] * inv
                for a in range(h0, h1):
                    for b in range(w0, w1):
                        dx[p, a, b] += g


@njit(parallel=True, cache=True)
def _avgpool2d_forward_2x2(x, out):
    """_avgpool2d_forward for the 2x2 window, stride 2, no padding, unrolled: the same float64
    sum in the same order, so the same bits (the window loop's bookkeeping made the general
    kernel ~10x slower than the 2x2 max pool on the VGG and LeNet shapes)"""
    planes = x.shape[0]
    oh, ow = out.shape[1], out.shape[2]
    for p in prange(planes):
        for i in range(oh):
            a = 2 * i
            for j in range(ow):
                b = 2 * j
                total = 0.0
                total += x[p, a, b]
                total += x[p, a, b + 1]
                total += x[p, a + 1, b]
                total += x[p, a + 1, b + 1]
                out[p, i, j] = total * 0.25


@njit(parallel=True, cache=True)
def _avgpool2d_backward_2x2(dy, dx):
    """_avgpool2d_backward for the 2x2 window, stride 2, no padding: every dx entry lies in at
    most one window, so it is that window's dy / 4 (0 in an odd last row or column)"""
    planes, h, w = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for p in prange(planes):
        for i in range(oh):
            a = 2 * i
            for j in range(ow):
                b = 2 * j
                g = dy[p, i, j] * 0.25
                dx[p, a, b] = g
                dx[p, a, b + 1] = g
                dx[p, a + 1, b] = g
                dx[p, a + 1, b + 1] = g
            for b in range(2 * ow, w):
                dx[p, a, b] = 0.0
                dx[p, a + 1, b] = 0.0
        for a in range(2 * oh, h):
            for b in range(w):
                dx[p, a, b] = 0.0


@njit(parallel=True, cache=True)
def _upsample_nearest2d_forward(x, scale, out):
    """out[p, i, j] := x[p, i // scale, j // scale]"""
    planes, h, w = x.shape
    for p in prange(planes):
        for i in range(h):
            for a in range(scale):
                row = i * scale + a
                for j in range(w):
                    v = x[p, i, j]
                    for b in range(scale):
                        out[p, row, j * scale + b] = v


@njit(parallel=True, cache=True)
def _upsample_nearest2d_backward(dy, scale, dx):
    """dx[p, i, j] := sum of dy[p] over the scale x scale block at (i*scale, j*scale)"""
    planes, h, w = dx.shape
    for p in prange(planes):
        for i in range(h):
            for j in range(w):
                dx[p, i, j] = 0.0
            for a in range(scale):
                row = i * scale + a
                for j in range(w):
                    total = 0.0
                    for b in range(scale):
                        total += dy[p, row, j * scale + b]
                    dx[p, i, j] += total


_maxpool2d_forward_serial = serial_twin(_maxpool2d_forward)
_avgpool2d_forward_serial = serial_twin(_avgpool2d_forward)
_avgpool2d_backward_serial = serial_twin(_avgpool2d_backward)
_avgpool2d_forward_2x2_serial = serial_twin(_avgpool2d_forward_2x2)
_avgpool2d_backward_2x2_serial = serial_twin(_avgpool2d_backward_2x2)
_upsample_nearest2d_forward_serial = serial_twin(_upsample_nearest2d_forward)
_upsample_nearest2d_backward_serial = serial_twin(_upsample_nearest2d_backward)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

def avgpool2d_forward(x, kernel_size, stride, padding, out):
    """out := mean over each window, padding counted as zeros (count_include_pad=True)."""
    where = "avgpool2d_forward"
    check_float(where, "x", x, ndim=4)
    (kh, kw), (sh, sw), (ph, pw) = _window(where, kernel_size, stride, padding)
    shape = _pooled_shape(where, x.shape, (kh, kw), (sh, sw), (ph, pw))
    check_out(where, "out", out, shape, x.dtype, f"pooled shape of x {x.shape}")
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        pick(_avgpool2d_forward_2x2, _avgpool2d_forward_2x2_serial, out.size * 4)(_planes(x), _planes(out))
        return
    pick(_avgpool2d_forward, _avgpool2d_forward_serial, out.size * kh * kw)(
        _planes(x), kh, kw, sh, sw, ph, pw, _planes(out))


def avgpool2d_backward(dy, kernel_size, stride, padding, dx):
    """dx := the adjoint of avgpool2d_forward applied to dy."""
    where = "avgpool2d_backward"
    check_float(where, "dx", dx, ndim=4)
    check_writable(where, "dx", dx)
    (kh, kw), (sh, sw), (ph, pw) = _window(where, kernel_size, stride, padding)
    shape = _pooled_shape(where, dx.shape, (kh, kw), (sh, sw), (ph, pw))
    check_float(where, "dy", dy, ndim=4, dtype=dx.dtype)
    if dy.shape != shape:
        raise ValueError(f"{where}: dy must have shape {shape} (pooled shape of dx {dx.shape}), got {dy.shape}")
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        pick(_avgpool2d_backward_2x2, _avgpool2d_backward_2x2_serial, dy.size * 4)(_planes(dy), _planes(dx))
        return
    pick(_avgpool2d_backward, _avgpool2d_backward_serial, dy.size * kh * kw)(
        _planes(dy), kh, kw, sh, sw, ph, pw, _planes(dx))


def _scale(where, scale):
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise TypeError(f"{where}: scale must be an int, got {scale!r}")
    if scale < 1:
        raise ValueError(f"{where}: scale must be >= 1, got {scale}")
    return int(scale)


def upsample_nearest2d_forward(x, scale, out):
    """out[n, c, i, j] := x[n, c, i // scale, j // scale]; out (N, C, H*scale, W*scale)."""
    where = "upsample_nearest2d_forward"
    check_float(where, "x", x, ndim=4)
    s = _scale(where, scale)
    n, c, h, w = x.shape
    check_out(where, "out", out, (n, c, h * s, w * s), x.dtype, f"x {x.shape} scaled by {s}")
    pick(_upsample_nearest2d_forward, _upsample_nearest2d_forward_serial, out.size)(
        _planes(x), s, _planes(out))


def upsample_nearest2d_backward(dy, scale, dx):
    """dx[n, c, i, j] := sum of dy over its scale x scale block."""
    where = "upsample_nearest2d_backward"
    check_float(where, "dx", dx, ndim=4)
    check_writable(where, "dx", dx)
    s = _scale(where, scale)
    n, c, h, w = dx.shape
    check_float(where, "dy", dy, ndim=4, dtype=dx.dtype)
    if dy.shape != (n, c, h * s, w * s):
        raise ValueError(f"{where}: dy must have shape {(n, c, h * s, w * s)} (dx {dx.shape} scaled "
                         f"by {s}), got {dy.shape}")
    pick(_upsample_nearest2d_backward, _upsample_nearest2d_backward_serial, dy.size)(
        _planes(dy), s, _planes(dx))


# ----------------------------------------------------------------------------------------------
# adaptive average pooling: output bin i of a length-L axis pooled to O covers
# [floor(i*L/O), ceil((i+1)*L/O)), as torch.nn.AdaptiveAvgPool2d
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _adaptive_avgpool2d_forward(x, out):
    p, h, w = x.shape
    oh, ow = out.shape[1], out.shape[2]
    for q in prange(p):
        for i in range(oh):
            h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            for j in range(ow):
                w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
                s = x[q, h0, w0] * 0.0
                for a in range(h0, h1):
                    for b in range(w0, w1):
                        s += x[q, a, b]
                out[q, i, j] = s / ((h1 - h0) * (w1 - w0))


@njit(parallel=True, cache=True)
def _adaptive_avgpool2d_backward(dy, dx):
    p, h, w = dx.shape
    oh, ow = dy.shape[1], dy.shape[2]
    for q in prange(p):
        dx[q] = 0.0
        for i in range(oh):
            h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            for j in range(ow):
                w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
                g = dy[q, i, j] / ((h1 - h0) * (w1 - w0))
                for a in range(h0, h1):
                    for b in range(w0, w1):
                        dx[q, a, b] += g


# The global pool (one bin, a 1x1 output: a ResNet's last pool) on planes flattened to rows
# (P, H*W): the sum of a row in float64 reassociated, so LLVM splits it over vector lanes (the
# order still fixed by the code and the row length, not the threads); the general loop's one
# add chain a plane ran latency-bound.
@njit(parallel=True, cache=True, fastmath={"reassoc", "nsz"})
def _global_avgpool2d_forward(x, out):
    p, length = x.shape
    for q in prange(p):
        s = 0.0
        for i in range(length):
            s += x[q, i]
        out[q] = s / length


@njit(parallel=True, cache=True)
def _global_avgpool2d_backward(dy, dx):
    """dx[q, :] := dy[q] / (H*W), rounded once (the general loop's bits)"""
    p, length = dx.shape
    for q in prange(p):
        g = dy[q] / length
        for i in range(length):
            dx[q, i] = g


_adaptive_avgpool2d_forward_serial = serial_twin(_adaptive_avgpool2d_forward)
_adaptive_avgpool2d_backward_serial = serial_twin(_adaptive_avgpool2d_backward)
_global_avgpool2d_forward_serial = serial_twin(_global_avgpool2d_forward)
_global_avgpool2d_backward_serial = serial_twin(_global_avgpool2d_backward)


def adaptive_avgpool2d_forward(x, out):
    """out (N, C, OH, OW) := the mean of each of PyTorch's adaptive bins of x (N, C, H, W)."""
    where = "adaptive_avgpool2d_forward"
    check_float(where, "x", x, ndim=4)
    check_float(where, "out", out, ndim=4, dtype=x.dtype)
    check_writable(where, "out", out)
    if out.shape[:2] != x.shape[:2] or min(out.shape[2:]) < 1:
        raise ValueError(f"{where}: out must be (N, C, OH, OW) with OH, OW >= 1 for x {x.shape}, "
                         f"got {out.shape}")
    if x.size and out.shape[2:] == (1, 1):
        pick(_global_avgpool2d_forward, _global_avgpool2d_forward_serial, x.size)(
            x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))
    elif x.size:
        pick(_adaptive_avgpool2d_forward, _adaptive_avgpool2d_forward_serial, x.size + out.size)(
            _planes(x), _planes(out))


def adaptive_avgpool2d_backward(dy, dx):
    """dx := each output's gradient spread evenly over its bin (bins may overlap: summed)."""
    where = "adaptive_avgpool2d_backward"
    check_float(where, "dy", dy, ndim=4)
    check_float(where, "dx", dx, ndim=4, dtype=dy.dtype)
    check_writable(where, "dx", dx)
    if dy.shape[:2] != dx.shape[:2] or min(dy.shape[2:]) < 1:
        raise ValueError(f"{where}: dy {dy.shape} and dx {dx.shape} must share (N, C)")
    if dx.size and dy.shape[2:] == (1, 1):
        pick(_global_avgpool2d_backward, _global_avgpool2d_backward_serial, dx.size)(
            dy.reshape(-1), dx.reshape(dx.shape[0] * dx.shape[1], -1))
    elif dx.size:
        pick(_adaptive_avgpool2d_backward, _adaptive_avgpool2d_backward_serial, dx.size + dy.size)(
            _planes(dy), _planes(dx))
