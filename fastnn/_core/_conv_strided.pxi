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
cdef bint _implicit_sn = True


def _set_implicit_strided(bint on):
    """Tuning hook for benchmarks and tests: route float32 strided forward convolutions through
    the implicit GEMM where it measured faster (True) or im2col + GEMM + scatter (False);
    returns the old value. See _strided_fits for the measurements."""
    global _implicit_sn
    old = _implicit_sn
    _implicit_sn = on
    return old


cdef bint _implicit_sn_force = False
cdef bint _implicit_sn_convt = True


def _set_implicit_strided_convt(bint on):
    """Benchmarks: conv_transpose2d_backward's dx on the implicit strided route (True) or fused
    with dW in one im2col pass (False); returns the old value. dx + dW + db of dcgan-g's
    128->64 k4 s2 p1 on 7x7, batch 64, interleaved medians of 21 on the shared VM, old / new /
    torch: 24.6 / 23.0 / 17.8 ms, 1 thread CPU time (2 threads wall 44.6 / 44.2 / 39.4, the
    other core busy); its 64->1 layer (C*KH*KW = 16) keeps the fused pass."""
    global _implicit_sn_convt
    old = _implicit_sn_convt
    _implicit_sn_convt = on
    return old


def _set_implicit_strided_force(bint on):
    """Tests: take the implicit strided route for every shape it can run (see _strided_fits)."""
    global _implicit_sn_force
    old = _implicit_sn_force
    _implicit_sn_force = on
    return old


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


def _strided_fits(x, int n, int c, int h, int w, int o, int kh, int kw, int sh, int sw, int oh, int ow):
    """Whether a strided float32 forward takes the implicit route. Interleaved A/B against
    im2col + GEMM + scatter, medians of 21, ms, 1 thread CPU time | 2 threads wall; the
    machine was shared with another engineer's runs (load ~2 on 2 cores), so the 2-thread
    numbers are about as slow as 1 thread; old / new / torch (oneDNN):
      N64 C64 14x14 O128 k4 s2 p1 (dcgan-d conv2)  16.6 / 12.2 / 10.3 | 17.2 / 12.8 / 12.8
          (a quieter run: 13.3 / 10.6 / 9.1 | 11.5 / 10.5 / 11.0)
      N64 C128 on 7x7 -> O64 (dcgan-g convT dx)    13.6 / 10.3 /  9.4 | 14.6 / 11.2 / 11.4
      N32 C64 28x28 O128 k3 s2 p1                  14.2 / 13.7 / 12.4 | 17.3 / 15.7 / 17.0
      N64 C32 16x16 O64 k3 s2 p1                    2.9 /  2.2 /  2.4 |  4.7 /  3.3 /  5.5
      N32 C128 8x8 O256 k3 s2 p1                    6.4 /  4.4 /  4.3 |  6.6 /  4.7 /  5.8
      N64 C3 32x32 O64 k4 s2 p1                     2.7 /  2.3 /  2.8 |  2.2 /  2.1 /  3.0
      N4 C64 14x14 O128 k4 s2 p1                    1.08 / 1.12 / 0.97 | 1.28 / 1.13 / 2.08
      N64 C1 28x28 O64 k4 s2 p1 (dcgan-d conv1)     0.87 / 0.96 / 1.04 | 1.82 / 1.58 / 3.17
    C*KH*KW < 32 (conv1, dcgan-g's 64->1 dx) keeps im2col: a 16-deep GEMM does not pay for
    the gathered panels and the per-panel write-out."""
    if not (_implicit_sn and x.dtype == np.float32 and FNN_CONV_KERNELS and (sh > 1 or sw > 1)
            and kh <= 32 and kw <= 32):
        return False
    # int32 gather offsets: a panel spans at most 32 // P + 2 samples
    if (32 // max(1, oh * ow) + 2) * c * h * w >= 2 ** 31:
        return False
    return _implicit_sn_force or c * kh * kw >= 32


def _strided_forward(x, weight, bias, out, int sh, int sw, int ph, int pw):
    """out := conv2d(x) + bias on the implicit strided route: stride 2 with 32 channels or more
    on the direct kernel (_direct_s2_forward), the rest on fnn_mk_conv_sn's gathered panels."""
    _require_conv_kernels("_strided_forward")
    if _direct_s2_fits(weight.shape[0], sh, sw):
        return _direct_s2_forward(x, weight, bias, out, ph, pw)
    took("strided_gathered")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef int MR = 8  # 12-row tiles measured no faster (dcgan-d conv2 12.2 ms either way, 1 thread)
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
