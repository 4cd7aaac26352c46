"""Cross-entropy from logits with the softmax fused in: integer labels or target probabilities.

Why numba rather than Cython: the fused op is a per-row loop (max, exp-sum, normalise, pick the
label) plus a reduction over rows; numba compiles it for float32/float64 from one source, with
``prange`` over rows (row losses then summed in row order, so the value is the same for any
thread count), and no build step. Fusing saves the NumPy version's five passes and temporaries
(max, subtract, exp, sum, log, gather), and the log-sum-exp form keeps logits of +-1e4 finite. Each kernel has a serial twin for small inputs
(see :mod:`fastnn._core.activation`).

Per row m: lse = max z + log sum exp(z - max z); the hard loss is lse - z[target], the soft loss
sum(t) * lse - <t, z>; the returned value is their mean over the M rows. Labels are range-checked
inside the kernel (an out-of-range label is counted, never read), and the wrapper raises.
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_index, check_like, check_out
from ._fastmath import SAFE_FASTMATH, _exp_diff
from .activation import TRANSCENDENTAL_WORK, pick, serial_twin

threads.sync_numba_threads()


# ----------------------------------------------------------------------------------------------
# compiled kernels on (M, C); no validation here
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def _ordered_sum(values):
    # Row losses are summed in row order, not by a prange reduction, so the loss is bit-identical
    # whatever the thread count.
    total = 0.0
    for v in values:
        total += v
    return total


@njit(cache=True, fastmath={"reassoc", "nsz", "nnan"})
def _row_max(logits, m, cols):
    # reassociated (and NaN-blind) so LLVM splits the max over vector lanes; a NaN logit still
    # makes the row's loss NaN through its exponential and the sum
    top = logits[m, 0]
    for j in range(1, cols):
        top = max(top, logits[m, j])
    return top


@njit(cache=True, fastmath={"reassoc", "nsz"})
def _row_sum(probs, m, cols):
    # float64 partial sums over vector lanes instead of one add chain
    s = 0.0
    for j in range(cols):
        s += probs[m, j]
    return s


# no reassociation here: numba hands a caller's fastmath flags down to what it calls, and it
# breaks _exp_diff's exact range reduction and two-sum (the helpers above keep their own flags)
@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _softmax_cross_entropy_forward(logits, target, probs, row_loss):
    """probs := softmax(logits); row_loss[m] := lse - logits[m, target[m]]; returns (sum over
    rows of row_loss, bad labels).
    The row max and the exponential sum are split over vector lanes (reassociated): the value
    differs from a left-to-right sum by rounding only, and is still the same for any thread
    count (rows are independent, row losses summed in row order)."""
    rows, cols = logits.shape
    bad = 0
    for m in prange(rows):
        top = _row_max(logits, m, cols)
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            probs[m, j] = _exp_diff(logits[m, j], top, 0)
        s = _row_sum(probs, m, cols)
        inv = 1.0 / s
        for j in range(cols):
            probs[m, j] *= inv
        t = target[m]
        if 0 <= t < cols:
            row_loss[m] = (top + math.log(s)) - logits[m, t]
        else:
            row_loss[m] = 0.0
            bad += 1
    return _ordered_sum(row_loss), bad


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _softmax_cross_entropy_forward_plain(logits, target, probs, row_loss):
    """The row loop before the lane split (A/B reference of _set_lane_split)."""
    rows, cols = logits.shape
    bad = 0
    for m in prange(rows):
        top = logits[m, 0]
        for j in range(1, cols):
            top = max(top, logits[m, j])
        s = 0.0
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            probs[m, j] = _exp_diff(logits[m, j], top, 0)
        for j in range(cols):
            s += probs[m, j]
        inv = 1.0 / s
        for j in range(cols):
            probs[m, j] *= inv
        t = target[m]
        if 0 <= t < cols:
            row_loss[m] = (top + math.log(s)) - logits[m, t]
        else:
            row_loss[m] = 0.0
            bad += 1
    return _ordered_sum(row_loss), bad


@njit(parallel=True, cache=True)
def _softmax_cross_entropy_backward(probs, target, factor, dlogits):
    """dlogits := factor * (probs - onehot(target)); returns the count of bad labels. The
    target's entry is factor * (p - 1) rounded once (factor * p rounded first, then less factor,
    would lose p - 1's relative precision where p is near 1)."""
    rows, cols = probs.shape
    bad = 0
    for m in prange(rows):
        for j in range(cols):
            dlogits[m, j] = factor * probs[m, j]
        t = target[m]
        if 0 <= t < cols:
            dlogits[m, t] = factor * (probs[m, t] - 1.0)
        else:
            bad += 1
    return bad


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _soft_cross_entropy_forward(logits, target_probs, probs, row_loss):
    """probs := softmax(logits); row_loss[m] := sum(t) * lse - <t, logits>; returns their sum"""
    rows, cols = logits.shape
    for m in prange(rows):
        top = logits[m, 0]
        for j in range(1, cols):
            top = max(top, logits[m, j])
        s = 0.0
        for j in range(cols):  # apart from the sum, so the exponentials vectorise
            probs[m, j] = _exp_diff(logits[m, j], top, 0)
        for j in range(cols):
            s += probs[m, j]
        inv = 1.0 / s
        lse = top + math.log(s)
        row = 0.0
        for j in range(cols):
            probs[m, j] *= inv
            t = target_probs[m, j]
            row += t * (lse - logits[m, j])
        row_loss[m] = row
    return _ordered_sum(row_loss)


@njit(parallel=True, cache=True)
def _soft_cross_entropy_backward(probs, target_probs, factor, dlogits):
    """dlogits := factor * (probs * sum(t) - t), per row"""
    rows, cols = probs.shape
    for m in prange(rows):
        mass = 0.0
        for j in range(cols):
            mass += target_probs[m, j]
        for j in range(cols):
            dlogits[m, j] = factor * (probs[m, j] * mass - target_probs[m, j])


_softmax_cross_entropy_forward_serial = serial_twin(_softmax_cross_entropy_forward)
_softmax_cross_entropy_forward_plain_serial = serial_twin(_softmax_cross_entropy_forward_plain)
_LANE_SPLIT = True  # softmax CE forward on the lane-split kernels (A/B switch: _set_lane_split)


def _set_lane_split(on):
    """Tuning/A-B hook: the hard-label softmax cross-entropy forward with the row max and sum
    split over vector lanes (on) or the left-to-right row loop. Returns the previous setting."""
    global _LANE_SPLIT
    old = _LANE_SPLIT
    _LANE_SPLIT = bool(on)
    return old
_softmax_cross_entropy_backward_serial = serial_twin(_softmax_cross_entropy_backward)
_soft_cross_entropy_forward_serial = serial_twin(_soft_cross_entropy_forward)
_soft_cross_entropy_backward_serial = serial_twin(_soft_cross_entropy_backward)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

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
    per-row losses (reduction "none")."""
    where = "softmax_cross_entropy_forward"
    _logits(where, "logits", logits)
    rows, cols = logits.shape
    check_index(where, "target", target, (rows,))
    check_out(where, "probs", probs, logits.shape, logits.dtype, "the shape of logits")
    if _LANE_SPLIT:
        kernels = _softmax_cross_entropy_forward, _softmax_cross_entropy_forward_serial
    else:
        kernels = _softmax_cross_entropy_forward_plain, _softmax_cross_entropy_forward_plain_serial
    row_loss = _row_loss_out(where, row_loss, logits)
    total, bad = pick(*kernels, TRANSCENDENTAL_WORK * logits.size)(logits, target, probs, row_loss)
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
    bad = pick(_softmax_cross_entropy_backward, _softmax_cross_entropy_backward_serial, probs.size)(
        probs, target, factor, dlogits)
    _bad_labels(where, bad, target, cols)


def soft_cross_entropy_forward(logits, target_probs, probs, row_loss=None):
    """probs := softmax(logits); returns mean over rows of -<target_probs[m], log probs[m]>;
    row_loss, if given (float64 (M,)), := the per-row losses (reduction "none")."""
    where = "soft_cross_entropy_forward"
    _logits(where, "logits", logits)
    check_like(where, "target_probs", target_probs, logits.shape, logits.dtype, "the shape of logits")
    check_out(where, "probs", probs, logits.shape, logits.dtype, "the shape of logits")
    row_loss = _row_loss_out(where, row_loss, logits)
    total = pick(_soft_cross_entropy_forward, _soft_cross_entropy_forward_serial,
                 TRANSCENDENTAL_WORK * logits.size)(logits, target_probs, probs, row_loss)
    return total / logits.shape[0]


def soft_cross_entropy_backward(probs, target_probs, scale, dlogits):
    """dlogits := scale * (probs * target_probs.sum(1) - target_probs) / M."""
    where = "soft_cross_entropy_backward"
    _logits(where, "probs", probs)
    check_like(where, "target_probs", target_probs, probs.shape, probs.dtype, "the shape of probs")
    factor = _factor(where, scale, probs.shape[0])
    check_out(where, "dlogits", dlogits, probs.shape, probs.dtype, "the shape of probs")
    pick(_soft_cross_entropy_backward, _soft_cross_entropy_backward_serial, probs.size)(
        probs, target_probs, factor, dlogits)
