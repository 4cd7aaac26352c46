"""Merge kernels: the sum of two arrays with the ReLU (or leaky ReLU) after it in the same pass,
and that activation's backward writing the gradient of each summand in one pass.

They serve a residual connection, ``relu(f(x) + x)``: unfused, the sum and the activation are two
passes over the block's output and the gradient one pass plus a copy for the second summand.
numba, as the other elementwise families (:mod:`fastnn._core.activation`): one source for
float32/float64, a serial twin for small arrays.
"""
import numpy as np
from numba import njit, prange

from . import threads
from ._checks import activation_code, check_binary, check_float, check_optional_out, check_out
from .activation import pick, serial_twin

threads.sync_numba_threads()


@njit(parallel=True, cache=True)
def _add_relu_forward(a, b, out, act, slope, zero):
    """out := a + b rounded to the dtype, then act 1: 0 where <= 0 (NaN propagates, as
    relu_forward), act 2: times slope where not > 0 (as leaky_relu_forward)"""
    for i in prange(a.shape[0]):
        v = a[i] + b[i]
        if act == 1:
            out[i] = zero if v <= 0 else v
        else:
            out[i] = v if v > 0 else v * slope


@njit(parallel=True, cache=True)
def _add_relu_backward(y, dy, dx, dx2, both, act, slope, zero):
    """dx (and dx2 when ``both``) := dy through the activation whose output is y: as
    relu_backward (0 where y <= 0) for act 1, leaky_relu_backward (dy * slope where y is not
    > 0) for act 2"""
    for i in prange(y.shape[0]):
        g = dy[i]
        if act == 1:
            g = zero if y[i] <= 0 else g
        elif not y[i] > 0:
            g = g * slope
        dx[i] = g
        if both:
            dx2[i] = g


_add_relu_forward_serial = serial_twin(_add_relu_forward)
_add_relu_backward_serial = serial_twin(_add_relu_backward)


def add_relu_forward(a, b, out, negative_slope=None):
    """out := relu(a + b), any shape (``out`` may be ``a`` or ``b``); with ``negative_slope``
    (>= 0) leaky_relu(a + b, negative_slope). The sum is rounded to the dtype first: the result
    is bitwise that of ``np.add`` then ``relu_forward`` (or ``leaky_relu_forward``)."""
    where = "add_relu_forward"
    check_float(where, "a", a)
    check_float(where, "b", b, dtype=a.dtype)
    if b.shape != a.shape:
        raise ValueError(f"{where}: b must have the shape of a {a.shape}, got {b.shape}")
    check_out(where, "out", out, a.shape, a.dtype, "the shape of a")
    act, slope = activation_code(where, True, negative_slope)
    t = a.dtype.type
    pick(_add_relu_forward, _add_relu_forward_serial, a.size)(
        a.reshape(-1), b.reshape(-1), out.reshape(-1), act, t(slope), t(0))


def add_relu_backward(y, dy, dx, dx2=None, negative_slope=None):
    """dx := dy through the ReLU whose output is ``y`` (0 where y <= 0), or with
    ``negative_slope`` (>= 0) through that leaky ReLU (dy * negative_slope where y is not > 0);
    ``dx2`` (if given) gets the same values in the same pass: the gradient of both summands of
    ``add_relu_forward``."""
    where = "add_relu_backward"
    check_binary(where, y, dy, dx, "y")
    check_optional_out(where, "dx2", dx2, y.shape, y.dtype, "the shape of y")
    act, slope = activation_code(where, True, negative_slope)
    t = y.dtype.type
    flat = dx.reshape(-1)
    pick(_add_relu_backward, _add_relu_backward_serial, 2 * y.size)(
        y.reshape(-1), dy.reshape(-1), flat, flat if dx2 is None else dx2.reshape(-1),
        dx2 is not None, act, t(slope), t(0))
