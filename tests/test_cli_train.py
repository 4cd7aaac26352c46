"""``fastnn train mlp|cnn|sae``: trains on the bundled digits, prints the test accuracy, writes a
checkpoint that ``fastnn.load`` rebuilds with the same predictions."""
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main
from fastnn.datasets import load_digits


@pytest.fixture(autouse=True)
def restore_threads():
    # the commands below pass --threads 1 (tiny batches: one thread is fastest and a busy shared
    # machine does not stall it); put the process-wide setting back afterwards
    previous = fnn.get_num_threads()
    yield
    fnn.set_num_threads(previous)


def printed_accuracy(out, name):
    match = re.search(rf"^{name}: test accuracy ([0-9.]+) on 449 held-out digits", out, re.M)
    assert match, out
    return float(match.group(1))


def test_train_mlp_default_reaches_95_percent_and_reloads(tmp_path, capsys):
    path = tmp_path / "m.npz"
    assert main(["train", "mlp", "--out", str(path), "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert printed_accuracy(out, "mlp") >= 0.95
    assert str(path) in out

    model = fnn.load(path)
    (_, _), (Xt, yt) = load_digits(test_size=0.25, seed=0)
    accuracy = float(np.mean(model.predict(Xt).argmax(-1) == yt))
    # the checkpoint holds the trained model: its accuracy is the one printed (4 decimals)
    assert accuracy == pytest.approx(printed_accuracy(out, "mlp"), abs=1e-4)
    again = fnn.load(path)
    np.testing.assert_array_equal(model.predict(Xt), again.predict(Xt))


@pytest.mark.parametrize("name, bar", [("cnn", 0.97), ("sae", 0.93)])
def test_train_cnn_and_sae_reach_their_bars_and_reload(tmp_path, capsys, name, bar):
    path = tmp_path / f"{name}.npz"
    assert main(["train", name, "--out", str(path), "--threads", "1", "--quiet",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    accuracy = printed_accuracy(out, name)
    assert accuracy >= bar
    (_, _), (Xt, yt) = load_digits(test_size=0.25, seed=1)
    model = fnn.load(path)
    assert float(np.mean(model.predict(Xt).argmax(-1) == yt)) == pytest.approx(accuracy, abs=1e-4)


def test_recipe_returns_what_it_prints(capsys):
    from fastnn import recipes

    metrics = recipes.train("mlp", epochs=2, out=None, verbose=0)
    out = capsys.readouterr().out
    assert metrics["test_accuracy"] == pytest.approx(printed_accuracy(out, "mlp"), abs=1e-4)
    assert np.isfinite(metrics["test_loss"]) and metrics["seconds"] > 0


def test_no_save_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "mlp", "--epochs", "1", "--no-save", "--quiet", "--threads", "1"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_is_a_clean_usage_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "transformer"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "mlp" in err


def test_bad_epochs_is_a_clean_usage_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["train", "mlp", "--epochs", "many"])
    assert excinfo.value.code == 2


def printed_psnr_ssim(out):
    match = re.search(r"^ae \(denoising\): test PSNR ([0-9.]+) dB noisy -> ([0-9.]+) dB denoised; "
                      r"SSIM ([0-9.]+) -> ([0-9.]+)", out, re.M)
    assert match, out
    return [float(v) for v in match.groups()]


def test_train_ae_is_the_denoising_autoencoder_and_beats_the_noisy_input(tmp_path, capsys):
    path = tmp_path / "ae.npz"
    assert main(["train", "ae", "--out", str(path), "--threads", "1", "--quiet"]) == 0
    noisy_psnr, denoised_psnr, noisy_ssim, denoised_ssim = printed_psnr_ssim(capsys.readouterr().out)
    assert denoised_psnr > noisy_psnr + 3.0      # a clear margin, not a rounding win
    assert denoised_ssim > noisy_ssim
    model = fnn.load(path)                       # the checkpoint is the trained denoiser
    (_, _), (Xt, _) = load_digits(test_size=0.25, seed=0)
    assert model.predict(Xt[:5]).shape == Xt[:5].shape


@pytest.mark.parametrize("name", ["vae", "gan", "dcgan", "wgan"])
def test_generative_recipes_train_report_and_save_a_loadable_model(tmp_path, capsys, name):
    # one epoch: that each command trains, judges its samples and saves what it says it saves;
    # the quality bars of these models are asserted by tests/test_examples.py
    path = tmp_path / f"{name}.npz"
    assert main(["train", name, "--epochs", "1", "--out", str(path), "--threads", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    confidence = re.search(r"(?:confidence on samples|mean max-probability) ([0-9.]+)", out)
    assert confidence and 0.1 <= float(confidence.group(1)) <= 1.0, out
    assert str(path) in out
    decoder = fnn.load(path)  # the VAE's decoder or the GAN's generator: latent codes in
    latent_dim = 8 if name == "vae" else 32
    images = decoder.predict(np.random.default_rng(0).standard_normal((3, latent_dim)))
    side = 8 if name in ("vae", "gan") else 16
    assert images.reshape(3, -1).shape == (3, side * side) and np.all(np.isfinite(images))


@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_default_dcgan_and_vae_samples_are_confidently_classified_digits_of_every_class(capsys, name):
    # the bar: a held-out digits classifier gives DCGAN samples mean max-probability
    # above 0.8; every class must appear (a collapsed generator can fool the judge with one digit)
    assert main(["train", name, "--no-save", "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"(?:confidence on samples|mean max-probability) ([0-9.]+).*?classes \[([0-9, ]+)\]", out)
    assert match, out
    assert float(match.group(1)) > 0.8
    counts = [int(c) for c in match.group(2).split(",")]
    assert len(counts) == 10 and min(counts) >= 20, counts
