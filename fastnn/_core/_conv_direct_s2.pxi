# Route family direct_s2 (AVX-512): stride-2 forwards (direct_s2_forward/per_sample, /batch) and
# weight gradients (direct_s2_dw, run by _DwJob) on a padded copy of x (fnn_d2_block, fnn_dw2_rows).

def _direct_s2_forward(x, weight, bias, out, int ph, int pw, bint per_sample, int act=0,
                       double slope=0.0):
    """out := act(conv2d(x) + bias) at stride 2 on fnn_d2_block's 32-channel tiles. per_sample
    (direct_s2_forward/per_sample): a sample per task, padded into the thread's own buffer (it
    stays in that core's L2 for all its channel blocks), the activation on the sample's output
    while it is in cache; else (/batch, a batch too small to keep the threads busy) (sample,
    channel block) tasks on one padded copy of the batch, the activation after. The same bits
    either way: each output is one chain over k in order, then the activation."""
    _require_conv_kernels("direct_s2_forward")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW, nob = (O + 31) // 32
    # every tap of every output pixel inside the padded plane, padding past the image included
    cdef int Hp = max(H + 2 * ph, 2 * (OH - 1) + KH), Wp = max(W + 2 * pw, 2 * (OW - 1) + KW)
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef Py_ssize_t task, plane = <Py_ssize_t>Hp * Wp, img = <Py_ssize_t>C * Hp * Wp
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, q
    xpad = _cached(np.float32, "d2_x", NT * img if per_sample else N * img)
    wt = _cached(np.float32, "d2_w", <Py_ssize_t>nob * K * 32 + 16)
    cdef float* px = <float*>_ptr(x)
    cdef float* pxp = <float*>_ptr(xpad)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef float* pwt = _aligned64(wt)
    cdef float* mine
    cdef int n, ob
    with nogil:
        fnn_d2_pack_weights(O, K, pw_, pwt)
        if per_sample:
            for task in prange(N, num_threads=NT, schedule="dynamic", chunksize=1,
                               use_threads_if=NT > 1):
                mine = pxp + openmp.omp_get_thread_num() * img
                for q in range(C):
                    fnn_pad_plane(px + (task * C + q) * H * W, H, W, ph, pw, Hp, Wp,
                                  mine + q * plane)
                for ob in range(nob):
                    fnn_d2_block(O, C, KH, KW, OH, OW, Hp, Wp, mine, pwt + ob * K * 32, ob, pb,
                                 po + task * O * P)
                _activate(po + task * O * P, <Py_ssize_t>O * P, act, slope)
        else:
            for task in prange(<Py_ssize_t>N * C, num_threads=NT, schedule="static",
                               use_threads_if=NT > 1):
                fnn_pad_plane(px + task * H * W, H, W, ph, pw, Hp, Wp, pxp + task * plane)
            for task in prange(<Py_ssize_t>N * nob, num_threads=NT, schedule="dynamic",
                               chunksize=1, use_threads_if=NT > 1):
                n = <int>(task // nob)
                ob = <int>(task % nob)
                fnn_d2_block(O, C, KH, KW, OH, OW, Hp, Wp, pxp + n * img, pwt + ob * K * 32,
                             ob, pb, po + n * O * P)
    return out if per_sample else _activate_all(out, act, slope)


# The direct weight gradient's tasks per thread (knob conv_dw2_tasks_per_thread; 1: one range of
# taps each, the static split); the same bits for any value.
cdef int _dw2_tasks_per_thread = 4


cdef class _DirectDwJob(_DwJob):
    """The stride-2 weight gradient on fnn_dw2_rows: x padded, dy transposed pixel-major and dw
    transposed (its entries then take the steps' sums in order) before any task runs; the
    tasks are ranges of dw's taps, 8 at a time, taken dynamically. db is summed from dy at the
    end. The same bits for any thread count."""
    cdef int Hp, Wp, rows_per
    cdef float* xp
    cdef float* dyt
    cdef float* dwt

    cdef void prepare(self, int nt) noexcept nogil:
        cdef Py_ssize_t q, plane = <Py_ssize_t>self.Hp * self.Wp
        cdef Py_ssize_t P = <Py_ssize_t>self.OH * self.OW
        for q in prange(<Py_ssize_t>self.N * self.C, num_threads=nt, schedule="static",
                        use_threads_if=nt > 1):
            fnn_pad_plane(self.x + q * self.H * self.W, self.H, self.W, self.ph, self.pw,
                          self.Hp, self.Wp, self.xp + q * plane)
        for q in prange(self.N, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            fnn_dw2_pack_dy(self.O, P, self.npix, <int>q, self.g, self.dyt)
        fnn_d2_pack_weights(self.O, self.K, self.dw, self.dwt)

    cdef void run(self, int task, int thread) noexcept nogil:
        cdef Py_ssize_t plane = <Py_ssize_t>self.Hp * self.Wp
        if task * self.rows_per < self.K:
            fnn_dw2_rows(task * self.rows_per, min(self.K, (task + 1) * self.rows_per), self.K, self.O,
                         self.KH, self.KW, plane, self.C * plane, self.Wp, self.OH, self.OW,
                         self.npix, self.xp, self.dyt, self.dwt)

    cdef void run_all(self) noexcept nogil:
        """Every task, taken dynamically, then finish."""
        cdef int t
        for t in prange(self.ntasks, num_threads=self.nthreads, schedule="dynamic",
                        chunksize=1, use_threads_if=self.nthreads > 1):
            self.run(t, openmp.omp_get_thread_num())
        self.finish()

    cdef void finish(self) noexcept nogil:
        cdef int o
        fnn_dw2_unpack(self.O, self.K, self.dwt, self.dw)
        if self.db != NULL:
            for o in range((self.O + 31) // 32):
                fnn_dw2_bias(self.O, o, self.npix, self.dyt, self.sums)
            for o in range(self.O):
                self.db[o] += <float>self.sums[o]


cdef _DwJob _direct_dw_job(x, g, dw, db, int ph, int pw, int nt):
    """The _DirectDwJob of dw += g @ im2col(x).T (and db) at stride 2 for nt threads, prepared."""
    cdef _DirectDwJob j = _DirectDwJob()
    _dw_fill(j, x, g, dw, db, 2, 2, ph, pw)
    # a few tasks a thread, taken as they come: a thread held up for a while (a shared VM's
    # other load) no longer holds up half of dW
    j.ntasks = <int>min(_dw2_tasks_per_thread * nt, (j.K + 7) // 8)
    j.rows_per = <int>(((j.K + 7) // 8 + j.ntasks - 1) // j.ntasks * 8)
    j.ntasks = (j.K + j.rows_per - 1) // j.rows_per
    j.nthreads = min(nt, j.ntasks)
    # db's sums in double, summed from dy at the end
    sums = _cached(np.float64, "dw_sums", j.O)
    sums[:] = 0
    j.sums = <double*>_ptr(sums)
    j.Hp, j.Wp = j.H + 2 * ph, j.W + 2 * pw
    o32 = (j.O + 31) // 32 * 32  # dyt's and dwt's channel blocks of 32
    xp = _cached(np.float32, "dw2_x", <Py_ssize_t>j.N * j.C * j.Hp * j.Wp)
    dyt = _cached(np.float32, "dw2_dy", <Py_ssize_t>o32 * j.npix + 16)
    dwt = _cached(np.float32, "dw2_w", <Py_ssize_t>j.K * o32 + 16)
    j.arrays = (x, g, dw, db, sums, xp, dyt, dwt)
    j.xp = <float*>_ptr(xp)
    j.dyt = _aligned64(dyt)
    j.dwt = _aligned64(dwt)
    with nogil:
        j.prepare(nt)
    return j
