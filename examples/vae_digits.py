"""Variational autoencoder on the 8x8 digits.

Encoder Dense 64-256-(2x8) gives the mean and log-variance of q(z|x); z = mu + exp(logvar/2) *
eps; decoder Dense 8-256-64 with a Sigmoid output; loss = BCE reconstruction (summed over the
64 pixels) + KL(q(z|x) || N(0, I)), Adam(1e-3), 100 epochs. Reports the test -ELBO and its
terms, the PSNR of the deterministic reconstructions, and how confidently a small CNN trained on
the real digits classifies 1000 prior samples. Saves to examples/output/:

- vae_samples.png        64 decoded draws from the prior N(0, I)
- vae_interpolation.png  one row per pair of test digits (0->2, 1->3, ..., 7->9): decodings of
                         10 evenly spaced points between their posterior means
- vae_curves.png         loss, reconstruction and KL per epoch

    python examples/vae_digits.py        # well under a minute on 2 cores
    python examples/vae_digits.py --epochs 5   # a shorter run
"""
import os

from fastnn.recipes.generative import train

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def main(epochs=None, seed=0, verbose=1, image_dir=OUTPUT):
    """Train (``epochs=None``: 100), print the metrics and return them (``image_dir=None``: no
    images)."""
    return train("vae", epochs=epochs, seed=seed, verbose=verbose, image_dir=image_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="VAE on the 8x8 digits")
    parser.add_argument("--epochs", type=int, help="a shorter run (default 100)")
    main(parser.parse_args().epochs)
