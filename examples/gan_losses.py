"""The GAN generator's saturating and non-saturating losses, and a measure of mode collapse (note 004).

The minimax game has the generator minimise ``log(1 - D(G(z)))`` ("saturating"). Early in
training the discriminator wins easily, ``D(G(z))`` is near 0, and there that loss is flat: its
gradient with respect to D's logit is ``-D(G(z))``, nearly zero. The note's fix (Goodfellow et
al.) is to maximise ``log D(G(z))`` instead, i.e. minimise ``-log D(G(z))`` ("non-saturating"),
whose gradient ``-(1 - D(G(z)))`` is largest exactly then. Same fixed point, different speed.

Both train the same dense GAN on the 8x8 digits (pixels in [0, 1]) from the same initial
weights and noise, with Adam(betas (0.5, 0.999)), learning rate 2e-4 for the generator and 1e-3
for the discriminator (a discriminator that is ahead, as it is early in most GANs):

    G: z (16) - Dense 128 - LeakyReLU 0.2 - Dense 64 - Sigmoid
    D: Dense 64-128 - LeakyReLU 0.2 - Dense 128-1 (a logit; BCEWithLogits)

Measured after every epoch and at the end:

- the Frechet distance between real test digits and 1000 samples, as Gaussians in pixel space
  (the FID formula without the Inception network; lower is better);
- the generator's gradient norm in the first epoch (the saturation itself);
- mode collapse: a digit classifier trained on the real training digits labels 1000 samples, and
  the entropy of the histogram of its labels is reported (log 10 = 2.30 nats when every digit is
  drawn equally often, 0 when the generator has collapsed onto one).

Bar (default 30 epochs): the non-saturating GAN gets its samples within a Frechet distance of 4
of the test digits in fewer epochs than the saturating one, its first-epoch generator gradients
are larger, and its samples' class entropy is at least 1.5 nats (exp(1.5) = 4.5 equally used
classes: no collapse onto one or two digits, which gives 0.7 or less).
Given long enough both end up alike: the saturating loss is slower, not wrong.

    python examples/gan_losses.py
"""
import time

import numpy as np
from scipy.linalg import sqrtm

import fastnn as fnn
from fastnn import layers as L
from fastnn.datasets import batches, load_digits
from fastnn.losses import BCEWithLogits
from fastnn.recipes.generative import digit_classifier, sample_confidence

LATENT = 16
FRECHET_GOAL = 4.0   # "has learned the digits' rough statistics"


def networks():
    generator = fnn.Sequential(L.Dense(LATENT, 128), L.LeakyReLU(0.2), L.Dense(128, 64), L.Sigmoid())
    discriminator = fnn.Sequential(L.Dense(64, 128), L.LeakyReLU(0.2), L.Dense(128, 1))
    return generator, discriminator


def frechet_distance(a, b):
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of Gaussians fitted to the rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ridge = 1e-6 * np.eye(a.shape[1])  # corner pixels never vary: keep the product invertible
    ca, cb = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = sqrtm(ca @ cb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(root)))


def class_entropy(histogram):
    p = np.asarray(histogram, np.float64) / np.sum(histogram)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def generator_grad(loss, logits):
    """d loss / d logits of the generator's loss on D's logits of its samples."""
    bce = BCEWithLogits()
    if loss == "non_saturating":          # minimise -log D(G(z)): BCE against "real"
        bce.forward(logits, np.ones_like(logits))
        return bce.backward()
    bce.forward(logits, np.zeros_like(logits))   # minimise log(1 - D(G(z))) = -BCE against "fake"
    return -bce.backward()


def train_gan(X, loss, epochs, seed, Xt, batch_size=64, d_lr=1e-3):
    fnn.seed(seed)
    generator, discriminator = networks()
    g_opt = fnn.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = fnn.optim.Adam(discriminator.parameters(), lr=d_lr, betas=(0.5, 0.999))
    bce = BCEWithLogits()
    gen = np.random.default_rng(seed)
    eval_z = gen.standard_normal((1000, LATENT)).astype(np.float32)
    real_test = Xt.reshape(len(Xt), 64)
    curve, first_grad_norms = [], []
    for epoch in range(epochs):
        for xb, _ in batches(X.reshape(len(X), 64), np.zeros(len(X)), batch_size, shuffle=True):
            n = len(xb)
            fake = generator.forward(gen.standard_normal((n, LATENT)).astype(np.float32))
            # discriminator: real -> 1, fake -> 0
            discriminator.zero_grad()
            bce.forward(discriminator.forward(xb), np.ones((n, 1), np.float32))
            discriminator.backward(bce.backward())
            bce.forward(discriminator.forward(fake), np.zeros((n, 1), np.float32))
            discriminator.backward(bce.backward())
            d_opt.step()
            # generator: through the (fixed) discriminator
            generator.zero_grad()
            dlogits = generator_grad(loss, discriminator.forward(fake))
            generator.backward(discriminator.backward(dlogits))
            if epoch == 0:
                first_grad_norms.append(float(np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum()
                                                          for p in generator.parameters()))))
            g_opt.step()
        curve.append(frechet_distance(generator.forward(eval_z, training=False), real_test))
    return generator, curve, float(np.mean(first_grad_norms))


def main(epochs=30, seed=0, verbose=True):
    t0 = time.perf_counter()
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    fnn.seed(seed)
    judge = digit_classifier(X, y, epochs=10)
    judge_acc = float(np.mean(judge.predict(Xt).argmax(1) == yt))
    m = {"judge_test_accuracy": judge_acc}
    samples_z = np.random.default_rng(seed + 1).standard_normal((1000, LATENT)).astype(np.float32)
    for loss in ("saturating", "non_saturating"):
        generator, curve, grad = train_gan(X, loss, epochs, seed, Xt)
        samples = generator.forward(samples_z, training=False).reshape(-1, 1, 8, 8)
        confidence, histogram = sample_confidence(judge, samples)
        m[loss] = {"frechet_curve": curve, "final_frechet": curve[-1], "first_epoch_grad_norm": grad,
                   "class_histogram": histogram.tolist(), "class_entropy": class_entropy(histogram),
                   "judge_confidence": confidence}
    m["real_frechet_floor"] = frechet_distance(X.reshape(len(X), 64), Xt.reshape(len(Xt), 64))
    s, ns = m["saturating"], m["non_saturating"]
    for r in (s, ns):   # the first epoch whose samples are within FRECHET_GOAL of the test digits
        hits = [e + 1 for e, d in enumerate(r["frechet_curve"]) if d <= FRECHET_GOAL]
        r["epochs_to_goal"] = hits[0] if hits else None
    m["bar_met"] = (ns["epochs_to_goal"] is not None
                    and (s["epochs_to_goal"] is None or ns["epochs_to_goal"] < s["epochs_to_goal"])
                    and ns["first_epoch_grad_norm"] > s["first_epoch_grad_norm"]
                    and ns["class_entropy"] >= 1.5)
    m["seconds"] = time.perf_counter() - t0
    if verbose:
        print(f"judge (digit CNN) test accuracy {judge_acc:.4f}; Frechet distance of real training "
              f"vs test digits {m['real_frechet_floor']:.2f} (the floor)")
        print("epoch  Frechet distance: saturating  non-saturating")
        for e in sorted(set(list(range(0, epochs, 5)) + [epochs - 1])):
            print(f"{e + 1:5d}  {s['frechet_curve'][e]:28.2f}  {ns['frechet_curve'][e]:14.2f}")
        for name, r in (("saturating", s), ("non-saturating", ns)):
            print(f"{name:15s} first-epoch |grad G| {r['first_epoch_grad_norm']:.4f}; samples' class "
                  f"histogram {r['class_histogram']}, entropy {r['class_entropy']:.2f} nats (max 2.30), "
                  f"judge confidence {r['judge_confidence']:.2f}")
        print(f"epochs to a Frechet distance <= {FRECHET_GOAL}: saturating {s['epochs_to_goal']}, "
              f"non-saturating {ns['epochs_to_goal']}")
        print(f"bar (non-saturating: there sooner, larger early gradients, class entropy >= 1.5): "
              f"{'met' if m['bar_met'] else 'MISSED'}; {m['seconds']:.1f} s")
    return m


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fnn.set_num_threads(1)
    main(epochs=args.epochs, seed=args.seed)
