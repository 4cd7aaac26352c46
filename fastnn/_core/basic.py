"""The kernels every plain dense or conv training step calls, compiled at install (``_basic.pyx``,
per ISA level): ReLU forward/backward, max pooling (2x2 compiled; other windows on numba's
general kernel in :mod:`fastnn._core.pool`), softmax cross-entropy with integer labels, Adam/AdamW.

Why here and not in the numba families: with these compiled ahead of time, the first training
step of an MLP or a LeNet needs no numba at all: no import of numba, no JIT compilation with an
empty numba cache (fastnn's cold start). This module imports nothing that imports numba; the
wrappers validate, flatten and pick the parallel or serial loop by ``threads.PARALLEL_MIN_WORK``,
as the numba families do.
"""
import math

import numpy as np

from . import _basic, threads
from ._checks import (check_binary, check_float, check_index, check_like, check_out, check_pair,
                      check_unary, check_writable, conv_out_size)


def _parallel(work):
    return work >= threads.PARALLEL_MIN_WORK


# ---- ReLU -----------------------------------------------------------------------------------------
def relu_forward(x, out):
    """out := max(x, 0), any shape (NaN propagates, as torch.relu)."""
    check_unary("relu_forward", x, out)
    _basic.relu_forward(x, out, _parallel(x.size))


def relu_backward(x, dy, dx):
    """dx := dy * (x > 0), any shape (0 where x <= 0)."""
    check_binary("relu_backward", x, dy, dx, "x")
    _basic.relu_backward(x, dy, dx, _parallel(x.size))


# ---- softmax cross-entropy (also the validation of loss.py's soft-label version) -----------------
def _logits(where, name, a):
    check_float(where, name, a, ndim=2)
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{where}: {name} must be (M, C) with M, C >= 1, got shape {a.shape}")
    return a


def _factor(where, scale, rows):
    if isinstance(scale, bool):
        raise TypeError(f"{where}: scale must be a number, got {scale!r}")
    try:
        return float(scale) / rows
    except (TypeError, ValueError):
        raise TypeError(f"{where}: scale must be a number, got {scale!r}") from None


def _bad_labels(where, bad, target, cols):
    if bad:
        raise ValueError(f"{where}: {bad} of the {target.shape[0]} labels in target {target.shape} "
                         f"lie outside [0, {cols})")


def _row_loss_out(where, row_loss, logits):
    if row_loss is None:
        return np.empty(logits.shape[0], np.float64)
    return check_out(where, "row_loss", row_loss, (logits.shape[0],), np.float64, "(M,) for logits (M, C)")


def softmax_cross_entropy_forward(logits, target, probs, row_loss=None):
    """probs := softmax(logits); returns mean over rows of -log probs[m, target[m]] (a float).
    logits (M, C), target int64 (M,) in [0, C); row_loss, if given (float64 (M,)), := the
    per-row losses (reduction "none"). Row losses are summed in row order: the value is the same
    for any thread count."""
    where = "softmax_cross_entropy_forward"
    _logits(where, "logits", logits)
    rows, cols = logits.shape
    check_index(where, "target", target, (rows,))
    check_out(where, "probs", probs, logits.shape, logits.dtype, "the shape of logits")
    row_loss = _row_loss_out(where, row_loss, logits)
    total, bad = _basic.softmax_cross_entropy_forward(
        logits, target, probs, row_loss, _parallel(threads.TRANSCENDENTAL_WORK * logits.size))
    _bad_labels(where, bad, target, cols)
    return total / rows


def softmax_cross_entropy_backward(probs, target, scale, dlogits):
    """dlogits := scale * (probs - onehot(target)) / M."""
    where = "softmax_cross_entropy_backward"
    _logits(where, "probs", probs)
    rows, cols = probs.shape
    check_index(where, "target", target, (rows,))
    factor = _factor(where, scale, rows)
    check_out(where, "dlogits", dlogits, probs.shape, probs.dtype, "the shape of probs")
    bad = _basic.softmax_cross_entropy_backward(probs, target, factor, dlogits, _parallel(probs.size))
    _bad_labels(where, bad, target, cols)


# ---- max pooling (also the window checks of pool.py's other kernels) -------------------------------
def _window(where, kernel_size, stride, padding):
    kernel = check_pair(where, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else check_pair(where, "stride", stride, 1)
    pad = check_pair(where, "padding", padding, 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"{where}: padding {pad} must be at most half of kernel_size {kernel}")
    return kernel, stride, pad


def _pooled_shape(where, shape, kernel, stride, pad):
    n, c, h, w = shape
    oh = conv_out_size(h, kernel[0], stride[0], pad[0])
    ow = conv_out_size(w, kernel[1], stride[1], pad[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: input {tuple(shape)} is too small for kernel_size {kernel}, "
                         f"stride {stride}, padding {pad}")
    return (n, c, oh, ow)


def _planes(a):
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def maxpool2d_forward(x, kernel_size, stride, padding, out, argmax):
    """out := max over each window (padding is -inf); argmax := flat h*W + w of the first maximum."""
    where = "maxpool2d_forward"
    check_float(where, "x", x, ndim=4)
    (kh, kw), (sh, sw), (ph, pw) = _window(where, kernel_size, stride, padding)
    shape = _pooled_shape(where, x.shape, (kh, kw), (sh, sw), (ph, pw))
    check_out(where, "out", out, shape, x.dtype, f"pooled shape of x {x.shape}")
    check_index(where, "argmax", argmax, shape)
    check_writable(where, "argmax", argmax)
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        _basic.maxpool2d_forward_2x2(_planes(x), _planes(out), _planes(argmax), _parallel(out.size * 4))
        return
    from . import pool  # numba's window loop, for every other window

    threads.pick(pool._maxpool2d_forward, pool._maxpool2d_forward_serial, out.size * kh * kw)(
        _planes(x), kh, kw, sh, sw, ph, pw, _planes(out), _planes(argmax))


def maxpool2d_backward(dy, argmax, dx):
    """dx := 0, then dy scattered (added) at argmax in each (n, c) plane."""
    where = "maxpool2d_backward"
    check_float(where, "dy", dy, ndim=4)
    check_index(where, "argmax", argmax, dy.shape)
    check_float(where, "dx", dx, ndim=4, dtype=dy.dtype)
    check_writable(where, "dx", dx)
    if dx.shape[:2] != dy.shape[:2]:
        raise ValueError(f"{where}: dx {dx.shape} and dy {dy.shape} must agree on (N, C)")
    planes = dx.shape[0] * dx.shape[1]
    bad = _basic.maxpool2d_backward(dy.reshape(planes, -1), argmax.reshape(planes, -1),
                                    dx.reshape(planes, -1), _parallel(dx.size + dy.size))
    if bad:
        raise ValueError(f"{where}: {bad} argmax entries lie outside the {dx.shape[2]}x{dx.shape[3]} "
                         f"plane of dx {dx.shape}")


# ---- Adam / AdamW (also the validation helpers of optim.py's other updates) ----------------------
def _number(where, name, v):
    if isinstance(v, bool):
        raise TypeError(f"{where}: {name} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be a number, got {v!r}") from None


def _step(where, step):
    if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__"):
        raise TypeError(f"{where}: step must be an int, got {step!r}")
    step = int(step)
    if step < 1:
        raise ValueError(f"{where}: step must be >= 1 (the count after this update), got {step}")
    return step


def _param_and_grad(where, param, grad):
    check_float(where, "param", param)
    check_writable(where, "param", param)
    check_like(where, "grad", grad, param.shape, param.dtype, "the shape of param")


def _state(where, name, a, param):
    return check_out(where, name, a, param.shape, param.dtype, "the shape of param").reshape(-1)


def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """torch.optim.Adam (decoupled=False: L2 in the gradient) or AdamW (decoupled=True:
    p *= 1 - lr*wd) in one pass; step_size = lr / (1 - beta1^step),
    denom = sqrt(v) / sqrt(1 - beta2^step) + eps. ``step`` counts this update (1 on the first)."""
    where = "adam_update"
    _param_and_grad(where, param, grad)
    m = _state(where, "exp_avg", exp_avg, param)
    v = _state(where, "exp_avg_sq", exp_avg_sq, param)
    lr = _number(where, "lr", lr)
    beta1 = _number(where, "beta1", beta1)
    beta2 = _number(where, "beta2", beta2)
    weight_decay = _number(where, "weight_decay", weight_decay)
    step = _step(where, step)
    eps = _number(where, "eps", eps)
    adam_kernel(param.size)(param.reshape(-1), grad.reshape(-1), m, v,
                            adam_scalars(param.dtype, lr, beta1, beta2, eps, weight_decay, step,
                                         decoupled))


def adam_scalars(dtype, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """The scalar operand of the Adam kernel for one update of a ``dtype`` parameter at ``step``
    (validated floats and int): lerp's weight and its complement (as torch.lerp forms them),
    beta2, 1 - beta2, eps, the L2 coefficient, the decoupled shrink, step_size and
    sqrt(1 - beta2^step), as one array of the parameter's dtype (the element arithmetic runs in
    that dtype, as torch.optim's)."""
    if decoupled:
        shrink, l2 = 1.0 - lr * weight_decay, 0.0
    else:
        shrink, l2 = 1.0, weight_decay
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    cast = np.dtype(dtype).type
    weight = cast(1.0 - beta1)
    return np.array((weight, cast(1) - weight, beta2, 1.0 - beta2, eps, l2, shrink, step_size,
                     bc2_sqrt), dtype=dtype)


def adam_kernel(size):
    """The compiled Adam kernel for a parameter of ``size`` values, called as
    ``kernel(param_flat, grad_flat, exp_avg_flat, exp_avg_sq_flat, adam_scalars(...))`` on
    arrays adam_update has validated (for optimizers that validate once and update often)."""
    return threads.pick(_basic.adam_update_parallel, _basic.adam_update_serial, size)
