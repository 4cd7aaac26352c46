"""Least-squares regression by gradient descent, checked against the closed form.

A single Dense layer (``y = x W^T + b``) trained with the mean squared error is linear least
squares. On generated data ``y = X w + b + noise`` we run plain full-batch gradient descent
(``batch_size = N``, SGD) in float64 and compare the learned ``W, b`` with
``numpy.linalg.lstsq`` on ``[X, 1]``. The MSE is convex, so gradient descent must land on the
closed-form minimiser: the bar is a largest weight difference below 1e-6.

    python examples/least_squares.py
"""
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L


def make_data(n=500, features=5, noise=0.1, seed=0):
    gen = np.random.default_rng(seed)
    X = gen.normal(size=(n, features))
    w_true = gen.normal(size=features)
    b_true = 0.5
    y = X @ w_true + b_true + noise * gen.normal(size=n)
    return X, y[:, None], w_true, b_true


def main(epochs=300, lr=0.2, n=500, features=5, seed=0, verbose=True):
    t0 = time.perf_counter()
    fnn.seed(seed)
    X, y, w_true, b_true = make_data(n, features, seed=seed)
    model = fnn.Sequential(L.Dense(features, 1)).astype(np.float64)
    # one step per epoch over the whole set: exact gradient descent on the MSE
    history = model.fit(X, y, loss="mse", optimizer=fnn.optim.SGD(model.parameters(), lr=lr),
                        epochs=epochs, batch_size=n, shuffle=False, verbose=0)
    w_fit = np.append(model[0].weight.data.ravel(), model[0].bias.data)

    design = np.hstack([X, np.ones((n, 1))])
    w_lstsq = np.linalg.lstsq(design, y.ravel(), rcond=None)[0]
    mse_lstsq = float(np.mean((design @ w_lstsq - y.ravel()) ** 2))
    metrics = {
        "max_weight_diff": float(np.max(np.abs(w_fit - w_lstsq))),
        "final_mse": float(history.history["loss"][-1]),
        "lstsq_mse": mse_lstsq,
        "max_true_weight_error": float(np.max(np.abs(w_fit - np.append(w_true, b_true)))),
        "seconds": time.perf_counter() - t0,
    }
    if verbose:
        print("gradient descent:", np.round(w_fit, 5))
        print("lstsq           :", np.round(w_lstsq, 5))
        print(f"largest difference {metrics['max_weight_diff']:.2e} (bar: < 1e-6); "
              f"MSE {metrics['final_mse']:.6f} vs closed form {mse_lstsq:.6f}; "
              f"{metrics['seconds']:.1f} s")
    return metrics


if __name__ == "__main__":
    main()
