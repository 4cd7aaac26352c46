# Why Cython: a recurrence is T small GEMMs (h @ W_hh^T, e.g. (16, 128) x (128, 512) per thread)
# each followed by elementwise gate math. Here the whole sequence is one nogil call: W_hh is
# packed once per call into 32-column panels (float32: the microkernel's register-tiled product,
# fnn_rec_mm, with no per-step packing, which OpenBLAS's small-matrix path repeats every step),
# and the gate math (kernels/gates.h) runs in C loops that GCC vectorises (the float32
# exp/tanh/sigmoid of kernels/vecmath.h: accurate to ~2 ulp, branch-free). float64 (the gradient
# checks' dtype) keeps single-threaded BLAS dgemm and libm, and so does float32 at the baseline
# ISA level.
#
# One driver serves every cell (RNN, LSTM, GRU): the time loops, the products, the threads and
# the input and weight-gradient sides are the same; the cell's gate math of one row is
# kernels/gates.h's fnn_cell_forward_* / fnn_cell_backward_*.
#
# Threads: batch rows never interact inside a recurrence, so each OpenMP thread runs the whole
# time loop on its own block of rows: one parallel region per call, no barrier per step. On the
# microkernel path each entry of every output is computed in the same order whatever the thread
# count (BLAS's kernels may depend on the rows a thread has).
"""RNN / LSTM / GRU sequence kernels: the sequential part of a recurrent layer, one call per sequence."""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
cimport openmp
cimport numpy as cnp

from ._blas cimport gemm_rm, took, tracing
from ._microkernel cimport FNN_MK_AVAILABLE, fnn_mk_sgemm_tn_pa, fnn_rec_mm, fnn_rec_pack
from ._gates cimport (FNN_CELL_GRU, FNN_CELL_LSTM, FNN_CELL_RNN, fnn_cell_backward_d,
                      fnn_cell_backward_f, fnn_cell_forward_d, fnn_cell_forward_f, fnn_cell_gates)
from .._checks import check_float, check_index, check_like, check_out

cnp.import_array()
cdef extern from "<stdlib.h>":
    void aligned_free "free"(void* p) noexcept nogil
# Threads per call: each gets at least this many batch rows (a smaller block leaves the 8-row
# register tile mostly empty and the wake-up of a second thread costs more than it saves).
cdef enum:
    MIN_ROWS_PER_THREAD = 8
    # k per block of the step product: KC x 32 floats of a panel stay in L1 across the row
    # tiles (measured flat from 64 to unblocked at H = 128; blocks only matter for larger H)
    KC_BLOCK = 256
    # the rows of one product + gate-math pass on the microkernel: as many 6-row tiles as keep
    # their G-wide rows (the product's output, the gate math's input) within this many bytes,
    # so the gate math reads them from L1
    CHUNK_BYTES = 24576
    # the weight gradients' blocks (columns of G, rows of an Embedding's table), whatever the
    # thread count: each thread takes every parts-th block (at most this many)
    GRAD_BLOCKS = 8

cdef int _min_rows = MIN_ROWS_PER_THREAD
cdef bint _grad_kernel = True  # float32 weight gradients on the microkernel (else sgemm)


cdef bint _vec_gates = True  # float32 LSTM gate math in AVX-512 intrinsics (one pass per row)


cdef _took_sequence(dtype, int blocks, bint table_input):
    """The routes of a whole-sequence call: its products, its thread split, its input rows."""
    if not tracing():
        return
    took("recurrent/packed" if dtype.itemsize == 4 and FNN_MK_AVAILABLE else "recurrent/blas")
    if blocks > 1:
        took("recurrent/row_blocks")
    if table_input:
        took("recurrent/table_input")


TUNING = {
    "rnn_min_rows_per_thread": "batch rows each thread of a sequence call must get before the "
                               "call uses one more thread (an int >= 1)",
    "rnn_vector_gates": "float32 LSTM gate math of a row as one AVX-512 pass (at the avx512 "
                        "level; else the auto-vectorised C loops); a few ulps apart",
    "rnn_grad_kernel": "float32 weight gradients of the whole-layer backward calls on the "
                       "microkernel's transposed-A GEMM (avx2 and avx512 levels; else sgemm)",
}


def _tune(str name, value):
    """fastnn._core.tuning's access to TUNING: sets knob ``name`` to ``value`` (None: leaves it)
    and returns the old value."""
    global _min_rows, _vec_gates, _grad_kernel
    if name == "rnn_min_rows_per_thread":
        old = _min_rows
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"tuning: rnn_min_rows_per_thread must be an int >= 1, "
                                 f"got {value!r}")
            _min_rows = value
    elif name == "rnn_vector_gates":
        old = bool(_vec_gates)
        if value is not None:
            _vec_gates = value
    elif name == "rnn_grad_kernel":
        old = bool(_grad_kernel)
        if value is not None:
            _grad_kernel = value
    else:
        raise ValueError(f"_recurrent: no knob {name!r}")
    return old


cdef struct Product:
    # h (rows x k) @ B (k x n): float32 through packed panels on AVX-512 builds, otherwise
    # through BLAS on the row-major source, read as op(W) with W (n x k) when trans_w (forward:
    # h @ W_hh^T) or W (k x n) when not (backward: dpre @ W_hh)
    void* packed
    void* w
    int k
    int n
    bint trans_w
    bint dx_batch_first  # the input-side product of *_backward_full only
    int T


cdef int _product_init(Product* prod, const floating* w, int k, int n, bint trans_w) noexcept nogil:
    prod.w = <void*>w
    prod.k = k
    prod.n = n
    prod.trans_w = trans_w
    prod.packed = NULL
    prod.dx_batch_first = False
    prod.T = 0
    if floating is float and FNN_MK_AVAILABLE:
        # B[kk, j] = W[j, kk] (trans_w) or W[kk, j]
        if trans_w:
            prod.packed = fnn_rec_pack(w, 1, k, k, n)
        else:
            prod.packed = fnn_rec_pack(w, n, 1, k, n)
        if prod.packed == NULL:
            return -1
    return 0


cdef inline void _product(Product* prod, int rows, const floating* a, floating* c, int ldc,
                          bint accumulate) noexcept nogil:
    """c (rows x n, row stride ldc) := (or +=) a (rows x k) @ B."""
    if rows <= 0:
        return
    if floating is float and FNN_MK_AVAILABLE:
        fnn_rec_mm(rows, prod.n, prod.k, a, prod.k, <const float*>prod.packed, c, ldc,
                   accumulate, KC_BLOCK)
    else:
        gemm_rm(False, prod.trans_w, rows, prod.n, prod.k, <floating>1, a, prod.k,
                <const floating*>prod.w, prod.k if prod.trans_w else prod.n,
                <floating>(1 if accumulate else 0), c, ldc)


cdef inline int _chunk_rows(int G, int rows, bint packed) noexcept nogil:
    """Rows per product + gate-math pass of a thread's ``rows``: all of them on BLAS (whose bits
    may depend on the rows of a call; the microkernel's do not) and when they make fewer than
    two chunks (a short last chunk would stream W_hh once more for a few rows)."""
    cdef int c = max(6, CHUNK_BYTES // (G * <int>sizeof(float)) // 6 * 6)
    if not packed or rows < 2 * c:
        return max(rows, 1)
    return c


cdef int _blocks(Py_ssize_t n_rows) noexcept nogil:
    cdef int nt = openmp.omp_get_max_threads()
    cdef Py_ssize_t by_rows = n_rows // _min_rows
    return <int>max(1, min(<Py_ssize_t>nt, by_rows))


cdef inline void _input_product(Product* prod_x, const floating* dpre_x, floating* dx, int t, int N,
                                int G, int lo, int hi) noexcept nogil:
    """dx[t, lo:hi] := dpre_x[t, lo:hi] @ W_ih while the step's rows are still in cache; dx is
    time-major (T, N, F) or, when prod_x.dx_batch_first, the layer's (N, T, F)."""
    cdef int F
    cdef Py_ssize_t T
    if prod_x == NULL or hi <= lo:
        return
    F = prod_x.n
    if prod_x.dx_batch_first:
        T = prod_x.T
        _product(prod_x, hi - lo, dpre_x + (<Py_ssize_t>t * N + lo) * G,
                 dx + (<Py_ssize_t>lo * T + t) * F, <int>(T * F), False)
    else:
        _product(prod_x, hi - lo, dpre_x + (<Py_ssize_t>t * N + lo) * G,
                 dx + (<Py_ssize_t>t * N + lo) * F, F, False)


include "_recurrent_grads.pxi"


cdef inline Py_ssize_t _xrow(const long long* ids, int t, int N, int n) noexcept nogil:
    """Row of xw for step t, batch row n: time-major, or the projected table's row ids[t, n]."""
    if ids != NULL:
        return <Py_ssize_t>ids[<Py_ssize_t>t * N + n]
    return <Py_ssize_t>t * N + n


cdef inline void _batch_first(const floating* hs, floating* y, int T, int N, int H, int lo,
                              int hi) noexcept nogil:
    """y[n, t] := hs[t + 1, n] for the rows n in [lo, hi) (the layer's (N, T, H) output)."""
    cdef int n, t
    if y == NULL:
        return
    for n in range(lo, hi):
        for t in range(T):
            memcpy(y + (<Py_ssize_t>n * T + t) * H, hs + (<Py_ssize_t>(t + 1) * N + n) * H,
                   H * sizeof(floating))


# ---- the sequence driver: every cell, forward and backward through time ---------------------------

cdef struct Seq:
    # One sequence call, time-major: rows (t, n) of width H (hs, cs, hn) or G = gates * H
    int cell  # FNN_CELL_RNN, FNN_CELL_LSTM or FNN_CELL_GRU
    int T
    int N
    int H
    int G
    bint vec  # float32 LSTM rows as one AVX-512 pass (knob rnn_vector_gates)
    # forward: xw (T, N, G), or with ids (T*N,) the rows ids[t, n] of a projected table (V, G)
    const void* xw
    const long long* ids
    const void* b_hh
    void* hs  # (T+1, N, H), hs[0] = h0 given
    void* cs  # LSTM: (T+1, N, H), cs[0] = c0 given
    void* gates  # LSTM, GRU: (T, N, G), the activated gates
    void* hn  # GRU: (T, N, H), h_{t-1} @ W_hn^T + b_hn
    void* y  # (N, T, H) := hs[1:] batch-first, or NULL
    # backward: dL/dh_{t+1} of row n at dhs + t * dst + n * dsn; dpre (T, N, G) := dL/d(the
    # pre-activations) (GRU: dL/dxw; dpre_h dL/d(h @ W_hh^T + b_hh); the others: dpre_h = dpre)
    const void* dhs
    Py_ssize_t dst
    Py_ssize_t dsn
    void* dpre
    void* dpre_h
    void* dh  # (N, H): dL/dh through the recurrence, dL/dh0 at the end
    void* dc  # LSTM: the same for c


cdef inline floating* _at(floating* base, Py_ssize_t row, int width) noexcept nogil:
    """Row ``row`` of a (., width) array, or NULL for an array the cell does not have."""
    return NULL if base == NULL else base + row * width


cdef void _forward_rows(Seq* s, Product* prod, int lo, int hi, floating* hs) noexcept nogil:
    """Steps 0..T-1 of the batch rows [lo, hi), per chunk of rows (_chunk_rows): the product
    h_{t-1} @ W_hh^T into the step's gate rows (RNN: into h_t itself), then each row's gate
    math while the rows are in L1."""
    cdef int t, n, H = s.H, G = s.G, N = s.N
    cdef Py_ssize_t r
    cdef floating* gates = <floating*>s.gates
    cdef floating* cs = <floating*>s.cs
    cdef floating* hn = <floating*>s.hn
    cdef const floating* xw = <const floating*>s.xw
    cdef const floating* b = <const floating*>s.b_hh
    cdef int c0, c1, step = _chunk_rows(G, hi - lo, prod.packed != NULL)
    for t in range(s.T):
      c0 = lo
      while c0 < hi:
        c1 = min(hi, c0 + step)
        r = <Py_ssize_t>t * N + c0
        if gates != NULL:
            _product(prod, c1 - c0, hs + r * H, gates + r * G, G, False)
        else:
            _product(prod, c1 - c0, hs + r * H, hs + (r + N) * H, H, False)
        for n in range(c0, c1):
            r = <Py_ssize_t>t * N + n
            if floating is float:
                fnn_cell_forward_f(s.cell, H, s.vec, _at(gates, r, G), xw + _xrow(s.ids, t, N, n) * G,
                                   b, hs + r * H, hs + (r + N) * H, _at(cs, r, H),
                                   _at(cs, r + N, H), _at(hn, r, H))
            else:
                fnn_cell_forward_d(s.cell, H, s.vec, _at(gates, r, G), xw + _xrow(s.ids, t, N, n) * G,
                                   b, hs + r * H, hs + (r + N) * H, _at(cs, r, H),
                                   _at(cs, r + N, H), _at(hn, r, H))
        c0 = c1


cdef void _backward_rows(Seq* s, Product* prod, Product* prod_x, floating* dx, int lo, int hi,
                         floating* hs) noexcept nogil:
    """Steps T-1..0 of the batch rows [lo, hi), per chunk of rows (_chunk_rows): each row's gate
    math, then dh := dpre_h @ W_hh (GRU: += onto the direct path z * dh) and the input side's
    dx rows of the step."""
    cdef int t, n, j, H = s.H, G = s.G, N = s.N
    cdef Py_ssize_t r
    cdef floating* gates = <floating*>s.gates
    cdef floating* cs = <floating*>s.cs
    cdef floating* hn = <floating*>s.hn
    cdef const floating* dhs = <const floating*>s.dhs
    cdef floating* dpre = <floating*>s.dpre
    cdef floating* dpre_h = <floating*>s.dpre_h
    cdef floating* dh = <floating*>s.dh
    cdef floating* dc = <floating*>s.dc
    for n in range(lo, hi):
        for j in range(H):
            dh[<Py_ssize_t>n * H + j] = 0
            if dc != NULL:
                dc[<Py_ssize_t>n * H + j] = 0
    cdef int c0, c1, step = _chunk_rows(G, hi - lo, prod.packed != NULL)
    for t in range(s.T - 1, -1, -1):
      c0 = lo
      while c0 < hi:
        c1 = min(hi, c0 + step)
        for n in range(c0, c1):
            r = <Py_ssize_t>t * N + n
            if floating is float:
                fnn_cell_backward_f(s.cell, H, s.vec, _at(gates, r, G), dpre + r * G,
                                    dpre_h + r * G, dhs + t * s.dst + n * s.dsn, dh + n * H,
                                    _at(dc, n, H), hs + r * H, hs + (r + N) * H, _at(cs, r, H),
                                    _at(cs, r + N, H), _at(hn, r, H))
            else:
                fnn_cell_backward_d(s.cell, H, s.vec, _at(gates, r, G), dpre + r * G,
                                    dpre_h + r * G, dhs + t * s.dst + n * s.dsn, dh + n * H,
                                    _at(dc, n, H), hs + r * H, hs + (r + N) * H, _at(cs, r, H),
                                    _at(cs, r + N, H), _at(hn, r, H))
        r = <Py_ssize_t>t * N + c0
        _product(prod, c1 - c0, dpre_h + r * G, dh + <Py_ssize_t>c0 * H, H, s.cell == FNN_CELL_GRU)
        _input_product(prod_x, dpre, dx, t, N, G, c0, c1)
        c0 = c1


cdef int _forward_c(Seq* s, const floating* w_hh, int blocks) noexcept:
    """The whole forward sequence: each of ``blocks`` threads runs every step on its rows."""
    cdef Product prod
    cdef int b
    cdef floating* hs = <floating*>s.hs
    with nogil:
        if _product_init(&prod, w_hh, s.H, s.G, True):
            return -1
        for b in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
            _forward_rows(s, &prod, b * s.N // blocks, (b + 1) * s.N // blocks, hs)
            _batch_first(hs, <floating*>s.y, s.T, s.N, s.H, b * s.N // blocks,
                         (b + 1) * s.N // blocks)
        aligned_free(prod.packed)
        return 0


cdef int _backward_c(Seq* s, const floating* w_hh, const floating* w_ih, floating* dx, int F,
                     WeightGrads* wg, int blocks) noexcept:
    """The whole backward sweep, with (w_ih given) dx per step and (wg given) the weight
    gradients after the sweep, in one parallel region."""
    cdef Product prod, prod_x
    cdef Product* px = NULL
    cdef int b, parts = blocks if wg != NULL else 0
    cdef int tparts = parts if wg != NULL and wg.table_grad != NULL else 0
    cdef floating* hs = <floating*>s.hs
    with nogil:
        if _product_init(&prod, w_hh, s.G, s.H, False):
            return -1
        if w_ih != NULL:
            if _product_init(&prod_x, w_ih, s.G, F, False):
                aligned_free(prod.packed)
                return -1
            px = &prod_x
            prod_x.dx_batch_first = s.dst == s.H and s.T > 1  # dy (and so dx) batch-first
            prod_x.T = s.T
        with parallel(num_threads=blocks):
            for b in prange(blocks, schedule="static", chunksize=1):
                _backward_rows(s, &prod, px, dx, b * s.N // blocks, (b + 1) * s.N // blocks, hs)
            for b in prange(parts, schedule="static", chunksize=1):  # after the loop's barrier
                _weight_grads_slice(wg, b, parts, hs)
            for b in prange(tparts, schedule="static", chunksize=1):  # per_id complete
                _table_input_grad_slice(wg, b, tparts, hs)
        aligned_free(prod.packed)
        if px != NULL:
            aligned_free(prod_x.packed)
        return 0


# ---- public wrappers: validate, then one nogil call ------------------------------------------------

cdef inline void* _ptr(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void* _opt_ptr(object a):
    return NULL if a is None else _ptr(a)


cdef void _seq(Seq* s, int cell, int t, int n, int h, hs, cs, gates, hn):
    memset(s, 0, sizeof(Seq))
    s.cell, s.T, s.N, s.H, s.G = cell, t, n, h, fnn_cell_gates(cell) * h
    s.vec = _vec_gates
    s.hs, s.cs, s.gates, s.hn = _ptr(hs), _opt_ptr(cs), _opt_ptr(gates), _opt_ptr(hn)


cdef _forward(int cell, where, dtype, xw, ids, w_hh, b_hh, hs, cs=None, gates=None, hn=None,
              y=None):
    """The checked arguments' forward sweep (ids: xw is a projected table)."""
    cdef Seq s
    _seq(&s, cell, hs.shape[0] - 1, hs.shape[1], hs.shape[2], hs, cs, gates, hn)
    s.xw, s.b_hh, s.y = _ptr(xw), _ptr(b_hh), _opt_ptr(y)
    s.ids = NULL if ids is None else <const long long*>_ptr(ids)
    cdef int blocks = _blocks(s.N), status
    _took_sequence(dtype, blocks, ids is not None)
    if dtype.itemsize == 4:
        status = _forward_c(&s, <float*>_ptr(w_hh), blocks)
    else:
        status = _forward_c(&s, <double*>_ptr(w_hh), blocks)
    _raise_if(status, where)


cdef _backward(int cell, where, dtype, w_hh, hs, dhs, dpre, dpre_h, dh0, dc0=None, cs=None,
               gates=None, hn=None, bint batch_first=False, w_ih=None, dx=None, int F=0,
               WeightGrads* wg=NULL):
    """The checked arguments' backward sweep; with w_ih and dx, dx := dpre @ w_ih; with wg, the
    weight gradients (see WeightGrads)."""
    cdef Seq s
    _seq(&s, cell, hs.shape[0] - 1, hs.shape[1], hs.shape[2], hs, cs, gates, hn)
    s.dhs, s.dpre, s.dpre_h, s.dh, s.dc = _ptr(dhs), _ptr(dpre), _ptr(dpre_h), _ptr(dh0), _opt_ptr(dc0)
    s.dst = s.H if batch_first else <Py_ssize_t>s.N * s.H
    s.dsn = <Py_ssize_t>s.T * s.H if batch_first else s.H
    cdef int blocks = _blocks(s.N), status
    _took_sequence(dtype, blocks, False)
    if wg != NULL and wg.ids != NULL:
        took("recurrent/table_grads")
        if dx is None:
            took("recurrent/table_backward")
    # no dx: no input product at all (w_ih NULL)
    cdef void* wip = NULL if dx is None else _opt_ptr(w_ih)
    if dtype.itemsize == 4:
        status = _backward_c(&s, <float*>_ptr(w_hh), <float*>wip, <float*>_opt_ptr(dx), F, wg,
                             blocks)
    else:
        status = _backward_c(&s, <double*>_ptr(w_hh), <double*>wip, <double*>_opt_ptr(dx), F, wg,
                             blocks)
    _raise_if(status, where)


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


def _check_backward(where, w_hh, hs, dhs, gates_per_unit, batch_first=False):
    """(T, N, H, dtype) of a backward call, w_hh and hs checked against dhs."""
    check_float(where, "dhs", dhs, ndim=3)
    if batch_first:
        n, t, h = dhs.shape
    else:
        t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (gates_per_unit * h, h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    return t, n, h, dtype


def _raise_if(int status, where):
    if status:
        raise MemoryError(f"{where}: could not allocate the packed w_hh")


def rnn_forward(xw, w_hh, b_hh, hs):
    """hs[t+1] := tanh(xw[t] + hs[t] @ w_hh.T + b_hh), t < T; time-major: xw (T, N, H) =
    x @ w_ih.T + b_ih, hs (T+1, N, H) with hs[0] = h0 given."""
    where = "rnn_forward"
    t, n, h, dtype = _check_seq(where, xw, w_hh, b_hh, 1)
    check_out(where, "hs", hs, (t + 1, n, h), dtype, "T+1 steps: hs[0] is h0")
    _forward(FNN_CELL_RNN, where, dtype, xw, None, w_hh, b_hh, hs)
    return hs


def rnn_backward(w_hh, hs, dhs, dpre, dh0):
    """Backprop through time: dpre (T, N, H) := dL/d(pre-activations) given dhs (T, N, H) =
    dL/dh_{1..T} (direct, per step); dh0 := dL/dh0. Weight and input gradients are GEMMs with
    dpre (the caller's)."""
    where = "rnn_backward"
    t, n, h, dtype = _check_backward(where, w_hh, hs, dhs, 1)
    check_out(where, "dpre", dpre, (t, n, h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    _backward(FNN_CELL_RNN, where, dtype, w_hh, hs, dhs, dpre, dpre, dh0)
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
    _forward(FNN_CELL_LSTM, where, dtype, xw, None, w_hh, b_hh, hs, cs, gates)
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
    # the LSTM rows read no h: cs, of the same shape, gives the sweep its sizes in place of hs
    _backward(FNN_CELL_LSTM, where, dtype, w_hh, cs, dhs, dpre, dpre, dh0, dc0, cs, gates)
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
    _forward(FNN_CELL_GRU, where, dtype, xw, None, w_hh, b_hh, hs, None, gates, hn)
    return hs


def gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    """Backprop through time: dpre_x (T, N, 3H) := dL/d(xw) and dpre_h := dL/d(h @ w_hh.T + b_hh)
    (they differ in the n block by the factor r) given dhs (T, N, H); dh0 := dL/dh0."""
    where = "gru_backward"
    t, n, h, dtype = _check_backward(where, w_hh, hs, dhs, 3)
    check_like(where, "gates", gates, (t, n, 3 * h), dtype)
    check_like(where, "hn", hn, (t, n, h), dtype)
    check_out(where, "dpre_x", dpre_x, (t, n, 3 * h), dtype)
    check_out(where, "dpre_h", dpre_h, (t, n, 3 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    _backward(FNN_CELL_GRU, where, dtype, w_hh, hs, dhs, dpre_x, dpre_h, dh0, None, None, gates,
              hn)
    return dpre_x


# ---- whole-layer backward (private to layers/recurrent.py) -----------------------------------------
# The contract kernel's backward plus, in the same OpenMP region, dx[t] := dpre_x[t] @ W_ih per
# step (each thread on its rows, while they are in cache) and, after the time loop's barrier,
# dW_hh, db_hh (and dW_ih, db_ih when x is given) with each thread on its share of the G gate
# columns: one region per layer backward instead of four (each costs a wake-up, and a wait for a
# descheduled thread when the cores are shared).

def rnn_backward_full(w_hh, hs, dhs, dpre, dh0, dw_hh, db_hh, w_ih, dx, x=None, dw_ih=None,
                      db_ih=None, batch_first=False):
    """rnn_backward, then dx (T, N, F) := dpre @ w_ih, dw_hh += dpre.T @ hs[:T], db_hh +=
    dpre.sum; with x (T, N, F): dw_ih += dpre.T @ x, db_ih += dpre.sum. One parallel region."""
    where = "rnn_backward_full"
    t, n, h, dtype = _check_backward(where, w_hh, hs, dhs, 1, batch_first)
    check_out(where, "dpre", dpre, (t, n, h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    f = _full_extras(where, t, n, h, h, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                     batch_first)
    cdef WeightGrads wg
    _fill_grads(&wg, dpre, hs, dw_hh, db_hh, dpre, x, dw_ih, db_ih, t * n, h, h, f)
    _backward(FNN_CELL_RNN, where, dtype, w_hh, hs, dhs, dpre, dpre, dh0, None, None, None, None,
              batch_first, w_ih, dx, f, &wg)
    return dx


def lstm_backward_full(w_hh, cs, gates, dhs, dpre, dh0, dc0, hs, dw_hh, db_hh, w_ih, dx, x=None,
                       dw_ih=None, db_ih=None, batch_first=False, table=None, ids=None,
                       per_id=None, table_grad=None):
    """lstm_backward plus the layer's dx and weight gradients (as rnn_backward_full). With
    table (V, F), ids (T*N,) time-major and per_id (V, 4H) instead of x: the input rows are
    table[ids], and dw_ih, db_ih are embedded_input_grads' (per_id := dpre summed per id), done
    in the same region after the time loop, each thread on its share of the gate columns; dx
    may then be None: no dx = dpre @ w_ih at all (an Embedding's table gradient is then
    per_id @ w_ih, see LSTM.backward_table): table_grad (V, F), when given, += per_id @ w_ih in
    the same region after per_id, each thread on its share of the V rows."""
    where = "lstm_backward_full"
    check_float(where, "dhs", dhs, ndim=3)
    if batch_first:
        n, t, h = dhs.shape
    else:
        t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (4 * h, h), dtype)
    check_like(where, "cs", cs, (t + 1, n, h), dtype)
    check_like(where, "gates", gates, (t, n, 4 * h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    check_out(where, "dpre", dpre, (t, n, 4 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    check_out(where, "dc0", dc0, (n, h), dtype)
    cdef WeightGrads wg
    if table is None:
        if ids is not None or per_id is not None or table_grad is not None:
            raise ValueError(f"{where}: table, ids and per_id go together (all or none); "
                             f"table_grad needs the table")
        f = _full_extras(where, t, n, h, 4 * h, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                         batch_first)
        _fill_grads(&wg, dpre, hs, dw_hh, db_hh, dpre, x, dw_ih, db_ih, t * n, 4 * h, h, f)
    else:
        if x is not None or ids is None or per_id is None or dw_ih is None or db_ih is None:
            raise ValueError(f"{where}: table needs ids, per_id, dw_ih and db_ih, and no x")
        f = _full_extras(where, t, n, h, 4 * h, dtype, dw_hh, db_hh, w_ih, dx, None, None, None,
                         batch_first, dx_optional=True)
        v, tf, g, m, tdtype = _check_table_ids(where, table, w_ih, ids)
        if tdtype != dtype or m != t * n:
            raise ValueError(f"{where}: table must be {dtype} and ids must have T*N = {t * n} "
                             f"entries, got {tdtype} and {m}")
        check_out(where, "per_id", per_id, (v, 4 * h), dtype)
        check_out(where, "dw_ih", dw_ih, (4 * h, f), dtype)
        check_out(where, "db_ih", db_ih, (4 * h,), dtype)
        _fill_grads(&wg, dpre, hs, dw_hh, db_hh, dpre, None, dw_ih, db_ih, t * n, 4 * h, h, f)
        wg.ids = <const long long*>_ptr(ids)
        wg.table = _ptr(table)
        wg.per_id = _ptr(per_id)
        wg.V = v
        if table_grad is not None:
            check_out(where, "table_grad", table_grad, (v, f), dtype)
            wg.table_grad = _ptr(table_grad)
            wg.w_ih = _ptr(w_ih)
    _backward(FNN_CELL_LSTM, where, dtype, w_hh, hs, dhs, dpre, dpre, dh0, dc0, cs, gates, None,
              batch_first, w_ih, dx, f, &wg)
    return dx


def gru_backward_full(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0, dw_hh, db_hh, w_ih, dx,
                      x=None, dw_ih=None, db_ih=None, batch_first=False):
    """gru_backward plus the layer's dx (from dpre_x) and weight gradients (dW_hh, db_hh from
    dpre_h; dW_ih, db_ih from dpre_x)."""
    where = "gru_backward_full"
    t, n, h, dtype = _check_backward(where, w_hh, hs, dhs, 3, batch_first)
    check_like(where, "gates", gates, (t, n, 3 * h), dtype)
    check_like(where, "hn", hn, (t, n, h), dtype)
    check_out(where, "dpre_x", dpre_x, (t, n, 3 * h), dtype)
    check_out(where, "dpre_h", dpre_h, (t, n, 3 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    f = _full_extras(where, t, n, h, 3 * h, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                     batch_first)
    cdef WeightGrads wg
    _fill_grads(&wg, dpre_h, hs, dw_hh, db_hh, dpre_x, x, dw_ih, db_ih, t * n, 3 * h, h, f)
    _backward(FNN_CELL_GRU, where, dtype, w_hh, hs, dhs, dpre_x, dpre_h, dh0, None, None, gates,
              hn, batch_first, w_ih, dx, f, &wg)
    return dx


# ---- whole-layer forward (private to layers/recurrent.py) -------------------------------------------
# The contract kernel's forward reading xw either time-major or as rows ids[t, n] of a projected
# embedding table (no (T, N, G) xw written and read back), and writing the layer's batch-first
# (N, T, H) output y in the same region (each thread its rows), when y is given.

def _forward_full_args(where, xw, ids, w_hh, b_hh, hs, gates_per_unit, y):
    check_float(where, "xw", xw)
    dtype = xw.dtype
    check_float(where, "hs", hs, ndim=3, dtype=dtype)
    t, n, h = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    g = gates_per_unit * h
    if t < 0:
        raise ValueError(f"{where}: hs must have T+1 >= 1 steps, got shape {hs.shape}")
    check_like(where, "w_hh", w_hh, (g, h), dtype)
    check_like(where, "b_hh", b_hh, (g,), dtype)
    if ids is None:
        check_like(where, "xw", xw, (t, n, g), dtype)
    else:
        check_float(where, "xw", xw, ndim=2, dtype=dtype)
        if xw.shape[1] != g:
            raise ValueError(f"{where}: the projected table xw must have shape (V, {g}), got {xw.shape}")
        check_index(where, "ids", ids, (t * n,))
        if ids.size and (ids.min() < 0 or ids.max() >= xw.shape[0]):
            raise ValueError(f"{where}: ids must lie in [0, {xw.shape[0]}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
    if y is not None:
        check_out(where, "y", y, (n, t, h), dtype, "(N, T, H)")
    return t, n, h, dtype



def rnn_forward_full(xw, ids, w_hh, b_hh, hs, y=None):
    """rnn_forward on xw (T, N, H), or on rows ids (T*N,) of a projected table xw (V, H);
    y (N, T, H) := hs[1:] batch-first when given."""
    where = "rnn_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 1, y)
    _forward(FNN_CELL_RNN, where, dtype, xw, ids, w_hh, b_hh, hs, None, None, None, y)
    return hs


def lstm_forward_full(xw, ids, w_hh, b_hh, hs, cs, gates, y=None):
    """lstm_forward on xw (T, N, 4H) or on rows ids of a projected table (V, 4H); y as rnn's."""
    where = "lstm_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 4, y)
    check_out(where, "cs", cs, (t + 1, n, h), dtype, "T+1 steps: cs[0] is c0")
    check_out(where, "gates", gates, (t, n, 4 * h), dtype)
    _forward(FNN_CELL_LSTM, where, dtype, xw, ids, w_hh, b_hh, hs, cs, gates, None, y)
    return hs


def gru_forward_full(xw, ids, w_hh, b_hh, hs, gates, hn, y=None):
    """gru_forward on xw (T, N, 3H) or on rows ids of a projected table (V, 3H); y as rnn's."""
    where = "gru_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 3, y)
    check_out(where, "gates", gates, (t, n, 3 * h), dtype)
    check_out(where, "hn", hn, (t, n, h), dtype)
    _forward(FNN_CELL_GRU, where, dtype, xw, ids, w_hh, b_hh, hs, None, gates, hn, y)
    return hs
