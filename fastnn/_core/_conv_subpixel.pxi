# Route family subpixel (AVX-512): strided backward-data passes (conv2d's dx, conv_transpose2d's
# forward) as one stride-1 GEMM per output phase.

# ---- sub-pixel (phase) decomposition of the strided backward-data pass ------------------------
#
# conv2d's input gradient at stride s (and conv_transpose2d's forward, the same operation) splits
# into s_h*s_w independent stride-1 convolutions, one per output phase (a, b): the rows
# ih = a + sh*i' of dx only meet kernel rows kh = r + sh*u with r = (a + ph) mod sh, and
#     dx[n, c, a + sh*i', b + sw*j'] = sum_{o,u,v} W[o, c, r + sh*u, rw + sw*v]
#                                       * dy[n, o, q0 + i' - u, q0w + j' - v]
# with q0 = (a + ph) div sh (dy zero outside its grid). Each phase is one dense GEMM
# Wphase (C, O*Ju*Jv) @ im2col_s1(dy) (O*Ju*Jv, nb*Ha*Wb) whose result is written (not added)
# to the phase's strided sub-grid of dx: no (C*KH*KW, nb*P) column matrix, no scatter-add, and
# the GEMM is O*KH*KW/(sh*sw) deep instead of O. Tasks are (chunk of samples, phase) pairs, all
# independent (the phases write disjoint sub-grids), each on its thread's own workspace and a
# single-threaded microkernel GEMM; every entry of dx is one GEMM sum in a fixed order, so the
# result does not depend on the thread count or the chunking.
# How each phase is computed (packed straight from dy, through a stride-1 im2col, or zeros where
# no tap reaches it) is the planner's choice: conv_plan.subpixel_phases, passed down as codes.
cdef enum:
    _PHASE_EMPTY = 0     # no rows or columns of dx in this phase
    _PHASE_NO_TAPS = 1
    _PHASE_IMPLICIT = 2
    _PHASE_IM2COL = 3

_PHASE_CODES = {None: _PHASE_EMPTY, "subpixel_phase/no_taps": _PHASE_NO_TAPS,
                "subpixel_phase/implicit": _PHASE_IMPLICIT,
                "subpixel_phase/im2col": _PHASE_IM2COL}


# The sub-pixel phases' implicit GEMM (see _subpixel_phase). Uses the microkernel's macros above.
cdef inline int _phase_taps(int K, int s, int r) noexcept nogil:
    """Kernel taps r, r + s, ... below K."""
    return (K - r + s - 1) // s if r < K else 0


cdef void _subpixel_weights(const float* w, int O, int C, int KH, int KW, int sh, int sw, int ph,
                            int pw, float* wph, Py_ssize_t* tab) noexcept nogil:
    """wph := the phases' (C, O*Ju*Jv) blocks one after another (phase a*sw + b), with
    wph[c, (o*Ju + u')*Jv + v'] = w[o, c, r + sh*(Ju-1-u'), rw + sw*(Jv-1-v')] (taps reversed,
    so the phase's dy columns are a plain stride-1 im2col). w is read in order, each tap t =
    (kh, kw) sent through a table of its phase's offsets (loops over the phases' taps were slow
    enough to matter at small batches: benchmarks/decisions.md); tab holds 3*KH*KW."""
    cdef int kk = KH * KW
    cdef int t, kh, kw, a, b, r, rw, ju, jv, o, c, c0, q
    cdef Py_ssize_t base, k
    cdef const float* src
    for t in range(kk):
        kh = t // KW
        kw = t % KW
        # phase rows a with (a + ph) % sh == kh % sh: a = (kh - ph) mod sh, likewise b
        a = ((kh % sh) - ph % sh + sh) % sh
        b = ((kw % sw) - pw % sw + sw) % sw
        base = 0
        for q in range(a * sw + b):
            base += (<Py_ssize_t>C * O * _phase_taps(KH, sh, (q // sw + ph) % sh)
                     * _phase_taps(KW, sw, (q % sw + pw) % sw))
        r = kh % sh
        rw = kw % sw
        ju = _phase_taps(KH, sh, r)
        jv = _phase_taps(KW, sw, rw)
        tab[3 * t] = base + (ju - 1 - kh // sh) * jv + (jv - 1 - kw // sw)
        tab[3 * t + 1] = <Py_ssize_t>O * ju * jv   # the phase block's row length k
        tab[3 * t + 2] = ju * jv
    for c0 in range(0, C, 16):
        for o in range(O):
            for c in range(c0, min(C, c0 + 16)):
                src = w + (<Py_ssize_t>o * C + c) * kk
                for t in range(kk):
                    wph[tab[3 * t] + c * tab[3 * t + 1] + o * tab[3 * t + 2]] = src[t]


def _phase_variants(int O, int OH, int OW, int KH, int KW, int sh, int sw, int ph, int pw,
                    int H, int W):
    """The planner's variant of each phase a*sw + b (conv_plan.subpixel_phases) as codes, with
    the trace of the ones that run."""
    phases = _planner.subpixel_phases(O, OH, OW, KH, KW, sh, sw, ph, pw, H, W)
    if tracing():
        for v in phases:
            if v is not None:
                took(v)
    return np.array([_PHASE_CODES[v] for v in phases], np.intc)


cdef void _subpixel_gemm(const float* g, int n0, int nb, int O, int OH, int OW,
                         const float* wph, const float* wpk, int C, int KH, int KW, int sh,
                         int sw, int ph, int pw, int H, int W, int a, int b, int variant,
                         float* col, float* buf) noexcept nogil:
    """buf (C, nb*Ha*Wb) := phase (a, b) of samples [n0, n0 + nb) by ``variant`` (a _PHASE_
    code: zeros without taps, packed from dy, or through im2col); wph is the phase's
    (C, O*Ju*Jv) weight block, wpk the same packed by fnn_pack_a8."""
    cdef int r = (a + ph) % sh, q0 = (a + ph) // sh
    cdef int rw = (b + pw) % sw, q0w = (b + pw) // sw
    cdef int ha = (H - a + sh - 1) // sh, wb = (W - b + sw - 1) // sw
    cdef int ju = _phase_taps(KH, sh, r), jv = _phase_taps(KW, sw, rw)
    cdef int k = O * ju * jv
    cdef Py_ssize_t pa = <Py_ssize_t>ha * wb
    cdef Py_ssize_t nbp = nb * pa
    if variant == _PHASE_NO_TAPS:
        memset(buf, 0, <Py_ssize_t>C * nbp * sizeof(float))
    elif variant == _PHASE_IMPLICIT:
        fnn_mk_subpixel(C, nb, pa, O, OH, OW, ju, jv, ju - 1 - q0, jv - 1 - q0w, wpk,
                        g + <Py_ssize_t>n0 * O * OH * OW, <Py_ssize_t>O * OH * OW, buf, <int>nbp)
    else:
        _im2col(g + <Py_ssize_t>n0 * O * OH * OW, nb, O, OH, OW, ju, jv, 1, 1, ju - 1 - q0,
                jv - 1 - q0w, ha, wb, col, nbp, pa, False)
        fnn_mk_sgemm_nn(C, <int>nbp, k, wph, k, col, <int>nbp, buf, <int>nbp, 0)


cdef void _subpixel_rows(const float* g, int n0, int nb, int O, int OH, int OW,
                         const float* wph, const float* wpk, int C, int KH, int KW, int sh,
                         int sw, int ph, int pw, int H, int W, int a, const int* variants,
                         const float* bias, float* out, float* col, float* buf,
                         Py_ssize_t phase_size) noexcept nogil:
    """Rows a, a + sh, ... of out[n0:n0+nb]: the sw phases (a, b) into buf (phase_size apart),
    then each of those rows written whole, its sw phases interleaved, + bias[c]."""
    cdef int ha = (H - a + sh - 1) // sh
    cdef int b, q, n, c, i, j, wb
    cdef Py_ssize_t off = 0, hw = <Py_ssize_t>H * W, rstep = <Py_ssize_t>sh * W
    cdef Py_ssize_t c8 = (C + 7) // 8 * 8  # wpk's blocks have C rounded up to whole tiles
    cdef Py_ssize_t pa, pa0, pa1
    cdef float bv
    cdef float* dst
    cdef const float* src
    if ha <= 0:
        return
    for q in range(a * sw):  # the phase weight blocks run in phase order a*sw + b
        off += (<Py_ssize_t>C * O * _phase_taps(KH, sh, (q // sw + ph) % sh)
                * _phase_taps(KW, sw, (q % sw + pw) % sw))
    for b in range(min(sw, W)):
        _subpixel_gemm(g, n0, nb, O, OH, OW, wph + off, wpk + off // C * c8, C, KH, KW, sh, sw,
                       ph, pw, H, W, a, b, variants[a * sw + b], col, buf + b * phase_size)
        off += <Py_ssize_t>C * O * _phase_taps(KH, sh, (a + ph) % sh) * _phase_taps(KW, sw, (b + pw) % sw)
    if sw == 2 and W >= 2:
        pa0 = <Py_ssize_t>ha * ((W + 1) // 2)
        pa1 = <Py_ssize_t>ha * (W // 2)
        for n in range(nb):
            for c in range(C):
                bv = 0 if bias == NULL else bias[c]
                fnn_phase_rows_s2(out + (<Py_ssize_t>(n0 + n) * C + c) * hw + <Py_ssize_t>a * W,
                                  W, rstep, buf + (c * nb + n) * pa0,
                                  buf + phase_size + (c * nb + n) * pa1, ha, bv)
        return
    for b in range(min(sw, W)):
        wb = (W - b + sw - 1) // sw
        pa = <Py_ssize_t>ha * wb
        for n in range(nb):
            for c in range(C):
                bv = 0 if bias == NULL else bias[c]
                dst = out + (<Py_ssize_t>(n0 + n) * C + c) * hw + <Py_ssize_t>a * W + b
                src = buf + b * phase_size + (c * nb + n) * pa
                for i in range(ha):
                    for j in range(wb):
                        dst[i * rstep + j * sw] = src[i * wb + j] + bv


cdef void _subpixel_driver(const float* g, int N, int O, int OH, int OW, const float* wph,
                           const float* wpk, int C, int KH, int KW, int sh, int sw, int ph, int pw, int H, int W,
                           const int* variants, const float* bias, float* out, int nbmax,
                           int nt, float* col, float* buf, Py_ssize_t col_size,
                           Py_ssize_t phase_size) noexcept nogil:
    """out (N, C, H, W) := the backward-data pass of g (N, O, OH, OW) phase by phase. Tasks
    (chunk of samples, row phase a) go to nt threads dynamically (round-robin on the static
    schedule), each thread with its own col_size and sw*phase_size workspaces."""
    cdef int nchunks = (N + nbmax - 1) // nbmax
    cdef int ntasks = nchunks * sh
    cdef int t, task, n0
    cdef Py_ssize_t buf_size = sw * phase_size
    if nt > 1 and _dynamic:
        for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
            t = openmp.omp_get_thread_num()
            n0 = (task // sh) * nbmax
            _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw,
                           ph, pw, H, W, task % sh, variants, bias, out, col + t * col_size,
                           buf + t * buf_size, phase_size)
        return
    if nt > 1:
        for t in prange(nt, num_threads=nt, schedule="static", chunksize=1):
            task = t
            while task < ntasks:
                n0 = (task // sh) * nbmax
                _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw,
                               ph, pw, H, W, task % sh, variants, bias, out, col + t * col_size,
                               buf + t * buf_size, phase_size)
                task = task + nt
        return
    for task in range(ntasks):
        n0 = (task // sh) * nbmax
        _subpixel_rows(g, n0, min(nbmax, N - n0), O, OH, OW, wph, wpk, C, KH, KW, sh, sw, ph,
                       pw, H, W, task % sh, variants, bias, out, col, buf, phase_size)


def _subpixel_backward_data(g, weight, bias, out, int sh, int sw, int ph, int pw,
                            _DwJob beside=None):
    """out (N, C, H, W) := conv2d's input gradient for output gradient g (N, O, OH, OW) and
    weight (O, C, KH, KW) (+ bias[c]), float32, by phases (see _subpixel_driver). ``beside``:
    a weight gradient whose panel tasks go first into this pass's pool of tasks (the threads
    take both kinds dynamically: a thread's dW is its share of a GEMM that scales poorly when
    split finer, and the dx tasks even the two out)."""
    _require_conv_kernels("subpixel")
    cdef int N = g.shape[0], O = g.shape[1], OH = g.shape[2], OW = g.shape[3]
    cdef int C = weight.shape[1], KH = weight.shape[2], KW = weight.shape[3]
    cdef int H = out.shape[2], W = out.shape[3]
    cdef int a, b, ju, jv, ha, wb, NB, NT
    variants = _phase_variants(O, OH, OW, KH, KW, sh, sw, ph, pw, H, W)
    cdef Py_ssize_t kmax = 0, pamax = 0, colmax = 0, wtotal = 0
    for a in range(sh):
        ju = _phase_taps(KH, sh, (a + ph) % sh)
        ha = (H - a + sh - 1) // sh
        for b in range(sw):
            jv = _phase_taps(KW, sw, (b + pw) % sw)
            wb = (W - b + sw - 1) // sw
            wtotal += <Py_ssize_t>C * O * ju * jv
            if ha > 0 and wb > 0:
                pamax = max(pamax, <Py_ssize_t>ha * wb)
                colmax = max(colmax, <Py_ssize_t>O * ju * jv * ha * wb)
    work = <Py_ssize_t>N * O * C * KH * KW * H * W // (sh * sw)
    nt, nb = _plan(N, colmax * 4, work)  # chunks evened out over the threads
    nb = -(-N // -(-N // nb))  # and in size when the batch runs unfused
    # the row phases are tasks too: a batch smaller than the thread count still shares
    nt = min(gemm_threads(work), -(-N // nb) * sh)
    if beside is not None:
        nt = beside.nthreads  # its tasks were cut for gemm_threads' count
    NB, NT = nb, nt
    cdef Py_ssize_t col_size = max(1, colmax * nb), phase_size = max(1, <Py_ssize_t>C * pamax * nb)
    col = _cached(np.float32, 0, NT * col_size)
    buf = _cached(np.float32, 1, NT * sw * phase_size)
    wph = _cached(np.float32, "subpixel_w", wtotal)
    wpk = _cached(np.float32, "subpixel_wpk", wtotal // C * ((C + 7) // 8 * 8))
    tab = _cached(np.intp, "subpixel_tab", 3 * KH * KW)
    cdef float* pg = <float*>_ptr(g)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pwph = <float*>_ptr(wph)
    cdef float* pwpk = <float*>_ptr(wpk)
    cdef Py_ssize_t off = 0, kq
    cdef int task, ntasks, t, n0
    cdef Py_ssize_t* ptab = <Py_ssize_t*>_ptr(tab)
    cdef float* pcol = <float*>_ptr(col)
    cdef float* pbuf = <float*>_ptr(buf)
    cdef const int* pvar = <int*>_ptr(variants)
    with nogil:
        _subpixel_weights(pw_, O, C, KH, KW, sh, sw, ph, pw, pwph, ptab)
        for a in range(sh * sw):  # each phase block into 8-row tiles
            kq = <Py_ssize_t>O * _phase_taps(KH, sh, (a // sw + ph) % sh) * _phase_taps(KW, sw, (a % sw + pw) % sw)
            fnn_pack_a8(C, <int>kq, 8, pwph + off * C, pwpk + off * ((C + 7) // 8 * 8))
            off += kq
        if beside is None:
            _subpixel_driver(pg, N, O, OH, OW, pwph, pwpk, C, KH, KW, sh, sw, ph, pw, H, W, pvar,
                             pb, po, NB, NT, pcol, pbuf, col_size, phase_size)
        else:
            ntasks = beside.ntasks + ((N + NB - 1) // NB) * sh
            for task in prange(ntasks, num_threads=NT, schedule="dynamic", chunksize=1):
                t = openmp.omp_get_thread_num()
                if task < beside.ntasks:
                    beside.run(task, t)
                else:
                    n0 = ((task - beside.ntasks) // sh) * NB
                    _subpixel_rows(pg, n0, min(NB, N - n0), O, OH, OW, pwph, pwpk, C, KH, KW,
                                   sh, sw, ph, pw, H, W, (task - beside.ntasks) % sh, pvar,
                                   pb, po,
                                   pcol + t * col_size, pbuf + t * sw * phase_size, phase_size)
            beside.finish()
    return out
