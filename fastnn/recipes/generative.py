"""``fastnn train ae|vae|gan|dcgan|wgan``: generative models on scikit-learn's 8x8 digits.

- ``ae``: a denoising autoencoder (noisy digit in, clean digit out); reports PSNR and SSIM of
  its reconstructions against those of the noisy input.
- ``vae``: a variational autoencoder; reports the test ELBO terms, saves samples and a latent
  interpolation grid.
- ``gan`` (Dense layers), ``dcgan`` (the DCGAN architecture on digits upsampled to 16x16),
  ``wgan`` (the same architecture, Wasserstein loss with weight clipping): report the mean
  confidence (max softmax probability) a CNN trained on the real digits gives their samples.

Every recipe holds out a quarter of the digits as its test set. ``out`` saves the generating
network (the decoder or the generator) with ``Sequential.save``; ``image_dir`` saves image grids
and training curves there (needs the ``images`` extra).
"""
import os

import numpy as np

from .. import layers as L
from .. import optim
from . import _pictures
from .._imaging import psnr, save_image_grid, save_training_curves, ssim
from .._random import rng
from .._random import seed as set_seed
from ..datasets import load_digits
from ..model import Sequential
from ..models.gan import GAN, WGAN, dcgan
from ..models.vae import VAE

__all__ = ["train", "add_noise", "denoising_autoencoder", "train_denoising_autoencoder",
           "vae_digits", "dense_gan", "digit_classifier", "sample_confidence", "to_digit_scale",
           "upsample_digits", "DIGIT_SSIM"]

# SSIM window for 8x8 digits: the standard 11x11 window does not fit
DIGIT_SSIM = {"win_size": 7, "sigma": 1.0}


# --- shared pieces ------------------------------------------------------------------------------------
def add_noise(X, std=0.3, generator=None):
    """``clip(X + N(0, std^2), 0, 1)``: Gaussian pixel noise kept inside the data range."""
    generator = rng() if generator is None else generator
    noise = generator.standard_normal(X.shape).astype(X.dtype) * X.dtype.type(std)
    return np.clip(X + noise, 0, 1)


def digit_classifier(X, y, epochs=15, verbose=0):
    """A small CNN trained on real ``(N, 1, 8, 8)`` digits in ``[0, 1]``: the judge of samples."""
    model = Sequential(L.Conv2D(1, 16, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                       L.Conv2D(16, 32, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                       L.Dense(32 * 2 * 2, 64), L.ReLU(), L.Dense(64, 10))
    model.fit(X, y, loss="cross_entropy", optimizer=optim.Adam(model.parameters(), lr=3e-3),
              epochs=epochs, batch_size=32, verbose=verbose)
    return model


def sample_confidence(classifier, images):
    """Mean over ``images (N, 1, 8, 8)`` in ``[0, 1]`` of the classifier's largest softmax
    probability, and the histogram of predicted classes (a collapsed generator shows one)."""
    logits = classifier.predict(np.ascontiguousarray(images, dtype=np.float32)).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return float(probs.max(axis=1).mean()), np.bincount(probs.argmax(axis=1), minlength=10)


def to_digit_scale(images, size=8):
    """Generator output in ``[-1, 1]`` back to ``(N, 1, 8, 8)`` in ``[0, 1]`` (2x2 mean pooling
    per halving when ``size`` is 16 or 32)."""
    x = (np.asarray(images, dtype=np.float32) + 1) / 2
    while x.shape[-1] > size:
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return np.clip(x, 0, 1)


def upsample_digits(X, size=16):
    """``(N, 1, 8, 8)`` digits to ``(N, 1, size, size)`` by bilinear interpolation (one
    ``scipy.ndimage.zoom`` call over the batch)."""
    from scipy.ndimage import zoom
    factor = size / X.shape[-1]
    return np.clip(zoom(X, (1, 1, factor, factor), order=1), 0, 1).astype(X.dtype)


def _digits(seed):
    (X, y), (Xt, yt) = load_digits(return_split=True, test_size=0.25, seed=seed)
    return X, y, Xt, yt


def _save(model, out, what):
    if out:
        model.save(out)
        print(f"saved the {what} to {out}")


def _image_path(image_dir, name):
    if not image_dir:
        return None
    os.makedirs(image_dir, exist_ok=True)
    return os.path.join(image_dir, name)


# --- denoising autoencoder ----------------------------------------------------------------------------
def denoising_autoencoder():
    """Dense 64-128-32-128-64 with ReLU inside and a Sigmoid output, on ``(N, 1, 8, 8)``."""
    return Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 32), L.ReLU(),
                      L.Dense(32, 128), L.ReLU(), L.Dense(128, 64), L.Sigmoid(),
                      L.Reshape((1, 8, 8)))


def train_denoising_autoencoder(X, Xt, noise_std=0.3, epochs=30, copies=5, verbose=0):
    """Train :func:`denoising_autoencoder` to map ``add_noise(x)`` to ``x`` (MSE, Adam), on
    ``copies`` independently noised copies of ``X``; evaluate on noised test digits ``Xt``
    (noise from a fixed generator, so the number is reproducible).

    Returns ``(model, metrics)`` with PSNR (dB) and SSIM of the noisy input and of the
    reconstruction, both against the clean test digits.
    """
    model = denoising_autoencoder()
    clean = np.concatenate([X] * copies)
    noisy = add_noise(clean, noise_std)
    model.fit(noisy, clean, loss="mse", optimizer=optim.Adam(model.parameters(), lr=2e-3),
              epochs=epochs, batch_size=64, verbose=verbose)
    noisy_test = add_noise(Xt, noise_std, np.random.default_rng(1234))
    restored = model.predict(noisy_test)
    metrics = {"noisy_psnr": psnr(noisy_test, Xt, 1.0), "denoised_psnr": psnr(restored, Xt, 1.0),
               "noisy_ssim": ssim(noisy_test, Xt, 1.0, **DIGIT_SSIM),
               "denoised_ssim": ssim(restored, Xt, 1.0, **DIGIT_SSIM)}
    return model, metrics, (noisy_test, restored)


# --- VAE ----------------------------------------------------------------------------------------------
def vae_digits(latent_dim=8, hidden=256):
    """Dense VAE for 8x8 digits: BCE reconstruction, Sigmoid decoder output."""
    encoder = Sequential(L.Flatten(), L.Dense(64, hidden), L.ReLU(), L.Dense(hidden, 2 * latent_dim))
    decoder = Sequential(L.Dense(latent_dim, hidden), L.ReLU(), L.Dense(hidden, 64), L.Sigmoid(),
                         L.Reshape((1, 8, 8)))
    return VAE(encoder, decoder, latent_dim=latent_dim, reconstruction="bce")


def interpolation_grid(vae, starts, ends, steps=10):
    """Decode ``steps`` evenly spaced points on the line between the posterior means of each
    pair ``starts[i] -> ends[i]``; returns ``(len(starts) * steps, 1, 8, 8)``, one row a pair."""
    mu_a, _ = vae.encode(starts)
    mu_b, _ = vae.encode(ends)
    t = np.linspace(0, 1, steps, dtype=mu_a.dtype)[None, :, None]
    z = (1 - t) * mu_a[:, None, :] + t * mu_b[:, None, :]
    return vae.decode(z.reshape(-1, vae.latent_dim))


# --- GANs ---------------------------------------------------------------------------------------------
def dense_gan(latent_dim=32, hidden=256):
    """The lecture's fully connected GAN for 8x8 digits scaled to ``[-1, 1]``."""
    generator = Sequential(L.Dense(latent_dim, hidden), L.LeakyReLU(0.2),
                           L.Dense(hidden, hidden), L.LeakyReLU(0.2),
                           L.Dense(hidden, 64), L.Tanh(), L.Reshape((1, 8, 8)))
    discriminator = Sequential(L.Flatten(), L.Dense(64, hidden), L.LeakyReLU(0.2),
                               L.Dense(hidden, hidden), L.LeakyReLU(0.2), L.Dense(hidden, 1))
    return generator, discriminator


def _train_gan(name, X, epochs, verbose, image_dir):
    if name == "gan":
        latent = 32
        gan = GAN(*dense_gan(latent), latent_dim=latent)
        real = X * 2 - 1
        epochs = epochs or 150
    else:
        latent = 32
        real = upsample_digits(X, 16) * 2 - 1
        if name == "dcgan":
            gan = GAN(*dcgan(latent, image_size=16, features=32), latent_dim=latent)
            epochs = epochs or 30
        else:
            generator, critic = dcgan(latent, image_size=16, features=32)
            gan = WGAN(generator, critic, latent_dim=latent, clip_value=0.01, n_critic=5)
            epochs = epochs or 300
            # RMSProp at twice the paper's 5e-5 (measured on the digits, judge confidence: 100
            # epochs at 5e-5 0.70, blurry blobs; 400 at 5e-5 0.80; 300 at 1e-4 0.82, digits)
            return gan, gan.fit(real, epochs=epochs, batch_size=64, verbose=verbose,
                                g_optimizer=optim.RMSProp(generator.parameters(), lr=1e-4),
                                d_optimizer=optim.RMSProp(critic.parameters(), lr=1e-4))
    history = gan.fit(real, epochs=epochs, batch_size=64, verbose=verbose)
    return gan, history


# --- the recipe ---------------------------------------------------------------------------------------
def train(name, epochs=None, seed=0, out=None, verbose=1, image_dir=None, plots=None):
    """``image_dir``: the examples' directory of named images; ``plots``: the CLI's
    prefix (``PREFIX-curves.png``, ``PREFIX-samples.png``, ``PREFIX-interpolation.png``,
    ``PREFIX-reconstructions.png``)."""
    set_seed(seed)
    X, y, Xt, yt = _digits(seed)
    metrics = {}
    if name == "ae":
        model, metrics, (noisy, restored) = train_denoising_autoencoder(
            X, Xt, epochs=epochs or 60, verbose=verbose)
        print(f"ae (denoising): test PSNR {metrics['noisy_psnr']:.2f} dB noisy -> "
              f"{metrics['denoised_psnr']:.2f} dB denoised; SSIM {metrics['noisy_ssim']:.3f} -> "
              f"{metrics['denoised_ssim']:.3f}")
        path = _image_path(image_dir, "denoising_autoencoder.png")
        if path:
            rows = np.concatenate([Xt[:10], noisy[:10], restored[:10]])
            save_image_grid(rows, path, nrow=10, scale=4)
            print(f"saved clean / noisy / denoised test digits to {path}")
        _save(model, out, "denoising autoencoder")
        rows = np.concatenate([Xt[:10], noisy[:10], restored[:10]])
        _pictures.grid(plots, "reconstructions", rows,
                       "clean / noisy / denoised test digits (one row each)", nrow=10, scale=4)
        _pictures.curves(plots, model.history, "denoising autoencoder on digits (MSE)")
        return metrics
    if name == "vae":
        vae = vae_digits()
        history = vae.fit(X, epochs=epochs or 100, batch_size=64,
                          optimizer=optim.Adam(vae.parameters(), lr=1e-3), verbose=verbose)
        test = vae.evaluate(Xt)
        restored = vae.reconstruct(Xt)
        metrics = {"test_loss": test["loss"], "test_reconstruction": test["reconstruction"],
                   "test_kl": test["kl"], "reconstruction_psnr": psnr(restored, Xt, 1.0)}
        judge = digit_classifier(X, y)
        metrics["sample_confidence"], counts = sample_confidence(judge, vae.sample(1000))
        print(f"vae: test -ELBO {test['loss']:.2f} (reconstruction {test['reconstruction']:.2f}"
              f" + KL {test['kl']:.2f}) per digit; reconstruction PSNR "
              f"{metrics['reconstruction_psnr']:.2f} dB; classifier confidence on samples "
              f"{metrics['sample_confidence']:.3f}; classes {counts.tolist()}")
        if image_dir:
            save_image_grid(vae.sample(64), _image_path(image_dir, "vae_samples.png"), nrow=8,
                            scale=4)
            # interpolate between test digits of different classes, one row per pair
            firsts = [np.flatnonzero(yt == d)[0] for d in range(10)]
            grid = interpolation_grid(vae, Xt[firsts[:8]], Xt[firsts[2:10]], steps=10)
            save_image_grid(grid, _image_path(image_dir, "vae_interpolation.png"), nrow=10,
                            scale=4)
            save_training_curves(history.history, _image_path(image_dir, "vae_curves.png"),
                                 title="VAE on digits")
            print(f"saved vae_samples.png, vae_interpolation.png, vae_curves.png to {image_dir}")
        _save(vae.decoder, out, "VAE decoder")
        if plots:
            _pictures.grid(plots, "samples", vae.sample(64), "64 samples", nrow=8, scale=4)
            firsts = [np.flatnonzero(yt == d)[0] for d in range(10)]
            grid = interpolation_grid(vae, Xt[firsts[:8]], Xt[firsts[2:10]], steps=10)
            _pictures.grid(plots, "interpolation", grid,
                           "latent interpolations (a row per pair of test digits)", nrow=10,
                           scale=4)
            _pictures.curves(plots, history, "VAE on digits (-ELBO per digit)")
        return metrics
    if name in ("gan", "dcgan", "wgan"):
        gan, history = _train_gan(name, X, epochs, verbose, image_dir)
        judge = digit_classifier(X, y)
        accuracy = float(np.mean(judge.predict(Xt).argmax(1) == yt))
        samples = to_digit_scale(gan.sample(1000))
        confidence, counts = sample_confidence(judge, samples)
        last = {k: v[-1] for k, v in history.history.items()}
        metrics = {"sample_confidence": confidence, "judge_accuracy": accuracy,
                   **{f"final_{k}": float(v) for k, v in last.items()}}
        print(f"{name}: a CNN judge ({accuracy:.3f} test accuracy on real digits) gives the "
              f"samples mean max-probability {confidence:.3f}; predicted classes "
              f"{counts.tolist()}; final " + ", ".join(f"{k} {v:.4f}" for k, v in last.items()))
        if image_dir:
            save_image_grid(gan.sample(64), _image_path(image_dir, f"{name}_samples.png"),
                            nrow=8, value_range=(-1, 1), scale=4 if name == "gan" else 2)
            save_training_curves({k: history.history[k] for k in ("d_loss", "g_loss")},
                                 _image_path(image_dir, f"{name}_curves.png"),
                                 title=f"{name.upper()} on digits")
            print(f"saved {name}_samples.png and {name}_curves.png to {image_dir}")
        _save(gan.generator, out, f"{name} generator")
        _pictures.grid(plots, "samples", gan.sample(64) if plots else None, "64 samples",
                       nrow=8, value_range=(-1, 1), scale=6 if name == "gan" else 3)
        _pictures.curves(plots, history, f"{name.upper()} on digits",
                         groups=[("d_loss", "g_loss"), ("d_real", "d_fake")])
        return metrics
    raise ValueError(f"generative recipes: unknown model {name!r}; choose from "
                     f"ae, vae, gan, dcgan, wgan")
