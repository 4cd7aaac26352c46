"""A small residual network on the 8x8 digits.

A stem convolution, then residual blocks ``y = relu(x + F(x))`` with
``F = Conv3x3-BN-ReLU-Conv3x3-BN`` (``fastnn.layers.Residual`` adds the skip connection), a
max pool between the two stages and global average pooling before the classifier:

    Conv3x3(1->16)-BN-ReLU                       8x8
    Residual(F16), ReLU, Residual(F16), ReLU     8x8
    MaxPool 2, Conv1x1(16->32)-BN-ReLU           4x4
    Residual(F32), ReLU                          4x4
    AvgPool 4 (global), Flatten, Dense(32, 10)

Trained with Adam on three quarters of the digits, scored on the held-out quarter. Bar: >= 97%
test accuracy.

    python examples/resnet_digits.py
"""
import time

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import load_digits


def residual_block(channels):
    return L.Residual(fnn.Sequential(
        L.Conv2D(channels, channels, 3, padding=1), L.BatchNorm2D(channels), L.ReLU(),
        L.Conv2D(channels, channels, 3, padding=1), L.BatchNorm2D(channels)))


def resnet(width=16):
    return fnn.Sequential(
        L.Conv2D(1, width, 3, padding=1), L.BatchNorm2D(width), L.ReLU(),
        residual_block(width), L.ReLU(), residual_block(width), L.ReLU(),
        L.MaxPool2D(2), L.Conv2D(width, 2 * width, 1), L.BatchNorm2D(2 * width), L.ReLU(),
        residual_block(2 * width), L.ReLU(),
        L.AvgPool2D(4), L.Flatten(), L.Dense(2 * width, 10))


def main(epochs=12, lr=2e-3, seed=0, verbose=True):
    t0 = time.perf_counter()
    fnn.seed(seed)
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    model = resnet()
    model.fit(X, y, loss="cross_entropy", optimizer=fnn.optim.Adam(model.parameters(), lr=lr),
              epochs=epochs, batch_size=32, verbose=2 if verbose else 0)
    result = model.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])
    metrics = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "parameters": sum(p.data.size for p in model.parameters()),
               "seconds": time.perf_counter() - t0}
    if verbose:
        print(f"ResNet ({metrics['parameters']:,} parameters): test accuracy "
              f"{metrics['test_accuracy']:.4f} on {len(Xt)} held-out digits (bar: >= 0.97); "
              f"{metrics['seconds']:.1f} s")
    return metrics


if __name__ == "__main__":
    # batches of 32 tiny digits are too small to share between threads: the threads' wake-ups
    # and barriers cost more than the work (and far more on a busy machine)
    fnn.set_num_threads(1)
    main()
