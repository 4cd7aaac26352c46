"""The figures the notes draw, recomputed with fastnn, each with a measured claim (notes 000/001/003).

Five small experiments, each a function returning its numbers; with ``image_dir`` each also
writes a PNG (matplotlib needed; without it the numbers are still computed and the figure is
skipped with a message):

1. ``vanishing_gradients`` (``gradients_sigmoid_vs_relu.png``): the weight-gradient norm of each
   layer of a 10-layer MLP (64 units, Xavier init for sigmoid, He for ReLU) after one backward
   pass on a batch of digits. Sigmoid's derivative is at most 1/4, so the gradient shrinks layer
   by layer towards the input; ReLU passes it on. Claim: the first layer's gradient is below
   1/100 of the last hidden layer's with sigmoid, above 1/10 with ReLU.
2. ``activation_histograms`` (``activation_histograms.png``): 5 layers of 100 sigmoid units on
   1000 random inputs, weights drawn with std 0.01, Xavier (1/sqrt(n)) and, for ReLU units, He
   (sqrt(2/n)) (as "Deep Learning from Scratch" 6.2). Claim: with std 0.01 every sigmoid output
   sits near 0.5 (std of the 5th layer < 0.02: the units are near-copies of one another), Xavier
   keeps them spread (over 5 times that); ReLU with He keeps the 5th layer's spread within a
   factor 2 of the 1st's, ReLU with std 0.01 loses it (the 5th layer's std under 1/100 of the
   1st's).
3. ``optimizer_paths`` (``optimizers.png``): SGD, Momentum, AdaGrad, RMSProp and Adam on the
   book's f(x, y) = x^2 / 20 + y^2 from (-7, 2), 30 steps each, with the book's learning rates,
   through ``fnn.optim``. Claim: SGD zigzags across the narrow valley (its y changes sign at
   least 25 times in 30 steps), and AdaGrad, whose per-coordinate rates undo the valley's
   anisotropy, ends lower than SGD. (Which method wins depends on the problem and the rates:
   the book's figure shows no general order, and neither does this one.)
4. ``batch_norm_speed`` (``batch_norm.png``): a 6-layer MLP (100 units, ReLU, plain SGD lr 0.01)
   on the digits with and without ``BatchNorm1D`` after each hidden layer, validation accuracy
   per epoch. Claim: with batch norm it is ahead after every epoch.
5. ``augmentation_small_data`` (``augmentation.png``): a small CNN trained on 10% of the
   training digits, with and without random shifts of up to one pixel
   (``fnn.datasets.random_shift``), tested on the held-out digits as they are and shifted the
   same way (digits a scanner did not centre). Claim: augmentation raises the accuracy on the
   shifted held-out digits by >= 10 points. (On the centred ones it changes by a few points
   either way, depending on the seed: 8x8 digits come centred, so shifts buy nothing there.)

    python examples/lecture_figures.py --image-dir .
"""
import os

import numpy as np

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import batches, load_digits, random_shift


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, plt, image_dir, name):
    path = os.path.join(image_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _figure(image_dir, name, draw):
    """Write the figure ``name`` with ``draw(plt)`` when asked and matplotlib is there."""
    if image_dir is None:
        return None
    plt = _pyplot()
    if plt is None:
        print(f"matplotlib is not installed: skipping {name} (pip install '.[images]')")
        return None
    fig = draw(plt)
    return _save(fig, plt, image_dir, name)


# --- 1. vanishing gradients ------------------------------------------------------------------------
def vanishing_gradients(depth=10, width=64, seed=0, image_dir=None):
    (X, y), _ = load_digits(test_size=0.25, seed=seed)
    x, labels = X[:256].reshape(256, 64), y[:256]
    norms = {}
    for act, init in (("sigmoid", "xavier_normal"), ("relu", "he_normal")):
        fnn.seed(seed)
        layers, fan = [], 64
        for _ in range(depth):
            layers += [L.Dense(fan, width, weight_init=init), L.Sigmoid() if act == "sigmoid" else L.ReLU()]
            fan = width
        model = fnn.Sequential(*layers, L.Dense(width, 10))
        loss = fnn.losses.CrossEntropy()
        loss.forward(model.forward(x), labels)
        model.zero_grad()
        model.backward(loss.backward())
        norms[act] = [float(np.linalg.norm(layer.weight.grad)) for layer in model.layers[:-1:2]]
    r = {"norms": norms,
         "sigmoid_first_over_last": norms["sigmoid"][0] / norms["sigmoid"][-1],
         "relu_first_over_last": norms["relu"][0] / norms["relu"][-1]}
    r["claim"] = r["sigmoid_first_over_last"] < 0.01 and r["relu_first_over_last"] > 0.1

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        for act, v in norms.items():
            ax.semilogy(range(1, depth + 1), v, marker="o", label=act)
        ax.set_xlabel("hidden layer (1 = next to the input)")
        ax.set_ylabel("weight-gradient norm")
        ax.set_title(f"{depth}-layer MLP, one backward pass")
        ax.legend()
        return fig
    r["image"] = _figure(image_dir, "gradients_sigmoid_vs_relu.png", draw)
    return r


# --- 2. activation histograms ----------------------------------------------------------------------
def activation_histograms(layers=5, width=100, seed=0, image_dir=None):
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((1000, width))
    setups = {"sigmoid, std 0.01": (lambda n: 0.01, lambda a: 1 / (1 + np.exp(-a))),
              "sigmoid, Xavier": (lambda n: 1 / np.sqrt(n), lambda a: 1 / (1 + np.exp(-a))),
              "ReLU, He": (lambda n: np.sqrt(2 / n), lambda a: np.maximum(a, 0)),
              "ReLU, std 0.01": (lambda n: 0.01, lambda a: np.maximum(a, 0))}
    acts = {}
    for name, (std, _) in setups.items():
        act = L.Sigmoid() if name.startswith("sigmoid") else L.ReLU()
        h, outs = x, []
        for _ in range(layers):
            dense = L.Dense(width, width, bias=False).astype(np.float64)
            dense.load_state_dict({"weight": gen.standard_normal((width, width)) * std(width)})
            h = act.astype(np.float64).forward(dense.forward(h))
            outs.append(h)
        acts[name] = outs
    stds = {name: [float(a.std()) for a in outs] for name, outs in acts.items()}
    r = {"stds": stds,
         "sigmoid_small_last_std": stds["sigmoid, std 0.01"][-1],
         "sigmoid_xavier_last_std": stds["sigmoid, Xavier"][-1],
         "relu_he_last_over_first": stds["ReLU, He"][-1] / stds["ReLU, He"][0],
         "relu_small_last_over_first": stds["ReLU, std 0.01"][-1] / stds["ReLU, std 0.01"][0]}
    r["claim"] = (r["sigmoid_small_last_std"] < 0.02
                  and r["sigmoid_xavier_last_std"] > 5 * r["sigmoid_small_last_std"]
                  and 0.5 <= r["relu_he_last_over_first"] <= 2.0
                  and r["relu_small_last_over_first"] < 0.01)

    def draw(plt):
        fig, axes = plt.subplots(len(acts), layers, figsize=(2.2 * layers, 1.9 * len(acts)))
        for row, (name, outs) in zip(axes, acts.items()):
            for i, (ax, a) in enumerate(zip(row, outs)):
                ax.hist(a.ravel(), bins=30, range=(0, 1) if name.startswith("sigmoid") else None)
                ax.set_yticks([])
                ax.set_title(f"{name}: layer {i + 1}", fontsize=7)
        return fig
    r["image"] = _figure(image_dir, "activation_histograms.png", draw)
    return r


# --- 3. optimizers on one problem ------------------------------------------------------------------
def optimizer_paths(steps=30, image_dir=None):
    def f(p):
        return p[0] ** 2 / 20 + p[1] ** 2

    def grad(p):
        return np.array([p[0] / 10, 2 * p[1]])

    makers = {"SGD": lambda ps: fnn.optim.SGD(ps, lr=0.95),
              "Momentum": lambda ps: fnn.optim.SGD(ps, lr=0.1, momentum=0.9),
              "AdaGrad": lambda ps: fnn.optim.AdaGrad(ps, lr=1.5),
              "RMSProp": lambda ps: fnn.optim.RMSProp(ps, lr=0.15, alpha=0.9),
              "Adam": lambda ps: fnn.optim.Adam(ps, lr=0.3)}
    paths = {}
    for name, make in makers.items():
        p = L.Parameter("xy", np.array([-7.0, 2.0]))
        opt, path = make([p]), [p.data.copy()]
        for _ in range(steps):
            p.grad[...] = grad(p.data)
            opt.step()
            path.append(p.data.copy())
        paths[name] = np.array(path)
    final = {name: float(f(path[-1])) for name, path in paths.items()}
    sgd_y = paths["SGD"][:, 1]
    r = {"final_f": final, "start_f": float(f(np.array([-7.0, 2.0]))),
         "sgd_y_sign_changes": int(np.sum(np.sign(sgd_y[1:]) != np.sign(sgd_y[:-1])))}
    r["claim"] = r["sgd_y_sign_changes"] >= 25 and final["AdaGrad"] < final["SGD"]

    def draw(plt):
        fig, axes = plt.subplots(1, len(paths), figsize=(3.2 * len(paths), 3))
        gx, gy = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 200))
        for ax, (name, path) in zip(axes, paths.items()):
            ax.contour(gx, gy, gx ** 2 / 20 + gy ** 2, levels=12, linewidths=0.5)
            ax.plot(path[:, 0], path[:, 1], "o-", ms=2, color="red")
            ax.set_title(f"{name}: f = {final[name]:.2g}", fontsize=9)
        return fig
    r["image"] = _figure(image_dir, "optimizers.png", draw)
    return r


# --- 4. batch norm ---------------------------------------------------------------------------------
def batch_norm_speed(epochs=5, depth=6, width=100, lr=0.01, seed=0, image_dir=None):
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    curves = {}
    for bn in (False, True):
        fnn.seed(seed)
        layers, fan = [L.Flatten()], 64
        for _ in range(depth - 1):
            layers += [L.Dense(fan, width)] + ([L.BatchNorm1D(width)] if bn else []) + [L.ReLU()]
            fan = width
        model = fnn.Sequential(*layers, L.Dense(width, 10))
        h = model.fit(X, y, loss="cross_entropy", optimizer=fnn.optim.SGD(model.parameters(), lr=lr),
                      epochs=epochs, batch_size=32, validation_data=(Xt, yt), metrics=["accuracy"],
                      verbose=0)
        curves["with batch norm" if bn else "without"] = [float(a) for a in h.history["val_accuracy"]]
    r = {"val_accuracy": curves}
    r["claim"] = all(b > a for a, b in zip(curves["without"], curves["with batch norm"]))

    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, c in curves.items():
            ax.plot(range(1, epochs + 1), c, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{depth}-layer MLP, SGD lr {lr}")
        ax.legend()
        return fig
    r["image"] = _figure(image_dir, "batch_norm.png", draw)
    return r


# --- 5. data augmentation on a small training set --------------------------------------------------
def augmentation_small_data(fraction=0.1, epochs=60, seed=0, image_dir=None):
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    n = int(round(fraction * len(X)))
    X, y = X[:n], y[:n]
    fnn.seed(seed + 1)
    tests = {"centred": Xt, "shifted": random_shift(Xt, 1)}
    acc = {}
    for shift in (0, 1):
        fnn.seed(seed)
        model = fnn.Sequential(L.Conv2D(1, 16, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                               L.Conv2D(16, 32, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
                               L.Flatten(), L.Dense(32 * 2 * 2, 10))
        opt = fnn.optim.Adam(model.parameters(), lr=3e-3)
        loss = fnn.losses.CrossEntropy()
        for _ in range(epochs):
            for xb, yb in batches(X, y, 32, shuffle=True):
                xb = random_shift(xb, shift) if shift else xb
                model.zero_grad()
                loss.forward(model.forward(xb), yb)
                model.backward(loss.backward())
                opt.step()
        acc["trained on shifted digits" if shift else "plain"] = {
            name: float(np.mean(model.predict(Xs).argmax(1) == yt)) for name, Xs in tests.items()}
    r = {"train_size": n, "test_accuracy": acc}
    r["claim"] = (acc["trained on shifted digits"]["shifted"] >= acc["plain"]["shifted"] + 0.10)

    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        width = 0.38
        for i, (name, color) in enumerate((("plain", "gray"),
                                           ("trained on shifted digits", "tab:blue"))):
            ax.bar(np.arange(len(tests)) + (i - 0.5) * width, [acc[name][t] for t in tests],
                   width, color=color, label=name)
        ax.set_xticks(np.arange(len(tests)), [f"{t} held-out digits" for t in tests])
        ax.set_ylim(0.3, 1.12)
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"CNN on {n} training digits ({fraction:.0%})")
        ax.legend(loc="upper center", ncol=2, fontsize="small")
        return fig
    r["image"] = _figure(image_dir, "augmentation.png", draw)
    return r


def main(image_dir=None, seed=0, verbose=True):
    results = {"vanishing_gradients": vanishing_gradients(seed=seed, image_dir=image_dir),
               "activation_histograms": activation_histograms(seed=seed, image_dir=image_dir),
               "optimizer_paths": optimizer_paths(image_dir=image_dir),
               "batch_norm_speed": batch_norm_speed(seed=seed, image_dir=image_dir),
               "augmentation_small_data": augmentation_small_data(seed=seed, image_dir=image_dir)}
    results["bar_met"] = all(r["claim"] for r in results.values())
    if verbose:
        v = results["vanishing_gradients"]
        print("1. gradient norm per layer (input side first):")
        for act, norms in v["norms"].items():
            print(f"   {act:8s}" + " ".join(f"{x:.1e}" for x in norms))
        a = results["activation_histograms"]
        print("2. activation std per layer:")
        for name, s in a["stds"].items():
            print(f"   {name:18s}" + " ".join(f"{x:.3f}" for x in s))
        o = results["optimizer_paths"]
        print("3. f after 30 steps from f = %.1f: " % o["start_f"]
              + ", ".join(f"{k} {v:.2e}" for k, v in o["final_f"].items()))
        b = results["batch_norm_speed"]
        print("4. held-out accuracy per epoch: "
              + "; ".join(f"{k} " + " ".join(f"{x:.3f}" for x in c) for k, c in b["val_accuracy"].items()))
        g = results["augmentation_small_data"]
        print(f"5. CNN on {g['train_size']} digits, held-out accuracy (centred, shifted): "
              + ", ".join(f"{k} {a['centred']:.4f} {a['shifted']:.4f}"
                          for k, a in g["test_accuracy"].items()))
        for name, r in results.items():
            if name != "bar_met":
                print(f"   {name}: claim {'holds' if r['claim'] else 'FAILS'}"
                      + (f"; wrote {r['image']}" if r.get("image") else ""))
        print(f"bar (every claim holds): {'met' if results['bar_met'] else 'MISSED'}")
    return results


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fnn.set_num_threads(1)
    main(image_dir=args.image_dir, seed=args.seed)
