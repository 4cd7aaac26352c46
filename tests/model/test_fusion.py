"""Sequential runs a BatchNorm or Dense followed by a ReLU as one pass (forward_relu; after a
BatchNorm the ReLU's gradient is taken inside the BatchNorm's backward too). The fused pair must
be indistinguishable from the layers run one by one: the same outputs bit for bit, the same
gradients to rounding (the BatchNorm's channel sums are vectorised, and LLVM may split them
differently in the fused loop), in both modes and dtypes. A graph model's Add fuses the ReLU
after it the same way (a residual block's ``relu(f(x) + x)``), bit for bit."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _core
from fastnn import layers as L
from fastnn._core import reference


@pytest.fixture(autouse=True)
def layer_by_layer(monkeypatch):
    """These are tests of Sequential's own layer-by-layer fusion, in both modes; inference mode
    otherwise runs the fused plan of fastnn.inference (its tests: tests/model/test_inference.py)."""
    monkeypatch.setattr(fnn.inference, "ENABLED", False)


def _model(dtype):
    fnn.seed(0)
    model = fnn.Sequential(L.Conv2D(2, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(),
                           L.Flatten(), L.Dense(4 * 5 * 5, 6), L.BatchNorm1D(6), L.ReLU(),
                           L.Dense(6, 5), L.ReLU(), L.Dense(5, 3))
    return model.astype(dtype)


def _one_by_one(model, x, dy, training):
    """Forward and backward through the layers without Sequential (so without fusion)."""
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=training)
    y = h
    for layer in reversed(model.layers):
        dy = layer.backward(dy)
    return y, dy


def _check_fused_pairs(fused, plain, kernel, x, dy, training):
    """``fused`` runs its activations inside the BatchNorms and Dense layers before them (the
    activation ``kernel`` of _core is never called; the fused set is {2, 6}), with the outputs
    of the layers run one by one (``plain``, the same weights) bit for bit, the gradients to
    rounding, and the same running statistics."""
    calls = []
    original = getattr(_core, kernel)
    try:
        setattr(_core, kernel, lambda *a: calls.append(a) or original(*a))
        y = fused.forward(x, training=training)
    finally:
        setattr(_core, kernel, original)
    assert calls == []
    assert fused._fused_relus == {2, 6}    # the BatchNorms' backward takes their ReLU's gradient
    dx = fused.backward(dy)
    y_ref, dx_ref = _one_by_one(plain, x, dy, training)
    assert np.isfinite(y).all() and (dx != 0).any()
    np.testing.assert_array_equal(y, y_ref)
    tol = dict(rtol=1e-5, atol=1e-6) if x.dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, err_msg=name, **tol)
    for key, value in fused.state_dict().items():
        np.testing.assert_array_equal(value, plain.state_dict()[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batchnorm_relu_equals_the_layers_one_by_one(dtype, training):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 2, 5, 5)).astype(dtype)
    dy = rng.standard_normal((7, 3)).astype(dtype)
    # all three ReLUs run inside the layer before them
    _check_fused_pairs(_model(dtype), _model(dtype), "relu_forward", x, dy, training)


def test_only_exact_batchnorm_relu_pairs_fuse():
    class MyReLU(L.ReLU):
        pass

    model = fnn.Sequential(L.BatchNorm1D(3), MyReLU(), L.BatchNorm1D(3), L.Sigmoid(),
                           L.Dense(3, 3), L.ReLU(), L.BatchNorm1D(3))
    model.forward(np.ones((4, 3), np.float32) * np.arange(4, dtype=np.float32)[:, None])
    assert model._fused_relus == frozenset()


def test_gradcheck_through_a_fused_pair():
    fnn.seed(2)
    model = fnn.Sequential(L.Dense(4, 5), L.BatchNorm1D(5), L.ReLU(), L.Dense(5, 2))
    x = np.random.default_rng(2).standard_normal((6, 4))
    for training in (True, False):
        result = fnn.gradcheck(model, x, training=training)
        assert result.ok, result


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2])  # ReLU, LeakyReLU(0.2)
def test_batchnorm_kernels_with_relu_match_the_reference(dtype, slope):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 7)).astype(dtype)
    w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    outs = {}
    for mod in (_core, reference):
        out, mean, invstd = np.empty_like(x), np.empty(3, dtype), np.empty(3, dtype)
        rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
        mod.batchnorm_forward_train(x, w, b, rm, rv, 0.1, 1e-5, out, mean, invstd, relu=True,
                                    negative_slope=slope)
        dy = np.linspace(-1, 1, x.size).reshape(x.shape).astype(dtype)
        dx, dw, db = np.empty_like(x), np.zeros(3, dtype), np.zeros(3, dtype)
        mod.batchnorm_backward(dy, x, w, mean, invstd, dx, dw, db, relu_out=out,
                               negative_slope=slope)
        ev = np.empty_like(x)
        mod.batchnorm_forward_eval(x, w, b, rm, rv, 1e-5, ev, relu=True, negative_slope=slope)
        outs[mod] = (out, dx, dw, db, ev)
    negative = (outs[_core][0] == 0) if slope is None else (outs[_core][0] < 0)
    assert negative.any() and (outs[_core][0] > 0).any()
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for got, want in zip(outs[_core], outs[reference]):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("first", ["dense", "batchnorm"])
def test_fused_relu_propagates_nan_like_relu(first):
    fnn.seed(4)
    head = L.Dense(3, 3) if first == "dense" else L.BatchNorm1D(3)
    model = fnn.Sequential(head, L.ReLU())
    x = np.array([[1.0, -2.0, 0.5], [np.nan, 3.0, -1.0], [0.2, 0.1, 4.0]], np.float32)
    y = model.forward(x, training=False)
    h = head.forward(x, training=False)
    np.testing.assert_array_equal(y, np.where(h <= 0, 0, h))   # NaN stays NaN, as torch.relu
    assert np.isnan(y).any()


def _leaky_model(dtype, slope):
    fnn.seed(4)
    model = fnn.Sequential(L.Conv2D(2, 4, 3, stride=2, padding=1), L.BatchNorm2D(4),
                           L.LeakyReLU(slope), L.Flatten(), L.Dense(4 * 3 * 3, 6),
                           L.BatchNorm1D(6), L.LeakyReLU(slope), L.Dense(6, 3))
    return model.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_fused_batchnorm_leaky_relu_equals_the_layers_one_by_one(dtype, training, slope):
    # the DCGAN discriminator's BatchNorm2D -> LeakyReLU(0.2); slope 0 is still a LeakyReLU
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 2, 5, 5)).astype(dtype)
    dy = rng.standard_normal((7, 3)).astype(dtype)
    _check_fused_pairs(_leaky_model(dtype, slope), _leaky_model(dtype, slope),
                       "leaky_relu_forward", x, dy, training)


def test_a_negative_slope_leaky_relu_is_not_fused():
    # with slope < 0 the output's sign no longer tells where the input was > 0
    model = fnn.Sequential(L.BatchNorm1D(3), L.LeakyReLU(-0.5), L.Dense(3, 3), L.LeakyReLU(0.1))
    model.forward(np.arange(12, dtype=np.float32).reshape(4, 3))
    assert model._fused_relus == frozenset()
    with pytest.raises(ValueError, match="negative_slope must be finite and >= 0"):
        x = np.ones((2, 3, 4), np.float32)
        _core.batchnorm_forward_eval(x, None, None, np.zeros(3, np.float32),
                                     np.ones(3, np.float32), 1e-5, np.empty_like(x), relu=True,
                                     negative_slope=-0.5)


def test_gradcheck_through_a_fused_leaky_pair():
    fnn.seed(6)
    model = fnn.Sequential(L.Dense(4, 5), L.BatchNorm1D(5), L.LeakyReLU(0.2), L.Dense(5, 2))
    x = np.random.default_rng(6).standard_normal((6, 4))
    for training in (True, False):
        result = fnn.gradcheck(model, x, training=training)
        assert result.ok, result


def _conv_model(dtype, slope):
    # Conv2D -> ReLU / LeakyReLU pairs on each conv route: im2col (C*K*K = 18), the stride-1
    # implicit GEMM (same-size 3x3) and the strided implicit GEMM (C*K*K = 64)
    fnn.seed(8)
    act = (lambda: L.ReLU()) if slope is None else (lambda: L.LeakyReLU(slope))
    model = fnn.Sequential(L.Conv2D(2, 4, 3, stride=2, padding=1), act(),
                           L.Conv2D(4, 8, 3, padding=1), act(),
                           L.Conv2D(8, 6, 4, stride=2, padding=1), act(),
                           L.Flatten(), L.Dense(6 * 2 * 2, 3))
    return model.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2])
def test_fused_conv_activation_equals_the_layers_one_by_one(dtype, slope):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 2, 9, 9)).astype(dtype)
    dy = rng.standard_normal((5, 3)).astype(dtype)
    fused, plain = _conv_model(dtype, slope), _conv_model(dtype, slope)
    kernel = "relu_forward" if slope is None else "leaky_relu_forward"
    calls = []
    original = getattr(_core, kernel)
    try:
        setattr(_core, kernel, lambda *a: calls.append(a) or original(*a))
        y = fused.forward(x)
    finally:
        setattr(_core, kernel, original)
    assert calls == [] and fused._fused_relus == frozenset()  # the backward stays the activation's
    dx = fused.backward(dy)
    y_ref, dx_ref = _one_by_one(plain, x, dy, True)
    np.testing.assert_array_equal(y, y_ref)
    for a, b in zip(fused.layers, plain.layers):
        if type(a) is L.Conv2D:
            np.testing.assert_array_equal(a.x, b.x)  # every conv saw bitwise the same input
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, err_msg=name, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2, 0.0])
@pytest.mark.parametrize("shape", [(3, 2, 9, 9, 5, 3, 2, 1), (3, 8, 10, 10, 20, 3, 1, 1),
                                   (64, 4, 8, 8, 16, 4, 2, 1)])
def test_conv2d_forward_with_activation_matches_the_layers(dtype, slope, shape):
    n, c, h, o, k, s, p = shape[0], shape[1], shape[2], shape[4], shape[5], shape[6], shape[7]
    rng = np.random.default_rng(10)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w, b = rng.standard_normal((o, c, k, k)).astype(dtype), rng.standard_normal(o).astype(dtype)
    oh = (h + 2 * p - k) // s + 1
    plain, fused = np.empty((n, o, oh, oh), dtype), np.empty((n, o, oh, oh), dtype)
    _core.conv2d_forward(x, w, b, plain, s, p)
    want = np.empty_like(plain)
    if slope is None:
        _core.relu_forward(plain, want)
    else:
        _core.leaky_relu_forward(plain, slope, want)
    _core.conv2d_forward(x, w, b, fused, s, p, relu=True, negative_slope=slope)
    np.testing.assert_array_equal(fused, want)
    assert (fused > 0).any() and (fused <= 0).any()
    ref = np.empty_like(plain)
    reference.conv2d_forward(x, w, b, ref, s, p, relu=True, negative_slope=slope)
    np.testing.assert_allclose(fused, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)


# --- graph models: a residual sum and the ReLU after it -----------------------------------------
class _PlainReLU(L.ReLU):
    """Not fused (fusion is offered to exact types only): the Add and its ReLU one by one."""


class _PlainLeakyReLU(L.LeakyReLU):
    pass


def _residual(dtype, act, n_inputs):
    """conv-bn and a 1x1 projection (and a third 1x1 path) summed, then ``act``, then a head."""
    fnn.seed(5)
    inp = fnn.Input((2, 5, 5))
    paths = [L.BatchNorm2D(3, name="bn")(L.Conv2D(2, 3, 3, padding=1, name="conv")(inp)),
             L.Conv2D(2, 3, 1, name="proj")(inp)]
    if n_inputs == 3:
        paths.append(L.Conv2D(2, 3, 1, name="third")(inp))
    y = act()(L.Add(name="add")(paths))
    return fnn.Model(inp, L.Dense(75, 2, name="head")(L.Flatten()(y))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2, 0.0])
@pytest.mark.parametrize("n_inputs", [2, 3])
def test_graph_add_relu_equals_the_layers_one_by_one(dtype, slope, n_inputs):
    """Fused, the Add computes relu(x0 + x1 (+ x2)) and the masked gradient in one pass each:
    the output, every gradient and the input gradient bit for bit those of the Add and the
    ReLU (LeakyReLU) run one by one."""
    fused_act = L.ReLU if slope is None else (lambda: L.LeakyReLU(slope))
    plain_act = _PlainReLU if slope is None else (lambda: _PlainLeakyReLU(slope))
    fused, plain = _residual(dtype, fused_act, n_inputs), _residual(dtype, plain_act, n_inputs)
    plain.load_state_dict(fused.state_dict())
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 2, 5, 5)).astype(dtype)
    dy = rng.standard_normal((4, 2)).astype(dtype)
    for training in (True, False):
        results = []
        for model in (fused, plain):
            model.zero_grad()
            y = model._forward_each(x, training)  # the layers' own path, not the inference plan
            dx = model.backward(dy)
            results.append((y, dx, [p.grad.copy() for p in model.parameters()]))
        add = next(s for s in fused._steps if s.runner.name == "add")
        assert fused._fusion(add) is not None and len(fused._folded) == 1
        assert plain._folded == set()
        (y, dx, grads), (y_ref, dx_ref, grads_ref) = results
        assert (dx != 0).any()
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        for g, g_ref in zip(grads, grads_ref):
            np.testing.assert_array_equal(g, g_ref)


def test_add_forward_relu_keeps_nan_and_gives_each_input_its_own_gradient():
    a = np.array([[np.nan, -0.0, 1.0, -2.0, 3.0]], np.float32)
    b = np.array([[1.0, 0.0, -1.0, 1.0, np.inf]], np.float32)
    add = L.Add()
    y = add.forward_relu([a, b])
    np.testing.assert_array_equal(y, L.ReLU().forward(np.add(a, b)))
    dy = np.full_like(a, 2.0)
    da, db = add.backward(dy)
    np.testing.assert_array_equal(da, [[2.0, 0.0, 0.0, 0.0, 2.0]])
    assert da is not db and not np.shares_memory(da, db) and not np.shares_memory(da, dy)
    np.testing.assert_array_equal(db, da)
    add.forward([a, b])  # an unfused forward: the next backward is the sum's alone
    assert all(g is dy or np.array_equal(g, dy) for g in add.backward(dy))
