# The accurate float32 elementwise functions of kernels/vecmath.h (scalar forms, which loops vectorise),
# for _blas.pyx (the dense epilogue) and _recurrent.pyx (the cells' gate math).
cdef extern from "kernels/vecmath.h":
    float fnn_tanhf(float v) noexcept nogil
    float fnn_sigmoidf(float v) noexcept nogil
    float fnn_one_minus_sq(float t) noexcept nogil
