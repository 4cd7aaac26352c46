"""Layer normalisation over the trailing features of each row: x (M, D) viewed from any
``(..., *normalized_shape)``.

    forward:  mean, invstd = 1/sqrt(var + eps) per row (biased variance, as torch);
              out := (x - mean) * invstd * weight + bias
    backward: xhat = (x - mean) * invstd, g = dy * weight;
              dx := invstd * (g - mean(g) - xhat * mean(g * xhat)) per row;
              dweight += sum over rows of dy * xhat; dbias += sum over rows of dy

Compiled (``_attention.pxi`` in ``_blas``, rows in ``kernels/layer_norm.h``): rows run in
parallel on the GEMMs' OpenMP threads; each row's statistics are accumulated in float64 around
the row's first value (shifted sums, as the batch-norm kernels), so an offset like x + 1000 does
not cancel the variance away. The parameter gradients are column sums over fixed row blocks
(contiguous rows, the block's dx formed in the same pass), added in block order: the bits do
not depend on the thread count.
"""
import numpy as np

from . import _blas
from ._checks import check_float, check_like, check_out, check_optional_out


def _optional(where, name, a, d, dtype):
    if a is not None:
        check_like(where, name, a, (d,), dtype, "the normalised features")
    return a


def layer_norm_forward(x, weight, bias, eps, out, mean, invstd, residual=None):
    """out := layer_norm(x) over the last axis; x (M, D), weight/bias (D,) or None,
    mean/invstd (M,) float64 outputs kept for the backward. With ``residual`` (like x):
    x := x + residual first (in place, each row while it is in cache: a post-norm block's
    residual sum, kept for the backward), then out := layer_norm(x)."""
    where = "layer_norm_forward"
    check_float(where, "x", x, ndim=2)
    m, d = x.shape
    if residual is not None:
        check_like(where, "residual", residual, x.shape, x.dtype, "the shape of x")
        check_out(where, "x", x, x.shape, x.dtype, "the shape of residual")
        if np.may_share_memory(x, residual) or np.may_share_memory(x, out):
            raise ValueError(f"{where}: x {x.shape} (written with the residual sum) must not "
                             f"overlap residual or out")
    if d < 1:
        raise ValueError(f"{where}: x must have at least one feature per row, got {x.shape}")
    check_out(where, "out", out, x.shape, x.dtype, "the shape of x")
    check_out(where, "mean", mean, (m,), np.float64, "one per row")
    check_out(where, "invstd", invstd, (m,), np.float64, "one per row")
    w = _optional(where, "weight", weight, d, x.dtype)
    b = _optional(where, "bias", bias, d, x.dtype)
    eps = float(eps)
    if not eps >= 0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps}")
    if m:
        _blas._layer_norm_forward(x, w, b, eps, out, mean, invstd, residual)


def layer_norm_backward(x, dy, weight, mean, invstd, dx, dweight, dbias):
    """dx := grad wrt x (or skipped when None); dweight += sum(dy * xhat); dbias += sum(dy)
    (each skipped when None)."""
    where = "layer_norm_backward"
    check_float(where, "x", x, ndim=2)
    m, d = x.shape
    check_like(where, "dy", dy, x.shape, x.dtype, "the shape of x")
    check_like(where, "mean", mean, (m,), np.float64)
    check_like(where, "invstd", invstd, (m,), np.float64)
    w = _optional(where, "weight", weight, d, x.dtype)
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, (d,), x.dtype)
    check_optional_out(where, "dbias", dbias, (d,), x.dtype)
    if m == 0:
        return
    _blas._layer_norm_backward(x, dy, w, mean, invstd, dx, dweight, dbias)
