"""Logistic regression on the digits: tell 3s from 8s, two of the most confusable classes.

One Dense(64, 1) layer gives a logit per image; ``BCEWithLogits`` is the log-loss of
``sigmoid(logit)``. Trained with Adam on three quarters of the 3s and 8s, scored on the held-out
quarter. scikit-learn's ``LogisticRegression`` (same model, L-BFGS, L2 penalty C=1) trained on the
same split is the yardstick. Bar: >= 95% test accuracy and within 3 points of scikit-learn.

    python examples/logistic_regression.py
"""
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import load_digits, train_test_split

POSITIVE, NEGATIVE = 8, 3


def load_pair(seed=0):
    X, y = load_digits(return_split=False)
    keep = (y == POSITIVE) | (y == NEGATIVE)
    X = X[keep].reshape(keep.sum(), -1)
    t = (y[keep] == POSITIVE).astype(np.float32)[:, None]   # 1 for an 8, 0 for a 3
    return train_test_split(X, t, test_size=0.25, seed=seed)


def main(epochs=60, lr=0.02, seed=0, verbose=True):
    t0 = time.perf_counter()
    fnn.seed(seed)
    (X, t), (Xt, tt) = load_pair(seed)
    model = fnn.Sequential(L.Dense(64, 1))
    model.fit(X, t, loss="bce_with_logits", optimizer=fnn.optim.Adam(model.parameters(), lr=lr),
              epochs=epochs, batch_size=32, verbose=0)
    result = model.evaluate(Xt, tt, loss="bce_with_logits", metrics=["accuracy"])
    seconds = time.perf_counter() - t0

    from sklearn.linear_model import LogisticRegression
    reference = LogisticRegression(max_iter=2000).fit(X, t.ravel())
    metrics = {"test_accuracy": float(result["accuracy"]), "test_loss": float(result["loss"]),
               "sklearn_test_accuracy": float(reference.score(Xt, tt.ravel())),
               "n_test": len(Xt), "seconds": seconds}
    if verbose:
        print(f"{POSITIVE} vs {NEGATIVE}: test accuracy {metrics['test_accuracy']:.4f} on "
              f"{len(Xt)} held-out digits (bar: >= 0.95), scikit-learn "
              f"{metrics['sklearn_test_accuracy']:.4f}; {seconds:.1f} s")
    return metrics


if __name__ == "__main__":
    # batches of 32 tiny digits are too small to share between threads: the threads' wake-ups
    # and barriers cost more than the work (and far more on a busy machine)
    fnn.set_num_threads(1)
    main()
