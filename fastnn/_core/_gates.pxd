# The recurrent gate math of kernels/gates.h; the *_row16 LSTM rows only where FNN_GATES16 is 1.
cdef extern from "kernels/gates.h":
    bint FNN_GATES16
    double fnn_sigmoid(double v) noexcept nogil
    void fnn_lstm_bwd_row(int H, const float* g, float* d, const float* dy, const float* c_prev,
                          const float* c_row, const float* dhr, float* dcr) noexcept nogil
    void fnn_gru_bwd_row(int H, const float* g, float* dx, float* dhp, const float* h_prev,
                         const float* hnr, const float* dy, float* dhr) noexcept nogil
    void fnn_gru_fwd_row(int H, float* g, const float* x, const float* b_hh, float* hnr,
                         const float* h_prev, float* h_new) noexcept nogil
    void fnn_lstm_fwd_cell(int H, const float* g, const float* c_prev, float* c_new,
                           float* h_new) noexcept nogil
    void fnn_lstm_fwd_row16(int H, float* g, const float* x, const float* b, const float* c_prev,
                            float* c_new, float* h_new) noexcept nogil
    void fnn_lstm_bwd_row16(int H, const float* g, float* d, const float* dy, const float* c_prev,
                            const float* c_row, const float* dhr, float* dcr) noexcept nogil
