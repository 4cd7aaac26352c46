"""A recurrent layer fed by an Embedding, on the table path: the exact check of the Embedding's
lookup hint (_core.lookup_matches), the LSTM's table gradients in its backward's region, and
Sequential.backward's shortcut (LSTM.backward_table): the Embedding's weight gradient as per-id
sums of dpre @ W_ih, no dx. Against the plain path (the layers' own backward one by one):
float32 and float64, 1 and 2 threads, repeated and unused ids, fallbacks, gradcheck."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _core
from fastnn import layers as L
from fastnn.layers import recurrent as R

from thread_counts import assert_same_across_threads

_lookup_matches = _core.lookup_matches


@pytest.fixture
def restore():
    old_threads = fnn.get_num_threads()
    old = R._Recurrent.table_backward
    yield
    R._Recurrent.table_backward = old
    fnn.set_num_threads(old_threads)


def _model(dtype, vocab=11, embed=5, hidden=7, return_sequences=True, cell=L.LSTM, seed=0):
    fnn.manual_seed(seed) if hasattr(fnn, "manual_seed") else None
    m = fnn.Sequential(L.Embedding(vocab, embed), cell(embed, hidden, return_sequences=return_sequences),
                       L.Dense(hidden, 3))
    return m.astype(dtype)


def _ids(rng, n, t, vocab, used):
    return rng.choice(np.asarray(used), size=(n, t))


def _grads(model):
    return [p.grad.copy() for p in model.parameters()]


def _plain(model, ids, dy):
    model.zero_grad()
    y = model.forward(ids)
    d = dy(y) if callable(dy) else dy
    for layer in reversed(model.layers):
        d = layer.backward(d)
    assert d is None
    return y, _grads(model)


def _via_sequential(model, ids, dy, input_grad, calls):
    model.zero_grad()
    y = model.forward(ids)
    out = model.backward(dy, input_grad=input_grad)
    assert out is None
    return y, _grads(model)


def _counting(monkeypatch):
    calls = []
    orig = R.LSTM.backward_table

    def counted(self, dy, emb):
        calls.append(1)
        return orig(self, dy, emb)

    monkeypatch.setattr(R.LSTM, "backward_table", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("input_grad", [False, True])
def test_shortcut_matches_plain_path(restore, monkeypatch, dtype, threads, return_sequences,
                                     input_grad):
    fnn.set_num_threads(threads)
    rng = np.random.default_rng(threads * 10 + return_sequences)
    vocab, n, t = 11, 6, 9
    model = _model(dtype, vocab=vocab, return_sequences=return_sequences)
    # repeated ids, ids 0, 7 and 10 never used; V = 11 <= N*T/2: the table path
    ids = _ids(rng, n, t, vocab, [1, 2, 3, 3, 4, 5, 6, 8, 9])
    out_shape = (n, t, 3) if return_sequences else (n, 3)
    dy = rng.standard_normal(out_shape).astype(dtype)
    calls = _counting(monkeypatch)
    y0, plain = _plain(model, ids, dy)
    assert model.layers[1]._embedded is not None  # the table path was taken
    y1, short = _via_sequential(model, ids, dy, input_grad, calls)
    assert calls == [1]
    np.testing.assert_array_equal(y0, y1)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for p, a, b in zip(model.parameters(), plain, short):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.abs(a).max(), err_msg=p.name)
    # unused ids get no gradient
    emb_grad = short[0]
    assert not emb_grad[[0, 7, 10]].any()
    # switched off: the plain path again, bit for bit
    R._Recurrent.table_backward = False
    _, off = _via_sequential(model, ids, dy, input_grad, calls)
    assert calls == [1]
    for a, b in zip(plain, off):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shortcut_accumulates_into_existing_grads(restore, monkeypatch, dtype):
    rng = np.random.default_rng(3)
    model = _model(dtype)
    ids = rng.integers(0, 4, (8, 6))
    dy = rng.standard_normal((8, 6, 3)).astype(dtype)
    calls = _counting(monkeypatch)
    _, once = _plain(model, ids, dy)
    model.zero_grad()
    for _ in range(2):
        model.forward(ids)
        model.backward(dy, input_grad=False)
    assert calls == [1, 1]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for a, p in zip(once, model.parameters()):
        np.testing.assert_allclose(p.grad, 2 * a, rtol=rtol, atol=rtol * np.abs(a).max())


def test_direct_lstm_backward_still_returns_dx(restore):
    rng = np.random.default_rng(4)
    emb, lstm = L.Embedding(10, 5), L.LSTM(5, 7)
    ids = rng.integers(0, 10, (6, 8))
    x = emb.forward(ids)
    y = lstm.forward(x)
    assert lstm._embedded is not None
    dy = rng.standard_normal(y.shape).astype(y.dtype)
    dx = lstm.backward(dy)
    assert dx.shape == x.shape
    R._Recurrent.fuse_embedding = False
    try:
        lstm2 = L.LSTM(5, 7)
        lstm2.load_state_dict(lstm.state_dict()) if hasattr(lstm2, "load_state_dict") else None
        for p, q in zip(lstm2.parameters(), lstm.parameters()):
            p.data[...] = q.data
        lstm2.forward(x)
        assert lstm2._embedded is None
        dx2 = lstm2.backward(dy)
    finally:
        R._Recurrent.fuse_embedding = True
    np.testing.assert_allclose(dx, dx2, rtol=1e-5, atol=1e-6)


def test_falls_back_without_the_table_path(restore, monkeypatch):
    rng = np.random.default_rng(5)
    calls = _counting(monkeypatch)
    # vocabulary too large for the table path (2 V > N T): the plain path, same gradients
    model = _model(np.float64, vocab=100)
    ids = rng.integers(0, 100, (3, 4))
    dy = rng.standard_normal((3, 4, 3))
    _, plain = _plain(model, ids, dy)
    assert model.layers[1]._embedded is None
    _, seq = _via_sequential(model, ids, dy, False, calls)
    assert calls == []
    for a, b in zip(plain, seq):
        np.testing.assert_array_equal(a, b)
    # fuse_embedding off: no table path either
    model = _model(np.float32)
    ids = rng.integers(0, 11, (6, 8))
    dy = rng.standard_normal((6, 8, 3)).astype(np.float32)
    monkeypatch.setattr(R._Recurrent, "fuse_embedding", False)
    _, plain = _plain(model, ids, dy)
    _, seq = _via_sequential(model, ids, dy, False, calls)
    assert calls == []
    for a, b in zip(plain, seq):
        np.testing.assert_array_equal(a, b)


def test_falls_back_when_the_embedding_ran_again(restore, monkeypatch):
    # the Embedding's latest lookup is not the one the LSTM saw: no shortcut
    rng = np.random.default_rng(6)
    calls = _counting(monkeypatch)
    model = _model(np.float64)
    emb, lstm = model.layers[0], model.layers[1]
    ids = rng.integers(0, 11, (6, 8))
    dy = rng.standard_normal((6, 8, 3))
    model.forward(ids)
    assert lstm._embedded is not None
    emb.forward(rng.integers(0, 11, (6, 8)))
    assert not lstm.takes_table_backward(emb)
    assert not lstm.takes_table_backward(L.Embedding(11, 5))
    with pytest.raises(RuntimeError, match="backward_table"):
        lstm.backward_table(dy, emb)


@pytest.mark.parametrize("cell", [L.RNN, L.GRU])
def test_rnn_gru_keep_the_plain_path(restore, cell):
    rng = np.random.default_rng(7)
    model = _model(np.float64, cell=cell)
    ids = rng.integers(0, 11, (6, 8))
    dy = rng.standard_normal((6, 8, 3))
    _, plain = _plain(model, ids, dy)
    assert not model.layers[1].takes_table_backward(model.layers[0])
    _, seq = _via_sequential(model, ids, dy, False, None)
    for a, b in zip(plain, seq):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_gradcheck_embedding_lstm_float64(restore, monkeypatch, return_sequences):
    rng = np.random.default_rng(8)
    calls = _counting(monkeypatch)
    model = _model(np.float64, vocab=6, embed=3, hidden=4, return_sequences=return_sequences)
    ids = rng.integers(0, 5, (4, 5))  # id 5 unused
    result = fnn.gradcheck(model, ids)
    assert result.ok, result.report()
    assert calls  # the shortcut was on the checked path


# ---- the exact check of an Embedding's lookup hint (L.recurrent._FAST_LOOKUP_CHECK) ------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("v,m,f", [(1, 1, 1), (5, 7, 3), (64, 1024, 32), (3, 40, 17)])
def test_lookup_matches_is_array_equal(dtype, v, m, f):
    rng = np.random.default_rng(v * 7 + m)
    table = rng.standard_normal((v, f)).astype(dtype)
    ids = rng.integers(0, v, m)
    x = table[ids]
    assert _lookup_matches(table, ids, x)
    assert _lookup_matches(table, ids, np.asfortranarray(x))  # any layout
    for k in (0, m - 1, m // 2):
        y = x.copy()
        y[k, -1] = np.nextafter(y[k, -1], np.inf).astype(dtype)
        assert not _lookup_matches(table, ids, y)
    t2 = table.copy()
    t2[ids[0], 0] = np.nan
    assert not _lookup_matches(t2, ids, t2[ids]) and not np.array_equal(t2[ids], t2[ids])
    t3 = table.copy()
    t3[ids[0], 0] = 0.0
    y = t3[ids]
    y[0, 0] = -0.0  # equal as numbers, as np.array_equal says
    assert _lookup_matches(t3, ids, y) == np.array_equal(t3[ids], y)
    bad = ids.copy()
    bad[-1] = v
    assert not _lookup_matches(table, bad, x)
    bad[-1] = -1
    assert not _lookup_matches(table, bad, x)
    assert not _lookup_matches(table, ids[:-1], x) if m > 1 else True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_lookup_check_same_results_and_fallback(dtype, threads):
    old_threads = fnn.get_num_threads()
    fnn.set_num_threads(threads)
    try:
        rng = np.random.default_rng(11)
        ids = rng.integers(0, 5, (9, 7))
        dy = rng.standard_normal((9, 7, 13)).astype(dtype)
        out = {}
        for fast in (False, True):
            for modify in (False, True):
                R._FAST_LOOKUP_CHECK = fast
                fnn.seed(0)
                emb = L.Embedding(5, 6).astype(dtype)
                lstm = L.LSTM(6, 13).astype(dtype)
                x = emb.forward(ids)
                if modify:
                    x[4, 3, 2] += 1  # the hint no longer holds: the plain path
                y = lstm.forward(x)
                assert (lstm._embedded is None) == modify
                dx = lstm.backward(dy)
                out[fast, modify] = [y, dx] + [p.grad.copy() for p in lstm.parameters()]
        for modify in (False, True):
            for a, b in zip(out[False, modify], out[True, modify]):
                np.testing.assert_array_equal(a, b)
    finally:
        R._FAST_LOOKUP_CHECK = True
        fnn.set_num_threads(old_threads)


# ---- LSTM: an Embedding-fed input's dW_ih, db_ih in the backward's region ----------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,t,v,f,h", [(2, 1, 1, 1, 1), (13, 5, 7, 3, 37), (17, 4, 9, 4, 16),
                                       (32, 8, 64, 32, 128), (9, 3, 5, 6, 5)])
def test_table_grads_in_region_match_serial_call(dtype, n, t, v, f, h):
    rng = np.random.default_rng(n * 31 + h)
    ids = rng.integers(0, v, (n, t))
    dy = rng.standard_normal((n, t, h)).astype(dtype)
    old_threads, old = fnn.get_num_threads(), L.LSTM.table_grads_in_region
    out = {}
    try:
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            for inside in (False, True):
                L.LSTM.table_grads_in_region = inside
                fnn.seed(0)
                emb = L.Embedding(v, f).astype(dtype)
                lstm = L.LSTM(f, h).astype(dtype)
                prng = np.random.default_rng(7)  # the same starting grads every run
                for p in lstm.parameters():
                    p.grad[...] = prng.standard_normal(p.grad.shape)  # accumulates onto grads
                base = [p.grad.copy() for p in lstm.parameters()]
                y = lstm.forward(emb.forward(ids))
                assert lstm._embedded is not None or 2 * v > n * t
                dx = lstm.backward(dy)
                emb.backward(dx)
                out[threads, inside] = [y, dx, lstm.dh0, lstm.dc0, emb.weight.grad.copy()] + [
                    p.grad - b for p, b in zip(lstm.parameters(), base)]
    finally:
        L.LSTM.table_grads_in_region = old
        fnn.set_num_threads(old_threads)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for inside in (False, True):  # the same bits for any thread count, where promised
        for a, b in zip(out[1, inside], out[2, inside]):
            assert_same_across_threads(a, b, dtype)
    for a, b in zip(out[1, False], out[1, True]):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
    # and the NumPy reference path (contract kernels)
    fnn.set_num_threads(1)
    fnn.seed(0)
    emb = L.Embedding(v, f).astype(dtype)
    lstm = L.LSTM(f, h).astype(dtype)
    old_fused = R._FUSED_CALLS
    R._FUSED_CALLS = False
    try:
        for p in lstm.parameters():
            p.grad[...] = 0
        lstm.forward(emb.forward(ids))
        lstm.backward(dy)
    finally:
        R._FUSED_CALLS = old_fused
        fnn.set_num_threads(old_threads)
    for p, g in zip(lstm.parameters(), out[1, True][5:]):
        np.testing.assert_allclose(g, p.grad, rtol=20 * tol, atol=20 * tol)


def test_lstm_backward_full_table_arguments_checked():
    K = _core  # the whole-layer calls, through the facade
    t, n, h, v, f = 2, 3, 4, 5, 6
    z = np.zeros
    args = [z((4 * h, h), np.float32), z((t + 1, n, h), np.float32), z((t, n, 4 * h), np.float32),
            z((t, n, h), np.float32), z((t, n, 4 * h), np.float32), z((n, h), np.float32),
            z((n, h), np.float32), z((t + 1, n, h), np.float32), z((4 * h, h), np.float32),
            z(4 * h, np.float32), z((4 * h, f), np.float32), z((t, n, f), np.float32)]
    table, ids, per_id = z((v, f), np.float32), np.zeros(t * n, np.int64), z((v, 4 * h), np.float32)
    dw, db = z((4 * h, f), np.float32), z(4 * h, np.float32)
    K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, table=table, ids=ids, per_id=per_id)
    with pytest.raises(ValueError):
        K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, table=table, ids=ids + v, per_id=per_id)
    with pytest.raises(ValueError):
        K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, table=table, ids=ids[:-1], per_id=per_id)
    with pytest.raises(ValueError):
        K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, table=table, ids=ids)
    with pytest.raises(ValueError):
        K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, ids=ids, per_id=per_id)
    with pytest.raises((ValueError, TypeError)):
        K.lstm_backward_full(*args, dw_ih=dw, db_ih=db, table=table, ids=ids,
                             per_id=z((v, 4 * h + 1), np.float32))
