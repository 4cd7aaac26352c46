# The recurrent gate math of kernels/gates.h: one batch row of one step of any cell (the
# *_row16 LSTM rows inside only where FNN_GATES16 is 1).
cdef extern from "kernels/gates.h":
    bint FNN_GATES16
    enum:
        FNN_CELL_RNN
        FNN_CELL_LSTM
        FNN_CELL_GRU
    int fnn_cell_gates(int cell) noexcept nogil
    void fnn_cell_forward_f(int cell, int H, int vec, float* g, const float* x, const float* b,
                            const float* h_prev, float* h_new, const float* c_prev, float* c_new,
                            float* hn) noexcept nogil
    void fnn_cell_forward_d(int cell, int H, int vec, double* g, const double* x,
                            const double* b, const double* h_prev, double* h_new,
                            const double* c_prev, double* c_new, double* hn) noexcept nogil
    void fnn_cell_backward_f(int cell, int H, int vec, const float* g, float* d, float* d_h,
                             const float* dy, float* dh, float* dc, const float* h_prev,
                             const float* h_new, const float* c_prev, const float* c_new,
                             const float* hn) noexcept nogil
    void fnn_cell_backward_d(int cell, int H, int vec, const double* g, double* d, double* d_h,
                             const double* dy, double* dh, double* dc, const double* h_prev,
                             const double* h_new, const double* c_prev, const double* c_new,
                             const double* hn) noexcept nogil
