"""Random search over the learning rate and the weight decay, scored on a validation split.

As in the lecture notes: hyperparameters are drawn log-uniformly (a learning rate in
[1e-4, 1e-1] and an L2 weight decay in [1e-6, 1e-2] for Adam), each draw trains the MLP
Dense 64-128-64-10 (ReLU) for a few epochs on the training split and is scored by its accuracy
on a validation split; the test quarter is touched once, by the best draw only. Bar: the best
configuration reaches >= 95% test accuracy. The worst draw is reported too: the spread (with
seed 0, learning rates near 1e-4 barely train in the epoch budget) is why one searches.

    python examples/random_search.py
"""
import time

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import load_digits


def mlp():
    return fnn.Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 64), L.ReLU(),
                          L.Dense(64, 10))


def log_uniform(gen, low, high):
    return float(np.exp(gen.uniform(np.log(low), np.log(high))))


def main(trials=10, epochs=20, lr_range=(1e-4, 1e-1), weight_decay_range=(1e-6, 1e-2), seed=0,
         verbose=True):
    t0 = time.perf_counter()
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    n_val = len(X) // 5
    (Xv, yv), (X, y) = (X[:n_val], y[:n_val]), (X[n_val:], y[n_val:])
    gen = np.random.default_rng(seed)   # the search's own draws, apart from training's
    results, best = [], None
    for trial in range(trials):
        lr, weight_decay = log_uniform(gen, *lr_range), log_uniform(gen, *weight_decay_range)
        fnn.seed(seed + trial)
        model = mlp()
        optimizer = fnn.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        model.fit(X, y, loss="cross_entropy", optimizer=optimizer, epochs=epochs, batch_size=32,
                  verbose=0, nan_guard=False)
        val = float(model.evaluate(Xv, yv, loss="cross_entropy", metrics=["accuracy"])["accuracy"])
        results.append({"lr": lr, "weight_decay": weight_decay, "val_accuracy": val})
        if verbose:
            print(f"trial {trial:2d}: lr {lr:.2e}  weight decay {weight_decay:.2e}  "
                  f"validation accuracy {val:.4f}")
        if best is None or val > best[0]["val_accuracy"]:
            best = (results[-1], model)
    config, model = best
    test = float(model.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])["accuracy"])
    vals = [r["val_accuracy"] for r in results]
    metrics = {"best_lr": config["lr"], "best_weight_decay": config["weight_decay"],
               "best_val_accuracy": config["val_accuracy"], "test_accuracy": test,
               "worst_val_accuracy": min(vals), "trials": results,
               "seconds": time.perf_counter() - t0}
    if verbose:
        print(f"best: lr {config['lr']:.2e}, weight decay {config['weight_decay']:.2e}, "
              f"validation accuracy {config['val_accuracy']:.4f}; test accuracy {test:.4f} on "
              f"{len(Xt)} held-out digits (bar: >= 0.95); worst validation accuracy "
              f"{min(vals):.4f}; {metrics['seconds']:.1f} s")
    return metrics


if __name__ == "__main__":
    # batches of 32 tiny digits are too small to share between threads: the threads' wake-ups
    # and barriers cost more than the work (and far more on a busy machine)
    fnn.set_num_threads(1)
    main()
