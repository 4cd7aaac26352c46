"""The judge of generated digits in the generative tests: a small CNN that is confident on digits
only, and the noise it is measured against.

The recipes' judge (``fastnn.recipes.generative.digit_classifier``) learned digits only, and like
any classifier it is confident far from its data: it gives uniform noise a mean max-probability
of about 0.7 and pixel-shuffled digits up to 0.8, about what a trained GAN's samples get from
it. So a bar on its confidence hardly tells samples from noise. This judge has the same
architecture and also learns noise images with a uniform target over the ten classes ("outlier
exposure"): noise of kinds it never saw gets about 0.1 from it, real test digits about 0.98.
"""
import numpy as np
from scipy.ndimage import gaussian_filter

import fastnn as fnn
from fastnn import layers as L
from fastnn import optim


def uniform_noise(rng, n):
    return rng.random((n, 1, 8, 8), dtype=np.float32)


def shuffled_pixels(rng, X, n):
    """Every pixel drawn from that pixel's values over the digits ``X``: their statistics per
    pixel, without their strokes."""
    flat = X.reshape(len(X), 64)
    return flat[rng.integers(0, len(X), (n, 64)), np.arange(64)].reshape(n, 1, 8, 8)


def blurred_noise(rng, n, sigma=1.0):
    """Smooth random blobs of ink: blurred uniform noise, contrast stretched into [0, 1]."""
    smooth = gaussian_filter(rng.random((n, 1, 8, 8)), (0, 0, sigma, sigma))
    return np.clip((smooth - 0.5) * 3 / sigma + 0.5, 0, 1).astype(np.float32)


def sparse_pixels(rng, n, ink=0.3):
    """Isolated on/off pixels, a kind of noise the judge is not trained on."""
    return (rng.random((n, 1, 8, 8)) < ink).astype(np.float32)


def train_judge(X, y, seed=0, epochs=15):
    """The judge: the recipes' CNN trained on the digits ``X, y`` (one-hot targets) and on as
    many images of each of three noise kinds (uniform target)."""
    rng = np.random.default_rng(seed)
    n = len(X)
    images = np.concatenate([X, uniform_noise(rng, n), shuffled_pixels(rng, X, n),
                             blurred_noise(rng, n)])
    targets = np.concatenate([np.eye(10, dtype=np.float32)[y],
                              np.full((3 * n, 10), 0.1, dtype=np.float32)])
    fnn.seed(seed)
    model = fnn.Sequential(L.Conv2D(1, 16, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                           L.Conv2D(16, 32, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                           L.Dense(32 * 2 * 2, 64), L.ReLU(), L.Dense(64, 10))
    model.fit(images, targets, loss="cross_entropy",
              optimizer=optim.Adam(model.parameters(), lr=3e-3), epochs=epochs, batch_size=32,
              verbose=0)
    return model


def judge(model, images, share=0.02):
    """``(confidence, classes)`` for ``images (N, 1, 8, 8)`` in ``[0, 1]``: the mean largest
    softmax probability, and how many classes the judge names with probability above 0.5 for at
    least ``share`` of the images (a generator collapsed onto a few digits covers few)."""
    logits = model.predict(np.ascontiguousarray(images, dtype=np.float32)).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.max(axis=1)
    named = np.bincount(probs.argmax(axis=1)[best > 0.5], minlength=10)
    return float(best.mean()), int(np.count_nonzero(named >= share * len(images)))
