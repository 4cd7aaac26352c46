# Route family implicit_dw (AVX-512): weight gradients on panels gathered from x with no column
# matrix (fnn_mk_conv_dw), as a _DwJob of tasks (also run beside the sub-pixel dx).

# ---- implicit GEMM weight gradient ---------------------------------------------------------------
cdef int _MK_KC = FNN_MK_KC


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


cdef _DwJob _dw_job(str route, x, g, dw, db, int sh, int sw, int ph, int pw, int nt):
    """The _DwJob of dw += g @ im2col(x).T (and db) for nt threads on ``route``: direct_s2_dw,
    implicit_dw/panels or implicit_dw/pixels."""
    if route == "direct_s2_dw":
        return _direct_dw_job(x, g, dw, db, ph, pw, nt)
    cdef _ImplicitDwJob j = _ImplicitDwJob()
    _dw_fill(j, x, g, dw, db, sh, sw, ph, pw)
    j.npanels = (j.K + 31) // 32
    j.by_pixels = route == "implicit_dw/pixels"
    if j.by_pixels:
        j.ntasks = <int>min(nt, (j.npix + _MK_KC - 1) // _MK_KC)
        j.qper = ((j.npix + j.ntasks - 1) // j.ntasks + _MK_KC - 1) // _MK_KC * _MK_KC
    else:
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


def _implicit_dw(str route, x, g, dw, db, int sh, int sw, int ph, int pw):
    """dw (O, C, KH, KW) += g (N, O, OH, OW) @ im2col(x).T with no column matrix, and db += g's
    channel sums, on gemm_threads' count (see _DwJob)."""
    _require_conv_kernels(route)
    cdef int nt = gemm_threads(<Py_ssize_t>x.shape[0] * dw.shape[0] * x.shape[1] * dw.shape[2]
                               * dw.shape[3] * g.shape[2] * g.shape[3])
    cdef _DwJob job = _dw_job(route, x, g, dw, db, sh, sw, ph, pw, nt)
    with nogil:
        job.run_all()
