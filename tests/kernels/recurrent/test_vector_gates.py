"""The float32 LSTM gate math as one AVX-512 pass per row (tuning knob rnn_vector_gates): same
results as the auto-vectorised C loops to a few ulps, and as the NumPy reference; bitwise the
same for 1 and 2 threads (where tests/thread_counts.py says); float64 never takes it."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _core
from fastnn import layers as L
from fastnn._core import reference as ref
from fastnn._core.tuning import tuning

from thread_counts import assert_same_across_threads


@pytest.fixture
def restore():
    old_threads = fnn.get_num_threads()
    with tuning(rnn_vector_gates=True):
        yield
    fnn.set_num_threads(old_threads)


def _run(layer, x, dy):
    for p in layer.parameters():
        p.grad[...] = 0
    y = layer.forward(x)
    dx = layer.backward(dy)
    return [y, dx, layer.dh0, layer.dc0] + [p.grad.copy() for p in layer.parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,t,f,h", [(1, 1, 1, 1), (13, 5, 7, 37), (17, 3, 4, 16), (32, 4, 8, 33)])
def test_vector_gates_match_plain_and_reference(restore, dtype, n, t, f, h):
    rng = np.random.default_rng(n * 100 + h)
    x = (3 * rng.standard_normal((n, t, f))).astype(dtype)
    dy = rng.standard_normal((n, t, h)).astype(dtype)
    results = {}
    for threads in (1, 2):
        fnn.set_num_threads(threads)
        for vec in (False, True):
            with tuning(rnn_vector_gates=vec):
                fnn.seed(0)
                layer = L.LSTM(f, h).astype(dtype)
                results[threads, vec] = _run(layer, x, dy)
    for vec in (False, True):  # the row split changes no bit where fastnn promises it
        for a, b in zip(results[1, vec], results[2, vec]):
            assert_same_across_threads(a, b, dtype)
    if dtype == np.float64:  # float64 never takes the vector path
        for a, b in zip(results[1, False], results[1, True]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(results[1, False], results[1, True]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_vector_gates_kernel_matches_reference(restore, threads):
    fnn.set_num_threads(threads)
    rng = np.random.default_rng(1)
    t, n, h = 6, 11, 21
    xw = (2 * rng.standard_normal((t, n, 4 * h))).astype(np.float32)
    w_hh = (rng.standard_normal((4 * h, h)) / np.sqrt(h)).astype(np.float32)
    b_hh = rng.standard_normal(4 * h).astype(np.float32)
    outs = []
    for impl in (_core, ref):
        hs, cs = np.zeros((t + 1, n, h), np.float32), np.zeros((t + 1, n, h), np.float32)
        hs[0] = rng.standard_normal((n, h))
        cs[0] = rng.standard_normal((n, h))
        if outs:
            hs[0], cs[0] = outs[0][0][0], outs[0][1][0]
        gates = np.empty((t, n, 4 * h), np.float32)
        impl.lstm_forward(xw, w_hh, b_hh, hs, cs, gates)
        dhs = np.random.default_rng(2).standard_normal((t, n, h)).astype(np.float32)
        dpre = np.empty((t, n, 4 * h), np.float32)
        dh0, dc0 = np.empty((n, h), np.float32), np.empty((n, h), np.float32)
        impl.lstm_backward(w_hh, cs, gates, dhs, dpre, dh0, dc0)
        outs.append((hs, cs, gates, dpre, dh0, dc0))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_vector_gates_saturation_and_nan(restore):
    """Large pre-activations saturate exactly; a NaN input stays NaN (as the C loops)."""
    t, n, h = 2, 3, 17
    xw = np.zeros((t, n, 4 * h), np.float32)
    xw[0, 0] = 1e4
    xw[0, 1] = -1e4
    xw[1, 2, 5] = np.nan
    w_hh = np.zeros((4 * h, h), np.float32)
    b_hh = np.zeros(4 * h, np.float32)
    res = []
    for vec in (False, True):
        hs, cs = np.zeros((t + 1, n, h), np.float32), np.zeros((t + 1, n, h), np.float32)
        gates = np.empty((t, n, 4 * h), np.float32)
        with tuning(rnn_vector_gates=vec):
            _core.lstm_forward(xw, w_hh, b_hh, hs, cs, gates)
        res.append((hs, cs, gates))
    for a, b in zip(*res):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    gates = res[1][2]
    assert np.all(gates[0, 0] == 1.0) and np.all(gates[0, 1, :2 * h] == 0.0)
    assert np.all(gates[0, 1, 2 * h:3 * h] == -1.0)
    assert np.isnan(gates[1, 2, 5])
