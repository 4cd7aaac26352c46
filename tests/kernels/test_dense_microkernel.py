"""float32 dense_forward / dense_backward / gemm on the GEMM microkernel (kernels/microkernel.h, AVX-512 or AVX2)
against the NumPy reference: ragged and tiny shapes, K past one 256-deep panel, every
activation, bias None, 1 and 2 threads; and the microkernel route against the sgemm route."""
import numpy as np
import pytest

import fastnn
from fastnn import _core
from fastnn._core import _blas, reference
from fastnn._core.tuning import get as tuning_get
from fastnn._core.tuning import tuning

pytestmark = pytest.mark.skipif(not _blas._dense_microkernel_active(),
                                reason="built without AVX-512: float32 dense GEMMs use sgemm")

TOL = 2e-5

# (M, N, K): tiny, single rows/columns, ragged against the 8-row tile, the 16-lane halves and
# the 32-column panel, K past one 256-deep step (and not a multiple of 16), the MLP/LSTM shapes
SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 9), (1, 300, 17), (300, 1, 40), (3, 5, 2), (8, 32, 16),
          (9, 33, 17), (15, 31, 255), (17, 47, 257), (33, 65, 300), (67, 50, 530), (128, 10, 256),
          (32, 3, 25), (130, 37, 120), (37, 130, 120), (70, 200, 784), (260, 96, 33)]


def assert_close(actual, expected):
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL * scale)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(request.param)
    yield request.param
    fastnn.set_num_threads(before)


def _rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("activation", _core.ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_dense_forward_matches_reference(threads, m, n, k, activation, with_bias):
    rng = np.random.default_rng(m * 1000003 + n * 1009 + k)
    x, w = _rand(rng, (m, k)), _rand(rng, (n, k)) / float(np.sqrt(k))
    b = _rand(rng, (n,)) if with_bias else None
    out = np.full((m, n), np.nan, np.float32)
    expected = reference.dense_forward(x, w, b, out.copy(), activation, 0.2)
    _core.dense_forward(x, w, b, out, activation, 0.2)
    assert_close(out, expected)


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_dense_backward_matches_reference(threads, m, n, k):
    rng = np.random.default_rng(m * 7919 + n * 31 + k)
    x, w, dy = _rand(rng, (m, k)), _rand(rng, (n, k)), _rand(rng, (m, n))
    dx, dw, db = np.full((m, k), np.nan, np.float32), _rand(rng, (n, k)), _rand(rng, (n,))
    exp = (dx.copy(), dw.copy(), db.copy())  # dweight, dbias start non-zero: they accumulate
    reference.dense_backward(x, w, dy, *exp)
    _core.dense_backward(x, w, dy, dx, dw, db)
    for got, want in zip((dx, dw, db), exp):
        assert_close(got, want)
    dw2 = np.zeros((n, k), np.float32)
    _core.dense_backward(x, w, dy, None, dw2, None)  # dx skipped
    assert_close(dw2, dy.T @ x)
    # accumulate=False overwrites: what the gradients held (NaN here) is ignored
    dw3, db3 = np.full((n, k), np.nan, np.float32), np.full((n,), np.nan, np.float32)
    _core.dense_backward(x, w, dy, None, dw3, db3, accumulate=False)
    assert_close(dw3, dy.T @ x)
    assert_close(db3, dy.sum(0))


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("m,n,k", SHAPES[::2])
def test_gemm_matches_reference(threads, m, n, k, trans_a, trans_b, beta):
    rng = np.random.default_rng(m + 3 * n + 11 * k + 2 * trans_a + trans_b)
    a = _rand(rng, (k, m) if trans_a else (m, k))
    b = _rand(rng, (n, k) if trans_b else (k, n))
    out = _rand(rng, (m, n))
    if beta == 0.0:
        out[...] = np.nan  # beta = 0 ignores out
    expected = reference.gemm(a, b, out.copy(), trans_a, trans_b, 1.0, beta)
    _core.gemm(a, b, out, trans_a, trans_b, 1.0, beta)
    assert_close(out, expected)


def test_padded_views_and_strided_leading_dimensions_are_not_needed_but_k_zero_is_handled():
    # k = 0: the product is empty; beta = 0 gives zeros, beta = 1 keeps out
    a, b = np.zeros((4, 0), np.float32), np.zeros((0, 5), np.float32)
    out = np.full((4, 5), np.nan, np.float32)
    _core.gemm(a, b, out)
    assert np.all(out == 0)
    out[...] = 2
    _core.gemm(a, b, out, beta=1.0)
    assert np.all(out == 2)


@pytest.mark.parametrize("m,n,k", [(128, 256, 784), (37, 130, 300), (130, 37, 300), (1024, 512, 32)])
def test_thread_count_does_not_change_the_bits(m, n, k):
    # k is never split and every entry is one fixed-order sum: 1 and 2 threads agree exactly
    rng = np.random.default_rng(5)
    x, w, b, dy = _rand(rng, (m, k)), _rand(rng, (n, k)), _rand(rng, (n,)), _rand(rng, (m, n))
    before = fastnn.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            fastnn.set_num_threads(nt)
            out = _core.dense_forward(x, w, b, np.empty((m, n), np.float32), "relu")
            dx, dw = np.empty((m, k), np.float32), np.zeros((n, k), np.float32)
            _core.dense_backward(x, w, dy, dx, dw, None)
            results.append((out, dx, dw))
    finally:
        fastnn.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,n,k,split", [(128, 256, 784, 300), (400, 600, 600, 257), (130, 37, 300, 16)])
def test_k_in_two_calls_gives_the_same_bits(threads, m, n, k, split, trans_a, trans_b):
    # each entry is one chain over k in order, C carrying it between steps: the first `split`
    # steps, then the rest accumulated onto them, equal the whole product bit for bit (whatever
    # k steps, row and column blocks the kernel cuts the two calls into)
    rng = np.random.default_rng(m + n + k + split)
    a = _rand(rng, (k, m) if trans_a else (m, k))
    b = _rand(rng, (n, k) if trans_b else (k, n))
    whole = _core.gemm(a, b, np.empty((m, n), np.float32), trans_a, trans_b)
    a1, a2 = (a[:split], a[split:]) if trans_a else (a[:, :split], a[:, split:])
    b1, b2 = (b[:, :split], b[:, split:]) if trans_b else (b[:split], b[split:])
    c = _core.gemm(np.ascontiguousarray(a1), np.ascontiguousarray(b1), np.empty((m, n), np.float32),
                   trans_a, trans_b)
    _core.gemm(np.ascontiguousarray(a2), np.ascontiguousarray(b2), c, trans_a, trans_b, beta=1.0)
    np.testing.assert_array_equal(c, whole)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,n,k", [(301, 37, 520), (302, 70, 600), (300, 200, 600), (100, 150, 600),
                                   (600, 40, 130)])
def test_row_and_column_blocks_do_not_change_the_bits(m, n, k, trans_a, trans_b):
    # the blocked GEMM's row blocks, k steps, op(B) packed whole or per k step, one row block
    # or several, all follow the shape; each entry is still one chain over k in order, so the
    # product of some of the rows or columns is those rows or columns of the whole bit for bit
    rng = np.random.default_rng(m + 7 * n + k)
    a = _rand(rng, (k, m) if trans_a else (m, k))
    b = _rand(rng, (n, k) if trans_b else (k, n))
    whole = _core.gemm(a, b, np.empty((m, n), np.float32), trans_a, trans_b)
    assert_close(whole, (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b))
    for s in (m // 2, m - 7):
        part = np.ascontiguousarray(a[:, :s] if trans_a else a[:s])
        np.testing.assert_array_equal(
            _core.gemm(part, b, np.empty((s, n), np.float32), trans_a, trans_b), whole[:s])
    for s in (n // 2 + 1, n - 16):
        part = np.ascontiguousarray(b[:s] if trans_b else b[:, :s])
        np.testing.assert_array_equal(
            _core.gemm(a, part, np.empty((m, s), np.float32), trans_a, trans_b), whole[:, :s])


def test_transposed_pack_equals_the_plain_pack_bit_for_bit():
    # x @ W.T on the transposing pack == x @ (W.T copied) on the plain pack: packing only moves values
    rng = np.random.default_rng(9)
    for m, n, k in [(19, 45, 300), (8, 32, 16), (1, 1, 1), (64, 70, 513)]:
        x, w = _rand(rng, (m, k)), _rand(rng, (n, k))
        nt = _core.gemm(x, w, np.empty((m, n), np.float32), trans_b=True)
        nn = _core.gemm(x, np.ascontiguousarray(w.T), np.empty((m, n), np.float32))
        np.testing.assert_array_equal(nt, nn)
        tt = _core.gemm(np.ascontiguousarray(x.T), w, np.empty((m, n), np.float32), True, True)
        np.testing.assert_array_equal(tt, nn)


def test_hook_switches_to_sgemm_and_back():
    rng = np.random.default_rng(3)
    x, w, b = _rand(rng, (40, 70)), _rand(rng, (50, 70)), _rand(rng, (50,))
    mk = _core.dense_forward(x, w, b, np.empty((40, 50), np.float32), "sigmoid")
    assert tuning_get("dense_microkernel") is True
    with tuning(dense_microkernel=False):
        assert not _blas._dense_microkernel_active()
        blas = _core.dense_forward(x, w, b, np.empty((40, 50), np.float32), "sigmoid")
    assert _blas._dense_microkernel_active()
    assert_close(mk, blas)


@pytest.mark.parametrize("m,n,k", [(19, 100, 300), (8, 65, 16), (1, 70, 1), (67, 513, 260), (256, 784, 128)])
def test_packed_a_transposed_gemm_is_bit_identical_to_the_in_place_read(m, n, k):
    rng = np.random.default_rng(11)
    a, b, c = _rand(rng, (k, m)), _rand(rng, (k, n)), _rand(rng, (m, n))
    with tuning(gemm_tn_pack_a=True):
        packed = _core.gemm(a, b, c.copy(), trans_a=True, beta=1.0)
    with tuning(gemm_tn_pack_a=False):
        in_place = _core.gemm(a, b, c.copy(), trans_a=True, beta=1.0)
    np.testing.assert_array_equal(packed, in_place)
    assert_close(packed, a.T @ b + c)
