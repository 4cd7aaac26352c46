"""DCGAN on the digits, upsampled (bilinear) from 8x8 to 16x16.

The DCGAN guidelines (Radford et al., 2016), from ``fastnn.models.gan.dcgan(32, image_size=16)``:
generator Reshape(32,1,1) - ConvTranspose2D(32,64,4) - BN - ReLU - ConvTranspose2D(64,32,4,s2,p1)
- BN - ReLU - ConvTranspose2D(32,1,4,s2,p1) - Tanh; discriminator Conv2D(1,32,4,s2,p1) -
LeakyReLU(0.2) - Conv2D(32,64,4,s2,p1) - BN - LeakyReLU(0.2) - Conv2D(64,1,4) (a logit, no
pooling); weights N(0, 0.02); Adam(2e-4, betas=(0.5, 0.999)); 30 epochs of batch 64.

Quality bar: a small CNN trained here on the real 8x8 digits (about 98% test accuracy) labels
1000 samples (mean-pooled back to 8x8) with average max-probability above 0.8.
Saves examples/output/dcgan_samples.png and dcgan_curves.png.

    python examples/dcgan_digits.py        # a few minutes on 2 cores
    python examples/dcgan_digits.py --epochs 5  # a shorter run
"""
import os
import sys

from fastnn.recipes.generative import train

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def main(epochs=None, seed=0, verbose=1, image_dir=OUTPUT):
    """Train (``epochs=None``: 30), print the metrics and whether the bar is met; returns the
    metrics with ``bar_met`` (``image_dir=None``: no images)."""
    metrics = train("dcgan", epochs=epochs, seed=seed, verbose=verbose, image_dir=image_dir)
    metrics["bar_met"] = metrics["sample_confidence"] > 0.8
    print(f"quality bar (judge's mean max-probability on samples > 0.8): "
          f"{metrics['sample_confidence']:.3f} {'met' if metrics['bar_met'] else 'MISSED'}")
    return metrics


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="DCGAN on the digits")
    parser.add_argument("--epochs", type=int, help="a shorter run (default 30)")
    sys.exit(0 if main(parser.parse_args().epochs)["bar_met"] else 1)
