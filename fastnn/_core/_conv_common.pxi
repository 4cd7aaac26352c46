# Shared by the routes of _conv.pyx: the GEMM on the microkernel or BLAS, the element loops
# (im2col, col2im, gather, scatter, bias, activation, channel sums), chunk planning and the
# per-thread workspaces.

# Threads take the implicit and sub-pixel routes' tasks dynamically (knob conv_dynamic_schedule):
# every output is computed whole inside one task, so which thread runs it changes nothing, and a
# core slowed by other load for a while no longer holds up a static share.
cdef bint _dynamic = True


cdef inline void _mk_xn(bint trans_a, bint trans_b, int m, int n, int k, const float* a,
                        int lda, const float* b, int ldb, bint accumulate, float* c,
                        int ldc) noexcept nogil:
    if trans_a:
        fnn_mk_sgemm_tn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    elif trans_b:
        fnn_mk_sgemm_nt(m, n, k, a, lda, b, ldb, c, ldc, accumulate)
    else:
        fnn_mk_sgemm_nn(m, n, k, a, lda, b, ldb, c, ldc, accumulate)


cdef void _gemm_xn(bint trans_a, bint trans_b, int m, int n, int k, const floating* a, int lda,
                   const floating* b, int ldb, bint accumulate, floating* c, int ldc) noexcept nogil:
    """C (m, n) := op(A) @ op(B) (+ C if accumulate), not both transposed: float32 through the
    microkernel (columns cut into per-thread blocks of whole 32-column panels when worth
    sharing; one block inside a parallel region), else gemm_rm."""
    cdef int nt, t, block, lo
    if floating is float:
        if FNN_MK_AVAILABLE and k > 0:
            nt = gemm_threads(<Py_ssize_t>m * n * k)
            if nt > 1:
                block = (((n + nt - 1) // nt + 31) // 32) * 32
                for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                    lo = t * block
                    if lo < n:
                        _mk_xn(trans_a, trans_b, m, min(block, n - lo), k, a, lda,
                               b + (<Py_ssize_t>lo * ldb if trans_b else lo), ldb, accumulate,
                               c + lo, ldc)
            else:
                _mk_xn(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc)
            return
    gemm_rm(trans_a, trans_b, m, n, k, <floating>1, a, lda, b, ldb,
            <floating>1 if accumulate else <floating>0, c, ldc)


def _microkernel_available():
    """True when float32 convolution GEMMs run on the microkernel (AVX2 or AVX-512 levels)."""
    return bool(FNN_MK_AVAILABLE)


def _conv_kernels_available():
    """True when this level has the convolution kernels (implicit, direct, sub-pixel routes:
    the AVX2 and AVX-512 levels); at the baseline convolutions take the im2col routes on BLAS."""
    return bool(FNN_CONV_KERNELS)


def _require_conv_kernels(route):
    """A route entry point's guard: its kernels are not in this level's module."""
    if not FNN_CONV_KERNELS:
        raise RuntimeError(f"{route}: the convolution kernels are not in this ISA "
                           f"level's module (_conv_kernels_available() is False)")


# ---- element loops -----------------------------------------------------------------------------

cdef inline void _valid_range(int size, int out_size, int stride, int offset, int* lo, int* hi) noexcept nogil:
    """[lo, hi) = the output positions o with 0 <= o*stride + offset < size."""
    cdef int a, b
    a = 0 if offset >= 0 else (-offset + stride - 1) // stride
    b = 0 if size - 1 - offset < 0 else (size - 1 - offset) // stride + 1
    a = min(a, out_size)
    b = min(b, out_size)
    lo[0] = a
    hi[0] = max(a, b)


cdef void _im2col_row(const floating* plane, int H, int W, int i, int j, int sh, int sw, int ph,
                      int pw, int OH, int OW, floating* dst) noexcept nogil:
    """dst[oh*OW + ow] := plane[oh*sh - ph + i, ow*sw - pw + j], zero outside the plane."""
    cdef int oh, ow, ih, lo, hi
    cdef int off = j - pw
    cdef floating* d
    cdef const floating* src
    if floating is float:
        if FNN_CONV_KERNELS and sw <= 2:
            # memcpy/memset calls on rows of 7-28 floats cost more than the copy; masked
            # vector loads do a row in a few instructions per 8 or 16 outputs
            fnn_im2col_row_f32(plane, H, W, i, j, sh, sw, ph, pw, OH, OW, dst)
            return
    _valid_range(W, OW, sw, off, &lo, &hi)
    for oh in range(OH):
        d = dst + <Py_ssize_t>oh * OW
        ih = oh * sh - ph + i
        if ih < 0 or ih >= H:
            memset(d, 0, OW * sizeof(floating))
            continue
        src = plane + <Py_ssize_t>ih * W
        for ow in range(lo):
            d[ow] = 0
        if sw == 1:
            memcpy(d + lo, src + lo + off, (hi - lo) * sizeof(floating))
        else:
            for ow in range(lo, hi):
                d[ow] = src[ow * sw + off]
        for ow in range(hi, OW):
            d[ow] = 0


cdef void _im2col(const floating* x, int nb, int C, int H, int W, int KH, int KW, int sh, int sw,
                  int ph, int pw, int OH, int OW, floating* col, Py_ssize_t row_stride,
                  Py_ssize_t sample_stride, bint par) noexcept nogil:
    """col[(c*KH + i)*KW + j, n, :] := window (i, j) of x[n, c]; row r of sample n starts at
    col + r*row_stride + n*sample_stride, so one loop serves the public (N, CKK, P) layout and
    the chunk layout (CKK, nb*P)."""
    cdef Py_ssize_t task
    cdef Py_ssize_t ntasks = <Py_ssize_t>nb * C * KH * KW
    cdef int n, r, c, i, j
    cdef int ckk = C * KH * KW
    for task in prange(ntasks, schedule="static",
                       use_threads_if=par and ntasks * OH * OW > PARALLEL_MIN_ELEMENTS):
        n = task // ckk
        r = task % ckk
        c = r // (KH * KW)
        i = (r // KW) % KH
        j = r % KW
        _im2col_row(x + (<Py_ssize_t>n * C + c) * H * W, H, W, i, j, sh, sw, ph, pw, OH, OW,
                    col + r * row_stride + n * sample_stride)


cdef void _col2im(const floating* col, int nb, int C, int H, int W, int KH, int KW, int sh, int sw,
                  int ph, int pw, int OH, int OW, floating* out, const floating* bias,
                  Py_ssize_t row_stride, Py_ssize_t sample_stride, bint par) noexcept nogil:
    """out[n, c] := bias[c] (or 0) + sum over (i, j) of the window columns added back; one
    thread owns each (n, c) plane, so the overlapping adds need no atomics."""
    cdef Py_ssize_t task, q
    cdef Py_ssize_t plane_size = <Py_ssize_t>H * W
    cdef int n, c, i, j, oh, ow, ih, lo, hi, off
    cdef floating* plane
    cdef floating* dst
    cdef const floating* src
    cdef floating b
    for task in prange(<Py_ssize_t>nb * C, schedule="static",
                       use_threads_if=par and <Py_ssize_t>nb * C * KH * KW * OH * OW > PARALLEL_MIN_ELEMENTS):
        n = task // C
        c = task % C
        plane = out + task * plane_size
        if bias == NULL:
            memset(plane, 0, plane_size * sizeof(floating))
        else:
            b = bias[c]
            for q in range(plane_size):
                plane[q] = b
        for i in range(KH):
            for j in range(KW):
                src = col + ((c * KH + i) * KW + j) * row_stride + n * sample_stride
                off = j - pw
                # assigned here so that Cython makes them thread-private: set only through
                # pointers, prange left them shared, and two threads' ranges raced (out-of-bounds
                # adds, heap corruption under 2 threads)
                lo = 0
                hi = 0
                _valid_range(W, OW, sw, off, &lo, &hi)
                for oh in range(OH):
                    ih = oh * sh - ph + i
                    if ih < 0 or ih >= H:
                        continue
                    dst = plane + <Py_ssize_t>ih * W + off
                    if sw == 1:
                        for ow in range(lo, hi):
                            dst[ow] += src[oh * OW + ow]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * sw] += src[oh * OW + ow]


cdef void _gather(const floating* src, int nb, int O, Py_ssize_t P, floating* dst,
                  bint par) noexcept nogil:
    """dst (O, nb*P) := src (nb, O, P) with the sample axis moved inside the channel axis."""
    cdef Py_ssize_t task
    cdef int n, o
    for task in prange(<Py_ssize_t>nb * O, schedule="static",
                       use_threads_if=par and nb * O * P > PARALLEL_MIN_ELEMENTS):
        n = task // O
        o = task % O
        memcpy(dst + (o * <Py_ssize_t>nb + n) * P, src + task * P, P * sizeof(floating))


cdef void _gather_t(const floating* src, int nb, int O, Py_ssize_t P, floating* dst) noexcept nogil:
    """dst (nb*P, O) := src (nb, O, P) viewed as (O, nb*P), transposed (serial: the caller is one
    thread of a fused chunk loop)."""
    cdef int n, o
    cdef Py_ssize_t p
    cdef const floating* s
    cdef floating* d
    if floating is float:
        # gathers win at O <= 32; above, the scalar stores' lines stay in cache long enough
        # (benchmarks/decisions.md, "im2col dW: transposing dy")
        if FNN_CONV_KERNELS and O <= 32 and P * O < 2147483647:
            fnn_gather_t_f32(src, nb, O, P, dst)
            return
    for n in range(nb):
        for o in range(O):
            s = src + (<Py_ssize_t>n * O + o) * P
            d = dst + <Py_ssize_t>n * P * O + o
            for p in range(P):
                d[p * O] = s[p]


cdef void _add_into(const floating* src, Py_ssize_t size, floating* dst) noexcept nogil:
    """dst += src (serial: called per chunk, from one thread of the fused loop)."""
    cdef Py_ssize_t q
    for q in range(size):
        dst[q] += src[q]


cdef void _add_transposed(const floating* src, int rows, int cols, floating* dst) noexcept nogil:
    """dst (cols, rows) += src (rows, cols).T"""
    cdef int r, c
    for c in range(cols):
        for r in range(rows):
            dst[<Py_ssize_t>c * rows + r] += src[<Py_ssize_t>r * cols + c]


cdef void _scatter_bias(const floating* src, int nb, int O, Py_ssize_t P, const floating* bias,
                        floating* dst, bint par) noexcept nogil:
    """dst (nb, O, P) := src (O, nb*P) rearranged, + bias[o] (the inverse of _gather)."""
    cdef Py_ssize_t task, p
    cdef int n, o
    cdef const floating* s
    cdef floating* d
    cdef floating b
    for task in prange(<Py_ssize_t>nb * O, schedule="static",
                       use_threads_if=par and nb * O * P > PARALLEL_MIN_ELEMENTS):
        n = task // O
        o = task % O
        s = src + (o * <Py_ssize_t>nb + n) * P
        d = dst + task * P
        if bias == NULL:
            memcpy(d, s, P * sizeof(floating))
        else:
            b = bias[o]
            for p in range(P):
                d[p] = s[p] + b


cdef void _add_bias(floating* y, int O, Py_ssize_t P, const floating* bias,
                    bint par) noexcept nogil:
    cdef Py_ssize_t p
    cdef int o
    cdef floating b
    for o in prange(O, schedule="static", use_threads_if=par and O * P > PARALLEL_MIN_ELEMENTS):
        b = bias[o]
        for p in range(P):
            y[o * P + p] += b


cdef void _activate_blocks(floating* y, Py_ssize_t n, int act, double slope,
                           bint par) noexcept nogil:
    """y := act(y) in place (see _activate), blocks of 64K values split between the threads when
    par (from one thread of a fused chunk loop: par False, its own chunk, still in its cache)."""
    cdef Py_ssize_t block = 65536, i
    if act == 0:
        return
    for i in prange((n + block - 1) // block, schedule="static",
                    use_threads_if=par and n > PARALLEL_MIN_ELEMENTS):
        _activate(y + i * block, min(block, n - i * block), act, slope)


cdef void _activate(floating* y, Py_ssize_t n, int act, double slope) noexcept nogil:
    """y := act(y) in place, act 0 none, 1 ReLU, 2 leaky ReLU (see fnn_act_f32), serial."""
    cdef Py_ssize_t i
    cdef floating v
    if act == 0:
        return
    if floating is float:
        fnn_act_f32(y, n, act, slope)
        return
    for i in range(n):
        v = y[i]
        if act == 1:
            y[i] = 0 if v <= 0 else v
        elif not v > 0:
            y[i] = <floating>(v * slope)


cdef inline double _row_sum(const floating* row, Py_ssize_t P) noexcept nogil:
    """sum of row[0:P] in double over 16 lanes, added up in a fixed tree: one add chain waited on
    the adder's latency; these vectorise."""
    cdef double acc[16]
    cdef Py_ssize_t p = 0
    cdef int j
    for j in range(16):
        acc[j] = 0
    while p + 16 <= P:
        for j in range(16):
            acc[j] += row[p + j]
        p += 16
    for j in range(<int>(P - p)):
        acc[j] += row[p + j]
    for j in range(8):
        acc[j] += acc[j + 8]
    for j in range(4):
        acc[j] += acc[j + 4]
    return (acc[0] + acc[2]) + (acc[1] + acc[3])


cdef void _channel_sum(const floating* g, int N, int O, Py_ssize_t P, floating* acc) noexcept nogil:
    """acc[o] += sum over n and p of g[n, o, p] (summed in double, then added once; one thread
    per channel, so the order of the sum does not depend on the thread count)."""
    cdef int n, o
    cdef double s
    for o in prange(O, schedule="static",
                    use_threads_if=<Py_ssize_t>N * O * P > PARALLEL_MIN_ELEMENTS):
        s = 0
        for n in range(N):
            s = s + _row_sum(g + (<Py_ssize_t>n * O + o) * P, P)
        acc[o] += <floating>s


def _chunk_samples(n, col_bytes_per_sample):
    # Chunks of about _col_chunk_bytes: whole-batch im2col of a VGG-ish layer (58 MB) spills to
    # DRAM between im2col and the GEMM, while 1-sample chunks make GEMMs too small to share
    # well between threads (see benchmarks/kernels.py for the sweep).
    return int(max(1, min(n, _col_chunk_bytes // max(1, col_bytes_per_sample))))


def _plan(n, col_bytes_per_sample, work):
    """(threads, samples per chunk): fused over ``threads`` when the work is worth sharing and
    the batch gives every thread a chunk; chunks are then evened out so threads get equal shares."""
    cdef int nt = gemm_threads(work)
    nb = _chunk_samples(n, col_bytes_per_sample)
    if nt > 1 and n >= nt:
        nchunks = -(-n // nb)
        nchunks = -(-nchunks // nt) * nt
        return nt, -(-n // nchunks)
    return 1, nb


# Workspaces are kept between calls (one set per Python thread, so concurrent callers never
# share one): a fresh np.empty of megabytes is new pages, and first-touch page faults inside the
# parallel loops cost more than the GEMM they feed (benchmarks/decisions.md, "Workspaces").
_workspace_cache = threading.local()


def _cached(dtype, slot, size):
    """A 1-D array of ``size`` elements of ``dtype`` owned by this thread's cache ``slot``."""
    cache = getattr(_workspace_cache, "arrays", None)
    if cache is None:
        cache = _workspace_cache.arrays = {}
    key = (np.dtype(dtype), slot)
    arr = cache.get(key)
    if arr is None or arr.size < size:
        arr = cache[key] = np.empty(max(size, 1), dtype=dtype)
    return arr[:max(size, 1)]


def _clear_workspaces():
    """Drop this thread's cached workspaces (tests, memory-conscious callers)."""
    _workspace_cache.arrays = {}


def _workspaces(dtype, nb, col_rows, other_rows, p, nt=1, dw_size=0):
    """Per thread: the im2col matrix, a (other_rows, nb*p) GEMM output / gathered gradient, and
    for weight gradients one zeroed accumulator per extra thread then one scratch block each."""
    col = _cached(dtype, 0, nt * col_rows * nb * p)
    buf = _cached(dtype, 1, nt * other_rows * nb * p)
    dw_acc = _cached(dtype, 2, (2 * nt - 1) * dw_size)
    dw_acc[:(nt - 1) * dw_size] = 0
    return col, buf, dw_acc


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline float* _aligned64(object a):
    """The first 64-byte boundary in float32 workspace ``a`` (allocated 16 floats longer)."""
    return <float*>((<size_t>_ptr(a) + 63) & ~(<size_t>63))


def _activate_all(out, int act, double slope):
    """out := act(out) in place, in parallel (the implicit routes write their outputs panel by
    panel across channels: the activation runs after)."""
    cdef Py_ssize_t size = out.size
    cdef bint single = out.dtype == np.float32
    cdef float* pf = <float*>_ptr(out)
    cdef double* pd = <double*>_ptr(out)
    if act == 0:
        return out
    with nogil:
        if single:
            _activate_blocks(pf, size, act, slope, True)
        else:
            _activate_blocks(pd, size, act, slope, True)
    return out
