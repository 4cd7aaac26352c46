"""Recurrent sequence kernels (RNN, LSTM, GRU), embedding gather / scatter-add, word2vec SGNS.

Why numba: a recurrence is a loop over time whose every step is one small GEMM (h @ W_hh^T, e.g.
(32, 128) x (128, 512)) followed by elementwise gate math over (N, G*H). In Python each step
costs ~10 interpreter-level array operations (~5-10 us each: more than the arithmetic); numba
compiles the whole time loop into one call and fuses every gate nonlinearity, the cell update
and the save-for-backward into one pass over (N, H).

The per-step product is numba's own register-blocked loop (``_matmul_into``), not ``np.dot``:
``np.dot`` in numba calls SciPy's OpenBLAS, a second BLAS with its own thread pool next to
NumPy's, and on a loaded 2-core machine the two pools plus numba's OpenMP team spun against each
other (an LSTM backward went from ~5 ms to ~480 ms). At these sizes the plain loop runs at ~80%
of single-threaded sgemm (measured 71 vs 59 us for 32x128x512; 2-row blocking since: 42 us) and touches no thread pool. Cython could do the same, but numba keeps
the recurrences readable next to their math and gives float32/float64 from one source.

The time loops are not split per step: a step is too small to share (the (N, G*H) gate sweep
takes microseconds), and alternating a thread team with BLAS's own threads 32 times per call made
both spin against each other (measured ~100x slower on 2 busy cores). Batch rows, though, never
interact inside a recurrence, so each thread runs the whole time loop for its own block of rows
(``_row_blocks``): one parallel region per call.
``error_model="numpy"`` drops numba's divide-by-zero check, whose branch stops LLVM from
vectorising the gate loops (the rational tanh divides).

What is *not* here: the input projection x @ W_ih^T + b_ih for all time steps, and after the
backward sweep dW_ih, dW_hh, the biases and dx. Those are whole-sequence GEMMs ((N*T, F) sized)
that the layer runs once with BLAS; the kernels only do what must be sequential.

Layouts are time-major, (T, N, .): then step t's slice of every buffer is one contiguous (N, .)
block, so the per-step BLAS product writes straight into the saved gates and reads the previous
hidden state in place (no per-step copies). ``xw`` (T, N, G*H) is x @ W_ih^T + b_ih; ``hs``
(T+1, N, H) holds h_0..h_T (the caller puts h0 in hs[0]); gate order is PyTorch's (LSTM i, f, g,
o; GRU r, z, n). The layers transpose once at the edges.
"""
import math

import numpy as np
from numba import get_num_threads, njit, prange

from . import threads
from ._checks import check_float, check_index, check_like, check_out
from ._fastmath import _fast_sigmoid, _fast_tanh

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


@njit(cache=True, error_model="numpy", fastmath=True)
def _matmul_into(a, b, out):
    """out := a @ b; a (M, K), b (K, N), all C-contiguous. Register-blocked over 4 rows of b and
    2 rows of a: each loaded element of b serves two output rows, which doubled the throughput
    (16x128 @ 128x512 on one core: 52 -> 104 GFLOP/s). An odd last row runs alone, with the
    same sum per entry."""
    m_rows, k_dim = a.shape
    n_cols = b.shape[1]
    m = 0
    while m + 2 <= m_rows:
        o0, o1 = out[m], out[m + 1]
        for j in range(n_cols):
            o0[j] = 0
            o1[j] = 0
        k = 0
        while k + 4 <= k_dim:
            a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            c0, c1, c2, c3 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for j in range(n_cols):
                x0, x1, x2, x3 = b0[j], b1[j], b2[j], b3[j]
                o0[j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
                o1[j] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3
            k += 4
        while k < k_dim:
            a0, c0, b0 = a[m, k], a[m + 1, k], b[k]
            for j in range(n_cols):
                o0[j] += a0 * b0[j]
                o1[j] += c0 * b0[j]
            k += 1
        m += 2
    if m < m_rows:
        o = out[m]
        for j in range(n_cols):
            o[j] = 0
        k = 0
        while k + 4 <= k_dim:
            a0, a1, a2, a3 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for j in range(n_cols):
                o[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j]
            k += 4
        while k < k_dim:
            a0, b0 = a[m, k], b[k]
            for j in range(n_cols):
                o[j] += a0 * b0[j]
            k += 1


# Batch rows are independent through a whole recurrence, so each thread takes a block of rows
# [lo, hi) and runs the entire time loop on it: one parallel region per call, no barrier per
# step, and each step's product (hi - lo, H) x (H, G*H) stays on one core.
def _row_blocks(n_rows):
    # read here, not in the kernels: numba cannot cache a function that calls get_num_threads
    return max(1, min(get_num_threads(), n_rows))


@njit(cache=True, error_model="numpy")
def _rnn_forward_rows(xw, w_t, b_hh, hs, lo, hi):
    n_steps, _, hidden = xw.shape
    for t in range(n_steps):
        h = hs[t + 1]
        _matmul_into(hs[t, lo:hi], w_t, h[lo:hi])
        for n in range(lo, hi):
            h_row, x_row = h[n], xw[t, n]
            for j in range(hidden):
                h_row[j] = _fast_tanh(h_row[j] + x_row[j] + b_hh[j])


@njit(cache=True, error_model="numpy", parallel=True)
def _rnn_forward(xw, w_hh, b_hh, hs, blocks):
    n_batch = xw.shape[1]
    w_t = np.ascontiguousarray(w_hh.T)  # (H, G*H): once per call
    for b in prange(blocks):
        _rnn_forward_rows(xw, w_t, b_hh, hs, b * n_batch // blocks, (b + 1) * n_batch // blocks)


@njit(cache=True, error_model="numpy")
def _rnn_backward_rows(w_hh, hs, dhs, dpre, dh, lo, hi):
    n_steps, _, hidden = dhs.shape
    dh[lo:hi] = 0.0
    for t in range(n_steps - 1, -1, -1):
        for n in range(lo, hi):
            d_row, h_row, dh_row, dy_row = dpre[t, n], hs[t + 1, n], dh[n], dhs[t, n]
            for j in range(hidden):
                d_row[j] = (dy_row[j] + dh_row[j]) * (1 - h_row[j] * h_row[j])
        _matmul_into(dpre[t, lo:hi], w_hh, dh[lo:hi])


@njit(cache=True, error_model="numpy", parallel=True)
def _rnn_backward(w_hh, hs, dhs, dpre, dh, blocks):
    n_batch = dhs.shape[1]
    for b in prange(blocks):
        _rnn_backward_rows(w_hh, hs, dhs, dpre, dh, b * n_batch // blocks,
                           (b + 1) * n_batch // blocks)


@njit(cache=True, error_model="numpy")
def _lstm_forward_rows(xw, w_t, b_hh, hs, cs, gates, lo, hi):
    n_steps, _, four_h = xw.shape
    hidden = four_h // 4
    for t in range(n_steps):
        _matmul_into(hs[t, lo:hi], w_t, gates[t, lo:hi])
        for n in range(lo, hi):
            g_row, x_row = gates[t, n], xw[t, n]
            # two simple sweeps (few arrays each) so LLVM vectorises them
            for k in range(2 * hidden):
                g_row[k] = _fast_sigmoid(g_row[k] + x_row[k] + b_hh[k])
            for k in range(2 * hidden, 3 * hidden):
                g_row[k] = _fast_tanh(g_row[k] + x_row[k] + b_hh[k])
            for k in range(3 * hidden, four_h):
                g_row[k] = _fast_sigmoid(g_row[k] + x_row[k] + b_hh[k])
            c_prev, c_row, h_row = cs[t, n], cs[t + 1, n], hs[t + 1, n]
            for j in range(hidden):
                c = g_row[hidden + j] * c_prev[j] + g_row[j] * g_row[2 * hidden + j]
                c_row[j] = c
                h_row[j] = g_row[3 * hidden + j] * _fast_tanh(c)


@njit(cache=True, error_model="numpy", parallel=True)
def _lstm_forward(xw, w_hh, b_hh, hs, cs, gates, blocks):
    n_batch = xw.shape[1]
    w_t = np.ascontiguousarray(w_hh.T)  # (H, G*H): once per call
    for b in prange(blocks):
        _lstm_forward_rows(xw, w_t, b_hh, hs, cs, gates, b * n_batch // blocks,
                           (b + 1) * n_batch // blocks)


@njit(cache=True, error_model="numpy")
def _lstm_backward_rows(w_hh, cs, gates, dhs, dpre, dh, dc, lo, hi):
    n_steps, _, hidden = dhs.shape
    dh[lo:hi] = 0.0
    dc[lo:hi] = 0.0
    for t in range(n_steps - 1, -1, -1):
        for n in range(lo, hi):
            g_row, d_row, dy_row = gates[t, n], dpre[t, n], dhs[t, n]
            c_prev, c_row, dh_row, dc_row = cs[t, n], cs[t + 1, n], dh[n], dc[n]
            for j in range(hidden):
                i = g_row[j]
                f = g_row[hidden + j]
                g = g_row[2 * hidden + j]
                o = g_row[3 * hidden + j]
                tc = _fast_tanh(c_row[j])
                dhv = dy_row[j] + dh_row[j]
                dcv = dc_row[j] + dhv * o * (1 - tc * tc)
                d_row[j] = dcv * g * i * (1 - i)
                d_row[hidden + j] = dcv * c_prev[j] * f * (1 - f)
                d_row[2 * hidden + j] = dcv * i * (1 - g * g)
                d_row[3 * hidden + j] = dhv * tc * o * (1 - o)
                dc_row[j] = dcv * f
        _matmul_into(dpre[t, lo:hi], w_hh, dh[lo:hi])


@njit(cache=True, error_model="numpy", parallel=True)
def _lstm_backward(w_hh, cs, gates, dhs, dpre, dh, dc, blocks):
    n_batch = dhs.shape[1]
    for b in prange(blocks):
        _lstm_backward_rows(w_hh, cs, gates, dhs, dpre, dh, dc, b * n_batch // blocks,
                            (b + 1) * n_batch // blocks)


@njit(cache=True, error_model="numpy")
def _gru_forward_rows(xw, w_t, b_hh, hs, gates, hn, lo, hi):
    n_steps, _, three_h = xw.shape
    hidden = three_h // 3
    for t in range(n_steps):
        _matmul_into(hs[t, lo:hi], w_t, gates[t, lo:hi])
        for n in range(lo, hi):
            g_row, x_row, hn_row = gates[t, n], xw[t, n], hn[t, n]
            for k in range(2 * hidden):
                g_row[k] = _fast_sigmoid(g_row[k] + x_row[k] + b_hh[k])
            for j in range(hidden):
                hn_row[j] = g_row[2 * hidden + j] + b_hh[2 * hidden + j]
            for j in range(hidden):
                g_row[2 * hidden + j] = _fast_tanh(x_row[2 * hidden + j] + g_row[j] * hn_row[j])
            h_prev, h_row = hs[t, n], hs[t + 1, n]
            for j in range(hidden):
                z = g_row[hidden + j]
                h_row[j] = (1 - z) * g_row[2 * hidden + j] + z * h_prev[j]


@njit(cache=True, error_model="numpy", parallel=True)
def _gru_forward(xw, w_hh, b_hh, hs, gates, hn, blocks):
    n_batch = xw.shape[1]
    w_t = np.ascontiguousarray(w_hh.T)  # (H, G*H): once per call
    for b in prange(blocks):
        _gru_forward_rows(xw, w_t, b_hh, hs, gates, hn, b * n_batch // blocks,
                          (b + 1) * n_batch // blocks)


@njit(cache=True, error_model="numpy")
def _gru_backward_rows(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh, lo, hi):
    n_steps, _, hidden = dhs.shape
    dh[lo:hi] = 0.0
    dh_matrix = np.empty((hi - lo, hidden), dh.dtype)  # once per call, reused by every step
    for t in range(n_steps - 1, -1, -1):
        for n in range(lo, hi):
            g_row, dx_row, dh_pre_row = gates[t, n], dpre_x[t, n], dpre_h[t, n]
            h_prev, hn_row, dy_row, dh_row = hs[t, n], hn[t, n], dhs[t, n], dh[n]
            for j in range(hidden):
                r = g_row[j]
                z = g_row[hidden + j]
                nn = g_row[2 * hidden + j]
                dhv = dy_row[j] + dh_row[j]
                dn = dhv * (1 - z) * (1 - nn * nn)
                dz = dhv * (h_prev[j] - nn) * z * (1 - z)
                dr = dn * hn_row[j] * r * (1 - r)
                dx_row[j] = dr
                dx_row[hidden + j] = dz
                dx_row[2 * hidden + j] = dn
                dh_pre_row[j] = dr
                dh_pre_row[hidden + j] = dz
                dh_pre_row[2 * hidden + j] = dn * r
                dh_row[j] = dhv * z  # the direct path h_t = ... + z * h_{t-1}
        _matmul_into(dpre_h[t, lo:hi], w_hh, dh_matrix)
        dh[lo:hi] += dh_matrix


@njit(cache=True, error_model="numpy", parallel=True)
def _gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh, blocks):
    n_batch = dhs.shape[1]
    for b in prange(blocks):
        _gru_backward_rows(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh, b * n_batch // blocks,
                           (b + 1) * n_batch // blocks)


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


def _check_seq(where, xw, w_hh, b_hh, gates_per_unit):
    check_float(where, "xw", xw, ndim=3)
    dtype = xw.dtype
    check_float(where, "w_hh", w_hh, ndim=2, dtype=dtype)
    gh, hidden = w_hh.shape
    if gh != gates_per_unit * hidden:
        raise ValueError(f"{where}: w_hh must have shape ({gates_per_unit}*H, H), got {w_hh.shape}")
    if xw.shape[2] != gh:
        raise ValueError(f"{where}: xw must have shape (T, N, {gh}) to match w_hh {w_hh.shape}, "
                         f"got {xw.shape}")
    check_like(where, "b_hh", b_hh, (gh,), dtype)
    return xw.shape[0], xw.shape[1], hidden, dtype


def rnn_forward(xw, w_hh, b_hh, hs):
    """hs[t+1] := tanh(xw[t] + hs[t] @ w_hh.T + b_hh), t < T; time-major: xw (T, N, H) =
    x @ w_ih.T + b_ih, hs (T+1, N, H) with hs[0] = h0 given."""
    where = "rnn_forward"
    t, n, h, dtype = _check_seq(where, xw, w_hh, b_hh, 1)
    check_out(where, "hs", hs, (t + 1, n, h), dtype, "T+1 steps: hs[0] is h0")
    _rnn_forward(xw, w_hh, b_hh, hs, _row_blocks(n))
    return hs


def rnn_backward(w_hh, hs, dhs, dpre, dh0):
    """Backprop through time: dpre (T, N, H) := dL/d(pre-activations) given dhs (T, N, H) =
    dL/dh_{1..T} (direct, per step); dh0 := dL/dh0. Weight and input gradients are GEMMs with
    dpre (the caller's)."""
    where = "rnn_backward"
    check_float(where, "dhs", dhs, ndim=3)
    t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (h, h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    check_out(where, "dpre", dpre, (t, n, h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    _rnn_backward(w_hh, hs, dhs, dpre, dh0, _row_blocks(n))
    return dpre


def lstm_forward(xw, w_hh, b_hh, hs, cs, gates):
    """(i, f, g, o) := (s, s, tanh, s)(xw[t] + h_t @ w_hh.T + b_hh); c_{t+1} := f*c_t + i*g;
    h_{t+1} := o*tanh(c_{t+1}). Time-major: xw, gates (T, N, 4H) (gates := activated i, f, g, o);
    hs, cs (T+1, N, H) with hs[0] = h0, cs[0] = c0 given."""
    where = "lstm_forward"
    t, n, h, dtype = _check_seq(where, xw, w_hh, b_hh, 4)
    check_out(where, "hs", hs, (t + 1, n, h), dtype, "T+1 steps: hs[0] is h0")
    check_out(where, "cs", cs, (t + 1, n, h), dtype, "T+1 steps: cs[0] is c0")
    check_out(where, "gates", gates, (t, n, 4 * h), dtype)
    _lstm_forward(xw, w_hh, b_hh, hs, cs, gates, _row_blocks(n))
    return hs


def lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0):
    """Backprop through time from lstm_forward's cs and gates: dpre (T, N, 4H) := dL/d(gate
    pre-activations) given dhs (T, N, H); dh0, dc0 := dL/dh0, dL/dc0."""
    where = "lstm_backward"
    check_float(where, "dhs", dhs, ndim=3)
    t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (4 * h, h), dtype)
    check_like(where, "cs", cs, (t + 1, n, h), dtype)
    check_like(where, "gates", gates, (t, n, 4 * h), dtype)
    check_out(where, "dpre", dpre, (t, n, 4 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    check_out(where, "dc0", dc0, (n, h), dtype)
    _lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0, _row_blocks(n))
    return dpre


def gru_forward(xw, w_hh, b_hh, hs, gates, hn):
    """r, z := s(xw_rz + h_t @ W_hrz.T + b_hrz); hn := h_t @ W_hn.T + b_hn; n := tanh(xw_n + r*hn);
    h_{t+1} := (1-z)*n + z*h_t. Time-major: xw, gates (T, N, 3H) (gates := r, z, n), hn (T, N, H),
    hs (T+1, N, H) with hs[0] = h0 given."""
    where = "gru_forward"
    t, n, h, dtype = _check_seq(where, xw, w_hh, b_hh, 3)
    check_out(where, "hs", hs, (t + 1, n, h), dtype, "T+1 steps: hs[0] is h0")
    check_out(where, "gates", gates, (t, n, 3 * h), dtype)
    check_out(where, "hn", hn, (t, n, h), dtype)
    _gru_forward(xw, w_hh, b_hh, hs, gates, hn, _row_blocks(n))
    return hs


def gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    """Backprop through time: dpre_x (T, N, 3H) := dL/d(xw) and dpre_h := dL/d(h @ w_hh.T + b_hh)
    (they differ in the n block by the factor r) given dhs (T, N, H); dh0 := dL/dh0."""
    where = "gru_backward"
    check_float(where, "dhs", dhs, ndim=3)
    t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (3 * h, h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    check_like(where, "gates", gates, (t, n, 3 * h), dtype)
    check_like(where, "hn", hn, (t, n, h), dtype)
    check_out(where, "dpre_x", dpre_x, (t, n, 3 * h), dtype)
    check_out(where, "dpre_h", dpre_h, (t, n, 3 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    _gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0, _row_blocks(n))
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
