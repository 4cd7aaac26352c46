"""The examples of graph models and the newer layers on real or generated data, and their
commands: the ResNet with projection shortcuts (examples/resnet_graph_digits.py, ``fastnn train
resnet``), the U-Net-style FCN that segments digits on a canvas (examples/fcn_segment_digits.py,
``fastnn train fcn``), the depthwise-separable CNN (examples/mobilenet_digits.py) and the
bidirectional-LSTM tagger (examples/bilstm_tagger.py), each reaching its bar; and the pieces the FCN is scored with (canvases, per-pixel loss, IoU)."""
import importlib.util
import pathlib
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.cli import main as cli
from fastnn.datasets import load_digits
from fastnn.losses import CrossEntropy
from fastnn.recipes.vision import PixelCrossEntropy, digit_canvases, segmentation_scores

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    # batches of 32 small images: one thread, as the scripts and the commands' --threads 1
    previous = fnn.get_num_threads()
    fnn.set_num_threads(1)
    yield
    fnn.set_num_threads(previous)


# --- the examples reach their bars ----------------------------------------------------------------
def test_graph_resnet_example_reaches_97_percent(capsys):
    m = load_example("resnet_graph_digits").main(epochs=4, verbose=False)
    assert m["test_accuracy"] >= 0.97 and m["bar_met"]
    out = capsys.readouterr().out
    assert f"test accuracy {m['test_accuracy']:.4f}" in out and "bar >= 0.97: met" in out


def test_fcn_example_reaches_mean_iou_0_9(capsys):
    m = load_example("fcn_segment_digits").main(verbose=False)
    assert m["mean_iou"] >= 0.9 and m["bar_met"]
    assert m["pixel_accuracy"] > 0.99
    assert min(m["iou"]) > 0.75       # every class is segmented, not just the common ones
    out = capsys.readouterr().out
    assert f"mean IoU {m['mean_iou']:.4f}" in out and "bar mean IoU >= 0.9: met" in out


def test_mobilenet_example_reaches_97_percent_with_a_fraction_of_the_weights(capsys):
    m = load_example("mobilenet_digits").main(verbose=False)
    assert m["test_accuracy"] >= 0.97 and m["bar_met"]
    # depthwise + pointwise hold 9c + c*c' weights per block where a full 3x3 conv has 9*c*c'
    assert m["separable_weights"] == 9 * (24 + 48 + 96) + 24 * 48 + 48 * 96 + 96 * 96
    assert m["full_conv_weights"] == 9 * (24 * 48 + 48 * 96 + 96 * 96)
    assert "bar >= 0.97: met" in capsys.readouterr().out


def test_bilstm_tagger_needs_both_directions(capsys):
    m = load_example("bilstm_tagger").main(verbose=False)
    assert m["bidirectional_accuracy"] >= 0.97 and m["bar_met"]
    assert m["one_way_accuracy"] <= m["bidirectional_accuracy"] - 0.10
    # the tags are not lopsided: always answering the commonest one scores far below the bar
    assert m["tag_shares"].max() < 0.6
    assert "met" in capsys.readouterr().out.splitlines()[-1]


# --- the commands: a short run that saves a graph model fastnn.load rebuilds ----------------------
@pytest.mark.parametrize("name", ["resnet", "fcn"])
def test_train_command_saves_a_graph_model_that_reloads(tmp_path, capsys, name):
    path = tmp_path / f"{name}.npz"
    assert cli(["train", name, "--epochs", "1", "--out", str(path), "--threads", "1",
                "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{name}: .* held-out .*; bar .*: (met|MISSED)$", out, re.M), out
    if all(importlib.util.find_spec(m) for m in ("matplotlib", "PIL")):  # the plot extra
        assert (tmp_path / f"{name}-curves.png").stat().st_size > 0
    model = fnn.load(path)
    assert isinstance(model, fnn.Model)
    if name == "resnet":
        (_, _), (Xt, yt) = load_digits(test_size=0.25, seed=0)
        printed = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
        assert np.mean(model.predict(Xt).argmax(1) == yt) == pytest.approx(printed, abs=1e-4)
    else:
        (_, _), (Xt, yt) = load_digits(test_size=0.25, seed=0)
        images, _ = digit_canvases(Xt, yt, 4, generator=np.random.default_rng(0))
        assert model.predict(images).shape == (4, 11, 32, 32)


# --- the FCN's data, loss and scores --------------------------------------------------------------
def test_digit_canvases_paste_whole_digits_without_overlap():
    (X, y), _ = load_digits(test_size=0.25, seed=0)
    images, labels = digit_canvases(X, y, 200, size=32, digits=(1, 3),
                                    generator=np.random.default_rng(1))
    assert images.shape == (200, 1, 32, 32) and labels.shape == (200, 32, 32)
    # labelled pixels are exactly the non-zero ones (digits do not overlap: no pixel is shared)
    np.testing.assert_array_equal(labels > 0, images[:, 0] > 0)
    counts = [len(np.unique(lab)) - 1 for lab in labels]   # distinct digit classes per canvas
    assert 1 <= min(counts) and max(counts) <= 3 and np.mean(counts) > 1.5
    # a canvas of one digit holds that digit's pixels under its label
    one = next(i for i, lab in enumerate(labels) if len(np.unique(lab)) == 2)
    rows, cols = np.nonzero(labels[one])
    k = int(labels[one, rows[0], cols[0]]) - 1
    canvas, same_class = images[one, 0], X[y == k, 0]
    windows = [canvas[r:r + 8, c:c + 8] for r in range(rows.min() - 7, rows.min() + 1)
               for c in range(cols.min() - 7, cols.min() + 1) if 0 <= r <= 24 and 0 <= c <= 24]
    assert any((same_class == w).all(axis=(1, 2)).any() for w in windows)
    assert canvas.sum() == pytest.approx(max(w.sum() for w in windows))  # nothing else on it


def test_pixel_cross_entropy_is_cross_entropy_with_classes_last():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 4, 6)).astype(np.float64)
    labels = rng.integers(0, 5, (3, 4, 6))
    pixel, plain = PixelCrossEntropy(), CrossEntropy()
    assert pixel.forward(logits, labels) == pytest.approx(
        plain.forward(np.moveaxis(logits, 1, -1), labels), rel=1e-12)
    np.testing.assert_allclose(pixel.backward(), np.moveaxis(plain.backward(), -1, 1), rtol=1e-12)
    # class weights: each pixel's term times its label's weight, mean over the pixels
    weights = np.array([1.0, 3.0, 0.5, 2.0, 1.0])
    z = np.moveaxis(logits, 1, -1)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -np.mean(weights[labels] * np.take_along_axis(logp, labels[..., None], -1)[..., 0])
    assert PixelCrossEntropy(weights).forward(logits, labels) == pytest.approx(expected, rel=1e-10)
    fnn.gradcheck(PixelCrossEntropy(weights), logits, target=labels)


def test_segmentation_scores_count_each_class():
    labels = np.array([[0, 0, 1, 1], [0, 2, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    accuracy, mean_iou, iou = segmentation_scores(pred, labels, 4)
    assert accuracy == pytest.approx(6 / 8)
    # background: 2 hits of union 4; class 1: 2 of 3; class 2: 2 of 3; class 3 absent: not counted
    np.testing.assert_allclose(iou[:3], [2 / 4, 2 / 3, 2 / 3])
    assert np.isnan(iou[3]) and mean_iou == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
