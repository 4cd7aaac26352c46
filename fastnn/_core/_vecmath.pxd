# The accurate float32 elementwise functions of kernels/vecmath.h (scalar forms, which loops vectorise),
# for _blas.pyx (the dense epilogue; the recurrent cells' gate math uses them from kernels/gates.h).
cdef extern from "kernels/vecmath.h":
    float fnn_tanhf(float v) noexcept nogil
    float fnn_sigmoidf(float v) noexcept nogil
    float fnn_one_minus_sq(float t) noexcept nogil
