"""``fastnn train mlp|cnn|sae``: classifiers on scikit-learn's bundled 8x8 digits.

The held-out quarter of the digits is the test set; a tenth of the rest is for validation.

- ``mlp``: Dense 64-128-64-10, ReLU (bar: >= 95% test accuracy);
- ``cnn``: a VGG-style network sized for 8x8 (two stages of 2x[Conv3x3-BatchNorm-ReLU] and a max
  pool, then Dropout-Dense 128-64-Dropout-Dense 64-10) (bar: >= 97%);
- ``sae``: a stacked autoencoder 64-48-24 pretrained greedily, layer by layer, then fine-tuned
  with a softmax layer on top (bar: >= 93%).

Under ``mpiexec -n K`` (``fastnn.distributed`` initialised with K > 1 ranks) ``mlp`` and ``cnn``
train data-parallel: the global batch stays 32 (32 // K rows per rank), so the run is the
single-process one up to rounding (and, for ``cnn``, each rank's own dropout masks); rank 0
prints and saves.
"""
import math
import time

from .. import layers as L
from .. import optim
from . import _pictures
from .._random import seed as set_seed
from ..callbacks import LearningRateScheduler
from ..datasets import load_digits
from ..model import Sequential


def _mlp():
    return Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 64), L.ReLU(),
                      L.Dense(64, 10))


def _conv_bn_relu(cin, cout):
    return [L.Conv2D(cin, cout, 3, padding=1), L.BatchNorm2D(cout), L.ReLU()]


def _cnn():
    # VGG's pattern sized for 8x8: two stages of 2x[Conv3x3-BN-ReLU] + MaxPool (8->4->2), then a
    # dropout-regularised classifier. A LeNet-pattern net without batch norm reached 96-98%
    # depending on the seed; this one, 15 epochs with cosine lr decay, 98.7-99.6% over seeds 0-5.
    return Sequential(*_conv_bn_relu(1, 16), *_conv_bn_relu(16, 16), L.MaxPool2D(2),
                      *_conv_bn_relu(16, 32), *_conv_bn_relu(32, 32), L.MaxPool2D(2),
                      L.Flatten(), L.Dropout(0.3), L.Dense(32 * 2 * 2, 64), L.ReLU(),
                      L.Dropout(0.3), L.Dense(64, 10))


def pretrain_stacked_autoencoder(X, sizes=(64, 48, 24), epochs=30, batch_size=32, verbose=0):
    """Greedy layer-wise pretraining: each Dense+Sigmoid encoder learns to reconstruct the codes
    of the layer below (through a throw-away decoder); returns the trained encoder layers."""
    encoders, codes = [], X
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        encoder = [L.Dense(fan_in, fan_out), L.Sigmoid()]
        ae = Sequential(*encoder, L.Dense(fan_out, fan_in), L.Sigmoid())
        ae.fit(codes, codes, loss="mse", optimizer=optim.Adam(ae.parameters(), lr=3e-3),
               epochs=epochs, batch_size=batch_size, verbose=verbose)
        codes = Sequential(*encoder).predict(codes)
        encoders.extend(encoder)
    return encoders


def train(name, epochs=None, seed=0, out=None, verbose=1, plots=None):
    start = time.perf_counter()
    set_seed(seed)
    (X, y), (Xt, yt) = load_digits(return_split=True, test_size=0.25, seed=seed)
    n_val = len(X) // 10
    (Xv, yv), (X, y) = (X[:n_val], y[:n_val]), (X[n_val:], y[n_val:])
    metrics = {}
    if name == "mlp":
        model, epochs, lr = _mlp(), epochs or 40, 2e-3
    elif name == "cnn":
        model, epochs, lr = _cnn(), epochs or 15, 2e-3
    elif name == "sae":
        flat = lambda a: a.reshape(len(a), -1)
        encoders = pretrain_stacked_autoencoder(flat(X), epochs=epochs or 40, verbose=verbose)
        # fine-tuning: the pretrained encoders plus a fresh softmax layer, trained end to end
        model, epochs, lr = Sequential(L.Flatten(), *encoders, L.Dense(24, 10)), epochs or 40, 2e-3
    else:
        raise ValueError(f"digits recipes: unknown model {name!r}")
    from .. import distributed
    parallel = distributed.is_initialized() and distributed.size() > 1 and name in ("mlp", "cnn")
    batch_size, lead = 32, True
    if parallel:
        model = distributed.DataParallel(model, sync_batchnorm=name == "cnn")
        batch_size = max(1, batch_size // distributed.size())
        lead = distributed.rank() == 0
    callbacks = []
    if name == "cnn":
        # cosine decay to 0: at a constant lr the last epoch's accuracy swung between 94.9% and
        # 99.3% over seeds and epoch counts (batch norm + dropout on 1,213 training digits)
        callbacks.append(LearningRateScheduler(
            lambda epoch, _: lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))))
    history = model.fit(X, y, loss="cross_entropy", optimizer=optim.Adam(model.parameters(), lr=lr),
                        epochs=epochs, batch_size=batch_size, validation_data=(Xv, yv),
                        metrics=["accuracy"], verbose=verbose, callbacks=callbacks)
    result = model.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])
    metrics.update({"test_loss": float(result["loss"]), "test_accuracy": float(result["accuracy"]),
                    "seconds": time.perf_counter() - start})
    if lead:
        print(f"{name}: test accuracy {metrics['test_accuracy']:.4f} on {len(Xt)} held-out digits "
              f"(test loss {metrics['test_loss']:.4f}, {metrics['seconds']:.1f} s)")
    if out:
        model.save(out)  # DataParallel: rank 0 writes
        if lead:
            print(f"saved checkpoint to {out}")
    if lead:  # DataParallel: rank 0 draws
        _pictures.curves(plots, history, f"{name} on digits" + (" (fine-tuning)" if name == "sae" else ""))
    return metrics


__all__ = ["train", "pretrain_stacked_autoencoder"]
