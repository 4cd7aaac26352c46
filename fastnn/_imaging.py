"""Image quality metrics and image output: PSNR, SSIM, image grids and training curves.

    fnn.metrics.psnr(clean, restored, data_range=1.0)       # dB; inf for identical images
    fnn.metrics.ssim(clean, restored, data_range=1.0)       # Wang et al. (2004); 1.0 if identical
    save_image_grid(samples, "samples.png", nrow=8)         # needs Pillow (extra "images")
    save_training_curves(history, "curves.png")             # needs matplotlib (extra "plot")

Images are ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` (NCHW, as everywhere in fastnn).
PSNR and SSIM compute in float64 whatever the input dtype.
"""
import math

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["psnr", "ssim", "save_image_grid", "save_training_curves"]


def _image_pair(where, a, b, data_range):
    a = np.asarray(a)
    b = np.asarray(b)
    for name, img in (("a", a), ("b", b)):
        if img.dtype.kind not in "fiub":
            raise TypeError(f"{where}: {name} must be a real numeric array, got dtype {img.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{where}: images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (2, 3, 4) or a.size == 0:
        raise ValueError(f"{where}: images must be (H, W), (C, H, W) or (N, C, H, W) and "
                         f"non-empty, got {a.shape}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.number)) \
            or not data_range > 0 or not math.isfinite(data_range):
        raise ValueError(f"{where}: data_range must be a finite number > 0 (the span of possible "
                         f"pixel values, e.g. 1.0 for [0, 1] or 255 for uint8), got {data_range!r}")
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False), float(data_range)


def psnr(a, b, data_range):
    """Peak signal-to-noise ratio in dB: ``10 * log10(data_range**2 / mean((a - b)**2))``.

    The mean runs over every element of the arrays (all images and channels together, as
    ``skimage.metrics.peak_signal_noise_ratio``). Identical images give ``inf``.

    Args:
        a, b: images of one shape, ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``.
        data_range: the span of possible pixel values (1.0 for images in ``[0, 1]``, 2.0 for
            ``[-1, 1]``, 255 for 8-bit images).
    """
    a, b, data_range = _image_pair("psnr", a, b, data_range)
    diff = a - b
    mse = float(np.vdot(diff, diff)) / diff.size
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def ssim(a, b, data_range, win_size=11, sigma=1.5, K1=0.01, K2=0.03):
    """Mean structural similarity (Wang, Bovik, Sheikh and Simoncelli, 2004).

    Local statistics come from a Gaussian window (standard deviation ``sigma``, truncated to
    ``win_size x win_size``, reflected at the borders); with ``C1 = (K1 * data_range)**2`` and
    ``C2 = (K2 * data_range)**2`` the SSIM map is

        ((2 mu_a mu_b + C1) (2 cov_ab + C2)) / ((mu_a**2 + mu_b**2 + C1) (var_a + var_b + C2))

    (population variances). The map is averaged over the pixels at least ``(win_size - 1) // 2``
    from every border, then over channels and images. Equals
    ``skimage.metrics.structural_similarity(a, b, data_range=..., gaussian_weights=True,
    sigma=sigma, use_sample_covariance=False)`` when skimage's window has the same radius.

    Args:
        a, b: images of one shape, ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``; each channel
            of each image is compared separately.
        data_range: the span of possible pixel values (1.0 for images in ``[0, 1]``).
        win_size: odd window side, 11 by default (the paper's). It must not exceed ``H`` or
            ``W``: for 8x8 digits use e.g. ``win_size=7, sigma=1.0``.
        sigma: standard deviation of the Gaussian window, 1.5 by default.
        K1, K2: the stabilising constants, 0.01 and 0.03 by default.

    Returns a float in ``[-1, 1]``; 1.0 for identical images.
    """
    a, b, data_range = _image_pair("ssim", a, b, data_range)
    height, width = a.shape[-2:]
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) \
            or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be an odd positive int, got {win_size!r}")
    if win_size > min(height, width):
        raise ValueError(f"ssim: win_size {win_size} exceeds the image size {height}x{width} "
                         f"(images {a.shape}); pass an odd win_size <= {min(height, width)}, "
                         f"e.g. win_size=7, sigma=1.0 for 8x8 images")
    if not sigma > 0:
        raise ValueError(f"ssim: sigma must be > 0, got {sigma!r}")
    if K1 < 0 or K2 < 0:
        raise ValueError(f"ssim: K1 and K2 must be >= 0, got {K1!r} and {K2!r}")
    radius = (win_size - 1) // 2
    # filter only the two spatial axes; the window is cut at `radius` pixels
    sigmas = (0.0,) * (a.ndim - 2) + (sigma, sigma)

    def window_mean(img):
        return gaussian_filter(img, sigmas, mode="reflect", truncate=radius / sigma)

    mu_a, mu_b = window_mean(a), window_mean(b)
    var_a = window_mean(a * a) - mu_a * mu_a
    var_b = window_mean(b * b) - mu_b * mu_b
    cov_ab = window_mean(a * b) - mu_a * mu_b
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / \
        ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    inner = ssim_map[..., radius:height - radius, radius:width - radius]
    # mean per channel of each image, then over channels and images (all have equal weight)
    return float(inner.mean())


def _import_pillow():
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("save_image_grid needs Pillow: pip install 'fastnn[images]' "
                          "(or pip install pillow)") from err
    return Image


def save_image_grid(images, path, nrow=8, value_range=(0.0, 1.0), padding=2, scale=1,
                    pad_value=1.0):
    """Tile a batch of images into one grid and write it as a PNG (needs Pillow).

    Args:
        images: ``(N, C, H, W)`` with ``C`` 1 (grey) or 3 (RGB), or ``(N, H, W)`` grey.
        path: output file (a ``.png``).
        nrow: images per row of the grid.
        value_range: ``(low, high)`` of the pixel values, mapped to 0..255 and clipped
            (``(-1, 1)`` for a Tanh generator's output).
        padding: pixels between the tiles (and around them), filled with ``pad_value``
            (in the units of ``value_range``' output, 0 = black, 1 = white).
        scale: integer nearest-neighbour enlargement of every pixel (8x8 digits are tiny).

    Returns the grid as a ``uint8`` array ``(rows, cols)`` or ``(rows, cols, 3)``.
    """
    Image = _import_pillow()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"save_image_grid: images must be (N, C, H, W) with C in (1, 3) or "
                         f"(N, H, W), N >= 1, got {np.shape(images)}")
    if images.dtype.kind not in "fiub":
        raise TypeError(f"save_image_grid: images must be numeric, got dtype {images.dtype}")
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"save_image_grid: nrow must be an int >= 1, got {nrow!r}")
    if not isinstance(scale, (int, np.integer)) or scale < 1 or padding < 0:
        raise ValueError(f"save_image_grid: scale must be an int >= 1 and padding >= 0, got "
                         f"scale={scale!r}, padding={padding!r}")
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"save_image_grid: value_range must be (low, high) with high > low, "
                         f"got {value_range!r}")
    n, channels, height, width = images.shape
    unit = np.clip((images.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    if scale > 1:
        unit = unit.repeat(scale, axis=2).repeat(scale, axis=3)
        height, width = height * scale, width * scale
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((channels, rows * (height + padding) + padding,
                    cols * (width + padding) + padding), float(pad_value))
    # place every tile with one strided assignment: grid viewed as (C, rows, cols, H, W)
    tiles = np.full((rows * cols, channels, height, width), float(pad_value))
    tiles[:n] = unit
    tiles = tiles.reshape(rows, cols, channels, height, width).transpose(2, 0, 3, 1, 4)
    body = grid[:, padding:, padding:].reshape(channels, rows, height + padding,
                                               cols, width + padding)
    body[:, :, :height, :, :width] = tiles
    grid[:, padding:, padding:] = body.reshape(channels, rows * (height + padding),
                                               cols * (width + padding))
    pixels = np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)
    pixels = pixels[0] if channels == 1 else pixels.transpose(1, 2, 0)
    Image.fromarray(pixels).save(path, format="PNG")
    return pixels


def save_training_curves(history, path, title=None, groups=()):
    """Plot every series of a training history against the epoch and save the figure
    (needs matplotlib; drawn off-screen on an Agg canvas, pyplot is not touched).

    One panel per quantity: ``"val_<name>"`` is drawn (dashed, "validation") in the panel of
    ``"<name>"`` (solid, "train"); a learning rate ``"lr"`` is drawn only if it changes (on a
    log scale); ``groups`` lists series to share a panel, e.g. ``[("d_loss", "g_loss")]``.

    Args:
        history: a ``History`` or a dict of series, e.g. ``{"loss": [...], "val_loss": [...],
            "accuracy": [...]}`` or ``{"d_loss": [...], "g_loss": [...]}``; non-numeric entries
            are skipped.
        path: output image file (format from its extension, e.g. ``.png``).
        title: optional figure title.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError("save_training_curves needs matplotlib: pip install 'fastnn[plot]' "
                          "(or pip install matplotlib)") from err
    if not hasattr(history, "items"):
        history = getattr(history, "history", history)
    if not hasattr(history, "items"):
        raise TypeError(f"save_training_curves: history must be a dict of series, got "
                        f"{type(history).__name__}")
    series = {}
    for name, values in history.items():
        try:
            values = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            continue
        if values.size:
            series[str(name)] = values
    if not series:
        raise ValueError(f"save_training_curves: history has no numeric series (keys "
                         f"{list(history)})")
    if "lr" in series and np.ptp(series["lr"]) == 0 and len(series) > 1:
        del series["lr"]  # a constant learning rate: nothing to see
    panels, grouped = {}, set()
    for group in groups:
        names = [n for n in group if n in series]
        if names:
            panels[" / ".join(names)] = names
            grouped.update(names)
    for name in series:
        if name in grouped:
            continue
        base = name[4:] if name.startswith("val_") and name[4:] in series else name
        panels.setdefault(base, []).append(name)
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    # a bare Figure on an Agg canvas: no pyplot, so the user's backend and figures are untouched
    fig = Figure(figsize=(4.3 * cols, 3.3 * rows + (0.4 if title else 0)))
    FigureCanvasAgg(fig)
    for k, (base, names) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        for name in names:
            values = series[name]
            validation = name != base and name == "val_" + base
            label = ("validation" if validation else "train") if name in (base, "val_" + base) \
                else name
            ax.plot(np.arange(1, values.size + 1), values, "--" if validation else "-",
                    marker="o" if values.size <= 30 else None, markersize=3, label=label)
        if base == "lr" and np.all(series[base] > 0) and np.ptp(series[base]) > 0:
            ax.set_yscale("log")
        ax.set_title(base)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(names) > 1:
            ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
