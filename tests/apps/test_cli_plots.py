"""``fastnn train`` draws pictures beside the checkpoint: a training-curve PNG for every model,
samples (and the VAE's interpolation, the autoencoder's reconstructions) for the generative
ones; ``--no-plots`` turns them off, and without matplotlib the command says how to get them."""
import importlib.util

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def restore_threads():
    previous = fnn.get_num_threads()
    yield
    fnn.set_num_threads(previous)


def _picture(path):
    """The PNG as an RGB array; it must show something (not one flat colour)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10
    return pixels


def _train(tmp_path, model, *extra):
    out = tmp_path / f"{model}.npz"
    assert main(["train", model, "--out", str(out), "--threads", "1", "--quiet", *extra]) == 0
    return sorted(p.name for p in tmp_path.glob("*.png"))


def test_dcgan_leaves_samples_and_curves(tmp_path, capsys):
    assert _train(tmp_path, "dcgan", "--epochs", "1") == ["dcgan-curves.png", "dcgan-samples.png"]
    out = capsys.readouterr().out
    assert f"saved 64 samples to {tmp_path / 'dcgan-samples.png'}" in out
    samples = _picture(tmp_path / "dcgan-samples.png")
    # an 8x8 grid of 48x48 tiles (16x16 images at scale 3) with 2-pixel padding
    assert samples.shape[:2] == (8 * 50 + 2, 8 * 50 + 2)
    curves = _picture(tmp_path / "dcgan-curves.png")
    assert curves.shape[1] > curves.shape[0]


def test_vae_and_ae_pictures(tmp_path):
    assert _train(tmp_path, "vae", "--epochs", "1") == [
        "vae-curves.png", "vae-interpolation.png", "vae-samples.png"]
    interpolation = _picture(tmp_path / "vae-interpolation.png")
    assert interpolation.shape[:2] == (8 * 34 + 2, 10 * 34 + 2)   # 8 pairs, 10 steps, 32 px
    assert _train(tmp_path, "ae", "--epochs", "1")[:2] == ["ae-curves.png", "ae-reconstructions.png"]
    rows = _picture(tmp_path / "ae-reconstructions.png")
    assert rows.shape[:2] == (3 * 34 + 2, 10 * 34 + 2)            # clean, noisy, denoised


def test_classifier_curves_and_no_plots(tmp_path):
    assert _train(tmp_path, "mlp", "--epochs", "2") == ["mlp-curves.png"]
    _picture(tmp_path / "mlp-curves.png")
    (tmp_path / "mlp-curves.png").unlink()
    assert _train(tmp_path, "mlp", "--epochs", "1", "--no-plots") == []


def test_without_matplotlib_the_command_says_how(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    assert _train(tmp_path, "mlp", "--epochs", "1") == []
    assert "pip install 'fastnn[plot]'" in capsys.readouterr().err
