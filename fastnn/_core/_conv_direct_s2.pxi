# Route family direct_s2 (AVX-512): stride-2 forwards (direct_s2_forward/per_sample, /batch) and
# weight gradients (direct_s2_dw, run by _DwJob) on a padded copy of x (fnn_d2_block, fnn_dw2_rows).

cdef bint _direct_s2_on = True


def _set_direct_s2(bint on):
    """Tuning/A-B hook: float32 stride-2 forward convolutions on the direct kernel (fnn_d2_block,
    on) or the gathered implicit GEMM (fnn_mk_conv_sn, off); returns the old value."""
    global _direct_s2_on
    old = _direct_s2_on
    _direct_s2_on = on
    return old


def _direct_s2_fits(int o, int sh, int sw):
    """Whether a float32 strided forward (already on the implicit route) takes fnn_d2_block:
    stride 2 both ways and 32 output channels or more (its tiles are 32 channels wide).
    dcgan-d conv2 (N64 C64 14x14 O128 k4 s2 p1), interleaved with torch in one process on the
    2-core Zen 4 VM, medians, gathered / direct / torch (oneDNN): 1 thread 10.6 / 9.1 / 8.1 ms,
    2 threads 5.7 / 5.5 / 4.4. Both give the same bits (each output one chain over k in
    order)."""
    return _direct_s2_on and sh == 2 and sw == 2 and o >= 32


cdef bint _d2_private = True


def _set_d2_private(bint on):
    """Tuning/A-B hook: _direct_s2_forward's tasks take a sample each, padded into the thread's
    own buffer (on; batches of at least 2 samples a thread), or (sample, channel block) each on
    one padded copy of the batch (off); returns the old value. Same bits either way. dcgan-d
    conv2, interleaved with torch, 2-core Zen 4 VM: 2 threads 6.6 -> 4.9 ms (torch 4.7),
    1 thread 10.0 -> 9.1 (torch 8.9): the sample stays in the core's L2 for its 4 blocks."""
    global _d2_private
    old = _d2_private
    _d2_private = on
    return old


def _direct_s2_forward(x, weight, bias, out, int ph, int pw):
    _require_conv_kernels("_direct_s2_forward")
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int O = weight.shape[0], KH = weight.shape[2], KW = weight.shape[3]
    cdef int OH = out.shape[2], OW = out.shape[3]
    cdef int K = C * KH * KW, nob = (O + 31) // 32
    # every tap of every output pixel inside the padded plane, padding past the image included
    cdef int Hp = max(H + 2 * ph, 2 * (OH - 1) + KH), Wp = max(W + 2 * pw, 2 * (OW - 1) + KW)
    cdef int NT = gemm_threads(<Py_ssize_t>N * O * K * OH * OW)
    cdef Py_ssize_t task, plane = <Py_ssize_t>Hp * Wp, img = <Py_ssize_t>C * Hp * Wp
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, q
    # a sample per task, padded into the thread's own buffer (it stays in that core's L2 for
    # all the channel blocks), unless the batch is too small to keep the threads busy: then
    # (sample, channel block) tasks on one padded copy of the batch
    cdef bint per_sample = _d2_private and N >= 2 * NT
    took("direct_s2_forward/per_sample" if per_sample else "direct_s2_forward/batch")
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
    return out


cdef bint _direct_dw_on = True
cdef int _dw2_tasks_per_thread = 4


def _set_dw2_tasks_per_thread(int k):
    """Tuning/A-B hook: the direct weight gradient's tasks per thread (4; 1: one range of taps
    each, the static split); same bits. Returns the old value."""
    global _dw2_tasks_per_thread
    old = _dw2_tasks_per_thread
    _dw2_tasks_per_thread = max(1, k)
    return old


def _set_direct_dw(bint on):
    """Tuning/A-B hook: float32 stride-2 weight gradients on the implicit route on the direct
    kernel (fnn_dw2_rows, on; the threads split dw's taps, 8 at a time) or fnn_mk_conv_dw's
    gathered panels (off); returns the old value. dW + db, interleaved with torch on the 2-core
    Zen 4 VM, medians, gathered / direct / torch (oneDNN):
      dcgan-d conv2 (N64 C64 14x14 O128 k4 s2 p1)  1 thread 11.6 / 9.1 / 8.2 ms,
                                                   2 threads 6.9 / 4.9 / 5.3
      dcgan-d conv1 (N64 C1 28x28 O64, 16 taps)    1 thread 1.24 / 0.48 / 0.54,
                                                   2 threads 0.96 / 0.46 / 0.51
    The same bits either way (db too), for any thread count."""
    global _direct_dw_on
    old = _direct_dw_on
    _direct_dw_on = on
    return old


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
    took("direct_s2_dw")
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
