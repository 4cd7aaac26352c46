"""Every built-in layer and loss passes fnn.gradcheck in float64 over hypothesis-generated
configurations (fastnn.testing.cases), in training and inference mode; and gradcheck catches a
wrong gradient planted into a copy of a built-in layer."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings

import fastnn as fnn
from fastnn import layers as L
from fastnn.testing import LAYERS, LOSSES, cases

# a case is two forwards per checked entry: a third of the profile's examples per (layer, mode)
# keeps the file within its time budget; the "thorough" profile still scales it up
EXAMPLES = max(5, settings().max_examples // 3)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradients(name, training):
    @settings(max_examples=EXAMPLES)
    @given(case=cases(name, training=training))
    def check(case):
        result = case.check()
        assert result.ok, f"{case}\n{result.report()}"
        assert any(t.n_checked for t in result.tensors), f"{case}: nothing was checked"

    check()


@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradients(name):
    @settings(max_examples=EXAMPLES)
    @given(case=cases(name))
    def check(case):
        result = case.check()
        assert result.ok, f"{case}\n{result.report()}"

    check()


def test_model_and_loss_gradients_together():
    rng = np.random.default_rng(0)
    model = fnn.Sequential(L.Conv2D(2, 3, 3, padding=1), L.BatchNorm2D(3), L.Tanh(), L.MaxPool2D(2),
                           L.Flatten(), L.Dense(12, 4), L.Sigmoid())
    x, y = rng.standard_normal((3, 2, 4, 4)), rng.uniform(0, 1, (3, 4))
    for training in (True, False):
        result = fnn.gradcheck(model, x, target=y, loss=fnn.losses.BCE(), training=training, max_entries=20)
        assert result.ok, result.report()
        assert {"0.weight", "1.weight", "5.bias"} <= {t.name for t in result.tensors}


def _planted(layer, dx_scale=1.0, param_scale=None):
    """A copy of ``layer`` whose class overrides backward to scale dx (and optionally one
    parameter's gradient)."""
    base = type(layer)

    class Planted(base):
        def backward(self, dy):
            dx = base.backward(self, dy)
            if param_scale is not None:
                name, scale = param_scale
                dict(self.named_parameters())[name].grad *= scale
            return dx * dx_scale

    planted = copy.deepcopy(layer)
    planted.__class__ = Planted
    return planted


def test_gradcheck_catches_a_wrong_gradient_planted_into_a_builtin_layer():
    rng = np.random.default_rng(1)
    dense = L.Dense(4, 3).astype(np.float64)
    x = rng.standard_normal((5, 4))
    assert fnn.gradcheck(dense, x).ok
    assert fnn.gradcheck(_planted(dense, dx_scale=1.05), x).failed_tensors == ["input"]
    assert fnn.gradcheck(_planted(dense, param_scale=("bias", 0.95)), x).failed_tensors == ["bias"]

    norm = L.BatchNorm2D(3).astype(np.float64)
    x = rng.standard_normal((2, 3, 2, 2))
    for training in (True, False):
        assert fnn.gradcheck(norm, x, training=training).ok
        wrong = fnn.gradcheck(_planted(norm, dx_scale=1.05), x, training=training)
        assert wrong.failed_tensors == ["input"], wrong.report()
