"""The numba kernel families (pool, norm, activation, loss, optim) against their NumPy references.

Every kernel is compiled twice (parallel, and a serial twin for small inputs); ``path`` forces one
or the other through the dispatch threshold, so both are checked on the same examples.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _core as K
from fastnn._core import reference as R
from fastnn.testing.ulp import assert_ulp

from conftest import scaled_examples
from thread_counts import forced

DTYPES = (np.float32, np.float64)
dtypes = st.sampled_from(DTYPES)
paths = st.sampled_from(["serial", "parallel"])


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def close(actual, expected, dtype, scale=1.0):
    t = tol(dtype)
    np.testing.assert_allclose(actual, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def data(seed, shape, dtype, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def within_ulp(actual, name, inputs, max_ulp, *, scalars_before=(), out_index=0):
    """float32: ``actual`` (an output of kernel ``name``) within ``max_ulp`` of the reference run
    in float64 on the same inputs, per element (an elementwise function's rule: never a
    tolerance relative to the largest element, which hides wrong small values). float64: as
    ``close``."""
    outs = [np.empty(a.shape, np.float64) for a in (actual if isinstance(actual, list) else [actual])]
    inputs64 = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]
    getattr(R, name)(*inputs64, *scalars_before, *outs)
    got = actual[out_index] if isinstance(actual, list) else actual
    if got.dtype == np.float32:
        assert_ulp(got, outs[out_index], max_ulp, inputs[0], name)
    else:
        close(got, outs[out_index], got.dtype)


def both(name, inputs, outputs, *, scalars_before=(), scalars_after=()):
    """Run kernel ``name`` and its reference on copies of the outputs; return both results."""
    out_k = [o.copy() for o in outputs]
    out_r = [o.copy() for o in outputs]
    rk = getattr(K, name)(*inputs, *scalars_before, *out_k, *scalars_after)
    rr = getattr(R, name)(*inputs, *scalars_before, *out_r, *scalars_after)
    return out_k, out_r, rk, rr


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


@given(shape=shapes, dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_elementwise_activations_match_reference(shape, dtype, path, seed):
    x = data(seed, shape, dtype, scale=4.0)
    x.flat[0] = 0.0  # the kink: relu' is 0 there
    dy = data(seed + 1, shape, dtype)
    with forced(path):
        for name in ("relu", "sigmoid", "tanh"):
            (yk,), _, _, _ = both(f"{name}_forward", [x], [np.empty_like(x)])
            within_ulp(yk, f"{name}_forward", [x], 3)
            first = x if name == "relu" else yk
            (gk,), _, _, _ = both(f"{name}_backward", [first, dy], [np.empty_like(x)])
            within_ulp(gk, f"{name}_backward", [first, dy], 2)
        (yk,), _, _, _ = both("leaky_relu_forward", [x, 0.2], [np.empty_like(x)])
        within_ulp(yk, "leaky_relu_forward", [x], 1, scalars_before=(0.2,))
        (gk,), _, _, _ = both("leaky_relu_backward", [x, dy, 0.2], [np.empty_like(x)])
        within_ulp(gk, "leaky_relu_backward", [x, dy], 1, scalars_before=(0.2,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_leaky_relu_multiplies_in_the_input_dtype(dtype, path):
    # as torch's leaky_relu: the slope rounded to x's dtype, the product formed in it (in float32
    # a float64 product rounded once differs in about one element of ten); the fused leaky ReLUs
    # of Conv2D and BatchNorm follow the same rule (test_fusion checks them against this kernel)
    x = data(7, (4096,), dtype, scale=4.0)
    dy = data(8, (4096,), dtype)
    want_y = np.where(x > 0, x, x * dtype(0.2))
    want_dx = np.where(x > 0, dy, dy * dtype(0.2))
    assert want_y.dtype == want_dx.dtype == dtype
    out, dx = np.empty_like(x), np.empty_like(x)
    with forced(path):
        K.leaky_relu_forward(x, 0.2, out)
        K.leaky_relu_backward(x, dy, 0.2, dx)
    np.testing.assert_array_equal(out, want_y)
    np.testing.assert_array_equal(dx, want_dx)
    conv = np.empty((1, 1, 64, 64), dtype)
    K.conv2d_forward(x.reshape(1, 1, 64, 64), np.ones((1, 1, 1, 1), dtype), None, conv, 1, 0,
                     relu=True, negative_slope=0.2)
    np.testing.assert_array_equal(conv.ravel(), want_y)  # 1x1 conv of weight 1: x itself


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_activation_edge_values(dtype, path):
    x = np.array([-1e4, -1000.0, -30.0, -0.0, 0.0, 30.0, 1000.0, 1e4], dtype)
    out = np.empty_like(x)
    with forced(path):
        K.sigmoid_forward(x, out)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[[0, 1, -2, -1]], np.array([0, 0, 1, 1], dtype))
        np.testing.assert_allclose(out[2], np.exp(-30.0), rtol=1e-5)  # not 1 - 1 = 0
        assert out[3] == out[4] == 0.5
        dx = np.empty_like(x)
        K.relu_backward(x, np.ones_like(x), dx)
        np.testing.assert_array_equal(dx, (x > 0).astype(dtype))  # 0 where x <= 0
        K.tanh_forward(x, out)
        np.testing.assert_array_equal(out[[0, -1]], np.array([-1, 1], dtype))


@given(rows=st.integers(1, 7), cols=st.integers(1, 9), dtype=dtypes, path=paths,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 50.0, 1e4]))
def test_softmax_family_matches_reference(rows, cols, dtype, path, seed, scale):
    x = data(seed, (rows, cols), dtype, scale=scale)
    dy = data(seed + 1, (rows, cols), dtype)
    with forced(path):
        (yk,), (yr,), _, _ = both("softmax_forward", [x], [np.empty_like(x)])
        within_ulp(yk, "softmax_forward", [x], 3)
        np.testing.assert_allclose(yk.sum(1), 1.0, rtol=1e-5)
        (lk,), (lr,), _, _ = both("log_softmax_forward", [x], [np.empty_like(x)])
        assert np.all(np.isfinite(lk))
        within_ulp(lk, "log_softmax_forward", [x], 4)
        (gk,), (gr,), _, _ = both("softmax_backward", [yr.astype(dtype), dy], [np.empty_like(x)])
        close(gk, gr, dtype)


# ---------------------------------------------------------------------------------------------
# pooling and upsampling
# ---------------------------------------------------------------------------------------------

@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (n, c, h, w), (kh, kw), (sh, sw), (ph, pw)


def pooled(shape, k, s, p):
    n, c, h, w = shape
    return (n, c, (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)


@given(cfg=pool_configs(), dtype=dtypes, path=paths, seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_pooling_matches_reference(cfg, dtype, path, seed, ties):
    shape, k, s, p = cfg
    if ties:  # few distinct values: exercises the first-maximum rule
        x = np.random.default_rng(seed).integers(-2, 2, shape).astype(dtype)
    else:
        x = data(seed, shape, dtype)
    oshape = pooled(shape, k, s, p)
    dy = data(seed + 1, oshape, dtype)
    with forced(path):
        (ok, ak), (orr, ar), _, _ = both("maxpool2d_forward", [x, k, s, p],
                                         [np.empty(oshape, dtype), np.empty(oshape, np.int64)])
        np.testing.assert_array_equal(ok, orr)
        np.testing.assert_array_equal(ak, ar)
        (dk,), (dr,), _, _ = both("maxpool2d_backward", [dy, ar], [np.full(shape, 7, dtype)])
        close(dk, dr, dtype)
        (ok,), (orr,), _, _ = both("avgpool2d_forward", [x, k, s, p], [np.empty(oshape, dtype)])
        close(ok, orr, dtype)
        (dk,), (dr,), _, _ = both("avgpool2d_backward", [dy, k, s, p], [np.full(shape, 7, dtype)])
        close(dk, dr, dtype)


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
       scale=st.integers(1, 3), dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_upsample_matches_reference(shape, scale, dtype, path, seed):
    n, c, h, w = shape
    x = data(seed, shape, dtype)
    big = (n, c, h * scale, w * scale)
    dy = data(seed + 1, big, dtype)
    with forced(path):
        (ok,), (orr,), _, _ = both("upsample_nearest2d_forward", [x, scale], [np.empty(big, dtype)])
        np.testing.assert_array_equal(ok, orr)
        (dk,), (dr,), _, _ = both("upsample_nearest2d_backward", [dy, scale], [np.empty(shape, dtype)])
        close(dk, dr, dtype)


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
       dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_avgpool_2x2_fast_path_matches_general_kernel(n, c, h, w, dtype, path, seed):
    """The unrolled 2x2/stride-2 average pool gives the general window loop's bits, forward and
    backward (odd sizes: the last row or column of dx is outside every window, so zero)."""
    from fastnn._core import pool

    x = data(seed, (n, c, h, w), dtype)
    oshape = (n, c, h // 2, w // 2)
    dy = data(seed + 1, oshape, dtype)
    out, dx = np.empty(oshape, dtype), np.full((n, c, h, w), np.nan, dtype)
    with forced(path):
        K.avgpool2d_forward(x, 2, 2, 0, out)
        K.avgpool2d_backward(dy, 2, 2, 0, dx)
    general, general_dx = np.empty(oshape, dtype), np.empty((n, c, h, w), dtype)
    pool._avgpool2d_forward_serial(x.reshape(n * c, h, w), 2, 2, 2, 2, 0, 0,
                                   general.reshape(n * c, h // 2, w // 2))
    pool._avgpool2d_backward_serial(dy.reshape(n * c, h // 2, w // 2), 2, 2, 2, 2, 0, 0,
                                    general_dx.reshape(n * c, h, w))
    np.testing.assert_array_equal(out, general)
    np.testing.assert_array_equal(dx, general_dx)


# ---------------------------------------------------------------------------------------------
# batch normalisation
# ---------------------------------------------------------------------------------------------

bn_shapes = st.one_of(
    st.tuples(st.integers(2, 6), st.integers(1, 4)),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(2, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(2, 4)),
)


def bn_params(seed, c, dtype):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype),
            rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)]


@given(shape=bn_shapes, dtype=dtypes, path=paths, seed=st.integers(0, 2**16),
       offset=st.sampled_from([0.0, 1000.0]), batch_stats=st.booleans())
def test_batchnorm_matches_reference(shape, dtype, path, seed, offset, batch_stats):
    c = shape[1]
    x = data(seed, shape, dtype, scale=2.0, offset=offset)
    weight, bias, running_mean, running_var = bn_params(seed, c, dtype)
    dy = data(seed + 1, shape, dtype)
    with forced(path):
        outs_k = [np.empty_like(x), running_mean.copy(), running_var.copy(), np.empty(c, dtype), np.empty(c, dtype)]
        outs_r = [o.copy() for o in outs_k]
        for mod, o in ((K, outs_k), (R, outs_r)):
            mod.batchnorm_forward_train(x, weight, bias, o[1], o[2], 0.1, 1e-5, o[0], o[3], o[4])
        for a, b in zip(outs_k, outs_r):
            close(a, b, dtype, scale=10.0)
        mean, invstd = outs_k[3], outs_k[4]
        (yk,), (yr,), _, _ = both("batchnorm_forward_eval", [x, weight, bias, running_mean, running_var, 1e-5],
                                  [np.empty_like(x)])
        close(yk, yr, dtype, scale=offset + 1.0)
        grads = [np.empty_like(x), np.full(c, 0.5, dtype), np.full(c, -0.5, dtype)]
        (dxk, dwk, dbk), (dxr, dwr, dbr), _, _ = both(
            "batchnorm_backward", [dy, x, weight, mean, invstd], grads, scalars_after=(batch_stats,))
        close(dxk, dxr, dtype, scale=10.0)
        close(dwk, dwr, dtype, scale=10.0)
        close(dbk, dbr, dtype, scale=10.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [0, 1, 2])
def test_batchnorm_training_kernels_do_not_depend_on_the_channel_blocks(dtype, act):
    """The training kernels sweep channel blocks (one per thread) sample by sample: outputs,
    statistics and gradients are bit for bit the same for 1, 2, 3 or C blocks (each channel's
    sums run over its rows in one order), in the parallel kernel and in its serial twin (the
    two are compiled apart: LLVM may split a float64 sum differently in each; which one runs
    depends on the size alone); also with a second gradient summed into dy (two)."""
    from fastnn._core import norm

    x = data(5, (3, 7, 11), dtype, scale=2.0, offset=3.0)
    dy, r = data(6, x.shape, dtype), data(7, x.shape, dtype)
    w, b, rm, rv = bn_params(5, 7, dtype)
    t = np.dtype(dtype).type
    for fwd, bwd in ((norm._batchnorm_forward_train, norm._batchnorm_backward),
                     (norm._batchnorm_forward_train_serial, norm._batchnorm_backward_serial)):
        for two in (False, True):
            results = []
            for blocks in (1, 2, 3, 7):
                out, mean, invstd, m, v = np.empty_like(x), np.empty(7, dtype), np.empty(7, dtype), rm.copy(), rv.copy()
                fwd(x, w, b, m, v, True, 0.1, 1e-5, out, mean, invstd, act, t(0.2), r, True, blocks)
                dx, dw, db, dres = np.empty_like(x), np.zeros(7, dtype), np.zeros(7, dtype), np.empty_like(x)
                g = dy.copy()
                bwd(g, r, two, x, w, mean, invstd, dx, True, dw, True, db, True, True, out, act,
                    t(0.2), dres, True, blocks)
                results.append((out, mean, invstd, m, v, dx, dw, db, dres, g))
            for got in results[1:]:
                for a, e in zip(got, results[0]):
                    np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3)])
def test_batchnorm_running_statistics_use_unbiased_variance(shape):
    x = data(3, shape, np.float64, scale=3.0, offset=1000.0)
    c = shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    running_mean, running_var = np.full(c, 0.5), np.full(c, 2.0)
    mean, invstd, out = np.empty(c), np.empty(c), np.empty_like(x)
    K.batchnorm_forward_train(x, np.ones(c), np.zeros(c), running_mean, running_var, 0.1, 1e-5,
                              out, mean, invstd)
    np.testing.assert_allclose(mean, x.mean(axes), rtol=1e-12)
    np.testing.assert_allclose(invstd, 1 / np.sqrt(x.var(axes) + 1e-5), rtol=1e-9)
    np.testing.assert_allclose(running_mean, 0.9 * 0.5 + 0.1 * x.mean(axes), rtol=1e-12)
    np.testing.assert_allclose(running_var, 0.9 * 2.0 + 0.1 * x.var(axes, ddof=1), rtol=1e-9)
    # the normalised output has zero mean and unit (biased) variance per channel despite the offset
    np.testing.assert_allclose(out.mean(axes), 0, atol=1e-9)
    np.testing.assert_allclose(out.var(axes), 1, rtol=1e-5)


def numeric_grad(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to every entry of a (changed in place)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        saved = a[i]
        a[i] = saved + eps
        up = f()
        a[i] = saved - eps
        down = f()
        a[i] = saved
        g[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_backward_matches_numeric_gradient(shape, training):
    c = shape[1]
    x = data(11, shape, np.float64, scale=2.0, offset=5.0)
    weight, bias, running_mean, running_var = bn_params(12, c, np.float64)
    probe = data(13, shape, np.float64)  # loss = <probe, y>, so dL/dy = probe

    def forward():
        y = np.empty_like(x)
        if training:
            K.batchnorm_forward_train(x, weight, bias, None, None, 0.1, 1e-5, y, np.empty(c), np.empty(c))
        else:
            K.batchnorm_forward_eval(x, weight, bias, running_mean, running_var, 1e-5, y)
        return float((probe * y).sum())

    if training:
        mean, invstd = np.empty(c), np.empty(c)
        K.batchnorm_forward_train(x, weight, bias, None, None, 0.1, 1e-5, np.empty_like(x), mean, invstd)
    else:
        mean, invstd = running_mean, 1 / np.sqrt(running_var + 1e-5)
    dx, dweight, dbias = np.empty_like(x), np.zeros(c), np.zeros(c)
    K.batchnorm_backward(probe, x, weight, mean, invstd, dx, dweight, dbias, batch_stats=training)
    np.testing.assert_allclose(dx, numeric_grad(forward, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dweight, numeric_grad(forward, weight), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbias, numeric_grad(forward, bias), rtol=1e-6, atol=1e-8)
    # gradients accumulate; None outputs are skipped
    K.batchnorm_backward(probe, x, weight, mean, invstd, None, dweight, None, batch_stats=training)
    np.testing.assert_allclose(dweight, 2 * numeric_grad(forward, weight), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

@given(rows=st.integers(1, 8), cols=st.integers(1, 7), dtype=dtypes, path=paths,
       seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_cross_entropy_matches_reference(rows, cols, dtype, path, seed, scale):
    rng = np.random.default_rng(seed)
    logits = data(seed, (rows, cols), dtype, scale=scale)
    target = rng.integers(0, cols, rows)
    soft = rng.random((rows, cols)).astype(dtype)
    with forced(path):
        (pk,), (pr,), lk, lr = both("softmax_cross_entropy_forward", [logits, target], [np.empty_like(logits)])
        assert np.isfinite(lk)
        np.testing.assert_allclose(lk, lr, rtol=tol(dtype)["rtol"], atol=tol(dtype)["atol"] * scale)
        within_ulp([pk], "softmax_cross_entropy_forward", [logits, target], 3)
        (gk,), (gr,), _, _ = both("softmax_cross_entropy_backward", [pk, target, 0.5], [np.empty_like(pk)])
        assert np.all(np.isfinite(gk))
        within_ulp([gk], "softmax_cross_entropy_backward", [pk, target], 1, scalars_before=(0.5,))
        (pk,), (pr,), lk, lr = both("soft_cross_entropy_forward", [logits, soft], [np.empty_like(logits)])
        np.testing.assert_allclose(lk, lr, rtol=tol(dtype)["rtol"], atol=tol(dtype)["atol"] * scale * cols)
        within_ulp([pk], "soft_cross_entropy_forward", [logits, soft], 3)
        (gk,), (gr,), _, _ = both("soft_cross_entropy_backward", [pk, soft, 2.0], [np.empty_like(pk)])
        close(gk, gr, dtype)


@given(rows=st.integers(1, 8), cols=st.integers(1, 7), dtype=dtypes, path=paths,
       seed=st.integers(0, 2**16), soft=st.booleans())
def test_cross_entropy_row_losses_match_reference_and_sum_to_the_value(rows, cols, dtype, path, seed, soft):
    # the per-row losses behind reduction="none"
    rng = np.random.default_rng(seed)
    logits = data(seed, (rows, cols), dtype, scale=3.0)
    target = rng.random((rows, cols)).astype(dtype) if soft else rng.integers(0, cols, rows)
    name = "soft_cross_entropy_forward" if soft else "softmax_cross_entropy_forward"
    with forced(path):
        row_k, row_r = np.empty(rows), np.empty(rows)
        value = getattr(K, name)(logits, target, np.empty_like(logits), row_k)
        getattr(R, name)(logits, target, np.empty_like(logits), row_r)
    close(row_k, row_r, dtype, scale=cols)
    np.testing.assert_allclose(value, row_k.mean(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# local response normalisation
# ---------------------------------------------------------------------------------------------

@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3)),
       size=st.integers(1, 8), alpha=st.sampled_from([1e-4, 0.3, 2.0]), beta=st.sampled_from([0.75, 0.5, 1.0, 2.0]),
       k=st.sampled_from([1.0, 2.0]), dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_lrn_matches_reference(shape, size, alpha, beta, k, dtype, path, seed):
    x = data(seed, shape, dtype, scale=2.0)
    dy = data(seed + 1, shape, dtype)
    with forced(path):
        (yk, sk), (yr, sr), _, _ = both("lrn_forward", [x, size, alpha, beta, k],
                                        [np.empty_like(x), np.empty_like(x)])
        close(yk, yr, dtype)
        close(sk, sr, dtype)
        (dxk,), (dxr,), _, _ = both("lrn_backward", [x, yk, sk, dy, size, alpha, beta], [np.empty_like(x)])
        close(dxk, dxr, dtype, scale=10.0)


def test_lrn_rejects_bad_shapes_and_hyperparameters():
    x = np.ones((2, 3, 4), np.float32)
    out, scale = np.empty_like(x), np.empty_like(x)
    with pytest.raises(ValueError, match=r"lrn_forward: x must be \(N, C, L, ...\).*\(2, 3\)"):
        K.lrn_forward(np.ones((2, 3), np.float32), 3, 1e-4, 0.75, 1.0, np.empty((2, 3), np.float32),
                      np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="lrn_forward: size must be an int >= 1"):
        K.lrn_forward(x, 0, 1e-4, 0.75, 1.0, out, scale)
    with pytest.raises(ValueError, match=r"lrn_forward: out must have shape \(2, 3, 4\)"):
        K.lrn_forward(x, 3, 1e-4, 0.75, 1.0, np.empty((2, 3, 5), np.float32), scale)
    with pytest.raises(TypeError, match="lrn_backward: dy has dtype float64"):
        K.lrn_backward(x, out, scale, np.ones(x.shape), 3, 1e-4, 0.75, np.empty_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_large_logits_by_hand(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    target = np.array([1, 2])
    probs = np.empty_like(logits)
    loss = K.softmax_cross_entropy_forward(logits, target, probs)
    assert loss == pytest.approx(1e4)  # row 0 costs 2e4, row 1 costs 0
    grad = np.empty_like(logits)
    K.softmax_cross_entropy_backward(probs, target, 1.0, grad)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-7)
    # one-hot soft targets give the same value and gradient
    onehot = np.eye(3, dtype=dtype)[target]
    assert K.soft_cross_entropy_forward(logits, onehot, probs) == pytest.approx(loss)
    K.soft_cross_entropy_backward(probs, onehot, 1.0, grad)
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0], [0, 0, 0]], atol=1e-7)


# ---------------------------------------------------------------------------------------------
# optimizer updates
# ---------------------------------------------------------------------------------------------

def run_optimizer(mod, rule, param, grads, hyper):
    state = [np.zeros_like(param), np.zeros_like(param)]
    for step, g in enumerate(grads, start=1):
        if rule == "sgd":
            mod.sgd_update(param, g, state[0], hyper["lr"], hyper["momentum"], hyper["dampening"],
                           hyper["nesterov"], hyper["weight_decay"], step == 1)
        elif rule == "adagrad":
            mod.adagrad_update(param, g, state[0], hyper["lr"], hyper["lr_decay"], hyper["weight_decay"],
                               1e-10, step)
        elif rule == "rmsprop":
            mod.rmsprop_update(param, g, state[0], hyper["lr"], hyper["alpha"], 1e-8, hyper["weight_decay"])
        else:
            mod.adam_update(param, g, state[0], state[1], hyper["lr"], 0.9, hyper["beta2"], 1e-8,
                            hyper["weight_decay"], step, rule == "adamw")
    return param, state


hypers = st.fixed_dictionaries({
    "lr": st.sampled_from([1e-3, 0.1]), "momentum": st.sampled_from([0.0, 0.9]),
    "dampening": st.sampled_from([0.0, 0.3]), "nesterov": st.booleans(),
    "weight_decay": st.sampled_from([0.0, 0.05]), "lr_decay": st.sampled_from([0.0, 0.1]),
    "alpha": st.sampled_from([0.9, 0.99]), "beta2": st.sampled_from([0.999, 0.9]),
})


@given(rule=st.sampled_from(["sgd", "adagrad", "rmsprop", "adam", "adamw"]), hyper=hypers,
       shape=shapes, dtype=dtypes, path=paths, seed=st.integers(0, 2**16))
def test_optimizer_updates_match_reference_over_steps(rule, hyper, shape, dtype, path, seed):
    if rule == "sgd" and hyper["nesterov"] and (hyper["momentum"] == 0 or hyper["dampening"] != 0):
        hyper = dict(hyper, nesterov=False)  # torch refuses nesterov without momentum / with dampening
    param = data(seed, shape, dtype)
    grads = [data(seed + s, shape, dtype) for s in range(1, 5)]
    with forced(path):
        pk, sk = run_optimizer(K, rule, param.copy(), grads, hyper)
    pr, sr = run_optimizer(R, rule, param.copy(), grads, hyper)
    close(pk, pr, dtype)
    for a, b in zip(sk, sr):
        close(a, b, dtype)


def test_adam_first_step_by_hand():
    # step 1: m/bc1 = g, sqrt(v)/sqrt(bc2) = |g|, so each entry moves by lr * sign(g)
    param = np.array([1.0, -2.0, 3.0])
    grad = np.array([0.5, -4.0, 1e-3])
    m, v = np.zeros(3), np.zeros(3)
    K.adam_update(param, grad, m, v, 0.1, 0.9, 0.999, 0.0, 0.0, 1, False)
    np.testing.assert_allclose(param, [0.9, -1.9, 2.9], rtol=1e-12)
    # AdamW shrinks the parameter before the step; Adam adds wd * p to the gradient
    p_w, p_l2 = np.array([2.0]), np.array([2.0])
    K.adam_update(p_w, np.array([1.0]), np.zeros(1), np.zeros(1), 0.1, 0.9, 0.999, 0.0, 0.5, 1, True)
    np.testing.assert_allclose(p_w, [2.0 * (1 - 0.05) - 0.1], rtol=1e-12)
    K.adam_update(p_l2, np.array([-1.5]), np.zeros(1), np.zeros(1), 0.1, 0.9, 0.999, 0.0, 0.5, 1, False)
    np.testing.assert_allclose(p_l2, [2.0 + 0.1], rtol=1e-12)  # g = -1.5 + 1.0 < 0


def test_sgd_first_step_buffer_is_the_gradient():
    param, grad, buf = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.full(2, 123.0)
    K.sgd_update(param, grad, buf, 0.1, 0.9, 0.5, False, 0.0, True)
    np.testing.assert_array_equal(buf, grad)  # not (1 - dampening) * grad, not 0.9 * 123 + ...
    np.testing.assert_allclose(param, [0.95, 2.1])


# ---------------------------------------------------------------------------------------------
# threads and bad input
# ---------------------------------------------------------------------------------------------

def run_everything():
    x = data(1, (4, 3, 8, 8), np.float32, offset=100.0)
    c = 3
    results = []
    out, arg = np.empty((4, 3, 4, 4), np.float32), np.empty((4, 3, 4, 4), np.int64)
    K.maxpool2d_forward(x, 2, 2, 0, out, arg)
    dx = np.empty_like(x)
    K.maxpool2d_backward(out, arg, dx)
    results += [out, arg, dx]
    y, mean, invstd = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    K.batchnorm_forward_train(x, np.ones(c, np.float32), np.zeros(c, np.float32), rm, rv, 0.1, 1e-5,
                              y, mean, invstd)
    dw, db = np.zeros(c, np.float32), np.zeros(c, np.float32)
    K.batchnorm_backward(x, x, np.ones(c, np.float32), mean, invstd, dx, dw, db)
    results += [y, mean, invstd, rm, rv, dx, dw, db]
    logits = x.reshape(-1, 8)
    probs = np.empty_like(logits)
    loss = K.softmax_cross_entropy_forward(logits, np.arange(len(logits)) % 8, probs)
    results += [np.array(loss), probs]
    p = x.reshape(-1).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step in (1, 2):
        K.adam_update(p, x.reshape(-1), m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, step, True)
    results += [p, m, v]
    return results


def test_thread_count_does_not_change_results():
    saved = fastnn.get_num_threads()
    try:
        with forced("parallel"):
            fastnn.set_num_threads(1)
            one = run_everything()
            fastnn.set_num_threads(2)
            two = run_everything()
    finally:
        fastnn.set_num_threads(saved)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def f32(*shape):
    return np.zeros(shape, np.float32)


BAD_CALLS = [
    ("relu_forward", lambda: K.relu_forward(f32(3), f32(4)), ValueError),
    ("relu_forward", lambda: K.relu_forward(f32(3), np.zeros(3)), TypeError),
    ("relu_forward", lambda: K.relu_forward(np.zeros(3, np.int32), f32(3)), TypeError),
    ("sigmoid_forward", lambda: K.sigmoid_forward(f32(4, 4)[:, ::2], f32(4, 2)), ValueError),
    ("tanh_forward", lambda: K.tanh_forward(f32(3), np.broadcast_to(f32(1), (3,))), ValueError),
    ("softmax_backward", lambda: K.softmax_backward(f32(2, 3), f32(3, 2), f32(2, 3)), ValueError),
    ("maxpool2d_forward", lambda: K.maxpool2d_forward(f32(1, 1, 4, 4), 2, 2, 2, f32(1, 1, 4, 4),
                                                      np.zeros((1, 1, 4, 4), np.int64)), ValueError),
    ("maxpool2d_forward", lambda: K.maxpool2d_forward(f32(1, 1, 4, 4), 2, 2, 0, f32(1, 1, 3, 3),
                                                      np.zeros((1, 1, 3, 3), np.int64)), ValueError),
    ("maxpool2d_forward", lambda: K.maxpool2d_forward(f32(1, 1, 4, 4), 2, 2, 0, f32(1, 1, 2, 2),
                                                      np.zeros((1, 1, 2, 2), np.int32)), TypeError),
    ("maxpool2d_backward", lambda: K.maxpool2d_backward(f32(1, 1, 2, 2), np.full((1, 1, 2, 2), 16),
                                                        f32(1, 1, 4, 4)), ValueError),
    ("avgpool2d_forward", lambda: K.avgpool2d_forward(f32(1, 1, 1, 1), 4, 1, 1, f32(1, 1, 1, 1)), ValueError),
    ("avgpool2d_backward", lambda: K.avgpool2d_backward(f32(1, 1, 3, 3), 2, 2, 0, f32(1, 1, 4, 4)), ValueError),
    ("upsample_nearest2d_forward", lambda: K.upsample_nearest2d_forward(f32(1, 1, 2, 2), 0, f32(1, 1, 2, 2)),
     ValueError),
    ("upsample_nearest2d_backward", lambda: K.upsample_nearest2d_backward(f32(1, 1, 3, 4), 2, f32(1, 1, 2, 2)),
     ValueError),
    ("batchnorm_forward_train", lambda: K.batchnorm_forward_train(
        f32(4, 3), f32(2), f32(3), f32(3), f32(3), 0.1, 1e-5, f32(4, 3), f32(3), f32(3)), ValueError),
    ("batchnorm_forward_train", lambda: K.batchnorm_forward_train(
        f32(1, 3), f32(3), f32(3), f32(3), f32(3), 0.1, 1e-5, f32(1, 3), f32(3), f32(3)), ValueError),
    ("batchnorm_forward_eval", lambda: K.batchnorm_forward_eval(
        f32(4, 3), f32(3), f32(3), np.zeros(3), f32(3), 1e-5, f32(4, 3)), TypeError),
    ("batchnorm_backward", lambda: K.batchnorm_backward(
        f32(4, 3), f32(4, 3), f32(3), f32(3), f32(3), f32(4, 3), f32(4), None), ValueError),
    ("softmax_cross_entropy_forward", lambda: K.softmax_cross_entropy_forward(
        f32(2, 3), np.array([0, 3]), f32(2, 3)), ValueError),
    ("softmax_cross_entropy_forward", lambda: K.softmax_cross_entropy_forward(
        f32(2, 3), np.array([0, -1]), f32(2, 3)), ValueError),
    ("softmax_cross_entropy_forward", lambda: K.softmax_cross_entropy_forward(
        f32(2, 3), np.array([0, 1], np.int32), f32(2, 3)), TypeError),
    ("softmax_cross_entropy_backward", lambda: K.softmax_cross_entropy_backward(
        f32(2, 3), np.array([0, 5]), 1.0, f32(2, 3)), ValueError),
    ("soft_cross_entropy_forward", lambda: K.soft_cross_entropy_forward(f32(2, 3), f32(2, 4), f32(2, 3)),
     ValueError),
    ("sgd_update", lambda: K.sgd_update(f32(3), f32(3), None, 0.1, 0.9, 0, False, 0, True), ValueError),
    ("adam_update", lambda: K.adam_update(f32(3), f32(3), f32(3), f32(4), 1e-3, 0.9, 0.999, 1e-8, 0, 1,
                                          False), ValueError),
    ("adam_update", lambda: K.adam_update(f32(3), f32(3), f32(3), f32(3), 1e-3, 0.9, 0.999, 1e-8, 0, 0,
                                          False), ValueError),
    ("adagrad_update", lambda: K.adagrad_update(f32(3), np.zeros(3), f32(3), 0.1, 0, 0, 1e-10, 1), TypeError),
    ("rmsprop_update", lambda: K.rmsprop_update(f32(3), f32(3), f32(3), "fast", 0.99, 1e-8, 0), TypeError),
]


@pytest.mark.parametrize("kernel, call, error", BAD_CALLS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD_CALLS)])
def test_bad_input_raises_naming_the_kernel(kernel, call, error):
    with pytest.raises(error, match=kernel):
        call()


# --- GELU/SiLU/ELU, layer norm, adaptive pooling: kernels against reference.py ---------------------
@given(st.sampled_from([np.float32, np.float64]), st.integers(1, 5), st.integers(1, 9),
       st.booleans(), st.booleans(), st.integers(0, 2**16))
@settings(max_examples=scaled_examples(20), deadline=None)
def test_layer_norm_kernels_equal_reference(dtype, m, d, affine, offset, seed):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((m, d)) + (1000 if offset else 0)).astype(dtype)
    w = r.standard_normal(d).astype(dtype) if affine else None
    b = r.standard_normal(d).astype(dtype) if affine else None
    dy = r.standard_normal((m, d)).astype(dtype)
    got, want = [], []
    for mod, sink in ((K, got), (R, want)):
        out, mean, inv = np.empty_like(x), np.empty(m), np.empty(m)
        mod.layer_norm_forward(x, w, b, 1e-5, out, mean, inv)
        dx, dw, db = np.empty_like(x), np.zeros(d, dtype), np.zeros(d, dtype)
        mod.layer_norm_backward(x, dy, w, mean, inv, dx, dw, db)
        sink.extend([out, dx, dw, db])
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for g, w_ in zip(got, want):
        np.testing.assert_allclose(g, w_, rtol=tol, atol=tol)


@given(st.sampled_from([np.float32, np.float64]), st.integers(1, 7), st.integers(1, 7),
       st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**16))
@settings(max_examples=scaled_examples(20), deadline=None)
def test_adaptive_avgpool_kernels_equal_reference(dtype, h, w, oh, ow, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((2, 3, h, w)).astype(dtype)
    dy = r.standard_normal((2, 3, oh, ow)).astype(dtype)
    outs = [np.empty((2, 3, oh, ow), dtype) for _ in range(2)]
    dxs = [np.empty_like(x) for _ in range(2)]
    for mod, out, dx in zip((K, R), outs, dxs):
        mod.adaptive_avgpool2d_forward(x, out)
        mod.adaptive_avgpool2d_backward(dy, dx)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(outs[0], outs[1], rtol=tol, atol=tol)
    np.testing.assert_allclose(dxs[0], dxs[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 64, 8, 8), (3, 5, 7, 9), (2, 3, 1, 1)])
def test_global_avgpool_equals_reference_and_threads(dtype, shape):
    """The 1x1-output fast path (a ResNet's global pool) against the reference, on the
    parallel kernel at 1 and 2 threads with the same bits, and the serial twin."""
    r = np.random.default_rng(7)
    x = (r.standard_normal(shape) + 3).astype(dtype)
    dy = r.standard_normal(shape[:2] + (1, 1)).astype(dtype)
    want_out, want_dx = np.empty(shape[:2] + (1, 1), dtype), np.empty_like(x)
    R.adaptive_avgpool2d_forward(x, want_out)
    R.adaptive_avgpool2d_backward(dy, want_dx)
    saved = fastnn.get_num_threads()
    got = []
    try:
        for mode, threads in (("parallel", 1), ("parallel", 2), ("serial", 1)):
            with forced(mode):
                fastnn.set_num_threads(threads)
                out, dx = np.empty_like(want_out), np.full_like(x, np.nan)
                K.adaptive_avgpool2d_forward(x, out)
                K.adaptive_avgpool2d_backward(dy, dx)
                got.append((out, dx))
    finally:
        fastnn.set_num_threads(saved)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for out, dx in got:
        np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, want_dx, rtol=tol, atol=tol)
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


@pytest.mark.parametrize("name, args", [("gelu", ()), ("gelu", ("tanh",)), ("silu", ()), ("elu", (0.5,))])
def test_smooth_activation_kernels_equal_reference(name, args):
    r = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = (4 * r.standard_normal((7, 13))).astype(dtype)
        dy = r.standard_normal(x.shape).astype(dtype)
        res = []
        for mod in (K, R):
            out, dx = np.empty_like(x), np.empty_like(x)
            if name == "elu":
                mod.elu_forward(x, args[0], out)
                mod.elu_backward(x, dy, args[0], dx)
            else:
                getattr(mod, f"{name}_forward")(x, out, *args)
                getattr(mod, f"{name}_backward")(x, dy, dx, *args)
            res.append((out, dx))
        tol = 2e-6 if dtype == np.float32 else 1e-12
        for a, b in zip(*res):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["serial", "parallel"])
@pytest.mark.parametrize("slope", [None, 0.2, 0.0])
def test_add_relu_is_the_sum_then_the_activation_bitwise(dtype, path, slope):
    """add_relu_forward equals np.add then relu_forward (leaky_relu_forward) bit for bit, NaN,
    -0 and inf - inf included; add_relu_backward from the output equals the activation's
    backward from its input, in both outputs."""
    a, b, dy = data(11, (3, 5, 37), dtype, scale=3.0), data(12, (3, 5, 37), dtype), data(13, (3, 5, 37), dtype)
    a.flat[:5] = [np.nan, -0.0, 0.0, np.inf, 1.0]
    b.flat[:5] = [1.0, -0.0, -0.0, -np.inf, -1.0]
    with np.errstate(invalid="ignore"):  # inf - inf
        s = np.add(a, b)
    want, want_dx = np.empty_like(s), np.empty_like(s)
    if slope is None:
        K.relu_forward(s, want)
        K.relu_backward(s, dy, want_dx)
    else:
        K.leaky_relu_forward(s, slope, want)
        K.leaky_relu_backward(s, dy, slope, want_dx)
    out, dx, dx2, in_place = np.empty_like(s), np.empty_like(s), np.empty_like(s), a.copy()
    with forced(path):
        K.add_relu_forward(a, b, out, slope)
        K.add_relu_forward(in_place, b, in_place, slope)   # out may be an input
        K.add_relu_backward(out, dy, dx, dx2, slope)
    for got in (out, in_place):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(dx, want_dx)
    np.testing.assert_array_equal(dx2, want_dx)
    ref, ref_dx = np.empty_like(s), np.empty_like(s)
    R.add_relu_forward(a, b, ref, slope)
    R.add_relu_backward(out, dy, ref_dx, None, slope)
    close(ref, want, dtype)
    close(ref_dx, want_dx, dtype)


def test_add_relu_rejects_mismatched_arrays():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="add_relu_forward: b must have the shape of a"):
        K.add_relu_forward(a, np.ones((3, 2), np.float32), np.empty_like(a))
    with pytest.raises(TypeError, match="add_relu_forward: b has dtype float64"):
        K.add_relu_forward(a, np.ones((2, 3)), np.empty_like(a))
    with pytest.raises(ValueError, match="negative_slope must be finite and >= 0"):
        K.add_relu_forward(a, a, np.empty_like(a), -0.1)
    with pytest.raises(ValueError, match=r"add_relu_backward: dx2 must have shape \(2, 3\)"):
        K.add_relu_backward(a, a, np.empty_like(a), np.empty((2, 4), np.float32))
