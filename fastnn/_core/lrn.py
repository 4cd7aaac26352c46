"""Local response normalisation across channels (AlexNet's LRN, ``torch.nn.LocalResponseNorm``).

Why numba rather than Cython: a small per-(sample, channel) window sum over neighbouring channels
followed by one power per element; numba compiles it for float32/float64 from one source with
``prange`` over the (sample, channel) pairs, and needs no build step. The window is summed
directly (``size`` terms, in float64, the inner loop along the contiguous pixels so it
vectorises) rather than as a running sum over channels, so no cancellation creeps in between
channels of very different magnitude. ``scale**-beta`` for beta 0.75 (AlexNet's and PyTorch's
default), 0.5 and 1 is taken through square roots, which vectorise; other exponents use pow.

Layout: x is (N, C, L) ((N, C, H, W) is viewed as (N, C, H*W)). With n = size,

    s[c] = k + alpha / n * sum_{j = c - n//2}^{c + (n-1)//2} x[j]**2     (channels outside [0, C) count 0)
    y[c] = x[c] * s[c]**(-beta)
    dx[j] = dy[j] * s[j]**(-beta) - 2 * alpha * beta / n * x[j] * sum_{c : j in window(c)} dy[c] * y[c] / s[c]

as PyTorch computes it (zero-padded average of squares over ``size`` channels).
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_like, check_out
from .activation import TRANSCENDENTAL_WORK, pick, serial_twin

threads.sync_numba_threads()


@njit(inline="always")
def _neg_pow(s, beta, mode):
    """s ** -beta; the common exponents through square roots (vectorised, unlike pow)"""
    if mode == 0:
        r = math.sqrt(s)
        return 1.0 / (r * math.sqrt(r))
    if mode == 1:
        return 1.0 / math.sqrt(s)
    if mode == 2:
        return 1.0 / s
    return s ** (-beta)


def _pow_mode(beta):
    return {0.75: 0, 0.5: 1, 1.0: 2}.get(beta, 3)


@njit(parallel=True, cache=True)
def _lrn_forward(x, size, alpha, beta, mode, k, out, scale):
    """scale := k + alpha/size * window sum of x**2 over channels; out := x * scale**-beta"""
    batch, channels, length = x.shape
    before = size // 2
    after = (size - 1) // 2
    coef = alpha / size
    for nc in prange(batch * channels):
        n = nc // channels
        c = nc % channels
        acc = np.zeros(length)
        for j in range(max(c - before, 0), min(c + after, channels - 1) + 1):
            for i in range(length):
                v = np.float64(x[n, j, i])
                acc[i] += v * v
        for i in range(length):
            s = k + coef * acc[i]
            scale[n, c, i] = s
            out[n, c, i] = np.float64(x[n, c, i]) * _neg_pow(s, beta, mode)


@njit(parallel=True, cache=True)
def _lrn_backward(x, out, scale, dy, size, alpha, beta, mode, dx):
    """dx := dy * scale**-beta - 2*alpha*beta/size * x * sum over the windows holding x of
    dy * out / scale"""
    batch, channels, length = x.shape
    before = size // 2
    after = (size - 1) // 2
    coef = 2.0 * alpha * beta / size
    ratio = np.empty((batch, channels, length))  # dy * out / scale, once per element
    for nc in prange(batch * channels):
        n = nc // channels
        c = nc % channels
        for i in range(length):
            ratio[n, c, i] = np.float64(dy[n, c, i]) * np.float64(out[n, c, i]) / np.float64(scale[n, c, i])
    for nj in prange(batch * channels):
        n = nj // channels
        j = nj % channels
        acc = np.zeros(length)
        # the channels c whose window [c - before, c + after] holds j
        for c in range(max(j - after, 0), min(j + before, channels - 1) + 1):
            for i in range(length):
                acc[i] += ratio[n, c, i]
        for i in range(length):
            s = np.float64(scale[n, j, i])
            dx[n, j, i] = (np.float64(dy[n, j, i]) * _neg_pow(s, beta, mode)
                           - coef * np.float64(x[n, j, i]) * acc[i])


_lrn_forward_serial = serial_twin(_lrn_forward)
_lrn_backward_serial = serial_twin(_lrn_backward)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

def _ncl(where, name, x):
    check_float(where, name, x)
    if x.ndim < 3 or x.shape[1] < 1:
        raise ValueError(f"{where}: {name} must be (N, C, L, ...) with C >= 1 (3 or more "
                         f"dimensions), got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:])))


def _hyper(where, size, alpha, beta, k):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{where}: size must be an int >= 1, got {size!r}")
    values = []
    for name, v in (("alpha", alpha), ("beta", beta), ("k", k)):
        if isinstance(v, bool):
            raise TypeError(f"{where}: {name} must be a number, got {v!r}")
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            raise TypeError(f"{where}: {name} must be a number, got {v!r}") from None
    return (int(size), *values)


def lrn_forward(x, size, alpha, beta, k, out, scale):
    """out := x * (k + alpha/size * sum of x**2 over ``size`` neighbouring channels)**-beta, as
    torch.nn.functional.local_response_norm; scale (the base of the power, x's shape and dtype)
    is kept for the backward. x (N, C, ...), at least 3 dimensions."""
    where = "lrn_forward"
    x3 = _ncl(where, "x", x)
    size, alpha, beta, k = _hyper(where, size, alpha, beta, k)
    check_out(where, "out", out, x.shape, x.dtype, "the shape of x")
    check_out(where, "scale", scale, x.shape, x.dtype, "the shape of x")
    pick(_lrn_forward, _lrn_forward_serial, TRANSCENDENTAL_WORK * x.size)(
        x3, size, alpha, beta, _pow_mode(beta), k, out.reshape(x3.shape), scale.reshape(x3.shape))


def lrn_backward(x, out, scale, dy, size, alpha, beta, dx):
    """dx := gradient of lrn_forward's out wrt x, from its x, out and scale."""
    where = "lrn_backward"
    x3 = _ncl(where, "x", x)
    size, alpha, beta, _ = _hyper(where, size, alpha, beta, 0.0)
    for name, a in (("out", out), ("scale", scale), ("dy", dy)):
        check_like(where, name, a, x.shape, x.dtype, "the shape of x")
    check_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    pick(_lrn_backward, _lrn_backward_serial, TRANSCENDENTAL_WORK * x.size)(
        x3, out.reshape(x3.shape), scale.reshape(x3.shape), dy.reshape(x3.shape), size, alpha,
        beta, _pow_mode(beta), dx.reshape(x3.shape))
