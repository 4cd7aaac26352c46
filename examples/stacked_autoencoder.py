"""A stacked autoencoder: greedy layer-wise pretraining, then fine-tuning as a classifier.

Pretraining (no labels): the first encoder Dense(64, 48)+Sigmoid learns to reconstruct the
images through a throw-away decoder Dense(48, 64)+Sigmoid (MSE); its codes are then the data on
which the second encoder Dense(48, 24)+Sigmoid learns the same way. Fine-tuning (labels): the two
pretrained encoders plus a fresh Dense(24, 10) softmax layer are trained end to end with
cross-entropy. Scored on the held-out quarter of the digits. Bar: >= 93% test accuracy.

    python examples/stacked_autoencoder.py
"""
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import load_digits


def pretrain(X, sizes=(64, 48, 24), epochs=30, lr=3e-3):
    """Train one Dense+Sigmoid encoder per pair of sizes, each on the codes of the one below;
    returns the encoder layers and the reconstruction MSE of each stage."""
    encoders, codes, errors = [], X, []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        encoder = [L.Dense(fan_in, fan_out), L.Sigmoid()]
        autoencoder = fnn.Sequential(*encoder, L.Dense(fan_out, fan_in), L.Sigmoid())
        history = autoencoder.fit(codes, codes, loss="mse",
                                  optimizer=fnn.optim.Adam(autoencoder.parameters(), lr=lr),
                                  epochs=epochs, batch_size=32, verbose=0)
        errors.append(float(history.history["loss"][-1]))
        codes = fnn.Sequential(*encoder).predict(codes)
        encoders.extend(encoder)
    return encoders, errors


def main(pretrain_epochs=30, finetune_epochs=30, lr=2e-3, seed=0, verbose=True):
    t0 = time.perf_counter()
    fnn.seed(seed)
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    X, Xt = X.reshape(len(X), -1), Xt.reshape(len(Xt), -1)
    encoders, errors = pretrain(X, epochs=pretrain_epochs)
    # images are in [0, 1]: a reconstruction MSE well under the pixel variance means the codes
    # kept the information
    pixel_variance = float(np.var(X))
    classifier = fnn.Sequential(*encoders, L.Dense(24, 10))
    classifier.fit(X, y, loss="cross_entropy",
                   optimizer=fnn.optim.Adam(classifier.parameters(), lr=lr),
                   epochs=finetune_epochs, batch_size=32, verbose=0)
    result = classifier.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])
    metrics = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "reconstruction_mse": errors, "pixel_variance": pixel_variance,
               "seconds": time.perf_counter() - t0}
    if verbose:
        print("pretraining reconstruction MSE per stage:", [round(e, 4) for e in errors],
              f"(pixel variance {pixel_variance:.4f})")
        print(f"fine-tuned 64-48-24-10: test accuracy {metrics['test_accuracy']:.4f} on "
              f"{len(Xt)} held-out digits (bar: >= 0.93); {metrics['seconds']:.1f} s")
    return metrics


if __name__ == "__main__":
    # batches of 32 tiny digits are too small to share between threads: the threads' wake-ups
    # and barriers cost more than the work (and far more on a busy machine)
    fnn.set_num_threads(1)
    main()
