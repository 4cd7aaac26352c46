# ---- route winograd_s2: 4x4 stride-2 float32 forwards by F(4x4,2x2) over the stride phases ----
# (also 3x3 ones, winograd_s2/3x3 and winograd_s2_dx/3x3: the weight zero-padded to 4x4)
#
# Included by _conv.pyx. The kernels (kernels/winograd_s2.h, AVX2 and AVX-512) transform the
# weight once per call (split over the threads) into the four phases' 2x2 kernels (one 2x2
# stride-1 convolution over 4C channels), then blocks of 4x4 output tiles (flat over rows and
# samples) run on the threads: gathered 10x10 input windows transformed per phase, 25
# microkernel GEMMs 4C deep, output transform with bias and activation. Each output is the same
# float32 computation whatever the block or the thread, so the bits do not depend on the thread
# count. float32 only.

cdef extern from "kernels/winograd_s2.h":
    bint FNN_WS2_KERNELS
    int FNN_WS2_PAD
    void fnn_ws2_weights(int O, int C, int o_lo, int o_hi, const float* w, float* U) noexcept nogil
    int fnn_ws2_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                      long t_hi, const float* U, const float* x, const float* bias, float* out,
                      float* V, float* M, int act, float slope) noexcept nogil
    void fnn_ws2_dx_weights(int O, int C, int c_lo, int c_hi, const float* w, float* U) noexcept nogil
    int fnn_ws2_dx_tiles(int C, int H, int W, int O, int OH, int OW, int ph, int pw, long t_lo,
                         long t_hi, const float* U, const float* dy, const float* bias,
                         float* dx, float* V, float* M, const float* mask, int act,
                         float slope) noexcept nogil


def _winograd_s2_available():
    """Whether the ISA level in use has the F(4x4,2x2) stride-2 kernels (AVX2, AVX-512)."""
    return bool(FNN_WS2_KERNELS and FNN_MK_AVAILABLE)


def _ws2_as_4x4(weight, int ph, int pw):
    """(weight, ph, pw) of a 4x4 stride-2 convolution equal to this 3x3 (or 4x4: unchanged) one:
    the 3x3 weight in a cached 4x4 buffer with a zero row and column, first where its padding
    is odd (then one more row or column of padding), else last; the output grid is the caller's.
    The zero tap reads padding or a value it multiplies by 0; an even 4x4 padding puts dx's
    first row in the first phase row (winograd_s2_dx's tiles then waste none)."""
    if weight.shape[2] == 4:
        return weight, ph, pw
    cdef int o = weight.shape[0], c = weight.shape[1], rh = ph & 1, rw = pw & 1
    w4 = _cached(np.float32, "ws2_w4", <Py_ssize_t>o * c * 16).reshape(o, c, 4, 4)
    w4[:, :, 0 if rh else 3, :] = 0
    w4[:, :, :, 0 if rw else 3] = 0
    w4[:, :, rh:rh + 3, rw:rw + 3] = weight
    return w4, ph + rh, pw + rw


def _winograd_s2_forward(x, weight, bias, out, int ph, int pw, int act=0, double slope=0.0,
                         int block=0):
    """out := act(conv2d(x, weight, stride 2, padding (ph, pw)) + bias) for a 4x4 float32
    weight (or a 3x3 one, as a 4x4: _ws2_as_4x4), by F(4x4,2x2) over the four stride phases;
    ``block``: tiles per task (a multiple of 16; 0 for the planner's). Returns out, or None when an output came out NaN or infinite
    (out is then garbage: the caller recomputes on an exact route). The caller checks the
    arguments and the level (_winograd_s2_available); x must have fewer than 2**31 elements."""
    if not _winograd_s2_available():
        raise RuntimeError("the Winograd stride-2 kernels are not in this ISA level (AVX2+)")
    weight, ph, pw = _ws2_as_4x4(weight, ph, pw)
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], oh = out.shape[2], ow = out.shape[3]
    if x.size >= 2 ** 31:
        raise ValueError("winograd_s2: x must have fewer than 2**31 elements")
    cdef Py_ssize_t ntiles = <Py_ssize_t>n * ((oh + 3) // 4) * ((ow + 3) // 4)
    cdef int tb = block if block > 0 else _planner.winograd_s2_block(n, c, o, oh, ow)
    cdef int tl = (tb + 15) // 16 * 16
    cdef int nblocks = <int>((ntiles + tb - 1) // tb)
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 16 * oh * ow), max(nblocks, 1))
    cdef Py_ssize_t vsize = <Py_ssize_t>25 * (4 * c * tl + FNN_WS2_PAD)
    cdef Py_ssize_t per_thread = vsize + <Py_ssize_t>25 * (o * tl + FNN_WS2_PAD)
    u = _cached(np.float32, "ws2_u", <Py_ssize_t>25 * o * 4 * c)
    ws = _cached(np.float32, "ws2_vm", nt * per_thread + 16)
    cdef float* pu = <float*>_ptr(u)
    cdef float* pws = _aligned64(ws)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pwt = <float*>_ptr(weight)
    cdef const float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float fslope = <float>slope
    flags = np.zeros(max(nblocks, 1), np.int32)
    cdef int[::1] bad = flags
    cdef int blk, t, per_o = (o + nt - 1) // nt
    cdef float* v
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            fnn_ws2_weights(o, c, min(o, t * per_o), min(o, t * per_o + per_o), pwt, pu)
        for blk in prange(nblocks, num_threads=nt, schedule="dynamic", chunksize=1,
                          use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            bad[blk] = fnn_ws2_tiles(c, h, w, o, oh, ow, ph, pw, <long>blk * tb,
                                     min(ntiles, <long>blk * tb + tb), pu, px, pb, po, v,
                                     v + vsize, act, fslope)
    return None if flags.any() else out


def _winograd_s2_dx(dy, weight, bias, dx, int ph, int pw, int block=0, mask=None, int act=0,
                    double slope=0.0):
    """dx := (bias +) the backward-data pass of the 4x4 (or 3x3, as a 4x4: _ws2_as_4x4) stride-2
    float32 convolution x -> dy (padding ph, pw; dx has x's shape), by F(4x4,2x2) per output phase (each a 2x2 stride-1
    correlation of dy with a flipped phase of the kernel; with ``bias``, (C,) or None, that is
    conv_transpose2d's forward of dy). With ``mask`` (dx's shape) and act 1 (2), dx then goes
    through the backward of the ReLU (leaky ReLU of ``slope``) whose output is mask, as it is
    stored. Returns dx, or None when a value
    came out NaN or infinite (the caller recomputes on an exact route). The caller checks the
    arguments and the level; dx must have fewer than 2**31 elements."""
    if not _winograd_s2_available():
        raise RuntimeError("the Winograd stride-2 kernels are not in this ISA level (AVX2+)")
    weight, ph, pw = _ws2_as_4x4(weight, ph, pw)
    cdef int n = dx.shape[0], c = dx.shape[1], h = dx.shape[2], w = dx.shape[3]
    cdef int o = dy.shape[1], oh = dy.shape[2], ow = dy.shape[3]
    if dx.size >= 2 ** 31:
        raise ValueError("winograd_s2_dx: dx must have fewer than 2**31 elements")
    cdef int th = ((h + ph % 2 + 1) // 2 + 3) // 4, tw = ((w + pw % 2 + 1) // 2 + 3) // 4
    cdef Py_ssize_t ntiles = <Py_ssize_t>n * th * tw
    cdef int tb = block if block > 0 else _planner.winograd_s2_block(n, o, c, 4 * th, 4 * tw)
    cdef int tl = (tb + 15) // 16 * 16
    cdef int nblocks = <int>((ntiles + tb - 1) // tb)
    cdef int nt = min(gemm_threads(<Py_ssize_t>n * o * c * 16 * oh * ow), max(nblocks, 1))
    cdef Py_ssize_t vsize = <Py_ssize_t>25 * (o * tl + FNN_WS2_PAD)
    cdef Py_ssize_t per_thread = vsize + <Py_ssize_t>25 * (4 * c * tl + FNN_WS2_PAD)
    u = _cached(np.float32, "ws2_u", <Py_ssize_t>25 * o * 4 * c)
    ws = _cached(np.float32, "ws2_vm", nt * per_thread + 16)
    cdef float* pu = <float*>_ptr(u)
    cdef float* pws = _aligned64(ws)
    cdef const float* pdy = <float*>_ptr(dy)
    cdef const float* pwt = <float*>_ptr(weight)
    cdef float* pdx = <float*>_ptr(dx)
    cdef const float* pb = <float*>_ptr(bias)
    cdef const float* pm = <float*>_ptr(mask) if mask is not None else NULL
    cdef float fslope = <float>slope
    flags = np.zeros(max(nblocks, 1), np.int32)
    cdef int[::1] bad = flags
    cdef int blk, t, per_c = (c + nt - 1) // nt
    cdef float* v
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            fnn_ws2_dx_weights(o, c, min(c, t * per_c), min(c, t * per_c + per_c), pwt, pu)
        for blk in prange(nblocks, num_threads=nt, schedule="dynamic", chunksize=1,
                          use_threads_if=nt > 1):
            v = pws + openmp.omp_get_thread_num() * per_thread
            bad[blk] = fnn_ws2_dx_tiles(c, h, w, o, oh, ow, ph, pw, <long>blk * tb,
                                        min(ntiles, <long>blk * tb + tb), pu, pdy, pb, pdx, v,
                                        v + vsize, pm, act if pm != NULL else 0, fslope)
    return None if flags.any() else dx
