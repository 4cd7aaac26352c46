"""Recurrent layers: RNN (tanh), LSTM, GRU. Batch-first, as PyTorch's ``batch_first=True``
modules, with ``num_layers``, ``bidirectional`` and ``dropout`` between layers (``_Stack``: cells
of one layer and one direction, the reverse one on the time-reversed sequence). What follows is
the one-layer, one-direction cell, which every configuration runs.

Forward: the input projection of every time step is one GEMM, (N*T, F) @ W_ih^T + b_ih (a dense
forward, bias fused); the sequential part (h @ W_hh^T per step plus the fused gate math) is one
compiled call (``fastnn._core.{rnn,lstm,gru}_forward``). Backward: the kernel sweeps time backwards
and returns the gate-pre-activation gradients of every step; dW_ih, b_ih, dx and dW_hh, b_hh are
then two whole-sequence dense backward passes.

Fed straight by an Embedding (V, F) with V <= T*N/2 (its output array, unmodified: checked
exactly), the input side works on the table instead of every position: xw is the projected table
(table @ W_ih^T + b_ih, one small GEMM) gathered at the ids, and dW_ih / db_ih come from dpre
summed per id; only dx = dpre @ W_ih is still a whole-sequence GEMM.
"""
import numpy as np

from .. import _core
from .._random import rng
from .base import Layer
from .embedding import lookup_of


def _compiled_kernels():
    """True while _core's kernels are the compiled ones: the layers then use _core's private
    whole-layer calls (the table path's serial GEMMs; the backward sweep, dx and the weight
    gradients in one OpenMP region). With reference.py's kernels swapped in (benchmarks) they
    stay on the contract kernels, NumPy all the way."""
    return _FUSED_CALLS and _core.compiled("dense_forward")


_FUSED_CALLS = True  # module switch, for A/B measurements and tests
# the exact check of an Embedding's lookup hint as one compiled pass (else np.array_equal on
# table[ids]); module switch, for A/B measurements and tests
_FAST_LOOKUP_CHECK = True


class _Recurrent(Layer):
    """Shared machinery; a subclass sets ``_gates`` and implements ``_sequence_forward`` /
    ``_sequence_backward`` with the cell's kernels."""

    _gates = 1
    _has_cell = False
    _table_grads_in_region = False  # LSTM: see LSTM.table_grads_in_region
    _has_table_backward = False  # LSTM: backward_table (no dx) for an Embedding-fed input
    # Sequential.backward: an Embedding's weight gradient straight from per-id sums of dpre
    # instead of dx (class-wide switch, for A/B measurements and tests)
    table_backward = True
    # project an Embedding's table instead of every position when the input is its output
    # (class-wide switch, for A/B measurements and tests)
    fuse_embedding = True

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 return_sequences=True):
        super().__init__()
        name = type(self).__name__
        for arg, v in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")
        for arg, v in (("return_sequences", return_sequences), ("bidirectional", bidirectional)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name}: {arg} must be a bool, got {v!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1), got {dropout!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.return_sequences = bool(return_sequences)
        self.num_layers, self.bidirectional, self.dropout = int(num_layers), bool(bidirectional), float(dropout)
        self._stack = None
        self.dh0 = None
        self.dc0 = None
        self._work = {}  # name -> buffer, reused while (N, T, dtype) stay the same
        self._x_tm = None
        self._shape = None  # (T, N, F) of the latest forward
        self._embedded = None
        self._lookup_ids = None
        if self.num_layers > 1 or self.bidirectional:
            # several layers or directions: single-layer cells of this class, run by _Stack; their
            # Parameter objects are this layer's, under PyTorch's names (..._l1, ..._reverse)
            self._stack = _Stack(self)
            return
        gh, h = self._gates * self.hidden_size, self.hidden_size
        bound = 1.0 / np.sqrt(h)
        gen = rng()
        # PyTorch's order and init: every parameter U(-1/sqrt(H), 1/sqrt(H))
        self.weight_ih = self.add_parameter("weight_ih_l0", gen.uniform(-bound, bound, (gh, self.input_size)))
        self.weight_hh = self.add_parameter("weight_hh_l0", gen.uniform(-bound, bound, (gh, h)))
        self.bias_ih = self.add_parameter("bias_ih_l0", gen.uniform(-bound, bound, gh))
        self.bias_hh = self.add_parameter("bias_hh_l0", gen.uniform(-bound, bound, gh))

    def config(self):
        config = {"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "return_sequences": self.return_sequences}
        if self._stack is not None:
            config.update(num_layers=self.num_layers, bidirectional=self.bidirectional,
                          dropout=self.dropout)
        return config

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers > 1:
            s += f", num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s if self.return_sequences else s + ", return_sequences=False"

    def _on_dtype_change(self):
        if self._stack is not None:
            self._stack.set_dtype(self._dtype)
            return
        self._work = {}
        self._x_tm = None
        self._shape = None
        self._embedded = None
        self._lookup_ids = None

    # --- buffers reused from call to call while (N, T, dtype) stays the same -----------------
    def _buffer(self, name, shape):
        buf = self._work.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=self._dtype)
            self._work[name] = buf
        return buf

    def _check_x(self, x):
        x = self.as_input(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or x.shape[0] < 1 or x.shape[1] < 1:
            raise self.shape_error(f"(N, T, {self.input_size}) with N, T >= 1", x.shape)
        return x

    def forward(self, x, training=True, h0=None, c0=None):
        if self._stack is not None:
            return self._stack.forward(x, training, h0, c0)
        lookup = lookup_of(x) if self.fuse_embedding else None
        x = self._check_x(x)
        n, t, f = x.shape
        h, gh = self.hidden_size, self._gates * self.hidden_size
        if c0 is not None and not self._has_cell:
            raise TypeError(f"{self.describe()}: c0 is only accepted by LSTM")
        compiled = _compiled_kernels()
        self._embedded = self._embedded_input(x, lookup)
        # the Embedding's ids array of a table-path forward (identity check of backward_table)
        self._lookup_ids = lookup[0] if self._embedded is not None else None
        ids_tm = None
        if self._embedded is not None:
            # x is table[ids] (an Embedding's output): x @ W_ih^T + b_ih is the projected table
            # gathered at ids, a (V, F) x (F, G*H) GEMM instead of a (T*N, F) one
            table, ids_tm = self._embedded
            projected = self._buffer("projected", (table.shape[0], gh))
            if compiled:  # the forward call reads rows ids[t, n] of the table itself
                _core.embedded_projection(table, self.weight_ih.data, self.bias_ih.data, ids_tm,
                                          projected, None)
                xw = projected
            else:
                xw = self._buffer("xw", (t, n, gh))
                _core.dense_forward(table, self.weight_ih.data, self.bias_ih.data, projected)
                _core.embedding_forward(ids_tm, projected, xw.reshape(t * n, gh))
                ids_tm = None
            x_tm = None
        else:
            # The kernels work time-major (T, N, .) so each step is one contiguous block.
            x_tm = self._buffer("x_tm", (t, n, f))
            np.copyto(x_tm, x.transpose(1, 0, 2))
            # all steps in one GEMM with b_ih fused into its epilogue, on fastnn's own GEMM:
            # numpy's matmul would wake numpy's BLAS pool, whose threads keep spinning against the
            # OpenMP team of the next kernels (and a broadcast `+= b_ih` cost ~0.3 ms)
            xw = self._buffer("xw", (t, n, gh))
            _core.dense_forward(x_tm.reshape(t * n, f), self.weight_ih.data, self.bias_ih.data,
                                xw.reshape(t * n, gh))
        hs = self._buffer("hs", (t + 1, n, h))
        self._set_state(hs, h0, "h0")
        self._x_tm = x_tm
        self._shape = (t, n, f)
        self.dh0 = self.dc0 = None
        if compiled:
            # the sweep writes the batch-first output too (fresh: buffers are reused next call)
            y = np.empty((n, t, h), dtype=self._dtype) if self.return_sequences else None
            self._sequence_forward_full(xw, ids_tm, hs, c0, y)
            return y if self.return_sequences else hs[t].copy()
        self._sequence_forward(xw, hs, c0)
        if self.return_sequences:
            return hs[1:].transpose(1, 0, 2).copy()  # fresh: buffers are reused next call
        return hs[t].copy()

    def _embedded_input(self, x, lookup):
        """(table copy, time-major ids) when x (N, T, F) is exactly table[ids] and the vocabulary
        is small enough for the projected table to be cheaper than projecting every position;
        else None. The check is exact, so a hint from a modified output or table is ignored."""
        if lookup is None:
            return None
        ids, table = lookup
        n, t, f = x.shape
        if (table.dtype != self._dtype or table.ndim != 2 or table.shape[1] != f
                or ids.shape != (n * t,) or 2 * table.shape[0] > n * t):
            return None
        table = np.array(table)  # the backward needs the values of this forward
        if _FAST_LOOKUP_CHECK:  # one compiled pass, no (N*T, F) gather and bool temporaries
            if not _core.lookup_matches(table, ids, x.reshape(n * t, f)):
                return None
        elif not np.array_equal(table[ids], x.reshape(n * t, f)):
            return None
        return table, np.ascontiguousarray(ids.reshape(n, t).T).reshape(t * n)

    def takes_table_backward(self, embedding):
        """True when ``backward_table(dy, embedding)`` applies: the latest forward took the table
        path on exactly ``embedding``'s latest lookup (its ids array and an unchanged table)."""
        if not (self.table_backward and self._has_table_backward and self._embedded is not None
                and self._shape is not None and _compiled_kernels()
                and self._table_grads_in_region):
            return False
        ids = self._lookup_ids
        return (ids is not None and ids is getattr(embedding, "_indices", None)
                and getattr(embedding, "padding_idx", None) is None
                and embedding.weight.grad.dtype == self._dtype
                and embedding.weight.grad.shape == self._embedded[0].shape)

    def backward_table(self, dy, embedding):
        """backward(dy) for an input that is ``embedding``'s output (``takes_table_backward``):
        the parameter gradients as backward's, plus the Embedding's weight gradient added into
        ``embedding.weight.grad`` as per_id @ W_ih (per_id: dpre summed per id; the same sum as
        scatter-adding the rows of dx = dpre @ W_ih, to rounding), without computing dx (a
        (T*N, G) x (G, F) GEMM replaced by a (V, G) x (G, F) one). Returns None, as
        Embedding.backward."""
        if not self.takes_table_backward(embedding):
            raise RuntimeError(f"{self.describe()}: backward_table needs a table-path forward on "
                               f"{embedding.describe()}'s latest lookup")
        gh = self._gates * self.hidden_size
        dhs = self._dhs_batch_first(self._checked_dy(dy))
        table, ids_tm = self._embedded
        per_id = self._buffer("per_id", (table.shape[0], gh))
        # the table's gradient: sum over positions of id v of dpre @ W_ih = per_id[v] @ W_ih,
        # in the backward's parallel region after per_id
        self._sequence_backward_full(dhs, None, None, self.weight_ih.grad, self.bias_ih.grad,
                                     (table, ids_tm, per_id), table_grad=embedding.weight.grad)
        return None

    def _checked_dy(self, dy):
        """dy as this layer's dtype, shaped as the last forward's output."""
        t, n, _ = self._shape
        h = self.hidden_size
        dy = self.as_input(dy, "dy")
        if self.return_sequences and dy.shape != (n, t, h):
            raise self.shape_error(f"{(n, t, h)}", dy.shape, "dy")
        if not self.return_sequences and dy.shape != (n, h):
            raise self.shape_error(f"{(n, h)}", dy.shape, "dy")
        return dy

    def _dhs_batch_first(self, dy):
        """dL/dh for every step, (N, T, H): dy itself, or zeros but the last step's."""
        if self.return_sequences:
            return dy
        t, n, _ = self._shape
        dhs = self._buffer("dhs_bf", (n, t, self.hidden_size))
        dhs.fill(0)
        dhs[:, t - 1] = dy
        return dhs

    def _set_state(self, buf, s, name):
        n, h = buf.shape[1], self.hidden_size
        if s is None:
            buf[0] = 0
            return
        s = self.as_input(s, name)
        if s.shape != (n, h):
            raise self.shape_error(f"(N, H) = ({n}, {h})", s.shape, name)
        buf[0] = s

    def backward(self, dy):
        if self._stack is not None:
            return self._stack.backward(dy)
        self.check_forwarded(self._shape)
        hs = self._work["hs"]
        t, n, f = self._shape
        h, gh = self.hidden_size, self._gates * self.hidden_size
        dy = self._checked_dy(dy)
        if _compiled_kernels():
            # one call: the sweep reading dy batch-first, dx per step written batch-first, and
            # the weight gradients, in one OpenMP region
            dhs = self._dhs_batch_first(dy)
            dx = np.empty((n, t, f), dtype=self._dtype)
            plain = self._embedded is None
            if not plain and self._table_grads_in_region:
                # the table's weight gradients inside the backward's parallel region
                table, ids_tm = self._embedded
                self._sequence_backward_full(
                    dhs, dx, None, self.weight_ih.grad, self.bias_ih.grad,
                    (table, ids_tm, self._buffer("per_id", (table.shape[0], gh))))
                return dx
            dpre_x = self._sequence_backward_full(
                dhs, dx, self._x_tm if plain else None,
                self.weight_ih.grad if plain else None, self.bias_ih.grad if plain else None)
            if not plain:
                table, ids_tm = self._embedded
                _core.embedded_input_grads(
                    table, self.weight_ih.data, ids_tm, dpre_x.reshape(t * n, gh),
                    self._buffer("per_id", (table.shape[0], gh)), self.weight_ih.grad,
                    self.bias_ih.grad)
            return dx
        dhs = self._buffer("dhs", (t, n, h))
        if self.return_sequences:
            np.copyto(dhs, dy.transpose(1, 0, 2))
        else:
            dhs.fill(0)
            dhs[t - 1] = dy
        dx_tm = self._buffer("dx_tm", (t * n, f))
        # with reference.py's kernels swapped in (benchmarks): the contract kernels only
        dpre_x, dpre_h = self._sequence_backward(dhs)
        dx2 = dpre_x.reshape(t * n, gh)
        dh2 = dpre_h.reshape(t * n, gh)
        # whole-sequence GEMMs as dense backward passes (the input side x -> xw and the hidden
        # side h_{t-1} -> pre-activations; hs[:T] is h_{t-1} of every step, contiguous):
        # dW += dpre.T @ input, db += dpre.sum(0) and, for the input side, dx := dpre @ W_ih
        if self._embedded is not None:
            # input rows are table rows: dW_ih += (dpre summed per id).T @ table
            table, ids_tm = self._embedded
            per_id = self._buffer("per_id", (table.shape[0], gh))
            per_id.fill(0)
            _core.embedding_backward(ids_tm, dx2, per_id)
            _core.dense_backward(table, self.weight_ih.data, per_id, None,
                                 self.weight_ih.grad, self.bias_ih.grad)
            _core.gemm(dx2, self.weight_ih.data, dx_tm)
        else:
            _core.dense_backward(self._x_tm.reshape(t * n, f), self.weight_ih.data, dx2, dx_tm,
                                 self.weight_ih.grad, self.bias_ih.grad)
        _core.dense_backward(hs[:t].reshape(t * n, h), self.weight_hh.data, dh2, None,
                             self.weight_hh.grad, self.bias_hh.grad)
        return dx_tm.reshape(t, n, f).transpose(1, 0, 2).copy()


class _Stack:
    """Several layers and/or two directions of a recurrent layer, as PyTorch's ``num_layers`` and
    ``bidirectional``: layer k reads layer k-1's output (both directions concatenated, dropout
    between layers in training); the reverse direction runs a cell on the time-reversed input.
    The last-step output (``return_sequences=False``) is each direction's final state: the
    forward cell's at t = T-1, the reverse cell's after reading back to t = 0 (PyTorch's h_n)."""

    def __init__(self, layer):
        self.layer = layer
        cls, h = type(layer), layer.hidden_size
        self.dirs = 2 if layer.bidirectional else 1
        self.cells = []
        for k in range(layer.num_layers):
            f = layer.input_size if k == 0 else h * self.dirs
            for d in range(self.dirs):
                cell = cls(f, h)  # draws its init from fastnn's generator, in torch's order
                suffix = f"_l{k}" + ("_reverse" if d else "")
                for local, p in list(cell._params.items()):
                    p.name = local.replace("_l0", suffix)
                    layer._params[p.name] = p
                self.cells.append(cell)
        self.masks = []
        self.shape = None

    def set_dtype(self, dtype):
        for cell in self.cells:  # the Parameter objects are shared and already cast
            cell._dtype = dtype
            cell._on_dtype_change()
        self.masks, self.shape = [], None

    def _state(self, s, name, n):
        if s is None:
            return [None] * len(self.cells)
        s = self.layer.as_input(s, name)
        want = (len(self.cells), n, self.layer.hidden_size)
        if s.shape != want:
            raise self.layer.shape_error(f"(num_layers * directions, N, H) = {want}", s.shape, name)
        return list(s)

    def forward(self, x, training, h0, c0):
        layer = self.layer
        if c0 is not None and not layer._has_cell:
            raise TypeError(f"{layer.describe()}: c0 is only accepted by LSTM")
        x = layer._check_x(x)
        n, t, _ = x.shape
        h0s, c0s = self._state(h0, "h0", n), self._state(c0, "c0", n)
        self.masks = []
        out = x
        for k in range(layer.num_layers):
            if k and training and layer.dropout:
                keep = 1.0 - layer.dropout
                mask = ((rng().random(out.shape) < keep) / keep).astype(layer._dtype)
                out = out * mask
                self.masks.append(mask)
            else:
                self.masks.append(None)
            parts = []
            for d in range(self.dirs):
                i = k * self.dirs + d
                cell = self.cells[i]
                kwargs = {"h0": h0s[i]} | ({"c0": c0s[i]} if layer._has_cell else {})
                if d == 0:
                    parts.append(cell.forward(out, training, **kwargs))
                else:  # the reverse direction: the cell on the time-reversed input, flipped back
                    parts.append(cell.forward(out[:, ::-1], training, **kwargs)[:, ::-1])
            out = parts[0] if self.dirs == 1 else np.concatenate(parts, axis=2)
        self.shape = (n, t)
        if layer.return_sequences:
            return np.ascontiguousarray(out)
        h = layer.hidden_size
        last = [out[:, t - 1, :h]] + ([out[:, 0, h:]] if self.dirs == 2 else [])
        return np.concatenate(last, axis=1)

    def backward(self, dy):
        layer = self.layer
        layer.check_forwarded(self.shape)
        n, t = self.shape
        h, width = layer.hidden_size, layer.hidden_size * self.dirs
        dy = layer.as_input(dy, "dy")
        want = (n, t, width) if layer.return_sequences else (n, width)
        if dy.shape != want:
            raise layer.shape_error(want, dy.shape, "dy")
        if not layer.return_sequences:
            seq = np.zeros((n, t, width), dtype=layer._dtype)
            seq[:, t - 1, :h] = dy[:, :h]
            if self.dirs == 2:
                seq[:, 0, h:] = dy[:, h:]  # the reverse cell's last step
            dy = seq
        dh0, dc0 = [None] * len(self.cells), [None] * len(self.cells)
        for k in range(layer.num_layers - 1, -1, -1):
            dx = None
            for d in range(self.dirs):
                i = k * self.dirs + d
                cell = self.cells[i]
                g = dy[:, :, d * h:(d + 1) * h]
                part = cell.backward(np.ascontiguousarray(g if d == 0 else g[:, ::-1]))
                part = part if d == 0 else part[:, ::-1]
                dx = part if dx is None else dx + part
                dh0[i], dc0[i] = cell.dh0, cell.dc0
            if self.masks[k] is not None:
                dx = dx * self.masks[k]
            dy = dx
        layer.dh0 = np.stack(dh0)
        layer.dc0 = np.stack(dc0) if layer._has_cell else None
        return np.ascontiguousarray(dy)


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

    def _sequence_forward(self, xw, hs, c0):
        _core.rnn_forward(xw, self.weight_hh.data, self.bias_hh.data, hs)

    def _sequence_backward(self, dhs):
        dpre = self._buffer("dpre", dhs.shape)
        self.dh0 = np.empty(dhs.shape[1:], dtype=self._dtype)
        _core.rnn_backward(self.weight_hh.data, self._work["hs"], dhs, dpre, self.dh0)
        return dpre, dpre

    def _sequence_forward_full(self, xw, ids, hs, c0, y):
        _core.rnn_forward_full(xw, ids, self.weight_hh.data, self.bias_hh.data, hs, y)

    def _sequence_backward_full(self, dhs, dx, x, dw_ih, db_ih):
        n, t, h = dhs.shape  # batch-first
        dpre = self._buffer("dpre", (t, n, h))
        self.dh0 = np.empty((n, h), dtype=self._dtype)
        _core.rnn_backward_full(
            self.weight_hh.data, self._work["hs"], dhs, dpre, self.dh0, self.weight_hh.grad,
            self.bias_hh.grad, self.weight_ih.data, dx, x, dw_ih, db_ih, batch_first=True)
        return dpre


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
    _has_table_backward = True
    # an Embedding-fed input's dW_ih, db_ih (dpre summed per id) computed in the backward's
    # parallel region, split over gate columns, instead of a serial call after it (class-wide
    # switch, for A/B measurements and tests)
    table_grads_in_region = True

    @property
    def _table_grads_in_region(self):
        return self.table_grads_in_region

    def _sequence_forward(self, xw, hs, c0):
        t, n, h = xw.shape[0], xw.shape[1], self.hidden_size
        cs = self._buffer("cs", (t + 1, n, h))
        self._set_state(cs, c0, "c0")
        _core.lstm_forward(xw, self.weight_hh.data, self.bias_hh.data, hs, cs,
                           self._buffer("gates", (t, n, 4 * h)))

    @property
    def c_n(self):
        """The last cell state c_T (N, H) of the latest forward; stacked or bidirectional:
        (num_layers * directions, N, H), each cell's final state (PyTorch's c_n)."""
        if self._stack is not None:
            return None if self._stack.shape is None else np.stack([c.c_n for c in self._stack.cells])
        return None if self._shape is None else self._work["cs"][-1].copy()

    def _sequence_backward(self, dhs):
        t, n, h = dhs.shape
        dpre = self._buffer("dpre", (t, n, 4 * h))
        self.dh0 = np.empty((n, h), dtype=self._dtype)
        self.dc0 = np.empty((n, h), dtype=self._dtype)
        _core.lstm_backward(self.weight_hh.data, self._work["cs"], self._work["gates"], dhs, dpre,
                            self.dh0, self.dc0)
        return dpre, dpre

    def _sequence_forward_full(self, xw, ids, hs, c0, y):
        t, n, h = hs.shape[0] - 1, hs.shape[1], self.hidden_size
        cs = self._buffer("cs", (t + 1, n, h))
        self._set_state(cs, c0, "c0")
        _core.lstm_forward_full(xw, ids, self.weight_hh.data, self.bias_hh.data, hs, cs,
                                self._buffer("gates", (t, n, 4 * h)), y)

    def _sequence_backward_full(self, dhs, dx, x, dw_ih, db_ih, embedded=None, table_grad=None):
        n, t, h = dhs.shape  # batch-first
        dpre = self._buffer("dpre", (t, n, 4 * h))
        self.dh0 = np.empty((n, h), dtype=self._dtype)
        self.dc0 = np.empty((n, h), dtype=self._dtype)
        table, ids, per_id = embedded if embedded is not None else (None, None, None)
        _core.lstm_backward_full(
            self.weight_hh.data, self._work["cs"], self._work["gates"], dhs, dpre, self.dh0,
            self.dc0, self._work["hs"], self.weight_hh.grad, self.bias_hh.grad,
            self.weight_ih.data, dx, x, dw_ih, db_ih, batch_first=True, table=table, ids=ids,
            per_id=per_id, table_grad=table_grad)
        return dpre


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

    def _sequence_forward(self, xw, hs, c0):
        t, n, h = xw.shape[0], xw.shape[1], self.hidden_size
        _core.gru_forward(xw, self.weight_hh.data, self.bias_hh.data, hs,
                          self._buffer("gates", (t, n, 3 * h)), self._buffer("hn", (t, n, h)))

    def _sequence_backward(self, dhs):
        t, n, h = dhs.shape
        dpre_x = self._buffer("dpre", (t, n, 3 * h))
        dpre_h = self._buffer("dpre_h", (t, n, 3 * h))
        self.dh0 = np.empty((n, h), dtype=self._dtype)
        _core.gru_backward(self.weight_hh.data, self._work["hs"], self._work["gates"],
                           self._work["hn"], dhs, dpre_x, dpre_h, self.dh0)
        return dpre_x, dpre_h

    def _sequence_forward_full(self, xw, ids, hs, c0, y):
        t, n, h = hs.shape[0] - 1, hs.shape[1], self.hidden_size
        _core.gru_forward_full(xw, ids, self.weight_hh.data, self.bias_hh.data, hs,
                               self._buffer("gates", (t, n, 3 * h)), self._buffer("hn", (t, n, h)),
                               y)

    def _sequence_backward_full(self, dhs, dx, x, dw_ih, db_ih):
        n, t, h = dhs.shape  # batch-first
        dpre_x = self._buffer("dpre", (t, n, 3 * h))
        dpre_h = self._buffer("dpre_h", (t, n, 3 * h))
        self.dh0 = np.empty((n, h), dtype=self._dtype)
        _core.gru_backward_full(
            self.weight_hh.data, self._work["hs"], self._work["gates"], self._work["hn"], dhs,
            dpre_x, dpre_h, self.dh0, self.weight_hh.grad, self.bias_hh.grad,
            self.weight_ih.data, dx, x, dw_ih, db_ih, batch_first=True)
        return dpre_x
