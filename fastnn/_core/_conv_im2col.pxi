# Route family im2col/col2im (every dtype and ISA level): im2col_forward, col2im (conv2d's dx,
# conv_transpose2d's forward) and im2col_dw, through the two chunked drivers; plus the public
# im2col / col2im kernels.

# Target size of one chunk's im2col matrix (see _chunk_samples and _default_chunk_bytes).
cdef Py_ssize_t _col_chunk_bytes = 4 << 20


def _default_chunk_bytes():
    """Half the core's L2 on Intel; elsewhere twice the L2, between 1 and 4 MB (4 MB when the L2
    is unknown): a chunk's column matrix is written by im2col and read back by its GEMM on the
    same core (benchmarks/decisions.md, "im2col chunks")."""
    try:
        with open("/proc/cpuinfo") as f:
            intel = "GenuineIntel" in f.read(4096)
        for index in range(8):
            base = f"/sys/devices/system/cpu/cpu0/cache/index{index}/"
            with open(base + "level") as f:
                if f.read().strip() != "2":
                    continue
            with open(base + "size") as f:
                text = f.read().strip().upper()
            size = int(text.rstrip("KMB")) << (20 if text.endswith("M") else 10)
            if intel:
                return max(256 << 10, min(4 << 20, size // 2))
            return max(1 << 20, min(4 << 20, 2 * size))
    except (OSError, ValueError):
        pass
    return 4 << 20


_col_chunk_bytes = _default_chunk_bytes()


# ---- the two drivers ---------------------------------------------------------------------------
#
# Two ways to use the threads. Batches of at least as many chunks as threads run FUSED: one
# OpenMP region per call, each thread takes whole chunks of samples and does their im2col, its
# own single-threaded GEMM and the scatter with no barrier in between (weight gradients go into
# one accumulator per thread, added up at the end). Smaller batches run chunk by chunk with
# every step parallel inside (prange loops, gemm_rm's split GEMM).

cdef void _im2col_chunk(const floating* img, int n0, int nb, int C, int H, int W,
                        const floating* w, int O, int KH, int KW, int sh, int sw, int ph, int pw,
                        int OH, int OW, const floating* bias, floating* out,
                        const floating* g, floating* dw, floating* col, floating* buf,
                        floating* dwt, bint par, int act=0, double slope=0,
                        bint dw_nt=True) noexcept nogil:
    """One chunk of samples [n0, n0 + nb): col := im2col(img); if out: out := act(w (O, CKK) @
    col + bias) (act: see _activate); if dw: dw (O, CKK) += gather(g) @ col.T (float32 with the
    microkernel: on dw_nt (im2col_dw/nt) that, else (im2col_dw/tn) dwt (CKK, O) := col @
    gather(g).T, then added transposed; buf holds nb*P*O)."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t nbp = nb * P
    cdef const floating* gc
    _im2col(img + <Py_ssize_t>n0 * C * H * W, nb, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW,
            col, nbp, P, par)
    if out != NULL:
        if nb == 1:
            _gemm_xn(False, False, O, <int>P, ckk, w, ckk, col, <int>P, False,
                     out + <Py_ssize_t>n0 * O * P, <int>P)
            if bias != NULL:
                _add_bias(out + <Py_ssize_t>n0 * O * P, O, P, bias, par)
        else:
            _gemm_xn(False, False, O, <int>nbp, ckk, w, ckk, col, <int>nbp, False, buf, <int>nbp)
            _scatter_bias(buf, nb, O, P, bias, out + <Py_ssize_t>n0 * O * P, par)
        _activate_blocks(out + <Py_ssize_t>n0 * O * P, nb * O * P, act, slope, par)
    if dw != NULL and floating is float and FNN_MK_AVAILABLE and dw_nt:
        # im2col_dw/nt: dW += G @ col.T, col's panels transposed in registers as they are packed
        if nb == 1:
            gc = g + <Py_ssize_t>n0 * O * P
        else:
            _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
            gc = buf
        # the chunk's sum in scratch, then added: one float32 chain per chunk, not per batch
        _gemm_xn(False, True, O, ckk, <int>nbp, gc, <int>nbp, col, <int>nbp, False, dwt, ckk)
        _add_into(dwt, <Py_ssize_t>O * ckk, dw)
    elif dw != NULL and floating is float and FNN_MK_AVAILABLE:
        # dW.T = col @ g.T on the microkernel, whose operands are row-major once g is transposed
        _gather_t(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf)
        _gemm_xn(False, False, ckk, O, <int>nbp, col, <int>nbp, buf, O, False, dwt, O)
        _add_transposed(dwt, ckk, O, dw)
    elif dw != NULL:
        if nb == 1:
            gc = g + <Py_ssize_t>n0 * O * P
        else:
            _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
            gc = buf
        gemm_rm(False, True, O, ckk, <int>nbp, <floating>1, gc, <int>nbp, col, <int>nbp,
                <floating>1, dw, ckk)


cdef void _im2col_driver(const floating* img, int N, int C, int H, int W,
                         const floating* w, int O, int KH, int KW, int sh, int sw, int ph, int pw,
                         int OH, int OW, const floating* bias, floating* out,
                         const floating* g, floating* dw,
                         int nbmax, int nt, floating* col, floating* buf,
                         floating* dw_acc, int act=0, double slope=0,
                         bint dw_nt=True) noexcept nogil:
    """Per chunk of samples: col := im2col(img); if out: out := act(w (O, CKK) @ col + bias);
    if dw: dw (O, CKK) += gather(g) @ col.T. img (N, C, H, W); out and g (N, O, OH, OW).
    nt > 1 runs fused: col, buf hold nt workspaces and dw_acc nt - 1 zeroed (O, CKK) blocks;
    after those, dw_acc holds nt (CKK, O) scratch blocks (one with nt = 1)."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t col_size = <Py_ssize_t>ckk * nbmax * P
    cdef Py_ssize_t buf_size = <Py_ssize_t>O * nbmax * P
    cdef Py_ssize_t wsize = <Py_ssize_t>O * ckk
    cdef Py_ssize_t q
    cdef int n0, nb, t, chunk, nchunks, u
    cdef floating* my_dw
    cdef floating acc
    nchunks = (N + nbmax - 1) // nbmax
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            my_dw = NULL
            if dw != NULL:
                my_dw = dw if t == 0 else dw_acc + (t - 1) * wsize
            chunk = t  # chunks t, t + nt, ...: static, so the dw sums are reproducible
            while chunk < nchunks:
                n0 = chunk * nbmax
                _im2col_chunk(img, n0, min(nbmax, N - n0), C, H, W, w, O, KH, KW, sh, sw, ph,
                              pw, OH, OW, bias, out, g, my_dw, col + t * col_size,
                              buf + t * buf_size, dw_acc + (nt - 1 + t) * wsize, False, act,
                              slope, dw_nt)
                chunk = chunk + nt
        if dw != NULL:
            for q in prange(wsize, schedule="static", use_threads_if=wsize > PARALLEL_MIN_ELEMENTS):
                acc = dw[q]
                for u in range(nt - 1):
                    acc = acc + dw_acc[u * wsize + q]
                dw[q] = acc
        return
    n0 = 0
    while n0 < N:
        nb = min(nbmax, N - n0)
        _im2col_chunk(img, n0, nb, C, H, W, w, O, KH, KW, sh, sw, ph, pw, OH, OW, bias, out, g,
                      dw, col, buf, dw_acc, True, act, slope, dw_nt)
        n0 += nb


cdef void _col2im_chunk(const floating* g, int n0, int nb, int O, int OH, int OW,
                        const floating* w, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                        int H, int W, const floating* bias, floating* out, floating* col,
                        floating* buf, bint par) noexcept nogil:
    """One chunk: out[n0:n0+nb] := col2im(w.T (CKK, O) @ gather(g[n0:n0+nb])) + bias."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef int ckk = C * KH * KW
    cdef Py_ssize_t nbp = nb * P
    cdef const floating* gc
    if nb == 1:
        gc = g + <Py_ssize_t>n0 * O * P
    else:
        _gather(g + <Py_ssize_t>n0 * O * P, nb, O, P, buf, par)
        gc = buf
    _gemm_xn(True, False, ckk, <int>nbp, O, w, ckk, gc, <int>nbp, False, col, <int>nbp)
    _col2im(col, nb, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW,
            out + <Py_ssize_t>n0 * C * H * W, bias, nbp, P, par)


cdef void _col2im_driver(const floating* g, int N, int O, int OH, int OW,
                         const floating* w, int C, int KH, int KW, int sh, int sw, int ph, int pw,
                         int H, int W, const floating* bias, floating* out,
                         int nbmax, int nt, floating* col, floating* buf) noexcept nogil:
    """Per chunk: out := col2im(w.T (CKK, O) @ gather(g)) + bias. g (N, O, OH, OW) lives on the
    output grid of the convolution whose input grid (N, C, H, W) is out. nt > 1 runs fused."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW
    cdef Py_ssize_t col_size = <Py_ssize_t>C * KH * KW * nbmax * P
    cdef Py_ssize_t buf_size = <Py_ssize_t>O * nbmax * P
    cdef int n0, nb, t, chunk, nchunks
    nchunks = (N + nbmax - 1) // nbmax
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            chunk = t
            while chunk < nchunks:
                n0 = chunk * nbmax
                _col2im_chunk(g, n0, min(nbmax, N - n0), O, OH, OW, w, C, KH, KW, sh, sw, ph,
                              pw, H, W, bias, out, col + t * col_size, buf + t * buf_size, False)
                chunk = chunk + nt
        return
    n0 = 0
    while n0 < N:
        nb = min(nbmax, N - n0)
        _col2im_chunk(g, n0, nb, O, OH, OW, w, C, KH, KW, sh, sw, ph, pw, H, W, bias, out, col,
                      buf, True)
        n0 += nb


def im2col(x, kernel_size, stride, padding, out):
    """out[n, (c, i, j), oh*OW + ow] := x_padded[n, c, oh*sh + i, ow*sw + j]."""
    where = "im2col"
    kh, kw, sh, sw, ph, pw = _geometry(where, kernel_size, stride, padding)
    check_float(where, "x", x, ndim=4)
    n, c, h, w = x.shape
    oh, ow = _output_grid(where, "x", x.shape, kh, kw, sh, sw, ph, pw)
    check_out(where, "out", out, (n, c * kh * kw, oh * ow), x.dtype,
              f"x {x.shape}, kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}")
    cdef void* px = _ptr(x)
    cdef void* po = _ptr(out)
    cdef int N = n, C = c, H = h, W = w, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow
    cdef Py_ssize_t P = oh * ow
    if x.dtype == np.float32:
        with nogil:
            _im2col(<float*>px, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <float*>po, P, C * KH * KW * P, True)
    else:
        with nogil:
            _im2col(<double*>px, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <double*>po, P, C * KH * KW * P, True)
    return out


def col2im(col, kernel_size, stride, padding, out):
    """out := the adjoint of im2col applied to col: every column entry added back onto its pixel."""
    where = "col2im"
    kh, kw, sh, sw, ph, pw = _geometry(where, kernel_size, stride, padding)
    check_float(where, "col", col, ndim=3)
    check_float(where, "out", out, ndim=4, dtype=col.dtype)
    n, c, h, w = out.shape
    oh, ow = _output_grid(where, "out", out.shape, kh, kw, sh, sw, ph, pw)
    if tuple(col.shape) != (n, c * kh * kw, oh * ow):
        raise ValueError(f"col2im: col must have shape {(n, c * kh * kw, oh * ow)} for out {out.shape}, "
                         f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}; got {col.shape}")
    check_out(where, "out", out, out.shape, col.dtype)
    cdef void* pc = _ptr(col)
    cdef void* po = _ptr(out)
    cdef int N = n, C = c, H = h, W = w, KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef int OH = oh, OW = ow
    cdef Py_ssize_t P = oh * ow
    if col.dtype == np.float32:
        with nogil:
            _col2im(<float*>pc, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <float*>po, NULL, P, C * KH * KW * P, True)
    else:
        with nogil:
            _col2im(<double*>pc, N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, <double*>po, NULL, P, C * KH * KW * P, True)
    return out
