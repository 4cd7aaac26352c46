"""Recurrent sequence kernels (RNN, LSTM, GRU), embedding gather / scatter-add, word2vec SGNS.

Why numba: a recurrence is a loop over time whose every step is one small GEMM (h @ W_hh^T, e.g.
(32, 128) x (128, 512)) followed by elementwise gate math over (N, G*H). In Python each step
costs ~10 interpreter-level array operations (~5-10 us each: more than the arithmetic); numba
compiles the whole time loop into one call, sends the per-step product to BLAS through
``np.dot`` (numba links SciPy's BLAS, no GIL) and fuses every gate nonlinearity, the cell update
and the save-for-backward into one pass over (N, H). Cython could do the same, but numba keeps
the recurrences readable next to their math and gives float32/float64 from one source.

What is *not* here: the input projection x @ W_ih^T + b_ih for all time steps, and after the
backward sweep dW_ih, dW_hh, the biases and dx. Those are whole-sequence GEMMs ((N*T, F) sized)
that the layer runs once with BLAS; the kernels only do what must be sequential.

Layouts (batch-first, as the layers): ``xw`` (N, T, G*H) is x @ W_ih^T + b_ih; ``hs`` (N, T, H)
the hidden states h_1..h_T; gate order is PyTorch's (LSTM i, f, g, o; GRU r, z, n).
"""
import math

import numpy as np
from numba import njit, prange

from . import threads
from ._checks import check_float, check_index, check_like, check_out

threads.sync_numba_threads()


# ----------------------------------------------------------------------------------------------
# compiled kernels (no validation: the wrappers below check everything first)
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _embedding_forward(indices, weight, out):
    for m in prange(indices.shape[0]):
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


@njit(parallel=True, cache=True)
def _rnn_forward(xw, w_hh, b_hh, h0, hs):
    n_batch, n_steps, hidden = xw.shape
    h_prev = h0.copy()
    gh = np.empty((n_batch, hidden), dtype=xw.dtype)
    for t in range(n_steps):
        np.dot(h_prev, w_hh.T, gh)
        for n in prange(n_batch):
            for j in range(hidden):
                h = math.tanh(xw[n, t, j] + gh[n, j] + b_hh[j])
                hs[n, t, j] = h
                h_prev[n, j] = h


@njit(parallel=True, cache=True)
def _rnn_backward(w_hh, hs, dhs, dpre, dh0):
    n_batch, n_steps, hidden = hs.shape
    dh_next = np.zeros((n_batch, hidden), dtype=hs.dtype)
    dz = np.empty((n_batch, hidden), dtype=hs.dtype)
    for t in range(n_steps - 1, -1, -1):
        for n in prange(n_batch):
            for j in range(hidden):
                h = hs[n, t, j]
                g = (dhs[n, t, j] + dh_next[n, j]) * (1.0 - h * h)
                dz[n, j] = g
                dpre[n, t, j] = g
        np.dot(dz, w_hh, dh_next)
    dh0[:, :] = dh_next


@njit(parallel=True, cache=True)
def _lstm_forward(xw, w_hh, b_hh, h0, c0, hs, cs, tanh_cs, gates):
    n_batch, n_steps, hidden = hs.shape
    h_prev = h0.copy()
    c_prev = c0.copy()
    gh = np.empty((n_batch, 4 * hidden), dtype=xw.dtype)
    for t in range(n_steps):
        np.dot(h_prev, w_hh.T, gh)
        for n in prange(n_batch):
            for j in range(hidden):
                i = _sigmoid(xw[n, t, j] + gh[n, j] + b_hh[j])
                f = _sigmoid(xw[n, t, hidden + j] + gh[n, hidden + j] + b_hh[hidden + j])
                g = math.tanh(xw[n, t, 2 * hidden + j] + gh[n, 2 * hidden + j] + b_hh[2 * hidden + j])
                o = _sigmoid(xw[n, t, 3 * hidden + j] + gh[n, 3 * hidden + j] + b_hh[3 * hidden + j])
                c = f * c_prev[n, j] + i * g
                tc = math.tanh(c)
                h = o * tc
                gates[n, t, j] = i
                gates[n, t, hidden + j] = f
                gates[n, t, 2 * hidden + j] = g
                gates[n, t, 3 * hidden + j] = o
                cs[n, t, j] = c
                tanh_cs[n, t, j] = tc
                hs[n, t, j] = h
                c_prev[n, j] = c
                h_prev[n, j] = h


@njit(parallel=True, cache=True)
def _lstm_backward(w_hh, c0, cs, tanh_cs, gates, dhs, dcs_last, dpre, dh0, dc0):
    n_batch, n_steps, hidden = cs.shape
    dh_next = np.zeros((n_batch, hidden), dtype=cs.dtype)
    dc_next = dcs_last.copy()
    dz = np.empty((n_batch, 4 * hidden), dtype=cs.dtype)
    for t in range(n_steps - 1, -1, -1):
        for n in prange(n_batch):
            for j in range(hidden):
                i = gates[n, t, j]
                f = gates[n, t, hidden + j]
                g = gates[n, t, 2 * hidden + j]
                o = gates[n, t, 3 * hidden + j]
                tc = tanh_cs[n, t, j]
                c_prev = cs[n, t - 1, j] if t > 0 else c0[n, j]
                dh = dhs[n, t, j] + dh_next[n, j]
                dc = dc_next[n, j] + dh * o * (1.0 - tc * tc)
                di = dc * g * i * (1.0 - i)
                df = dc * c_prev * f * (1.0 - f)
                dg = dc * i * (1.0 - g * g)
                do = dh * tc * o * (1.0 - o)
                dz[n, j] = di
                dz[n, hidden + j] = df
                dz[n, 2 * hidden + j] = dg
                dz[n, 3 * hidden + j] = do
                dpre[n, t, j] = di
                dpre[n, t, hidden + j] = df
                dpre[n, t, 2 * hidden + j] = dg
                dpre[n, t, 3 * hidden + j] = do
                dc_next[n, j] = dc * f
        np.dot(dz, w_hh, dh_next)
    dh0[:, :] = dh_next
    dc0[:, :] = dc_next


@njit(parallel=True, cache=True)
def _gru_forward(xw, w_hh, b_hh, h0, hs, gates, hn):
    n_batch, n_steps, hidden = hs.shape
    h_prev = h0.copy()
    gh = np.empty((n_batch, 3 * hidden), dtype=xw.dtype)
    for t in range(n_steps):
        np.dot(h_prev, w_hh.T, gh)
        for n in prange(n_batch):
            for j in range(hidden):
                r = _sigmoid(xw[n, t, j] + gh[n, j] + b_hh[j])
                z = _sigmoid(xw[n, t, hidden + j] + gh[n, hidden + j] + b_hh[hidden + j])
                ghn = gh[n, 2 * hidden + j] + b_hh[2 * hidden + j]
                nn = math.tanh(xw[n, t, 2 * hidden + j] + r * ghn)
                h = (1.0 - z) * nn + z * h_prev[n, j]
                gates[n, t, j] = r
                gates[n, t, hidden + j] = z
                gates[n, t, 2 * hidden + j] = nn
                hn[n, t, j] = ghn
                hs[n, t, j] = h
                h_prev[n, j] = h


@njit(parallel=True, cache=True)
def _gru_backward(w_hh, h0, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    n_batch, n_steps, hidden = hs.shape
    dh_next = np.zeros((n_batch, hidden), dtype=hs.dtype)
    dz_h = np.empty((n_batch, 3 * hidden), dtype=hs.dtype)
    dh_matrix = np.empty((n_batch, hidden), dtype=hs.dtype)
    for t in range(n_steps - 1, -1, -1):
        for n in prange(n_batch):
            for j in range(hidden):
                r = gates[n, t, j]
                z = gates[n, t, hidden + j]
                nn = gates[n, t, 2 * hidden + j]
                h_prev = hs[n, t - 1, j] if t > 0 else h0[n, j]
                dh = dhs[n, t, j] + dh_next[n, j]
                dn = dh * (1.0 - z) * (1.0 - nn * nn)
                dz = dh * (h_prev - nn) * z * (1.0 - z)
                dr = dn * hn[n, t, j] * r * (1.0 - r)
                dpre_x[n, t, j] = dr
                dpre_x[n, t, hidden + j] = dz
                dpre_x[n, t, 2 * hidden + j] = dn
                dpre_h[n, t, j] = dr
                dpre_h[n, t, hidden + j] = dz
                dpre_h[n, t, 2 * hidden + j] = dn * r
                dz_h[n, j] = dr
                dz_h[n, hidden + j] = dz
                dz_h[n, 2 * hidden + j] = dn * r
                # the direct path h_t = ... + z * h_prev; the matrix path is added below
                dh_next[n, j] = dh * z
        np.dot(dz_h, w_hh, dh_matrix)
        for n in prange(n_batch):
            for j in range(hidden):
                dh_next[n, j] += dh_matrix[n, j]
    dh0[:, :] = dh_next


@njit(cache=True)
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


def _check_seq(where, xw, w_hh, b_hh, gates_per_unit):
    check_float(where, "xw", xw, ndim=3)
    dtype = xw.dtype
    check_float(where, "w_hh", w_hh, ndim=2, dtype=dtype)
    gh, hidden = w_hh.shape
    if gh != gates_per_unit * hidden:
        raise ValueError(f"{where}: w_hh must have shape ({gates_per_unit}*H, H), got {w_hh.shape}")
    if xw.shape[2] != gh:
        raise ValueError(f"{where}: xw must have shape (N, T, {gh}) to match w_hh {w_hh.shape}, "
                         f"got {xw.shape}")
    check_like(where, "b_hh", b_hh, (gh,), dtype)
    return xw.shape[0], xw.shape[1], hidden, dtype


def rnn_forward(xw, w_hh, b_hh, h0, hs):
    """hs[:, t] := tanh(xw[:, t] + hs[:, t-1] @ w_hh.T + b_hh), hs[:, -1] read as h0;
    xw (N, T, H) = x @ w_ih.T + b_ih, w_hh (H, H), h0 (N, H), hs (N, T, H)."""
    where = "rnn_forward"
    n, t, h, dtype = _check_seq(where, xw, w_hh, b_hh, 1)
    check_like(where, "h0", h0, (n, h), dtype)
    check_out(where, "hs", hs, (n, t, h), dtype)
    _rnn_forward(xw, w_hh, b_hh, h0, hs)
    return hs


def rnn_backward(w_hh, hs, dhs, dpre, dh0):
    """Backprop through time: dpre := dL/d(pre-activation) (N, T, H) given dhs = dL/dhs (direct,
    per step); dh0 := dL/dh0. Weight and input gradients are GEMMs with dpre (the caller's)."""
    where = "rnn_backward"
    check_float(where, "hs", hs, ndim=3)
    n, t, h = hs.shape
    check_like(where, "w_hh", w_hh, (h, h), hs.dtype)
    check_like(where, "dhs", dhs, (n, t, h), hs.dtype)
    check_out(where, "dpre", dpre, (n, t, h), hs.dtype)
    check_out(where, "dh0", dh0, (n, h), hs.dtype)
    _rnn_backward(w_hh, hs, dhs, dpre, dh0)
    return dpre


def lstm_forward(xw, w_hh, b_hh, h0, c0, hs, cs, tanh_cs, gates):
    """(i, f, g, o) := (s, s, tanh, s)(xw[:, t] + h_{t-1} @ w_hh.T + b_hh); c_t := f*c_{t-1} + i*g;
    h_t := o*tanh(c_t). Writes hs, cs, tanh_cs (N, T, H) and the activated gates (N, T, 4H)."""
    where = "lstm_forward"
    n, t, h, dtype = _check_seq(where, xw, w_hh, b_hh, 4)
    check_like(where, "h0", h0, (n, h), dtype)
    check_like(where, "c0", c0, (n, h), dtype)
    for name, a in (("hs", hs), ("cs", cs), ("tanh_cs", tanh_cs)):
        check_out(where, name, a, (n, t, h), dtype)
    check_out(where, "gates", gates, (n, t, 4 * h), dtype)
    _lstm_forward(xw, w_hh, b_hh, h0, c0, hs, cs, tanh_cs, gates)
    return hs


def lstm_backward(w_hh, c0, cs, tanh_cs, gates, dhs, dc_last, dpre, dh0, dc0):
    """Backprop through time from lstm_forward's saved cs, tanh_cs, gates: dpre (N, T, 4H) :=
    dL/d(gate pre-activations); dh0, dc0 := dL/dh0, dL/dc0; dc_last is dL/dc_T (zeros usually)."""
    where = "lstm_backward"
    check_float(where, "cs", cs, ndim=3)
    n, t, h = cs.shape
    dtype = cs.dtype
    check_like(where, "w_hh", w_hh, (4 * h, h), dtype)
    check_like(where, "c0", c0, (n, h), dtype)
    check_like(where, "tanh_cs", tanh_cs, (n, t, h), dtype)
    check_like(where, "gates", gates, (n, t, 4 * h), dtype)
    check_like(where, "dhs", dhs, (n, t, h), dtype)
    check_like(where, "dc_last", dc_last, (n, h), dtype)
    check_out(where, "dpre", dpre, (n, t, 4 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    check_out(where, "dc0", dc0, (n, h), dtype)
    _lstm_backward(w_hh, c0, cs, tanh_cs, gates, dhs, dc_last, dpre, dh0, dc0)
    return dpre


def gru_forward(xw, w_hh, b_hh, h0, hs, gates, hn):
    """r, z := s(xw_rz + h @ W_hrz.T + b_hrz); hn := h @ W_hn.T + b_hn; n := tanh(xw_n + r*hn);
    h_t := (1-z)*n + z*h_{t-1}. Writes hs, hn (N, T, H) and gates r, z, n (N, T, 3H)."""
    where = "gru_forward"
    n, t, h, dtype = _check_seq(where, xw, w_hh, b_hh, 3)
    check_like(where, "h0", h0, (n, h), dtype)
    check_out(where, "hs", hs, (n, t, h), dtype)
    check_out(where, "gates", gates, (n, t, 3 * h), dtype)
    check_out(where, "hn", hn, (n, t, h), dtype)
    _gru_forward(xw, w_hh, b_hh, h0, hs, gates, hn)
    return hs


def gru_backward(w_hh, h0, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    """Backprop through time: dpre_x (N, T, 3H) := dL/d(xw) and dpre_h := dL/d(h @ W_hh.T + b_hh)
    (they differ in the n block by the factor r); dh0 := dL/dh0."""
    where = "gru_backward"
    check_float(where, "hs", hs, ndim=3)
    n, t, h = hs.shape
    dtype = hs.dtype
    check_like(where, "w_hh", w_hh, (3 * h, h), dtype)
    check_like(where, "h0", h0, (n, h), dtype)
    check_like(where, "gates", gates, (n, t, 3 * h), dtype)
    check_like(where, "hn", hn, (n, t, h), dtype)
    check_like(where, "dhs", dhs, (n, t, h), dtype)
    check_out(where, "dpre_x", dpre_x, (n, t, 3 * h), dtype)
    check_out(where, "dpre_h", dpre_h, (n, t, 3 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    _gru_backward(w_hh, h0, hs, gates, hn, dhs, dpre_x, dpre_h, dh0)
    return dpre_x


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
