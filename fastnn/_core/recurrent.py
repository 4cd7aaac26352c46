"""Embedding gather / scatter-add and word2vec SGNS (numba). The RNN/LSTM/GRU sequence kernels
moved to ``_recurrent.pyx`` (Cython: one nogil call per sequence, W_hh packed once into panels of
an AVX-512 register-tiled product, no thread pool but OpenMP's).

Why numba here: these loops are gathers and scatters over a few rows, serial on purpose (waking a
thread team costs more than they take), and readable next to their math.
"""
import math

import numpy as np
from numba import njit

from . import threads
from ._checks import check_float, check_index, check_like, check_out

threads.sync_numba_threads()


# ----------------------------------------------------------------------------------------------
# compiled kernels (no validation: the wrappers below check everything first)
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def _embedding_forward(indices, weight, out):
    # Serial: a gather of (N*T, D) rows is memory-bound and over in microseconds; waking a
    # thread team costs more than it saves at these sizes.
    for m in range(indices.shape[0]):
        row = indices[m]
        for d in range(weight.shape[1]):
            out[m, d] = weight[row, d]


@njit(cache=True)
def _embedding_backward(indices, dy, dweight):
    # Serial on purpose: repeated indices hit the same row, and the rows used are few.
    for m in range(indices.shape[0]):
        row = indices[m]
        for d in range(dy.shape[1]):
            dweight[row, d] += dy[m, d]


@njit(inline="always")
def _sigmoid(v):
    # Stable for both signs: exp of a non-positive number never overflows.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True, error_model="numpy")
def _sgns_step(w_in, w_out, centers, contexts, negatives, lr, grad_in):
    """One SGD pass of skip-gram with negative sampling over the given (centre, context) pairs;
    touches only the rows used. Returns the summed loss."""
    dim = w_in.shape[1]
    total = 0.0
    for p in range(centers.shape[0]):
        c = centers[p]
        grad_in[:] = 0.0
        for k in range(negatives.shape[1] + 1):
            if k == 0:
                o = contexts[p]
                label = 1.0
            else:
                o = negatives[p, k - 1]
                label = 0.0
            score = 0.0
            for d in range(dim):
                score += w_in[c, d] * w_out[o, d]
            s = _sigmoid(score)
            if label > 0.5:
                total -= math.log(max(s, 1e-12))
            else:
                total -= math.log(max(1.0 - s, 1e-12))
            g = lr * (s - label)
            for d in range(dim):
                grad_in[d] += g * w_out[o, d]
                w_out[o, d] -= g * w_in[c, d]
        for d in range(dim):
            w_in[c, d] -= grad_in[d]
    return total


# ----------------------------------------------------------------------------------------------
# public wrappers: validate, then call compiled code
# ----------------------------------------------------------------------------------------------

def _check_indices(where, indices, num_rows):
    check_index(where, "indices", indices)
    if indices.ndim != 1:
        raise ValueError(f"{where}: indices must be 1-D, got shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_rows):
        raise ValueError(f"{where}: indices must lie in [0, {num_rows}), got values in "
                         f"[{indices.min()}, {indices.max()}]")


def embedding_forward(indices, weight, out):
    """out[m] := weight[indices[m]]; indices int64 (M,), weight (V, D), out (M, D)."""
    where = "embedding_forward"
    check_float(where, "weight", weight, ndim=2)
    _check_indices(where, indices, weight.shape[0])
    check_out(where, "out", out, (indices.shape[0], weight.shape[1]), weight.dtype)
    _embedding_forward(indices, weight, out)
    return out


def embedding_backward(indices, dy, dweight):
    """dweight[indices[m]] += dy[m] (scatter-add; repeated indices add up)."""
    where = "embedding_backward"
    check_float(where, "dweight", dweight, ndim=2)
    _check_indices(where, indices, dweight.shape[0])
    check_like(where, "dy", dy, (indices.shape[0], dweight.shape[1]), dweight.dtype)
    check_out(where, "dweight", dweight, dweight.shape, dweight.dtype)
    _embedding_backward(indices, dy, dweight)
    return dweight


def sgns_step(w_in, w_out, centers, contexts, negatives, lr):
    """Skip-gram negative-sampling SGD, pair by pair: for each (c, o) and negatives n_k,
    loss = -log s(u_c.v_o) - sum_k log s(-u_c.v_nk); u = w_in rows, v = w_out rows, updated in
    place (only the rows used). Returns the summed loss over pairs."""
    where = "sgns_step"
    check_float(where, "w_in", w_in, ndim=2)
    check_like(where, "w_out", w_out, w_in.shape, w_in.dtype)
    _check_indices(where, centers, w_in.shape[0])
    check_index(where, "contexts", contexts, shape=centers.shape)
    check_index(where, "negatives", negatives)
    if negatives.ndim != 2 or negatives.shape[0] != centers.shape[0]:
        raise ValueError(f"{where}: negatives must have shape ({centers.shape[0]}, k), got {negatives.shape}")
    for name, a in (("contexts", contexts), ("negatives", negatives)):
        if a.size and (a.min() < 0 or a.max() >= w_in.shape[0]):
            raise ValueError(f"{where}: {name} must lie in [0, {w_in.shape[0]}), got values in "
                             f"[{a.min()}, {a.max()}]")
    grad_in = np.empty(w_in.shape[1], dtype=w_in.dtype)
    return float(_sgns_step(w_in, w_out, centers, contexts, negatives, float(lr), grad_in))


@njit(cache=True)
def _lookup_matches(table, ids, x):
    """True when x (M, F) equals table[ids] row for row (NaN never equal, as np.array_equal):
    the exact check of an Embedding's lookup hint without materialising table[ids]. Ids outside
    the table give False. Serial, stops at the first difference."""
    v, f = table.shape
    if x.shape[0] != ids.shape[0] or x.shape[1] != f:
        return False
    for m in range(ids.shape[0]):
        row = ids[m]
        if row < 0 or row >= v:
            return False
        same = True
        for j in range(f):  # no early exit inside the row, so the compare vectorises
            same &= x[m, j] == table[row, j]
        if not same:
            return False
    return True
