"""Smooth activations: GELU (exact, with erf, or the tanh approximation), SiLU and ELU, forward
and backward, elementwise on any shape.

Each element is computed in float64 with libm (erfc, exp, expm1, tanh) and rounded once to the
output's dtype, so float32 results are within 1 ulp of the exact value over the whole range;
formulas are chosen to avoid cancellation: GELU(x) = x/2 * erfc(-x/sqrt 2) (1 + erf(x) loses
everything for x << 0), the tanh form as x * sigmoid(2u), ELU with expm1. numba, with a serial
twin for small arrays (see :mod:`fastnn._core.activation`).
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_binary, check_unary
from .activation import TRANSCENDENTAL_WORK, pick, serial_twin

threads.sync_numba_threads()

_SQRT1_2 = 0.7071067811865476          # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327     # 1 / sqrt(2 pi)
_SQRT_2_PI = 0.7978845608028654        # sqrt(2 / pi)
_GELU_C = 0.044715


@njit(inline="always")
def _sigmoid64(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(inline="always")
def _gelu64(v, approximate):
    if approximate:  # x/2 (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
        u = _SQRT_2_PI * (v + _GELU_C * v * v * v)
        return v * _sigmoid64(2.0 * u)
    return 0.5 * v * math.erfc(-v * _SQRT1_2)


@njit(inline="always")
def _gelu_grad64(v, approximate):
    if approximate:
        u = _SQRT_2_PI * (v + _GELU_C * v * v * v)
        s = _sigmoid64(2.0 * u)  # (1 + tanh u) / 2; 1 - tanh^2 u = 4 s (1 - s)
        return s + v * 2.0 * s * (1.0 - s) * _SQRT_2_PI * (1.0 + 3.0 * _GELU_C * v * v)
    return 0.5 * math.erfc(-v * _SQRT1_2) + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v)


@njit(inline="always")
def _edge(v):
    """GELU and SiLU at +-inf and NaN: inf, -0 (the limit from below), NaN."""
    return v if (v > 0 or v != v) else -0.0


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_forward(x, approximate, out):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        out[i] = _gelu64(v, approximate) if math.isfinite(v) else _edge(v)


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_backward(x, dy, approximate, dx):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        if math.isfinite(v):
            g = _gelu_grad64(v, approximate)
        else:
            g = (1.0 if v > 0 else 0.0) if not math.isnan(v) else v
        dx[i] = np.float64(dy[i]) * g


@njit(parallel=True, cache=True, error_model="numpy")
def _silu_forward(x, out):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        out[i] = v * _sigmoid64(v) if math.isfinite(v) else _edge(v)


@njit(parallel=True, cache=True, error_model="numpy")
def _silu_backward(x, dy, dx):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        if math.isfinite(v):
            s = _sigmoid64(v)
            g = s * (1.0 + v * (1.0 - s))
        else:
            g = (1.0 if v > 0 else 0.0) if not math.isnan(v) else v
        dx[i] = np.float64(dy[i]) * g


@njit(parallel=True, cache=True, error_model="numpy")
def _elu_forward(x, alpha, out):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        out[i] = v if v > 0 else alpha * math.expm1(v)


@njit(parallel=True, cache=True, error_model="numpy")
def _elu_backward(x, dy, alpha, dx):
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        dx[i] = np.float64(dy[i]) * (1.0 if v > 0 else alpha * math.exp(v))


_gelu_forward_serial = serial_twin(_gelu_forward)
_gelu_backward_serial = serial_twin(_gelu_backward)
_silu_forward_serial = serial_twin(_silu_forward)
_silu_backward_serial = serial_twin(_silu_backward)
_elu_forward_serial = serial_twin(_elu_forward)
_elu_backward_serial = serial_twin(_elu_backward)


def _approximate(where, approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{where}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate == "tanh"


def _alpha(where, alpha):
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: alpha must be a number, got {alpha!r}") from None
    if not math.isfinite(alpha):
        raise ValueError(f"{where}: alpha must be finite, got {alpha!r}")
    return alpha


def gelu_forward(x, out, approximate="none"):
    """out := x * Phi(x) (``approximate="tanh"``: x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))),
    any shape."""
    check_unary("gelu_forward", x, out)
    tanh = _approximate("gelu_forward", approximate)
    pick(_gelu_forward, _gelu_forward_serial, TRANSCENDENTAL_WORK * x.size)(
        x.reshape(-1), tanh, out.reshape(-1))


def gelu_backward(x, dy, dx, approximate="none"):
    """dx := dy * GELU'(x), any shape."""
    check_binary("gelu_backward", x, dy, dx, "x")
    tanh = _approximate("gelu_backward", approximate)
    pick(_gelu_backward, _gelu_backward_serial, TRANSCENDENTAL_WORK * x.size)(
        x.reshape(-1), dy.reshape(-1), tanh, dx.reshape(-1))


def silu_forward(x, out):
    """out := x * sigmoid(x), any shape."""
    check_unary("silu_forward", x, out)
    pick(_silu_forward, _silu_forward_serial, TRANSCENDENTAL_WORK * x.size)(x.reshape(-1), out.reshape(-1))


def silu_backward(x, dy, dx):
    """dx := dy * s (1 + x (1 - s)) with s = sigmoid(x), any shape."""
    check_binary("silu_backward", x, dy, dx, "x")
    pick(_silu_backward, _silu_backward_serial, TRANSCENDENTAL_WORK * x.size)(
        x.reshape(-1), dy.reshape(-1), dx.reshape(-1))


def elu_forward(x, alpha, out):
    """out := x if x > 0 else alpha * (exp(x) - 1), any shape."""
    check_unary("elu_forward", x, out)
    a = _alpha("elu_forward", alpha)
    pick(_elu_forward, _elu_forward_serial, TRANSCENDENTAL_WORK * x.size)(x.reshape(-1), a, out.reshape(-1))


def elu_backward(x, dy, alpha, dx):
    """dx := dy if x > 0 else dy * alpha * exp(x), any shape."""
    check_binary("elu_backward", x, dy, dx, "x")
    a = _alpha("elu_backward", alpha)
    pick(_elu_backward, _elu_backward_serial, TRANSCENDENTAL_WORK * x.size)(
        x.reshape(-1), dy.reshape(-1), a, dx.reshape(-1))
