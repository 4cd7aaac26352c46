"""Batch normalisation kernels: training forward (statistics in one sweep), inference forward,
backward (through the batch statistics, or with them held constant).

Why numba rather than Cython: the work is a per-channel reduction followed by a per-channel
affine map, a loop nest that numba compiles for float32/float64 from one source, parallel over
channels with ``prange``, with no build step. Done in NumPy it is ~10 passes over the batch with
temporaries (mean, centred copy, square, var, normalised copy, ...); here the statistics take one
sweep per channel and the output one more. Each kernel has a serial twin for small inputs (see
:mod:`fastnn._core.activation`).

Layout: x is (N, C, L); (N, C) is viewed as (N, C, 1) and (N, C, H, W) as (N, C, H*W).
Statistics are accumulated in float64 as sums of x - x[0, c, 0] (shifted sums): the shift is a
sample of the channel, so the cancellation in E[d^2] - E[d]^2 stays of the order of the variance
even for data like x + 1000.
"""
import math

import numba
import numpy as np
from numba import njit, prange

from . import threads
from ._checks import activation_code as _activation
from ._checks import check_float, check_like, check_out, check_optional_out, check_writable
from .activation import pick, serial_twin

threads.sync_numba_threads()

# The per-channel sums may be reassociated: a float64 sum in strict order is one add chain
# (latency-bound, not vectorised); reassociated, LLVM splits it over vector lanes. The order is
# still fixed by the code and the shape (channels are the threads' unit), so it is reproducible.
_SUMS = {"reassoc", "nsz"}


# ----------------------------------------------------------------------------------------------
# compiled kernels on (N, C, L); no validation here
# ----------------------------------------------------------------------------------------------

@njit(inline="always")
def _through_act(g, out, act, slope, zero):
    """dy of an activation's output -> dy of its input, from the output (see _batchnorm_backward),
    in g's dtype (slope and zero given in it)"""
    if act == 1:
        return zero if out <= 0 else g
    if act == 2:
        return g if out > 0 else g * slope
    return g


@njit(inline="always")
def _act(v, act, slope, zero):
    """act 1: relu(v) (NaN propagates, as relu_forward), act 2: leaky_relu(v, slope), else v"""
    if act == 1:
        return zero if v <= 0 else v
    if act == 2:
        return v if v > 0 else v * slope
    return v


@njit
def _add_act_row(out, residual, n, c, length, act, slope, zero):
    """row out[n, c, :] := act(out + residual), the sum rounded to the dtype first (the
    activation sees it rounded, as after a separate Add): a function of its own on row views,
    without the kernels' fastmath flags, with ReLU's loop apart, which LLVM vectorises (inlined
    in the parallel kernel, on 3-D indices with the activation's branches, it ran scalar)"""
    o = out[n, c]
    r = residual[n, c]
    if act == 1:
        for i in range(length):
            v = o[i] + r[i]
            o[i] = zero if v <= 0 else v  # NaN propagates, as relu_forward
    else:
        for i in range(length):
            o[i] = _act(o[i] + r[i], act, slope, zero)


@njit(inline="always")
def _leaky_in_place(out, n, c, i, slope):
    """out[n, c, i] := leaky_relu of itself: on the value rounded to out's dtype, as the
    unfused LeakyReLU sees it (ReLU commutes with the rounding, a slope does not); the
    wrappers pass the slope in x's dtype, as to leaky_relu_forward"""
    w = out[n, c, i]
    if not w > 0:
        out[n, c, i] = w * slope


@njit(parallel=True, cache=True, fastmath=_SUMS)
def _batchnorm_forward_train(x, weight, bias, running_mean, running_var, update_running, momentum,
                             eps, out, save_mean, save_invstd, act, slope, residual, add, blocks):
    """mean, var := batch statistics over (N, L); out := (x - mean) * invstd * weight + bias,
    with ``add``: + residual (rounded to x's dtype in between, as a separate sum would be),
    then act 1: max(out, 0), act 2: leaky_relu(out, slope) (the activation kernels' formulas).
    ``blocks`` threads each take a range of channels and sweep it sample by sample (see
    _block)."""
    batch, channels, length = x.shape
    count = batch * length
    typed = np.empty((channels, 3), x.dtype)  # mean_hi, scale, offset of each channel
    sums = np.zeros((channels, 2))
    zero = np.zeros(1, x.dtype)[0]
    for blk in prange(blocks):
        c0, c1 = _block(blk, blocks, channels)
        for n in range(batch):
            for c in range(c0, c1):
                shift = np.float64(x[0, c, 0])
                s1 = 0.0
                s2 = 0.0
                for i in range(length):
                    d = x[n, c, i] - shift
                    s1 += d
                    s2 += d * d
                sums[c, 0] += s1
                sums[c, 1] += s2
        for c in range(c0, c1):
            shift = np.float64(x[0, c, 0])
            mean_shifted = sums[c, 0] / count
            var = max(sums[c, 1] / count - mean_shifted * mean_shifted, 0.0)
            mean = shift + mean_shifted
            invstd = 1.0 / math.sqrt(var + eps)
            scale = weight[c] * invstd
            # out = (x - mean_hi) * scale + offset in x's dtype, mean_hi = mean rounded to it:
            # x - mean_hi is exact for x within a factor 2 of it (x + 1000 data too) and the
            # rest of the mean goes into offset, so each output is one rounding of one FMA; in
            # float32 the pass is float32 FMAs, not float64 arithmetic on converted values
            typed[c, 0] = mean
            typed[c, 1] = scale
            typed[c, 2] = bias[c] - (mean - np.float64(typed[c, 0])) * scale
            save_mean[c] = mean
            save_invstd[c] = invstd
            if update_running:
                running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
                running_var[c] = ((1.0 - momentum) * running_var[c]
                                  + momentum * var * count / (count - 1))
        last = act if not add else 0  # with a residual, the activation follows the sum
        for n in range(batch):
            for c in range(c0, c1):
                mean_hi, scale_t, offset_t = typed[c, 0], typed[c, 1], typed[c, 2]
                for i in range(length):
                    v = (x[n, c, i] - mean_hi) * scale_t + offset_t
                    if last == 1:
                        v = zero if v <= 0 else v  # NaN propagates, as relu_forward
                    out[n, c, i] = v
                    if last == 2:
                        _leaky_in_place(out, n, c, i, slope)
                if add:
                    # a loop of its own over the row just written (in L1): within the loop
                    # above LLVM may reassociate the sum with the affine map, and the result
                    # must be the rounded output plus the residual, as a separate Add's
                    _add_act_row(out, residual, n, c, length, act, slope, zero)


@njit(inline="always")
def _block(blk, blocks, channels):
    """Channels [c0, c1) of block blk of ``blocks``. A block is swept sample by sample (for n:
    for c: the row x[n, c, :]), the order of the memory, which the prefetchers follow, rather
    than channel by channel (batch rows a plane apart, short for small images); each channel's
    sums still run in one order (its rows in turn), whatever the blocks."""
    return blk * channels // blocks, (blk + 1) * channels // blocks


@njit(parallel=True, cache=True)
def _batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, act, slope):
    """out := (x - running_mean) / sqrt(running_var + eps) * weight + bias, then the activation
    act (as _batchnorm_forward_train)"""
    batch, channels, length = x.shape
    for c in prange(channels):
        scale = weight[c] / math.sqrt(np.float64(running_var[c]) + eps)
        offset = bias[c] - running_mean[c] * scale
        for n in range(batch):
            for i in range(length):
                v = x[n, c, i] * scale + offset
                if act == 1:
                    v = 0.0 if v <= 0 else v
                out[n, c, i] = v
                if act == 2:
                    _leaky_in_place(out, n, c, i, slope)


@njit
def _add_row(dy, dy2, n, c, length):
    """row dy[n, c, :] += dy2[n, c, :], rounded to the dtype (np.add's bits): a function of its
    own, without the kernels' fastmath flags, so the add stays an add of its own"""
    for i in range(length):
        dy[n, c, i] = dy[n, c, i] + dy2[n, c, i]


@njit(inline="always")
def _through_sums(dy, act_out, x, n, c, length, m, s, act, slope, zero):
    """(sum g, sum g*xhat) of row x[n, c, :], g := dy through the activation (_through_act)"""
    sum_dy = 0.0
    sum_dy_xhat = 0.0
    for i in range(length):
        g = _through_act(dy[n, c, i], act_out[n, c, i], act, slope, zero)
        sum_dy += g
        sum_dy_xhat += g * ((x[n, c, i] - m) * s)
    return sum_dy, sum_dy_xhat


@njit(inline="always")
def _through_into(dy, act_out, g, n, c, length, act, slope, zero):
    """row g[n, c, :] := dy through the activation whose output is act_out"""
    for i in range(length):
        g[n, c, i] = _through_act(dy[n, c, i], act_out[n, c, i], act, slope, zero)


@njit(parallel=True, cache=True, fastmath=_SUMS)
def _batchnorm_backward(dy, dy2, two, x, weight, mean, invstd, dx, write_dx, dweight,
                        write_dweight, dbias, write_dbias, batch_stats, act_out, act, slope, dres,
                        write_dres, blocks):
    """with ``two``, dy := dy + dy2 first, row by row (the row then in L1 for the loops below:
    two gradients of one output summed without a pass of their own);
    g := dy through the activation whose output is act_out (act 1, ReLU: 0 where act_out <= 0;
    act 2, leaky ReLU with slope >= 0: g * slope where not act_out > 0, which is where its input
    was not > 0); with write_dres, g is written to dres first (the gradient of a residual summed
    into the output before that activation; the row's g, in L1, then serves the sums as a dy
    given already through the activation would);
    xhat := (x - mean) * invstd; dbias += sum g; dweight += sum g*xhat;
    dx := weight*invstd * (g - [sum g + xhat * sum g*xhat] / n) (the bracket only with batch_stats)

    The sums run in float64; dx is then a*g + b*(x - mean) + k per element, with the channel's
    a, b, k rounded to x's dtype once (the wrapper passes the slope in it): in float32 that pass
    is float32 FMAs, not float64 arithmetic on converted values (vgg-bn's 32-channel 28x28
    layer, 2 threads: 1.25 -> 0.89 ms; dx within a few float32 ulps of the float64 pass).
    Channels in ``blocks`` swept sample by sample, as the forward (_block)."""
    batch, channels, length = x.shape
    count = batch * length
    typed = np.empty((channels, 4), x.dtype)  # a, b, k, mean of each channel
    sums = np.zeros((channels, 2))
    zero = np.zeros(1, x.dtype)[0]
    # g from dres (written first, row by row) as from a dy given through the activation
    # already, else from dy and act_out: the same loops, so the same rounding
    src = dres if write_dres else dy
    kind = 0 if write_dres else act
    for blk in prange(blocks):
        c0, c1 = _block(blk, blocks, channels)
        for n in range(batch):
            for c in range(c0, c1):
                m = np.float64(mean[c])
                s = np.float64(invstd[c])
                if two:
                    _add_row(dy, dy2, n, c, length)
                if write_dres:
                    _through_into(dy, act_out, dres, n, c, length, act, slope, zero)
                s1, s2 = _through_sums(src, act_out, x, n, c, length, m, s, kind, slope, zero)
                sums[c, 0] += s1
                sums[c, 1] += s2
        for c in range(c0, c1):
            sum_dy, sum_dy_xhat = sums[c, 0], sums[c, 1]
            s = np.float64(invstd[c])
            if write_dweight:
                dweight[c] += sum_dy_xhat
            if write_dbias:
                dbias[c] += sum_dy
            scale = weight[c] * s
            typed[c, 0] = scale
            typed[c, 1] = -scale * s * sum_dy_xhat / count
            typed[c, 2] = -scale * sum_dy / count
            typed[c, 3] = mean[c]
        if write_dx:
            for n in range(batch):
                for c in range(c0, c1):
                    a, b, k, mt = typed[c, 0], typed[c, 1], typed[c, 2], typed[c, 3]
                    _dx_pass(src, act_out, x, dx, n, c, length, a, b, k, mt, kind, slope, zero,
                             batch_stats)


@njit(inline="always")
def _dx_pass(dy, act_out, x, dx, n, c, length, a, b, k, mt, act, slope, zero, batch_stats):
    """row dx[n, c, :] := a*g + b*(x - mt) + k, g := dy through the activation; without
    batch_stats a*g (x does not enter, so an infinite x stays out of dx)"""
    if batch_stats:
        for i in range(length):
            g = _through_act(dy[n, c, i], act_out[n, c, i], act, slope, zero)
            dx[n, c, i] = a * g + b * (x[n, c, i] - mt) + k
    else:
        for i in range(length):
            dx[n, c, i] = a * _through_act(dy[n, c, i], act_out[n, c, i], act, slope, zero)


_batchnorm_forward_train_serial = serial_twin(_batchnorm_forward_train)
_batchnorm_forward_eval_serial = serial_twin(_batchnorm_forward_eval)
_batchnorm_backward_serial = serial_twin(_batchnorm_backward)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

def _ncl(where, name, x):
    check_float(where, name, x)
    if x.ndim < 2 or x.shape[1] < 1:
        raise ValueError(f"{where}: {name} must be (N, C, ...) with C >= 1, got shape {x.shape}")
    return x.reshape(x.shape[0], x.shape[1], -1)


def _channel_vector(where, name, a, channels, dtype, default=None):
    """A (C,) array of x's dtype; None means ``default`` (1 for weight, 0 for bias)."""
    if a is None:
        return np.full(channels, default, dtype=dtype)
    return check_like(where, name, a, (channels,), dtype, f"C of x is {channels}")


def _blocks(kernel, parallel, channels):
    """Channel blocks of a training kernel: one per thread for the parallel one, else one."""
    return min(channels, numba.get_num_threads()) if kernel is parallel else 1


def _number(where, name, v):
    if isinstance(v, bool):
        raise TypeError(f"{where}: {name} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: {name} must be a number, got {v!r}") from None


def batchnorm_forward_train(x, weight, bias, running_mean, running_var, momentum, eps,
                            out, save_mean, save_invstd, relu=False, negative_slope=None,
                            residual=None):
    """Training-mode batch norm over (N, L) per channel; updates the running statistics
    (running_var with the unbiased variance) unless they are None. ``residual`` (x's shape):
    out := out + residual in the same pass (a BatchNorm summed with a shortcut), bitwise the
    separate sum. ``relu``: then out := max(out, 0) in the same pass (a BatchNorm, or that
    sum, followed by a ReLU), or with ``negative_slope`` (>= 0) leaky_relu(out,
    negative_slope) (followed by a LeakyReLU)."""
    where = "batchnorm_forward_train"
    x3 = _ncl(where, "x", x)
    batch, channels, length = x3.shape
    if batch * length < 2:
        raise ValueError(f"{where}: expected more than 1 value per channel in training, got x {x.shape}")
    dtype = x.dtype
    weight = _channel_vector(where, "weight", weight, channels, dtype, 1.0)
    bias = _channel_vector(where, "bias", bias, channels, dtype, 0.0)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{where}: running_mean and running_var must both be arrays or both None")
    update = running_mean is not None
    if update:
        check_out(where, "running_mean", running_mean, (channels,), dtype, f"C of x is {channels}")
        check_out(where, "running_var", running_var, (channels,), dtype, f"C of x is {channels}")
    else:
        running_mean = running_var = np.empty(channels, dtype)
    momentum = _number(where, "momentum", momentum)
    eps = _number(where, "eps", eps)
    check_out(where, "out", out, x.shape, dtype, "the shape of x")
    check_out(where, "save_mean", save_mean, (channels,), dtype, f"C of x is {channels}")
    check_out(where, "save_invstd", save_invstd, (channels,), dtype, f"C of x is {channels}")
    act, slope = _activation(where, relu, negative_slope)
    if residual is not None:
        check_like(where, "residual", residual, x.shape, dtype, "the shape of x")
    kernel = pick(_batchnorm_forward_train, _batchnorm_forward_train_serial, x.size)
    kernel(x3, weight, bias, running_mean, running_var, update, momentum, eps,
           out.reshape(x3.shape), save_mean, save_invstd, act, x.dtype.type(slope),
           x3 if residual is None else residual.reshape(x3.shape), residual is not None,
           _blocks(kernel, _batchnorm_forward_train, channels))


def batchnorm_forward_eval(x, weight, bias, running_mean, running_var, eps, out, relu=False,
                           negative_slope=None):
    """Inference-mode batch norm: out := (x - running_mean) / sqrt(running_var + eps) * weight + bias
    (then the ReLU or leaky ReLU of ``relu`` and ``negative_slope``, as batchnorm_forward_train)."""
    where = "batchnorm_forward_eval"
    x3 = _ncl(where, "x", x)
    channels = x3.shape[1]
    dtype = x.dtype
    weight = _channel_vector(where, "weight", weight, channels, dtype, 1.0)
    bias = _channel_vector(where, "bias", bias, channels, dtype, 0.0)
    check_like(where, "running_mean", running_mean, (channels,), dtype, f"C of x is {channels}")
    check_like(where, "running_var", running_var, (channels,), dtype, f"C of x is {channels}")
    eps = _number(where, "eps", eps)
    check_out(where, "out", out, x.shape, dtype, "the shape of x")
    act, slope = _activation(where, relu, negative_slope)
    pick(_batchnorm_forward_eval, _batchnorm_forward_eval_serial, x.size)(
        x3, weight, bias, running_mean, running_var, eps, out.reshape(x3.shape), act, x.dtype.type(slope))


def batchnorm_backward(dy, x, weight, mean, invstd, dx, dweight, dbias, batch_stats=True,
                       relu_out=None, negative_slope=None, dresidual=None, dy2=None):
    """dx := grad wrt x (through the batch statistics when ``batch_stats``, else with mean/invstd
    constant); dweight += sum dy * xhat; dbias += sum dy. None outputs are skipped.
    ``dy2`` (dy's shape): dy += dy2 first, in the backward's own pass (bitwise np.add, then
    the rest as from that dy; dy is overwritten: a graph's two gradients of one tensor).
    ``relu_out`` (the output of a forward with relu=True): dy is the gradient of that output,
    taken through the ReLU first (0 where relu_out <= 0), or with ``negative_slope`` through
    that leaky ReLU (dy * negative_slope where relu_out is not > 0). ``dresidual`` (x's shape):
    also written with dy taken through that activation, in the same pass: the gradient of a
    residual the forward summed into the output (``batchnorm_forward_train(residual=)``)."""
    where = "batchnorm_backward"
    x3 = _ncl(where, "x", x)
    channels = x3.shape[1]
    dtype = x.dtype
    check_like(where, "dy", dy, x.shape, dtype, "the shape of x")
    weight = _channel_vector(where, "weight", weight, channels, dtype, 1.0)
    check_like(where, "mean", mean, (channels,), dtype, f"C of x is {channels}")
    check_like(where, "invstd", invstd, (channels,), dtype, f"C of x is {channels}")
    check_optional_out(where, "dx", dx, x.shape, dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, (channels,), dtype, f"C of x is {channels}")
    check_optional_out(where, "dbias", dbias, (channels,), dtype, f"C of x is {channels}")
    dummy = np.empty((1, 1, 1), dtype) if dx is None else None
    dx3 = dummy if dx is None else dx.reshape(x3.shape)
    dweight_ = np.empty(1, dtype) if dweight is None else dweight
    dbias_ = np.empty(1, dtype) if dbias is None else dbias
    if relu_out is not None:
        check_like(where, "relu_out", relu_out, x.shape, dtype, "the shape of x")
    relu_out3 = x3 if relu_out is None else relu_out.reshape(x3.shape)
    act, slope = _activation(where, relu_out is not None, negative_slope) if relu_out is not None else (0, 0.0)
    check_optional_out(where, "dresidual", dresidual, x.shape, dtype, "the shape of x")
    dres3 = x3 if dresidual is None else dresidual.reshape(x3.shape)
    dy3 = dy.reshape(x3.shape)
    if dy2 is not None:
        check_like(where, "dy2", dy2, x.shape, dtype, "the shape of x")
        check_writable(where, "dy", dy)
        if (not dy.flags.c_contiguous or np.may_share_memory(dy, dy2)
                or (dx is not None and np.may_share_memory(dy, dx))):
            raise ValueError(f"{where}: with dy2, dy (overwritten with dy + dy2) must be "
                             f"C-contiguous and share no memory with dy2 or dx")
    kernel = pick(_batchnorm_backward, _batchnorm_backward_serial, 2 * x.size)
    kernel(dy3, dy3 if dy2 is None else dy2.reshape(x3.shape), dy2 is not None, x3, weight, mean, invstd, dx3, dx is not None, dweight_,
           dweight is not None, dbias_, dbias is not None, bool(batch_stats), relu_out3, act,
           x.dtype.type(slope), dres3, dresidual is not None,
           _blocks(kernel, _batchnorm_backward, channels))
