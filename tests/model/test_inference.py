"""The inference plan (fastnn.inference) behind predict and forward(training=False): the same
outputs as the layers run one by one, batch norm folded, no caches left on the layers, buffers
reused but never handed out, and folded weights that follow every change of the weights."""
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _core, inference, zoo
from fastnn import layers as L


def _layer_by_layer(model, x):
    if isinstance(model, fnn.Model):  # a graph model (the suite's resnet): its nodes one by one
        return model._forward_each(x, False)
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=False)
    return h


def _randomise_batchnorm(model, seed=0):
    gen = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__.startswith("BatchNorm"):
            c = layer.num_features
            layer.running_mean[...] = gen.normal(0, 0.5, c)
            layer.running_var[...] = gen.uniform(0.5, 2.0, c)
            layer.weight.data[...] = gen.uniform(0.5, 1.5, c)
            layer.bias.data[...] = gen.normal(0, 0.2, c)
    inference.weights_changed()  # written by hand
    return model


def _input(name, shape, n, dtype, seed=0):
    gen = np.random.default_rng(seed)
    if name in ("rnn", "lstm", "transformer"):  # token ids for their Embedding(64, ...)
        return gen.integers(0, 64, (n, *shape))
    return gen.standard_normal((n, *shape)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(zoo.BUILDERS))
def test_plan_equals_the_layers_one_by_one(name, dtype):
    fnn.seed(1)
    model, shape, _ = zoo.build(name)
    model = _randomise_batchnorm(model.astype(dtype))
    x = _input(name, shape, 3, dtype)
    got = model.predict(x)
    want = _layer_by_layer(model, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_allclose(model.forward(x, training=False), want, **tol)


def test_batchnorm_is_folded_and_activations_fused(monkeypatch):
    fnn.seed(2)
    model, shape, _ = zoo.build("vgg-bn")
    _randomise_batchnorm(model)
    assert [k for k in inference.plan_for(model).kinds if "BatchNorm" in k] == []
    calls = []
    for kernel in ("batchnorm_forward_eval", "relu_forward"):
        original = getattr(_core, kernel)
        monkeypatch.setattr(_core, kernel, lambda *a, _o=original, **k: calls.append(a) or _o(*a, **k))
    x = _input("vgg-bn", shape, 2, np.float32)
    y = model.predict(x)
    assert calls == []
    monkeypatch.undo()
    np.testing.assert_allclose(y, _layer_by_layer(model, x), rtol=1e-5, atol=1e-5)


def test_no_caches_and_buffers_reused_but_not_handed_out():
    fnn.seed(3)
    model = fnn.Sequential(L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(),
                           L.MaxPool2D(2), L.Flatten(), L.Dense(16, 5), L.Dropout(0.3),
                           L.Reshape((5, 1)), L.Flatten())
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    y1 = model.forward(x, training=False)
    first_buffer = inference.plan_for(model).steps[0].buf.array
    y1_copy = y1.copy()
    y2 = model.forward(x + 1, training=False)
    assert inference.plan_for(model).steps[0].buf.array is first_buffer   # reused
    np.testing.assert_array_equal(y1, y1_copy)   # the first output was not overwritten
    assert not np.shares_memory(y1, y2)
    for step in inference.plan_for(model).steps:
        buf = getattr(step, "buf", None)
        if buf is not None and buf.array is not None:
            assert not np.shares_memory(y2, buf.array)
    for layer in model.layers:   # nothing cached for a backward pass
        assert getattr(layer, "x", None) is None


def test_train_predict_train_predict_sees_new_weights():
    fnn.seed(4)
    model = fnn.Sequential(L.Conv2D(1, 4, 3, padding=1), L.BatchNorm2D(4), L.ReLU(),
                           L.Flatten(), L.Dense(64, 8), L.BatchNorm1D(8), L.Tanh(),
                           L.Dense(8, 3))
    gen = np.random.default_rng(1)
    X = gen.standard_normal((32, 1, 4, 4)).astype(np.float32)
    y = gen.integers(0, 3, 32)
    opt = fnn.optim.Adam(model.parameters(), lr=1e-2)
    outputs = []
    for _ in range(3):
        model.fit(X, y, optimizer=opt, epochs=1, batch_size=8, verbose=0)
        got = model.predict(X[:5])
        np.testing.assert_allclose(got, _layer_by_layer(model, X[:5]), rtol=1e-5, atol=1e-5)
        outputs.append(got)
    assert not np.allclose(outputs[0], outputs[1]) and not np.allclose(outputs[1], outputs[2])


def test_state_changes_refold():
    fnn.seed(5)
    model = fnn.Sequential(L.Dense(4, 6), L.BatchNorm1D(6), L.ReLU(), L.Dense(6, 2))
    other = fnn.Sequential(L.Dense(4, 6), L.BatchNorm1D(6), L.ReLU(), L.Dense(6, 2))
    _randomise_batchnorm(other, seed=9)
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    before = model.predict(x)
    model.load_state_dict(other.state_dict())                       # load_state_dict
    np.testing.assert_allclose(model.predict(x), other.predict(x), rtol=1e-6)
    assert not np.allclose(before, model.predict(x))
    model.layers[1].running_var[...] *= 4                           # by hand, then told
    inference.weights_changed()
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-5, atol=1e-6)
    fnn.optim.clip_weights(model.parameters(), 0.05)                # WGAN's clipping
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-5, atol=1e-6)
    model.astype(np.float64)                                        # astype
    y = model.predict(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, _layer_by_layer(model, x), rtol=1e-10, atol=1e-12)
    model.forward(x, training=True)                                 # running stats move
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-10, atol=1e-12)


def test_backward_after_inference_forward_replays_the_layers():
    fnn.seed(6)
    model = fnn.Sequential(L.Conv2D(1, 3, 3, padding=1), L.BatchNorm2D(3), L.ReLU(),
                           L.Flatten(), L.Dense(27, 2)).astype(np.float64)
    _randomise_batchnorm(model)
    x = np.random.default_rng(3).standard_normal((2, 1, 3, 3))
    fnn.assert_gradcheck(model, x, training=False)


def test_unfoldable_and_fallback_layers():
    fnn.seed(7)
    # a BatchNorm1D over (N, C, L) after a Dense acting on L: not foldable, run in two passes
    model = fnn.Sequential(L.Dense(4, 5), L.BatchNorm1D(3), L.LeakyReLU(-0.5),
                           L.Residual(fnn.Sequential(L.Dense(5, 5), L.Sigmoid())),
                           L.Softmax(axis=1), L.Softmax(), L.Identity())
    _randomise_batchnorm(model)
    x = np.random.default_rng(4).standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _layer_by_layer(model, x), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"Dense\(in_features=4.*expected input"):
        model.predict(np.zeros((2, 3, 5), np.float32))


def test_other_layers_run_their_own_forward():
    fnn.seed(9)
    model = fnn.Sequential(L.Dense(4, 6), L.GELU(), L.LayerNorm(6), L.Reshape((2, 3)),
                           L.GRU(3, 5, num_layers=2, bidirectional=True), L.SiLU(),
                           L.Dense(10, 2))
    x = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    assert "GELU (own forward)" in inference.plan_for(model).kinds
    np.testing.assert_array_equal(model.predict(x), _layer_by_layer(model, x))


def test_inference_follows_the_switch(monkeypatch):
    fnn.seed(8)
    model, shape, _ = zoo.build("dcgan-g")
    _randomise_batchnorm(model)
    x = _input("dcgan-g", shape, 2, np.float32)
    fused = model.predict(x)
    monkeypatch.setattr(inference, "ENABLED", False)
    plain = model.predict(x)
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [
    lambda: L.Conv2D(4, 8, 4, padding="same"),            # asymmetric pads: the general kernels
    lambda: L.Conv2D(4, 8, 3, padding="same"),            # symmetric "same": the dense kernels
    lambda: L.Conv2D(4, 8, 3, groups=2, dilation=2),
    lambda: L.Conv2D(4, 8, 3, stride=2, padding="valid"),
])
def test_plan_handles_every_convolution_configuration(conv):
    """A batch norm folded into (or a layer run beside) each Conv2D configuration: predict equals
    the layers run one by one in inference mode."""
    fnn.seed(21)
    model = fnn.Sequential(conv(), L.BatchNorm2D(8), L.ReLU())
    x = np.random.default_rng(21).standard_normal((3, 4, 9, 9)).astype(np.float32)
    y = model.forward(x)
    model.fit(x, np.zeros_like(y), loss="mse", epochs=1, verbose=0)
    want = x
    for layer in model.layers:
        want = layer.forward(want, training=False)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)


# --- graph models: fastnn.inference.GraphPlan ------------------------------------------------------
def _randomise_graph(model, seed=0):
    return _randomise_batchnorm(model, seed)  # model.layers: every layer of the graph


def _resnet_graph():
    inp = fnn.Input((2, 6, 6))
    a = L.ReLU()(L.BatchNorm2D(4, name="bn1")(L.Conv2D(2, 4, 3, padding=1, name="c1")(inp)))
    a = L.BatchNorm2D(4, name="bn2")(L.Conv2D(4, 4, 3, padding=1, name="c2")(a))
    skip = L.BatchNorm2D(4, name="bn_proj")(L.Conv2D(2, 4, 1, name="proj")(inp))
    y = L.ReLU()(L.Add()([a, skip]))
    y = L.Dense(8, 3, name="head")(L.Flatten()(L.AdaptiveAvgPool2D((1, 2))(y)))
    return fnn.Model(inp, y), [(2, 6, 6)]


def _two_in_two_out_graph():
    ids, feats = fnn.Input((5,), dtype="int64"), fnn.Input((5, 3))
    e = L.Embedding(7, 3, name="emb")(ids)
    m = L.Multiply()([L.Dense(3, 3, name="d1")(e), L.Tanh()(feats)])
    c = L.Concatenate(axis=2)([m, feats, e])
    h = L.GRU(9, 4, return_sequences=False, name="gru")(c)
    h = L.ReLU()(L.BatchNorm1D(4, name="bn")(L.Dense(4, 4, name="d2")(h)))
    return fnn.Model([ids, feats], [L.Dense(4, 2, name="out")(h), L.Sigmoid()(c)]), [(5,), (5, 3)]


def _shared_layer_graph():
    inp = fnn.Input((3, 5, 5))
    shared = L.Conv2D(3, 3, 3, padding=1, name="shared")
    a = L.ReLU()(L.BatchNorm2D(3, name="bn_a")(shared(inp)))
    b = L.BatchNorm2D(3, name="bn_b")(shared(a))   # the same weights, another batch norm folded in
    y = L.Add()([a, b, inp])
    return fnn.Model(inp, L.Flatten()(L.Dropout(0.5)(y))), [(3, 5, 5)]


GRAPHS = {"resnet": _resnet_graph, "two-in-two-out": _two_in_two_out_graph, "shared": _shared_layer_graph}


def _graph_inputs(shapes, n, dtype, seed):
    gen = np.random.default_rng(seed)
    xs = [gen.integers(0, 7, (n, *s)) if len(s) == 1 and s == (5,) else
          gen.standard_normal((n, *s)).astype(dtype) for s in shapes]
    return xs if len(xs) > 1 else xs[0]


def _as_list(y):
    return y if isinstance(y, list) else [y]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_plan_equals_the_nodes_one_by_one(name, dtype):
    fnn.seed(31)
    model, shapes = GRAPHS[name]()
    model = _randomise_graph(model.astype(dtype))
    x = _graph_inputs(shapes, 3, dtype, 31)
    want = _as_list(model._forward_each(x, False))   # the path before the plan
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for got in (_as_list(model.predict(x)), _as_list(model.forward(x, training=False))):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_allclose(g, w, **tol)
    kinds = [k for chain in inference.graph_plan_for(model).kinds for k in chain]
    assert not [k for k in kinds if k.startswith("BatchNorm")]   # every batch norm folded
    assert ("Add+relu" in kinds) == (name == "resnet")   # the residual sum takes its ReLU


@pytest.mark.parametrize("slope", [0.1, 0.0, -0.1])
def test_graph_plan_fuses_an_add_and_its_leaky_relu(slope):
    """A three-input Add followed by a LeakyReLU of slope >= 0 runs as one step (a negative
    slope stays a step of its own); the output is bitwise the layers' one by one."""
    fnn.seed(34)
    inp = fnn.Input((3, 4, 4))
    a, b = L.Conv2D(3, 3, 3, padding=1, name="a")(inp), L.Conv2D(3, 3, 1, name="b")(inp)
    y = L.LeakyReLU(slope)(L.Add()([a, b, inp]))
    model = fnn.Model(inp, L.Flatten()(L.AvgPool2D(2)(y)))
    x = _graph_inputs([(3, 4, 4)], 3, np.float32, 34)
    kinds = [k for chain in inference.graph_plan_for(model).kinds for k in chain]
    assert ("Add+leaky_relu" in kinds) == (slope >= 0) and ("LeakyReLU" in kinds) == (slope < 0)
    np.testing.assert_array_equal(model.predict(x), model._forward_each(x, False))


def test_graph_plan_reuses_buffers_and_hands_out_fresh_outputs():
    fnn.seed(32)
    model, shapes = _resnet_graph()
    _randomise_graph(model)
    x = _graph_inputs(shapes, 2, np.float32, 32)
    for layer in model.layers:   # the shape probes of the graph's construction cached inputs
        for attr in ("x", "xs"):
            if getattr(layer, attr, None) is not None:
                setattr(layer, attr, None)
    y1 = model.forward(x, training=False)
    plan = inference.graph_plan_for(model)
    buffers = [step.buf.array for chain in plan.chains for step in chain.plan.steps
               if getattr(step, "buf", None) is not None]
    y1_copy = y1.copy()
    y2 = model.forward(x + 1, training=False)
    assert inference.graph_plan_for(model) is plan
    now = [step.buf.array for chain in plan.chains for step in chain.plan.steps
           if getattr(step, "buf", None) is not None]
    assert all(a is b for a, b in zip(buffers, now)) and any(a is not None for a in now)  # reused
    np.testing.assert_array_equal(y1, y1_copy)
    assert not np.shares_memory(y1, y2)
    assert not any(b is not None and np.shares_memory(y2, b) for b in now)
    for layer in model.layers:   # nothing kept for a backward pass
        assert getattr(layer, "x", None) is None and getattr(layer, "xs", None) is None


def test_graph_plan_does_not_write_over_a_tensor_read_twice():
    """The shared graph's first ReLU output feeds the shared conv's second call and the Add:
    the chain after it must not take it as scratch space."""
    fnn.seed(33)
    model, shapes = _shared_layer_graph()
    _randomise_graph(model)
    x = _graph_inputs(shapes, 2, np.float32, 33)
    x_copy = x.copy()
    np.testing.assert_allclose(model.predict(x), model._forward_each(x, False), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, x_copy)   # the input, read by the conv and the Add


def test_graph_plan_follows_training_and_replays_for_backward():
    fnn.seed(34)
    model, shapes = _resnet_graph()
    gen = np.random.default_rng(34)
    X = gen.standard_normal((16, *shapes[0])).astype(np.float32)
    y = gen.integers(0, 3, 16)
    opt = fnn.optim.Adam(model.parameters(), lr=1e-2)
    before = model.predict(X[:4])
    model.fit(X, y, optimizer=opt, epochs=1, batch_size=8, verbose=0)
    after = model.predict(X[:4])
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, model._forward_each(X[:4], False), rtol=1e-5, atol=1e-5)
    model64 = _randomise_graph(_resnet_graph()[0].astype(np.float64))
    fnn.assert_gradcheck(model64, gen.standard_normal((2, *shapes[0])), training=False)


def test_graph_plan_follows_the_switch(monkeypatch):
    fnn.seed(35)
    model, shapes = _two_in_two_out_graph()
    _randomise_graph(model)
    x = _graph_inputs(shapes, 2, np.float32, 35)
    fused = model.predict(x)
    monkeypatch.setattr(inference, "ENABLED", False)
    for f, p in zip(fused, model.predict(x)):
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5)
