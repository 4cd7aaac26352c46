# Route family implicit_dw (AVX-512): weight gradients on panels gathered from x with no column
# matrix (fnn_mk_conv_dw), as a _DwJob of tasks (also run beside the sub-pixel dx).

# ---- implicit GEMM weight gradient ---------------------------------------------------------------
cdef bint _implicit_dw_on = True
cdef bint _implicit_dw_force = False
cdef int _MK_KC = FNN_MK_KC


def _set_implicit_dw(bint on, bint force=False):
    """Tuning hook for benchmarks and tests: float32 weight gradients on the implicit GEMM where
    it measured faster (on), for every shape it can run (on and force: tests), or through im2col
    chunks (off); returns the old (on, force)."""
    global _implicit_dw_on, _implicit_dw_force
    old = (_implicit_dw_on, _implicit_dw_force)
    _implicit_dw_on, _implicit_dw_force = on, force
    return old


cdef bint _side_by_side = True


def _set_side_by_side(bint on):
    """Tuning hook for benchmarks: a strided conv's sub-pixel dx and implicit dW run as one pool
    of tasks, each thread one group of dW's panels and then dx's tasks as they come (True), or
    one kernel after the other, each split over the threads (False); returns the old value."""
    global _side_by_side
    old = _side_by_side
    _side_by_side = on
    return old


def _implicit_dw_fits(x, int o, int c, int h, int w, int kh, int kw, int oh, int ow):
    """Whether a float32 weight gradient dW (O, C, KH, KW) of x (N, C, H, W) takes
    fnn_mk_conv_dw. Interleaved A/B against im2col chunks + G @ col.T, medians of 25, ms, 1 | 2
    threads, implicit / im2col / torch (oneDNN), N = 64:
      C64 14x14 O128 k4 s2 p1 (dcgan-d conv2)         8.8 / 10.1 / 8.0 | 4.7 / 5.7 / 4.6
      dy C64 14x14 -> O128 7x7 (dcgan-g convT 128->64) 1.3 /  3.6 / 1.9 | 1.4 / 3.3 / 1.6
      C64 14x14 O64 k3 s1 p1                           8.1 /  9.1 / 8.8 | 7.8 / 8.7 / 8.3
      C32 28x28 O32 k3 s1 p1 (vgg-bn's first block)   14.9 / 13.1 / 13.5 | 9.0 / 8.1 / 10.9
    and with the bias gradient (summed while g is packed, a pass of its own on the im2col route):
      C1 28x28 O64 k4 s2 p1 (dcgan-d conv1, 16 columns: the threads split the pixels)
                                                       1.07 / 1.57     | 0.59 / 0.80
      dcgan-d conv2                                                    | 5.71 / 6.26
    Each pixel's gathered panel row feeds O/8 register tiles, so O >= 64; the gather offsets
    are int32."""
    if not (_implicit_dw_on and x.dtype == np.float32 and FNN_CONV_KERNELS
            and <Py_ssize_t>c * h * w < 2 ** 31 and 16 * <Py_ssize_t>oh * ow < 2 ** 31):
        return False
    return _implicit_dw_force or o >= 64


cdef class _DwJob:
    """A weight gradient dw (O, C, KH, KW) += g (N, O, OH, OW) @ im2col(x).T (and db (O,), when
    not None, += g's channel sums, summed in double) cut into ``ntasks`` tasks for ``nthreads``
    threads: ``run(task, thread)`` in a parallel region, then ``finish``; ``run_all`` does
    both. Two kinds: _ImplicitDwJob here, _DirectDwJob (stride 2) in _conv_direct_s2.pxi."""
    cdef int N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, K, ntasks
    cdef int nthreads  # the threads its tasks are cut for (the direct route: several tasks each)
    cdef Py_ssize_t npix, wsize
    cdef const float* x
    cdef const float* g
    cdef float* dw
    cdef float* db
    cdef double* sums
    cdef object arrays  # keeps what the pointers point into alive

    cdef void run(self, int task, int thread) noexcept nogil:
        pass

    cdef void run_all(self) noexcept nogil:
        pass

    cdef void finish(self) noexcept nogil:
        pass


cdef class _ImplicitDwJob(_DwJob):
    """The implicit weight gradient on fnn_mk_conv_dw, each thread on its own Ap. With at least
    as many 32-column panels of dw as threads the tasks are groups of panels over all pixels,
    each entry one chain over the pixels in order, so the result does not depend on the thread
    count (group 0 sums db); with fewer (C*KH*KW < 32 * threads) they are ranges of the batch's
    pixels, each into a zeroed scratch dw and sums of its own, added in task order by
    ``finish``."""
    cdef int npanels, per
    cdef bint by_pixels
    cdef Py_ssize_t qper, a_size
    cdef float* ap
    cdef float* scratch

    cdef void run(self, int task, int thread) noexcept nogil:
        cdef Py_ssize_t q_lo = task * self.qper
        if self.by_pixels:
            if q_lo < self.npix:
                fnn_mk_conv_dw(self.O, 0, self.npanels, self.N, self.C, self.H, self.W, self.KH,
                               self.KW, self.sh, self.sw, self.ph, self.pw, self.OH, self.OW,
                               self.x, self.g,
                               self.dw if task == 0 else self.scratch + (task - 1) * self.wsize,
                               self.ap + thread * self.a_size, q_lo,
                               min(self.npix, q_lo + self.qper),
                               self.sums + task * self.O if self.db != NULL else NULL)
        else:
            fnn_mk_conv_dw(self.O, task * self.per, min(self.npanels, task * self.per + self.per),
                           self.N, self.C, self.H, self.W, self.KH, self.KW, self.sh, self.sw,
                           self.ph, self.pw, self.OH, self.OW, self.x, self.g, self.dw,
                           self.ap + thread * self.a_size, 0, self.npix,
                           self.sums if self.db != NULL and task == 0 else NULL)

    cdef void run_all(self) noexcept nogil:
        """Every task, task t on thread t, then finish."""
        cdef int t
        for t in prange(self.ntasks, num_threads=self.ntasks, schedule="static",
                        chunksize=1, use_threads_if=self.ntasks > 1):
            self.run(t, t)
        self.finish()

    cdef void finish(self) noexcept nogil:
        cdef Py_ssize_t q
        cdef int u, t
        cdef float acc
        cdef double total
        if self.by_pixels and self.ntasks > 1:
            for q in prange(self.wsize, schedule="static",
                            use_threads_if=self.wsize > PARALLEL_MIN_ELEMENTS):
                acc = self.dw[q]
                for u in range(self.ntasks - 1):
                    acc = acc + self.scratch[u * self.wsize + q]
                self.dw[q] = acc
        if self.db != NULL:
            for u in range(self.O):
                total = 0
                for t in range(self.ntasks if self.by_pixels else 1):
                    total = total + self.sums[t * self.O + u]
                self.db[u] += <float>total


cdef _dw_fill(_DwJob j, x, g, dw, db, int sh, int sw, int ph, int pw):
    """The geometry and operands every _DwJob has."""
    j.N, j.C, j.H, j.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    j.O, j.KH, j.KW = dw.shape[0], dw.shape[2], dw.shape[3]
    j.OH, j.OW = g.shape[2], g.shape[3]
    j.sh, j.sw, j.ph, j.pw = sh, sw, ph, pw
    j.K = j.C * j.KH * j.KW
    j.npix = <Py_ssize_t>j.N * j.OH * j.OW
    j.wsize = <Py_ssize_t>j.O * j.K
    j.x, j.g, j.dw, j.db = <float*>_ptr(x), <float*>_ptr(g), <float*>_ptr(dw), <float*>_ptr(db)


cdef _DwJob _dw_job(x, g, dw, db, int sh, int sw, int ph, int pw, int nt):
    """The _DwJob of dw += g @ im2col(x).T (and db) for nt threads."""
    cdef int O = dw.shape[0], K = x.shape[1] * dw.shape[2] * dw.shape[3]
    # the direct route splits dw's taps over the threads, 8 at a time (dcgan-d's conv1: 16 taps)
    if _direct_dw_on and sh == 2 and sw == 2 and O >= 32 and (K + 7) // 8 >= nt:
        return _direct_dw_job(x, g, dw, db, ph, pw, nt)
    cdef _ImplicitDwJob j = _ImplicitDwJob()
    _dw_fill(j, x, g, dw, db, sh, sw, ph, pw)
    j.npanels = (j.K + 31) // 32
    j.by_pixels = nt > j.npanels
    if j.by_pixels:
        took("implicit_dw/pixels")
        j.ntasks = <int>min(nt, (j.npix + _MK_KC - 1) // _MK_KC)
        j.qper = ((j.npix + j.ntasks - 1) // j.ntasks + _MK_KC - 1) // _MK_KC * _MK_KC
    else:
        took("implicit_dw/panels")
        j.ntasks = min(nt, j.npanels)
        j.per = (j.npanels + j.ntasks - 1) // j.ntasks
    j.nthreads = j.ntasks
    # the tasks' db sums in double
    sums = _cached(np.float64, "dw_sums", j.ntasks * j.O)
    sums[:] = 0
    j.sums = <double*>_ptr(sums)
    j.a_size = <Py_ssize_t>((j.O + 7) // 8) * 8 * _MK_KC
    ap = _cached(np.float32, "dw_a", nt * j.a_size + 16)
    scratch = None
    if j.by_pixels:
        scratch = _cached(np.float32, "dw_scratch", (j.ntasks - 1) * j.wsize + 1)
        scratch[:] = 0
    j.arrays = (x, g, dw, db, sums, ap, scratch)
    j.ap = _aligned64(ap)
    j.scratch = <float*>_ptr(scratch)
    return j


def _implicit_dw(x, g, dw, db, int sh, int sw, int ph, int pw):
    """dw (O, C, KH, KW) += g (N, O, OH, OW) @ im2col(x).T with no column matrix, and db += g's
    channel sums, on gemm_threads' count (see _DwJob)."""
    _require_conv_kernels("_implicit_dw")
    cdef int nt = gemm_threads(<Py_ssize_t>x.shape[0] * dw.shape[0] * x.shape[1] * dw.shape[2]
                               * dw.shape[3] * g.shape[2] * g.shape[3])
    cdef _DwJob job = _dw_job(x, g, dw, db, sh, sw, ph, pw, nt)
    with nogil:
        job.run_all()
