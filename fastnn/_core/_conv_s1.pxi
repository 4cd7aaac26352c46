# Route family s1 (AVX-512): stride-1 forwards (and the stride-1 dx, a forward of the flipped
# kernel) as an implicit GEMM packed straight from x: s1_implicit, s1_across_samples, s1_widened.

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


def _s1_forward(str route, x, weight, bias, out, int ph, int pw):
    """out := conv2d(x) + bias at stride 1 on ``route``: s1_implicit (panels per sample),
    s1_across_samples (panels running on across samples) or s1_widened (an output wider than x,
    the dx of a valid convolution: x placed pw columns in on a zeroed plane as wide as the
    output, then the same-width layout conv_plan.s1_layout chooses)."""
    _require_conv_kernels(route)
    cdef int n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef int o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef int oh = out.shape[2], ow = out.shape[3]
    if route == "s1_widened":
        wide = _cached(np.float32, "s1_wide", <Py_ssize_t>n * c * h * ow).reshape(n, c, h, ow)
        wide[..., :pw] = 0
        wide[..., pw + w:] = 0
        wide[..., pw:pw + w] = x
        x, w, pw = wide, ow, 0
        route = _planner.s1_layout(oh * ow)
        took(route)
    cdef int nt = gemm_threads(<Py_ssize_t>n * o * c * kh * kw * oh * ow)
    if route == "s1_across_samples":
        _s1x_forward_call(x, weight, bias, out, n, c, h, w, o, kh, kw, ph, pw, oh, nt)
    else:
        _s1_forward_call(x, weight, bias, out, n, c, h, w, o, kh, kw, ph, pw, oh, nt)
    return out
