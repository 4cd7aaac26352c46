# Route pixel_transpose (any level): conv_transpose2d of a 1x1 image as one dense GEMM.

# ---- one-pixel inputs of conv_transpose2d ------------------------------------------------------
#
# A transposed convolution of a 1x1 image with no padding whose output is exactly one kernel
# (the first layer of a DCGAN generator: z (N, Cin, 1, 1) -> (N, Cout, KH, KW)) is a dense layer:
# out (N, Cout*KH*KW) = x (N, Cin) @ W (Cin, Cout*KH*KW), and NCHW is that matrix row-major. One
# GEMM replaces the chunked GEMM + col2im, and backward is two GEMMs.

cdef void _pixel_transpose_forward(const floating* x, const floating* w, const floating* bias,
                                   floating* out, int N, int CIN, int COUT, Py_ssize_t KK) noexcept nogil:
    """out (N, COUT*KK) := x (N, CIN) @ w (CIN, COUT*KK) + bias[c] on the KK pixels of channel c."""
    cdef int n, c
    cdef Py_ssize_t q
    cdef floating b
    cdef floating* row
    _gemm_xn(False, False, N, <int>(COUT * KK), CIN, x, CIN, w, <int>(COUT * KK), False, out,
             <int>(COUT * KK))
    if bias != NULL:
        for n in range(N):
            for c in range(COUT):
                b = bias[c]
                row = out + (<Py_ssize_t>n * COUT + c) * KK
                for q in range(KK):
                    row[q] = row[q] + b


cdef void _pixel_transpose_backward(const floating* x, const floating* w, const floating* dy,
                                    floating* dx, floating* dw, int N, int CIN, int COUT,
                                    Py_ssize_t KK) noexcept nogil:
    """dx (N, CIN) := dy (N, COUT*KK) @ w.T; dw (CIN, COUT*KK) += x.T @ dy (NULL outputs skipped)."""
    cdef int ck = <int>(COUT * KK)
    if dx != NULL:
        gemm_rm(False, True, N, CIN, ck, <floating>1, dy, ck, w, ck, <floating>0, dx, CIN)
    if dw != NULL:
        gemm_rm(True, False, CIN, ck, N, <floating>1, x, CIN, dy, ck, <floating>1, dw, ck)


def _pixel_transpose_forward_call(x, weight, bias, out):
    """conv_transpose2d_forward on pixel_transpose: x (N, Cin, 1, 1) -> out (N, Cout, KH, KW)."""
    cdef int N = x.shape[0], CIN = x.shape[1], COUT = weight.shape[1]
    cdef Py_ssize_t KK = <Py_ssize_t>weight.shape[2] * weight.shape[3]
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pb = _ptr(bias)
    cdef void* po = _ptr(out)
    if x.dtype == np.float32:
        with nogil:
            _pixel_transpose_forward(<float*>px, <float*>pw_, <float*>pb, <float*>po, N, CIN,
                                     COUT, KK)
    else:
        with nogil:
            _pixel_transpose_forward(<double*>px, <double*>pw_, <double*>pb, <double*>po, N, CIN,
                                     COUT, KK)
    return out


def _pixel_transpose_backward_call(x, weight, dy, dx, dweight, dbias):
    """conv_transpose2d_backward on pixel_transpose (None outputs skipped); returns dx."""
    cdef int N = x.shape[0], CIN = x.shape[1], COUT = weight.shape[1]
    cdef Py_ssize_t KK = <Py_ssize_t>weight.shape[2] * weight.shape[3]
    cdef void* px = _ptr(x)
    cdef void* pw_ = _ptr(weight)
    cdef void* pdy = _ptr(dy)
    cdef void* pdx = _ptr(dx)
    cdef void* pdw = _ptr(dweight)
    cdef void* pdb = _ptr(dbias)
    if x.dtype == np.float32:
        with nogil:
            _pixel_transpose_backward(<float*>px, <float*>pw_, <float*>pdy, <float*>pdx,
                                      <float*>pdw, N, CIN, COUT, KK)
            if pdb != NULL:
                _channel_sum(<float*>pdy, N, COUT, KK, <float*>pdb)
    else:
        with nogil:
            _pixel_transpose_backward(<double*>px, <double*>pw_, <double*>pdy, <double*>pdx,
                                      <double*>pdw, N, CIN, COUT, KK)
            if pdb != NULL:
                _channel_sum(<double*>pdy, N, COUT, KK, <double*>pdb)
    return dx
