# Route family s1 (AVX-512): stride-1 forwards (and the stride-1 dx, a forward of the flipped
# kernel) as an implicit GEMM packed straight from x: s1_implicit, s1_across_samples, s1_widened.

# Stride-1 same-width float32 forward convolutions as an implicit GEMM (see _conv_s1_forward).
cdef bint _implicit_s1 = True


def _set_implicit_gemm(bint on):
    """Tuning hook for benchmarks and tests: route stride-1 same-width float32 forward
    convolutions through the implicit GEMM (True) or im2col + GEMM; returns the old value."""
    global _implicit_s1
    old = _implicit_s1
    _implicit_s1 = on
    return old


# ---- implicit GEMM: stride 1, output as wide as the input ---------------------------------------

cdef void _conv_s1_forward(const float* x, int N, int C, int H, int W, const float* w, int O,
                           int KH, int KW, int ph, int pw, int OH, const float* bias, float* out,
                           int nt) noexcept nogil:
    """out[n] := w (O, CKK) @ im2col(x[n]) + bias with the microkernel packing straight from the
    image (fnn_mk_conv_s1). Tasks are whole samples, or column ranges of a sample when the
    batch is too small to give every thread two samples."""
    cdef Py_ssize_t P = <Py_ssize_t>OH * W
    cdef int npanels = <int>((P + 31) // 32)
    cdef int splits = 1
    cdef int task
    if nt > 1 and N < 2 * nt:
        splits = min(npanels, (2 * nt + N - 1) // N)
    cdef int per = ((npanels + splits - 1) // splits) * 32
    if _dynamic and nt > 1:
        for task in prange(N * splits, num_threads=nt, schedule="dynamic", chunksize=1):
            _conv_s1_task(x, N, C, H, W, w, O, KH, KW, ph, pw, P, bias, out, splits, per, task)
    else:
        for task in prange(N * splits, num_threads=nt, schedule="static", use_threads_if=nt > 1):
            _conv_s1_task(x, N, C, H, W, w, O, KH, KW, ph, pw, P, bias, out, splits, per, task)


cdef inline void _conv_s1_task(const float* x, int N, int C, int H, int W, const float* w, int O,
                               int KH, int KW, int ph, int pw, Py_ssize_t P, const float* bias,
                               float* out, int splits, int per, int task) noexcept nogil:
    """Columns [sp*per, (sp+1)*per) of sample n = task // splits (sp = task % splits)."""
    cdef int n = task // splits, sp = task % splits, o
    cdef int lo = sp * per
    cdef int hi = <int>min(P, lo + per)
    cdef Py_ssize_t q
    cdef float b
    cdef float* y
    if lo < hi:
        y = out + <Py_ssize_t>n * O * P
        fnn_mk_conv_s1(O, lo, hi, C, H, W, KH, KW, ph, pw, w, x + <Py_ssize_t>n * C * H * W,
                       y, <int>P)
        if bias != NULL:
            for o in range(O):
                b = bias[o]
                for q in range(lo, hi):
                    y[o * P + q] += b


cdef void _s1_forward_call(x, weight, bias, out, int n, int c, int h, int w, int o, int kh, int kw,
                           int ph, int pw, int oh, int nt):
    cdef float* px = <float*>_ptr(x)
    cdef float* pw_ = <float*>_ptr(weight)
    cdef float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    with nogil:
        _conv_s1_forward(px, n, c, h, w, pw_, o, kh, kw, ph, pw, oh, pb, po, nt)


cdef bint _widen_s1 = True


def _set_widen_s1(bint on):
    """Tuning hook for benchmarks and tests: stride-1 forwards whose output is wider than the
    input (padding >= K-1) on the implicit route over a widened copy of x (True) or through
    im2col chunks (False); returns the old value."""
    global _widen_s1
    old = _widen_s1
    _widen_s1 = on
    return old


cdef int _s1_cross = 1


def _set_s1_cross(int mode):
    """Tuning hook for benchmarks and tests: the stride-1 implicit forward's panels run on across
    samples (fnn_mk_conv_s1x) where a sample's ragged last panel would waste more than 5% of
    the FMAs (1), for every shape (2: tests), or never (0); returns the old mode. Interleaved
    A/B, batch 64, 2 threads, ms, across / per sample / torch: 64->64 at 14x14 forward 6.83 /
    7.51 / 11.92 (a slow hour of the VM), its dx 7.83 / 8.80; 32->64 at 14x14 forward 4.14 /
    4.70; at 28x28 (2% waste) the per-sample panels were faster (7.64 / 8.68)."""
    global _s1_cross
    old = _s1_cross
    _s1_cross = mode
    return old


def _set_panel_direct(bint on):
    """Tuning hook for benchmarks and tests: the cross-sample panels of fnn_mk_conv_s1x and
    fnn_mk_subpixel with up to 8 rows multiply straight from their masked loads (True) or from
    a packed panel (False); returns the old value."""
    return bool(fnn_set_panel_direct(on)) if FNN_CONV_KERNELS else on


def _s1_across_samples(Py_ssize_t p):
    """Whether a stride-1 implicit forward of p = OH*W columns a sample takes fnn_mk_conv_s1x
    (see _set_s1_cross)."""
    return _s1_cross == 2 or (_s1_cross == 1 and 20 * ((32 - p % 32) % 32) > p)


cdef void _s1x_forward_call(x, weight, bias, out, int n, int c, int h, int w, int o, int kh,
                            int kw, int ph, int pw, int oh, int nt):
    """out := conv2d(x) + bias on fnn_mk_conv_s1x: tasks of 8 panels (256 columns of the batch)
    taken dynamically, each thread with its own 32-column scratch for panels that cross samples."""
    cdef int k = c * kh * kw, mt = (o + 7) // 8
    cdef Py_ssize_t P = <Py_ssize_t>oh * w, total = <Py_ssize_t>n * oh * w
    cdef Py_ssize_t ct_size = <Py_ssize_t>mt * 8 * 32
    cdef Py_ssize_t span = 8 * 32
    cdef int ntasks = <int>((total + span - 1) // span)
    ap = _cached(np.float32, "s1x_a", <Py_ssize_t>mt * 8 * k + 16)
    ct = _cached(np.float32, "s1x_ct", nt * ct_size + 16)
    cdef float* pap = _aligned64(ap)
    cdef float* pct = _aligned64(ct)
    cdef const float* px = <float*>_ptr(x)
    cdef const float* pw_ = <float*>_ptr(weight)
    cdef const float* pb = <float*>_ptr(bias)
    cdef float* po = <float*>_ptr(out)
    cdef int task, t
    with nogil:
        fnn_pack_a8(o, k, 8, pw_, pap)
        if nt > 1:
            for task in prange(ntasks, num_threads=nt, schedule="dynamic", chunksize=1):
                t = openmp.omp_get_thread_num()
                fnn_mk_conv_s1x(o, task * span, min(total, task * span + span), P, c, h, w, kh, kw,
                                ph, pw, pap, px, pb, po, pct + t * ct_size)
        else:
            fnn_mk_conv_s1x(o, 0, total, P, c, h, w, kh, kw, ph, pw, pap, px, pb, po, pct)
