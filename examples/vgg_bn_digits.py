"""A VGG-style CNN with batch norm and dropout on the 8x8 digits.

VGG's pattern: stages of two 3x3 convolutions (each followed by batch norm and ReLU) and a 2x2
max pool, channels doubling from stage to stage, then a small classifier with dropout:

    [Conv3x3(1->16)-BN-ReLU, Conv3x3(16->16)-BN-ReLU, MaxPool 2]   8x8 -> 4x4
    [Conv3x3(16->32)-BN-ReLU, Conv3x3(32->32)-BN-ReLU, MaxPool 2]  4x4 -> 2x2
    Flatten, Dropout(0.3), Dense(128, 64), ReLU, Dropout(0.3), Dense(64, 10)

Trained with Adam on three quarters of the digits (a tenth of them held back for validation,
reported per epoch), scored on the held-out quarter; batch norm uses its running statistics and
dropout is off at test time. Bar: >= 97% test accuracy.

    python examples/vgg_bn_digits.py
"""
import time

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import load_digits


def conv_bn_relu(cin, cout):
    return [L.Conv2D(cin, cout, 3, padding=1), L.BatchNorm2D(cout), L.ReLU()]


def vgg_bn(widths=(16, 32), dropout=0.3):
    stack, cin = [], 1
    for width in widths:
        stack += conv_bn_relu(cin, width) + conv_bn_relu(width, width) + [L.MaxPool2D(2)]
        cin = width
    side = 8 // 2 ** len(widths)
    return fnn.Sequential(*stack, L.Flatten(), L.Dropout(dropout), L.Dense(cin * side * side, 64),
                          L.ReLU(), L.Dropout(dropout), L.Dense(64, 10))


def main(epochs=15, lr=2e-3, seed=0, verbose=True):
    t0 = time.perf_counter()
    fnn.seed(seed)
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    n_val = len(X) // 10
    (Xv, yv), (X, y) = (X[:n_val], y[:n_val]), (X[n_val:], y[n_val:])
    model = vgg_bn()
    history = model.fit(X, y, loss="cross_entropy",
                        optimizer=fnn.optim.Adam(model.parameters(), lr=lr), epochs=epochs,
                        batch_size=32, validation_data=(Xv, yv), metrics=["accuracy"],
                        verbose=2 if verbose else 0)
    result = model.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])
    metrics = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "val_accuracy": float(history.history["val_accuracy"][-1]),
               "seconds": time.perf_counter() - t0}
    if verbose:
        print(f"VGG-BN: test accuracy {metrics['test_accuracy']:.4f} on {len(Xt)} held-out "
              f"digits (bar: >= 0.97); {metrics['seconds']:.1f} s")
    return metrics


if __name__ == "__main__":
    # batches of 32 tiny digits are too small to share between threads: the threads' wake-ups
    # and barriers cost more than the work (and far more on a busy machine)
    fnn.set_num_threads(1)
    main()
