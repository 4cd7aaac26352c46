"""What the picture tests check in a PNG ``fastnn train`` drew: a real PNG that shows something,
and the DCGAN's samples grid and curves (checked on the full dcgan run of test_cli_train.py,
so the suite trains dcgan once)."""
import numpy as np


def picture(path):
    """The PNG as an RGB array; it must show something (not one flat colour)."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10
    return pixels


def check_dcgan_pictures(directory, out):
    """``fastnn train dcgan`` left its samples and curves in ``directory`` and said so in ``out``."""
    assert sorted(p.name for p in directory.glob("*.png")) == ["dcgan-curves.png", "dcgan-samples.png"]
    assert f"saved 64 samples to {directory / 'dcgan-samples.png'}" in out
    samples = picture(directory / "dcgan-samples.png")
    # an 8x8 grid of 48x48 tiles (16x16 images at scale 3) with 2-pixel padding
    assert samples.shape[:2] == (8 * 50 + 2, 8 * 50 + 2)
    curves = picture(directory / "dcgan-curves.png")
    assert curves.shape[1] > curves.shape[0]
