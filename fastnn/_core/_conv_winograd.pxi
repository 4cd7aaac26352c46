# ---- route winograd: 3x3 stride-1 float32 convolutions by Winograd F(2x2,3x3) or F(4x4,3x3) ---
#
# Included by _conv.pyx. The kernels (kernels/winograd.h: F(2x2,3x3) and F(4x4,3x3) at the AVX2
# and AVX-512 levels) transform the weight once per call (the threads splitting the filters),
# then blocks of 2x2 or 4x4 output tiles (flat over rows and samples) run on the threads: input
# transform, 16 (36) microkernel GEMMs, output transform with bias and activation.
# Each output is the same float32 computation whatever the block or the thread, so the bits do
# not depend on the thread count. float32 only: float64 keeps the exact routes.
# The weight gradient (winograd_dw): F(2x2,3x3) with the roles swapped, over chunks of tiles
# fixed by the geometry (so again the bits do not depend on the thread count), each chunk's
# 16 tile sums on the microkernel's tiles, then the chunks summed and transformed to 3x3 taps
# in double.

cdef extern from "kernels/winograd.h":
    bint FNN_WINOGRAD_KERNELS
    bint FNN_WINOGRAD_F4
    void fnn_wg2_weights(int O, int C, long lo, long hi, const float* w, float* U) noexcept nogil
    int fnn_wg2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                       long t_hi, const float* U, const float* x, const float* bias, float* out,
                       float* V, float* M, int act, float slope) noexcept nogil
    void fnn_wg4_weights(int O, int C, long lo, long hi, const float* w, float* U) noexcept nogil
    int fnn_wg4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                       long t_hi, const float* U, const float* x, const float* bias, float* out,
                       float* V, float* M, int act, float slope) noexcept nogil

    void fnn_wg2_dw_chunk(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                          long t_hi, int kc, const float* x, const float* dy, float* Mk,
                          double* db8, float* V, float* P) noexcept nogil
    long FNN_WG2_DW_PS(int O, int kc) noexcept nogil
    int fnn_wg2_dw_finish(int O, int C, int c_lo, int c_hi, int nchunks, const float* M,
                          double* grad) noexcept nogil

# one F(2x2,3x3) tile block's V and M (16 * (C + O) * block floats) stay about this big, in L2
cdef Py_ssize_t _wg_block_bytes = 128 << 10


def _winograd_available(int tile=2):
    """Whether the ISA level in use has the Winograd kernels of this tile (F(2x2,3x3) and
    F(4x4,3x3): AVX2 and AVX-512)."""
    return bool(FNN_WINOGRAD_KERNELS and FNN_MK_AVAILABLE and (tile == 2 or FNN_WINOGRAD_F4))


def _winograd_block(int c, int o):
    """Tiles per block for c input and o output channels: a multiple of 32 (the GEMM panels)."""
    cdef Py_ssize_t b = _wg_block_bytes // (4 * 16 * (c + o))
    return <int>max(32, min(512, b // 32 * 32))


def _winograd_forward(x, weight, bias, out, int ph, int pw, int act=0, double slope=0.0,
                      int block=0, int tile=2):
    """out := act(conv2d(x, weight, stride 1, padding (ph, pw)) + bias) for a 3x3 float32
    weight, by F(2x2,3x3) (``tile`` 2) or F(4x4,3x3) (``tile`` 4); ``block``: tiles per task, 0
    for the default. Returns out, or None when an output came out NaN or infinite (out is then
    garbage: a non-finite input spreads to all of its tiles' outputs, so the caller recomputes
    on an exact route, where it reaches only the outputs whose window holds it). The caller
    checks the arguments and the level (_winograd_available)."""
    if tile != 2 and tile != 4:
        raise ValueError(f"tile must be 2 or 4, got {tile}")
    if not _winograd_available(tile):
        raise RuntimeError(f"the Winograd F({tile}x{tile},3x3) kernels are not in this ISA "
                           f"level (AVX2 and AVX-512)")
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], oh = out.shape[2], ow = out.shape[3]
    cdef int elems = (tile + 2) * (tile + 2)
    cdef Py_ssize_t ntiles = <Py_ssize_t>n * ((oh + tile - 1) // tile) * ((ow + tile - 1) // tile)
    cdef int tb = block if block > 0 else _winograd_block(c, o)
    cdef int tl = (tb + 15) // 16 * 16
    cdef int nblocks = <int>((ntiles + tb - 1) // tb)
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 9 * oh * ow), max(nblocks, 1))
    cdef Py_ssize_t per_thread = <Py_ssize_t>elems * (c + o) * tl
    cdef Py_ssize_t vsize = <Py_ssize_t>elems * c * tl
    u = _cached(np.float32, "wg_u", <Py_ssize_t>elems * o * c)
    ws = _cached(np.float32, "wg_vm", nt * per_thread + 16)
    cdef float* pu = <float*>_ptr(u)
    cdef float* pws = _aligned64(ws)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pwt = <float*>_ptr(weight)
    cdef const float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float fslope = <float>slope
    flags = np.zeros(max(nblocks, 1), np.int32)
    cdef int[::1] bad = flags
    cdef bint f4 = tile == 4
    cdef int blk, t
    cdef float* v
    cdef long nf = <long>o * c, fpart = (nf + nt - 1) // nt   # the threads' shares of the filters
    took("winograd/f4" if f4 else "winograd")
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            if f4:
                fnn_wg4_weights(o, c, t * fpart, min(nf, t * fpart + fpart), pwt, pu)
            else:
                fnn_wg2_weights(o, c, t * fpart, min(nf, t * fpart + fpart), pwt, pu)
        for blk in prange(nblocks, num_threads=nt, schedule="dynamic", chunksize=1,
                          use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            if f4:
                bad[blk] = fnn_wg4_tiles(c, h, w, o, oh, ow, ph, pw, <long>blk * tb,
                                         min(ntiles, <long>blk * tb + tb), pu, px, pb, po, v,
                                         v + vsize, act, fslope)
            else:
                bad[blk] = fnn_wg2_tiles(c, h, w, o, oh, ow, ph, pw, <long>blk * tb,
                                         min(ntiles, <long>blk * tb + tb), pu, px, pb, po, v,
                                         v + vsize, act, fslope)
    return None if flags.any() else out


# ---- winograd/small: F(2x2,3x3) for few channels (kernels/winograd_small.h) ------------------

cdef extern from "kernels/winograd_small.h":
    bint FNN_WGS_KERNELS
    int FNN_WGS_GROUP
    int FNN_WGS_OB
    void fnn_wgs_weights(int O, int C, int b_lo, int b_hi, const float* w, float* Us) noexcept nogil
    int fnn_wgs_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                      long t_hi, const float* Us, const float* x, const float* bias, float* out,
                      float* V, float* M, int act, float slope) noexcept nogil

# winograd/small's groups of tiles per task (the threads take tasks in turn)
cdef int _wgs_groups_per_task = 4


cdef extern from "kernels/winograd_small4.h":
    bint FNN_WGS4_KERNELS
    int FNN_WGS4_GROUP
    int FNN_WGS4_OB
    void fnn_wgs4_weights(int O, int C, int b_lo, int b_hi, const float* w, float* Us) noexcept nogil
    int fnn_wgs4_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                       long t_hi, const float* Us, const float* x, const float* bias, float* out,
                       float* V, float* M, int act, float slope) noexcept nogil


def _winograd_small_available(int tile=2):
    """Whether the ISA level in use has winograd/small's kernel of this tile (F(2x2,3x3): AVX2
    and AVX-512; F(4x4,3x3), winograd/small4: the same)."""
    if tile == 4:
        return bool(FNN_WGS4_KERNELS and _winograd_available(4))
    return bool(FNN_WGS_KERNELS and _winograd_available(2))


def _winograd_small_forward(x, weight, bias, out, int ph, int pw, int act=0, double slope=0.0,
                            int tile=2):
    """_winograd_forward's contract (``tile`` 2: F(2x2,3x3), winograd/small; 4: F(4x4,3x3),
    winograd/small4, bitwise winograd/f4's outputs) on the kernel for few channels: groups of
    tiles transformed into L1/L2 scratch, the channel products in registers, the output
    transform stored straight to out. Returns out, or None when an output came out NaN or
    infinite (the caller recomputes on an exact route)."""
    if tile != 2 and tile != 4:
        raise ValueError(f"tile must be 2 or 4, got {tile}")
    if not _winograd_small_available(tile):
        raise RuntimeError(f"the winograd/small F({tile}x{tile},3x3) kernels are not in this "
                           f"ISA level (AVX2 and AVX-512)")
    cdef bint f4 = tile == 4
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], oh = out.shape[2], ow = out.shape[3]
    cdef int elems = 36 if f4 else 16
    cdef int group = FNN_WGS4_GROUP if f4 else FNN_WGS_GROUP
    cdef int ob = FNN_WGS4_OB if f4 else FNN_WGS_OB
    cdef Py_ssize_t ntiles = <Py_ssize_t>n * ((oh + tile - 1) // tile) * ((ow + tile - 1) // tile)
    cdef int tb = group * _wgs_groups_per_task
    cdef int ntasks = <int>((ntiles + tb - 1) // tb)
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 9 * oh * ow), max(ntasks, 1))
    cdef int nb = (o + ob - 1) // ob
    cdef Py_ssize_t vsize = <Py_ssize_t>elems * c * group
    cdef Py_ssize_t per_thread = vsize + <Py_ssize_t>elems * ob * group
    us = _cached(np.float32, "wgs_us", <Py_ssize_t>elems * nb * ob * c)
    ws = _cached(np.float32, "wgs_vm", nt * per_thread + 16)
    cdef float* pus = <float*>_ptr(us)
    cdef float* pws = _aligned64(ws)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pwt = <float*>_ptr(weight)
    cdef const float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float fslope = <float>slope
    flags = np.zeros(max(ntasks, 1), np.int32)
    cdef int[::1] bad = flags
    cdef int k
    cdef float* v
    with nogil:
        for k in prange(nb, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            if f4:
                fnn_wgs4_weights(o, c, k, k + 1, pwt, pus)
            else:
                fnn_wgs_weights(o, c, k, k + 1, pwt, pus)
        for k in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1,
                        use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            if f4:
                bad[k] = fnn_wgs4_tiles(c, h, w, o, oh, ow, ph, pw, <long>k * tb,
                                        min(ntiles, <long>k * tb + tb), pus, px, pb, po, v,
                                        v + vsize, act, fslope)
            else:
                bad[k] = fnn_wgs_tiles(c, h, w, o, oh, ow, ph, pw, <long>k * tb,
                                       min(ntiles, <long>k * tb + tb), pus, px, pb, po, v,
                                       v + vsize, act, fslope)
    return None if flags.any() else out


def _winograd_dw(x, dy, dw, db, int ph, int pw):
    """dw (O, C, 3, 3) += the weight gradient of the 3x3 stride-1 convolution x -> dy (padding
    ph, pw), db (or None) += dy's channel sums, by F(2x2,3x3) with the roles swapped. Returns
    dw, or None when a tap came out NaN or infinite (dw and db are then unchanged: the caller
    recomputes on an exact route, where a non-finite input reaches fewer taps). The caller checks
    the arguments and the level (_winograd_available)."""
    if not _winograd_available(2):
        raise RuntimeError("the Winograd kernels are not in this ISA level (AVX2 and AVX-512)")
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    ntiles, kc_, chunk_, nchunks_ = _planner.winograd_dw_blocks(n, c, o, oh, ow)
    cdef Py_ssize_t ntiles_c = ntiles, chunk = chunk_
    cdef int kc = kc_, nchunks = nchunks_
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 9 * oh * ow), nchunks)
    cdef Py_ssize_t vsize = <Py_ssize_t>16 * c * FNN_MK_RA_LDA
    cdef Py_ssize_t per_thread = vsize + <Py_ssize_t>16 * FNN_WG2_DW_PS(o, kc)
    cdef Py_ssize_t msize = <Py_ssize_t>16 * c * o
    ws = _cached(np.float32, "wg_dw", nt * per_thread + 16)
    parts = _cached(np.float32, "wg_dw_parts", nchunks * msize)
    db8 = np.zeros(nchunks * o * 8 if db is not None else 1, np.float64)
    grad = np.empty((o, c, 3, 3), np.float64)
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
    cdef float[::1] dwf = dw.reshape(-1)
    cdef Py_ssize_t i, ntaps = <Py_ssize_t>o * c * 9
    took("winograd_dw")
    with nogil:
        for k in prange(nchunks, num_threads=nt, schedule="dynamic", chunksize=1,
                        use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            fnn_wg2_dw_chunk(c, h, w, o, oh, ow, ph, pw, <long>k * chunk,
                             min(ntiles_c, <long>k * chunk + chunk), kc, px, pdy,
                             pparts + k * msize, pdb + <Py_ssize_t>k * o * 8 if pdb != NULL else NULL,
                             v, v + vsize)
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1,
                        use_threads_if=nt > 1):
            bad[t] = fnn_wg2_dw_finish(o, c, min(c, t * per_c), min(c, t * per_c + per_c),
                                       nchunks, pparts, pgrad)
    if (flags == 2).any():
        raise MemoryError("winograd_dw: out of memory")
    if flags.any():
        return None
    with nogil:   # dw + grad in double, rounded once (numpy's float32 + float64 -> float32)
        for i in prange(ntaps, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            dwf[i] = <float>(<double>dwf[i] + pgrad[i])
    if db is not None:
        db += db8.reshape(nchunks, o, 8).sum(axis=(0, 2)).astype(np.float32)
    return dw
