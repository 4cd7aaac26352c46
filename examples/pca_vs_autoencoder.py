"""PCA against autoencoders at the same code size (note 004): reconstruction error on held-out digits.

PCA keeps the ``k`` directions of largest variance of the (centred) training digits; encoding is
a projection, decoding its transpose. It is the best *linear* code of size ``k`` for the squared
error. An autoencoder learns its code by gradient descent:

- linear:    Dense 64-k, Dense k-64 (no activation): at best it finds PCA's subspace, so its
             error approaches PCA's from above;
- nonlinear: Dense 64-128-ReLU-k, Dense k-128-ReLU-64-Sigmoid: a curved code, which can beat
             PCA at the same size.

All three are fitted on three quarters of the digits (min-max scaled with the training data's
``MinMaxScaler``) and scored by the mean squared error per pixel on the held-out quarter. With
``image_dir`` the script writes ``pca_vs_autoencoder.png``: the 2-D codes of the test digits,
PCA beside the nonlinear autoencoder, coloured by digit (matplotlib needed; skipped with a
message otherwise).

Bar (code size 2, the default 200 epochs): nonlinear autoencoder's test error below PCA's, and the
linear autoencoder within 10% of PCA's.

    python examples/pca_vs_autoencoder.py --image-dir .
"""
import os
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import MinMaxScaler, load_digits


class PCA:
    """Principal component analysis by the SVD of the centred training data."""

    def __init__(self, k):
        self.k = k

    def fit(self, X):
        self.mean_ = X.mean(0)
        _, _, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        self.components_ = vt[:self.k]
        return self

    def encode(self, X):
        return (X - self.mean_) @ self.components_.T

    def decode(self, Z):
        return Z @ self.components_ + self.mean_


def autoencoder(k, nonlinear):
    if nonlinear:
        encoder = fnn.Sequential(L.Dense(64, 128), L.ReLU(), L.Dense(128, k))
        decoder = fnn.Sequential(L.Dense(k, 128), L.ReLU(), L.Dense(128, 64), L.Sigmoid())
    else:
        encoder, decoder = fnn.Sequential(L.Dense(64, k)), fnn.Sequential(L.Dense(k, 64))
    return encoder, decoder, fnn.Sequential(*encoder.layers, *decoder.layers)


def train_autoencoder(X, k, nonlinear, epochs, lr, seed):
    fnn.seed(seed)
    encoder, decoder, model = autoencoder(k, nonlinear)
    model.fit(X, X, loss="mse", optimizer=fnn.optim.Adam(model.parameters(), lr=lr),
              epochs=epochs, batch_size=64, verbose=0)
    return encoder, model


def save_codes(path, codes, labels, titles):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the code scatter plot "
              "(pip install '.[images]')")
        return None
    fig, axes = plt.subplots(1, len(codes), figsize=(5 * len(codes), 4.5))
    for ax, z, title in zip(axes, codes, titles):
        points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=8)
        ax.set_title(title)
    fig.colorbar(points, ax=axes, ticks=range(10), label="digit")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(k=2, epochs=200, lr=3e-3, seed=0, image_dir=None, verbose=True):
    t0 = time.perf_counter()
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    scaler = MinMaxScaler().fit(X.reshape(len(X), 64))          # fitted on the training digits only
    X2, Xt2 = scaler.transform(X.reshape(len(X), 64)), scaler.transform(Xt.reshape(len(Xt), 64))
    mse = lambda a, b: float(np.mean((np.asarray(a, np.float64) - b) ** 2))  # noqa: E731
    pca = PCA(k).fit(X2.astype(np.float64))
    m = {"pca_test_mse": mse(pca.decode(pca.encode(Xt2)), Xt2),
         "pixel_variance": float(Xt2.var(0).mean())}
    enc_lin, lin = train_autoencoder(X2, k, False, epochs, lr, seed)
    enc_ae, ae = train_autoencoder(X2, k, True, epochs, lr, seed)
    m["linear_ae_test_mse"] = mse(lin.predict(Xt2), Xt2)
    m["ae_test_mse"] = mse(ae.predict(Xt2), Xt2)
    m["bar_met"] = (m["ae_test_mse"] < m["pca_test_mse"]
                    and m["linear_ae_test_mse"] <= 1.1 * m["pca_test_mse"])
    m["image"] = None
    if image_dir is not None:
        m["image"] = save_codes(os.path.join(image_dir, "pca_vs_autoencoder.png"),
                                [pca.encode(Xt2), enc_ae.predict(Xt2)], yt,
                                [f"PCA, {k} components", f"autoencoder, code size {k}"])
    m["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"code size {k}, test MSE per pixel (pixel variance {m['pixel_variance']:.4f}): "
              f"PCA {m['pca_test_mse']:.4f}, linear AE {m['linear_ae_test_mse']:.4f}, "
              f"nonlinear AE {m['ae_test_mse']:.4f}")
        print(f"bar (nonlinear AE below PCA, linear AE within 10% of PCA): "
              f"{'met' if m['bar_met'] else 'MISSED'}; {m['seconds']:.1f} s"
              + (f"; wrote {m['image']}" if m["image"] else ""))
    return m


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--code-size", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-dir", default=None)
    args = ap.parse_args()
    fnn.set_num_threads(1)
    main(k=args.code_size, epochs=args.epochs, seed=args.seed, image_dir=args.image_dir)
