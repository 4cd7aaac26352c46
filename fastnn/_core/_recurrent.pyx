# Why Cython: a recurrence is T small GEMMs (h @ W_hh^T, e.g. (16, 128) x (128, 512) per thread)
# each followed by elementwise gate math. Here the whole sequence is one nogil call: W_hh is
# packed once per call into 32-column panels (float32: the microkernel's register-tiled product,
# fnn_rec_mm, with no per-step packing, which OpenBLAS's small-matrix path repeats every step),
# and the gate math (kernels/gates.h) runs in C loops that GCC vectorises (the float32
# exp/tanh/sigmoid of kernels/vecmath.h: accurate to ~2 ulp, branch-free). float64 (the gradient
# checks' dtype) keeps single-threaded BLAS dgemm and libm, and so does float32 at the baseline
# ISA level.
#
# Threads: batch rows never interact inside a recurrence, so each OpenMP thread runs the whole
# time loop on its own block of rows: one parallel region per call, no barrier per step. On the
# microkernel path each entry of every output is computed in the same order whatever the thread
# count (BLAS's kernels may depend on the rows a thread has).
"""RNN / LSTM / GRU sequence kernels: the sequential part of a recurrent layer, one call per sequence."""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport tanh, exp
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
cimport openmp
cimport numpy as cnp

from ._blas cimport gemm_rm, took, tracing
from ._microkernel cimport FNN_MK_AVAILABLE, fnn_mk_sgemm_tn_pa, fnn_rec_mm, fnn_rec_pack
from ._gates cimport (FNN_GATES16, fnn_sigmoid, fnn_lstm_bwd_row, fnn_gru_bwd_row, fnn_gru_fwd_row,
                      fnn_lstm_fwd_cell, fnn_lstm_fwd_row16, fnn_lstm_bwd_row16)
from ._vecmath cimport fnn_one_minus_sq, fnn_sigmoidf, fnn_tanhf
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


def _set_vector_gates(bint on):
    """Tuning/A-B hook: float32 LSTM gate math of a row as one AVX-512 pass (activations and cell
    fused; vecmath.h's 16-lane functions, whose activations are its scalar ones' bits) when the
    build has AVX-512 (on), or the auto-vectorised C loops. Returns the previous setting."""
    global _vec_gates
    old = _vec_gates
    _vec_gates = on
    return old


def _set_grad_kernel(bint on):
    """Tuning/A-B hook: float32 weight gradients of the *_backward_full calls on the AVX-512
    microkernel's transposed-A GEMM (on; where the build has it) or single-threaded sgemm.
    Returns the previous setting."""
    global _grad_kernel
    old = _grad_kernel
    _grad_kernel = on
    return old


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return fnn_tanhf(v)
    else:
        return tanh(v)


cdef inline floating _one_minus_sq(floating t) noexcept nogil:
    if floating is float:
        return fnn_one_minus_sq(t)
    else:
        return 1 - t * t


cdef inline floating _sigm(floating v) noexcept nogil:
    if floating is float:
        return fnn_sigmoidf(v)
    else:
        return fnn_sigmoid(v)


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


cdef inline void _product(Product* prod, int rows, const floating* a, floating* c,
                          bint accumulate) noexcept nogil:
    """c (rows x n) := (or +=) a (rows x k) @ B."""
    if rows <= 0:
        return
    if floating is float and FNN_MK_AVAILABLE:
        fnn_rec_mm(rows, prod.n, prod.k, a, prod.k, <const float*>prod.packed, c, prod.n,
                   accumulate, KC_BLOCK)
    else:
        gemm_rm(False, prod.trans_w, rows, prod.n, prod.k, <floating>1, a, prod.k,
                <const floating*>prod.w, prod.k if prod.trans_w else prod.n,
                <floating>(1 if accumulate else 0), c, prod.n)


cdef inline void _product_ld(Product* prod, int rows, const floating* a, floating* c,
                             int ldc) noexcept nogil:
    """c (rows x n, row stride ldc) := a (rows x k) @ B."""
    if rows <= 0:
        return
    if floating is float and FNN_MK_AVAILABLE:
        fnn_rec_mm(rows, prod.n, prod.k, a, prod.k, <const float*>prod.packed, c, ldc, False,
                   KC_BLOCK)
    else:
        gemm_rm(False, prod.trans_w, rows, prod.n, prod.k, <floating>1, a, prod.k,
                <const floating*>prod.w, prod.k if prod.trans_w else prod.n, <floating>0, c, ldc)


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
        _product_ld(prod_x, hi - lo, dpre_x + (<Py_ssize_t>t * N + lo) * G,
                    dx + (<Py_ssize_t>lo * T + t) * F, <int>(T * F))
    else:
        _product(prod_x, hi - lo, dpre_x + (<Py_ssize_t>t * N + lo) * G,
                 dx + (<Py_ssize_t>t * N + lo) * F, False)


cdef struct WeightGrads:
    # dW (G, K) += dpre[:, slice].T @ a (M, K) and db += dpre[:, slice].sum(0), for the hidden
    # side (a = h_{t-1} of every step) and optionally the input side (a = x, time-major)
    const void* dpre_h
    const void* hs_prev
    void* dw_hh
    void* db_hh
    const void* dpre_x
    const void* x
    void* dw_ih
    void* db_ih
    Py_ssize_t M
    int G
    int H
    int F
    # input rows that are table rows (x = table[ids], ids (M,) time-major): dpre_x summed per id
    # into per_id (V, G), then dw_ih += per_id.T @ table, db_ih += per_id.sum(0); x is NULL
    const long long* ids
    const void* table
    void* per_id
    int V
    # with the table: table_grad (V, F) += per_id @ w_ih (G, F), an Embedding's weight gradient
    # (the scatter-add of dx = dpre @ w_ih by id) after per_id is complete; NULL: none
    void* table_grad
    const void* w_ih


cdef inline void _fixed_block(int size, int align, int blk, int* lo, int* hi) noexcept nogil:
    """Block ``blk`` of at most GRAD_BLOCKS blocks of ``size``, each a multiple of ``align`` (the
    last one ragged): a partition fixed by the shape alone, so every BLAS call (and so every bit)
    is the same for any thread count."""
    cdef int step = (size + GRAD_BLOCKS - 1) // GRAD_BLOCKS
    step = (step + align - 1) // align * align
    lo[0] = min(size, blk * step)
    hi[0] = min(size, lo[0] + step)


cdef void _table_input_grad_slice(WeightGrads* wg, int part, int parts,
                                  floating* dummy) noexcept nogil:
    """Thread ``part`` of ``parts``: its row blocks of table_grad += per_id @ w_ih."""
    cdef int blk, lo, hi
    for blk in range(GRAD_BLOCKS):
        _fixed_block(wg.V, 1, blk, &lo, &hi)
        if blk % parts != part or hi <= lo:
            continue
        _gemm1(False, False, hi - lo, wg.F, wg.G,
               <const floating*>wg.per_id + <Py_ssize_t>lo * wg.G, wg.G,
               <const floating*>wg.w_ih, wg.F, <floating>1,
               <floating*>wg.table_grad + <Py_ssize_t>lo * wg.F, wg.F)


cdef void _table_grads_slice(WeightGrads* wg, int lo, int hi, floating* dummy) noexcept nogil:
    """Columns [lo, hi) of _table_grads: the same sums in the same order, one thread per column
    share (so the bits do not depend on the thread count)."""
    cdef int G = wg.G, F = wg.F, v, j
    cdef Py_ssize_t m
    cdef floating* per_id = <floating*>wg.per_id
    cdef floating* row
    cdef const floating* d
    cdef const floating* dpre = <const floating*>wg.dpre_x
    cdef floating* db = <floating*>wg.db_ih
    for v in range(wg.V):
        row = per_id + <Py_ssize_t>v * G
        for j in range(lo, hi):
            row[j] = 0
    for m in range(wg.M):
        row = per_id + <Py_ssize_t>wg.ids[m] * G
        d = dpre + m * G
        for j in range(lo, hi):
            row[j] += d[j]
    _gemm1(True, False, hi - lo, F, wg.V, per_id + lo, G, <const floating*>wg.table, F,
           <floating>1, <floating*>wg.dw_ih + <Py_ssize_t>lo * F, F)
    for v in range(wg.V):
        row = per_id + <Py_ssize_t>v * G
        for j in range(lo, hi):
            db[j] += row[j]


cdef void _weight_grads_slice(WeightGrads* wg, int part, int parts,
                              floating* dummy) noexcept nogil:
    """Thread ``part`` of ``parts``: its column blocks of G (multiples of 64 columns, two of the
    microkernel's 32-column tiles), one single-threaded GEMM per side and block over all
    M = T*N rows."""
    cdef int blk, lo, hi
    if wg.M <= 0:
        return
    for blk in range(GRAD_BLOCKS):
        _fixed_block(wg.G, 64, blk, &lo, &hi)
        if blk % parts != part or hi <= lo:
            continue
        _slice_grads(<const floating*>wg.dpre_h, <const floating*>wg.hs_prev,
                     <floating*>wg.dw_hh, <floating*>wg.db_hh, wg.M, wg.G, wg.H, lo, hi)
        if wg.ids != NULL:
            _table_grads_slice(wg, lo, hi, dummy)
        elif wg.x != NULL:
            _slice_grads(<const floating*>wg.dpre_x, <const floating*>wg.x,
                         <floating*>wg.dw_ih, <floating*>wg.db_ih, wg.M, wg.G, wg.F, lo, hi)


cdef void _slice_grads(const floating* dpre, const floating* a, floating* dw, floating* db,
                       Py_ssize_t M, int G, int K, int lo, int hi) noexcept nogil:
    """dw[lo:hi] += dpre[:, lo:hi].T @ a and db[lo:hi] += dpre[:, lo:hi].sum(0), dpre (M, G),
    a (M, K), on the calling thread."""
    cdef Py_ssize_t m
    cdef int j
    cdef const floating* d
    # dpre's rows are G floats apart (2 KB for an LSTM of 128), the stride that made the
    # microkernel's unpacked sgemm_tn slow (see fnn_mk_sgemm_tn_pa in kernels/microkernel.h), so the
    # transposed operand is packed per k step. lstm step, interleaved A/B on the 2-core VM:
    # 5.2-6.0 ms with the unpacked register tile this replaced, 4.7-5.1 with sgemm, 4.5-4.9
    # here; the same bits as that tile (each entry one chain of FMAs from dw, in k order).
    if not (floating is float and _grad_kernel and FNN_MK_AVAILABLE and fnn_mk_sgemm_tn_pa(
            hi - lo, K, <int>M, <const float*>dpre + lo, G, <const float*>a, K,
            <float*>dw + <Py_ssize_t>lo * K, K, 1)):
        _gemm1(True, False, hi - lo, K, <int>M, dpre + lo, G, a, K, <floating>1,
               dw + <Py_ssize_t>lo * K, K)
    if db != NULL:
        for m in range(M):
            d = dpre + m * G
            for j in range(lo, hi):
                db[j] += d[j]


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


# ---- RNN -----------------------------------------------------------------------------------------

cdef void _rnn_forward_rows(const floating* xw, const floating* b_hh, floating* hs, Product* prod,
                            int T, int N, int H, int lo, int hi,
                            const long long* ids, floating* y) noexcept nogil:
    cdef int t, n, j
    cdef floating* h
    cdef const floating* x
    for t in range(T):
        _product(prod, hi - lo, hs + (<Py_ssize_t>t * N + lo) * H,
                 hs + (<Py_ssize_t>(t + 1) * N + lo) * H, False)
        for n in range(lo, hi):
            h = hs + (<Py_ssize_t>(t + 1) * N + n) * H
            x = xw + _xrow(ids, t, N, n) * H
            for j in range(H):
                h[j] = _tanh(h[j] + x[j] + b_hh[j])


cdef void _rnn_backward_rows(const floating* hs, const floating* dhs, floating* dpre, floating* dh,
                             Product* prod, Product* prod_x, floating* dx, int T, int N, int H,
                             int lo, int hi,
                             Py_ssize_t dst, Py_ssize_t dsn) noexcept nogil:
    cdef int t, n, j
    cdef floating* d
    cdef const floating* h
    cdef const floating* dy
    cdef floating* dhr
    for n in range(lo, hi):
        for j in range(H):
            dh[<Py_ssize_t>n * H + j] = 0
    for t in range(T - 1, -1, -1):
        for n in range(lo, hi):
            d = dpre + (<Py_ssize_t>t * N + n) * H
            h = hs + (<Py_ssize_t>(t + 1) * N + n) * H
            dy = dhs + t * dst + n * dsn
            dhr = dh + <Py_ssize_t>n * H
            for j in range(H):
                d[j] = (dy[j] + dhr[j]) * _one_minus_sq(h[j])
        _product(prod, hi - lo, dpre + (<Py_ssize_t>t * N + lo) * H, dh + <Py_ssize_t>lo * H, False)
        _input_product(prod_x, dpre, dx, t, N, H, lo, hi)


cdef int _rnn_forward_c(const floating* xw, const floating* w_hh, const floating* b_hh,
                        floating* hs, int T, int N, int H, int blocks,
                        const long long* ids, floating* y) noexcept:
    cdef Product prod
    cdef int b
    with nogil:
        if _product_init(&prod, w_hh, H, H, True):
            return -1
        for b in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
            _rnn_forward_rows(xw, b_hh, hs, &prod, T, N, H, b * N // blocks, (b + 1) * N // blocks,
                              ids, y)
            _batch_first(hs, y, T, N, H, b * N // blocks, (b + 1) * N // blocks)
        aligned_free(prod.packed)
        return 0


cdef int _rnn_backward_c(const floating* w_hh, const floating* hs, const floating* dhs,
                         floating* dpre, floating* dh, int T, int N, int H, int blocks,
                         const floating* w_ih, floating* dx, int F, WeightGrads* wg,
                         Py_ssize_t dst, Py_ssize_t dsn) noexcept:
    cdef Product prod, prod_x
    cdef Product* px = NULL
    cdef int b, parts = blocks if wg != NULL else 0
    with nogil:
        if _product_init(&prod, w_hh, H, H, False):
            return -1
        if w_ih != NULL:
            if _product_init(&prod_x, w_ih, H, F, False):
                aligned_free(prod.packed)
                return -1
            px = &prod_x
            prod_x.dx_batch_first = dst == H and T > 1  # dy (and so dx) batch-first
            prod_x.T = T
        with parallel(num_threads=blocks):
            for b in prange(blocks, schedule="static", chunksize=1):
                _rnn_backward_rows(hs, dhs, dpre, dh, &prod, px, dx, T, N, H, b * N // blocks,
                                   (b + 1) * N // blocks, dst, dsn)
            for b in prange(parts, schedule="static", chunksize=1):  # after the loop's barrier
                _weight_grads_slice(wg, b, parts, dpre)
        aligned_free(prod.packed)
        if px != NULL:
            aligned_free(prod_x.packed)
        return 0


# ---- LSTM ----------------------------------------------------------------------------------------

cdef void _lstm_forward_rows(const floating* xw, const floating* b_hh, floating* hs, floating* cs,
                             floating* gates, Product* prod, int T, int N, int H,
                             int lo, int hi,
                            const long long* ids, floating* y) noexcept nogil:
    cdef int t, n, j, G = 4 * H
    cdef floating* g
    cdef const floating* x
    cdef const floating* c_prev
    cdef floating* c_new
    cdef floating* h_new
    cdef floating c
    for t in range(T):
        _product(prod, hi - lo, hs + (<Py_ssize_t>t * N + lo) * H,
                 gates + (<Py_ssize_t>t * N + lo) * G, False)
        for n in range(lo, hi):
            g = gates + (<Py_ssize_t>t * N + n) * G
            x = xw + _xrow(ids, t, N, n) * G
            if floating is float:
                if FNN_GATES16 and _vec_gates:
                    fnn_lstm_fwd_row16(H, g, x, b_hh, cs + (<Py_ssize_t>t * N + n) * H,
                                       cs + (<Py_ssize_t>(t + 1) * N + n) * H,
                                       hs + (<Py_ssize_t>(t + 1) * N + n) * H)
                    continue
            for j in range(2 * H):
                g[j] = _sigm(g[j] + x[j] + b_hh[j])
            for j in range(2 * H, 3 * H):
                g[j] = _tanh(g[j] + x[j] + b_hh[j])
            for j in range(3 * H, G):
                g[j] = _sigm(g[j] + x[j] + b_hh[j])
            c_prev = cs + (<Py_ssize_t>t * N + n) * H
            c_new = cs + (<Py_ssize_t>(t + 1) * N + n) * H
            h_new = hs + (<Py_ssize_t>(t + 1) * N + n) * H
            if floating is float:
                fnn_lstm_fwd_cell(H, g, c_prev, c_new, h_new)
                continue
            for j in range(H):
                c = g[H + j] * c_prev[j] + g[j] * g[2 * H + j]
                c_new[j] = c
                h_new[j] = g[3 * H + j] * _tanh(c)


cdef void _lstm_backward_rows(const floating* cs, const floating* gates, const floating* dhs,
                              floating* dpre, floating* dh, floating* dc, Product* prod,
                              Product* prod_x, floating* dx, int T, int N, int H,
                              int lo, int hi,
                             Py_ssize_t dst, Py_ssize_t dsn) noexcept nogil:
    cdef int t, n, j, G = 4 * H
    cdef const floating* g
    cdef floating* d
    cdef const floating* dy
    cdef const floating* c_prev
    cdef const floating* c_row
    cdef floating* dhr
    cdef floating* dcr
    cdef floating i, f, gg, o, tc, dhv, dcv
    for n in range(lo, hi):
        for j in range(H):
            dh[<Py_ssize_t>n * H + j] = 0
            dc[<Py_ssize_t>n * H + j] = 0
    for t in range(T - 1, -1, -1):
        for n in range(lo, hi):
            g = gates + (<Py_ssize_t>t * N + n) * G
            d = dpre + (<Py_ssize_t>t * N + n) * G
            dy = dhs + t * dst + n * dsn
            c_prev = cs + (<Py_ssize_t>t * N + n) * H
            c_row = cs + (<Py_ssize_t>(t + 1) * N + n) * H
            dhr = dh + <Py_ssize_t>n * H
            dcr = dc + <Py_ssize_t>n * H
            if floating is float:
                if FNN_GATES16 and _vec_gates:
                    fnn_lstm_bwd_row16(H, g, d, dy, c_prev, c_row, dhr, dcr)
                else:
                    fnn_lstm_bwd_row(H, g, d, dy, c_prev, c_row, dhr, dcr)
                continue
            for j in range(H):
                i = g[j]
                f = g[H + j]
                gg = g[2 * H + j]
                o = g[3 * H + j]
                tc = _tanh(c_row[j])
                dhv = dy[j] + dhr[j]
                dcv = dcr[j] + dhv * o * (1 - tc * tc)
                d[j] = dcv * gg * i * (1 - i)
                d[H + j] = dcv * c_prev[j] * f * (1 - f)
                d[2 * H + j] = dcv * i * (1 - gg * gg)
                d[3 * H + j] = dhv * tc * o * (1 - o)
                dcr[j] = dcv * f
        _product(prod, hi - lo, dpre + (<Py_ssize_t>t * N + lo) * G, dh + <Py_ssize_t>lo * H, False)
        _input_product(prod_x, dpre, dx, t, N, G, lo, hi)


cdef int _lstm_forward_c(const floating* xw, const floating* w_hh, const floating* b_hh,
                         floating* hs, floating* cs, floating* gates, int T, int N, int H,
                         int blocks, const long long* ids, floating* y) noexcept:
    cdef Product prod
    cdef int b
    with nogil:
        if _product_init(&prod, w_hh, H, 4 * H, True):
            return -1
        for b in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
            _lstm_forward_rows(xw, b_hh, hs, cs, gates, &prod, T, N, H, b * N // blocks,
                               (b + 1) * N // blocks, ids, y)
            _batch_first(hs, y, T, N, H, b * N // blocks, (b + 1) * N // blocks)
        aligned_free(prod.packed)
        return 0


cdef int _lstm_backward_c(const floating* w_hh, const floating* cs, const floating* gates,
                          const floating* dhs, floating* dpre, floating* dh, floating* dc,
                          int T, int N, int H, int blocks,
                          const floating* w_ih, floating* dx, int F, WeightGrads* wg,
                         Py_ssize_t dst, Py_ssize_t dsn) noexcept:
    cdef Product prod, prod_x
    cdef Product* px = NULL
    cdef int b, parts = blocks if wg != NULL else 0
    cdef int tparts = parts if wg != NULL and wg.table_grad != NULL else 0
    with nogil:
        if _product_init(&prod, w_hh, 4 * H, H, False):
            return -1
        if w_ih != NULL:
            if _product_init(&prod_x, w_ih, 4 * H, F, False):
                aligned_free(prod.packed)
                return -1
            px = &prod_x
            prod_x.dx_batch_first = dst == H and T > 1  # dy (and so dx) batch-first
            prod_x.T = T
        with parallel(num_threads=blocks):
            for b in prange(blocks, schedule="static", chunksize=1):
                _lstm_backward_rows(cs, gates, dhs, dpre, dh, dc, &prod, px, dx, T, N, H,
                                    b * N // blocks, (b + 1) * N // blocks, dst, dsn)
            for b in prange(parts, schedule="static", chunksize=1):  # after the loop's barrier
                _weight_grads_slice(wg, b, parts, dpre)
            for b in prange(tparts, schedule="static", chunksize=1):  # per_id complete
                _table_input_grad_slice(wg, b, tparts, dpre)
        aligned_free(prod.packed)
        if px != NULL:
            aligned_free(prod_x.packed)
        return 0


# ---- GRU -----------------------------------------------------------------------------------------

cdef void _gru_forward_rows(const floating* xw, const floating* b_hh, floating* hs,
                            floating* gates, floating* hn, Product* prod, int T, int N, int H,
                            int lo, int hi,
                            const long long* ids, floating* y) noexcept nogil:
    cdef int t, n, j, G = 3 * H
    cdef floating* g
    cdef const floating* x
    cdef floating* hnr
    cdef const floating* h_prev
    cdef floating* h_new
    cdef floating z
    for t in range(T):
        _product(prod, hi - lo, hs + (<Py_ssize_t>t * N + lo) * H,
                 gates + (<Py_ssize_t>t * N + lo) * G, False)
        for n in range(lo, hi):
            g = gates + (<Py_ssize_t>t * N + n) * G
            x = xw + _xrow(ids, t, N, n) * G
            hnr = hn + (<Py_ssize_t>t * N + n) * H
            if floating is float:
                fnn_gru_fwd_row(H, g, x, b_hh, hnr, hs + (<Py_ssize_t>t * N + n) * H,
                                hs + (<Py_ssize_t>(t + 1) * N + n) * H)
                continue
            for j in range(2 * H):
                g[j] = _sigm(g[j] + x[j] + b_hh[j])
            for j in range(H):
                hnr[j] = g[2 * H + j] + b_hh[2 * H + j]
            for j in range(H):
                g[2 * H + j] = _tanh(x[2 * H + j] + g[j] * hnr[j])
            h_prev = hs + (<Py_ssize_t>t * N + n) * H
            h_new = hs + (<Py_ssize_t>(t + 1) * N + n) * H
            for j in range(H):
                z = g[H + j]
                h_new[j] = (1 - z) * g[2 * H + j] + z * h_prev[j]


cdef void _gru_backward_rows(const floating* hs, const floating* gates, const floating* hn,
                             const floating* dhs, floating* dpre_x, floating* dpre_h, floating* dh,
                             Product* prod, Product* prod_x, floating* dx_out, int T, int N, int H,
                             int lo, int hi,
                             Py_ssize_t dst, Py_ssize_t dsn) noexcept nogil:
    cdef int t, n, j, G = 3 * H
    cdef const floating* g
    cdef floating* dx
    cdef floating* dhp
    cdef const floating* h_prev
    cdef const floating* hnr
    cdef const floating* dy
    cdef floating* dhr
    cdef floating r, z, nn, dhv, dn, dz, dr
    for n in range(lo, hi):
        for j in range(H):
            dh[<Py_ssize_t>n * H + j] = 0
    for t in range(T - 1, -1, -1):
        for n in range(lo, hi):
            g = gates + (<Py_ssize_t>t * N + n) * G
            dx = dpre_x + (<Py_ssize_t>t * N + n) * G
            dhp = dpre_h + (<Py_ssize_t>t * N + n) * G
            h_prev = hs + (<Py_ssize_t>t * N + n) * H
            hnr = hn + (<Py_ssize_t>t * N + n) * H
            dy = dhs + t * dst + n * dsn
            dhr = dh + <Py_ssize_t>n * H
            if floating is float:
                fnn_gru_bwd_row(H, g, dx, dhp, h_prev, hnr, dy, dhr)
                continue
            for j in range(H):
                r = g[j]
                z = g[H + j]
                nn = g[2 * H + j]
                dhv = dy[j] + dhr[j]
                dn = dhv * (1 - z) * (1 - nn * nn)
                dz = dhv * (h_prev[j] - nn) * z * (1 - z)
                dr = dn * hnr[j] * r * (1 - r)
                dx[j] = dr
                dx[H + j] = dz
                dx[2 * H + j] = dn
                dhp[j] = dr
                dhp[H + j] = dz
                dhp[2 * H + j] = dn * r
                dhr[j] = dhv * z  # the direct path h_t = ... + z * h_{t-1}
        _product(prod, hi - lo, dpre_h + (<Py_ssize_t>t * N + lo) * G, dh + <Py_ssize_t>lo * H, True)
        _input_product(prod_x, dpre_x, dx_out, t, N, G, lo, hi)


cdef int _gru_forward_c(const floating* xw, const floating* w_hh, const floating* b_hh,
                        floating* hs, floating* gates, floating* hn, int T, int N, int H,
                        int blocks, const long long* ids, floating* y) noexcept:
    cdef Product prod
    cdef int b
    with nogil:
        if _product_init(&prod, w_hh, H, 3 * H, True):
            return -1
        for b in prange(blocks, num_threads=blocks, schedule="static", chunksize=1):
            _gru_forward_rows(xw, b_hh, hs, gates, hn, &prod, T, N, H, b * N // blocks,
                              (b + 1) * N // blocks, ids, y)
            _batch_first(hs, y, T, N, H, b * N // blocks, (b + 1) * N // blocks)
        aligned_free(prod.packed)
        return 0


cdef int _gru_backward_c(const floating* w_hh, const floating* hs, const floating* gates,
                         const floating* hn, const floating* dhs, floating* dpre_x,
                         floating* dpre_h, floating* dh, int T, int N, int H, int blocks,
                         const floating* w_ih, floating* dx, int F, WeightGrads* wg,
                         Py_ssize_t dst, Py_ssize_t dsn) noexcept:
    cdef Product prod, prod_x
    cdef Product* px = NULL
    cdef int b, parts = blocks if wg != NULL else 0
    with nogil:
        if _product_init(&prod, w_hh, 3 * H, H, False):
            return -1
        if w_ih != NULL:
            if _product_init(&prod_x, w_ih, 3 * H, F, False):
                aligned_free(prod.packed)
                return -1
            px = &prod_x
            prod_x.dx_batch_first = dst == H and T > 1  # dy (and so dx) batch-first
            prod_x.T = T
        with parallel(num_threads=blocks):
            for b in prange(blocks, schedule="static", chunksize=1):
                _gru_backward_rows(hs, gates, hn, dhs, dpre_x, dpre_h, dh, &prod, px, dx, T, N, H,
                                   b * N // blocks, (b + 1) * N // blocks, dst, dsn)
            for b in prange(parts, schedule="static", chunksize=1):  # after the loop's barrier
                _weight_grads_slice(wg, b, parts, dpre_x)
        aligned_free(prod.packed)
        if px != NULL:
            aligned_free(prod_x.packed)
        return 0


# ---- public wrappers: validate, then one nogil call ------------------------------------------------

cdef inline void* _ptr(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void* _opt_ptr(object a):
    return NULL if a is None else _ptr(a)


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


def _raise_if(int status, where):
    if status:
        raise MemoryError(f"{where}: could not allocate the packed w_hh")


def rnn_forward(xw, w_hh, b_hh, hs):
    """hs[t+1] := tanh(xw[t] + hs[t] @ w_hh.T + b_hh), t < T; time-major: xw (T, N, H) =
    x @ w_ih.T + b_ih, hs (T+1, N, H) with hs[0] = h0 given."""
    where = "rnn_forward"
    t, n, h, dtype = _check_seq(where, xw, w_hh, b_hh, 1)
    check_out(where, "hs", hs, (t + 1, n, h), dtype, "T+1 steps: hs[0] is h0")
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _rnn_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                <float*>_ptr(hs), T, N, H, blocks, NULL, NULL)
    else:
        status = _rnn_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                <double*>_ptr(hs), T, N, H, blocks, NULL, NULL)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _rnn_backward_c(<float*>_ptr(w_hh), <float*>_ptr(hs), <float*>_ptr(dhs),
                                 <float*>_ptr(dpre), <float*>_ptr(dh0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    else:
        status = _rnn_backward_c(<double*>_ptr(w_hh), <double*>_ptr(hs), <double*>_ptr(dhs),
                                 <double*>_ptr(dpre), <double*>_ptr(dh0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _lstm_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                 <float*>_ptr(hs), <float*>_ptr(cs), <float*>_ptr(gates),
                                 T, N, H, blocks, NULL, NULL)
    else:
        status = _lstm_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                 <double*>_ptr(hs), <double*>_ptr(cs), <double*>_ptr(gates),
                                 T, N, H, blocks, NULL, NULL)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _lstm_backward_c(<float*>_ptr(w_hh), <float*>_ptr(cs), <float*>_ptr(gates),
                                  <float*>_ptr(dhs), <float*>_ptr(dpre), <float*>_ptr(dh0),
                                  <float*>_ptr(dc0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    else:
        status = _lstm_backward_c(<double*>_ptr(w_hh), <double*>_ptr(cs), <double*>_ptr(gates),
                                  <double*>_ptr(dhs), <double*>_ptr(dpre), <double*>_ptr(dh0),
                                  <double*>_ptr(dc0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _gru_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                <float*>_ptr(hs), <float*>_ptr(gates), <float*>_ptr(hn),
                                T, N, H, blocks, NULL, NULL)
    else:
        status = _gru_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                <double*>_ptr(hs), <double*>_ptr(gates), <double*>_ptr(hn),
                                T, N, H, blocks, NULL, NULL)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if dtype.itemsize == 4:
        status = _gru_backward_c(<float*>_ptr(w_hh), <float*>_ptr(hs), <float*>_ptr(gates),
                                 <float*>_ptr(hn), <float*>_ptr(dhs), <float*>_ptr(dpre_x),
                                 <float*>_ptr(dpre_h), <float*>_ptr(dh0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    else:
        status = _gru_backward_c(<double*>_ptr(w_hh), <double*>_ptr(hs), <double*>_ptr(gates),
                                 <double*>_ptr(hn), <double*>_ptr(dhs), <double*>_ptr(dpre_x),
                                 <double*>_ptr(dpre_h), <double*>_ptr(dh0), T, N, H, blocks, NULL, NULL, 0, NULL,
                                 <Py_ssize_t>N * H, H)
    _raise_if(status, where)
    return dpre_x


def set_min_rows_per_thread(int rows):
    """Rows of the batch each thread must get before a call uses one more thread (tuning and
    tests); returns the previous value."""
    global _min_rows
    old = _min_rows
    _min_rows = max(1, rows)
    return old


# ---- the input side of a layer fed by an Embedding (private to layers/recurrent.py) ------------
# A few MFLOP over the vocabulary's rows: serial on purpose (one single-threaded BLAS call each;
# a 2-thread region costs more to wake than these take, and far more when the cores are shared).

cdef inline void _gemm1(bint trans_a, bint trans_b, int m, int n, int k, const floating* a, int lda,
                        const floating* b, int ldb, floating beta, floating* c,
                        int ldc) noexcept nogil:
    """Row-major C (m, n) := op(A) @ op(B) + beta*C on the calling thread (column-major BLAS on
    the transposes)."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef floating one = 1
    if m <= 0 or n <= 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef void _project_table(const floating* table, const floating* w_ih, const floating* b_ih,
                         const long long* ids, floating* projected, floating* xw, int V, int F,
                         int G, Py_ssize_t M) noexcept nogil:
    cdef int v, j
    cdef Py_ssize_t m
    _gemm1(False, True, V, G, F, table, F, w_ih, F, <floating>0, projected, G)
    for v in range(V):
        for j in range(G):
            projected[<Py_ssize_t>v * G + j] += b_ih[j]
    for m in range(M):
        memcpy(xw + m * G, projected + <Py_ssize_t>ids[m] * G, G * sizeof(floating))


cdef void _table_grads(const floating* table, const long long* ids, const floating* dpre,
                       floating* per_id, floating* dw_ih, floating* db_ih, int V, int F, int G,
                       Py_ssize_t M) noexcept nogil:
    cdef int v, j
    cdef Py_ssize_t m
    cdef floating* row
    cdef const floating* d
    memset(per_id, 0, <Py_ssize_t>V * G * sizeof(floating))
    for m in range(M):
        row = per_id + <Py_ssize_t>ids[m] * G
        d = dpre + m * G
        for j in range(G):
            row[j] += d[j]
    # dW_ih (G, F) += per_id.T @ table; db_ih += per_id.sum(0)
    _gemm1(True, False, G, F, V, per_id, G, table, F, <floating>1, dw_ih, F)
    for v in range(V):
        for j in range(G):
            db_ih[j] += per_id[<Py_ssize_t>v * G + j]


def _check_table_ids(where, table, w_ih, ids):
    check_float(where, "table", table, ndim=2)
    dtype = table.dtype
    v, f = table.shape
    check_float(where, "w_ih", w_ih, ndim=2, dtype=dtype)
    if w_ih.shape[1] != f:
        raise ValueError(f"{where}: w_ih must have shape (G, {f}) to match table {table.shape}, "
                         f"got {w_ih.shape}")
    check_index(where, "ids", ids)
    if ids.ndim != 1:
        raise ValueError(f"{where}: ids must be 1-D, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= v):
        raise ValueError(f"{where}: ids must lie in [0, {v}), got values in "
                         f"[{ids.min()}, {ids.max()}]")
    return v, f, w_ih.shape[0], ids.shape[0], dtype


def embedded_projection(table, w_ih, b_ih, ids, projected, xw):
    """projected (V, G) := table @ w_ih.T + b_ih; xw (M, G) := projected[ids] (skipped when xw is
    None): x @ w_ih.T + b_ih of the rows x = table[ids] (ids int64 (M,) in [0, V)). Serial."""
    where = "embedded_projection"
    v, f, g, m, dtype = _check_table_ids(where, table, w_ih, ids)
    check_like(where, "b_ih", b_ih, (g,), dtype)
    check_out(where, "projected", projected, (v, g), dtype)
    if xw is None:  # the projected table only (the *_forward_full calls gather it themselves)
        m = 0
    else:
        check_out(where, "xw", xw, (m, g), dtype)
    cdef int V = v, F = f, G = g
    cdef Py_ssize_t M = m
    cdef const long long* idp = <const long long*>_ptr(ids)
    cdef void* tp = _ptr(table)
    cdef void* wp = _ptr(w_ih)
    cdef void* bp = _ptr(b_ih)
    cdef void* pp = _ptr(projected)
    cdef void* xp = _opt_ptr(xw)
    took("embedded_projection")
    if dtype.itemsize == 4:
        with nogil:
            _project_table(<float*>tp, <float*>wp, <float*>bp, idp, <float*>pp, <float*>xp,
                           V, F, G, M)
    else:
        with nogil:
            _project_table(<double*>tp, <double*>wp, <double*>bp, idp, <double*>pp,
                           <double*>xp, V, F, G, M)
    return xw


def embedded_input_grads(table, w_ih, ids, dpre, per_id, dw_ih, db_ih):
    """per_id (V, G) := dpre (M, G) summed per id; dw_ih (G, F) += per_id.T @ table;
    db_ih += per_id.sum(0): the weight gradients of xw = table[ids] @ w_ih.T + b_ih. Serial."""
    where = "embedded_input_grads"
    v, f, g, m, dtype = _check_table_ids(where, table, w_ih, ids)
    check_like(where, "dpre", dpre, (m, g), dtype)
    check_out(where, "per_id", per_id, (v, g), dtype)
    check_out(where, "dw_ih", dw_ih, (g, f), dtype)
    check_out(where, "db_ih", db_ih, (g,), dtype)
    cdef int V = v, F = f, G = g
    cdef Py_ssize_t M = m
    cdef const long long* idp = <const long long*>_ptr(ids)
    cdef void* tp = _ptr(table)
    cdef void* dp = _ptr(dpre)
    cdef void* pp = _ptr(per_id)
    cdef void* wp = _ptr(dw_ih)
    cdef void* bp = _ptr(db_ih)
    took("embedded_input_grads")
    if dtype.itemsize == 4:
        with nogil:
            _table_grads(<float*>tp, idp, <float*>dp, <float*>pp, <float*>wp, <float*>bp,
                         V, F, G, M)
    else:
        with nogil:
            _table_grads(<double*>tp, idp, <double*>dp, <double*>pp, <double*>wp, <double*>bp,
                         V, F, G, M)
    return dw_ih


# ---- whole-layer backward (private to layers/recurrent.py) -----------------------------------------
# The contract kernel's backward plus, in the same OpenMP region, dx[t] := dpre_x[t] @ W_ih per
# step (each thread on its rows, while they are in cache) and, after the time loop's barrier,
# dW_hh, db_hh (and dW_ih, db_ih when x is given) with each thread on its share of the G gate
# columns: one region per layer backward instead of four (each costs a wake-up, and a wait for a
# descheduled thread when the cores are shared).

def _full_extras(where, t, n, h, g, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                 batch_first=False, dx_optional=False):
    check_out(where, "dw_hh", dw_hh, (g, h), dtype)
    check_out(where, "db_hh", db_hh, (g,), dtype)
    check_float(where, "w_ih", w_ih, ndim=2, dtype=dtype)
    if w_ih.shape[0] != g:
        raise ValueError(f"{where}: w_ih must have shape ({g}, F), got {w_ih.shape}")
    f = w_ih.shape[1]
    if dx is None and dx_optional:
        pass
    else:
            check_out(where, "dx", dx, (n, t, f) if batch_first else (t, n, f), dtype,
                  "(N, T, F): batch-first like dhs" if batch_first else "")
    if (x is None) != (dw_ih is None) or (x is None) != (db_ih is None):
        raise ValueError(f"{where}: x, dw_ih and db_ih go together (all or none)")
    if x is not None:
        check_like(where, "x", x, (t, n, f), dtype)
        check_out(where, "dw_ih", dw_ih, (g, f), dtype)
        check_out(where, "db_ih", db_ih, (g,), dtype)
    return f


cdef void _fill_grads(WeightGrads* wg, object dpre_h, object hs, object dw_hh, object db_hh,
                      object dpre_x, object x, object dw_ih, object db_ih, Py_ssize_t M, int G,
                      int H, int F):
    wg.dpre_h = _ptr(dpre_h)
    wg.hs_prev = _ptr(hs)  # rows 0..T-1 of hs: h_{t-1} of every step
    wg.dw_hh = _ptr(dw_hh)
    wg.db_hh = _ptr(db_hh)
    wg.dpre_x = _ptr(dpre_x)
    wg.x = NULL if x is None else _ptr(x)
    wg.dw_ih = NULL if dw_ih is None else _ptr(dw_ih)
    wg.db_ih = NULL if db_ih is None else _ptr(db_ih)
    wg.M = M
    wg.G = G
    wg.H = H
    wg.F = F
    wg.ids = NULL
    wg.table = NULL
    wg.per_id = NULL
    wg.V = 0
    wg.table_grad = NULL
    wg.w_ih = NULL


def rnn_backward_full(w_hh, hs, dhs, dpre, dh0, dw_hh, db_hh, w_ih, dx, x=None, dw_ih=None,
                      db_ih=None, batch_first=False):
    """rnn_backward, then dx (T, N, F) := dpre @ w_ih, dw_hh += dpre.T @ hs[:T], db_hh +=
    dpre.sum; with x (T, N, F): dw_ih += dpre.T @ x, db_ih += dpre.sum. One parallel region."""
    where = "rnn_backward_full"
    check_float(where, "dhs", dhs, ndim=3)
    if batch_first:
        n, t, h = dhs.shape
    else:
        t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (h, h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    check_out(where, "dpre", dpre, (t, n, h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    f = _full_extras(where, t, n, h, h, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                     batch_first)
    cdef WeightGrads wg
    _fill_grads(&wg, dpre, hs, dw_hh, db_hh, dpre, x, dw_ih, db_ih, t * n, h, h, f)
    cdef int T = t, N = n, H = h, F = f, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    cdef Py_ssize_t dst = h if batch_first else <Py_ssize_t>n * h
    cdef Py_ssize_t dsn = <Py_ssize_t>t * h if batch_first else h
    if dtype.itemsize == 4:
        status = _rnn_backward_c(<float*>_ptr(w_hh), <float*>_ptr(hs), <float*>_ptr(dhs),
                                 <float*>_ptr(dpre), <float*>_ptr(dh0), T, N, H, blocks,
                                 <float*>_ptr(w_ih), <float*>_ptr(dx), F, &wg, dst, dsn)
    else:
        status = _rnn_backward_c(<double*>_ptr(w_hh), <double*>_ptr(hs), <double*>_ptr(dhs),
                                 <double*>_ptr(dpre), <double*>_ptr(dh0), T, N, H, blocks,
                                 <double*>_ptr(w_ih), <double*>_ptr(dx), F, &wg, dst, dsn)
    _raise_if(status, where)
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
    cdef int T = t, N = n, H = h, F = f, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    if table is not None:
        took("recurrent/table_grads")
        if dx is None:
            took("recurrent/table_backward")
    cdef Py_ssize_t dst = h if batch_first else <Py_ssize_t>n * h
    cdef Py_ssize_t dsn = <Py_ssize_t>t * h if batch_first else h
    # no dx: no input product at all (w_ih NULL)
    cdef void* wip = NULL if dx is None else _ptr(w_ih)
    cdef void* dxp = NULL if dx is None else _ptr(dx)
    if dtype.itemsize == 4:
        status = _lstm_backward_c(<float*>_ptr(w_hh), <float*>_ptr(cs), <float*>_ptr(gates),
                                  <float*>_ptr(dhs), <float*>_ptr(dpre), <float*>_ptr(dh0),
                                  <float*>_ptr(dc0), T, N, H, blocks,
                                  <float*>wip, <float*>dxp, F, &wg, dst, dsn)
    else:
        status = _lstm_backward_c(<double*>_ptr(w_hh), <double*>_ptr(cs), <double*>_ptr(gates),
                                  <double*>_ptr(dhs), <double*>_ptr(dpre), <double*>_ptr(dh0),
                                  <double*>_ptr(dc0), T, N, H, blocks,
                                  <double*>wip, <double*>dxp, F, &wg, dst, dsn)
    _raise_if(status, where)
    return dx


def gru_backward_full(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0, dw_hh, db_hh, w_ih, dx,
                      x=None, dw_ih=None, db_ih=None, batch_first=False):
    """gru_backward plus the layer's dx (from dpre_x) and weight gradients (dW_hh, db_hh from
    dpre_h; dW_ih, db_ih from dpre_x)."""
    where = "gru_backward_full"
    check_float(where, "dhs", dhs, ndim=3)
    if batch_first:
        n, t, h = dhs.shape
    else:
        t, n, h = dhs.shape
    dtype = dhs.dtype
    check_like(where, "w_hh", w_hh, (3 * h, h), dtype)
    check_like(where, "hs", hs, (t + 1, n, h), dtype)
    check_like(where, "gates", gates, (t, n, 3 * h), dtype)
    check_like(where, "hn", hn, (t, n, h), dtype)
    check_out(where, "dpre_x", dpre_x, (t, n, 3 * h), dtype)
    check_out(where, "dpre_h", dpre_h, (t, n, 3 * h), dtype)
    check_out(where, "dh0", dh0, (n, h), dtype)
    f = _full_extras(where, t, n, h, 3 * h, dtype, dw_hh, db_hh, w_ih, dx, x, dw_ih, db_ih,
                     batch_first)
    cdef WeightGrads wg
    _fill_grads(&wg, dpre_h, hs, dw_hh, db_hh, dpre_x, x, dw_ih, db_ih, t * n, 3 * h, h, f)
    cdef int T = t, N = n, H = h, F = f, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, False)
    cdef Py_ssize_t dst = h if batch_first else <Py_ssize_t>n * h
    cdef Py_ssize_t dsn = <Py_ssize_t>t * h if batch_first else h
    if dtype.itemsize == 4:
        status = _gru_backward_c(<float*>_ptr(w_hh), <float*>_ptr(hs), <float*>_ptr(gates),
                                 <float*>_ptr(hn), <float*>_ptr(dhs), <float*>_ptr(dpre_x),
                                 <float*>_ptr(dpre_h), <float*>_ptr(dh0), T, N, H, blocks,
                                 <float*>_ptr(w_ih), <float*>_ptr(dx), F, &wg, dst, dsn)
    else:
        status = _gru_backward_c(<double*>_ptr(w_hh), <double*>_ptr(hs), <double*>_ptr(gates),
                                 <double*>_ptr(hn), <double*>_ptr(dhs), <double*>_ptr(dpre_x),
                                 <double*>_ptr(dpre_h), <double*>_ptr(dh0), T, N, H, blocks,
                                 <double*>_ptr(w_ih), <double*>_ptr(dx), F, &wg, dst, dsn)
    _raise_if(status, where)
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


cdef inline const long long* _ids_ptr(object ids):
    return NULL if ids is None else <const long long*>_ptr(ids)


def rnn_forward_full(xw, ids, w_hh, b_hh, hs, y=None):
    """rnn_forward on xw (T, N, H), or on rows ids (T*N,) of a projected table xw (V, H);
    y (N, T, H) := hs[1:] batch-first when given."""
    where = "rnn_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 1, y)
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, ids is not None)
    cdef const long long* idp = _ids_ptr(ids)
    cdef void* yp = _opt_ptr(y)
    if dtype.itemsize == 4:
        status = _rnn_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                <float*>_ptr(hs), T, N, H, blocks, idp, <float*>yp)
    else:
        status = _rnn_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                <double*>_ptr(hs), T, N, H, blocks, idp, <double*>yp)
    _raise_if(status, where)
    return hs


def lstm_forward_full(xw, ids, w_hh, b_hh, hs, cs, gates, y=None):
    """lstm_forward on xw (T, N, 4H) or on rows ids of a projected table (V, 4H); y as rnn's."""
    where = "lstm_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 4, y)
    check_out(where, "cs", cs, (t + 1, n, h), dtype, "T+1 steps: cs[0] is c0")
    check_out(where, "gates", gates, (t, n, 4 * h), dtype)
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, ids is not None)
    cdef const long long* idp = _ids_ptr(ids)
    cdef void* yp = _opt_ptr(y)
    if dtype.itemsize == 4:
        status = _lstm_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                 <float*>_ptr(hs), <float*>_ptr(cs), <float*>_ptr(gates),
                                 T, N, H, blocks, idp, <float*>yp)
    else:
        status = _lstm_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                 <double*>_ptr(hs), <double*>_ptr(cs), <double*>_ptr(gates),
                                 T, N, H, blocks, idp, <double*>yp)
    _raise_if(status, where)
    return hs


def gru_forward_full(xw, ids, w_hh, b_hh, hs, gates, hn, y=None):
    """gru_forward on xw (T, N, 3H) or on rows ids of a projected table (V, 3H); y as rnn's."""
    where = "gru_forward_full"
    t, n, h, dtype = _forward_full_args(where, xw, ids, w_hh, b_hh, hs, 3, y)
    check_out(where, "gates", gates, (t, n, 3 * h), dtype)
    check_out(where, "hn", hn, (t, n, h), dtype)
    cdef int T = t, N = n, H = h, blocks = _blocks(n), status
    _took_sequence(dtype, blocks, ids is not None)
    cdef const long long* idp = _ids_ptr(ids)
    cdef void* yp = _opt_ptr(y)
    if dtype.itemsize == 4:
        status = _gru_forward_c(<float*>_ptr(xw), <float*>_ptr(w_hh), <float*>_ptr(b_hh),
                                <float*>_ptr(hs), <float*>_ptr(gates), <float*>_ptr(hn),
                                T, N, H, blocks, idp, <float*>yp)
    else:
        status = _gru_forward_c(<double*>_ptr(xw), <double*>_ptr(w_hh), <double*>_ptr(b_hh),
                                <double*>_ptr(hs), <double*>_ptr(gates), <double*>_ptr(hn),
                                T, N, H, blocks, idp, <double*>yp)
    _raise_if(status, where)
    return hs
