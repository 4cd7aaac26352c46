# ---- route winograd_s2_dw: 4x4 stride-2 float32 weight gradients by F(2x2,4x4) per phase ----
#
# Included by _conv.pyx. The kernels (kernels/winograd_s2_dw.h, AVX-512 and AVX2): over the four stride
# phases, each phase's 2x2 taps are the correlation of x's phase with dy, Winograd with the roles
# swapped (dy's 4x4 tiles as the "filter"). The tasks are chunks of tiles fixed by the geometry
# (conv_plan.winograd_s2_dw_blocks), split on several threads into x's two row parities (phases
# (0, *) and (1, *), no output in common), each chunk's 25 tile sums on the microkernel's tiles; then the chunks are
# summed in order and transformed to taps in double, so the bits do not depend on the thread
# count. conv_transpose2d's dW is this with x and dy
# exchanged.

cdef extern from "kernels/winograd_s2_dw.h":
    bint FNN_WS2_DW_KERNELS
    void fnn_ws2_dw_chunk(int N, int C, int H, int W, int O, int OH, int OW, int ph, int pw,
                          long t_lo, long t_hi, int a, int kc, const float* x, const float* dy,
                          float* Mk, double* db8, float* V, float* G, float* Bp) noexcept nogil
    int fnn_ws2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks, const float* M,
                          double* grad) noexcept nogil


def _winograd_s2_dw_available():
    """Whether the ISA level in use has the F(2x2,4x4) stride-2 weight-gradient kernels."""
    return bool(FNN_WS2_DW_KERNELS and FNN_MK_AVAILABLE)


def _winograd_s2_dw(x, dy, dw, db, int ph, int pw):
    """dw (O, C, 4, 4) += the weight gradient of the 4x4 stride-2 float32 convolution x -> dy
    (padding ph, pw), db (or None) += dy's channel sums, by F(2x2,4x4) with the roles swapped
    over the four stride phases. Returns dw, or None when a tap came out NaN or infinite (dw
    and db are then unchanged: the caller recomputes on an exact route, where a non-finite
    input reaches fewer taps). The caller checks the arguments and the level
    (_winograd_s2_dw_available); x must have fewer than 2**31 elements."""
    if not _winograd_s2_dw_available():
        raise RuntimeError("the Winograd stride-2 weight-gradient kernels are not in this ISA "
                           "level (AVX2 or AVX-512)")
    if x.size >= 2 ** 31:
        raise ValueError("winograd_s2_dw: x must have fewer than 2**31 elements")
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    ntiles, kc_, chunk_, nchunks_ = _planner.winograd_s2_dw_blocks(n, c, o, oh, ow)
    cdef Py_ssize_t ntiles_c = ntiles, chunk = chunk_
    cdef int kc = kc_, nchunks = nchunks_
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 16 * oh * ow), 2 * nchunks)
    # on one thread a task is a chunk, all four phases (dy transformed once); else a chunk's
    # two row parities (phases (0, *) and (1, *)): the same sums either way
    cdef int split = nt > 1, ntasks = nchunks * (1 + split)
    cdef Py_ssize_t vsize = <Py_ssize_t>25 * 4 * c * FNN_MK_RA_LDA
    cdef Py_ssize_t gsize = <Py_ssize_t>25 * o * kc
    cdef Py_ssize_t per_thread = vsize + gsize + <Py_ssize_t>FNN_MK_KC * 32
    cdef Py_ssize_t msize = <Py_ssize_t>25 * 4 * c * o
    ws = _cached(np.float32, "ws2_dw", nt * per_thread + 16)
    parts = _cached(np.float32, "ws2_dw_parts", nchunks * msize)
    grad = _cached(np.float64, "ws2_dw_grad", <Py_ssize_t>o * c * 16)
    db8 = np.zeros(nchunks * o * 8 if db is not None else 1, np.float64)
    flags = np.zeros(nt, np.int32)
    cdef int[::1] bad = flags
    cdef float* pws = _aligned64(ws)
    cdef float* pparts = <float*>_ptr(parts)
    cdef double* pdb = <double*>_ptr(db8) if db is not None else NULL
    cdef double* pgrad = <double*>_ptr(grad)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pdy = <float*>_ptr(dy)
    cdef int k, t, per_c = (c + nt - 1) // nt
    cdef float* v
    took("winograd_s2_dw")
    with nogil:
        for k in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1,
                        use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            fnn_ws2_dw_chunk(n, c, h, w, o, oh, ow, ph, pw, <long>(k >> split) * chunk,
                             min(ntiles_c, <long>(k >> split) * chunk + chunk),
                             k % 2 if split else 2, kc, px, pdy, pparts + (k >> split) * msize,
                             pdb + <Py_ssize_t>(k >> split) * o * 8
                             if pdb != NULL and (not split or k % 2 == 0) else NULL,
                             v, v + vsize, v + vsize + gsize)
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1,
                        use_threads_if=nt > 1):
            bad[t] = fnn_ws2_dw_finish(o, c, min(c, t * per_c), min(c, t * per_c + per_c),
                                       nchunks, pparts, pgrad)
    if (flags == 2).any():
        raise MemoryError("winograd_s2_dw: out of memory")
    if flags.any():
        return None
    np.add(dw, grad.reshape(dw.shape), out=dw, casting="unsafe")
    if db is not None:
        db += db8.reshape(nchunks, o, 8).sum(axis=(0, 2)).astype(np.float32)
    return dw
