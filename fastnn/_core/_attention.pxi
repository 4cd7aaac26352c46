# Scaled dot-product attention per (batch, head), included by _blas.pyx (its GEMMs, microkernel
# dispatch and thread rule); validated and documented by fastnn._core.attention, which is the
# only caller.
#
# One task per batch-and-head b = n * H + h, on one thread: its scores Q_b K_b^T (L x S) go
# straight into the probabilities' buffer and are turned into probabilities row by row while
# they are in L1, then P_b V_b is written into the head's columns of the context. Q, K, V and
# the context are the heads' column blocks of (rows, E) matrices with any row stride (the packed
# (N*L, 3E) projection of self-attention is read in place, the context is written in the (N*L,
# E) layout out_proj reads), so no head is ever transposed or copied. The backward does the
# same per task: dV = P^T dC, dP = dC V^T (in a per-thread scratch), dS = the softmax's
# backward, dQ = dS K, dK = dS^T Q, each written into its head's columns. Every value is
# computed by one thread in a fixed order: the bits do not depend on the thread count.
# The float32 products run on head_gemm.h's small GEMM (op(B) copied into a per-thread scratch
# allocated once per call, op(A) read in place), which gives the microkernel's bits.
cdef extern from "kernels/head_gemm.h":
    bint FNN_HG_AVAILABLE
    Py_ssize_t FNN_HG_SCRATCH(int n, int k)
    void fnn_hg_sgemm(int trans_a, int trans_b, int m, int n, int k, const float* A,
                      Py_ssize_t lda, const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc,
                      float* scratch) noexcept nogil
cdef extern from "kernels/attention.h":
    void fnn_softmax_row_f32(float* row, int s, float scale, const float* mask) noexcept nogil
    void fnn_softmax_row_f64(double* row, int s, double scale, const double* mask) noexcept nogil
    void fnn_softmax_grad_row_f32(const float* p, float* g, int s, float scale) noexcept nogil
    void fnn_softmax_grad_row_f64(const double* p, double* g, int s, double scale) noexcept nogil


cdef inline void _softmax_row(floating* row, int s, floating scale,
                              const floating* mask) noexcept nogil:
    if floating is float:
        fnn_softmax_row_f32(row, s, scale, mask)
    else:
        fnn_softmax_row_f64(row, s, scale, mask)


cdef inline void _softmax_grad_row(const floating* p, floating* g, int s,
                                   floating scale) noexcept nogil:
    if floating is float:
        fnn_softmax_grad_row_f32(p, g, s, scale)
    else:
        fnn_softmax_grad_row_f64(p, g, s, scale)


cdef inline void _task_gemm(bint trans_a, bint trans_b, int m, int n, int k, const floating* a,
                            int lda, const floating* b, int ldb, floating* c, int ldc,
                            floating* scratch) noexcept nogil:
    """C := op(A) @ op(B) on the calling thread: head_gemm.h's with a scratch (float32, see
    _head_scratch_floats), else the microkernel where it takes the shape (float32), else one BLAS
    call."""
    if floating is float:
        if scratch != NULL:
            _saw(SEEN_HEADS)
            fnn_hg_sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, scratch)
            return
        if _mk_ok(m, n, k):
            _mk_serial(trans_a, trans_b, m, n, k, a, lda, b, ldb, False, c, ldc)
            return
    _saw(SEEN_BLAS)
    _gemm_serial(trans_a, trans_b, m, n, k, <floating>1, a, lda, b, ldb, <floating>0, c, ldc)


cdef struct _Heads:
    # the shape: B = batch * heads tasks, L query rows, S key rows, d columns per head
    int heads, L, S, d
    # row strides (elements) of q, k, v, the context (or its gradient), dq, dk, dv
    Py_ssize_t ldq, ldk, ldv, ldc, lddq, lddk, lddv
    # tasks sharing one mask (B / mask batches); 0: no mask
    int mask_per



cdef void _forward_task(const _Heads* g, int b, const floating* q, const floating* k,
                        const floating* v, const floating* mask, floating scale, floating* p,
                        const floating* drop, floating* p_used, floating* ctx,
                        floating* scratch) noexcept nogil:
    cdef int n = b // g.heads, col = (b % g.heads) * g.d, L = g.L, S = g.S, i
    cdef Py_ssize_t j, area = <Py_ssize_t>L * S
    cdef floating* pb = p + b * area
    cdef floating* pu = pb
    cdef const floating* mb = NULL
    cdef const floating* db
    _task_gemm(False, True, L, S, g.d, q + n * L * g.ldq + col, <int>g.ldq,
               k + n * S * g.ldk + col, <int>g.ldk, pb, S, scratch)
    if g.mask_per:
        mb = mask + (b // g.mask_per) * area
        for i in range(L):
            _softmax_row(pb + i * S, S, scale, mb + i * S)
    else:
        for i in range(L):
            _softmax_row(pb + i * S, S, scale, <floating*>NULL)
    if drop != NULL:
        pu = p_used + b * area
        db = drop + b * area
        for j in range(area):
            pu[j] = pb[j] * db[j]
    _task_gemm(False, False, L, g.d, S, pu, S, v + n * S * g.ldv + col, <int>g.ldv,
               ctx + n * L * g.ldc + col, <int>g.ldc, scratch)


cdef void _backward_task(const _Heads* g, int b, const floating* q, const floating* k,
                         const floating* v, const floating* p, const floating* p_used,
                         const floating* drop, const floating* dctx, floating scale,
                         floating* ds, floating* dq, floating* dk, floating* dv,
                         floating* scratch) noexcept nogil:
    cdef int n = b // g.heads, col = (b % g.heads) * g.d, L = g.L, S = g.S, i
    cdef Py_ssize_t j, area = <Py_ssize_t>L * S
    cdef const floating* pb = p + b * area
    cdef const floating* db
    cdef const floating* dcb = dctx + n * L * g.ldc + col
    cdef const floating* qb = q + n * L * g.ldq + col
    cdef const floating* kb = k + n * S * g.ldk + col
    # dV = P_used^T dC; dP = dC V^T
    _task_gemm(True, False, S, g.d, L, p_used + b * area, S, dcb, <int>g.ldc,
               dv + n * S * g.lddv + col, <int>g.lddv, scratch)
    _task_gemm(False, True, L, S, g.d, dcb, <int>g.ldc, v + n * S * g.ldv + col, <int>g.ldv,
               ds, S, scratch)
    if drop != NULL:
        db = drop + b * area
        for j in range(area):
            ds[j] *= db[j]
    for i in range(L):
        _softmax_grad_row(pb + i * S, ds + i * S, S, scale)
    # dQ = dS K; dK = dS^T Q
    _task_gemm(False, False, L, g.d, S, ds, S, kb, <int>g.ldk, dq + n * L * g.lddq + col,
               <int>g.lddq, scratch)
    _task_gemm(True, False, S, g.d, L, ds, S, qb, <int>g.ldq, dk + n * S * g.lddk + col,
               <int>g.lddk, scratch)


cdef inline Py_ssize_t _row_stride(object a) noexcept:
    """The row stride, in elements, of a 2-D array whose rows are contiguous."""
    return cnp.PyArray_STRIDES(<cnp.ndarray>a)[0] // cnp.PyArray_ITEMSIZE(<cnp.ndarray>a)


cdef inline void* _data_or_null(object a) noexcept:
    return NULL if a is None else data(a)


cdef _Heads _heads(q, k, p, int num_heads, mask_per):
    cdef _Heads g
    g.heads = num_heads
    g.L, g.S = dim(p, 1), dim(p, 2)
    g.d = dim(q, 1) // num_heads
    g.mask_per = mask_per
    g.ldq, g.ldk = _row_stride(q), _row_stride(k)
    return g


cdef enum:
    HEAD_GEMM_MAX_SCRATCH = 1 << 17  # floats per thread: beyond it the heads take the microkernel


cdef Py_ssize_t _head_scratch_floats(const _Heads* g, bint f32) noexcept:
    """Floats of head_gemm scratch per thread (a multiple of 16) for every product of a task,
    0 when the heads take the microkernel or BLAS."""
    cdef Py_ssize_t need
    if not (f32 and FNN_HG_AVAILABLE and _head_gemm):
        return 0
    need = max(FNN_HG_SCRATCH(g.S, g.d), FNN_HG_SCRATCH(g.d, g.S), FNN_HG_SCRATCH(g.d, g.L))
    if need > HEAD_GEMM_MAX_SCRATCH:
        return 0
    return (need + 15) // 16 * 16


cdef float* _aligned64(object buf) noexcept:
    """buf's data rounded up to 64 bytes (buf has 16 floats to spare)."""
    cdef size_t addr = <size_t>data(buf)
    return <float*>((addr + 63) & ~(<size_t>63))


def _attention_forward(q, k, v, int num_heads, double scale, mask, int mask_per, p, ctx, drop,
                       p_used):
    """fastnn._core.attention.attention_forward after its checks (see there)."""
    cdef _Heads g = _heads(q, k, p, num_heads, mask_per if mask is not None else 0)
    cdef int tasks = dim(p, 0), b, nt
    cdef bint f32 = _typenum(q) == cnp.NPY_FLOAT
    cdef void* pq = data(q)
    cdef void* pk = data(k)
    cdef void* pv = data(v)
    cdef void* pm = _data_or_null(mask)
    cdef void* pp = data(p)
    cdef void* pc = data(ctx)
    cdef void* pd = _data_or_null(drop)
    cdef void* pu = _data_or_null(p_used)
    g.ldv, g.ldc = _row_stride(v), _row_stride(ctx)
    nt = min(gemm_threads(<Py_ssize_t>tasks * g.L * g.S * g.d * 2), tasks)
    cdef Py_ssize_t per = _head_scratch_floats(&g, f32)
    cdef float* hs = NULL
    if per:
        hbuf = cnp.PyArray_EMPTY(1, [nt * per + 16], cnp.NPY_FLOAT, 0)
        hs = _aligned64(hbuf)
    with nogil:
        if f32:
            if nt > 1:
                for b in prange(tasks, num_threads=nt, schedule="static"):
                    _forward_task(&g, b, <float*>pq, <float*>pk, <float*>pv, <float*>pm,
                                  <float>scale, <float*>pp, <float*>pd, <float*>pu, <float*>pc,
                                  hs + openmp.omp_get_thread_num() * per if per else NULL)
            else:
                for b in range(tasks):
                    _forward_task(&g, b, <float*>pq, <float*>pk, <float*>pv, <float*>pm,
                                  <float>scale, <float*>pp, <float*>pd, <float*>pu, <float*>pc,
                                  hs)
        else:
            if nt > 1:
                for b in prange(tasks, num_threads=nt, schedule="static"):
                    _forward_task(&g, b, <double*>pq, <double*>pk, <double*>pv, <double*>pm,
                                  scale, <double*>pp, <double*>pd, <double*>pu, <double*>pc,
                                  NULL)
            else:
                for b in range(tasks):
                    _forward_task(&g, b, <double*>pq, <double*>pk, <double*>pv, <double*>pm,
                                  scale, <double*>pp, <double*>pd, <double*>pu, <double*>pc,
                                  NULL)
    if _tracing:
        _collect_seen()


def _attention_backward(q, k, v, int num_heads, double scale, p, p_used, drop, dctx, dq, dk,
                        dv):
    """fastnn._core.attention.attention_backward after its checks (see there)."""
    cdef _Heads g = _heads(q, k, p, num_heads, 0)
    cdef int tasks = dim(p, 0), b, nt
    cdef bint f32 = _typenum(q) == cnp.NPY_FLOAT
    cdef Py_ssize_t area = <Py_ssize_t>dim(p, 1) * dim(p, 2)
    g.ldv, g.ldc = _row_stride(v), _row_stride(dctx)
    g.lddq, g.lddk, g.lddv = _row_stride(dq), _row_stride(dk), _row_stride(dv)
    nt = min(gemm_threads(<Py_ssize_t>tasks * g.L * g.S * g.d * 4), tasks)
    scratch = cnp.PyArray_EMPTY(2, [nt, area], _typenum(q), 0)  # one dP / dS block per thread
    cdef Py_ssize_t per = _head_scratch_floats(&g, f32)
    cdef float* hs = NULL
    if per:
        hbuf = cnp.PyArray_EMPTY(1, [nt * per + 16], cnp.NPY_FLOAT, 0)
        hs = _aligned64(hbuf)
    cdef void* pq = data(q)
    cdef void* pk = data(k)
    cdef void* pv = data(v)
    cdef void* pp = data(p)
    cdef void* pu = data(p if p_used is None else p_used)
    cdef void* pd = _data_or_null(drop)
    cdef void* pc = data(dctx)
    cdef void* ps = data(scratch)
    cdef void* pdq = data(dq)
    cdef void* pdk = data(dk)
    cdef void* pdv = data(dv)
    with nogil:
        if f32:
            if nt > 1:
                for b in prange(tasks, num_threads=nt, schedule="static"):
                    _backward_task(&g, b, <float*>pq, <float*>pk, <float*>pv, <float*>pp,
                                   <float*>pu, <float*>pd, <float*>pc, <float>scale,
                                   <float*>ps + openmp.omp_get_thread_num() * area,
                                   <float*>pdq, <float*>pdk, <float*>pdv,
                                   hs + openmp.omp_get_thread_num() * per if per else NULL)
            else:
                for b in range(tasks):
                    _backward_task(&g, b, <float*>pq, <float*>pk, <float*>pv, <float*>pp,
                                   <float*>pu, <float*>pd, <float*>pc, <float>scale,
                                   <float*>ps, <float*>pdq, <float*>pdk, <float*>pdv, hs)
        else:
            if nt > 1:
                for b in prange(tasks, num_threads=nt, schedule="static"):
                    _backward_task(&g, b, <double*>pq, <double*>pk, <double*>pv, <double*>pp,
                                   <double*>pu, <double*>pd, <double*>pc, scale,
                                   <double*>ps + openmp.omp_get_thread_num() * area,
                                   <double*>pdq, <double*>pdk, <double*>pdv, NULL)
            else:
                for b in range(tasks):
                    _backward_task(&g, b, <double*>pq, <double*>pk, <double*>pv, <double*>pp,
                                   <double*>pu, <double*>pd, <double*>pc, scale,
                                   <double*>ps, <double*>pdq, <double*>pdk, <double*>pdv, NULL)
    if _tracing:
        _collect_seen()


cdef inline const floating* _mask_row(const floating* mask, int per, int r, int L,
                                      int S) noexcept nogil:
    """Row r's mask row (r = b * L + i: mask batch b // per, row i), or NULL."""
    if per == 0:
        return NULL
    return mask + (<Py_ssize_t>(r // L // per) * L + r % L) * S


cdef void _softmax_rows(floating* x, const floating* mask, int per, int rows, int L, int S,
                        floating scale, int nt) noexcept nogil:
    cdef int r
    if nt > 1:
        for r in prange(rows, num_threads=nt, schedule="static"):
            _softmax_row(x + <Py_ssize_t>r * S, S, scale, _mask_row(mask, per, r, L, S))
    else:
        for r in range(rows):
            _softmax_row(x + <Py_ssize_t>r * S, S, scale, _mask_row(mask, per, r, L, S))


cdef void _softmax_grad_rows(const floating* p, floating* g, int rows, int S, floating scale,
                             int nt) noexcept nogil:
    cdef int r
    if nt > 1:
        for r in prange(rows, num_threads=nt, schedule="static"):
            _softmax_grad_row(p + <Py_ssize_t>r * S, g + <Py_ssize_t>r * S, S, scale)
    else:
        for r in range(rows):
            _softmax_grad_row(p + <Py_ssize_t>r * S, g + <Py_ssize_t>r * S, S, scale)


def _masked_softmax(out, double scale, mask, int mask_per, int threads):
    """out (B, L, S) := softmax(scale * out + mask) row by row, in place (fastnn._core.attention's
    masked_softmax_forward after its checks and its copy of the scores into out)."""
    cdef int rows = dim(out, 0) * dim(out, 1), L = dim(out, 1), S = dim(out, 2)
    cdef int per = mask_per if mask is not None else 0
    cdef void* po = data(out)
    cdef void* pm = _data_or_null(mask)
    cdef bint f32 = _typenum(out) == cnp.NPY_FLOAT
    with nogil:
        if f32:
            _softmax_rows(<float*>po, <float*>pm, per, rows, L, S, <float>scale, threads)
        else:
            _softmax_rows(<double*>po, <double*>pm, per, rows, L, S, scale, threads)


def _masked_softmax_grad(p, ds, double scale, int threads):
    """ds := scale * p * (ds - rowsum(ds * p)) in place (masked_softmax_backward after its
    checks and its copy of dp into ds)."""
    cdef int rows = dim(p, 0) * dim(p, 1), S = dim(p, 2)
    cdef void* pp = data(p)
    cdef void* pg = data(ds)
    cdef bint f32 = _typenum(p) == cnp.NPY_FLOAT
    with nogil:
        if f32:
            _softmax_grad_rows(<float*>pp, <float*>pg, rows, S, <float>scale, threads)
        else:
            _softmax_grad_rows(<double*>pp, <double*>pg, rows, S, scale, threads)


# ---- layer normalisation (fastnn._core.layer_norm validates and documents it) ------------------
# Rows in parallel on the GEMMs' OpenMP threads; the parameter gradients are column sums over
# LN_ROW_BLOCKS fixed row blocks (a partition fixed by the shape), added in block order after:
# the bits do not depend on the thread count. The backward's blocks also form their rows' dx
# while the rows are in L1.
cdef extern from "kernels/layer_norm.h":
    void fnn_ln_forward_row_f32(const float* x, int d, const float* w, const float* b, double eps,
                                float* out, double* mean, double* invstd) noexcept nogil
    void fnn_ln_forward_row_f64(const double* x, int d, const double* w, const double* b,
                                double eps, double* out, double* mean,
                                double* invstd) noexcept nogil
    void fnn_ln_backward_rows_f32(const float* x, const float* dy, const float* w,
                                  const double* mean, const double* invstd, int r0, int r1, int d,
                                  float* dx, double* pw, double* pb) noexcept nogil
    void fnn_ln_backward_rows_f64(const double* x, const double* dy, const double* w,
                                  const double* mean, const double* invstd, int r0, int r1, int d,
                                  double* dx, double* pw, double* pb) noexcept nogil

cdef enum:
    LN_ROW_BLOCKS = 16


cdef inline void _ln_forward_row(const floating* x, int d, const floating* w, const floating* b,
                                 double eps, floating* out, double* mean,
                                 double* invstd) noexcept nogil:
    if floating is float:
        fnn_ln_forward_row_f32(x, d, w, b, eps, out, mean, invstd)
    else:
        fnn_ln_forward_row_f64(x, d, w, b, eps, out, mean, invstd)


cdef inline void _ln_forward_row_res(floating* x, const floating* res, int d, const floating* w,
                                     const floating* b, double eps, floating* out, double* mean,
                                     double* invstd) noexcept nogil:
    """One row: x += res first when res is not NULL (the residual sum, formed while the row is
    in L1), then its normalisation."""
    cdef int j
    if res != NULL:
        for j in range(d):
            x[j] = x[j] + res[j]
    _ln_forward_row(x, d, w, b, eps, out, mean, invstd)


cdef void _ln_forward(floating* x, const floating* res, const floating* w, const floating* b,
                      double eps, floating* out, double* mean, double* invstd, int m, int d,
                      int nt) noexcept nogil:
    cdef int i
    if nt > 1:
        for i in prange(m, num_threads=nt, schedule="static"):
            _ln_forward_row_res(x + <Py_ssize_t>i * d, NULL if res == NULL else res + <Py_ssize_t>i * d,
                                d, w, b, eps, out + <Py_ssize_t>i * d, mean + i, invstd + i)
    else:
        for i in range(m):
            _ln_forward_row_res(x + <Py_ssize_t>i * d, NULL if res == NULL else res + <Py_ssize_t>i * d,
                                d, w, b, eps, out + <Py_ssize_t>i * d, mean + i, invstd + i)


cdef inline void _ln_backward_block(const floating* x, const floating* dy, const floating* w,
                                    const double* mean, const double* invstd, int m, int d,
                                    int blocks, int blk, floating* dx, double* parts,
                                    bint pw, bint pb) noexcept nogil:
    cdef double* part = parts + <Py_ssize_t>blk * 2 * d
    if floating is float:
        fnn_ln_backward_rows_f32(x, dy, w, mean, invstd, <int>((<long>blk * m) // blocks),
                                 <int>((<long>(blk + 1) * m) // blocks), d, dx,
                                 part if pw else NULL, part + d if pb else NULL)
    else:
        fnn_ln_backward_rows_f64(x, dy, w, mean, invstd, <int>((<long>blk * m) // blocks),
                                 <int>((<long>(blk + 1) * m) // blocks), d, dx,
                                 part if pw else NULL, part + d if pb else NULL)


cdef void _ln_backward(const floating* x, const floating* dy, const floating* w,
                       const double* mean, const double* invstd, int m, int d, floating* dx,
                       floating* dweight, floating* dbias, double* parts, int blocks,
                       int nt) noexcept nogil:
    cdef int blk, j
    cdef double acc
    cdef bint pw = dweight != NULL, pb = dbias != NULL
    if nt > 1:
        for blk in prange(blocks, num_threads=nt, schedule="static"):
            _ln_backward_block(x, dy, w, mean, invstd, m, d, blocks, blk, dx, parts, pw, pb)
    else:
        for blk in range(blocks):
            _ln_backward_block(x, dy, w, mean, invstd, m, d, blocks, blk, dx, parts, pw, pb)
    for j in range(2 * d):  # the blocks in order
        if (j < d and not pw) or (j >= d and not pb):
            continue
        acc = 0.0
        for blk in range(blocks):
            acc = acc + parts[<Py_ssize_t>blk * 2 * d + j]
        if j < d:
            dweight[j] += <floating>acc
        else:
            dbias[j - d] += <floating>acc


def _layer_norm_forward(x, weight, bias, double eps, out, mean, invstd, residual=None):
    """fastnn._core.layer_norm.layer_norm_forward after its checks (see there); ``residual``
    (or None) is added into x first, row by row."""
    cdef int m = dim(x, 0), d = dim(x, 1)
    cdef int nt = min(gemm_threads(<Py_ssize_t>4 * m * d), m)
    cdef void* px = data(x)
    cdef void* pw = _data_or_null(weight)
    cdef void* pb = _data_or_null(bias)
    cdef void* po = data(out)
    cdef double* pm = <double*>data(mean)
    cdef double* pi = <double*>data(invstd)
    cdef void* pr = _data_or_null(residual)
    cdef bint f32 = _typenum(x) == cnp.NPY_FLOAT
    with nogil:
        if f32:
            _ln_forward(<float*>px, <float*>pr, <float*>pw, <float*>pb, eps, <float*>po, pm, pi,
                        m, d, nt)
        else:
            _ln_forward(<double*>px, <double*>pr, <double*>pw, <double*>pb, eps, <double*>po, pm,
                        pi, m, d, nt)


def _layer_norm_backward(x, dy, weight, mean, invstd, dx, dweight, dbias):
    """fastnn._core.layer_norm.layer_norm_backward after its checks (see there)."""
    cdef int m = dim(x, 0), d = dim(x, 1)
    cdef int blocks = min(<int>LN_ROW_BLOCKS, m)
    cdef int nt = min(gemm_threads(<Py_ssize_t>4 * m * d), blocks)
    parts = None
    if dweight is not None or dbias is not None:
        parts = cnp.PyArray_ZEROS(3, [blocks, 2, d], cnp.NPY_DOUBLE, 0)
    cdef void* px = data(x)
    cdef void* pg = data(dy)
    cdef void* pw = _data_or_null(weight)
    cdef double* pm = <double*>data(mean)
    cdef double* pi = <double*>data(invstd)
    cdef void* pdx = _data_or_null(dx)
    cdef void* pdw = _data_or_null(dweight)
    cdef void* pdb = _data_or_null(dbias)
    cdef double* pp = <double*>_data_or_null(parts)
    cdef bint f32 = _typenum(x) == cnp.NPY_FLOAT
    with nogil:
        if f32:
            _ln_backward(<float*>px, <float*>pg, <float*>pw, pm, pi, m, d, <float*>pdx,
                         <float*>pdw, <float*>pdb, pp, blocks, nt)
        else:
            _ln_backward(<double*>px, <double*>pg, <double*>pw, pm, pi, m, d, <double*>pdx,
                         <double*>pdw, <double*>pdb, pp, blocks, nt)
