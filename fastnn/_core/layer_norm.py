"""Layer normalisation over the trailing features of each row: x (M, D) viewed from any
``(..., *normalized_shape)``.

    forward:  mean, invstd = 1/sqrt(var + eps) per row (biased variance, as torch);
              out := (x - mean) * invstd * weight + bias
    backward: xhat = (x - mean) * invstd, g = dy * weight;
              dx := invstd * (g - mean(g) - xhat * mean(g * xhat)) per row;
              dweight += sum over rows of dy * xhat; dbias += sum over rows of dy

Rows run in parallel (``prange``); each row's statistics are accumulated in float64 around the
row's first value (shifted sums, as the batch-norm kernels), so an offset like x + 1000 does
not cancel the variance away. The parameter gradients are column sums over fixed row blocks
(parallel, contiguous rows), added in block order: the bits do not depend on the thread count.
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_like, check_out, check_optional_out
from .activation import pick, serial_twin

threads.sync_numba_threads()

# the parameter gradients are summed over this many row blocks (fewer for fewer rows), a
# partition fixed by the shape, then the blocks in order: the same bits for any thread count
ROW_BLOCKS = 8


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_forward(x, weight, bias, has_weight, has_bias, eps, out, mean, invstd):
    m, d = x.shape
    for i in prange(m):
        shift = np.float64(x[i, 0])
        s = 0.0
        s2 = 0.0
        for j in range(d):
            v = np.float64(x[i, j]) - shift
            s += v
            s2 += v * v
        mu = s / d
        var = max(s2 / d - mu * mu, 0.0)
        r = 1.0 / math.sqrt(var + eps)
        mu += shift
        mean[i] = mu
        invstd[i] = r
        for j in range(d):
            v = (np.float64(x[i, j]) - mu) * r
            if has_weight:
                v = v * weight[j]
            if has_bias:
                v = v + bias[j]
            out[i, j] = v


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_dx(x, dy, weight, has_weight, mean, invstd, dx):
    m, d = x.shape
    for i in prange(m):
        mu = np.float64(mean[i])
        r = np.float64(invstd[i])
        sg = 0.0
        sgx = 0.0
        for j in range(d):
            g = np.float64(dy[i, j])
            if has_weight:
                g *= weight[j]
            sg += g
            sgx += g * (np.float64(x[i, j]) - mu) * r
        sg /= d
        sgx /= d
        for j in range(d):
            g = np.float64(dy[i, j])
            if has_weight:
                g *= weight[j]
            dx[i, j] = r * (g - sg - (np.float64(x[i, j]) - mu) * r * sgx)


@njit(parallel=True, cache=True, error_model="numpy")
def _layer_norm_param_partials(x, dy, mean, invstd, parts):
    """parts[b] := sums over row block b of (dy * xhat, dy); contiguous rows, float64."""
    m, d = x.shape
    blocks = parts.shape[0]
    for b in prange(blocks):
        r0 = (b * m) // blocks
        r1 = ((b + 1) * m) // blocks
        for i in range(r0, r1):
            mu = np.float64(mean[i])
            r = np.float64(invstd[i])
            for j in range(d):
                g = np.float64(dy[i, j])
                parts[b, 0, j] += g * (np.float64(x[i, j]) - mu) * r
                parts[b, 1, j] += g


_layer_norm_forward_serial = serial_twin(_layer_norm_forward)
_layer_norm_dx_serial = serial_twin(_layer_norm_dx)
_layer_norm_param_partials_serial = serial_twin(_layer_norm_param_partials)


def _optional(where, name, a, d, dtype):
    if a is None:
        return np.zeros(1, dtype), False
    check_like(where, name, a, (d,), dtype, "the normalised features")
    return a, True


def layer_norm_forward(x, weight, bias, eps, out, mean, invstd):
    """out := layer_norm(x) over the last axis; x (M, D), weight/bias (D,) or None,
    mean/invstd (M,) float64 outputs kept for the backward."""
    where = "layer_norm_forward"
    check_float(where, "x", x, ndim=2)
    m, d = x.shape
    if d < 1:
        raise ValueError(f"{where}: x must have at least one feature per row, got {x.shape}")
    check_out(where, "out", out, x.shape, x.dtype, "the shape of x")
    check_out(where, "mean", mean, (m,), np.float64, "one per row")
    check_out(where, "invstd", invstd, (m,), np.float64, "one per row")
    w, has_w = _optional(where, "weight", weight, d, x.dtype)
    b, has_b = _optional(where, "bias", bias, d, x.dtype)
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps}")
    if m:
        pick(_layer_norm_forward, _layer_norm_forward_serial, 4 * x.size)(
            x, w, b, has_w, has_b, eps, out, mean, invstd)


def layer_norm_backward(x, dy, weight, mean, invstd, dx, dweight, dbias):
    """dx := grad wrt x (or skipped when None); dweight += sum(dy * xhat); dbias += sum(dy)
    (each skipped when None)."""
    where = "layer_norm_backward"
    check_float(where, "x", x, ndim=2)
    m, d = x.shape
    check_like(where, "dy", dy, x.shape, x.dtype, "the shape of x")
    check_like(where, "mean", mean, (m,), np.float64)
    check_like(where, "invstd", invstd, (m,), np.float64)
    w, has_w = _optional(where, "weight", weight, d, x.dtype)
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, (d,), x.dtype)
    check_optional_out(where, "dbias", dbias, (d,), x.dtype)
    if m == 0:
        return
    if dx is not None:
        pick(_layer_norm_dx, _layer_norm_dx_serial, 4 * x.size)(x, dy, w, has_w, mean, invstd, dx)
    if dweight is not None or dbias is not None:
        parts = np.zeros((min(ROW_BLOCKS, m), 2, d))
        pick(_layer_norm_param_partials, _layer_norm_param_partials_serial, 4 * x.size)(
            x, dy, mean, invstd, parts)
        sums = parts.sum(axis=0)  # the blocks in order
        if dweight is not None:
            dweight += sums[0].astype(x.dtype)
        if dbias is not None:
            dbias += sums[1].astype(x.dtype)
