"""Sequential: the layer interface, state dicts, checkpoints, fit / evaluate / predict, the
non-finite guard and callbacks."""
import glob
import json
import os

import numpy as np
import pytest

import fastnn as fnn
from fastnn import layers as L
from fastnn import model as model_module
from fastnn.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint
from fastnn.model import NonFiniteError


def small_mlp(in_features=6, hidden=8, classes=3, batchnorm=False):
    mid = [L.BatchNorm1D(hidden)] if batchnorm else []
    return fnn.Sequential(L.Dense(in_features, hidden), *mid, L.ReLU(), L.Dense(hidden, classes))


def blobs(n=96, features=6, classes=3, seed=0):
    r = np.random.default_rng(seed)
    centers = r.normal(scale=3, size=(classes, features))
    y = r.integers(0, classes, size=n)
    return (centers[y] + r.normal(size=(n, features))).astype(np.float32), y


# --- the layer interface and state -----------------------------------------------------------
def test_forward_backward_chain_and_parameters():
    fnn.seed(0)
    m = small_mlp()
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    y = m.forward(x)
    manual = x
    for layer in m.layers:
        manual = layer.forward(manual)
    np.testing.assert_array_equal(y, manual)
    assert [name for name, _ in m.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(m.parameters()) == 4 and len(m) == 3 and m[0] is m.layers[0]
    dx = m.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert any(np.abs(p.grad).sum() > 0 for p in m.parameters())
    m.zero_grad()
    assert all(not p.grad.any() for p in m.parameters())


def test_gradcheck_float64_and_nested_in_residual():
    fnn.seed(0)
    m = fnn.Sequential(L.Dense(4, 5), L.Sigmoid(), L.Dense(5, 4))
    x = np.random.default_rng(2).normal(size=(3, 4))
    fnn.assert_gradcheck(m, x)
    res = L.Residual(fnn.Sequential(L.Dense(4, 4), L.Tanh()))
    fnn.assert_gradcheck(res, x)
    assert [k for k in res.state_dict()] == ["inner.0.weight", "inner.0.bias"]


def test_state_dict_keys_like_torch_sequential():
    m = small_mlp(batchnorm=True)
    assert list(m.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                    "1.running_var", "3.weight", "3.bias"]


def test_load_state_dict_is_strict():
    fnn.seed(0)
    m, other = small_mlp(batchnorm=True), small_mlp(batchnorm=True)
    sd = m.state_dict()
    other.load_state_dict({**sd, "1.num_batches_tracked": np.array(3)})  # torch's counter is ignored
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    with pytest.raises(KeyError, match="0.bias"):
        other.load_state_dict({k: v for k, v in sd.items() if k != "0.bias"})
    with pytest.raises(KeyError, match="9.weight"):
        other.load_state_dict({**sd, "9.weight": np.zeros(2)})
    bad = {**sd, "3.weight": np.zeros((2, 2))}
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"3.weight.*\(2, 2\)"):
        other.load_state_dict(bad)
    for k, v in other.state_dict().items():  # nothing was written
        np.testing.assert_array_equal(v, before[k])


def test_astype_float64():
    m = small_mlp().astype(np.float64)
    assert m.dtype == np.float64 and all(p.data.dtype == np.float64 for p in m.parameters())
    assert m.predict(np.zeros((2, 6), dtype=np.float32)).dtype == np.float64


def test_summary_lists_shapes_and_parameter_counts():
    m = fnn.Sequential(L.Flatten(), L.Dense(64, 10), L.ReLU(), L.Dense(10, 3))
    text = m.summary((1, 8, 8), print_fn=None)
    assert "(None, 64)" in text and "(None, 10)" in text and "(None, 3)" in text
    assert "650" in text and "33" in text and "683" in text
    assert "?" in m.summary(print_fn=None)


def test_constructor_rejects_non_layers():
    with pytest.raises(TypeError, match="item 1"):
        fnn.Sequential(L.ReLU(), lambda x: x)


# --- checkpoints -------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    fnn.seed(0)
    m = small_mlp(batchnorm=True)
    X, y = blobs()
    m.fit(X, y, epochs=1, verbose=0)
    path = tmp_path / "model.npz"
    m.save(path)
    loaded = fnn.load(path)
    assert isinstance(loaded, fnn.Sequential)
    assert [type(layer).__name__ for layer in loaded.layers] == ["Dense", "BatchNorm1D", "ReLU", "Dense"]
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    assert [p for p in os.listdir(tmp_path)] == ["model.npz"]  # no temporary files left


def test_save_load_nested_sequential_in_residual(tmp_path):
    fnn.seed(0)
    m = fnn.Sequential(L.Dense(6, 8), L.Residual(fnn.Sequential(L.Dense(8, 8), L.Tanh())), L.Dense(8, 3))
    m.save(tmp_path / "nested.npz")
    loaded = fnn.load(tmp_path / "nested.npz")
    assert isinstance(loaded[1].inner, fnn.Sequential)
    assert list(loaded.state_dict()) == ["0.weight", "0.bias", "1.inner.0.weight", "1.inner.0.bias",
                                         "2.weight", "2.bias"]
    X = blobs()[0]
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))


def test_save_load_float64_and_optimizer_state_resumes_training(tmp_path):
    X, y = blobs()
    fnn.seed(0)
    m = small_mlp().astype(np.float64)
    opt = fnn.optim.Adam(m.parameters(), lr=1e-2)
    m.fit(X, y, optimizer=opt, epochs=1, verbose=0, shuffle=False)
    m.save(tmp_path / "ckpt.npz", optimizer=opt)
    loaded = fnn.load(tmp_path / "ckpt.npz")
    assert loaded.dtype == np.float64
    opt2 = fnn.optim.Adam(loaded.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded.saved_optimizer_state)
    m.fit(X, y, optimizer=opt, epochs=1, verbose=0, shuffle=False)
    loaded.fit(X, y, optimizer=opt2, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))


def test_save_is_atomic(tmp_path, monkeypatch):
    fnn.seed(0)
    m = small_mlp()
    path = tmp_path / "model.npz"
    m.save(path)
    X = blobs()[0]
    expected = m.predict(X)
    for p in m.parameters():
        p.data += 1.0

    def crash_midway(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(model_module, "_write_npz", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]  # the partial temporary file was removed
    np.testing.assert_array_equal(fnn.load(path).predict(X), expected)


def test_load_of_corrupted_or_truncated_file_names_the_path(tmp_path):
    fnn.seed(0)
    path = tmp_path / "model.npz"
    small_mlp().save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        fnn.load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        fnn.load(garbage)
    flipped = bytearray(data)
    weight_at = data.find(fnn.load(path).state_dict()["0.weight"].tobytes())
    assert weight_at > 0
    flipped[weight_at + 5] ^= 0xFF  # corrupt one byte inside the stored weights (CRC mismatch)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt.npz"):
        fnn.load(corrupt)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(ValueError, match="plain.npz"):
        fnn.load(plain)


# --- training ----------------------------------------------------------------------------------
def test_fit_reaches_95_percent_on_digits():
    fnn.seed(0)
    (X, y), (Xt, yt) = fnn.datasets.load_digits()
    m = fnn.Sequential(L.Flatten(), L.Dense(64, 64), L.ReLU(), L.Dense(64, 10))
    history = m.fit(X, y, optimizer=fnn.optim.Adam(m.parameters(), lr=3e-3), epochs=20,
                    batch_size=32, validation_data=(Xt, yt), metrics=["accuracy"], verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 20 and history.epoch == list(range(20))
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    result = m.evaluate(Xt, yt)
    assert result["accuracy"] >= 0.95
    assert result["loss"] == pytest.approx(history.history["val_loss"][-1])


def test_fit_with_names_mse_and_progress_bar(capsys):
    fnn.seed(0)
    X, _ = blobs()
    target = X[:, :2] * 0.5
    m = fnn.Sequential(L.Dense(6, 16), L.Tanh(), L.Dense(16, 2))
    history = m.fit(X, target, loss="mse", optimizer="adam", epochs=5, verbose=1)
    err = capsys.readouterr().err
    assert "loss=" in err and "samples/s" in err
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_fit_is_reproducible_with_seed():
    X, y = blobs()
    weights = []
    for _ in range(2):
        fnn.seed(123)
        m = fnn.Sequential(L.Dense(6, 8), L.ReLU(), L.Dropout(0.3), L.Dense(8, 3))
        m.fit(X, y, epochs=2, batch_size=16, verbose=0)
        weights.append(m.state_dict())
    for k in weights[0]:
        np.testing.assert_array_equal(weights[0][k], weights[1][k])


def test_predict_batches_equal_one_inference_forward():
    fnn.seed(0)
    m = small_mlp(batchnorm=True)
    X = blobs(n=50)[0]
    np.testing.assert_allclose(m.predict(X, batch_size=7), m.forward(X, training=False), rtol=1e-6)


def test_shape_errors_are_clear():
    m = small_mlp()
    X, y = blobs()
    with pytest.raises(ValueError, match=r"96 samples.*\(95,\)"):
        m.fit(X, y[:-1], verbose=0)
    with pytest.raises(ValueError, match=r"model output has shape \(32, 3\).*\(32, 2\)"):
        m.fit(X, np.zeros((96, 2), dtype=np.int64), verbose=0)
    with pytest.raises(ValueError, match=r"CrossEntropy.*\[0, 3\)"):
        m.evaluate(X, y + 5)
    with pytest.raises(ValueError, match="batch_size"):
        m.fit(X, y, batch_size=0, verbose=0)


class ExplodeAfter(L.Layer):
    """Identity until its ``calls``-th training forward, then multiplies by inf."""

    def __init__(self, calls):
        super().__init__()
        self.calls, self.seen = calls, 0

    def forward(self, x, training=True):
        if training:
            self.seen += 1
        return x * np.inf if training and self.seen >= self.calls else x

    def backward(self, dy):
        return dy


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_guard_names_step_and_layer_and_keeps_last_checkpoint(tmp_path):
    fnn.seed(0)
    X, y = blobs(n=64)
    m = fnn.Sequential(L.Dense(6, 8), L.ReLU(), ExplodeAfter(calls=6), L.Dense(8, 3))
    path = tmp_path / "ckpt.npz"
    # 4 steps per epoch: epoch 1 is clean and checkpointed, epoch 2 goes non-finite on step 2
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 2/4.*layer 2 ExplodeAfter"):
        m.fit(X, y, batch_size=16, epochs=3, verbose=0, checkpoint=path)
    # ExplodeAfter is a test-local layer that fnn.load cannot rebuild, so read the weights directly
    with np.load(path) as f:
        meta = json.loads(str(f["__meta__"][()]))
        assert meta["state_keys"] == ["0.weight", "0.bias", "3.weight", "3.bias"]
        assert all(np.isfinite(f[f"state:{i}"]).all() for i in range(4))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_guard_on_exploding_learning_rate():
    fnn.seed(0)
    X, y = blobs()
    m = small_mlp()
    with pytest.raises(NonFiniteError, match=r"step .*non-finite"):
        m.fit(X * 1e3, y, optimizer=fnn.optim.SGD(m.parameters(), lr=1e6), epochs=5, verbose=0)


def test_clip_norm_bounds_each_update():
    fnn.seed(0)
    X, y = blobs()
    m = small_mlp()
    before = [p.data.copy() for p in m.parameters()]
    m.fit(X, y, optimizer=fnn.optim.SGD(m.parameters(), lr=1.0), epochs=1, batch_size=len(X),
          shuffle=False, verbose=0, clip_norm=0.01)
    step = np.sqrt(sum(((p.data - b) ** 2).sum() for p, b in zip(m.parameters(), before)))
    assert step == pytest.approx(0.01, rel=1e-3)


def test_early_stopping_stops_and_restores_best_weights():
    fnn.seed(0)
    X, y = blobs()
    Xv, yv = blobs(n=60, seed=0)
    m = small_mlp()
    opt = fnn.optim.SGD(m.parameters(), lr=0.05)
    # two good epochs, then a learning rate so large that the validation loss gets worse
    schedule = LearningRateScheduler(lambda epoch, lr: 0.05 if epoch < 2 else 5.0)
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = m.fit(X, y, optimizer=opt, epochs=30, validation_data=(Xv, yv), verbose=0,
                    callbacks=[schedule, stop], nan_guard=False)
    val = history.history["val_loss"]
    assert len(val) < 30 and stop.stopped_epoch == len(val) - 1
    assert history.history["lr"][:3] == [0.05, 0.05, 5.0]
    best = int(np.nanargmin(val))
    assert stop.best_epoch == best
    assert m.evaluate(Xv, yv)["loss"] == pytest.approx(val[best], rel=1e-5)


def test_early_stopping_patience_counts_epochs_without_improvement():
    X, y = blobs()
    m = small_mlp()
    frozen = fnn.optim.SGD(m.parameters(), lr=0.0)
    history = m.fit(X, y, optimizer=frozen, epochs=20, verbose=0, shuffle=False,
                    callbacks=[EarlyStopping(monitor="loss", patience=3)])
    assert len(history.epoch) == 4
    with pytest.raises(ValueError, match="val_loss"):
        m.fit(X, y, epochs=1, verbose=0, callbacks=[EarlyStopping()])


def test_model_checkpoint_saves_each_epoch(tmp_path):
    fnn.seed(0)
    X, y = blobs()
    m = small_mlp()
    pattern = str(tmp_path / "ckpt-{epoch:02d}.npz")
    m.fit(X, y, epochs=3, verbose=0, callbacks=[ModelCheckpoint(pattern)])
    files = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.npz")))
    assert files == ["ckpt-01.npz", "ckpt-02.npz", "ckpt-03.npz"]
    np.testing.assert_array_equal(fnn.load(tmp_path / "ckpt-03.npz").predict(X), m.predict(X))
    assert fnn.load(tmp_path / "ckpt-01.npz").saved_optimizer_state["class"] == "Adam"


@pytest.mark.parametrize("first", ["conv", "convt", "dense", "flatten_dense"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(first):
    rng = np.random.default_rng(1)
    if first == "conv":
        layers, x = [L.Conv2D(2, 3, 3, padding=1), L.ReLU(), L.Flatten(), L.Dense(48, 2)], (3, 2, 4, 4)
    elif first == "convt":
        layers, x = [L.ConvTranspose2D(2, 3, 2, stride=2), L.Tanh(), L.Flatten(), L.Dense(48, 2)], (3, 2, 2, 2)
    elif first == "dense":
        layers, x = [L.Dense(5, 4), L.BatchNorm1D(4), L.ReLU(), L.Dense(4, 2)], (3, 5)
    else:  # layers before the first parametrised one are skipped altogether
        layers, x = [L.Flatten(), L.Dense(10, 2)], (3, 2, 5)
    m = fnn.Sequential(*layers).astype(np.float64)
    x = rng.standard_normal(x)
    y = m.forward(x)
    dy = rng.standard_normal(y.shape)
    m.zero_grad()
    dx = m.backward(dy)
    full = [p.grad.copy() for p in m.parameters()]
    assert dx.shape == x.shape
    m.forward(x)
    m.zero_grad()
    assert m.backward(dy, input_grad=False) is None
    for a, b in zip(full, m.parameters()):
        np.testing.assert_array_equal(a, b.grad)


def test_fit_skips_the_first_layers_input_gradient(monkeypatch):
    calls = []
    conv = L.Conv2D(1, 2, 3)
    original = type(conv).backward

    def spy(self, dy, input_grad=True):
        calls.append(input_grad)
        return original(self, dy, input_grad=input_grad)

    monkeypatch.setattr(type(conv), "backward", spy)
    m = fnn.Sequential(conv, L.Flatten(), L.Dense(8, 2))
    X = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    y = np.arange(8) % 2
    m.fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert calls == [False, False]
