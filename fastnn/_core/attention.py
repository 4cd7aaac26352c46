"""Attention kernels: the scaled, masked softmax over each row of the scores and its backward.

    masked_softmax_forward(scores, scale, mask, out)
        out[b, i, :] := softmax(scale * scores[b, i, :] + mask[b % mask_batches, i, :]) where
        mask is additive (0 or -inf, or any float; None: no mask); a row whose every entry is
        -inf gives NaN, as torch's softmax
    masked_softmax_backward(p, dp, scale, ds)
        ds := scale * p * (dp - sum(dp * p, row)), the gradient of the scores

scores/out (B, L, S) with B = batch * heads; the mask (M, L, S) with M dividing B (M = 1: one
mask for every batch and head; M = batch: per sample, shared by its heads; M = B: per head).
Rows run in parallel: the scaled, masked row written once, then its exponentials (the vectorised
float32 exp of ``_fastmath``, within a few ulp), their float64 sum and the normalisation.
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_like, check_out
from ._fastmath import SAFE_FASTMATH, _exp_diff
from .activation import TRANSCENDENTAL_WORK, pick, serial_twin

threads.sync_numba_threads()


@njit(parallel=True, cache=True, error_model="numpy", fastmath=SAFE_FASTMATH)
def _masked_softmax_forward(scores, scale, mask, has_mask, per, out):
    b, l, s = scores.shape
    for r in prange(b * l):
        i = r % l
        k = r // l
        mb = (k // per) if has_mask else 0
        top = scale * scores[k, i, 0]  # in the scores' dtype: the float32 exp needs both so
        if has_mask:
            top += mask[mb, i, 0]
        for j in range(s):
            v = scale * scores[k, i, j]
            if has_mask:
                v += mask[mb, i, j]
            out[k, i, j] = v
            top = max(top, v)
        for j in range(s):  # apart from the sum, so the exponentials vectorise
            out[k, i, j] = _exp_diff(out[k, i, j], top, 0)
        total = 0.0
        for j in range(s):
            total += out[k, i, j]
        inv = 1.0 / total
        for j in range(s):
            out[k, i, j] *= inv


@njit(parallel=True, cache=True, error_model="numpy")
def _masked_softmax_backward(p, dp, scale, ds):
    b, l, s = p.shape
    for r in prange(b * l):
        i = r % l
        k = r // l
        dot = 0.0
        for j in range(s):
            dot += dp[k, i, j] * p[k, i, j]
        for j in range(s):
            ds[k, i, j] = scale * p[k, i, j] * (dp[k, i, j] - dot)


_masked_softmax_forward_serial = serial_twin(_masked_softmax_forward)
_masked_softmax_backward_serial = serial_twin(_masked_softmax_backward)


def masked_softmax_forward(scores, scale, mask, out):
    """out := softmax(scale * scores + mask) over the last axis; see the module docstring."""
    where = "masked_softmax_forward"
    check_float(where, "scores", scores, ndim=3)
    check_out(where, "out", out, scores.shape, scores.dtype, "the shape of scores")
    b, l, s = scores.shape
    if mask is None:
        m, per, has = np.zeros((1, 1, 1), scores.dtype), 1, False
    else:
        check_float(where, "mask", mask, ndim=3, dtype=scores.dtype)
        if mask.shape[1:] != (l, s) or mask.shape[0] < 1 or b % mask.shape[0]:
            raise ValueError(f"{where}: mask must be (M, {l}, {s}) with M dividing {b}, got {mask.shape}")
        m, per, has = mask, b // mask.shape[0], True
    if scores.size:
        pick(_masked_softmax_forward, _masked_softmax_forward_serial, TRANSCENDENTAL_WORK * scores.size)(
            scores, scores.dtype.type(scale), m, has, per, out)


def masked_softmax_backward(p, dp, scale, ds):
    """ds := scale * p * (dp - rowsum(dp * p)), the scores' gradient from the softmax output's."""
    where = "masked_softmax_backward"
    check_float(where, "p", p, ndim=3)
    check_like(where, "dp", dp, p.shape, p.dtype, "the shape of p")
    check_out(where, "ds", ds, p.shape, p.dtype, "the shape of p")
    if p.size:
        pick(_masked_softmax_backward, _masked_softmax_backward_serial, p.size)(
            p, dp, p.dtype.type(scale), ds)
