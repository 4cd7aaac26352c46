"""Sequence models: recurrent kernels against the NumPy reference, Embedding/RNN/LSTM/GRU gradient
checks (input, initial state, every parameter), PyTorch's parameter layout, and bad input."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastnn as fnn
from fastnn import _core
from fastnn._core import reference as ref
from fastnn import layers as L

from conftest import scaled_examples  # max_examples that follow the hypothesis profile
from thread_counts import assert_same_across_threads

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
CELLS = {"rnn": 1, "lstm": 4, "gru": 3}


def _run_kernels(module, cell, xw, w_hh, b_hh, h0, c0, dhs):
    """Forward and backward of one cell with ``module``'s kernels; returns every output array."""
    t, n, _ = xw.shape
    h = w_hh.shape[1]
    dt = xw.dtype
    hs = np.zeros((t + 1, n, h), dt)
    hs[0] = h0
    dh0 = np.full((n, h), np.nan, dt)
    if cell == "rnn":
        module.rnn_forward(xw, w_hh, b_hh, hs)
        dpre = np.full((t, n, h), np.nan, dt)
        module.rnn_backward(w_hh, hs, dhs, dpre, dh0)
        return hs, dpre, dh0
    if cell == "lstm":
        cs = np.zeros_like(hs)
        cs[0] = c0
        gates = np.full((t, n, 4 * h), np.nan, dt)
        module.lstm_forward(xw, w_hh, b_hh, hs, cs, gates)
        dpre = np.full_like(gates, np.nan)
        dc0 = np.full((n, h), np.nan, dt)
        module.lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0)
        return hs, cs, gates, dpre, dh0, dc0
    gates = np.full((t, n, 3 * h), np.nan, dt)
    hn = np.full((t, n, h), np.nan, dt)
    module.gru_forward(xw, w_hh, b_hh, hs, gates, hn)
    dpre_x = np.full_like(gates, np.nan)
    dpre_h = np.full_like(gates, np.nan)
    module.gru_backward(w_hh, hs, gates, hn, dhs, dpre_x, dpre_h, dh0)
    return hs, gates, hn, dpre_x, dpre_h, dh0


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=scaled_examples(10))
@given(n=st.integers(1, 4), t=st.integers(1, 6), h=st.integers(1, 9), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.3, 1.0, 4.0]))
def test_sequence_kernels_equal_reference(cell, dtype, n, t, h, seed, scale):
    rng = np.random.default_rng(seed)
    g = CELLS[cell] * h
    xw = (scale * rng.standard_normal((t, n, g))).astype(dtype)
    w_hh = (scale * rng.standard_normal((g, h)) / np.sqrt(h)).astype(dtype)
    b_hh = rng.standard_normal(g).astype(dtype)
    h0, c0 = rng.standard_normal((2, n, h)).astype(dtype)
    dhs = rng.standard_normal((t, n, h)).astype(dtype)
    got = _run_kernels(_core, cell, xw, w_hh, b_hh, h0, c0, dhs)
    want = _run_kernels(ref, cell, xw, w_hh, b_hh, h0, c0, dhs)
    for a, b in zip(got, want):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("n", [1, 2, 5, 33])
def test_row_blocks_per_thread_give_the_same_bits_on_one_and_two_threads(cell, n):
    # each thread runs the time loop on its own block of batch rows: the split (and an odd or
    # single row) must not change a bit, and must match the reference
    rng = np.random.default_rng(n)
    t, h = 4, 6
    g = CELLS[cell] * h
    xw = rng.standard_normal((t, n, g)).astype(np.float32)
    w_hh = (rng.standard_normal((g, h)) / np.sqrt(h)).astype(np.float32)
    b_hh = rng.standard_normal(g).astype(np.float32)
    h0, c0 = rng.standard_normal((2, n, h)).astype(np.float32)
    dhs = rng.standard_normal((t, n, h)).astype(np.float32)
    saved = fnn.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            runs.append(_run_kernels(_core, cell, xw, w_hh, b_hh, h0, c0, dhs))
    finally:
        fnn.set_num_threads(saved)
    want = _run_kernels(ref, cell, xw, w_hh, b_hh, h0, c0, dhs)
    for one, two, w in zip(*runs, want):
        assert_same_across_threads(one, two, np.float32)
        np.testing.assert_allclose(one, w, **TOL[np.float32])


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, h", [(7, 33), (8, 32), (9, 70), (17, 31), (24, 5)])
def test_sequence_kernels_across_register_tiles_panels_and_thread_blocks(cell, dtype, n, h):
    # the float32 step product works on 8-row x 32-column register tiles of W_hh packed in
    # panels, k in blocks of 256: ragged rows, ragged panels and k > 256 (4*70 for the LSTM)
    # must equal the reference, and so must every split of the rows over 1 or 2 threads
    # (min_rows 1: even tiny blocks get their own thread), bit for bit in float32
    from fastnn._core import _conv
    from fastnn._core.tuning import tuning
    rng = np.random.default_rng(n * 100 + h)
    t = 3
    g = CELLS[cell] * h
    xw = rng.standard_normal((t, n, g)).astype(dtype)
    w_hh = (rng.standard_normal((g, h)) / np.sqrt(h)).astype(dtype)
    b_hh = rng.standard_normal(g).astype(dtype)
    h0, c0 = rng.standard_normal((2, n, h)).astype(dtype)
    dhs = rng.standard_normal((t, n, h)).astype(dtype)
    want = _run_kernels(ref, cell, xw, w_hh, b_hh, h0, c0, dhs)
    saved = fnn.get_num_threads()
    try:
        runs = []
        for threads, min_rows in ((1, 1), (2, 1), (2, 8)):
            fnn.set_num_threads(threads)
            with tuning(rnn_min_rows_per_thread=min_rows):
                runs.append(_run_kernels(_core, cell, xw, w_hh, b_hh, h0, c0, dhs))
    finally:
        fnn.set_num_threads(saved)
    for got in runs:
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, **TOL[dtype])
        if dtype == np.float32 and _conv._microkernel_available():
            # float64, and float32 on builds without AVX-512, go through BLAS, whose kernel
            # depends on the rows
            for a, b in zip(got, runs[0]):
                np.testing.assert_array_equal(a, b)  # the row split changes no bit


def test_recurrent_tuning_knobs_are_listed_checked_and_restored():
    """The recurrent kernels' knobs in fastnn._core.tuning; the weight gradients off the
    microkernel (sgemm) are the same sums to rounding."""
    from fastnn._core import tuning

    assert {"rnn_min_rows_per_thread", "rnn_vector_gates", "rnn_grad_kernel"} <= set(tuning.knobs())
    with pytest.raises(ValueError, match="int >= 1"):
        with tuning.tuning(rnn_min_rows_per_thread=0):
            pass
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 4, 5)).astype(np.float32)
    dy = rng.standard_normal((9, 4, 33)).astype(np.float32)
    grads = {}
    for on in (True, False):
        with tuning.tuning(rnn_grad_kernel=on, rnn_min_rows_per_thread=2):
            assert tuning.get("rnn_grad_kernel") is on
            fnn.seed(0)
            layer = L.GRU(5, 33)
            layer.forward(x)
            layer.backward(dy)
            grads[on] = [p.grad.copy() for p in layer.parameters()]
    assert tuning.get("rnn_grad_kernel") is True and tuning.get("rnn_min_rows_per_thread") == 8
    for a, b in zip(grads[True], grads[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=scaled_examples(10))
@given(m=st.integers(0, 40), v=st.integers(1, 6), d=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_embedding_kernels_equal_reference_with_repeats(dtype, m, v, d, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v, m).astype(np.int64)  # few rows, many ids: repeats are the norm
    weight = rng.standard_normal((v, d)).astype(dtype)
    out, out_ref = np.empty((m, d), dtype), np.empty((m, d), dtype)
    _core.embedding_forward(idx, weight, out)
    ref.embedding_forward(idx, weight, out_ref)
    np.testing.assert_array_equal(out, out_ref)
    dy = rng.standard_normal((m, d)).astype(dtype)
    dw = np.ones((v, d), dtype)
    dw_ref = dw.copy()
    _core.embedding_backward(idx, dy, dw)
    ref.embedding_backward(idx, dy, dw_ref)
    np.testing.assert_allclose(dw, dw_ref, **TOL[dtype])


def test_embedding_scatter_add_sums_repeated_ids():
    emb = L.Embedding(4, 2).astype(np.float64)
    ids = np.array([[3, 3, 1], [3, 0, 1]], dtype=np.int16)
    y = emb.forward(ids)
    np.testing.assert_array_equal(y[0, 0], emb.weight.data[3])
    dy = np.arange(12, dtype=np.float64).reshape(2, 3, 2)
    assert emb.backward(dy) is None
    want = np.zeros((4, 2))
    want[3] = dy[0, 0] + dy[0, 1] + dy[1, 0]
    want[1] = dy[0, 2] + dy[1, 2]
    want[0] = dy[1, 1]
    np.testing.assert_array_equal(emb.weight.grad, want)
    emb.forward(ids)
    emb.backward(dy)  # gradients accumulate
    np.testing.assert_array_equal(emb.weight.grad, 2 * want)


@pytest.mark.parametrize("id_dtype", [np.int8, np.uint8, np.int32, np.int64, np.uint64])
def test_embedding_accepts_any_integer_dtype_and_gradchecks(id_dtype):
    fnn.seed(1)
    emb = L.Embedding(7, 3)
    ids = np.array([[0, 6, 2], [2, 2, 5]], dtype=id_dtype)
    assert emb.forward(ids).shape == (2, 3, 3)
    assert emb.forward(ids).dtype == np.float32
    fnn.assert_gradcheck(emb, ids)


def test_embedding_init_and_bad_input():
    fnn.seed(0)
    emb = L.Embedding(500, 40)
    w = emb.weight.data
    assert w.shape == (500, 40) and w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1) as PyTorch
    assert emb.config() == {"num_embeddings": 500, "embedding_dim": 40}
    with pytest.raises(ValueError, match=r"Embedding\(num_embeddings=500.*\[0, 500\).*\[0, 500\]"):
        emb.forward(np.array([[0, 500]]))
    with pytest.raises(ValueError, match=r"Embedding.*-1"):
        emb.forward(np.array([[-1, 3]]))
    with pytest.raises(TypeError, match=r"Embedding.*integer ids.*float"):
        emb.forward(np.array([[0.0, 1.0]]))
    emb.forward(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"Embedding.*\(2, 3, 40\).*\(2, 3, 4\)"):
        emb.backward(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="embedding_forward.*indices"):
        _core.embedding_forward(np.array([5]), np.zeros((5, 2)), np.zeros((1, 2)))


# --- layers -----------------------------------------------------------------------------------

LAYERS = {"RNN": (L.RNN, 1), "LSTM": (L.LSTM, 4), "GRU": (L.GRU, 3)}


def _numeric_state_grad(layer, x, dy, states, name, eps=1e-6):
    """Central difference of sum(forward(x, **states) * dy) with respect to states[name]."""
    s = states[name]
    grad = np.zeros_like(s)
    for i in np.ndindex(s.shape):
        old = s[i]
        s[i] = old + eps
        plus = float((layer.forward(x, **states) * dy).sum())
        s[i] = old - eps
        minus = float((layer.forward(x, **states) * dy).sum())
        s[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind", sorted(LAYERS))
@settings(max_examples=scaled_examples(6))
@given(n=st.integers(1, 3), t=st.integers(1, 5), f=st.integers(1, 4), h=st.integers(1, 4),
       return_sequences=st.booleans(), seed=st.integers(0, 2**16))
def test_recurrent_gradcheck(kind, n, t, f, h, return_sequences, seed):
    cls, _ = LAYERS[kind]
    fnn.seed(seed)
    layer = cls(f, h, return_sequences=return_sequences)
    x = np.random.default_rng(seed).standard_normal((n, t, f))
    fnn.assert_gradcheck(layer, x)


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_recurrent_initial_state_gradients(kind, return_sequences):
    cls, _ = LAYERS[kind]
    fnn.seed(3)
    layer = cls(3, 4, return_sequences=return_sequences).astype(np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    states = {"h0": rng.standard_normal((2, 4))}
    if kind == "LSTM":
        states["c0"] = rng.standard_normal((2, 4))
    y = layer.forward(x, **states)
    dy = rng.standard_normal(y.shape)
    layer.backward(dy)
    analytic = {"h0": layer.dh0, "c0": layer.dc0}
    for name in states:
        assert analytic[name].shape == (2, 4)
        np.testing.assert_allclose(analytic[name], _numeric_state_grad(layer, x, dy, states, name),
                                   rtol=1e-6, atol=1e-8)
    # a non-zero initial state changes the output (it is really used)
    assert not np.allclose(layer.forward(x), layer.forward(x, **states))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_recurrent_layout_init_and_config(kind):
    cls, g = LAYERS[kind]
    fnn.seed(0)
    layer = cls(5, 16)
    sd = layer.state_dict()
    assert list(sd) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    shapes = [(g * 16, 5), (g * 16, 16), (g * 16,), (g * 16,)]
    assert [v.shape for v in sd.values()] == shapes
    bound = 1 / np.sqrt(16)
    for v in sd.values():
        assert v.dtype == np.float32
        assert v.min() >= -bound and v.max() <= bound and v.max() - v.min() > bound  # U(-k, k)
    assert layer.config() == {"input_size": 5, "hidden_size": 16, "return_sequences": True}
    rebuilt = cls(**layer.config())
    rebuilt.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.forward(x), layer.forward(x))


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_recurrent_dtypes_shapes_buffers_and_accumulation(kind):
    cls, _ = LAYERS[kind]
    fnn.seed(0)
    layer = cls(3, 4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 3))  # float64 input, float32 layer: cast once
    y1 = layer.forward(x)
    assert y1.shape == (2, 5, 4) and y1.dtype == np.float32
    y1_copy = y1.copy()
    layer.forward(rng.standard_normal((2, 5, 3)))  # same shapes: buffers reused ...
    np.testing.assert_array_equal(y1, y1_copy)    # ... but a returned output is never overwritten
    assert layer.forward(rng.standard_normal((6, 2, 3))).shape == (6, 2, 4)  # new N, T

    layer.astype(np.float64)
    last = cls(3, 4, return_sequences=False).astype(np.float64)
    last.load_state_dict(layer.state_dict())
    seq = layer.forward(x)
    np.testing.assert_allclose(last.forward(x), seq[:, -1], rtol=0, atol=0)
    dy = rng.standard_normal((2, 4))
    dx = last.backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float64
    first = [p.grad.copy() for p in last.parameters()]
    last.forward(x)
    last.backward(dy)
    for p, g in zip(last.parameters(), first):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12)  # gradients accumulate
    # the sequence layer given dy only at the last step agrees with the last-step layer
    full = np.zeros_like(seq)
    full[:, -1] = dy
    np.testing.assert_allclose(layer.backward(full), dx, rtol=1e-12, atol=1e-14)


def test_lstm_exposes_last_cell_state():
    fnn.seed(0)
    lstm = L.LSTM(2, 3).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 6, 2))
    y = lstm.forward(x)
    c = lstm.c_n
    assert c.shape == (4, 3)
    # continuing from (h_T, c_T) equals running the longer sequence in one go
    x2 = np.random.default_rng(1).standard_normal((4, 3, 2))
    y2 = lstm.forward(x2, h0=y[:, -1], c0=c)
    np.testing.assert_allclose(y2, lstm.forward(np.concatenate([x, x2], axis=1))[:, 6:], rtol=1e-12)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_recurrent_bad_input(kind):
    cls, _ = LAYERS[kind]
    layer = cls(3, 4)
    with pytest.raises(ValueError, match=rf"{kind}\(3, 4\).*\(N, T, 3\).*\(2, 5, 2\)"):
        layer.forward(np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match=rf"{kind}.*\(2, 3\)"):
        layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=rf"{kind}.*h0.*\(2, 4\).*\(3, 4\)"):
        layer.forward(np.zeros((2, 5, 3), np.float32), h0=np.zeros((3, 4)))
    with pytest.raises(TypeError, match=rf"{kind}.*floating"):
        layer.forward(np.zeros((2, 5, 3), np.int64))
    with pytest.raises(RuntimeError, match="before forward"):
        cls(3, 4).backward(np.zeros((2, 5, 4)))
    layer.forward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=rf"{kind}.*dy.*\(2, 5, 4\).*\(2, 4\)"):
        layer.backward(np.zeros((2, 4), np.float32))
    if kind != "LSTM":
        with pytest.raises(TypeError, match="c0"):
            layer.forward(np.zeros((2, 5, 3), np.float32), c0=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=kind):
        cls(0, 4)
    with pytest.raises(ValueError, match=kind):
        cls(3, 2.5)


def test_kernel_wrappers_reject_mismatched_shapes():
    xw = np.zeros((5, 2, 8), np.float32)
    with pytest.raises(ValueError, match=r"lstm_forward.*hs.*\(6, 2, 2\)"):
        _core.lstm_forward(xw, np.zeros((8, 2), np.float32), np.zeros(8, np.float32),
                           np.zeros((5, 2, 2), np.float32), np.zeros((6, 2, 2), np.float32),
                           np.zeros((5, 2, 8), np.float32))
    with pytest.raises(ValueError, match=r"gru_forward.*w_hh.*\(3\*H, H\)"):
        _core.gru_forward(xw, np.zeros((8, 2), np.float32), np.zeros(8, np.float32),
                          np.zeros((6, 2, 2), np.float32), np.zeros((5, 2, 6), np.float32),
                          np.zeros((5, 2, 2), np.float32))
    with pytest.raises(TypeError, match=r"rnn_forward.*float64"):
        _core.rnn_forward(np.zeros((5, 2, 2), np.float32), np.zeros((2, 2)), np.zeros(2),
                          np.zeros((6, 2, 2)))


# --- an Embedding feeding a recurrent layer: the projected-table path ------------------------

def _embedded_step(kind, dtype, ids, v, f, h, fuse, return_sequences=True, seed=3,
                   full_calls=True):
    """Forward + backward of Embedding(v, f) -> kind(f, h); returns (output, grads, fused?)."""
    cls, _ = LAYERS[kind]
    fnn.seed(seed)
    model = fnn.Sequential([L.Embedding(v, f), cls(f, h, return_sequences=return_sequences)])
    model = model.astype(dtype)
    old, old_calls = L.recurrent._Recurrent.fuse_embedding, L.recurrent._FUSED_CALLS
    L.recurrent._Recurrent.fuse_embedding = fuse
    L.recurrent._FUSED_CALLS = full_calls
    try:
        y = model.forward(ids)
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
        model.backward(dy)
    finally:
        L.recurrent._Recurrent.fuse_embedding = old
        L.recurrent._FUSED_CALLS = old_calls
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    return y, grads, model[1]._embedded is not None


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, t, v, f, h", [(3, 5, 4, 6, 5), (8, 4, 2, 3, 33), (1, 9, 3, 2, 1)])
@pytest.mark.parametrize("full_calls", [True, False])
def test_embedded_input_path_equals_plain_path(kind, dtype, n, t, v, f, h, full_calls):
    """Ragged sizes and repeated ids: the output and every gradient (table included, through
    dx) match the position-by-position projection (private whole-layer calls or contract
    kernels only)."""
    ids = np.random.default_rng(n * t).integers(0, v, (n, t))
    for return_sequences in (True, False):
        y0, g0, fused0 = _embedded_step(kind, dtype, ids, v, f, h, False, return_sequences,
                                        full_calls=False)
        y1, g1, fused1 = _embedded_step(kind, dtype, ids, v, f, h, True, return_sequences,
                                        full_calls=full_calls)
        assert fused1 and not fused0
        np.testing.assert_allclose(y1, y0, **TOL[dtype])
        for name in g0:
            np.testing.assert_allclose(g1[name], g0[name], err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("threads", [1, 2])
def test_embedded_input_path_on_one_and_two_threads(threads):
    ids = np.random.default_rng(1).integers(0, 5, (17, 6))
    old = fnn.get_num_threads()
    fnn.set_num_threads(threads)
    try:
        y0, g0, _ = _embedded_step("LSTM", np.float32, ids, 5, 7, 40, False)
        y1, g1, fused = _embedded_step("LSTM", np.float32, ids, 5, 7, 40, True)
    finally:
        fnn.set_num_threads(old)
    assert fused
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    for name in g0:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_embedded_input_gradcheck(kind):
    cls, _ = LAYERS[kind]
    fnn.seed(5)
    model = fnn.Sequential([L.Embedding(3, 4), cls(4, 3)]).astype(np.float64)
    ids = np.array([[0, 2, 2, 1], [1, 1, 0, 2]])
    model.forward(ids)
    assert model[1]._embedded is not None
    fnn.assert_gradcheck(model, ids)


def test_embedded_input_falls_back_when_the_lookup_no_longer_holds():
    """Only the untouched output of the latest lookup, of a small vocabulary, takes the table path:
    an edited output, an edited table, a copy or a large vocabulary give the plain result."""
    fnn.seed(0)
    emb, lstm = L.Embedding(4, 3).astype(np.float64), L.LSTM(3, 2).astype(np.float64)
    ids = np.array([[0, 1, 2, 3], [3, 3, 1, 0]])

    def plain(x):
        L.recurrent._Recurrent.fuse_embedding = False
        try:
            return lstm.forward(x.copy())
        finally:
            L.recurrent._Recurrent.fuse_embedding = True

    x = emb.forward(ids)
    x[0, 1, 2] += 1.0
    y = lstm.forward(x)
    assert lstm._embedded is None
    np.testing.assert_allclose(y, plain(x), rtol=1e-12, atol=1e-12)

    x = emb.forward(ids)
    emb.weight.data[1, 0] += 1.0  # row 1 is used: x no longer equals table[ids]
    y = lstm.forward(x)
    assert lstm._embedded is None
    np.testing.assert_allclose(y, plain(x), rtol=1e-12, atol=1e-12)

    x = emb.forward(ids)
    lstm.forward(x.copy())
    assert lstm._embedded is None
    lstm.forward(x)
    assert lstm._embedded is not None

    big = L.Embedding(5, 3).astype(np.float64)  # 2 * 5 > 2 * 4 positions
    lstm.forward(big.forward(ids))
    assert lstm._embedded is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v, f, g, m", [(1, 1, 1, 1), (5, 3, 12, 17), (7, 33, 40, 0), (3, 8, 64, 50)])
def test_table_helpers_equal_numpy(dtype, v, f, g, m):
    from fastnn._core import _recurrent

    rng = np.random.default_rng(v * g + m)
    table, w, b = (rng.standard_normal(s).astype(dtype) for s in ((v, f), (g, f), (g,)))
    ids = rng.integers(0, v, m)
    projected, xw = np.full((v, g), np.nan, dtype), np.full((m, g), np.nan, dtype)
    _recurrent.embedded_projection(table, w, b, ids, projected, xw)
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(projected, table @ w.T + b, **tol)
    np.testing.assert_allclose(xw, table[ids] @ w.T + b, **tol)
    dpre = rng.standard_normal((m, g)).astype(dtype)
    dw, db = np.ones((g, f), dtype), np.ones(g, dtype)  # accumulates
    per_id = np.full((v, g), np.nan, dtype)
    _recurrent.embedded_input_grads(table, w, ids, dpre, per_id, dw, db)
    np.testing.assert_allclose(dw, 1 + dpre.T @ table[ids], **tol)
    np.testing.assert_allclose(db, 1 + dpre.sum(0), **tol)
    with pytest.raises(ValueError, match=r"embedded_projection: ids must lie in \[0, %d\)" % v):
        _recurrent.embedded_projection(table, w, b, np.array([v]), projected, xw[:1])
    with pytest.raises(ValueError, match="embedded_input_grads: w_ih"):
        _recurrent.embedded_input_grads(table, w[:, :0], ids, dpre, per_id, dw, db)


def _layer_step(kind, dtype, x, h, full_calls, return_sequences, seed=4):
    """Forward + backward of kind(F, h) on float input x; returns (y, dx, dh0, grads)."""
    cls, _ = LAYERS[kind]
    fnn.seed(seed)
    layer = cls(x.shape[2], h, return_sequences=return_sequences).astype(dtype)
    old = L.recurrent._FUSED_CALLS
    L.recurrent._FUSED_CALLS = full_calls
    try:
        y = layer.forward(x)
        dy = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
        dx = layer.backward(dy)
    finally:
        L.recurrent._FUSED_CALLS = old
    return y, dx, layer.dh0, {name: p.grad.copy() for name, p in layer.named_parameters()}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, t, f, h", [(1, 3, 2, 1), (9, 4, 5, 33), (17, 2, 32, 16), (33, 3, 3, 70)])
def test_whole_layer_backward_call_equals_contract_kernels(kind, dtype, threads, n, t, f, h):
    """The private one-region backward (sweep + per-step dx + weight gradients split over the
    threads' gate columns) gives what the contract kernels and two dense backward passes give:
    ragged sizes across register tiles, panels and row/column splits."""
    x = np.random.default_rng(n + t).standard_normal((n, t, f)).astype(dtype)
    old = fnn.get_num_threads()
    fnn.set_num_threads(threads)
    try:
        for return_sequences in (True, False):
            ref_out = _layer_step(kind, dtype, x, h, False, return_sequences)
            out = _layer_step(kind, dtype, x, h, True, return_sequences)
            tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
            for a, b in zip(out[:3], ref_out[:3]):
                np.testing.assert_allclose(a, b, **tol)
            for name in ref_out[3]:
                np.testing.assert_allclose(out[3][name], ref_out[3][name], err_msg=name, **tol)
    finally:
        fnn.set_num_threads(old)


def test_whole_layer_backward_calls_reject_bad_buffers():
    from fastnn._core import _recurrent

    t, n, h, f = 2, 3, 4, 5
    z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
    args = (z(4 * h, h), z(t + 1, n, h), z(t, n, 4 * h), z(t, n, h), z(t, n, 4 * h), z(n, h),
            z(n, h), z(t + 1, n, h), z(4 * h, h), z(4 * h), z(4 * h, f))
    with pytest.raises(ValueError, match=r"lstm_backward_full: dx must have shape \(2, 3, 5\)"):
        _recurrent.lstm_backward_full(*args, z(t, n, f + 1))
    with pytest.raises(ValueError, match="lstm_backward_full: x, dw_ih and db_ih go together"):
        _recurrent.lstm_backward_full(*args, z(t, n, f), z(t, n, f))
    with pytest.raises(ValueError, match=r"rnn_backward_full: w_ih must have shape \(4, F\)"):
        _recurrent.rnn_backward_full(z(h, h), z(t + 1, n, h), z(t, n, h), z(t, n, h), z(n, h),
                                     z(h, h), z(h), z(h + 1, f), z(t, n, f))


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_full_reads_table_rows_and_writes_batch_first(dtype):
    """lstm_forward_full on (projected table, ids) == lstm_forward on the gathered xw; y is
    hs[1:] batch-first; bad ids or y raise, naming the call."""
    from fastnn._core import _recurrent

    t, n, h, v = 5, 9, 7, 4
    rng = np.random.default_rng(0)
    table = rng.standard_normal((v, 4 * h)).astype(dtype)
    ids = rng.integers(0, v, t * n)
    w_hh, b_hh = rng.standard_normal((4 * h, h)).astype(dtype), rng.standard_normal(4 * h).astype(dtype)
    outs = []
    for use_ids in (False, True):
        hs, cs = np.zeros((t + 1, n, h), dtype), np.zeros((t + 1, n, h), dtype)
        gates, y = np.empty((t, n, 4 * h), dtype), np.full((n, t, h), np.nan, dtype)
        if use_ids:
            _recurrent.lstm_forward_full(table, ids, w_hh, b_hh, hs, cs, gates, y)
            np.testing.assert_array_equal(y, hs[1:].transpose(1, 0, 2))
        else:
            _core.lstm_forward(table[ids].reshape(t, n, 4 * h), w_hh, b_hh, hs, cs, gates)
        outs.append((hs, cs, gates))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"lstm_forward_full: ids must lie in \[0, 4\)"):
        _recurrent.lstm_forward_full(table, ids + v, w_hh, b_hh, hs, cs, gates, y)
    with pytest.raises(ValueError, match=r"lstm_forward_full: y must have shape \(9, 5, 7\)"):
        _recurrent.lstm_forward_full(table, ids, w_hh, b_hh, hs, cs, gates, np.empty((n, 2, h), dtype))
