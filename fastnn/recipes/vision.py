"""``fastnn train resnet|fcn``: graph models (``fnn.Model``) on scikit-learn's 8x8 digits.

- ``resnet``: a small ResNet, residual blocks ``relu(BN(conv(relu(BN(conv x)))) + shortcut)``
  whose shortcut is the identity, or a strided 1x1 convolution with batch norm where the block
  changes width and resolution; global average pooling before the classifier. Trained on three
  quarters of the digits; bar: >= 97% accuracy on the held-out quarter.
- ``fcn``: a U-Net-style fully convolutional network that segments digits pasted on a 32x32
  canvas: every pixel is background or the class of the digit it belongs to. The encoder's
  full-resolution features join the decoder's by concatenation (the skip connection). Training
  canvases are made from the training digits, test canvases from the held-out digits; bar:
  mean intersection-over-union >= 0.9 over the 11 pixel classes on the test canvases.
"""
import math
import time

import numpy as np

from .. import layers as L
from .. import optim
from .._random import seed as set_seed
from ..callbacks import LearningRateScheduler
from ..datasets import load_digits
from ..graph import Input, Model
from ..losses import CrossEntropy, Loss
from . import _pictures

__all__ = ["train", "train_resnet", "train_fcn", "resnet", "residual_block", "fcn",
           "digit_canvases", "PixelCrossEntropy", "segmentation_scores", "RESNET_BAR", "FCN_BAR"]

RESNET_BAR = 0.97   # test accuracy on the held-out digits
FCN_BAR = 0.9       # mean IoU over background and the ten digit classes on held-out canvases


# --- the ResNet -----------------------------------------------------------------------------------
def residual_block(x, cin, cout, stride=1, name=None):
    """``relu(F(x) + shortcut(x))`` on a symbolic tensor ``x``, with
    ``F = Conv3x3(stride)-BN-ReLU-Conv3x3-BN``; the shortcut is ``x`` itself when the shape is
    kept, else a ``stride``d 1x1 convolution and batch norm (the projection shortcut)."""
    def named(part):
        return f"{name}_{part}" if name else None

    h = L.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, name=named("conv1"))(x)
    h = L.ReLU()(L.BatchNorm2D(cout, name=named("bn1"))(h))
    h = L.Conv2D(cout, cout, 3, padding=1, bias=False, name=named("conv2"))(h)
    h = L.BatchNorm2D(cout, name=named("bn2"))(h)
    if stride != 1 or cin != cout:
        x = L.Conv2D(cin, cout, 1, stride=stride, bias=False, name=named("proj"))(x)
        x = L.BatchNorm2D(cout, name=named("proj_bn"))(x)
    return L.ReLU()(L.Add()([h, x]))


def resnet(width=16, classes=10):
    """A ResNet for ``(N, 1, 8, 8)`` digits: stem Conv3x3-BN-ReLU (``width``), a block at 8x8,
    a block to ``2 * width`` channels at 4x4 (projection shortcut), a block at 4x4, global
    average pooling, Dense to ``classes`` logits."""
    inp = Input((1, 8, 8), name="digits")
    x = L.Conv2D(1, width, 3, padding=1, bias=False, name="stem")(inp)
    x = L.ReLU()(L.BatchNorm2D(width, name="stem_bn")(x))
    x = residual_block(x, width, width, name="block1")
    x = residual_block(x, width, 2 * width, stride=2, name="block2")
    x = residual_block(x, 2 * width, 2 * width, name="block3")
    x = L.Flatten()(L.AdaptiveAvgPool2D(1)(x))
    return Model(inp, L.Dense(2 * width, classes, name="classifier")(x), name="resnet")


# --- the FCN --------------------------------------------------------------------------------------
def digit_canvases(X, y, n, size=32, digits=(1, 3), generator=None):
    """``n`` canvases ``(n, 1, size, size)`` with ``digits[0]..digits[1]`` of the 8x8 digits
    ``X`` (labels ``y``) pasted at random places that do not overlap, and their pixel labels
    ``(n, size, size)`` int64: 0 for background, ``1 + class`` on the digit's non-zero
    pixels. Each canvas draws its digits from ``X`` at random (with replacement)."""
    generator = np.random.default_rng() if generator is None else generator
    side = X.shape[-1]
    images = np.zeros((n, 1, size, size), dtype=X.dtype)
    labels = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        boxes = []
        for _ in range(generator.integers(digits[0], digits[1] + 1)):
            for _attempt in range(100):  # rejection sampling of a free place
                r, c = generator.integers(0, size - side + 1, 2)
                if all(abs(r - r2) >= side or abs(c - c2) >= side for r2, c2 in boxes):
                    break
            else:
                continue
            boxes.append((r, c))
            k = generator.integers(len(X))
            digit = X[k, 0]
            images[i, 0, r:r + side, c:c + side] = digit
            labels[i, r:r + side, c:c + side] = np.where(digit > 0, 1 + y[k], 0)
    return images, labels


class PixelCrossEntropy(Loss):
    """Cross-entropy per pixel of logits ``(N, C, H, W)`` (classes on axis 1, the layout of
    convolution outputs and of ``torch.nn.CrossEntropyLoss``) against labels ``(N, H, W)``:
    ``fastnn.losses.CrossEntropy`` on the logits moved to channels-last, and its gradient
    moved back. ``class_weight`` (one per class) weighs each pixel by its label's weight (the
    target row is the weighted one-hot, whose cross-entropy is the weight times the pixel's);
    the mean is still over the pixels."""

    name = "pixel_cross_entropy"

    def __init__(self, class_weight=None):
        super().__init__("mean")
        self._ce = CrossEntropy()
        self.class_weight = None if class_weight is None else np.asarray(class_weight, np.float64)

    def forward(self, pred, target):
        logits = np.moveaxis(pred, 1, -1)
        if self.class_weight is not None:
            target = np.asarray(target)
            if target.shape != logits.shape[:-1] or len(self.class_weight) != logits.shape[-1]:
                raise ValueError(f"PixelCrossEntropy: labels {target.shape} and "
                                 f"{len(self.class_weight)} class weights for logits {pred.shape}")
            weighted = np.zeros(logits.shape, dtype=logits.dtype)
            np.put_along_axis(weighted, target[..., None],
                              self.class_weight.astype(logits.dtype)[target][..., None], -1)
            target = weighted
        return self._ce.forward(logits, target)

    def backward(self):
        return np.ascontiguousarray(np.moveaxis(self._ce.backward(), -1, 1))


def segmentation_scores(pred, labels, classes):
    """``(pixel accuracy, mean IoU, IoU per class)`` of predicted pixel classes ``pred`` against
    ``labels`` (same shape); the mean is over the classes present in either."""
    pred, labels = np.asarray(pred).ravel(), np.asarray(labels).ravel()
    confusion = np.bincount(labels * classes + pred, minlength=classes * classes)
    confusion = confusion.reshape(classes, classes)
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    iou = np.where(union > 0, hits / np.maximum(union, 1), np.nan)
    return float(hits.sum() / labels.size), float(np.nanmean(iou)), iou


def _conv_bn_relu(x, cin, cout):
    x = L.Conv2D(cin, cout, 3, padding=1, bias=False)(x)
    return L.ReLU()(L.BatchNorm2D(cout)(x))


def fcn(size=32, widths=(16, 24, 48), classes=11):
    """A U-Net-style FCN for ``(N, 1, size, size)`` canvases. The encoder has one
    Conv3x3-BN-ReLU at full resolution (``widths[0]`` channels), then after each 2x2 max pool
    two of them (``widths[1:]``); the decoder upsamples by 2 (nearest), concatenates the
    encoder's features of that resolution (the skip connections) and convolves again (two
    layers, one at full resolution); a 1x1 convolution gives ``classes`` logits per pixel,
    ``(N, classes, size, size)``. Recognising a digit needs its whole 8x8 extent, which the
    coarser stages see; full resolution only has to place the boundary, so it gets one layer
    each way (most of the pixels, and so of the work, are there)."""
    inp = Input((1, size, size), name="canvas")
    x = _conv_bn_relu(inp, 1, widths[0])
    skips, cin = [x], widths[0]
    for width in widths[1:]:
        x = _conv_bn_relu(_conv_bn_relu(L.MaxPool2D(2)(x), cin, width), width, width)
        skips.append(x)
        cin = width
    for k in range(len(widths) - 2, -1, -1):
        x = L.Concatenate(axis=1, name=f"skip{k}")([L.Upsample2D(2)(x), skips[k]])
        x = _conv_bn_relu(x, cin + widths[k], widths[k])
        if k:
            x = _conv_bn_relu(x, widths[k], widths[k])
        cin = widths[k]
    return Model(inp, L.Conv2D(cin, classes, 1, name="pixel_logits")(x), name="fcn")


# --- training -------------------------------------------------------------------------------------
def _cosine(lr, epochs):
    return LearningRateScheduler(
        lambda epoch, _: lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))


def train_resnet(epochs=10, seed=0, lr=3e-3, verbose=0):
    """The ResNet trained with Adam and cosine learning-rate decay on three quarters of the
    digits; returns ``(model, metrics)`` with the held-out quarter's accuracy and loss."""
    start = time.perf_counter()
    set_seed(seed)
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    model = resnet()
    model.fit(X, y, loss="cross_entropy", optimizer=optim.Adam(model.parameters(), lr=lr),
              epochs=epochs, batch_size=32, verbose=verbose, callbacks=[_cosine(lr, epochs)])
    result = model.evaluate(Xt, yt, loss="cross_entropy", metrics=["accuracy"])
    accuracy = float(result["accuracy"])
    return model, {"test_accuracy": accuracy, "test_loss": float(result["loss"]),
                   "test_digits": len(Xt), "bar": RESNET_BAR, "bar_met": accuracy >= RESNET_BAR,
                   "parameters": sum(p.data.size for p in model.parameters()),
                   "seconds": time.perf_counter() - start}


def train_fcn(epochs=10, seed=0, lr=3e-3, canvases=2000, test_canvases=500, size=32,
              digit_weight=3.0, verbose=0):
    """The FCN trained with Adam and cosine decay on ``canvases`` canvases made from the
    training digits, the digit pixels weighted ``digit_weight`` against background in the
    loss (they are about 6% of the pixels); scored on ``test_canvases`` canvases made from the
    held-out digits. Returns ``(model, metrics)``."""
    start = time.perf_counter()
    set_seed(seed)
    (X, y), (Xt, yt) = load_digits(test_size=0.25, seed=seed)
    generator = np.random.default_rng(seed)
    images, labels = digit_canvases(X, y, canvases, size=size, generator=generator)
    test_images, test_labels = digit_canvases(Xt, yt, test_canvases, size=size, generator=generator)
    model = fcn(size=size)
    loss = PixelCrossEntropy([1.0] + [digit_weight] * 10)
    model.fit(images, labels, loss=loss, optimizer=optim.Adam(model.parameters(), lr=lr),
              epochs=epochs, batch_size=32, verbose=verbose, callbacks=[_cosine(lr, epochs)])
    pred = model.predict(test_images).argmax(axis=1)
    pixel_accuracy, mean_iou, iou = segmentation_scores(pred, test_labels, 11)
    return model, {"pixel_accuracy": pixel_accuracy, "mean_iou": mean_iou,
                   "iou": [float(v) for v in iou], "test_canvases": test_canvases,
                   "bar": FCN_BAR, "bar_met": mean_iou >= FCN_BAR,
                   "parameters": sum(p.data.size for p in model.parameters()),
                   "seconds": time.perf_counter() - start}


def _verdict(met):
    return "met" if met else "MISSED"


def train(name, epochs=None, seed=0, out=None, verbose=1, plots=None):
    if name == "resnet":
        model, m = train_resnet(epochs=epochs or 10, seed=seed, verbose=verbose)
        print(f"resnet: test accuracy {m['test_accuracy']:.4f} on {m['test_digits']} held-out "
              f"digits (test loss {m['test_loss']:.4f}, {m['seconds']:.1f} s); bar >= "
              f"{RESNET_BAR}: {_verdict(m['bar_met'])}")
    elif name == "fcn":
        model, m = train_fcn(epochs=epochs or 10, seed=seed, verbose=verbose)
        print(f"fcn: pixel accuracy {m['pixel_accuracy']:.4f}, mean IoU {m['mean_iou']:.4f} on "
              f"{m['test_canvases']} held-out canvases ({m['seconds']:.1f} s); bar mean IoU >= "
              f"{FCN_BAR}: {_verdict(m['bar_met'])}")
    else:
        raise ValueError(f"vision recipes: unknown model {name!r}")
    if out:
        model.save(out)
        print(f"saved checkpoint to {out}")
    what = "digits" if name == "resnet" else "digit canvases (pixel loss)"
    _pictures.curves(plots, model.history, f"{name} on {what}")
    return m
