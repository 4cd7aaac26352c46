# Route dwt_s1 (AVX-512): stride-1 same-width weight gradients (fnn_mk_conv_dwt_s1), threads on
# rows of dW (dwt_s1/rows) or on samples (dwt_s1/samples).

def _dwt_s1(x, g, dw, db, int ph, int pw, bint by_samples):
    """dw (O, C, KH, KW) += g (N, O, OH, W) @ im2col(x).T at stride 1 (OW == W), and db += g's
    channel sums (in double), on gemm_threads' count. dwt_s1/rows: the threads own contiguous
    blocks of rows (dw's columns) over all pixels, so the result does not depend on their
    number; dwt_s1/samples (``by_samples``; conv_plan takes it on several threads when the batch
    gives each a sample) they split the batch's samples, each into its own zeroed copy,
    added in thread order after.
    The kernel accumulates into dw transposed (C*KH*KW, O), copied in and out here."""
    _require_conv_kernels("dwt_s1")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = dw.shape[0], KH = dw.shape[2], KW = dw.shape[3], OH = g.shape[2]
    cdef int PH = ph, PW = pw
    cdef int ckk = C * KH * KW, npan = (O + 31) // 32
    cdef int nt = gemm_threads(<Py_ssize_t>N * O * ckk * OH * W)
    if not by_samples:
        nt = max(1, min(nt, (ckk + 7) // 8))
    cdef int per = ckk if by_samples else ((ckk + 7) // 8 + nt - 1) // nt * 8
    cdef int nper = (N + nt - 1) // nt
    cdef Py_ssize_t a_size = <Py_ssize_t>min(per, FNN_DWT_ROWS) * FNN_MK_RA_LDA, b_size = <Py_ssize_t>npan * _MK_KC * 32
    cdef Py_ssize_t wsize = <Py_ssize_t>ckk * O
    dwt = _cached(np.float32, "dwt", (nt if by_samples else 1) * wsize).reshape(-1, ckk, O)
    np.copyto(dwt[0], dw.reshape(O, ckk).T)
    if by_samples:
        dwt[1:] = 0
    ar = _cached(np.float32, "dwt_a", nt * a_size + 16)
    bp = _cached(np.float32, "dwt_b", nt * b_size + 16)
    sums = np.zeros((nt, O), np.float64)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pg = <float*>_ptr(g)
    cdef float* pdwt = <float*>_ptr(dwt)
    cdef float* par = _aligned64(ar)
    cdef float* pbp = _aligned64(bp)
    cdef double* psums = <double*>_ptr(sums) if db is not None else NULL
    cdef Py_ssize_t xs = <Py_ssize_t>C * H * W, gs = <Py_ssize_t>O * OH * W
    cdef int t, n0
    with nogil:
        if by_samples:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
                n0 = t * nper
                if n0 < N:
                    fnn_mk_conv_dwt_s1(O, 0, ckk, min(nper, N - n0), C, H, W, KH, KW, PH, PW, OH,
                                       px + n0 * xs, pg + n0 * gs, pdwt + t * wsize,
                                       par + t * a_size, pbp + t * b_size,
                                       psums + t * O if psums != NULL else NULL)
        else:
            for t in prange(nt, num_threads=nt, schedule="static", chunksize=1, use_threads_if=nt > 1):
                fnn_mk_conv_dwt_s1(O, t * per, min(ckk, t * per + per), N, C, H, W, KH, KW, PH, PW,
                                   OH, px, pg, pdwt, par + t * a_size, pbp + t * b_size,
                                   psums if t == 0 else NULL)
    total = dwt[0]
    for t in range(1, nt if by_samples else 1):
        total += dwt[t]
    dw.reshape(O, ckk)[...] = total.T
    if db is not None:
        db += sums.sum(axis=0).astype(np.float32)
