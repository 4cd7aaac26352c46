"""Data sets (bundled digits, local IDX files), the batch iterator and augmentation."""
import gzip
import struct
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import datasets


def test_load_digits_shapes_dtypes_and_split():
    X, y = datasets.load_digits(return_split=False)
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0 and set(np.unique(y)) == set(range(10))
    (Xa, ya), (Xt, yt) = datasets.load_digits(test_size=0.25, seed=0)
    assert len(Xt) == round(1797 * 0.25) and len(Xa) + len(Xt) == 1797
    (Xb, yb), _ = datasets.load_digits(seed=0)
    np.testing.assert_array_equal(Xa, Xb)
    (Xc, _), _ = datasets.load_digits(seed=1)
    assert not np.array_equal(Xa, Xc)
    # the split is a partition of the original samples
    together = np.concatenate([Xa, Xt]).reshape(1797, -1)
    assert np.array_equal(np.sort(together.sum(1)), np.sort(X.reshape(1797, -1).sum(1)))


def test_load_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn.*fastnn\\[digits\\]"):
        datasets.load_digits()


def test_load_digits_5x5_block_averages():
    X5, y = datasets.load_digits_5x5(return_split=False)
    X8, y8 = datasets.load_digits(return_split=False)
    assert X5.shape == (1797, 25) and X5.dtype == np.float32
    np.testing.assert_array_equal(y, y8)
    # area averaging keeps each image's mean intensity
    np.testing.assert_allclose(X5.mean(1), X8.reshape(1797, -1).mean(1), rtol=1e-5, atol=1e-6)
    assert X5.min() >= 0 and X5.max() <= 1
    # the corner output pixel covers input rows/cols [0, 1.6): weights 1 and 0.6, normalised
    img = X8[0, 0].astype(np.float64)
    w = np.array([1.0, 0.6]) / 1.6
    np.testing.assert_allclose(X5[0, 0], w @ img[:2, :2] @ w, rtol=1e-5)
    (Xa, _), (Xt, _) = datasets.load_digits_5x5()
    assert Xa.shape[1] == 25 and len(Xa) + len(Xt) == 1797


def write_idx(path, array, compress=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(directory, compress):
    r = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": r.integers(0, 256, size=(5, 4, 3), dtype=np.uint8),
              "train-labels-idx1-ubyte": r.integers(0, 10, size=5, dtype=np.uint8),
              "t10k-images-idx3-ubyte": r.integers(0, 256, size=(2, 4, 3), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": r.integers(0, 10, size=2, dtype=np.uint8)}
    for name, a in arrays.items():
        write_idx(directory / name, a, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_idx_files(tmp_path, compress):
    arrays = fake_mnist(tmp_path, compress)
    (X, y), (Xt, yt) = datasets.load_mnist(tmp_path)
    assert X.shape == (5, 1, 4, 3) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X[:, 0] * 255, arrays["train-images-idx3-ubyte"], rtol=1e-6)
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(yt, arrays["t10k-labels-idx1-ubyte"])
    (raw, _), _ = datasets.load_mnist(tmp_path, normalize=False)
    np.testing.assert_array_equal(raw[:, 0], arrays["train-images-idx3-ubyte"])


def test_read_idx_other_types_and_bad_files(tmp_path):
    ints = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    write_idx(tmp_path / "ints", ints)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "ints"), ints)
    data = (tmp_path / "ints").read_bytes()
    (tmp_path / "short").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="short.*truncated"):
        datasets.read_idx(tmp_path / "short")
    (tmp_path / "junk").write_bytes(b"\x01\x02\x03\x04 hello")
    with pytest.raises(ValueError, match="junk.*magic"):
        datasets.read_idx(tmp_path / "junk")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist(tmp_path)


@given(n=st.integers(1, 40), batch_size=st.integers(1, 12), shuffle=st.booleans(), drop_last=st.booleans())
def test_batches_cover_every_sample_once(n, batch_size, shuffle, drop_last):
    X, y = np.arange(n * 2).reshape(n, 2), np.arange(n)
    got = list(datasets.batches(X, y, batch_size, shuffle=shuffle, drop_last=drop_last))
    seen = np.concatenate([yb for _, yb in got]) if got else np.array([], dtype=int)
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
        assert len(yb) <= batch_size and (not drop_last or len(yb) == batch_size)
    expected = n - n % batch_size if drop_last else n
    assert len(seen) == expected and len(np.unique(seen)) == expected
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(expected))


def test_batches_shuffle_follows_fnn_seed_and_checks_lengths():
    X = np.arange(20)
    fnn.seed(5)
    a = np.concatenate(list(datasets.batches(X, batch_size=6)))
    fnn.seed(5)
    b = np.concatenate(list(datasets.batches(X, batch_size=6)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, X)
    with pytest.raises(ValueError, match="20 samples.*19"):
        list(datasets.batches(X, np.arange(19), 4))


def shifted(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_random_shift_moves_each_image_within_range():
    fnn.seed(0)
    x = np.random.default_rng(0).uniform(0.1, 1, size=(12, 2, 5, 6)).astype(np.float32)
    out = datasets.random_shift(x, 2)
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i], shifted(x[i], dy, dx))]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1  # each image draws its own offset
    np.testing.assert_array_equal(datasets.random_shift(x, 0), x)


def test_random_crop_cuts_windows_of_the_padded_image():
    fnn.seed(1)
    x = np.random.default_rng(1).normal(size=(6, 3, 5, 5))
    out = datasets.random_crop(x, 4, padding=1)
    assert out.shape == (6, 3, 4, 4)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(6):
        assert any(np.array_equal(out[i], padded[i, :, t:t + 4, s:s + 4]) for t in range(4) for s in range(4))
    with pytest.raises(ValueError, match="random_crop"):
        datasets.random_crop(x, 8, padding=1)


def test_horizontal_flip():
    fnn.seed(2)
    x = np.random.default_rng(2).normal(size=(40, 1, 3, 4))
    original = x.copy()
    np.testing.assert_array_equal(datasets.horizontal_flip(x, p=1.0), x[..., ::-1])
    np.testing.assert_array_equal(datasets.horizontal_flip(x, p=0.0), x)
    out = datasets.horizontal_flip(x, p=0.5)
    flipped = np.array([np.array_equal(o, a[..., ::-1]) for o, a in zip(out, x)])
    kept = np.array([np.array_equal(o, a) for o, a in zip(out, x)])
    assert (flipped | kept).all() and 5 < flipped.sum() < 35
    np.testing.assert_array_equal(x, original)  # the input is untouched
    with pytest.raises(ValueError, match=r"horizontal_flip.*\(N, C, H, W\)"):
        datasets.horizontal_flip(np.zeros((3, 4)))


# --- feature scaling (scikit-learn's semantics) ------------------------------------------------------
@pytest.mark.parametrize("feature_range", [(0, 1), (-1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scalers_match_scikit_learn_fitted_on_training_data_only(feature_range, dtype):
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(0)
    X = rng.normal(3, 2, (40, 5)).astype(dtype)
    X[:, 3] = 7.0                               # a constant feature
    X_test = rng.normal(3, 4, (9, 5)).astype(dtype)   # wider than the training range
    for ours, theirs in [(datasets.MinMaxScaler(feature_range), preprocessing.MinMaxScaler(feature_range)),
                         (datasets.StandardScaler(), preprocessing.StandardScaler())]:
        got = ours.fit_transform(X)
        want = theirs.fit_transform(X)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, want, **tol)
        np.testing.assert_allclose(ours.transform(X_test), theirs.transform(X_test), **tol)
        np.testing.assert_allclose(ours.inverse_transform(got), X, **tol)
        assert got.dtype == dtype
        np.testing.assert_allclose(ours.scale_, theirs.scale_, **tol)
    # statistics come from the training data: the test data is not rescaled into the range
    mm = datasets.MinMaxScaler(feature_range).fit(X)
    assert mm.transform(X_test).max() > feature_range[1]
    assert datasets.MinMaxScaler(feature_range, clip=True).fit(X).transform(X_test).max() <= feature_range[1]


def test_scalers_on_images_scale_each_pixel_and_check_their_input():
    (X, _), (Xt, _) = datasets.load_digits()
    z = datasets.StandardScaler().fit(X)
    Z = z.transform(X)
    assert Z.shape == X.shape and Z.dtype == np.float32
    varying = X.std(0) > 0
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z.std(0)[varying], 1, rtol=1e-4)
    with pytest.raises(RuntimeError, match="StandardScaler: call fit before transform"):
        datasets.StandardScaler().transform(X)
    with pytest.raises(ValueError, match=r"MinMaxScaler.transform: X has features of shape \(64,\)"):
        datasets.MinMaxScaler().fit(X).transform(X.reshape(len(X), 64))
    with pytest.raises(ValueError, match="MinMaxScaler.fit: X must be 2-D"):
        datasets.MinMaxScaler().fit(np.arange(5.0))
    with pytest.raises(ValueError, match="feature_range must have min < max"):
        datasets.MinMaxScaler((1, 0))
