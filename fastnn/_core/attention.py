"""Attention kernels: scaled dot-product attention per batch and head (forward and backward),
and the scaled, masked softmax over each row of the scores with its backward.

    attention_forward(q, k, v, num_heads, scale, mask, p, ctx, drop=None, p_used=None)
        per batch n and head h (b = n * num_heads + h, d = E / num_heads columns per head):
        p[b] := softmax(scale * Q_b K_b^T + mask[b // (B / M)]) row by row, then
        ctx_b := P_b V_b (P_b * drop[b] with ``drop``, kept in ``p_used``)
    attention_backward(q, k, v, num_heads, scale, p, p_used, drop, dctx, dq, dk, dv)
        the gradients of attention_forward's inputs from dctx: dv_b := P_used_b^T dC_b;
        dS := the softmax's backward of dC_b V_b^T (* drop[b]), scaled; dq_b := dS K_b,
        dk_b := dS^T Q_b (all three overwritten)
    masked_softmax_forward(scores, scale, mask, out)
        out[b, i, :] := softmax(scale * scores[b, i, :] + mask[b // (B / M), i, :])
    masked_softmax_backward(p, dp, scale, ds)
        ds := scale * p * (dp - sum(dp * p, row)), the gradient of the scores

Shapes: q (N*L, E), k and v (N*S, E), ctx/dctx/dq/dk/dv like q, k, v: 2-D with contiguous
rows but any row stride, so the column blocks of one packed (N*L, 3E) projection are passed as
they are (Q_b is rows n*L.. of q, columns h*d..); p, drop, p_used (B, L, S) with B = N *
num_heads; the mask (M, L, S) with M dividing B (M = 1: one mask for every batch and head;
M = N: per sample, shared by its heads; M = B: per head), additive (0 or -inf, or any float;
None: no mask). A row whose every entry is -inf gives NaN, as torch's softmax.

Compiled (``_attention.pxi`` in ``_blas``, rows in ``kernels/attention.h``): the attention
kernels run one task per batch and head on one thread (its float32 GEMMs on
``kernels/head_gemm.h``'s small GEMM with a per-thread scratch, the microkernel's bits; else
the microkernel or BLAS; its softmax rows while the scores are in L1), the tasks in parallel;
the softmax kernels run rows in parallel. Sums are float64 in a fixed order; float32's exp is vecmath.h's (within a few
ulp), on the difference to the row's maximum with its rounding error corrected.
"""
import numpy as np

from . import _blas, threads
from ._checks import FLOAT_DTYPES, check_float, check_like, check_out


def _mask_batches(where, mask, b, l, s, dtype):
    """The tasks per mask batch (B / M), after checking the mask; 0 without one."""
    if mask is None:
        return 0
    check_float(where, "mask", mask, ndim=3, dtype=dtype)
    if mask.shape[1:] != (l, s) or mask.shape[0] < 1 or b % mask.shape[0]:
        raise ValueError(f"{where}: mask must be (M, {l}, {s}) with M dividing {b}, got {mask.shape}")
    return b // mask.shape[0]


def _threads(work):
    return threads.get_num_threads() if work >= threads.PARALLEL_MIN_WORK else 1


def masked_softmax_forward(scores, scale, mask, out):
    """out := softmax(scale * scores + mask) over the last axis; see the module docstring."""
    where = "masked_softmax_forward"
    check_float(where, "scores", scores, ndim=3)
    check_out(where, "out", out, scores.shape, scores.dtype, "the shape of scores")
    b, l, s = scores.shape
    per = _mask_batches(where, mask, b, l, s, scores.dtype)
    if scores.size:
        np.copyto(out, scores)
        _blas._masked_softmax(out, float(scale), mask, per,
                              _threads(threads.TRANSCENDENTAL_WORK * scores.size))


def masked_softmax_backward(p, dp, scale, ds):
    """ds := scale * p * (dp - rowsum(dp * p)), the scores' gradient from the softmax output's."""
    where = "masked_softmax_backward"
    check_float(where, "p", p, ndim=3)
    check_like(where, "dp", dp, p.shape, p.dtype, "the shape of p")
    check_out(where, "ds", ds, p.shape, p.dtype, "the shape of p")
    if p.size:
        np.copyto(ds, dp)
        _blas._masked_softmax_grad(p, ds, float(scale), _threads(p.size))


def _check_rows(where, name, a, shape, dtype, writable=False):
    """A 2-D ``shape`` array of ``dtype`` whose rows are contiguous (any row stride)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES or a.dtype != dtype:
        raise TypeError(f"{where}: {name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    if a.shape != shape:
        raise ValueError(f"{where}: {name} must have shape {shape}, got {a.shape}")
    size = a.itemsize
    if not a.dtype.isnative or (a.size and (  # an empty array has no layout to speak of
            a.strides[1] != size or a.strides[0] % size or a.strides[0] < shape[1] * size)):
        raise ValueError(f"{where}: {name} {a.shape} must have contiguous rows (strides "
                         f"{a.strides})")
    if writable and not a.flags.writeable:
        raise ValueError(f"{where}: output {name} with shape {a.shape} is read-only")


def _check_heads(where, q, k, v, num_heads, p_shape):
    """(N, L, S, E) of a call, after checking q, k, v and the heads against p's shape."""
    if not isinstance(q, np.ndarray) or q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: q must be a float32 or float64 numpy.ndarray, got "
                        f"{getattr(q, 'dtype', type(q).__name__)}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"{where}: num_heads must be a positive int, got {num_heads!r}")
    if q.ndim != 2 or q.shape[1] % num_heads:
        raise ValueError(f"{where}: q must be (N*L, E) with E divisible by num_heads {num_heads}, "
                         f"got {q.shape}")
    if len(p_shape) != 3 or p_shape[0] % num_heads:
        raise ValueError(f"{where}: p must be (N*{num_heads}, L, S), got {p_shape}")
    n, l, s, e = p_shape[0] // num_heads, p_shape[1], p_shape[2], q.shape[1]
    _check_rows(where, "q", q, (n * l, e), q.dtype)
    _check_rows(where, "k", k, (n * s, e), q.dtype)
    _check_rows(where, "v", v, (n * s, e), q.dtype)
    return n, l, s, e


def attention_forward(q, k, v, num_heads, scale, mask, p, ctx, drop=None, p_used=None):
    """p := softmax(scale * Q K^T + mask) per batch and head, ctx := P V (P * drop, kept in
    p_used, with ``drop``); see the module docstring."""
    where = "attention_forward"
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where}: p must be a numpy.ndarray, got {type(p).__name__}")
    n, l, s, e = _check_heads(where, q, k, v, num_heads, p.shape)
    b = n * num_heads
    check_out(where, "p", p, (b, l, s), q.dtype, "(N * num_heads, L, S)")
    _check_rows(where, "ctx", ctx, (n * l, e), q.dtype, writable=True)
    per = _mask_batches(where, mask, b, l, s, q.dtype)
    if (drop is None) != (p_used is None):
        raise ValueError(f"{where}: give both drop and p_used, or neither")
    if drop is not None:
        check_like(where, "drop", drop, p.shape, q.dtype, "the shape of p")
        check_out(where, "p_used", p_used, p.shape, q.dtype, "the shape of p")
    if p.size:
        _blas._attention_forward(q, k, v, int(num_heads), float(scale), mask, per, p, ctx,
                                 drop, p_used)


def attention_backward(q, k, v, num_heads, scale, p, p_used, drop, dctx, dq, dk, dv):
    """dq, dk, dv := the gradients of attention_forward's q, k, v from dctx (``p_used`` None:
    the probabilities were used as they are; ``drop`` the forward's, or None)."""
    where = "attention_backward"
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where}: p must be a numpy.ndarray, got {type(p).__name__}")
    n, l, s, e = _check_heads(where, q, k, v, num_heads, p.shape)
    check_like(where, "p", p, (n * num_heads, l, s), q.dtype, "(N * num_heads, L, S)")
    for name, a in (("p_used", p_used), ("drop", drop)):
        if a is not None:
            check_like(where, name, a, p.shape, q.dtype, "the shape of p")
    _check_rows(where, "dctx", dctx, (n * l, e), q.dtype)
    _check_rows(where, "dq", dq, (n * l, e), q.dtype, writable=True)
    _check_rows(where, "dk", dk, (n * s, e), q.dtype, writable=True)
    _check_rows(where, "dv", dv, (n * s, e), q.dtype, writable=True)
    if p.size:
        _blas._attention_backward(q, k, v, int(num_heads), float(scale), p, p_used, drop, dctx,
                                  dq, dk, dv)

