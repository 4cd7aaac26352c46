"""Cross-entropy from logits with the softmax fused in, with target probabilities (the integer-label
version is compiled at install: :mod:`fastnn._core.basic`).

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

from numba import njit, prange

from . import threads
from ._checks import check_like, check_out
from ._fastmath import SAFE_FASTMATH, _exp_diff
from .activation import TRANSCENDENTAL_WORK, pick, serial_twin
from .basic import _factor, _logits, _row_loss_out

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


_soft_cross_entropy_forward_serial = serial_twin(_soft_cross_entropy_forward)
_soft_cross_entropy_backward_serial = serial_twin(_soft_cross_entropy_backward)


# ----------------------------------------------------------------------------------------------
# public wrappers
# ----------------------------------------------------------------------------------------------

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
