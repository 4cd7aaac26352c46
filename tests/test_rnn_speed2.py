"""rnn-speed2 paths: the lane-split softmax cross-entropy forward (loss._set_lane_split) against
the NumPy reference and the left-to-right row loop; float32 and float64, 1 and 2 threads, ragged
sizes, non-finite logits and bad labels."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn._core import loss as L
from fastnn._core import reference as ref

from thread_counts import assert_same_across_threads


@pytest.fixture
def restore():
    old_threads = fnn.get_num_threads()
    old = L._set_lane_split(True)
    yield
    L._set_lane_split(old)
    fnn.set_num_threads(old_threads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (7, 17), (1024, 64), (33, 100), (600, 129)])
def test_lane_split_ce_forward_matches_plain_and_reference(restore, dtype, rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    z = (4 * rng.standard_normal((rows, cols))).astype(dtype)
    z[0, -1] += 30  # one dominant logit
    target = rng.integers(0, cols, rows)
    p_ref = np.empty_like(z)
    v_ref = ref.softmax_cross_entropy_forward(z, target, p_ref)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    seen = {}
    for threads in (1, 2):
        fnn.set_num_threads(threads)
        for split in (False, True):
            L._set_lane_split(split)
            p = np.full_like(z, np.nan)
            v = L.softmax_cross_entropy_forward(z, target, p)
            assert isinstance(v, float)
            np.testing.assert_allclose(v, v_ref, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(p, p_ref, rtol=rtol * 10, atol=rtol)
            seen[threads, split] = (v, p)
    # rows are independent and summed in row order: the same bits for any thread count
    for split in (False, True):
        assert seen[1, split][0] == seen[2, split][0]
        np.testing.assert_array_equal(seen[1, split][1], seen[2, split][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_split_ce_forward_non_finite_and_large(restore, dtype):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 37)).astype(dtype)
    target = rng.integers(0, 37, 40)
    z[3, 30] = np.nan
    z[5] += 1e4  # large but finite: the log-sum-exp form keeps it finite
    z[6, 2] = -np.inf
    for threads in (1, 2):
        fnn.set_num_threads(threads)
        p = np.empty_like(z)
        v = L.softmax_cross_entropy_forward(z, target, p)
        assert np.isnan(v)
        assert np.isnan(p[3]).all() or np.isnan(p[3]).any()
        ok = np.ones(40, bool)
        ok[3] = False
        p_ref = np.empty_like(z[ok])
        v_ref = ref.softmax_cross_entropy_forward(z[ok], target[ok], p_ref)
        p2 = np.empty_like(z[ok])
        v2 = L.softmax_cross_entropy_forward(np.ascontiguousarray(z[ok]), target[ok], p2)
        np.testing.assert_allclose(v2, v_ref, rtol=1e-5)
        np.testing.assert_allclose(p2, p_ref, rtol=1e-4, atol=1e-6)
        assert np.isfinite(p2).all() and p2[5 - 0].sum() == pytest.approx(1, rel=1e-5)


def test_lane_split_ce_forward_bad_labels(restore):
    z = np.zeros((8, 5), np.float32)
    target = np.array([0, 1, 2, 5, 3, -1, 4, 0])
    with pytest.raises(ValueError, match="2 of the 8 labels"):
        L.softmax_cross_entropy_forward(z, target, np.empty_like(z))



# ---- the exact check of an Embedding's lookup hint (layers.recurrent._FAST_LOOKUP_CHECK) ------
from fastnn import layers  # noqa: E402
from fastnn._core.recurrent import _lookup_matches  # noqa: E402
from fastnn.layers import recurrent as R  # noqa: E402


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
                emb = layers.Embedding(5, 6).astype(dtype)
                lstm = layers.LSTM(6, 13).astype(dtype)
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
    old_threads, old = fnn.get_num_threads(), layers.LSTM.table_grads_in_region
    out = {}
    try:
        for threads in (1, 2):
            fnn.set_num_threads(threads)
            for inside in (False, True):
                layers.LSTM.table_grads_in_region = inside
                fnn.seed(0)
                emb = layers.Embedding(v, f).astype(dtype)
                lstm = layers.LSTM(f, h).astype(dtype)
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
        layers.LSTM.table_grads_in_region = old
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
    emb = layers.Embedding(v, f).astype(dtype)
    lstm = layers.LSTM(f, h).astype(dtype)
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
    from fastnn._core import _recurrent as K
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
