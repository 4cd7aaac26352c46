"""The softmax cross-entropy forward with integer labels (compiled, fastnn._core.basic) against the
NumPy reference; float32 and float64, 1 and 2 threads, its serial and parallel loops, ragged
sizes, non-finite logits and bad labels."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn._core import basic as L
from fastnn._core import reference as ref
from fastnn._core import threads as core_threads


@pytest.fixture
def restore():
    old_threads = fnn.get_num_threads()
    old = core_threads.PARALLEL_MIN_WORK
    yield
    core_threads.PARALLEL_MIN_WORK = old
    fnn.set_num_threads(old_threads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (7, 17), (1024, 64), (33, 100), (600, 129)])
def test_ce_forward_matches_reference_serial_and_parallel(restore, dtype, rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    z = (4 * rng.standard_normal((rows, cols))).astype(dtype)
    z[0, -1] += 30  # one dominant logit
    target = rng.integers(0, cols, rows)
    p_ref = np.empty_like(z)
    v_ref = ref.softmax_cross_entropy_forward(z, target, p_ref)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    seen = {}
    for n in (1, 2):
        fnn.set_num_threads(n)
        for parallel in (False, True):
            core_threads.PARALLEL_MIN_WORK = 0 if parallel else 1 << 62
            p = np.full_like(z, np.nan)
            v = L.softmax_cross_entropy_forward(z, target, p)
            assert isinstance(v, float)
            np.testing.assert_allclose(v, v_ref, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(p, p_ref, rtol=rtol * 10, atol=rtol)
            seen[n, parallel] = (v, p)
    # rows are independent and summed in row order: the same bits for any thread count and loop
    for key, (v, p) in seen.items():
        assert v == seen[1, False][0], key
        np.testing.assert_array_equal(p, seen[1, False][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ce_forward_non_finite_and_large(restore, dtype):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((40, 37)).astype(dtype)
    target = rng.integers(0, 37, 40)
    z[3, 30] = np.nan
    z[5] += 1e4  # large but finite: the log-sum-exp form keeps it finite
    z[6, 2] = -np.inf
    for n in (1, 2):
        fnn.set_num_threads(n)
        p = np.empty_like(z)
        v = L.softmax_cross_entropy_forward(z, target, p)
        assert np.isnan(v)
        assert np.isnan(p[3]).all()
        ok = np.ones(40, bool)
        ok[3] = False
        p_ref = np.empty_like(z[ok])
        v_ref = ref.softmax_cross_entropy_forward(z[ok], target[ok], p_ref)
        p2 = np.empty_like(z[ok])
        v2 = L.softmax_cross_entropy_forward(np.ascontiguousarray(z[ok]), target[ok], p2)
        np.testing.assert_allclose(v2, v_ref, rtol=1e-5)
        np.testing.assert_allclose(p2, p_ref, rtol=1e-4, atol=1e-6)
        assert np.isfinite(p2).all() and p2[5 - 0].sum() == pytest.approx(1, rel=1e-5)


def test_ce_forward_bad_labels(restore):
    z = np.zeros((8, 5), np.float32)
    target = np.array([0, 1, 2, 5, 3, -1, 4, 0])
    with pytest.raises(ValueError, match="2 of the 8 labels"):
        L.softmax_cross_entropy_forward(z, target, np.empty_like(z))
