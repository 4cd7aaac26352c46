# Route strided_gathered (AVX-512): strided forwards (and conv_transpose2d's dx) on panels
# gathered straight from the image (fnn_mk_conv_sn); stride 2 with >= 32 channels goes to
# _conv_direct_s2.pxi instead.

# ---- implicit GEMM: strided forwards ---------------------------------------------------------
#
# conv2d forwards at stride >= 2 (and conv_transpose2d's dx, the same operation) as an implicit
# GEMM: out (O, N*P) = W (O, CKK) @ im2col(x) with the 32-column B panels gathered straight from
# the image (no column matrix, no scatter pass). The panels run on across output rows and
# samples (column p = n*P + oh*OW + ow), so 7x7 planes fill whole panels. Each panel is
# computed for all O rows into a small (O8, 32) scratch tile and then written to NCHW with the
# bias. The weight is first copied into 8-row tiles Ap (per FNN_MK_KC block, tile by tile,
# kk*8 + r): the broadcasts of one k step are then 32 contiguous bytes, where W's own rows are
# CKK floats apart (4 KB for 64 channels at k4) and 8 of them fell into the same L1 sets as the
# packed panel. Every output is one sum over k in a fixed order, whatever the thread split.


cdef void _conv_sn_forward(const float* x, int N, int C, int H, int W, const float* ap, int O,
                           int KH, int KW, int sh, int sw, int ph, int pw, int OH, int OW,
                           int mr, const float* bias, float* out, int nt,
                           float* tiles) noexcept nogil:
    """out := conv2d(x) + bias through fnn_mk_conv_sn, the batch's 32-column panels taken 4 at
    a time by the threads (or cut into nt contiguous ranges, the static schedule), each thread
    with its own (O8, 32) scratch tile in ``tiles``, 64-byte aligned and O8*32 floats apart."""
    cdef Py_ssize_t ncols = <Py_ssize_t>N * OH * OW
    cdef Py_ssize_t npanels = (ncols + 31) // 32
    cdef Py_ssize_t per, lo, hi, task, ntasks
    cdef int t
    nt = <int>min(nt, npanels)
    if _dynamic and nt > 1:  # tasks of 4 panels
        per = 4 * 32
        ntasks = (ncols + per - 1) // per
        for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
            lo = task * per
            hi = min(ncols, lo + per)
            t = openmp.omp_get_thread_num()
            fnn_mk_conv_sn(O, lo, hi, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, mr, ap, x, bias, out,
                           tiles + <Py_ssize_t>t * ((O + mr - 1) // mr) * mr * 32)
        return
    per = ((npanels + nt - 1) // nt) * 32
    for t in prange(nt, num_threads=nt, schedule="static", chunksize=1, use_threads_if=nt > 1):
        lo = t * per
        hi = min(ncols, lo + per)
        if lo < hi:
            fnn_mk_conv_sn(O, lo, hi, C, H, W, KH, KW, sh, sw, ph, pw, OH, OW, mr, ap, x, bias, out,
                           tiles + <Py_ssize_t>t * ((O + mr - 1) // mr) * mr * 32)


def _strided_gathered_forward(x, weight, bias, out, int sh, int sw, int ph, int pw):
    """out := conv2d(x) + bias on fnn_mk_conv_sn's gathered panels (route strided_gathered)."""
    _require_conv_kernels("strided_gathered")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef int MR = 8  # 12-row tiles measured no faster (benchmarks/decisions.md)
    ap = _cached(np.float32, "sn_a", ((O + MR - 1) // MR) * MR * K)
    # the threads' scratch tiles, 16 floats spare to start on a 64-byte line (aligned stores)
    tiles = _cached(np.float32, "sn_tiles", NT * ((O + MR - 1) // MR) * MR * 32 + 16)
    cdef float* px = <float*>_ptr(x)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pap = <float*>_ptr(ap)
    cdef float* pt = _aligned64(tiles)
    with nogil:
        fnn_pack_a8(O, K, MR, pw_, pap)
        _conv_sn_forward(px, N, C, H, W, pap, O, KH, KW, sh, sw, ph, pw, OH, OW, MR, pb, po, NT,
                         pt)
    return out
