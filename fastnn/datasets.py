"""Small data sets, a mini-batch iterator and per-batch image augmentation.

    (X, y), (Xt, yt) = fnn.datasets.load_digits()         # 8x8 digits, (N, 1, 8, 8) in [0, 1]
    (X, y), (Xt, yt) = fnn.datasets.load_mnist("~/data/mnist")   # local IDX files
    for xb, yb in fnn.datasets.batches(X, y, 64, shuffle=True):
        xb = fnn.datasets.random_shift(xb, 1)

Images are float32 NCHW, labels int64. Randomness (shuffling, augmentation) comes from fastnn's
generator, so ``fnn.seed(n)`` makes it reproducible; the train/test split takes its own ``seed``.
"""
import gzip
import os

import numpy as np

from ._random import rng

__all__ = ["load_digits", "load_digits_5x5", "load_mnist", "read_idx", "batches",
           "random_shift", "random_crop", "horizontal_flip", "train_test_split",
           "MinMaxScaler", "StandardScaler"]


def train_test_split(X, y, test_size=0.25, seed=0):
    """Shuffle with ``numpy.random.default_rng(seed)`` and split: ``(X, y), (X_test, y_test)``."""
    if not 0 < test_size < 1:
        raise ValueError(f"train_test_split: test_size must be in (0, 1), got {test_size!r}")
    if len(X) != len(y):
        raise ValueError(f"train_test_split: X has {len(X)} samples, y has {len(y)}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_size))
    test, train = order[:n_test], order[n_test:]
    return (X[train], y[train]), (X[test], y[test])


def _sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("fastnn.datasets.load_digits needs scikit-learn (its bundled 8x8 "
                          "digits): pip install 'fastnn[digits]'") from None
    data = sk_load_digits()
    images = (data.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    return np.ascontiguousarray(images), data.target.astype(np.int64)


def load_digits(return_split=True, test_size=0.25, seed=0):
    """scikit-learn's 1797 8x8 handwritten digits as float32 images ``(N, 1, 8, 8)`` in [0, 1]
    and int64 labels ``(N,)``.

    ``return_split=True`` gives ``(X_train, y_train), (X_test, y_test)`` with a ``test_size``
    fraction held out (shuffled with ``seed``); ``False`` gives ``(X, y)`` in the original order.
    Needs the optional ``digits`` extra (scikit-learn).
    """
    X, y = _sklearn_digits()
    return train_test_split(X, y, test_size, seed) if return_split else (X, y)


def _area_matrix(n_in, n_out):
    """``A (n_out, n_in)``: output cell i averages the input cells it overlaps, weighted by the
    overlap (box/area resampling), so each row sums to 1."""
    edges_in = np.arange(n_in + 1, dtype=np.float64)
    edges_out = np.linspace(0, n_in, n_out + 1)
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0, None) / (n_in / n_out)


def load_digits_5x5(return_split=True, test_size=0.25, seed=0):
    """The lecture's 5x5 digits: the 8x8 digits block-averaged to 5x5 (each output pixel is the
    area-weighted mean of the 1.6x1.6 input block it covers), as float32 ``(N, 25)`` in [0, 1]
    and int64 labels; the input of the ``seed-mlp`` network (Dense 25-3-3-10). Returns like
    :func:`load_digits`."""
    X8, y = _sklearn_digits()
    A = _area_matrix(8, 5)
    X5 = np.einsum("ij,njk,lk->nil", A, X8[:, 0].astype(np.float64), A)
    X = np.ascontiguousarray(X5.reshape(len(X5), 25), dtype=np.float32)
    return train_test_split(X, y, test_size, seed) if return_split else (X, y)


# --- MNIST from local IDX files ------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one IDX file (optionally gzip-compressed, by its ``.gz`` suffix) into an ndarray."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"read_idx: cannot read {path!r}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path!r} is truncated (header of {ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"read_idx: {path!r} holds {len(raw) - header} data bytes, but its header "
                         f"says shape {shape} of {dtype} ({expected} bytes): truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(directory, stem):
    # the files circulate as "train-images-idx3-ubyte" and "train-images.idx3-ubyte", gzip'ed or not
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"load_mnist: no {stem}[.gz] in {directory!r}")


def load_mnist(directory, normalize=True):
    """MNIST (or Fashion-MNIST) from the four standard IDX files in a local ``directory``:
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). Nothing is downloaded.

    Returns ``(X_train, y_train), (X_test, y_test)``: images float32 ``(N, 1, H, W)`` scaled to
    [0, 1] (raw 0..255 if ``normalize=False``) and int64 labels.
    """
    directory = os.path.expanduser(os.fspath(directory))
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(directory, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"load_mnist: {split} images {images.shape} and labels "
                             f"{labels.shape} in {directory!r} do not match")
        X = images[:, None].astype(np.float32)
        if normalize:
            X /= np.float32(255.0)
        out.append((X, labels.astype(np.int64)))
    return tuple(out)


# --- batches and augmentation ---------------------------------------------------------------------
def batches(X, y=None, batch_size=32, shuffle=True, drop_last=False):
    """Yield ``(X_batch, y_batch)`` (or ``X_batch`` when ``y`` is None) of ``batch_size`` rows;
    ``shuffle`` draws a new order from fastnn's generator on each call."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be an int >= 1, got {batch_size!r}")
    n = len(X)
    if y is not None and len(y) != n:
        raise ValueError(f"batches: X has {n} samples (shape {np.shape(X)}) but y has "
                         f"{len(y)} (shape {np.shape(y)})")
    order = rng().permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        rows = slice(start, min(start + batch_size, n))
        if order is not None:
            rows = order[rows]
        yield (X[rows], y[rows]) if y is not None else X[rows]


def _check_images(where, x):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{where}: expected images (N, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return x


def _gather_windows(x_padded, top, left, height, width):
    """``out[n] = x_padded[n, :, top[n]:top[n]+height, left[n]:left[n]+width]`` for every n."""
    n, c = x_padded.shape[:2]
    rows = top[:, None] + np.arange(height)[None, :]
    cols = left[:, None] + np.arange(width)[None, :]
    return x_padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                    rows[:, None, :, None], cols[:, None, None, :]]


def random_shift(x, max_shift):
    """Translate each image by its own random integer offset in ``[-max_shift, max_shift]``
    along H and W, filling with zeros. Returns a new array."""
    x = _check_images("random_shift", x)
    if max_shift < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x.copy()
    m = int(max_shift)
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (m, m), (m, m)))
    offsets = rng().integers(-m, m + 1, size=(2, n))
    return _gather_windows(padded, m - offsets[0], m - offsets[1], h, w)


def random_crop(x, size, padding=0):
    """Zero-pad by ``padding`` then cut a random ``size`` (int or (h, w)) window per image."""
    x = _check_images("random_crop", x)
    ch, cw = (size, size) if np.isscalar(size) else tuple(size)
    n, _, h, w = x.shape
    if padding < 0 or ch > h + 2 * padding or cw > w + 2 * padding or ch < 1 or cw < 1:
        raise ValueError(f"random_crop: cannot cut {(ch, cw)} from images {x.shape} padded by "
                         f"{padding}")
    p = int(padding)
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    top = rng().integers(0, h + 2 * p - ch + 1, size=n)
    left = rng().integers(0, w + 2 * p - cw + 1, size=n)
    return _gather_windows(padded, top, left, ch, cw)


def horizontal_flip(x, p=0.5):
    """Mirror each image left-right with probability ``p``. Returns a new array."""
    x = _check_images("horizontal_flip", x)
    if not 0 <= p <= 1:
        raise ValueError(f"horizontal_flip: p must be in [0, 1], got {p}")
    flip = rng().random(len(x)) < p
    out = x.copy()
    out[flip] = x[flip, :, :, ::-1]
    return out


# ---- small built-in corpora for the sequence models (no network) ------------------------------

TINY_TEXT = """\
A recurrent network reads a sequence one step at a time. At every step it mixes the new input
with a hidden state that summarises everything it has read so far, and from that state it
predicts what comes next. Trained on text, it learns which letters follow which, then which
words follow which, and finally something of the rhythm of the sentences themselves.

The plain recurrent network forgets quickly: its gradient shrinks a little at every step it
travels back in time, so words seen long ago barely move the weights. The long short-term
memory network adds a cell that carries information forward untouched unless a gate decides to
change it. The forget gate keeps or erases, the input gate writes, the output gate reads. With
these gates the network can remember the first word of a long sentence until the very end.

To train the network we cut the text into short windows, show it each window, and ask it to
predict every next character. The loss is the cross-entropy of those predictions, summed over
the time steps. Backpropagation through time carries the error from the last step back to the
first, and the optimizer nudges every weight a little. After a few hundred steps the network
spells common words; after a few thousand it writes sentences that almost make sense.
"""


def char_corpus(text=TINY_TEXT):
    """``(chars, ids)``: the sorted character vocabulary of ``text`` and the text as int64 ids."""
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    return chars, np.array([index[ch] for ch in text], np.int64)


WORD_GROUPS = {
    "animals": ["cat", "dog", "horse", "cow", "sheep", "goat"],
    "fruit": ["apple", "pear", "plum", "grape", "melon", "cherry"],
    "vehicles": ["car", "bus", "train", "truck", "bike", "tram"],
    "colours": ["red", "blue", "green", "yellow", "purple", "orange"],
    "weather": ["rain", "snow", "wind", "storm", "fog", "sun"],
}


def grouped_word_corpus(n_sentences=1500, length=10, seed=0):
    """``(vocab, group_of, sentences)``: sentences of word ids, each drawn from one topic of
    :data:`WORD_GROUPS` with 10% cross-topic noise, so words of a topic share contexts (the data
    on which word2vec's nearest neighbours should recover the groups)."""
    rng = np.random.default_rng(seed)
    vocab = [w for words in WORD_GROUPS.values() for w in words]
    group_of = np.repeat(np.arange(len(WORD_GROUPS)), [len(w) for w in WORD_GROUPS.values()])
    members = [np.flatnonzero(group_of == g) for g in range(len(WORD_GROUPS))]
    sentences = []
    for _ in range(n_sentences):
        g = rng.integers(len(WORD_GROUPS))
        s = rng.choice(members[g], length)
        noise = rng.random(length) < 0.1  # a little cross-topic noise
        s[noise] = rng.integers(len(vocab), size=noise.sum())
        sentences.append(s)
    return vocab, group_of, sentences


# ---------------------------------------------------------------------------------------------
# feature scaling, as scikit-learn's preprocessing (fit on the training data only, then apply the
# training statistics to validation and test data)
# ---------------------------------------------------------------------------------------------

class _Scaler:
    """Per-feature scaling of ``X (n_samples, n_features)`` (axis 0 is the samples; further axes,
    as in images ``(N, C, H, W)``, are features too). ``fit`` learns from the training data;
    ``transform`` applies what was learned. Float32 and float64 stay as they are; other dtypes
    become float64."""

    _fitted_attr = ""

    def _check(self, X, fitting):
        where = type(self).__name__ + (".fit" if fitting else ".transform")
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{where}: X must be a real numeric array, got dtype {X.dtype}")
        if X.ndim < 2:
            raise ValueError(f"{where}: X must be 2-D (n_samples, n_features) or more, got shape "
                             f"{X.shape}; reshape a single feature with X.reshape(-1, 1)")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if fitting:
            if X.shape[0] < 1:
                raise ValueError(f"{where}: X has no samples, shape {X.shape}")
        else:
            if getattr(self, self._fitted_attr, None) is None:
                raise RuntimeError(f"{type(self).__name__}: call fit before transform")
            if X.shape[1:] != self.n_features_shape_:
                raise ValueError(f"{where}: X has features of shape {X.shape[1:]}, the scaler "
                                 f"was fitted on {self.n_features_shape_}")
        return X

    def fit_transform(self, X):
        return self.fit(X).transform(X)


def _nonzero_scale(scale):
    # constant features: divide by 1 instead of 0, as scikit-learn's _handle_zeros_in_scale
    scale = scale.copy()
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0
    return scale


class MinMaxScaler(_Scaler):
    """Min-max normalisation per feature to ``feature_range`` (scikit-learn's ``MinMaxScaler``):

        X_scaled = (X - data_min_) / (data_max_ - data_min_) * (max - min) + min

    Learned by ``fit`` (training data): ``data_min_``, ``data_max_``, ``data_range_``, and
    ``scale_``, ``min_`` with ``transform(X) = X * scale_ + min_``. A constant feature maps to
    ``min``. Data outside the training range maps outside ``feature_range`` unless ``clip``.

        scaler = MinMaxScaler().fit(X_train)
        X_train01, X_test01 = scaler.transform(X_train), scaler.transform(X_test)
    """

    _fitted_attr = "scale_"

    def __init__(self, feature_range=(0, 1), clip=False):
        try:
            lo, hi = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise TypeError(f"MinMaxScaler: feature_range must be a pair of numbers, got "
                            f"{feature_range!r}") from None
        if not lo < hi:
            raise ValueError(f"MinMaxScaler: feature_range must have min < max, got "
                             f"{feature_range!r}")
        self.feature_range = (lo, hi)
        self.clip = bool(clip)
        self.scale_ = None

    def fit(self, X):
        X = self._check(X, True)
        lo, hi = self.feature_range
        self.n_features_shape_ = X.shape[1:]
        self.n_samples_seen_ = X.shape[0]
        self.data_min_ = X.min(axis=0)
        self.data_max_ = X.max(axis=0)
        self.data_range_ = self.data_max_ - self.data_min_
        self.scale_ = ((hi - lo) / _nonzero_scale(self.data_range_)).astype(X.dtype)
        self.min_ = (lo - self.data_min_ * self.scale_).astype(X.dtype)
        return self

    def transform(self, X):
        X = self._check(X, False)
        out = X * self.scale_.astype(X.dtype) + self.min_.astype(X.dtype)
        if self.clip:
            np.clip(out, *self.feature_range, out=out)
        return out

    def inverse_transform(self, X):
        X = self._check(X, False)
        return (X - self.min_.astype(X.dtype)) / self.scale_.astype(X.dtype)


class StandardScaler(_Scaler):
    """Z-score standardisation per feature (scikit-learn's ``StandardScaler``):

        X_scaled = (X - mean_) / scale_,   scale_ = sqrt(var_)  (population variance, ddof 0)

    ``mean_``, ``var_``, ``scale_`` are learned by ``fit`` on the training data; a constant
    feature gets ``scale_ = 1``. ``with_mean`` / ``with_std`` switch centring / scaling off.
    """

    _fitted_attr = "scale_"

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = bool(with_mean)
        self.with_std = bool(with_std)
        self.scale_ = None

    def fit(self, X):
        X = self._check(X, True)
        self.n_features_shape_ = X.shape[1:]
        self.n_samples_seen_ = X.shape[0]
        mean = X.mean(axis=0, dtype=np.float64)
        var = X.var(axis=0, dtype=np.float64)
        self.mean_ = mean.astype(X.dtype) if self.with_mean else None
        self.var_ = var.astype(X.dtype) if self.with_std else None
        scale = _nonzero_scale(np.sqrt(var)) if self.with_std else np.ones_like(var)
        self.scale_ = scale.astype(X.dtype)
        return self

    def transform(self, X):
        X = self._check(X, False)
        out = X - self.mean_.astype(X.dtype) if self.with_mean else X.copy()
        if self.with_std:
            out /= self.scale_.astype(X.dtype)
        return out

    def inverse_transform(self, X):
        X = self._check(X, False)
        out = X * self.scale_.astype(X.dtype) if self.with_std else X.copy()
        if self.with_mean:
            out += self.mean_.astype(X.dtype)
        return out


# --- generated sequence-to-sequence tasks -------------------------------------------------------
__all__ += ["date_translation", "date_source_vocab", "reversal_pairs", "DATE_TARGET_CHARS"]

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = ("_ first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
             "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth").split()
_TENTHS = "_ _ twentieth thirtieth".split()
_MONTHS = ("january february march april may june july august september october november "
           "december").split()
DATE_TARGET_CHARS = "0123456789-"


def _number_words(n):
    """0 <= n < 100 in words, as tokens: 42 -> ['forty', 'two']."""
    if n < 20:
        return [_ONES[n]]
    return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])


def _ordinal_words(d):
    """1 <= d <= 31 as an ordinal: 23 -> ['twenty', 'third'], 30 -> ['thirtieth']."""
    if d < 20:
        return [_ORDINALS[d]]
    return [_TENTHS[d // 10]] if d % 10 == 0 else [_TENS[d // 10], _ORDINALS[d % 10]]


def _year_words(y, r):
    """1900-2099 as spoken: 'nineteen oh five', 'nineteen hundred', 'two thousand and seven',
    'twenty twenty one' or 'two thousand twenty one'."""
    hi, lo = divmod(y, 100)
    if hi == 19:
        tail = ["hundred"] if lo == 0 else ["oh", _ONES[lo]] if lo < 10 else _number_words(lo)
        return ["nineteen"] + tail
    if lo >= 10 and r.random() < 0.5:
        return ["twenty"] + _number_words(lo)
    return ["two", "thousand"] + ((["and"] if r.random() < 0.5 else []) + _number_words(lo) if lo else [])


def _date_words(date, r):
    """One spoken or written form of ``date`` (a datetime.date), as tokens; five layouts."""
    month = _MONTHS[date.month - 1]
    if r.random() < 0.3:
        month = month[:3]
    day_digits, year_digits = list(str(date.day)), list(str(date.year))
    layout = r.integers(5)
    if layout == 0:
        return ["the"] + _ordinal_words(date.day) + ["of", month] + _year_words(date.year, r)
    if layout == 1:
        return [month] + _ordinal_words(date.day) + _year_words(date.year, r)
    if layout == 2:
        return [month] + day_digits + [","] + year_digits
    if layout == 3:
        return day_digits + [month] + year_digits
    return _ordinal_words(date.day) + [month] + [","] + _year_words(date.year, r)


def date_source_vocab():
    """Every source token of :func:`date_translation`, sorted, with ``"<pad>"`` at id 0."""
    words = (set(_ONES) | set(_TENS[2:]) | set(_ORDINALS[1:]) | set(_TENTHS[2:]) | set(_MONTHS)
             | {m[:3] for m in _MONTHS} | set("0123456789") | {"the", "of", ",", "oh", "hundred",
                                                              "thousand", "and"})
    return ["<pad>"] + sorted(words)


def date_translation(n_train=20000, n_test=2000, seed=0):
    """Dates written in words or mixed forms -> ISO dates, a small translation task.

    Sources such as "the twenty third of march nineteen ninety four", "mar 23 , 1 9 9 4" or
    "twenty third march , two thousand and five" (word tokens; digits one token each; months
    full or abbreviated), targets "1994-03-23" as characters of :data:`DATE_TARGET_CHARS`.
    Dates are drawn from 1900-01-01 to 2099-12-31, each at most once, so no test date is seen
    in training. Returns ``(src_vocab, (src, tgt), (src_test, tgt_test))``: ``src_vocab`` the
    source tokens with ``"<pad>"`` at id 0, ``src`` (N, S) int64 right-padded with 0, ``tgt``
    (N, 10) int64 ids into ``DATE_TARGET_CHARS``.
    """
    import datetime

    r = np.random.default_rng(seed)
    first = datetime.date(1900, 1, 1).toordinal()
    days = datetime.date(2099, 12, 31).toordinal() - first + 1
    if n_train + n_test > days:
        raise ValueError(f"date_translation: at most {days} distinct dates, asked for {n_train + n_test}")
    picked = r.choice(days, n_train + n_test, replace=False)
    dates = [datetime.date.fromordinal(first + int(k)) for k in picked]
    words = [_date_words(d, r) for d in dates]
    vocab = date_source_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    src = np.zeros((len(words), max(map(len, words))), np.int64)
    for i, s in enumerate(words):
        src[i, :len(s)] = [index[w] for w in s]
    chars = {c: i for i, c in enumerate(DATE_TARGET_CHARS)}
    tgt = np.array([[chars[c] for c in d.isoformat()] for d in dates], np.int64)
    return vocab, (src[:n_train], tgt[:n_train]), (src[n_train:], tgt[n_train:])


def reversal_pairs(n, length=10, vocab=10, seed=0, exclude=None):
    """``(src, tgt)``: ``n`` random sequences of ``length`` symbols 1..vocab (id 0 left for
    padding) and their reversals, both (n, length) int64. ``exclude`` (an array of sources)
    removes those sequences, so a test set can be disjoint from a training set."""
    r = np.random.default_rng(seed)
    src = r.integers(1, vocab + 1, (n, length), dtype=np.int64)
    if exclude is not None:
        seen = {row.tobytes() for row in np.asarray(exclude, np.int64)}
        src = src[[row.tobytes() not in seen for row in src]]
    return src, np.ascontiguousarray(src[:, ::-1])
