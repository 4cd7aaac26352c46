"""Graph models (fnn.Input, layers called on symbolic tensors, fnn.Model): forward and backward
through fan-out, merges, shared weights and several inputs/outputs; fit/evaluate/predict with
lists; save/load; layer names and sub-layer attributes; errors that name the layer and shapes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import layers as L

from conftest import scaled_examples
from graph_cases import resnet_block, shared_dense, two_in_two_out


def f64(model):
    return model.astype(np.float64)


# --- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
def test_resnet_block_gradcheck(training):
    fnn.seed(0)
    model = f64(resnet_block())
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6))
    fnn.assert_gradcheck(model, x, training=training)


def test_two_inputs_two_outputs_gradcheck():
    fnn.seed(1)
    model = f64(two_in_two_out())
    r = np.random.default_rng(1)
    result = fnn.assert_gradcheck(model, [r.standard_normal((3, 1, 5, 5)), r.standard_normal((3, 3))])
    assert {t.name for t in result.tensors} >= {"input_0", "input_1", "conv.weight", "reg.bias"}


def test_shared_weights_gradcheck_and_accumulation():
    fnn.seed(2)
    model = f64(shared_dense())
    r = np.random.default_rng(2)
    xa, xb = r.standard_normal((5, 6)), r.standard_normal((5, 6))
    fnn.assert_gradcheck(model, [xa, xb])
    # the shared layer appears once in the state and its gradient is the sum of both calls'
    assert [k for k in model.state_dict() if k.startswith("enc.")] == ["enc.weight", "enc.bias"]
    dy = r.standard_normal((5, 1))
    grads = []
    for xs in ([xa, xb], [xa, np.zeros_like(xb)]):
        model.zero_grad()
        model.forward(xs)
        model.backward(dy)
        grads.append(model.layers[0].weight.grad.copy())
    assert not np.allclose(grads[0], grads[1])


@given(st.sampled_from(["Add", "Multiply", "Concatenate"]), st.integers(1, 3),
       st.integers(2, 3), st.integers(1, 4))
@settings(max_examples=scaled_examples(12), deadline=None)
def test_merge_layers_gradcheck(kind, n_inputs, ndim, width):
    if kind != "Concatenate" and n_inputs < 2:
        n_inputs = 2
    r = np.random.default_rng(n_inputs * 10 + ndim)
    shape = (2, width, 3, 2)[:ndim]
    xs = [r.standard_normal(shape if kind != "Concatenate" else (2, width + k, *shape[2:]))
          for k in range(n_inputs)]
    layer = getattr(L, kind)()
    result = fnn.assert_gradcheck(layer, xs)
    assert [t.name for t in result.tensors] == [f"input_{k}" for k in range(n_inputs)]


def test_fan_out_sums_gradients():
    x_in = fnn.Input(shape=(3,))
    h = L.Identity()(x_in)
    model = fnn.Model(x_in, L.Add()([h, h, L.Identity()(h)]))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(model.forward(x), 3 * x)
    dy = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model.backward(dy), 3 * dy)
    assert dy[1, 2] == 5  # the caller's dy is not modified


class _KeepsItsGradient(L.Identity):
    """Returns 2 * dy as a fresh array (or a view of it) and keeps a reference to it."""

    def __init__(self, view=False):
        super().__init__()
        self.view = view

    def backward(self, dy):
        dx = np.array(2 * dy)
        self.kept = dx.reshape(-1) if self.view else dx
        self.kept_copy = dx.copy()
        return dx


@pytest.mark.parametrize("view", [False, True])
def test_summed_gradients_never_write_over_an_array_someone_holds(view):
    """A tensor read three times sums three gradients; an array a layer (or a view of it)
    still refers to is never summed into in place, the sum is still right."""
    x_in = fnn.Input(shape=(3,))
    h = L.Identity()(x_in)
    keepers = [_KeepsItsGradient(view) for _ in range(2)]
    # backward meets keepers[1]'s array first: summed into a new one, which takes the third
    model = fnn.Model(x_in, L.Add()([L.Identity()(h), keepers[0](h), keepers[1](h)]))
    x = np.ones((2, 3), np.float32)
    dy = np.arange(6, dtype=np.float32).reshape(2, 3)
    model.forward(x)
    np.testing.assert_array_equal(model.backward(dy), 5 * dy)
    for k in keepers:
        np.testing.assert_array_equal(k.kept, k.kept_copy.reshape(k.kept.shape))


# --- the same as Sequential ----------------------------------------------------------------------
def test_chain_model_equals_sequential_bitwise():
    """A chain written as a graph computes exactly what Sequential computes with the same layers
    (the fusion of BatchNorm+ReLU and Dense+ReLU included)."""
    fnn.seed(3)
    seq = fnn.Sequential(L.Conv2D(1, 4, 3), L.BatchNorm2D(4), L.ReLU(), L.Flatten(),
                         L.Dense(4 * 6 * 6, 8), L.ReLU(), L.Dense(8, 2))
    inp = fnn.Input(shape=(1, 8, 8))
    t = inp
    for layer in seq.layers:
        t = layer(t)
    graph = fnn.Model(inp, t)
    x = np.random.default_rng(3).standard_normal((5, 1, 8, 8)).astype(np.float32)
    dy = np.random.default_rng(4).standard_normal((5, 2)).astype(np.float32)
    snapshot = seq.state_dict()
    y_seq = seq.forward(x).copy()
    seq.zero_grad()
    dx_seq = seq.backward(dy).copy()
    g_seq = [p.grad.copy() for p in seq.parameters()]
    seq.load_state_dict(snapshot)
    y_graph = graph.forward(x)
    graph.zero_grad()
    dx_graph = graph.backward(dy)
    np.testing.assert_array_equal(y_graph, y_seq)
    np.testing.assert_array_equal(dx_graph, dx_seq)
    for a, b in zip(g_seq, [p.grad for p in graph.parameters()]):
        np.testing.assert_array_equal(a, b)
    assert graph._folded  # the BatchNorm took its ReLU's backward, as in Sequential


# --- training, saving ------------------------------------------------------------------------------
def test_resnet_block_fit_save_load(tmp_path):
    fnn.seed(4)
    model = resnet_block()
    r = np.random.default_rng(4)
    X = r.standard_normal((96, 2, 6, 6)).astype(np.float32)
    y = (X[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 1, 0, 0] > 1)
    before = model.evaluate(X, y)["loss"]
    history = model.fit(X, y, epochs=6, batch_size=16, verbose=0, metrics=["accuracy"])
    after = model.evaluate(X, y)["loss"]
    assert after < 0.8 * before and len(history.history["accuracy"]) == 6
    path = tmp_path / "block.npz"
    model.save(path)
    loaded = fnn.load(path)
    assert isinstance(loaded, fnn.Model) and [l.name for l in loaded.layers] == \
        [l.name for l in model.layers]
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_two_inputs_two_outputs_fit_evaluate_predict(tmp_path):
    fnn.seed(5)
    model = two_in_two_out()
    r = np.random.default_rng(5)
    img = r.standard_normal((64, 1, 5, 5)).astype(np.float32)
    vec = r.standard_normal((64, 3)).astype(np.float32)
    cls = (vec[:, 0] > 0).astype(np.int64) + 2 * (img.mean(axis=(1, 2, 3)) > 0)
    reg = vec[:, 1:2] ** 2
    losses = ["cross_entropy", "mse"]
    before = model.evaluate([img, vec], [cls, reg], loss=losses, metrics=())["loss"]
    history = model.fit([img, vec], [cls, reg], loss=losses, epochs=8, batch_size=16, verbose=0,
                        optimizer=fnn.optim.Adam(model.parameters(), lr=1e-2),
                        metrics=["accuracy"], validation_data=([img, vec], [cls, reg]))
    after = model.evaluate([img, vec], [cls, reg], loss=losses, metrics=())["loss"]
    assert after < 0.7 * before
    assert {"accuracy_0", "val_loss"} <= set(history.history)
    out_cls, out_reg = model.predict([img, vec], batch_size=24)
    assert out_cls.shape == (64, 4) and out_reg.shape == (64, 1)
    model.save(tmp_path / "two.npz")
    again = fnn.load(tmp_path / "two.npz").predict([img, vec])
    np.testing.assert_array_equal(again[0], out_cls)
    np.testing.assert_array_equal(again[1], out_reg)


def test_shared_weights_fit_and_load(tmp_path):
    fnn.seed(6)
    model = shared_dense()
    r = np.random.default_rng(6)
    a, b = r.standard_normal((80, 6)).astype(np.float32), r.standard_normal((80, 6)).astype(np.float32)
    target = (a.sum(1, keepdims=True) - b.sum(1, keepdims=True)) / 4
    before = model.evaluate([a, b], target, loss="mse", metrics=())["loss"]
    model.fit([a, b], target, loss="mse", epochs=10, batch_size=16, verbose=0,
              optimizer=fnn.optim.Adam(model.parameters(), lr=1e-2))
    assert model.evaluate([a, b], target, loss="mse", metrics=())["loss"] < 0.5 * before
    model.save(tmp_path / "siamese.npz")
    loaded = fnn.load(tmp_path / "siamese.npz")
    np.testing.assert_array_equal(loaded.predict([a, b]), model.predict([a, b]))
    assert len(loaded.parameters()) == len(model.parameters()) == 5


# --- names and sub-layers --------------------------------------------------------------------------
def test_default_names_are_snake_case_with_counters():
    names = [L.Conv2D(1, 1, 1).name, L.Conv2D(1, 1, 1).name, L.BatchNorm2D(2).name, L.LSTM(2, 2).name]
    base = [n.rsplit("_", 1)[0] if n.rsplit("_", 1)[-1].isdigit() else n for n in names]
    assert base == ["conv2d", "conv2d", "batch_norm2d", "lstm"]
    assert names[0] != names[1]
    assert L.Dense(2, 3, name="fc").name == "fc"
    with pytest.raises(ValueError, match="name"):
        L.Dense(2, 3, name="a.b")


def test_user_layer_with_sublayers_owns_their_state():
    class Block(L.Layer):
        def __init__(self):
            super().__init__()
            self.fc = L.Dense(3, 4)
            self.act = L.Tanh()
            self.out = L.Dense(4, 2, bias=False)

        def forward(self, x, training=True):
            return self.out.forward(self.act.forward(self.fc.forward(x, training), training), training)

        def backward(self, dy):
            return self.fc.backward(self.act.backward(self.out.backward(dy)))

    block = Block()
    assert list(block.state_dict()) == ["fc.weight", "fc.bias", "out.weight"]
    assert len(block.parameters()) == 3
    fnn.assert_gradcheck(block.astype(np.float64), np.random.default_rng(0).standard_normal((2, 3)))
    inp = fnn.Input(shape=(3,))
    model = fnn.Model(inp, Block(name="block")(inp))
    assert list(model.state_dict()) == ["block.fc.weight", "block.fc.bias", "block.out.weight"]


# --- errors ----------------------------------------------------------------------------------------
def test_wrong_shape_is_reported_where_the_layer_is_called():
    inp = fnn.Input(shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"Conv2D.*\(None, 3, 8, 8\).*expected input \(N, 1, H, W\)"):
        L.Conv2D(1, 2, 3)(inp)
    with pytest.raises(ValueError, match="Add.*one shape"):
        L.Add()([inp, L.Conv2D(3, 2, 1)(inp)])


def test_model_construction_errors():
    a, b = fnn.Input(shape=(2,)), fnn.Input(shape=(2,))
    y = L.Dense(2, 2, name="same")(L.Dense(2, 2, name="same")(a))
    with pytest.raises(ValueError, match="two layers are named 'same'"):
        fnn.Model(a, y)
    with pytest.raises(ValueError, match="does not reach any output"):
        fnn.Model([a, b], L.Dense(2, 1)(a))
    with pytest.raises(ValueError, match="not among the inputs"):
        fnn.Model(a, L.Add()([a, b]))
    with pytest.raises(TypeError, match="symbolic tensor"):
        fnn.Model(a, np.zeros(2))
    model = fnn.Model([a, b], L.Add()([a, b]))
    with pytest.raises(TypeError, match="2 inputs"):
        model.forward(np.zeros((1, 2), np.float32))
    with pytest.raises(TypeError, match="2 inputs"):
        model.predict(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="different numbers of samples"):
        model.predict([np.zeros((1, 2)), np.zeros((2, 2))])
