"""Activation kernels: leaky relu, sigmoid, tanh (elementwise), softmax / log-softmax (rows); relu is
compiled at install (:mod:`fastnn._core.basic`).

Why numba rather than Cython: these are short elementwise or per-row loops whose cost is memory
traffic and call overhead, not algorithmic cleverness. numba gives float32/float64 from one
readable source, fuses each op into one pass (no NumPy temporaries: the stable sigmoid alone is
four NumPy passes), and needs no build step. Every kernel exists twice, compiled from one source:
``parallel=True`` (``prange`` over the outer loop) for big arrays, and a serial twin for small
ones, because waking numba's thread pool costs ~1.2 us, more than a whole small-MLP activation.

This module also holds :func:`serial_twin` and the dispatch threshold used by the other numba
kernel families (pool, norm, loss, optim).
"""
import math
import types

import numpy as np

from numba import njit, prange

from . import threads
from ._checks import check_binary, check_unary
from ._fastmath import SAFE_FASTMATH, _exp_diff, _fast_sigmoid, _fast_tanh

threads.sync_numba_threads()

# the serial/parallel threshold (threads.PARALLEL_MIN_WORK, shared with the Cython kernels of
# fastnn._core.basic) and the work of a transcendental, re-exported for the other numba families
from .threads import TRANSCENDENTAL_WORK, pick  # noqa: F401,E402
# log_softmax sums exp(x - max) * 2^LSE_SCALE: terms down to 2^-226 stay normal floats
LSE_SCALE = 100


def serial_twin(parallel_dispatcher):
    """A ``@njit(cache=True)`` (no ``parallel``) copy of a parallel kernel: ``prange`` runs as range.

    The copy gets its own qualified name so numba's on-disk cache keeps the two apart.
    """
    f = parallel_dispatcher.py_func
    clone = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__,
                               f.__closure__)
    clone.__qualname__ = f.__qualname__ + "_serial"
    clone.__doc__ = f.__doc__
    # error_model="numpy" as in the parallel gufunc: x / 0 gives inf/nan instead of a Python
    # ZeroDivisionError check in the loop, a check that stops LLVM vectorising (Adam was 4x slower).
    fastmath = parallel_dispatcher.targetoptions.get("fastmath", False)
    return njit(cache=True, error_model="numpy", fastmath=fastmath)(clone)


# ----------------------------------------------------------------------------------------------
# compiled kernels (1-D for the elementwise ones; the wrappers flatten). No validation here.
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _leaky_relu_forward(x, negative_slope, out):
    """out := x if x > 0 else negative_slope * x (the slope given in x's dtype)"""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = v if v > 0 else v * negative_slope


@njit(parallel=True, cache=True)
def _leaky_relu_backward(x, dy, negative_slope, dx):
    """dx := dy if x > 0 else negative_slope * dy (the slope given in x's dtype)"""
    for i in prange(x.shape[0]):
        g = dy[i]
        dx[i] = g if x[i] > 0 else g * negative_slope


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _sigmoid_forward(x, out):
    """out := 1 / (1 + exp(-x)), via exp(-|x|) so neither sign overflows"""
    for i in prange(x.shape[0]):
        out[i] = _fast_sigmoid(x[i])


@njit(parallel=True, cache=True)
def _sigmoid_backward(y, dy, dx):
    """dx := dy * y * (1 - y)"""
    for i in prange(y.shape[0]):
        s = y[i]
        dx[i] = dy[i] * s * (1.0 - s)


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _tanh_forward(x, out):
    """out := tanh(x) (float32: _fastmath's vectorised tanh, within ~1.5 ulp)"""
    for i in prange(x.shape[0]):
        out[i] = _fast_tanh(x[i])


@njit(parallel=True, cache=True)
def _tanh_backward(y, dy, dx):
    """dx := dy * (1 - y^2), formed as (1 - y)(1 + y): 1 - y*y in float32 would lose y*y's
    rounding error, a large relative error where |y| is near 1"""
    for i in prange(y.shape[0]):
        t = y[i]
        dx[i] = dy[i] * ((1.0 - t) * (1.0 + t))


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _softmax_forward(x, out):
    """out[m] := exp(x[m] - max x[m]) / sum exp(x[m] - max x[m]), per row"""
    cols = x.shape[1]
    for m in prange(x.shape[0]):
        top = x[m, 0]
        for j in range(1, cols):
            top = max(top, x[m, j])
        total = 0.0
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            out[m, j] = _exp_diff(x[m, j], top, 0)
        for j in range(cols):
            total += out[m, j]
        inv = 1.0 / total
        for j in range(cols):
            out[m, j] *= inv


@njit(parallel=True, cache=True)
def _softmax_backward(y, dy, dx):
    """dx[m] := y[m] * (dy[m] - <dy[m], y[m]>), per row; the products and the dot in float64, so
    dy - dot keeps its precision when the two nearly cancel"""
    cols = y.shape[1]
    for m in prange(y.shape[0]):
        dot = 0.0
        for j in range(cols):
            dot += np.float64(dy[m, j]) * y[m, j]
        for j in range(cols):
            dx[m, j] = y[m, j] * (dy[m, j] - dot)


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _log_softmax_forward(x, out):
    """out[m] := (x[m] - max x[m]) - log1p(sum exp(x[m] - max x[m]) but the maximum's own 1), per
    row, in float64: so an output near 0 (the maximum's, the others' exponentials tiny) keeps
    its relative precision (x - (max + log(1 + tiny)) would round the tiny sum away); the
    exponentials are summed times 2^LSE_SCALE, so even a sum of subnormal ones is exact"""
    cols = x.shape[1]
    for m in prange(x.shape[0]):
        top = x[m, 0]
        at = 0
        for j in range(1, cols):
            if x[m, j] > top:
                top = x[m, j]
                at = j
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            out[m, j] = _exp_diff(x[m, j], top, LSE_SCALE)  # times 2^LSE_SCALE: no subnormals
        rest = 0.0
        for j in range(at):
            rest += out[m, j]
        for j in range(at + 1, cols):
            rest += out[m, j]
        lse = math.log1p(rest * 2.0 ** -LSE_SCALE)
        for j in range(cols):
            out[m, j] = (np.float64(x[m, j]) - top) - lse


_leaky_relu_forward_serial = serial_twin(_leaky_relu_forward)
_leaky_relu_backward_serial = serial_twin(_leaky_relu_backward)
_sigmoid_forward_serial = serial_twin(_sigmoid_forward)
_sigmoid_backward_serial = serial_twin(_sigmoid_backward)
_tanh_forward_serial = serial_twin(_tanh_forward)
_tanh_backward_serial = serial_twin(_tanh_backward)
_softmax_forward_serial = serial_twin(_softmax_forward)
_softmax_backward_serial = serial_twin(_softmax_backward)
_log_softmax_forward_serial = serial_twin(_log_softmax_forward)


# ----------------------------------------------------------------------------------------------
# public wrappers: validate, flatten, pick the parallel or serial kernel
# ----------------------------------------------------------------------------------------------

def _slope(where, negative_slope):
    try:
        return float(negative_slope)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: negative_slope must be a number, got {negative_slope!r}") from None


def leaky_relu_forward(x, negative_slope, out):
    """out := x if x > 0 else negative_slope * x, any shape."""
    check_unary("leaky_relu_forward", x, out)
    # the slope in x's dtype, so float32 multiplies in float32, as torch's leaky_relu does
    slope = x.dtype.type(_slope("leaky_relu_forward", negative_slope))
    pick(_leaky_relu_forward, _leaky_relu_forward_serial, x.size)(x.reshape(-1), slope, out.reshape(-1))


def leaky_relu_backward(x, dy, negative_slope, dx):
    """dx := dy if x > 0 else negative_slope * dy, any shape."""
    check_binary("leaky_relu_backward", x, dy, dx, "x")
    slope = x.dtype.type(_slope("leaky_relu_backward", negative_slope))
    pick(_leaky_relu_backward, _leaky_relu_backward_serial, x.size)(
        x.reshape(-1), dy.reshape(-1), slope, dx.reshape(-1))


def sigmoid_forward(x, out):
    """out := 1 / (1 + exp(-x)), stable for both signs, any shape."""
    check_unary("sigmoid_forward", x, out)
    pick(_sigmoid_forward, _sigmoid_forward_serial, TRANSCENDENTAL_WORK * x.size)(x.reshape(-1), out.reshape(-1))


def sigmoid_backward(y, dy, dx):
    """dx := dy * y * (1 - y) with y = sigmoid(x), any shape."""
    check_binary("sigmoid_backward", y, dy, dx, "y")
    pick(_sigmoid_backward, _sigmoid_backward_serial, y.size)(y.reshape(-1), dy.reshape(-1), dx.reshape(-1))


def tanh_forward(x, out):
    """out := tanh(x), any shape."""
    check_unary("tanh_forward", x, out)
    pick(_tanh_forward, _tanh_forward_serial, TRANSCENDENTAL_WORK * x.size)(x.reshape(-1), out.reshape(-1))


def tanh_backward(y, dy, dx):
    """dx := dy * (1 - y^2) with y = tanh(x), any shape."""
    check_binary("tanh_backward", y, dy, dx, "y")
    pick(_tanh_backward, _tanh_backward_serial, y.size)(y.reshape(-1), dy.reshape(-1), dx.reshape(-1))


def _rows(where, name, a):
    """View ``a`` (..., C) as (M, C); the softmax axis is the last one."""
    if a.ndim < 1 or a.shape[-1] < 1:
        raise ValueError(f"{where}: {name} must have a non-empty last axis, got shape {a.shape}")
    return a.reshape(-1, a.shape[-1])


def softmax_forward(x, out):
    """out := softmax(x) along the last axis; x (M, C) (any leading axes are rows)."""
    where = "softmax_forward"
    check_unary(where, x, out)
    x2 = _rows(where, "x", x)
    pick(_softmax_forward, _softmax_forward_serial, TRANSCENDENTAL_WORK * x.size)(x2, out.reshape(x2.shape))


def softmax_backward(y, dy, dx):
    """dx := y * (dy - sum(dy * y, last axis)) with y = softmax(x); y (M, C)."""
    where = "softmax_backward"
    check_binary(where, y, dy, dx, "y")
    y2 = _rows(where, "y", y)
    pick(_softmax_backward, _softmax_backward_serial, y.size)(y2, dy.reshape(y2.shape), dx.reshape(y2.shape))


def log_softmax_forward(x, out):
    """out := x - logsumexp(x) along the last axis; x (M, C)."""
    where = "log_softmax_forward"
    check_unary(where, x, out)
    x2 = _rows(where, "x", x)
    pick(_log_softmax_forward, _log_softmax_forward_serial, TRANSCENDENTAL_WORK * x.size)(x2, out.reshape(x2.shape))
