"""Slow, obviously-correct NumPy versions of every kernel in ``fastnn._core``: the test oracle.

Same names and signatures as the compiled kernels (see ``fastnn/_core/__init__.py``); outputs are
written into the arrays passed in. Clarity over speed: plain loops and einsum.
"""
import numpy as np

# ==== GEMM, dense and convolution (section owned by the Cython-core work) ====================

# ==== pooling, upsampling, batch norm, activations, losses, optimizers (numba work) ==========

# ==== recurrent cells and embedding (sequence-model work) =====================================

def embedding_forward(indices, weight, out):
    """out[m] := weight[indices[m]]."""
    out[...] = weight[indices]
    return out


def embedding_backward(indices, dy, dweight):
    """dweight[indices[m]] += dy[m], repeated indices adding up."""
    np.add.at(dweight, indices, dy)
    return dweight


def _ref_sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_forward(xw, w_hh, b_hh, h0, hs):
    """h_t := tanh(xw_t + h_{t-1} @ w_hh.T + b_hh)."""
    h = h0
    for t in range(xw.shape[1]):
        h = np.tanh(xw[:, t] + h @ w_hh.T + b_hh)
        hs[:, t] = h
    return hs


def rnn_backward(w_hh, hs, dhs, dpre, dh0):
    dh_next = np.zeros_like(hs[:, 0])
    for t in reversed(range(hs.shape[1])):
        dpre[:, t] = (dhs[:, t] + dh_next) * (1 - hs[:, t] ** 2)
        dh_next = dpre[:, t] @ w_hh
    dh0[...] = dh_next
    return dpre


def lstm_forward(xw, w_hh, b_hh, h0, c0, hs, cs, tanh_cs, gates):
    """PyTorch's LSTM: gates i, f, g, o; c_t = f*c + i*g; h_t = o*tanh(c_t)."""
    h, c = h0, c0
    for t in range(xw.shape[1]):
        i, f, g, o = np.split(xw[:, t] + h @ w_hh.T + b_hh, 4, axis=1)
        i, f, g, o = _ref_sigmoid(i), _ref_sigmoid(f), np.tanh(g), _ref_sigmoid(o)
        c = f * c + i * g
        h = o * np.tanh(c)
        gates[:, t] = np.concatenate([i, f, g, o], axis=1)
        cs[:, t], tanh_cs[:, t], hs[:, t] = c, np.tanh(c), h
    return hs


def lstm_backward(w_hh, c0, cs, tanh_cs, gates, dhs, dc_last, dpre, dh0, dc0):
    dh_next, dc_next = np.zeros_like(c0), dc_last.copy()
    for t in reversed(range(cs.shape[1])):
        i, f, g, o = np.split(gates[:, t], 4, axis=1)
        c_prev = cs[:, t - 1] if t > 0 else c0
        dh = dhs[:, t] + dh_next
        dc = dc_next + dh * o * (1 - tanh_cs[:, t] ** 2)
        dpre[:, t] = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                     dc * i * (1 - g ** 2), dh * tanh_cs[:, t] * o * (1 - o)], axis=1)
        dh_next = dpre[:, t] @ w_hh
        dc_next = dc * f
    dh0[...], dc0[...] = dh_next, dc_next
    return dpre


def gru_forward(xw, w_hh, b_hh, h0, hs, gates, hn):
    """PyTorch's GRU: r, z, n; n = tanh(x_n + r*(h @ W_hn.T + b_hn)); h_t = (1-z)*n + z*h."""
    h = h0
    for t in range(xw.shape[1]):
        xr, xz, xn = np.split(xw[:, t], 3, axis=1)
        hr, hz, hn_t = np.split(h @ w_hh.T + b_hh, 3, axis=1)
        r, z = _ref_sigmoid(xr + hr), _ref_sigmoid(xz + hz)
        n = np.tanh(xn + r * hn_t)
        h = (1 - z) * n + z * h
        gates[:, t] = np.concatenate([r, z, n], axis=1)
        hn[:, t], hs[:, t] = hn_t, h
    return hs


def gru_backward(w_hh, h0, hs, gates, hn, dhs, dpre_x, dpre_h, dh0):
    dh_next = np.zeros_like(h0)
    for t in reversed(range(hs.shape[1])):
        r, z, n = np.split(gates[:, t], 3, axis=1)
        h_prev = hs[:, t - 1] if t > 0 else h0
        dh = dhs[:, t] + dh_next
        dn = dh * (1 - z) * (1 - n ** 2)
        dz = dh * (h_prev - n) * z * (1 - z)
        dr = dn * hn[:, t] * r * (1 - r)
        dpre_x[:, t] = np.concatenate([dr, dz, dn], axis=1)
        dpre_h[:, t] = np.concatenate([dr, dz, dn * r], axis=1)
        dh_next = dh * z + dpre_h[:, t] @ w_hh
    dh0[...] = dh_next
    return dpre_x


def sgns_step(w_in, w_out, centers, contexts, negatives, lr):
    """Skip-gram negative sampling, plain SGD pair by pair (in place); returns the summed loss."""
    total = 0.0
    for c, o_true, negs in zip(centers, contexts, negatives):
        u = w_in[c].copy()
        grad_u = np.zeros_like(u)
        for k, o in enumerate([o_true, *negs]):
            label = 1.0 if k == 0 else 0.0
            s = _ref_sigmoid(float(u @ w_out[o]))
            total -= np.log(max(s if label else 1 - s, 1e-12))
            grad_u += lr * (s - label) * w_out[o]
            w_out[o] -= lr * (s - label) * u
        w_in[c] -= grad_u
    return float(total)
