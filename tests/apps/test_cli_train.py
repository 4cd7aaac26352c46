"""``fastnn train mlp|cnn|sae``: trains on the bundled digits, prints the test accuracy, writes a
checkpoint that ``fastnn.load`` rebuilds with the same predictions. ``fastnn train
ae|vae|dcgan|gan|wgan``: each meets its quality bar (wgan after 60 of its 300 epochs; the
generators' samples judged by tests/digit_judge.py) and saves the model that ``fastnn.load``
gives back."""
import importlib.util
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main
from fastnn.datasets import load_digits
from fastnn.models.gan import dcgan
from fastnn.recipes import generative

from digit_judge import (blurred_noise, judge, shuffled_pixels, sparse_pixels, train_judge,
                         uniform_noise)
from pictures import check_dcgan_pictures


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
        main(["train", "gpt"])
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


# --- the generative commands: samples the judges take for digits, of many classes ----------------
@pytest.fixture(scope="module")
def digit_judge():
    (X, y), _ = load_digits(test_size=0.25, seed=0)  # what the recipes train on (seed 0)
    previous = fnn.get_num_threads()
    fnn.set_num_threads(1)  # batches of 32 digits, as for the commands
    try:
        return train_judge(X, y)
    finally:
        fnn.set_num_threads(previous)


def test_the_judge_is_confident_on_digits_only(digit_judge):
    # the instrument of the test below: sure of real digits of every class, unsure of noise,
    # including kinds it never saw in training
    (_, _), (Xt, yt) = load_digits(test_size=0.25, seed=0)
    assert np.mean(digit_judge.predict(Xt).argmax(1) == yt) >= 0.95
    confidence, classes = judge(digit_judge, Xt)
    assert confidence > 0.9 and classes == 10
    rng = np.random.default_rng(1)
    for noise in (uniform_noise(rng, 1000), shuffled_pixels(rng, Xt, 1000),
                  sparse_pixels(rng, 1000), blurred_noise(rng, 1000, sigma=1.5),
                  np.full((100, 1, 8, 8), 0.5, np.float32)):
        confidence, classes = judge(digit_judge, noise)
        assert confidence < 0.3 and classes <= 1


# name: (--epochs, None for the command's default; latent size; image side; the bar: the judge's
# mean confidence at least this much above what it gives noise (~0.10), and at least this many
# classes named). Measured (the judge's confidence / classes; --seed): vae 0.87-0.88 / 10 (0-2),
# dcgan 0.73-0.76 / 10 (0-1), gan 0.73-0.77 / 8-10 (0-5), wgan after 60 of its 300 epochs
# 0.48-0.56 / 5-7 (0-4); untrained generators and one epoch of each 0.10-0.11 / 0-1
GENERATORS = {"vae": (None, 8, 8, 0.5, 9), "dcgan": (None, 32, 16, 0.45, 9),
              "gan": (None, 32, 8, 0.45, 7), "wgan": (60, 32, 16, 0.25, 4)}


def untrained_generator(name):
    fnn.seed(0)
    if name == "vae":
        return generative.vae_digits().decoder
    if name == "gan":
        return generative.dense_gan(32)[0]
    return dcgan(32, image_size=16, features=32)[0]


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generative_commands_save_a_generator_of_confident_digits_of_many_classes(
        tmp_path, capsys, digit_judge, name):
    epochs, latent, side, margin, min_classes = GENERATORS[name]
    path = tmp_path / f"{name}.npz"
    assert main(["train", name, "--out", str(path), "--threads", "1", "--quiet"]
                + ([] if epochs is None else ["--epochs", str(epochs)])) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    if name == "dcgan" and all(importlib.util.find_spec(m) for m in ("matplotlib", "PIL")):
        check_dcgan_pictures(tmp_path, out)  # its pictures, drawn by default (test_cli_plots.py)
    generator = fnn.load(path)  # the VAE's decoder or the GAN's generator: latent codes in
    z = np.random.default_rng(0).standard_normal((1000, latent)).astype(np.float32)
    images = generator.predict(z)
    assert images.shape == (1000, 1, side, side) and np.all(np.isfinite(images))
    to_digits = (lambda x: x) if name == "vae" else generative.to_digit_scale

    rng = np.random.default_rng(2)
    noise = max(judge(digit_judge, kind)[0] for kind in (  # the last two: kinds it never saw
        uniform_noise(rng, 1000), sparse_pixels(rng, 1000), blurred_noise(rng, 1000, sigma=1.5)))

    def meets_bar(confidence, classes):
        return confidence >= noise + margin and classes >= min_classes

    confidence, classes = judge(digit_judge, to_digits(images))
    assert meets_bar(confidence, classes), (confidence, classes, noise)
    # the bar tells a trained generator from an untrained one
    untrained = judge(digit_judge, to_digits(untrained_generator(name).predict(z)))
    assert not meets_bar(*untrained), untrained

    if name in ("dcgan", "vae"):
        # the bar, with the recipe's own judge: a held-out digits classifier gives DCGAN
        # samples mean max-probability above 0.8, and every class appears
        match = re.search(r"(?:confidence on samples|mean max-probability) ([0-9.]+).*?"
                          r"classes \[([0-9, ]+)\]", out)
        assert match, out
        assert float(match.group(1)) > 0.8
        counts = [int(c) for c in match.group(2).split(",")]
        assert len(counts) == 10 and min(counts) >= 20, counts
