"""PSNR, SSIM, image grids and training curves (fastnn/_imaging.py)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn._imaging import psnr, save_image_grid, save_training_curves, ssim


def _noisy_pair(seed, shape, noise=0.1):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + noise * rng.standard_normal(shape), 0, 1)


# --- PSNR ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 8), (4, 1, 8, 8)])
def test_psnr_identical_images_is_inf(shape):
    a, _ = _noisy_pair(0, shape)
    assert psnr(a, a.copy(), data_range=1.0) == math.inf


@pytest.mark.parametrize("offset, data_range, expected", [(0.1, 1.0, 20.0), (0.01, 1.0, 40.0),
                                                          (25.5, 255, 20.0), (0.2, 2.0, 20.0)])
def test_psnr_constant_offset_closed_form(offset, data_range, expected):
    # mse = offset**2, so psnr = 20 log10(data_range / offset)
    a = np.zeros((2, 1, 6, 5))
    assert psnr(a, a + offset, data_range) == pytest.approx(expected, abs=1e-9)


def test_psnr_is_symmetric_and_dtype_independent():
    a, b = _noisy_pair(1, (2, 3, 9, 9))
    assert psnr(a, b, 1.0) == pytest.approx(psnr(b, a, 1.0), abs=1e-12)
    assert psnr(a.astype(np.float32), b.astype(np.float32), 1.0) == pytest.approx(psnr(a, b, 1.0),
                                                                                  abs=1e-4)


def test_psnr_falls_as_noise_grows():
    a, b_low = _noisy_pair(2, (4, 1, 8, 8), noise=0.05)
    _, b_high = _noisy_pair(2, (4, 1, 8, 8), noise=0.3)
    assert psnr(a, b_low, 1.0) > psnr(a, b_high, 1.0)


# --- SSIM ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, 16), (3, 12, 14), (2, 2, 11, 11)])
def test_ssim_identical_images_is_one(shape):
    a, _ = _noisy_pair(3, shape)
    assert ssim(a, a.copy(), data_range=1.0) == pytest.approx(1.0, abs=1e-12)


@given(c1=st.floats(0, 1), c2=st.floats(0, 1))
def test_ssim_of_constant_images_is_the_luminance_term(c1, c2):
    # zero variances and covariance: SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1) everywhere
    a, b = np.full((1, 12, 12), c1), np.full((1, 12, 12), c2)
    C1 = (0.01 * 1.0) ** 2
    expected = (2 * c1 * c2 + C1) / (c1 * c1 + c2 * c2 + C1)
    assert ssim(a, b, 1.0) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ssim_of_negated_zero_mean_pattern_with_large_range():
    # b = -a (a zero-mean checkerboard): cov = -var; with the luminance term ~1 and C2 negligible
    # against var, SSIM is close to -1 (a structure-reversed image)
    a = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0
    value = ssim(a, -a, data_range=2.0)
    assert -1.0 <= value < -0.99


def test_ssim_batches_average_channel_and_image_values():
    a, b = _noisy_pair(4, (2, 3, 12, 12))
    per_channel = [ssim(a[i, c], b[i, c], 1.0) for i in range(2) for c in range(3)]
    assert ssim(a, b, 1.0) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert ssim(a[0], b[0], 1.0) == pytest.approx(np.mean(per_channel[:3]), abs=1e-12)


def test_ssim_falls_as_noise_grows_and_is_symmetric():
    a, b_low = _noisy_pair(5, (3, 1, 16, 16), noise=0.05)
    _, b_high = _noisy_pair(5, (3, 1, 16, 16), noise=0.3)
    assert 1.0 > ssim(a, b_low, 1.0) > ssim(a, b_high, 1.0)
    assert ssim(a, b_low, 1.0) == pytest.approx(ssim(b_low, a, 1.0), abs=1e-12)


def test_ssim_small_window_for_8x8_digits():
    a, b = _noisy_pair(6, (4, 1, 8, 8))
    with pytest.raises(ValueError, match="win_size 11 exceeds the image size 8x8"):
        ssim(a, b, 1.0)
    assert 0 < ssim(a, b, 1.0, win_size=7, sigma=1.0) < 1


@pytest.mark.parametrize("kwargs, match", [
    ({"data_range": 0}, "data_range"),
    ({"data_range": 1.0, "win_size": 4}, "odd"),
])
def test_ssim_rejects_bad_arguments(kwargs, match):
    a, b = _noisy_pair(7, (12, 12))
    with pytest.raises(ValueError, match=match):
        ssim(a, b, **kwargs)


@pytest.mark.parametrize("metric", [psnr, ssim])
def test_metrics_reject_mismatched_or_bad_shapes(metric):
    with pytest.raises(ValueError, match=r"same shape.*\(12, 12\).*\(12, 11\)"):
        metric(np.zeros((12, 12)), np.zeros((12, 11)), 1.0)
    with pytest.raises(ValueError, match="H, W"):
        metric(np.zeros(12), np.zeros(12), 1.0)


# --- agreement with scikit-image -------------------------------------------------------------------
@pytest.mark.parametrize("shape, win_size, sigma", [((2, 3, 20, 24), 11, 1.5),
                                                    ((5, 1, 8, 8), 7, 0.8),
                                                    ((16, 13), 11, 1.5)])
def test_psnr_ssim_agree_with_scikit_image(shape, win_size, sigma):
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _noisy_pair(8, shape)
    assert psnr(a, b, 1.0) == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=1.0),
                                            abs=1e-4)
    flat_a, flat_b = a.reshape(-1, *shape[-2:]), b.reshape(-1, *shape[-2:])
    # skimage's window radius is int(3.5 sigma + 0.5); the cases above use the same radius
    reference = np.mean([metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True,
                                                       sigma=sigma, win_size=win_size,
                                                       use_sample_covariance=False)
                         for x, y in zip(flat_a, flat_b)])
    assert ssim(a, b, 1.0, win_size=win_size, sigma=sigma) == pytest.approx(reference, abs=1e-4)


# --- image grid and curves -------------------------------------------------------------------------
def test_save_image_grid_writes_the_tiles(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images = np.zeros((5, 1, 3, 4), dtype=np.float32)
    images[2] = 1.0  # third tile white
    path = tmp_path / "grid.png"
    grid = save_image_grid(images, path, nrow=3, padding=1, scale=2, pad_value=0.5)
    # 2 rows x 3 cols of 6x8 tiles with 1-pixel padding
    assert grid.shape == (2 * 7 + 1, 3 * 9 + 1)
    loaded = np.asarray(Image.open(path))
    np.testing.assert_array_equal(loaded, grid)
    assert (grid[1:7, 1:9] == 0).all()                 # tile 0 black
    assert (grid[1:7, 1 + 2 * 9:9 + 2 * 9] == 255).all()  # tile 2 white
    assert (grid[0] == 128).all()                      # padding
    assert (grid[8:14, 1 + 2 * 9:9 + 2 * 9] == 128).all()  # empty sixth cell stays padding


def test_save_image_grid_value_range_and_rgb(tmp_path):
    pytest.importorskip("PIL.Image")
    images = np.full((2, 3, 4, 4), -1.0)
    images[1, 0] = 1.0
    grid = save_image_grid(images, tmp_path / "rgb.png", nrow=2, value_range=(-1, 1), padding=0)
    assert grid.shape == (4, 8, 3)
    assert (grid[:, :4] == 0).all()
    assert (grid[:, 4:, 0] == 255).all() and (grid[:, 4:, 1:] == 0).all()


def test_save_image_grid_rejects_bad_shapes(tmp_path):
    pytest.importorskip("PIL.Image")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(2, 2, 4, 4\)"):
        save_image_grid(np.zeros((2, 2, 4, 4)), tmp_path / "x.png")


def test_save_training_curves_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    save_training_curves({"d_loss": [1.3, 1.1, 0.9], "g_loss": [0.7, 0.9, 1.2], "note": "x"}, path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no numeric series"):
        save_training_curves({"note": "x"}, tmp_path / "empty.png")
