"""Recurrent layers: RNN (tanh), LSTM, GRU. Batch-first, one layer, one direction, as PyTorch's
``batch_first=True`` modules with ``num_layers=1``.

Forward: the input projection of every time step is one GEMM, (N*T, F) @ W_ih^T + b_ih; the
sequential part (h @ W_hh^T per step plus the fused gate math) is one compiled call
(``fastnn._core.{rnn,lstm,gru}_forward``). Backward: the kernel sweeps time backwards and returns
the gate-pre-activation gradients of every step; dW_ih, dW_hh, the biases and dx are then four
whole-sequence GEMMs / reductions.
"""
import numpy as np

from .. import _core
from .._random import rng
from .base import Layer


class _Recurrent(Layer):
    """Shared machinery; a subclass sets ``_gates`` and implements ``_sequence_forward`` /
    ``_sequence_backward`` with the cell's kernels."""

    _gates = 1
    _has_cell = False

    def __init__(self, input_size, hidden_size, return_sequences=True):
        super().__init__()
        name = type(self).__name__
        for arg, v in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")
        if not isinstance(return_sequences, (bool, np.bool_)):
            raise TypeError(f"{name}: return_sequences must be a bool, got {return_sequences!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.return_sequences = bool(return_sequences)
        gh, h = self._gates * self.hidden_size, self.hidden_size
        bound = 1.0 / np.sqrt(h)
        gen = rng()
        # PyTorch's order and init: every parameter U(-1/sqrt(H), 1/sqrt(H))
        self.weight_ih = self.add_parameter("weight_ih_l0", gen.uniform(-bound, bound, (gh, self.input_size)))
        self.weight_hh = self.add_parameter("weight_hh_l0", gen.uniform(-bound, bound, (gh, h)))
        self.bias_ih = self.add_parameter("bias_ih_l0", gen.uniform(-bound, bound, gh))
        self.bias_hh = self.add_parameter("bias_hh_l0", gen.uniform(-bound, bound, gh))
        self.dh0 = None
        self.dc0 = None
        self._buffers_for = None  # (N, T, dtype) the work buffers below were sized for
        self._work = {}
        self._x = None

    def config(self):
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "return_sequences": self.return_sequences}

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        return s if self.return_sequences else s + ", return_sequences=False"

    def _on_dtype_change(self):
        self._work = {}
        self._buffers_for = None
        self._x = None

    # --- buffers reused from call to call while (N, T, dtype) stays the same -----------------
    def _buffer(self, name, shape):
        buf = self._work.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=self._dtype)
            self._work[name] = buf
        return buf

    def _state(self, s, name, n):
        h = self.hidden_size
        if s is None:
            return np.zeros((n, h), dtype=self._dtype)
        s = self.as_input(s, name)
        if s.shape != (n, h):
            raise self.shape_error(f"(N, H) = ({n}, {h})", s.shape, name)
        return s

    def _check_x(self, x):
        x = self.as_input(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[0] < 1 or x.shape[1] < 1:
            raise self.shape_error(f"(N, T, {self.input_size}) with N, T >= 1", x.shape)
        return x

    def _project(self, x):
        """xw := x @ W_ih^T + b_ih for all steps at once (one GEMM)."""
        n, t, f = x.shape
        gh = self._gates * self.hidden_size
        xw = self._buffer("xw", (n, t, gh))
        xw2 = xw.reshape(n * t, gh)
        np.matmul(x.reshape(n * t, f), self.weight_ih.data.T, out=xw2)
        xw2 += self.bias_ih.data
        return xw

    def forward(self, x, training=True, h0=None, c0=None):
        x = self._check_x(x)
        n = x.shape[0]
        h0 = self._state(h0, "h0", n)
        if self._has_cell:
            c0 = self._state(c0, "c0", n)
        elif c0 is not None:
            raise TypeError(f"{self.describe()}: c0 is only accepted by LSTM")
        xw = self._project(x)
        # hs is handed to the caller, so it is fresh every call (never a reused buffer)
        hs = np.empty((n, x.shape[1], self.hidden_size), dtype=self._dtype)
        self._sequence_forward(xw, h0, c0, hs)
        self._x, self._h0, self._c0, self._hs = x, h0, c0, hs
        self.dh0 = self.dc0 = None
        if self.return_sequences:
            return hs
        return np.ascontiguousarray(hs[:, -1])

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError(f"{self.describe()}: backward called before forward")
        x, hs = self._x, self._hs
        n, t, f = x.shape
        h, gh = self.hidden_size, self._gates * self.hidden_size
        dy = self.as_input(dy, "dy")
        if self.return_sequences:
            if dy.shape != hs.shape:
                raise self.shape_error(f"{hs.shape}", dy.shape, "dy")
            dhs = dy
        else:
            if dy.shape != (n, h):
                raise self.shape_error(f"{(n, h)}", dy.shape, "dy")
            dhs = self._buffer("dhs", (n, t, h))
            dhs.fill(0)
            dhs[:, -1] = dy
        dpre_x, dpre_h = self._sequence_backward(dhs)
        dx2 = dpre_x.reshape(n * t, gh)
        dh2 = dpre_h.reshape(n * t, gh)
        # h_{t-1} for every step, for dW_hh as one GEMM
        h_prev = self._buffer("h_prev", (n, t, h))
        h_prev[:, 0] = self._h0
        h_prev[:, 1:] = hs[:, :-1]
        self.weight_ih.grad += dx2.T @ x.reshape(n * t, f)
        self.weight_hh.grad += dh2.T @ h_prev.reshape(n * t, h)
        self.bias_ih.grad += dx2.sum(axis=0)
        self.bias_hh.grad += dx2.sum(axis=0) if dpre_h is dpre_x else dh2.sum(axis=0)
        return (dx2 @ self.weight_ih.data).reshape(n, t, f)


class RNN(_Recurrent):
    r"""Elman RNN with tanh: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh).

    Args:
        input_size: features F of each step.  hidden_size: H.
        return_sequences: return every h_t, (N, T, H) (default), or only h_T, (N, H).

    Shapes:
        input (N, T, F) batch-first; optional ``h0`` (N, H) (zeros by default), passed as
        ``forward(x, training=True, h0=None)``. After ``backward``, ``dh0`` holds dL/dh0.

    State (PyTorch names; all U(-1/sqrt(H), 1/sqrt(H))):
        weight_ih_l0 (H, F), weight_hh_l0 (H, H), bias_ih_l0 (H,), bias_hh_l0 (H,).

    Example::

        rnn = RNN(32, 128)
        y = rnn.forward(np.zeros((4, 10, 32), np.float32))   # (4, 10, 128)
        dx = rnn.backward(np.ones_like(y))
    """

    _gates = 1

    def _sequence_forward(self, xw, h0, c0, hs):
        _core.rnn_forward(xw, self.weight_hh.data, self.bias_hh.data, h0, hs)

    def _sequence_backward(self, dhs):
        dpre = self._buffer("dpre", self._hs.shape)
        self.dh0 = np.empty_like(self._h0)
        _core.rnn_backward(self.weight_hh.data, self._hs, dhs, dpre, self.dh0)
        return dpre, dpre


class LSTM(_Recurrent):
    r"""Long short-term memory, PyTorch's gate order (i, f, g, o):

        i, f, o = sigmoid(x_t W_i*^T + b_i* + h_{t-1} W_h*^T + b_h*),  g = tanh(...)
        c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)

    Args:
        input_size: F.  hidden_size: H.  return_sequences: (N, T, H) (default) or h_T (N, H).

    Shapes:
        input (N, T, F); optional ``h0``, ``c0`` (N, H), zeros by default:
        ``forward(x, training=True, h0=None, c0=None)``. After ``backward``, ``dh0`` and ``dc0``
        hold dL/dh0, dL/dc0. The last cell state is ``c_n`` after forward.

    State (all U(-1/sqrt(H), 1/sqrt(H))):
        weight_ih_l0 (4H, F), weight_hh_l0 (4H, H), bias_ih_l0 (4H,), bias_hh_l0 (4H,).

    Example::

        lstm = LSTM(32, 128, return_sequences=False)
        y = lstm.forward(np.zeros((4, 10, 32), np.float32))  # (4, 128)
        dx = lstm.backward(np.ones_like(y))
    """

    _gates = 4
    _has_cell = True

    def _sequence_forward(self, xw, h0, c0, hs):
        n, t, h = hs.shape
        self._cs = self._buffer("cs", (n, t, h))
        self._tanh_cs = self._buffer("tanh_cs", (n, t, h))
        self._gate_values = self._buffer("gates", (n, t, 4 * h))
        _core.lstm_forward(xw, self.weight_hh.data, self.bias_hh.data, h0, c0, hs,
                           self._cs, self._tanh_cs, self._gate_values)

    @property
    def c_n(self):
        """The last cell state c_T (N, H) of the latest forward."""
        return None if self._x is None else self._cs[:, -1].copy()

    def _sequence_backward(self, dhs):
        n, t, h = self._hs.shape
        dpre = self._buffer("dpre", (n, t, 4 * h))
        dc_last = self._buffer("dc_last", (n, h))
        dc_last.fill(0)
        self.dh0 = np.empty_like(self._h0)
        self.dc0 = np.empty_like(self._c0)
        _core.lstm_backward(self.weight_hh.data, self._c0, self._cs, self._tanh_cs, self._gate_values,
                            dhs, dc_last, dpre, self.dh0, self.dc0)
        return dpre, dpre


class GRU(_Recurrent):
    r"""Gated recurrent unit, PyTorch's gate order (r, z, n):

        r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr),  z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}

    Args:
        input_size: F.  hidden_size: H.  return_sequences: (N, T, H) (default) or h_T (N, H).

    Shapes:
        input (N, T, F); optional ``h0`` (N, H): ``forward(x, training=True, h0=None)``.
        After ``backward``, ``dh0`` holds dL/dh0.

    State (all U(-1/sqrt(H), 1/sqrt(H))):
        weight_ih_l0 (3H, F), weight_hh_l0 (3H, H), bias_ih_l0 (3H,), bias_hh_l0 (3H,).

    Example::

        gru = GRU(32, 64)
        y = gru.forward(np.zeros((4, 10, 32), np.float32))   # (4, 10, 64)
        dx = gru.backward(np.ones_like(y))
    """

    _gates = 3

    def _sequence_forward(self, xw, h0, c0, hs):
        n, t, h = hs.shape
        self._gate_values = self._buffer("gates", (n, t, 3 * h))
        self._hn = self._buffer("hn", (n, t, h))
        _core.gru_forward(xw, self.weight_hh.data, self.bias_hh.data, h0, hs, self._gate_values, self._hn)

    def _sequence_backward(self, dhs):
        n, t, h = self._hs.shape
        dpre_x = self._buffer("dpre", (n, t, 3 * h))
        dpre_h = self._buffer("dpre_h", (n, t, 3 * h))
        self.dh0 = np.empty_like(self._h0)
        _core.gru_backward(self.weight_hh.data, self._h0, self._hs, self._gate_values, self._hn,
                           dhs, dpre_x, dpre_h, self.dh0)
        return dpre_x, dpre_h
