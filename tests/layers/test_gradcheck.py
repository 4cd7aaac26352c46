"""fnn.gradcheck on hand-written layers and losses: passes when right, fails (naming the tensor)
when a wrong gradient is planted, leaves the caller's object and random generator untouched."""
import pathlib
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _random
from fastnn.layers import Layer

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "gradcheck.md"


# --- hand-written layers ----------------------------------------------------------------------------
class Swish(Layer):
    """y = x * sigmoid(x)"""

    def __init__(self, dx_scale=1.0):
        super().__init__()
        self.dx_scale = dx_scale

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        self.s = 1.0 / (1.0 + np.exp(-self.x))
        return self.x * self.s

    def backward(self, dy):
        return dy * (self.s + self.x * self.s * (1 - self.s)) * self.dx_scale


class Affine(Layer):
    """y = x * weight + bias per feature; ``drop_bias_grad`` plants a missing gradient."""

    def __init__(self, features, weight_grad_scale=1.0, drop_bias_grad=False):
        super().__init__()
        self.features, self.weight_grad_scale, self.drop_bias_grad = features, weight_grad_scale, drop_bias_grad
        self.weight = self.add_parameter("weight", np.linspace(0.5, 1.5, features))
        self.bias = self.add_parameter("bias", np.linspace(-1, 1, features))

    def config(self):
        return {"features": self.features}

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        return self.x * self.weight.data + self.bias.data

    def backward(self, dy):
        flat = (-1, self.features)
        self.weight.grad += (dy * self.x).reshape(flat).sum(0) * self.weight_grad_scale
        if not self.drop_bias_grad:
            self.bias.grad += dy.reshape(flat).sum(0)
        return dy * self.weight.data


class PlainReLU(Layer):
    def __init__(self, negative_grad=0.0):
        super().__init__()
        self.negative_grad = negative_grad

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        return np.maximum(self.x, 0)

    def backward(self, dy):
        return dy * np.where(self.x > 0, 1.0, self.negative_grad)


class DenseReLU(Layer):
    """relu(x @ W.T): kinks hide inside, where a pre-activation is 0."""

    def __init__(self, weight):
        super().__init__()
        self.weight = self.add_parameter("weight", weight)

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        self.z = self.x @ self.weight.data.T
        return np.maximum(self.z, 0)

    def backward(self, dy):
        dz = dy * (self.z > 0)
        self.weight.grad += dz.T @ self.x
        return dz @ self.weight.data


class MyDropout(Layer):
    """Inverted dropout drawing its mask from fastnn's generator."""

    def forward(self, x, training=True):
        x = self.as_input(x)
        if not training:
            self.mask = np.ones_like(x)
            return x
        self.mask = (_random.rng().random(x.shape) >= 0.5) / 0.5
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


class Recentre(Layer):
    """y = weight * (x - running_mean); forward in training updates running_mean, so repeated
    forwards only agree if gradcheck restores the buffer."""

    def __init__(self, features):
        super().__init__()
        self.weight = self.add_parameter("weight", np.linspace(1, 2, features))
        self.add_buffer("running_mean", np.zeros(features))

    def forward(self, x, training=True):
        self.x = self.as_input(x)
        self.centre = self._buffers["running_mean"].copy()
        if training:
            self._buffers["running_mean"] += 0.1 * self.x.mean(axis=0)
        return self.weight.data * (self.x - self.centre)

    def backward(self, dy):
        self.weight.grad += (dy * (self.x - self.centre)).sum(0)
        return dy * self.weight.data


class Lookup(Layer):
    """Integer input: y = weight[x]."""

    def __init__(self, num, dim):
        super().__init__()
        self.weight = self.add_parameter("weight", np.arange(num * dim, dtype=float).reshape(num, dim) / 7)

    def forward(self, x, training=True):
        self.idx = np.asarray(x)
        return self.weight.data[self.idx]

    def backward(self, dy):
        np.add.at(self.weight.grad, self.idx, dy)
        return None


class HalfSquare:
    """A loss: 0.5 * mean((pred - target)^2), optionally with a wrong gradient."""

    def __init__(self, grad_scale=1.0):
        self.grad_scale = grad_scale

    def forward(self, pred, target):
        self.diff = pred - target
        return 0.5 * float(np.mean(self.diff ** 2))

    def backward(self):
        return self.diff / self.diff.size * self.grad_scale


class PairLoss:
    """sum(a * b^2): backward returns (da, db)."""

    def __init__(self, db_scale=1.0):
        self.db_scale = db_scale

    def forward(self, a, b):
        self.a, self.b = a, b
        return float(np.sum(a * b ** 2))

    def backward(self):
        return self.b ** 2, 2 * self.a * self.b * self.db_scale


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --- passes on correct layers ----------------------------------------------------------------------
def test_correct_layer_without_parameters_passes():
    result = fnn.gradcheck(Swish(), _x(3, 4))
    assert result.ok and bool(result)
    assert [t.name for t in result.tensors] == ["input"]
    assert result.tensor("input").n_checked == 12
    assert result.tensor("input").max_abs_err < 1e-7


def test_correct_layer_with_parameters_checks_input_and_every_parameter():
    result = fnn.gradcheck(Affine(5), _x(2, 3, 5))
    assert result.ok, result.report()
    assert [t.name for t in result.tensors] == ["input", "weight", "bias"]
    assert [t.n_checked for t in result.tensors] == [30, 5, 5]


@pytest.mark.parametrize("training", [True, False])
def test_inference_mode_is_passed_to_forward(training):
    layer = MyDropout()
    result = fnn.gradcheck(layer, _x(4, 6), training=training)
    assert result.ok, result.report()
    assert result.settings["training"] is training


# --- fails on planted errors ---------------------------------------------------------------------------
def test_input_gradient_off_by_ten_percent_fails_and_names_input():
    result = fnn.gradcheck(Swish(dx_scale=1.1), _x(3, 4))
    assert not result.ok
    assert result.failed_tensors == ["input"]
    report = result.report()
    assert "FAILED" in report and "worst entries of input" in report
    worst = result.tensor("input").worst(1)[0]
    assert worst.status == "FAIL"
    assert worst.analytic == pytest.approx(1.1 * worst.numeric, rel=1e-6)


def test_parameter_gradient_off_by_ten_percent_fails_only_that_parameter():
    result = fnn.gradcheck(Affine(4, weight_grad_scale=1.1), _x(3, 4))
    assert result.failed_tensors == ["weight"]
    assert "worst entries of weight" in result.report()
    assert result.tensor("weight").max_rel_err == pytest.approx(0.1 / 1.1, rel=1e-4)


def test_missing_parameter_gradient_fails():
    result = fnn.gradcheck(Affine(4, drop_bias_grad=True), _x(3, 4))
    assert result.failed_tensors == ["bias"]
    for entry in result.tensor("bias").failures:
        assert entry.analytic == 0.0 and entry.numeric != 0.0


def test_small_error_below_tolerance_passes_and_above_fails():
    # a relative error of 1e-4 is inside rtol=1e-3; tightening rtol exposes it
    assert fnn.gradcheck(Swish(dx_scale=1 + 1e-4), _x(3, 4)).ok
    assert not fnn.gradcheck(Swish(dx_scale=1 + 1e-4), _x(3, 4), rtol=1e-6, atol=1e-9).ok


def test_gradient_of_wrong_shape_or_missing_is_an_error_not_a_crash():
    class WrongShape(Swish):
        def backward(self, dy):
            return super().backward(dy)[:, :-1]

    class NoGrad(Swish):
        def backward(self, dy):
            return None

    result = fnn.gradcheck(WrongShape(), _x(3, 4))
    assert not result.ok and "shape (3, 3), expected (3, 4)" in result.report()
    result = fnn.gradcheck(NoGrad(), _x(3, 4))
    assert not result.ok and "no gradient" in result.report()


def test_assert_gradcheck_raises_with_the_report_and_returns_result_on_success():
    with pytest.raises(AssertionError) as info:
        fnn.assert_gradcheck(Affine(3, weight_grad_scale=1.1), _x(2, 3))
    message = str(info.value)
    assert "weight" in message and "FAILED" in message and "analytic" in message
    assert isinstance(fnn.assert_gradcheck(Affine(3), _x(2, 3)), fnn.GradcheckResult)


def test_report_is_readable():
    report = fnn.gradcheck(Affine(3, weight_grad_scale=1.1), _x(2, 3)).report()
    lines = report.splitlines()
    assert lines[0].startswith("gradcheck Affine(features=3)") and lines[0].endswith("FAILED")
    assert any(line.split()[:1] == ["weight"] and "<-- FAILED" in line for line in lines)
    assert any(line.strip().startswith("index (") and "[FAIL]" in line for line in lines)


# --- sampling ---------------------------------------------------------------------------------------------
class CountingSwish(Swish):
    def __init__(self):
        super().__init__()
        self.calls = [0]            # a list: deep copies share it, so the caller can count

    def forward(self, x, training=True):
        self.calls[0] += 1
        return super().forward(x, training)


def test_large_tensors_are_sampled_and_forward_count_stays_bounded():
    layer = CountingSwish()
    result = fnn.gradcheck(layer, _x(50, 100), max_entries=40)
    entry = result.tensor("input")
    assert (entry.n_checked, entry.n_total) == (40, 5000)
    assert len({e.index for e in entry.entries}) == 40
    assert layer.calls[0] <= 2 * 40 + 2
    assert result.ok


def test_max_entries_none_checks_everything():
    result = fnn.gradcheck(Swish(), _x(20, 15), max_entries=None)
    assert result.tensor("input").n_checked == 300


def test_sampled_check_still_catches_a_wrong_gradient():
    assert not fnn.gradcheck(Swish(dx_scale=1.05), _x(40, 40), max_entries=20).ok


# --- the caller's object and randomness ------------------------------------------------------------
def test_callers_layer_dtype_values_and_grads_are_untouched():
    layer = Affine(4).astype(np.float32)
    before = {p.name: (p.data.copy(), p.grad.copy()) for p in layer.parameters()}
    assert fnn.gradcheck(layer, _x(3, 4).astype(np.float32)).ok
    for p in layer.parameters():
        assert p.data.dtype == np.float32
        np.testing.assert_array_equal(p.data, before[p.name][0])
        np.testing.assert_array_equal(p.grad, before[p.name][1])


def test_dropout_mask_is_fixed_and_the_random_generator_is_left_in_place():
    fnn.seed(123)
    expected = _random.rng().random(3)
    fnn.seed(123)
    result = fnn.gradcheck(MyDropout(), _x(5, 6), training=True)
    assert result.ok, result.report()
    np.testing.assert_array_equal(_random.rng().random(3), expected)


def test_buffers_updated_in_forward_are_restored_between_evaluations():
    layer = Recentre(3)
    layer._buffers["running_mean"][:] = [0.5, -0.5, 1.0]
    result = fnn.gradcheck(layer, _x(4, 3), training=True)
    assert result.ok, result.report()
    np.testing.assert_array_equal(layer._buffers["running_mean"], [0.5, -0.5, 1.0])


def test_layer_without_astype_gets_float64_parameters():
    class Bare:
        def __init__(self):
            self.p = Affine(3).astype(np.float32).weight

        def parameters(self):
            return [self.p]

        def zero_grad(self):
            self.p.grad[...] = 0

        def forward(self, x, training=True):
            self.x = x
            return x * self.p.data

        def backward(self, dy):
            self.p.grad += (dy * self.x).sum(0)
            return dy * self.p.data

    bare = Bare()
    result = fnn.gradcheck(bare, _x(2, 3))
    assert result.ok, result.report()
    assert result.tensor("weight").max_abs_err < 1e-7
    assert bare.p.data.dtype == np.float32


def test_forward_that_downcasts_is_a_clear_type_error():
    class Downcast(Swish):
        def forward(self, x, training=True):
            return super().forward(x, training).astype(np.float32)

    with pytest.raises(TypeError, match="float64"):
        fnn.gradcheck(Downcast(), _x(2, 3))


# --- kinks ------------------------------------------------------------------------------------------------
def test_relu_at_zero_passes_by_nudging_the_input():
    x = np.zeros((3, 4))
    x[0, :2] = [1e-9, -1e-9]
    result = fnn.gradcheck(PlainReLU(), x)
    assert result.ok, result.report()
    assert "nudged 12 of 12" in result.report()
    assert result.tensor("input").n_kinks == 0


def test_relu_at_zero_without_nudging_passes_as_kinks():
    result = fnn.gradcheck(PlainReLU(), np.zeros((2, 3)), nudge=False)
    assert result.ok, result.report()
    assert result.tensor("input").n_kinks == 6


def test_wrong_relu_gradient_is_not_excused_by_kink_handling():
    x = _x(4, 5)
    assert not fnn.gradcheck(PlainReLU(negative_grad=1.0), x).ok
    assert not fnn.gradcheck(PlainReLU(negative_grad=1.0), x, nudge=False).ok


def test_hidden_kink_inside_a_layer_is_handled():
    # the first sample's pre-activation of unit 0 is exactly 0: every input entry of that row and
    # weight row 0 sit on a kink that nudging the input cannot see
    weight = np.array([[1.0, -1.0, 0.5], [0.3, 0.2, -0.7]])
    x = np.array([[1.0, 2.0, 2.0], [0.4, -1.3, 0.8]])
    assert (x @ weight.T)[0, 0] == 0.0
    result = fnn.gradcheck(DenseReLU(weight), x, nudge=False)
    assert result.ok, result.report()
    assert result.tensor("input").n_kinks + result.tensor("weight").n_kinks > 0


def test_max_ties_are_nudged_apart():
    class RowMax(Layer):
        def forward(self, x, training=True):
            self.x = self.as_input(x)
            self.arg = self.x.argmax(axis=1)
            return self.x.max(axis=1)

        def backward(self, dy):
            dx = np.zeros_like(self.x)
            dx[np.arange(len(dy)), self.arg] = dy
            return dx

    result = fnn.gradcheck(RowMax(), np.ones((3, 4)))
    assert result.ok, result.report()
    assert result.tensor("input").n_kinks == 0


# --- losses and models ----------------------------------------------------------------------------------
def test_loss_gradient_is_checked_against_pred():
    pred, target = _x(4, 3), _x(4, 3, seed=1)
    result = fnn.gradcheck(HalfSquare(), pred, target=target)
    assert result.ok, result.report()
    assert [t.name for t in result.tensors] == ["pred"]
    assert result.failed_tensors == [] and "L = forward(pred, target)" in result.report()
    assert fnn.gradcheck(HalfSquare(grad_scale=1.1), pred, target=target).failed_tensors == ["pred"]


def test_loss_returning_a_pair_is_checked_against_both_arguments():
    a, b = _x(3, 2), _x(3, 2, seed=1)
    assert [t.name for t in fnn.gradcheck(PairLoss(), a, target=b).tensors] == ["pred", "target"]
    assert fnn.gradcheck(PairLoss(), a, target=b).ok
    assert fnn.gradcheck(PairLoss(db_scale=0.9), a, target=b).failed_tensors == ["target"]


def test_model_and_loss_together():
    x, y = _x(4, 3), _x(4, 3, seed=2)
    result = fnn.gradcheck(Affine(3), x, target=y, loss=HalfSquare())
    assert result.ok, result.report()
    assert [t.name for t in result.tensors] == ["input", "weight", "bias"]
    wrong = fnn.gradcheck(Affine(3, weight_grad_scale=0.9), x, target=y, loss=HalfSquare())
    assert wrong.failed_tensors == ["weight"]


def test_integer_input_skips_the_input_and_checks_parameters():
    idx = np.array([[0, 2, 2], [1, 0, 3]])
    result = fnn.gradcheck(Lookup(4, 2), idx)
    assert result.ok, result.report()
    assert result.tensor("input").skipped and result.tensor("weight").n_checked == 8
    assert "skipped: integer dtype" in result.report()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="eps"):
        fnn.gradcheck(Swish(), _x(2, 2), eps=0)
    with pytest.raises(TypeError, match="target"):
        fnn.gradcheck(Affine(2), _x(2, 2), loss=HalfSquare())


# --- the user guide ------------------------------------------------------------------------------------
def _doc_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_custom_layer_example_runs_and_its_property_test_passes():
    blocks = _doc_blocks()
    layer_block = next(b for b in blocks if "class Scale(Layer)" in b)
    property_block = next(b for b in blocks if "def test_scale_gradients" in b)
    namespace = {}
    exec(compile(layer_block, str(DOC), "exec"), namespace)   # runs fnn.assert_gradcheck(Scale(3), x)
    exec(compile(property_block, str(DOC), "exec"), namespace)
    namespace["test_scale_gradients"]()                       # hypothesis runs the property


def test_docs_custom_layer_with_a_planted_error_is_caught():
    namespace = {}
    exec(compile(next(b for b in _doc_blocks() if "class Scale(Layer)" in b), str(DOC), "exec"), namespace)
    scale_cls = namespace["Scale"]

    class BrokenScale(scale_cls):
        def backward(self, dy):
            dx = super().backward(dy)
            self.bias.grad *= 2
            return dx

    result = fnn.gradcheck(BrokenScale(3), _x(4, 3))
    assert result.failed_tensors == ["bias"]


# --- the command line ----------------------------------------------------------------------------------
def test_cli_passes_on_correct_builtin_layers(capsys):
    from fastnn.testing.gradcheck_cli import main

    assert main(["Sigmoid", "mse", "--examples", "3"]) == 0
    out = capsys.readouterr().out
    assert "Sigmoid" in out and "MSE" in out and "3 of 3 checks passed" in out


def test_cli_fails_with_exit_code_1_and_the_smallest_failing_configuration(capsys, monkeypatch):
    from fastnn import layers as L
    from fastnn.testing.gradcheck_cli import main

    correct = L.Tanh.backward
    monkeypatch.setattr(L.Tanh, "backward", lambda self, dy: correct(self, dy) * 1.05)
    assert main(["Tanh", "--examples", "3", "--mode", "inference"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: Tanh (inference); smallest failing configuration" in out
    assert "Case(Tanh" in out and "worst entries of input" in out and "0 of 1 checks passed" in out


def test_cli_usage_errors_exit_with_2(capsys):
    from fastnn.testing.gradcheck_cli import main

    assert main(["NoSuchLayer"]) == 2
    assert "unknown layer or loss NoSuchLayer" in capsys.readouterr().err
    assert main(["--examples", "0"]) == 2
    assert main(["--list"]) == 0 and "BatchNorm2D" in capsys.readouterr().out
