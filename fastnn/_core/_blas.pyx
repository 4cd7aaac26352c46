# Why Cython and not numba: this family is a thin layer over BLAS. Cython reaches sgemm/dgemm
# through scipy.linalg.cython_blas as plain C calls without the GIL (numba can only call BLAS
# through np.dot, which allocates its output and cannot fuse an epilogue), the per-call overhead
# of a def wrapper is well under a microsecond (the tiny MLPs are dominated by it), and one
# fused-type source gives float32 and float64 with no JIT warm-up.
"""GEMM and dense layers: out := alpha*op(a)@op(b) + beta*out, out := act(x @ w.T + b) and its gradients."""
from cython cimport floating
from libc.math cimport exp, tanh
from ._vecmath cimport fnn_sigmoidf, fnn_tanhf  # the float32 epilogue's (float64: libm)
from libc.string cimport memset
from cython.parallel cimport prange
cimport openmp
cimport numpy as cnp
from scipy.linalg.cython_blas cimport sgemm, dgemm

from .._checks import check_float, check_like, check_optional_out, check_out

cnp.import_array()

# No plain-loop path for tiny matrices: measured on the 2-core EPYC VM, the OpenBLAS behind
# scipy.linalg.cython_blas has its own small-matrix kernels, and a whole gemm() call (wrapper
# included) takes 0.16 us at 4x4x4, 0.33 us at 16^3 and 0.5 us for the 32x25 @ 25x3 layer of the
# lecture's tiny network, while straightforward C loops took 1.9 us at 16^3 and 5 us at 24^3
# (float reductions do not vectorise without -ffast-math). The per-call cost that matters here is
# the Python wrapper, kept under ~0.2 us by the fast_ok checks.
# dense_forward runs the GEMM on row blocks of about this many output bytes (and at least
# EPILOGUE_MIN_ROWS rows) and applies bias + activation to each block while it is still in L2
# (2 MB per core here). Blocks of 64 rows made the 1024^3 layer 20% slower than one GEMM: BLAS
# repacks the weight for every block, so blocks stay large.
cdef enum:
    EPILOGUE_BLOCK_BYTES = 1048576
    EPILOGUE_MIN_ROWS = 256

cdef enum Activation:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_SIGMOID = 3
    ACT_TANH = 4

_ACTIVATION_CODES = {"none": ACT_NONE, "relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU,
                     "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH}


# ---- float32: the GEMM microkernel of kernels/microkernel.h (shared with _conv.pyx) -----------
#
# float32 dense layers and gemm() (alpha = 1, beta 0 or 1) run on the 8x32 register-tile kernel
# instead of sgemm (Emerald Rapids VM, 1 thread: 128x784x256 forward 419 -> 346 us, dx 429 -> 343;
# the EPYC VM's OpenBLAS ran AVX2 kernels, see _conv.pyx). x @ W.T packs its B panel straight from the weight rows (fnn_mk_sgemm_nt, a 16x16
# in-register transpose per block), dx := dy @ W is nn, dW += dy.T @ x is tn (A transposed).
# Each entry of C is one sum over k in a fixed order (256-deep steps), whichever thread and
# tile computes it, so the result does not depend on the thread count. float64, other machines
# (FNN_MK_AVAILABLE 0) and the other alpha/beta keep BLAS.
from ._microkernel cimport (FNN_MK_AVAILABLE, FNN_MK_COL_ALIGN, fnn_mk_sgemm_nn, fnn_mk_sgemm_nt,
                            fnn_mk_sgemm_tn, fnn_mk_sgemm_tn_pa, fnn_mk_sgemm_tt)

cdef enum:
    MK_ROW_ALIGN = 8   # per-thread row blocks of whole 8-row tiles
    TN_PACK_A_MIN_N = 64
    MK_MIN_K = 16

cdef bint _dense_mk = True
cdef bint _tn_pack_a = True
cdef bint _backward_pair = True
cdef bint _head_gemm = True


# Knobs (fastnn._core.tuning): the same bits either way for gemm_tn_pack_a
TUNING = {
    "gemm_tn_pack_a": "A-transposed microkernel GEMMs (dW += dy.T @ x) with op(A) packed (else "
                      "read in place); the same bits",
    "dense_microkernel": "float32 dense_forward / dense_backward / gemm on the microkernel (at "
                         "the avx2 and avx512 levels; else sgemm)",
    "dense_backward_pair": "dense_backward at 2 threads: dx on one thread and dweight (+ dbias) "
                           "on the other in one parallel region (else each GEMM split over both)",
    "attention_head_gemm": "float32 attention heads' products on head_gemm.h's small GEMM with "
                           "a per-thread scratch (else the dense microkernel); the same bits",
}


def _tune(str name, value):
    """fastnn._core.tuning's access to TUNING: sets knob ``name`` to ``value`` (None: leaves it)
    and returns the old value."""
    global _tn_pack_a, _dense_mk, _backward_pair, _head_gemm
    if name == "dense_backward_pair":
        old = bool(_backward_pair)
        if value is not None:
            _backward_pair = value
    elif name == "gemm_tn_pack_a":
        old = bool(_tn_pack_a)
        if value is not None:
            _tn_pack_a = value
    elif name == "dense_microkernel":
        old = bool(_dense_mk)
        if value is not None:
            _dense_mk = value
    elif name == "attention_head_gemm":
        old = bool(_head_gemm)
        if value is not None:
            _head_gemm = value
    else:
        raise ValueError(f"_blas: no knob {name!r}")
    return old


# The route trace (fastnn._core.routes.traced): None, or a Counter of the routes taken. The GEMMs
# pick their kernel without the GIL: they mark it in _seen (a store of 1, so threads marking at
# once lose nothing), and each entry point adds the marks to the Counter when it returns.
cdef object _trace = None
cdef bint _tracing = False
cdef enum:
    SEEN_NN, SEEN_NT, SEEN_TN, SEEN_TN_PACKED, SEEN_TT, SEEN_BLAS, SEEN_HEADS, SEEN_COUNT
cdef int _seen[7]
_SEEN_ROUTES = ("microkernel/nn", "microkernel/nt", "microkernel/tn", "microkernel/tn_packed",
                "microkernel/tt", "blas_gemm", "attention/head_gemm")


def _set_route_trace(counter):
    """fastnn._core.routes' switch: count each route taken into ``counter`` (None: off);
    returns the old one."""
    global _trace, _tracing
    _collect_seen()
    old = _trace
    _trace = counter
    _tracing = counter is not None
    return old


cdef bint tracing() noexcept:
    """A trace is on: the dispatch may work out the routes it names."""
    return _trace is not None


cdef void took(str route):
    """Names the route a dispatch takes, when a trace is on (it changes nothing else); the one
    trace of _blas, _conv and _recurrent."""
    if _trace is not None:
        _trace[route] += 1


cdef inline void _saw(int kernel) noexcept nogil:
    if _tracing:
        _seen[kernel] = 1


cdef _collect_seen():
    """Adds the kernels marked since the last call to the trace (if any) and clears the marks."""
    cdef int i
    for i in range(SEEN_COUNT):
        if _seen[i]:
            _seen[i] = 0
            if _trace is not None:
                _trace[_SEEN_ROUTES[i]] += 1


def _dense_microkernel_active():
    """True when float32 dense GEMMs currently run on the microkernel (tests, benchmarks)."""
    return bool(FNN_MK_AVAILABLE and _dense_mk)


cdef inline bint _mk_ok(int m, int n, int k) noexcept nogil:
    """The microkernel takes C (m, n) with m, n and the inner size k from MK_MIN_K on: below it
    each 8x32 tile loads and stores C for a handful of multiply-adds (dx of the 256->10 layer,
    k = 10: 0.77x of sgemm, one thread), or fills a fraction of its 32 columns or 8 rows
    (forward of 128x256->10: 0.55x at 2 threads; its dW, 10 rows: 0.68x)."""
    return FNN_MK_AVAILABLE and _dense_mk and m >= MK_MIN_K and n >= MK_MIN_K and k >= MK_MIN_K


cdef inline void _mk_serial(bint trans_a, bint trans_b, int m, int n, int k, const float* a,
                            int lda, const float* b, int ldb, bint accumulate, float* c,
                            int ldc) noexcept nogil:
    if trans_a:
        if trans_b:
            _saw(SEEN_TT)
            fnn_mk_sgemm_tt(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
        # packing op(A) pays once its blocks are reused by a few 32-column panels; with one or
        # two panels it is pure overhead (1024x32x512 dW: 0.4x of the in-place read)
        elif (_tn_pack_a and n > TN_PACK_A_MIN_N
              and fnn_mk_sgemm_tn_pa(m, n, k, a, lda, b, ldb, c, ldc, accumulate)):
            _saw(SEEN_TN_PACKED)
        else:
            _saw(SEEN_TN)
            fnn_mk_sgemm_tn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    elif trans_b:
        _saw(SEEN_NT)
        fnn_mk_sgemm_nt(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    else:
        _saw(SEEN_NN)
        fnn_mk_sgemm_nn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)


cdef void _mk_part(bint trans_a, bint trans_b, int m, int n, int k, const float* a, int lda,
                   const float* b, int ldb, bint accumulate, float* c, int ldc, bint split_cols,
                   int block, int part) noexcept nogil:
    """Block ``part`` of a microkernel GEMM: columns [part*block, ...) of C, or rows."""
    cdef int lo = part * block
    cdef int size
    if split_cols:
        size = min(block, n - lo)
        if size > 0:
            _mk_serial(trans_a, trans_b, m, size, k, a, lda,
                       b + (<Py_ssize_t>lo * ldb if trans_b else lo), ldb, accumulate, c + lo, ldc)
    else:
        size = min(block, m - lo)
        if size > 0:
            _mk_serial(trans_a, trans_b, size, n, k, a + (lo if trans_a else <Py_ssize_t>lo * lda),
                       lda, b, ldb, accumulate, c + <Py_ssize_t>lo * ldc, ldc)


cdef void _mk_gemm(bint trans_a, bint trans_b, int m, int n, int k, const float* a, int lda,
                   const float* b, int ldb, bint accumulate, float* c, int ldc) noexcept nogil:
    """C (m, n) := op(A) @ op(B) (+ C if accumulate) on the microkernel, split over the threads
    as gemm_rm splits (along the longer side of C, k never split). Needs m, n, k > 0."""
    cdef int nt, part, nparts, block
    cdef bint split_cols
    nt = gemm_threads(<Py_ssize_t>m * n * k)
    if nt > 1:
        split_cols = n >= m
        block = _block(n, nt, FNN_MK_COL_ALIGN) if split_cols else _block(m, nt, MK_ROW_ALIGN)
        nparts = ((n if split_cols else m) + block - 1) // block
        if nparts > 1:
            for part in prange(nparts, num_threads=nparts, schedule="static", chunksize=1):
                _mk_part(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc,
                         split_cols, block, part)
            return
    _mk_serial(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc)


# ---- the one place that maps row-major GEMM onto column-major BLAS ----------------------------

# One thread pool: the BLAS behind scipy.linalg.cython_blas is pinned to one thread (see
# threads.py), and GEMMs big enough to share are cut into per-thread blocks of C inside an OpenMP
# region, each block one single-threaded BLAS call. Below GEMM_PARALLEL_MIN_WORK (m*n*k) a GEMM
# stays on the calling thread: on the 2-core VM a 2-thread region costs ~5-20 us to wake and
# join, about what a 2^18 multiply-add GEMM takes on one core.
cdef enum:
    GEMM_PARALLEL_MIN_WORK = 262144
    GEMM_COL_ALIGN = 16  # column blocks start on 64-byte boundaries (float32)
    GEMM_ROW_ALIGN = 4


cdef inline void _gemm_serial(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                              const floating* a, int lda, const floating* b, int ldb,
                              floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C is column-major C.T = op(B).T @ op(A).T, so BLAS gets B first and m, n swapped."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef int gemm_threads(Py_ssize_t work) noexcept nogil:
    """Threads worth using for a loop of ``work`` multiply-adds: 1 inside a parallel region (no
    nesting) or below the threshold, else the OpenMP count, capped so each thread gets a share
    of at least half the threshold."""
    cdef int nt
    if work < GEMM_PARALLEL_MIN_WORK or openmp.omp_in_parallel():
        return 1
    nt = openmp.omp_get_max_threads()
    return <int>max(1, min(<Py_ssize_t>nt, work // (GEMM_PARALLEL_MIN_WORK // 2)))


cdef inline int _block(int size, int parts, int align) noexcept nogil:
    """Block length that cuts ``size`` into at most ``parts`` aligned pieces."""
    cdef int per = (size + parts - 1) // parts
    return ((per + align - 1) // align) * align


cdef void _gemm_part(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                     const floating* a, int lda, const floating* b, int ldb, floating beta,
                     floating* c, int ldc, bint split_cols, int block, int part) noexcept nogil:
    """Block ``part`` of the GEMM: columns [part*block, ...) of C, or rows."""
    cdef int lo = part * block
    cdef int size
    if split_cols:
        size = min(block, n - lo)
        if size > 0:
            _gemm_serial(trans_a, trans_b, m, size, k, alpha, a, lda,
                         b + (<Py_ssize_t>lo * ldb if trans_b else lo), ldb, beta, c + lo, ldc)
    else:
        size = min(block, m - lo)
        if size > 0:
            _gemm_serial(trans_a, trans_b, size, n, k, alpha,
                         a + (lo if trans_a else <Py_ssize_t>lo * lda), lda, b, ldb, beta,
                         c + <Py_ssize_t>lo * ldc, ldc)


cdef void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                  const floating* a, int lda, const floating* b, int ldb, floating beta,
                  floating* c, int ldc) noexcept nogil:
    """C(m, n) := alpha * op(A) @ op(B) + beta * C, all row-major with leading dimensions lda, ldb, ldc.

    Big GEMMs are split over the OpenMP threads along the longer side of C (k is never split, so
    each entry of C is one BLAS dot product whatever the thread count)."""
    cdef int i, j, nt, part, nparts, block
    cdef bint split_cols
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # BLAS would reject ld = 0; the product is empty, only the beta scaling is left
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    lda = max(lda, 1)
    ldb = max(ldb, 1)
    ldc = max(ldc, 1)
    nt = gemm_threads(<Py_ssize_t>m * n * k)
    split_cols = n >= m
    if nt > 1:
        block = _block(n, nt, GEMM_COL_ALIGN) if split_cols else _block(m, nt, GEMM_ROW_ALIGN)
        nparts = ((n if split_cols else m) + block - 1) // block
        if nparts > 1:
            for part in prange(nparts, num_threads=nparts, schedule="static", chunksize=1):
                _gemm_part(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                           split_cols, block, part)
            return
    _gemm_serial(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


# ---- fused epilogue ----------------------------------------------------------------------------

cdef inline floating _sigmoid(floating v) noexcept nogil:
    cdef floating e
    if floating is float:
        return fnn_sigmoidf(v)
    else:
        if v >= 0:
            return 1.0 / (1.0 + exp(-v))
        e = exp(v)
        return e / (1.0 + e)


cdef void _bias_activation(floating* c, int rows, int n, Py_ssize_t ldc, const floating* bias,
                           int activation, floating slope) noexcept nogil:
    """c[i, j] := act(c[i, j] + bias[j]) on a (rows, n) block with row stride ldc; one branch per
    block, not per element."""
    cdef int i, j
    cdef floating v
    cdef floating* row
    for i in range(rows):
        row = c + i * ldc
        if bias != NULL:
            for j in range(n):
                row[j] += bias[j]
        if activation == ACT_RELU:
            for j in range(n):
                row[j] = 0 if row[j] <= 0 else row[j]  # NaN propagates, as relu_forward
        elif activation == ACT_LEAKY_RELU:
            for j in range(n):
                v = row[j]
                row[j] = v if v > 0 else slope * v
        elif activation == ACT_SIGMOID:
            for j in range(n):
                row[j] = _sigmoid(row[j])
        elif activation == ACT_TANH:
            for j in range(n):
                if floating is float:
                    row[j] = fnn_tanhf(row[j])
                else:
                    row[j] = tanh(row[j])


cdef inline void _gemm_auto(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                            const floating* a, int lda, const floating* b, int ldb, floating beta,
                            floating* c, int ldc) noexcept nogil:
    """gemm_rm's contract; float32 with alpha 1 and beta 0 or 1 runs on the microkernel where
    _mk_ok takes the shape."""
    if floating is float:
        if alpha == 1 and (beta == 0 or beta == 1) and _mk_ok(m, n, k):
            _mk_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta == 1, c, ldc)
            return
    _saw(SEEN_BLAS)
    gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline void _product_block(bint mk, int m, int n, int k, const floating* x,
                                const floating* w, floating* out, bint split_cols, int block,
                                int part) noexcept nogil:
    """Block ``part`` of out := x @ w.T (columns or rows), on the microkernel when ``mk``."""
    if floating is float:
        if mk:
            _mk_part(False, True, m, n, k, x, k, w, k, False, out, n, split_cols, block, part)
            return
    _saw(SEEN_BLAS)
    _gemm_part(False, True, m, n, k, <floating>1, x, k, w, k, <floating>0, out, n,
               split_cols, block, part)


cdef inline void _product_serial(bint mk, int m, int n, int k, const floating* x,
                                 const floating* w, floating* out) noexcept nogil:
    """out := x @ w.T on the calling thread, on the microkernel when ``mk``."""
    if floating is float:
        if mk:
            _mk_serial(False, True, m, n, k, x, k, w, k, False, out, n)
            return
    _saw(SEEN_BLAS)
    _gemm_serial(False, True, m, n, k, <floating>1, x, k, w, k, <floating>0, out, n)


cdef void _dense_forward(const floating* x, const floating* w, const floating* bias, floating* out,
                         int m, int n, int k, int activation, floating slope) noexcept nogil:
    cdef int r0, rows, block, nt, part, nparts, lo
    cdef bint split_cols
    cdef bint mk = False
    if floating is float:
        mk = _mk_ok(m, n, k)  # x @ W.T with B packed from the weight rows
    if bias == NULL and activation == ACT_NONE:
        _gemm_auto(False, True, m, n, k, <floating>1, x, k, w, k, <floating>0, out, n)
        return
    nt = gemm_threads(<Py_ssize_t>m * n * k)
    if nt > 1:
        # each thread: the GEMM of its block of out, then bias + activation while it is hot
        split_cols = n >= m
        if split_cols:
            block = _block(n, nt, FNN_MK_COL_ALIGN if mk else GEMM_COL_ALIGN)
        else:
            block = _block(m, nt, MK_ROW_ALIGN if mk else GEMM_ROW_ALIGN)
        nparts = ((n if split_cols else m) + block - 1) // block
        for part in prange(nparts, num_threads=nparts, schedule="static", chunksize=1):
            _product_block(mk, m, n, k, x, w, out, split_cols, block, part)
            lo = part * block
            if split_cols:
                _bias_activation(out + lo, m, min(block, n - lo), n,
                                 NULL if bias == NULL else bias + lo, activation, slope)
            else:
                _bias_activation(out + <Py_ssize_t>lo * n, min(block, m - lo), n, n, bias,
                                 activation, slope)
        return
    block = max(EPILOGUE_MIN_ROWS, EPILOGUE_BLOCK_BYTES // max(1, n * <int>sizeof(floating)))
    r0 = 0
    while r0 < m:
        rows = min(block, m - r0)
        _product_serial(mk, rows, n, k, x + <Py_ssize_t>r0 * k, w, out + <Py_ssize_t>r0 * n)
        _bias_activation(out + <Py_ssize_t>r0 * n, rows, n, n, bias, activation, slope)
        r0 += rows


# ---- a dense layer's dx through the ReLU before it: dx := (dy @ w) where y > 0, else 0 -------
# (dense_backward's relu: the transformer feed-forward's hidden gradient, Dense after a ReLU.) The ReLU's
# backward applied to each block of the GEMM's output while it is in cache, instead of a second
# pass over the (M, K) gradient. The blocks are those of the forward's
# epilogue (the per-thread blocks, or on one thread EPILOGUE_BLOCK_BYTES row blocks of the
# microkernel); k is never split, so each entry's bits are the unfused dense_backward's, and the
# mask is relu_backward's.
cdef void _relu_mask_block(floating* c, const floating* y, int rows, int n,
                           Py_ssize_t ld) noexcept nogil:
    cdef int i, j
    cdef floating* row
    cdef const floating* yr
    for i in range(rows):
        row = c + i * ld
        yr = y + i * ld
        for j in range(n):
            row[j] = 0 if yr[j] <= 0 else row[j]


cdef inline void _nn_block(bint mk, int m, int n, int k, const floating* a, const floating* b,
                           floating* c, bint split_cols, int block, int part) noexcept nogil:
    """Block ``part`` of c (m, n) := a (m, k) @ b (k, n), on the microkernel when ``mk``."""
    if floating is float:
        if mk:
            _mk_part(False, False, m, n, k, a, k, b, n, False, c, n, split_cols, block, part)
            return
    _saw(SEEN_BLAS)
    _gemm_part(False, False, m, n, k, <floating>1, a, k, b, n, <floating>0, c, n, split_cols,
               block, part)


cdef void _dx_relu(const floating* dy, const floating* w, const floating* y, floating* dx, int m,
                   int n, int k) noexcept nogil:
    # dx (m, k) := dy (m, n) @ w (n, k), masked by y (m, k)
    cdef int r0, rows, block, nt, part, nparts, lo
    cdef bint split_cols
    cdef bint mk = False
    if floating is float:
        mk = _mk_ok(m, k, n)
    nt = gemm_threads(<Py_ssize_t>m * n * k)
    if nt > 1:
        split_cols = k >= m
        if split_cols:
            block = _block(k, nt, FNN_MK_COL_ALIGN if mk else GEMM_COL_ALIGN)
        else:
            block = _block(m, nt, MK_ROW_ALIGN if mk else GEMM_ROW_ALIGN)
        nparts = ((k if split_cols else m) + block - 1) // block
        for part in prange(nparts, num_threads=nparts, schedule="static", chunksize=1):
            _nn_block(mk, m, k, n, dy, w, dx, split_cols, block, part)
            lo = part * block
            if split_cols:
                _relu_mask_block(dx + lo, y + lo, m, min(block, k - lo), k)
            else:
                _relu_mask_block(dx + <Py_ssize_t>lo * k, y + <Py_ssize_t>lo * k,
                                 min(block, m - lo), k, k)
        return
    # one thread: the microkernel in row blocks (its bits do not depend on m); BLAS in one call
    # (its blocking of m can change a product's rounding)
    block = max(EPILOGUE_MIN_ROWS, EPILOGUE_BLOCK_BYTES // max(1, k * <int>sizeof(floating)))
    if not mk:
        block = m
    r0 = 0
    while r0 < m:
        rows = min(block, m - r0)
        _nn_block(mk, rows, k, n, dy + <Py_ssize_t>r0 * n, w, dx + <Py_ssize_t>r0 * k, False,
                  rows, 0)
        _relu_mask_block(dx + <Py_ssize_t>r0 * k, y + <Py_ssize_t>r0 * k, rows, k, k)
        r0 += rows


cdef void _dense_backward(const floating* x, const floating* w, const floating* dy, floating* dx,
                          floating* dweight, floating* dbias, int m, int n, int k,
                          bint accumulate, bint relu) noexcept nogil:
    cdef int i, j, part
    cdef const floating* row
    # two threads: dx and dweight (the same multiply-add count, m*n*k) side by side in one
    # region, each GEMM whole on its thread (inside the region it stays serial), not each split
    # over both: one region less and no operand packed twice. The same bits as one thread.
    if (_backward_pair and dx != NULL and dweight != NULL
            and gemm_threads(<Py_ssize_t>m * n * k) == 2):
        for part in prange(2, num_threads=2, schedule="static", chunksize=1):
            if part == 0:
                _dense_backward(x, w, dy, dx, NULL, NULL, m, n, k, accumulate, relu)
            else:
                _dense_backward(x, w, dy, NULL, dweight, dbias, m, n, k, accumulate, False)
        return
    if dx != NULL:      # dx (m, k) := dy (m, n) @ w (n, k), masked by x > 0 with relu
        if relu and n > 0 and m > 0 and k > 0:
            _dx_relu(dy, w, x, dx, m, n, k)
        else:  # (n = 0: dx := 0, which the mask keeps)
            _gemm_auto(False, False, m, k, n, <floating>1, dy, n, w, k, <floating>0, dx, k)
    if dweight != NULL:  # dweight (n, k) += (or :=) dy.T (n, m) @ x (m, k)
        _gemm_auto(True, False, n, k, m, <floating>1, dy, n, x, k,
                   <floating>(1 if accumulate else 0), dweight, k)
    if dbias != NULL:
        if not accumulate:
            for j in range(n):
                dbias[j] = 0
        for i in range(m):
            row = dy + <Py_ssize_t>i * n
            for j in range(n):
                dbias[j] += row[j]


# ---- Python entry points -----------------------------------------------------------------------

cdef int _typenum(object a) noexcept:
    return cnp.PyArray_TYPE(<cnp.ndarray>a) if cnp.PyArray_Check(a) else -1


def _validate_gemm(a, b, out, trans_a, trans_b):
    where = "gemm"
    check_float(where, "a", a, ndim=2)
    check_float(where, "b", b, ndim=2, dtype=a.dtype)
    m, ka = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if ka != kb:
        raise ValueError(f"gemm: op(a) is {(m, ka)} (a {a.shape}, trans_a={bool(trans_a)}) but "
                         f"op(b) is {(kb, n)} (b {b.shape}, trans_b={bool(trans_b)}): inner sizes differ")
    check_out(where, "out", out, (m, n), a.dtype, f"op(a) {(m, ka)} @ op(b) {(kb, n)}")


def gemm(a, b, out, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
    """out := alpha * op(a) @ op(b) + beta * out (op = transpose when trans_*; beta = 0 ignores out)."""
    cdef int t = _typenum(a)
    cdef bint ta = trans_a, tb = trans_b
    cdef int m, n, k, kb
    cdef double al = alpha, be = beta
    if not (fast_ok(a, 2, t, False) and (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and fast_ok(b, 2, t, False) and fast_ok(out, 2, t, True)):
        _validate_gemm(a, b, out, ta, tb)
        raise RuntimeError("gemm: arrays rejected by the fast check but accepted by the validator")
    m = dim(a, 1) if ta else dim(a, 0)
    k = dim(a, 0) if ta else dim(a, 1)
    kb = dim(b, 1) if tb else dim(b, 0)
    n = dim(b, 0) if tb else dim(b, 1)
    if k != kb or dim(out, 0) != m or dim(out, 1) != n:
        _validate_gemm(a, b, out, ta, tb)
    cdef void* pa = data(a)
    cdef void* pb = data(b)
    cdef void* pc = data(out)
    cdef int lda = dim(a, 1), ldb = dim(b, 1)
    if t == cnp.NPY_FLOAT:
        with nogil:
            _gemm_auto(ta, tb, m, n, k, <float>al, <float*>pa, lda, <float*>pb, ldb, <float>be,
                       <float*>pc, n)
    else:
        with nogil:
            gemm_rm(ta, tb, m, n, k, al, <double*>pa, lda, <double*>pb, ldb, be, <double*>pc, n)
    if _tracing:
        _collect_seen()
    return out


def _validate_dense_forward(x, weight, bias, out, activation):
    where = "dense_forward"
    check_float(where, "x", x, ndim=2)
    check_float(where, "weight", weight, ndim=2, dtype=x.dtype)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"dense_forward: x {x.shape} has {x.shape[1]} features but weight "
                         f"{weight.shape} expects {weight.shape[1]} (weight is (out, in))")
    if bias is not None:
        check_like(where, "bias", bias, (weight.shape[0],), x.dtype, f"weight {weight.shape}")
    check_out(where, "out", out, (x.shape[0], weight.shape[0]), x.dtype,
              f"x {x.shape} @ weight.T {weight.shape[::-1]}")
    if activation not in _ACTIVATION_CODES:
        raise ValueError(f"dense_forward: activation must be one of {tuple(_ACTIVATION_CODES)}, "
                         f"got {activation!r}")


def dense_forward(x, weight, bias, out, activation="none", negative_slope=0.01):
    """out := act(x @ weight.T + bias), bias and activation fused into the GEMM epilogue."""
    cdef int t = _typenum(x)
    cdef int m, n, k
    cdef object code = _ACTIVATION_CODES.get(activation) if isinstance(activation, str) else None
    cdef int act
    cdef double slope = negative_slope
    cdef void* bias_ptr = NULL
    if not (fast_ok(x, 2, t, False) and (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and fast_ok(weight, 2, t, False) and fast_ok(out, 2, t, True)
            and (bias is None or fast_ok(bias, 1, t, False)) and code is not None):
        _validate_dense_forward(x, weight, bias, out, activation)
        raise RuntimeError("dense_forward: arrays rejected by the fast check but accepted by the validator")
    m, k, n = dim(x, 0), dim(x, 1), dim(weight, 0)
    if (dim(weight, 1) != k or dim(out, 0) != m or dim(out, 1) != n
            or (bias is not None and dim(bias, 0) != n)):
        _validate_dense_forward(x, weight, bias, out, activation)
    act = code
    if bias is not None:
        bias_ptr = data(bias)
    cdef void* px = data(x)
    cdef void* pw = data(weight)
    cdef void* po = data(out)
    if t == cnp.NPY_FLOAT:
        with nogil:
            _dense_forward(<float*>px, <float*>pw, <float*>bias_ptr, <float*>po, m, n, k, act,
                           <float>slope)
    else:
        with nogil:
            _dense_forward(<double*>px, <double*>pw, <double*>bias_ptr, <double*>po, m, n, k, act,
                           slope)
    if _tracing:
        _collect_seen()
    return out


def _validate_dense_backward(x, weight, dy, dx, dweight, dbias):
    where = "dense_backward"
    check_float(where, "x", x, ndim=2)
    check_float(where, "weight", weight, ndim=2, dtype=x.dtype)
    check_float(where, "dy", dy, ndim=2, dtype=x.dtype)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"dense_backward: x {x.shape} has {x.shape[1]} features but weight "
                         f"{weight.shape} expects {weight.shape[1]} (weight is (out, in))")
    if dy.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"dense_backward: dy must have shape {(x.shape[0], weight.shape[0])} "
                         f"for x {x.shape} and weight {weight.shape}, got {dy.shape}")
    check_optional_out(where, "dx", dx, x.shape, x.dtype, "the shape of x")
    check_optional_out(where, "dweight", dweight, weight.shape, x.dtype, "the shape of weight")
    check_optional_out(where, "dbias", dbias, (weight.shape[0],), x.dtype, f"weight {weight.shape}")


def dense_backward(x, weight, dy, dx, dweight, dbias, accumulate=True, relu=False):
    """dx := dy @ weight; dweight += dy.T @ x; dbias += dy.sum(0) (None outputs are skipped);
    accumulate=False overwrites dweight and dbias instead (their contents are ignored); relu:
    dx then through the backward of the ReLU whose output is x (0 where x <= 0), applied to
    each block of dx while it is in cache, the bits of relu_backward(x, dx, dx) after."""
    cdef int t = _typenum(x)
    cdef bint acc = accumulate
    cdef bint rl = relu
    cdef int m, n, k
    cdef void* dx_ptr = NULL
    cdef void* dw_ptr = NULL
    cdef void* db_ptr = NULL
    if not (fast_ok(x, 2, t, False) and (t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and fast_ok(weight, 2, t, False) and fast_ok(dy, 2, t, False)
            and (dx is None or fast_ok(dx, 2, t, True))
            and (dweight is None or fast_ok(dweight, 2, t, True))
            and (dbias is None or fast_ok(dbias, 1, t, True))):
        _validate_dense_backward(x, weight, dy, dx, dweight, dbias)
        raise RuntimeError("dense_backward: arrays rejected by the fast check but accepted by the validator")
    m, k, n = dim(x, 0), dim(x, 1), dim(weight, 0)
    if (dim(weight, 1) != k or dim(dy, 0) != m or dim(dy, 1) != n
            or (dx is not None and (dim(dx, 0) != m or dim(dx, 1) != k))
            or (dweight is not None and (dim(dweight, 0) != n or dim(dweight, 1) != k))
            or (dbias is not None and dim(dbias, 0) != n)):
        _validate_dense_backward(x, weight, dy, dx, dweight, dbias)
    if dx is not None:
        dx_ptr = data(dx)
    if dweight is not None:
        dw_ptr = data(dweight)
    if dbias is not None:
        db_ptr = data(dbias)
    cdef void* px = data(x)
    cdef void* pw = data(weight)
    cdef void* pdy = data(dy)
    if t == cnp.NPY_FLOAT:
        with nogil:
            _dense_backward(<float*>px, <float*>pw, <float*>pdy, <float*>dx_ptr, <float*>dw_ptr,
                            <float*>db_ptr, m, n, k, acc, rl)
    else:
        with nogil:
            _dense_backward(<double*>px, <double*>pw, <double*>pdy, <double*>dx_ptr,
                            <double*>dw_ptr, <double*>db_ptr, m, n, k, acc, rl)
    if _tracing:
        _collect_seen()
    return dx


# attention per batch and head on these GEMMs (fastnn._core.attention's compiled half)
include "_attention.pxi"


# scipy's BLAS is loaded by now (cimported above): run it single-threaded from here on.
from ..threads import pin_kernel_blas as _pin_kernel_blas
_pin_kernel_blas()
