"""A GAN of Dense layers on the 8x8 digits (the lecture's fully connected GAN).

Generator Dense 32-256-256-64 (LeakyReLU 0.2, Tanh output); discriminator Dense 64-256-256-1
(LeakyReLU 0.2, one logit). Alternating updates: the discriminator learns real -> 1, generated
-> 0; the generator learns to make the frozen discriminator say 1 (non-saturating loss).
Adam(2e-4, betas=(0.5, 0.999)) for both; digits scaled to [-1, 1]. A small CNN trained on the
real digits then labels 1000 samples; its mean max-probability is printed (confident labels mean
digit-like samples, the class histogram shows whether the generator collapsed onto a few
digits). Saves examples/output/gan_samples.png and gan_curves.png (d_loss and g_loss).

    python examples/gan_digits.py        # a few minutes on 2 cores
    python examples/gan_digits.py --epochs 20  # a shorter run
"""
import os

from fastnn.recipes.generative import train

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def main(epochs=None, seed=0, verbose=1, image_dir=OUTPUT):
    """Train (``epochs=None``: 150), print the metrics and return them (``image_dir=None``: no
    images)."""
    return train("gan", epochs=epochs, seed=seed, verbose=verbose, image_dir=image_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Dense GAN on the 8x8 digits")
    parser.add_argument("--epochs", type=int, help="a shorter run (default 150)")
    main(parser.parse_args().epochs)
