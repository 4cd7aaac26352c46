"""Denoising autoencoder on the 8x8 digits.

A Dense 64-128-32-128-64 autoencoder (ReLU inside, Sigmoid output) learns to map digits with
Gaussian pixel noise (std 0.3, clipped to [0, 1]) back to the clean digits, with MSE and Adam.
On the held-out quarter of the digits it reports PSNR and SSIM (7x7 Gaussian window, sigma 1,
as the 11x11 default does not fit 8x8 images) of the noisy input and of the reconstruction,
both against the clean digits, and saves clean / noisy / denoised rows to
examples/output/denoising_autoencoder.png.

Quality bar: the reconstruction beats the noisy input by at least 3 dB PSNR and in SSIM.

    python examples/denoising_autoencoder.py        # a few seconds on 2 cores
"""
import os
import sys

from fastnn.recipes.generative import train

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")


def main(epochs=None, seed=0, verbose=1, image_dir=OUTPUT):
    """Train (``epochs=None``: 60), print the metrics and whether the bar is met; returns the
    metrics with ``bar_met`` (``image_dir=None``: no images)."""
    metrics = train("ae", epochs=epochs, seed=seed, verbose=verbose, image_dir=image_dir)
    metrics["bar_met"] = (metrics["denoised_psnr"] >= metrics["noisy_psnr"] + 3
                          and metrics["denoised_ssim"] > metrics["noisy_ssim"])
    print("quality bar (PSNR +3 dB and better SSIM than the noisy input):",
          "met" if metrics["bar_met"] else "MISSED")
    return metrics


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Denoising autoencoder on the 8x8 digits")
    parser.add_argument("--epochs", type=int, help="a shorter run (default 60)")
    sys.exit(0 if main(parser.parse_args().epochs)["bar_met"] else 1)
