"""``fastnn train`` draws pictures beside the checkpoint: a training-curve PNG for every model,
samples (and the VAE's interpolation, the autoencoder's reconstructions) for the generative
ones; ``--no-plots`` turns them off, and without matplotlib the command says how to get them.
The DCGAN's samples and curves are checked on test_cli_train.py's dcgan run (one dcgan training
in the suite)."""
import importlib.util

import pytest

import fastnn as fnn
from fastnn.cli import main

from pictures import picture as _picture

pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def restore_threads():
    previous = fnn.get_num_threads()
    yield
    fnn.set_num_threads(previous)


def _train(tmp_path, model, *extra):
    out = tmp_path / f"{model}.npz"
    assert main(["train", model, "--out", str(out), "--threads", "1", "--quiet", *extra]) == 0
    return sorted(p.name for p in tmp_path.glob("*.png"))


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
