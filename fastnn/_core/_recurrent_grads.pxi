# Included by _recurrent.pyx: the weight-gradient side of a recurrent layer's backward (dW += dpre.T @ a
# and db += dpre.sum(0) in column blocks fixed by the shape, each thread on its share, after the
# sweep in the same parallel region) and the input side of a layer fed by an Embedding (its
# table projected once, dW_ih from dpre summed per id). Not cell-specific.


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
    M = T*N rows; on the microkernel, whose entries are each one chain over M in order whatever
    the rows of a call, the thread's blocks are contiguous and one GEMM per side (its a packed
    once, not once per block; the table side's BLAS product stays per block)."""
    cdef int blk, lo, hi, lo2, hi2
    if wg.M <= 0:
        return
    if floating is float and _grad_kernel and FNN_MK_AVAILABLE:
        _fixed_block(wg.G, 64, part * GRAD_BLOCKS // parts, &lo, &hi)
        _fixed_block(wg.G, 64, (part + 1) * GRAD_BLOCKS // parts - 1, &lo2, &hi2)
        if hi2 <= lo:
            return
        _slice_grads(<const floating*>wg.dpre_h, <const floating*>wg.hs_prev,
                     <floating*>wg.dw_hh, <floating*>wg.db_hh, wg.M, wg.G, wg.H, lo, hi2)
        if wg.x != NULL:
            _slice_grads(<const floating*>wg.dpre_x, <const floating*>wg.x,
                         <floating*>wg.dw_ih, <floating*>wg.db_ih, wg.M, wg.G, wg.F, lo, hi2)
        if wg.ids != NULL:  # its BLAS product per fixed block, as below
            for blk in range(part * GRAD_BLOCKS // parts, (part + 1) * GRAD_BLOCKS // parts):
                _fixed_block(wg.G, 64, blk, &lo, &hi)
                if hi > lo:
                    _table_grads_slice(wg, lo, hi, dummy)
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
    # dpre's rows are G floats apart, a stride that makes an unpacked transposed operand slow:
    # fnn_mk_sgemm_tn_pa packs it per k step (each entry one chain of FMAs from dw, in k order)
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
    cdef WeightGrads wg  # the in-region table gradients' sums, over all G columns
    memset(&wg, 0, sizeof(wg))
    wg.ids, wg.table, wg.per_id = <const long long*>_ptr(ids), _ptr(table), _ptr(per_id)
    wg.dpre_x, wg.dw_ih, wg.db_ih = _ptr(dpre), _ptr(dw_ih), _ptr(db_ih)
    wg.V, wg.F, wg.G, wg.M = v, f, g, m
    took("embedded_input_grads")
    if dtype.itemsize == 4:
        with nogil:
            _table_grads_slice(&wg, 0, wg.G, <float*>NULL)
    else:
        with nogil:
            _table_grads_slice(&wg, 0, wg.G, <double*>NULL)
    return dw_ih


# ---- the arguments of the whole-layer backward calls ----------------------------------------------

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
    memset(wg, 0, sizeof(WeightGrads))  # no table
    wg.dpre_h, wg.hs_prev, wg.dw_hh, wg.db_hh = _ptr(dpre_h), _ptr(hs), _ptr(dw_hh), _ptr(db_hh)
    wg.dpre_x, wg.x, wg.dw_ih, wg.db_ih = _ptr(dpre_x), _opt_ptr(x), _opt_ptr(dw_ih), _opt_ptr(db_ih)
    wg.M, wg.G, wg.H, wg.F = M, G, H, F
