"""Sequential runs a BatchNorm or Dense followed by a ReLU as one pass (forward_relu; after a
BatchNorm the ReLU's gradient is taken inside the BatchNorm's backward too). The fused pair must
be indistinguishable from the layers run one by one: the same outputs bit for bit, the same
gradients to rounding (the BatchNorm's channel sums are vectorised, and LLVM may split them
differently in the fused loop), in both modes and dtypes. A graph model's Add fuses the ReLU
after it the same way (a residual block's ``relu(f(x) + x)``), bit for bit, and a batch norm
that alone feeds the Add runs the sum (and that ReLU) in its own passes, forward and backward,
bit for bit."""
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


def _forward_counting_calls(model, x, kernel):
    """``model.forward(x)`` and the calls it made to ``_core.<kernel>`` (an activation's own
    kernel: none when a layer ran the activation in its epilogue)."""
    calls = []
    original = getattr(_core, kernel)
    try:
        setattr(_core, kernel, lambda *a: calls.append(a) or original(*a))
        return model.forward(x), calls
    finally:
        setattr(_core, kernel, original)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2])
def test_fused_conv_activation_equals_the_layers_one_by_one(dtype, slope):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 2, 9, 9)).astype(dtype)
    dy = rng.standard_normal((5, 3)).astype(dtype)
    fused, plain = _conv_model(dtype, slope), _conv_model(dtype, slope)
    kernel = "relu_forward" if slope is None else "leaky_relu_forward"
    y, calls = _forward_counting_calls(fused, x, kernel)
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
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("fused_forward", [True, False])
def test_a_conv_takes_the_backward_of_the_activation_before_it_bitwise(dtype, slope,
                                                                        fused_forward):
    """Conv2D(16->32, 4x4 stride 2) after a (leaky) ReLU runs the activation's backward in its dx
    pass (float32: in winograd_s2_dx's stores at AVX2 and AVX-512; else after the route),
    whether the activation ran in the conv before it or on its own: the gradients of the
    layers one by one, bit for bit."""
    def build():
        fnn.seed(12)
        act = L.ReLU() if slope is None else L.LeakyReLU(slope)
        # a dilated conv does not run the activation in its pass: the activation saves its input
        first = (L.Conv2D(3, 16, 3, padding=1) if fused_forward
                 else L.Conv2D(3, 16, 3, padding=2, dilation=2))
        return fnn.Sequential(first, act, L.Conv2D(16, 32, 4, stride=2, padding=1), L.Flatten(),
                              L.Dense(32 * 4 * 4, 2)).astype(dtype)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 3, 9, 9)).astype(dtype)
    dy = rng.standard_normal((4, 2)).astype(dtype)
    fused, plain = build(), build()
    y = fused.forward(x)
    act = fused.layers[1]
    act.backward = lambda *a: pytest.fail("the activation's own backward ran")
    dx = fused.backward(dy)
    y_ref, dx_ref = _one_by_one(plain, x, dy, True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    assert (fused.layers[0].weight.grad != 0).any()


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


class _PlainAdd(L.Add):
    """Not run by the batch norm before it (exact types only), nor with its ReLU: one by one."""

    def activation_fusion(self, following):
        return None


def _residual(dtype, act, n_inputs, bn_last=True, add=L.Add):
    """conv-bn and a 1x1 projection (and a third 1x1 path) summed, then ``act`` (None: no
    activation), then a head; ``bn_last``: the batch norm is the last input computed (it then
    runs the Add in its pass)."""
    fnn.seed(5)
    inp = fnn.Input((2, 5, 5))
    paths = [L.BatchNorm2D(3, name="bn")(L.Conv2D(2, 3, 3, padding=1, name="conv")(inp)),
             L.Conv2D(2, 3, 1, name="proj")(inp)]
    if n_inputs == 3:
        paths.append(L.Conv2D(2, 3, 1, name="third")(inp))
    y = add(name="add")(paths[::-1] if bn_last else paths)
    y = y if act is None else act()(y)
    return fnn.Model(inp, L.Dense(75, 2, name="head")(L.Flatten()(y))).astype(dtype)


def _spy_forward_add(model, calls):
    bn = next(layer for layer in model.layers if layer.name == "bn")
    forward_add = bn.forward_add
    bn.forward_add = lambda *a, **k: calls.append(1) or forward_add(*a, **k)
    return bn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2, 0.0, "none"])
@pytest.mark.parametrize("n_inputs, bn_last", [(2, False), (2, True), (3, True)])
def test_graph_add_relu_equals_the_layers_one_by_one(dtype, slope, n_inputs, bn_last):
    """Fused, the Add computes relu(x0 + x1 (+ x2)) and the masked gradient in one pass each,
    and a batch norm computed last runs a two-input Add (and its ReLU) in its passes, forward
    and backward: the output, every gradient, the input gradient and the running statistics
    bit for bit those of the batch norm, the Add and the ReLU (LeakyReLU) run one by one."""
    if slope == "none":
        fused_act = plain_act = None
    else:
        fused_act = L.ReLU if slope is None else (lambda: L.LeakyReLU(slope))
        plain_act = _PlainReLU if slope is None else (lambda: _PlainLeakyReLU(slope))
    fused = _residual(dtype, fused_act, n_inputs, bn_last)
    plain = _residual(dtype, plain_act, n_inputs, bn_last, _PlainAdd)
    calls = []
    _spy_forward_add(fused, calls)
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
        assert (fused._fusion(add) is not None) == (fused_act is not None)
        assert len(fused._folded) == (fused_act is not None) and plain._folded == set()
        summed = training and n_inputs == 2 and bn_last
        assert len(calls) == summed and len(fused._summed) == summed and not plain._summed
        calls.clear()
        (y, dx, grads), (y_ref, dx_ref, grads_ref) = results
        assert (dx != 0).any()
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        for g, g_ref in zip(grads, grads_ref):
            np.testing.assert_array_equal(g, g_ref)
        for key, value in fused.state_dict().items():
            np.testing.assert_array_equal(value, plain.state_dict()[key], err_msg=key)


def _bn_used(how):
    """A batch norm summed with a shortcut where the graph forbids running the sum in its pass:
    its output read twice, or a model output; or allows it ("ok")."""
    fnn.seed(7)
    inp = fnn.Input((2, 4, 4))
    skip = L.Conv2D(2, 3, 1, name="proj")(inp)
    h = L.BatchNorm2D(3, name="bn")(L.Conv2D(2, 3, 3, padding=1, name="conv")(inp))
    y = L.ReLU()(L.Add(name="add")([skip, h]))
    if how == "twice":
        y = L.Add()([y, L.Conv2D(3, 3, 1, name="more")(h)])
    outputs = [y, h] if how == "output" else y
    return fnn.Model(inp, outputs)


@pytest.mark.parametrize("how", ["twice", "output", "ok"])
def test_a_batchnorm_runs_the_add_only_when_it_alone_feeds_it(how):
    """The sum runs in the batch norm's pass only when the Add is the batch norm's one reader
    and the batch norm's output is not a model output; the caller's dy is never written."""
    model = _bn_used(how)
    calls = []
    _spy_forward_add(model, calls)
    x = np.random.default_rng(8).standard_normal((3, 2, 4, 4)).astype(np.float32)
    ys = model.forward(x, training=True)
    assert len(calls) == (how == "ok")
    dys = [np.ones_like(y) for y in ys] if how == "output" else np.ones_like(ys)
    kept = [d.copy() for d in dys] if how == "output" else dys.copy()
    model.backward(dys)
    np.testing.assert_array_equal(dys, kept)


def test_a_batchnorm_summed_with_its_shortcut_leaves_held_gradients_alone():
    """The fused backward writes the shortcut's gradient over its dy only when nothing else
    holds that dy: a layer after it that keeps (a view of) the gradient it returned, or the
    caller's dy, keeps its values."""
    fnn.seed(9)
    inp = fnn.Input((2, 4, 4))
    h = L.BatchNorm2D(2, name="bn")(L.Conv2D(2, 2, 3, padding=1, name="conv")(inp))
    keeper = _KeepsDy()
    model = fnn.Model(inp, keeper(L.ReLU()(L.Add()([inp, h]))))
    calls = []
    _spy_forward_add(model, calls)
    x = np.random.default_rng(10).standard_normal((3, 2, 4, 4)).astype(np.float32)
    model.forward(x, training=True)
    assert calls
    dy = np.random.default_rng(11).standard_normal((3, 2, 4, 4)).astype(np.float32)
    model.backward(dy)
    np.testing.assert_array_equal(keeper.kept, keeper.kept_copy)


class _KeepsDy(L.Identity):
    """Returns a fresh copy of dy and keeps a view of it."""

    def backward(self, dy):
        dx = np.array(dy)
        self.kept, self.kept_copy = dx.reshape(-1), dx.reshape(-1).copy()
        return dx


def test_gradcheck_through_a_batchnorm_summed_with_its_shortcut():
    """float64 gradients of a residual graph whose batch norm runs the Add and its ReLU."""
    model = _residual(np.float64, L.ReLU, 2, bn_last=True)
    x = np.random.default_rng(9).standard_normal((4, 2, 5, 5))
    calls = []
    bn = _spy_forward_add(model, calls)
    model.forward(x, training=True)
    assert calls  # the fused path is the one checked
    del bn.forward_add
    fnn.assert_gradcheck(model, x, training=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2, "none"])
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_batchnorm_kernels_with_a_residual_are_the_separate_passes_bitwise(dtype, slope, path):
    """batchnorm_forward_train(residual=r): the output plus r, then the activation, bit for bit
    as the batch norm, np.add and the activation kernel one after another; batchnorm_backward
    (dresidual=) the activation's backward then the batch norm's, bit for bit, dresidual over
    dy too; the reference within rounding."""
    from thread_counts import forced

    rng = np.random.default_rng(8)
    x, r, dy = (rng.standard_normal((6, 4, 33)).astype(dtype) for _ in range(3))
    w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    relu = slope != "none"
    neg = slope if relu else None
    results = []
    for kernels, residual in ((_core, None), (_core, r), (reference, r)):
        out, mean, invstd = np.empty_like(x), np.empty(4, dtype), np.empty(4, dtype)
        rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
        dx, dw, db = np.empty_like(x), np.zeros(4, dtype), np.zeros(4, dtype)
        dres = np.empty_like(x)
        with forced(path):
            kernels.batchnorm_forward_train(x, w, b, rm, rv, 0.1, 1e-5, out, mean, invstd,
                                            relu=relu and residual is not None,
                                            negative_slope=neg if residual is not None else None,
                                            residual=residual)
            if residual is None:  # the separate passes
                np.add(out, r, out=out)
                g = dy.copy()
                if relu and neg is None:
                    _core.relu_forward(out.copy(), out)
                    _core.relu_backward(out, dy, g)
                elif relu:
                    _core.leaky_relu_forward(out.copy(), neg, out)
                    _core.leaky_relu_backward(out, dy, neg, g)
                _core.batchnorm_backward(g, x, w, mean, invstd, dx, dw, db)
                dres[...] = g
            else:
                kernels.batchnorm_backward(dy, x, w, mean, invstd, dx, dw, db,
                                           relu_out=out if relu else None, negative_slope=neg,
                                           dresidual=dres)
        results.append((out, mean, invstd, rm, rv, dx, dw, db, dres))
    want, got, ref = results
    assert not relu or (got[0] == 0).any() or (got[0] < 0).any()
    for a, e in zip(got, want):
        np.testing.assert_array_equal(a, e)
    over = dy.copy()  # dresidual may be dy itself
    dx2 = np.empty_like(x)
    with forced(path):
        _core.batchnorm_backward(over, x, w, got[1], got[2], dx2, None, None,
                                 relu_out=got[0] if relu else None, negative_slope=neg,
                                 dresidual=over)
    np.testing.assert_array_equal(over, want[8])
    np.testing.assert_array_equal(dx2, want[5])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for a, e in zip(ref, want):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [None, 0.2, "none"])
@pytest.mark.parametrize("batch_stats", [True, False])
@pytest.mark.parametrize("path", ["serial", "parallel"])
def test_batchnorm_backward_sums_two_gradients_as_np_add_first(dtype, slope, batch_stats, path):
    """batchnorm_backward(dy, dy2=): dy overwritten with dy + dy2 and everything else bit for
    bit batchnorm_backward(dy + dy2), with and without the activation, the batch statistics
    and dresidual (also over dy); the reference takes dy2 too."""
    from thread_counts import forced

    rng = np.random.default_rng(12)
    x, dy, dy2 = (rng.standard_normal((5, 3, 29)).astype(dtype) for _ in range(3))
    w = rng.standard_normal(3).astype(dtype)
    mean, invstd = x.mean((0, 2)).astype(dtype), (1 / x.std((0, 2))).astype(dtype)
    act_out = np.maximum(rng.standard_normal(x.shape), 0).astype(dtype) if slope != "none" else None
    neg = slope if slope != "none" else None
    for with_dres, over in ((False, False), (True, False), (True, True)):
        results = []
        for kernels, two in ((_core, False), (_core, True), (reference, True)):
            first = dy + dy2 if not two else dy.copy()
            dx, dw, db = np.empty_like(x), np.zeros(3, dtype), np.zeros(3, dtype)
            dres = (first if over else np.empty_like(x)) if with_dres else None
            with forced(path):
                kernels.batchnorm_backward(first, x, w, mean, invstd, dx, dw, db,
                                           batch_stats=batch_stats, relu_out=act_out,
                                           negative_slope=neg, dresidual=dres,
                                           dy2=dy2 if two else None)
            results.append([dx, dw, db, first] + ([dres] if with_dres else []))
        want, got, ref = results
        for a, e in zip(got, want):
            np.testing.assert_array_equal(a, e)
        tol = 1e-4 if dtype == np.float32 else 1e-10
        for a, e in zip(ref, want):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="share no memory"):
        _core.batchnorm_backward(dy, x, w, mean, invstd, dy.copy(), None, None, dy2=dy)


def _two_blocks(dtype):
    """A stem (conv, batch norm, ReLU) and two residual blocks: the stem's and the first
    block's outputs each get two gradients (the next block's conv and its shortcut), which
    their batch norms take (the stem's through its ReLU, the block's in its backward_add)."""
    fnn.seed(13)
    inp = fnn.Input((2, 6, 6))
    h = L.ReLU()(L.BatchNorm2D(3, name="stem_bn")(L.Conv2D(2, 3, 3, padding=1)(inp)))
    for b in range(2):
        r = L.ReLU()(L.BatchNorm2D(3)(L.Conv2D(3, 3, 3, padding=1)(h)))
        r = L.BatchNorm2D(3, name=f"bn{b}")(L.Conv2D(3, 3, 3, padding=1)(r))
        h = L.ReLU()(L.Add()([h, r]))
    return fnn.Model(inp, L.Dense(108, 2)(L.Flatten()(h))).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_graph_hands_two_gradients_to_the_batch_norm_that_sums_them(dtype):
    """A tensor with two gradients goes to the batch norm that takes it as the pair (summed in
    its passes): every gradient, the input's included, bit for bit as with the sum made first;
    a caller's dy and the layers' kept gradients untouched."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 2, 6, 6)).astype(dtype)
    dy = rng.standard_normal((4, 2)).astype(dtype)
    results = []
    for pairs in (True, False):
        model = _two_blocks(dtype)
        seen = []
        for layer in model.layers:
            if isinstance(layer, L.BatchNorm2D):
                if not pairs:
                    layer.sums_two_dy = False
                for meth in ("backward", "backward_add"):
                    orig = getattr(layer, meth)
                    setattr(layer, meth, lambda *a, _o=orig, _n=layer.name, **k:
                            seen.append((_n, k.get("dy2") is not None)) or _o(*a, **k))
        model.zero_grad()
        model.forward(x, training=True)
        held = dy.copy()
        dx = model.backward(held)
        np.testing.assert_array_equal(held, dy)
        results.append([dx] + [p.grad.copy() for p in model.parameters()])
        two = {name for name, got_two in seen if got_two}
        assert two == ({"stem_bn", "bn0"} if pairs else set())
    for a, e in zip(*results):
        np.testing.assert_array_equal(a, e)


def test_gradcheck_through_batch_norms_given_two_gradients():
    model = _two_blocks(np.float64)
    x = np.random.default_rng(15).standard_normal((3, 2, 6, 6))
    fnn.assert_gradcheck(model, x, training=True)


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


# --- Dense: Sigmoid / Tanh in the epilogue, a ReLU's backward in the dx pass ---------------------
def _dense_model(dtype, act):
    # Dense -> act fused forward; the ReLU after the Flatten (on its own forward) and the one
    # fused into Dense 5 both have their backward run by the Dense after them
    fnn.seed(14)
    return fnn.Sequential(L.Dense(6, 9), act(), L.Dense(9, 8), L.Flatten(), L.ReLU(),
                          L.Dense(8, 7), L.ReLU(), L.Dense(7, 5), act()).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", [L.Sigmoid, L.Tanh])
def test_dense_runs_sigmoid_tanh_and_a_relus_backward_bitwise(dtype, act):
    """A Dense runs a following Sigmoid / Tanh in its epilogue (the activation's own kernel is not
    called; its backward runs on the fused output) and the backward of the ReLU before it in its
    dx pass (the ReLU's own backward is not called): the output, dx and every gradient bit for
    bit those of the layers one by one."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((11, 6)).astype(dtype) * 3
    dy = rng.standard_normal((11, 5)).astype(dtype)
    fused, plain = _dense_model(dtype, act), _dense_model(dtype, act)
    kernel = "sigmoid_forward" if act is L.Sigmoid else "tanh_forward"
    y, calls = _forward_counting_calls(fused, x, kernel)
    fuses = kernel[:-len("_forward")] in _core.dense_epilogue_activations()  # not at baseline
    assert (calls == []) == fuses and fused._fused_relus == frozenset()
    for i in (4, 6):
        fused.layers[i].backward = lambda *a: pytest.fail("the ReLU's own backward ran")
    dx = fused.backward(dy)
    y_ref, dx_ref = _one_by_one(plain, x, dy, True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    assert (dx != 0).any() and (fused.layers[5].x == 0).any() and (fused.layers[7].x == 0).any()
    for (name, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_gradcheck_through_dense_sigmoid_and_relu_fusions():
    fnn.seed(16)
    model = fnn.Sequential(L.Dense(4, 5), L.ReLU(), L.Dense(5, 3), L.Sigmoid())
    x = np.random.default_rng(16).standard_normal((6, 4))
    result = fnn.gradcheck(model, x)
    assert result.ok, result
