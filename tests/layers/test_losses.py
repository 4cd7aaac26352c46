"""Losses against closed forms, numeric gradients (float64) and extreme inputs."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastnn as fnn
from fastnn import losses

DTYPES = [np.float32, np.float64]


def log_softmax(z):
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


# --- MSE ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_closed_form_and_dtype(dtype):
    r = np.random.default_rng(0)
    pred, target = r.normal(size=(4, 3, 2)).astype(dtype), r.normal(size=(4, 3, 2)).astype(dtype)
    loss = losses.MSE()
    value = loss.forward(pred, target)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, np.mean((pred.astype(np.float64) - target) ** 2), rtol=1e-5)
    grad = loss.backward()
    assert grad.dtype == dtype and grad.shape == pred.shape
    np.testing.assert_allclose(grad, 2 * (pred - target) / pred.size, rtol=1e-5)


def test_mse_gradcheck():
    r = np.random.default_rng(1)
    fnn.assert_gradcheck(losses.MSE(), r.normal(size=(5, 4)), target=r.normal(size=(5, 4)))


def test_mse_shape_mismatch_names_loss_and_shapes():
    with pytest.raises(ValueError, match=r"MSE.*\(4, 3\).*\(4, 2\)"):
        losses.MSE().forward(np.zeros((4, 3)), np.zeros((4, 2)))


# --- cross-entropy ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int32, np.int64])
def test_cross_entropy_labels_closed_form(dtype, label_dtype):
    r = np.random.default_rng(2)
    logits = r.normal(size=(6, 5)).astype(dtype)
    labels = r.integers(0, 5, size=6).astype(label_dtype)
    loss = losses.CrossEntropy()
    value = loss.forward(logits, labels)
    expected = -log_softmax(logits)[np.arange(6), labels].mean()
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    grad = loss.backward()
    assert grad.dtype == dtype and grad.shape == logits.shape
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(grad, (np.exp(log_softmax(logits)) - onehot) / 6, rtol=1e-4, atol=1e-7)


@given(n=st.integers(1, 4), t=st.integers(1, 3), c=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cross_entropy_sequence_logits_match_flattened(n, t, c, seed):
    r = np.random.default_rng(seed)
    logits, labels = r.normal(size=(n, t, c)), r.integers(0, c, size=(n, t))
    seq, flat = losses.CrossEntropy(), losses.CrossEntropy()
    np.testing.assert_allclose(seq.forward(logits, labels),
                               flat.forward(logits.reshape(-1, c), labels.reshape(-1)), rtol=1e-12)
    np.testing.assert_allclose(seq.backward(), flat.backward().reshape(n, t, c), rtol=1e-12)


def test_cross_entropy_one_hot_equals_labels_and_soft_targets_closed_form():
    r = np.random.default_rng(3)
    logits, labels = r.normal(size=(7, 4)), r.integers(0, 4, size=7)
    hard, onehot = losses.CrossEntropy(), losses.CrossEntropy()
    np.testing.assert_allclose(hard.forward(logits, labels), onehot.forward(logits, np.eye(4)[labels]))
    np.testing.assert_allclose(hard.backward(), onehot.backward(), atol=1e-15)
    # integer one-hot arrays are one-hot targets too
    np.testing.assert_allclose(losses.CrossEntropy().forward(logits, np.eye(4, dtype=np.int64)[labels]),
                               hard.forward(logits, labels))
    probs = r.dirichlet(np.ones(4), size=7)
    soft = losses.CrossEntropy()
    np.testing.assert_allclose(soft.forward(logits, probs), -(probs * log_softmax(logits)).sum(1).mean())


def test_cross_entropy_gradcheck_labels_and_probabilities():
    r = np.random.default_rng(4)
    logits = r.normal(size=(3, 2, 5))
    fnn.assert_gradcheck(losses.CrossEntropy(), logits, target=r.integers(0, 5, size=(3, 2)))
    fnn.assert_gradcheck(losses.CrossEntropy(), logits, target=r.dirichlet(np.ones(5), size=(3, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_extreme_logits_stay_finite(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3e4]], dtype=dtype)
    loss = losses.CrossEntropy()
    value = loss.forward(logits, np.array([0, 1]))
    np.testing.assert_allclose(value, (0.0 + 2e4) / 2, rtol=1e-6)
    grad = loss.backward()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, -0.5, 0.5]], atol=1e-6)


def test_cross_entropy_bad_labels_raise_clear_errors():
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"CrossEntropy.*\[0, 3\).*\(4, 3\).*\[0, 3\].*\(4,\)"):
        losses.CrossEntropy().forward(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="CrossEntropy.*-1"):
        losses.CrossEntropy().forward(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(ValueError, match=r"CrossEntropy.*\(4,\).*\(4, 3\).*\(5,\)"):
        losses.CrossEntropy().forward(logits, np.zeros(5, dtype=np.int64))
    with pytest.raises(TypeError, match="CrossEntropy.*integers"):
        losses.CrossEntropy().forward(logits, np.zeros(4))
    with pytest.raises(RuntimeError, match="before forward"):
        losses.CrossEntropy().backward()


# --- binary cross-entropy ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_closed_form_and_clamped_logs(dtype):
    r = np.random.default_rng(5)
    p, t = r.uniform(0.05, 0.95, size=(6, 2)).astype(dtype), r.uniform(size=(6, 2)).astype(dtype)
    loss = losses.BCE()
    expected = -np.mean(t * np.log(p.astype(np.float64)) + (1 - t) * np.log1p(-p.astype(np.float64)))
    np.testing.assert_allclose(loss.forward(p, t), expected, rtol=1e-5)
    assert loss.backward().dtype == dtype
    # log(0) is clamped at -100 as in PyTorch: a confident wrong answer costs exactly 100
    edge = losses.BCE()
    assert edge.forward(np.array([0.0, 1.0], dtype=dtype), np.array([1.0, 0.0], dtype=dtype)) == pytest.approx(100.0)
    assert np.isfinite(edge.backward()).all()
    assert losses.BCE().forward(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


def test_bce_gradcheck_and_range_error():
    r = np.random.default_rng(6)
    fnn.assert_gradcheck(losses.BCE(), r.uniform(0.1, 0.9, size=(4, 3)), target=r.uniform(size=(4, 3)))
    with pytest.raises(ValueError, match=r"BCE.*\[0, 1\].*\(2,\)"):
        losses.BCE().forward(np.array([0.5, 1.5]), np.array([0.0, 1.0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_closed_form_and_extremes(dtype):
    r = np.random.default_rng(7)
    z, t = r.normal(scale=3, size=(5, 3)).astype(dtype), r.uniform(size=(5, 3)).astype(dtype)
    loss = losses.BCEWithLogits()
    s = sigmoid(z.astype(np.float64))
    np.testing.assert_allclose(loss.forward(z, t), -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s)), rtol=1e-5)
    np.testing.assert_allclose(loss.backward(), (s - t) / z.size, rtol=1e-4, atol=1e-8)
    big = losses.BCEWithLogits()
    z = np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype)
    value = big.forward(z, np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype))
    np.testing.assert_allclose(value, 2e4 / 4, rtol=1e-6)
    np.testing.assert_allclose(big.backward(), [0, 0, 0.25, -0.25], atol=1e-7)


def test_bce_with_logits_gradcheck():
    r = np.random.default_rng(8)
    fnn.assert_gradcheck(losses.BCEWithLogits(), r.normal(size=(4, 2)), target=r.uniform(size=(4, 2)))


# --- KL divergence of a diagonal Gaussian from N(0, I) ------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_normal_closed_form(dtype):
    r = np.random.default_rng(9)
    mu, logvar = r.normal(size=(4, 3)).astype(dtype), r.normal(size=(4, 3)).astype(dtype)
    loss = losses.KLDivergenceNormal()
    var = np.exp(logvar.astype(np.float64))
    # KL(N(mu, var) || N(0, 1)) per dimension = 0.5 * (var + mu^2 - 1 - log var), summed, batch mean
    expected = np.mean(np.sum(0.5 * (var + mu.astype(np.float64) ** 2 - 1 - logvar), axis=1))
    np.testing.assert_allclose(loss.forward(mu, logvar), expected, rtol=1e-5)
    dmu, dlogvar = loss.backward()
    assert dmu.dtype == dtype and dlogvar.dtype == dtype
    np.testing.assert_allclose(dmu, mu / 4, rtol=1e-6)
    np.testing.assert_allclose(dlogvar, 0.5 * (var - 1) / 4, rtol=1e-5)
    assert losses.KLDivergenceNormal().forward(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0


def test_kl_normal_gradcheck():
    r = np.random.default_rng(10)
    fnn.assert_gradcheck(losses.KLDivergenceNormal(), r.normal(size=(3, 4)), target=r.normal(size=(3, 4)))


def test_get_by_name():
    assert isinstance(losses.get("mse"), losses.MSE)
    assert isinstance(losses.get("cross_entropy"), losses.CrossEntropy)
    assert isinstance(losses.get("bce"), losses.BCE)
    assert isinstance(losses.get("bce_with_logits"), losses.BCEWithLogits)
    existing = losses.MSE()
    assert losses.get(existing) is existing
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get("hinge")


# --- reduction="mean" | "sum" | "none" (PyTorch's semantics) ----------------------------------------
def _reduction_cases(rng):
    """(name, fastnn loss class, torch loss factory, pred, target, torch pred transform)"""
    import torch
    n, c = 5, 4
    logits = rng.normal(0, 2, (n, 3, c))
    labels = rng.integers(0, c, (n, 3))
    soft = rng.dirichlet(np.ones(c), (n, 3))
    probs = rng.uniform(0.02, 0.98, (n, 3))
    t01 = rng.integers(0, 2, (n, 3)).astype(np.float64)
    nn = torch.nn
    # torch's CrossEntropyLoss takes the class axis second: move it
    ce = (lambda r: (lambda z, t: nn.CrossEntropyLoss(reduction=r)(
        z.movedim(-1, 1), t.movedim(-1, 1) if t.is_floating_point() else t)))
    return [
        ("mse", losses.MSE, lambda r: nn.MSELoss(reduction=r), rng.normal(size=(n, 3)), rng.normal(size=(n, 3))),
        ("ce-labels", losses.CrossEntropy, ce, logits, labels),
        ("ce-probs", losses.CrossEntropy, ce, logits, soft),
        ("bce", losses.BCE, lambda r: nn.BCELoss(reduction=r), probs, t01),
        ("bce-logits", losses.BCEWithLogits, lambda r: nn.BCEWithLogitsLoss(reduction=r),
         rng.normal(0, 3, (n, 3)), t01),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_reduction_matches_torch_value_and_gradient(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for name, ours_cls, theirs, pred, target in _reduction_cases(rng):
        ours = ours_cls(reduction=reduction)
        value = ours.forward(pred, target)
        zt = torch.tensor(pred, requires_grad=True)
        tt = torch.tensor(target)
        ref = theirs(reduction)(zt, tt)
        if reduction == "none":
            assert isinstance(value, np.ndarray) and value.dtype == np.float64, name
            upstream = rng.normal(size=ref.shape)
            ref.backward(torch.tensor(upstream))
            grad = ours.backward(upstream)
        else:
            assert isinstance(value, float), name
            ref.backward(torch.tensor(1.7, dtype=torch.float64))
            grad = ours.backward(1.7)
        np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, pred, target", [
    (losses.MSE, [[0.5, -1.0], [2.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]),
    (losses.CrossEntropy, [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.array([1, 2])),
    (losses.BCE, [[0.2, 0.9]], [[0.0, 1.0]]),
    (losses.BCEWithLogits, [[-1.0, 2.0, 0.0]], [[0.0, 1.0, 1.0]]),
])
def test_none_sums_to_sum_and_averages_to_mean(cls, pred, target, dtype):
    pred = np.asarray(pred, dtype)
    if np.asarray(target).dtype.kind == "f":
        target = np.asarray(target, dtype)
    none = cls(reduction="none")
    per = none.forward(pred, target)
    assert per.dtype == dtype and per.shape == (pred.shape[:-1] if cls is losses.CrossEntropy else pred.shape)
    total = cls(reduction="sum")
    mean = cls()
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(total.forward(pred, target), per.astype(np.float64).sum(), rtol=rtol)
    np.testing.assert_allclose(mean.forward(pred, target), per.astype(np.float64).mean(), rtol=rtol)
    # gradients: sum = none with dy of ones = mean * (number of losses)
    g_sum = total.backward()
    np.testing.assert_allclose(none.backward(np.ones_like(per)), g_sum, rtol=rtol)
    np.testing.assert_allclose(mean.backward() * per.size, g_sum, rtol=rtol)
    assert g_sum.dtype == dtype


def test_kl_divergence_normal_reductions():
    rng = np.random.default_rng(3)
    mu, logvar = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    per = losses.KLDivergenceNormal(reduction="none").forward(mu, logvar)
    expected = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum(1)
    np.testing.assert_allclose(per, expected, rtol=1e-14)
    assert losses.KLDivergenceNormal(reduction="sum").forward(mu, logvar) == pytest.approx(expected.sum())
    assert losses.KLDivergenceNormal().forward(mu, logvar) == pytest.approx(expected.mean())
    loss = losses.KLDivergenceNormal(reduction="none")
    loss.forward(mu, logvar)
    dy = rng.normal(size=4)
    dmu, dlogvar = loss.backward(dy)
    np.testing.assert_allclose(dmu, mu * dy[:, None], rtol=1e-14)
    np.testing.assert_allclose(dlogvar, 0.5 * (np.exp(logvar) - 1) * dy[:, None], rtol=1e-14)


def test_none_reduction_gradient_is_checked_numerically():
    # L = sum(R * losses) with a random R: its gradient is backward(R)
    rng = np.random.default_rng(7)
    for loss, pred, target in [
            (losses.MSE(reduction="none"), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))),
            (losses.CrossEntropy(reduction="none"), rng.normal(size=(2, 3, 5)), rng.integers(0, 5, (2, 3))),
            (losses.BCEWithLogits(reduction="none"), rng.normal(size=(6,)), rng.random(6).round())]:
        R = rng.normal(size=loss.forward(pred, target).shape)
        analytic = loss.backward(R)
        numeric = np.zeros_like(pred)
        for i in range(pred.size):
            step = np.zeros_like(pred)
            step.flat[i] = 1e-6
            numeric.flat[i] = ((R * loss.forward(pred + step, target)).sum()
                               - (R * loss.forward(pred - step, target)).sum()) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=type(loss).__name__)


def test_reduction_errors_are_clear():
    with pytest.raises(ValueError, match=r"MSE: reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        losses.MSE(reduction="avg")
    loss = losses.CrossEntropy(reduction="none")
    loss.forward(np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"CrossEntropy\(reduction='none'\).backward: dy .*\(3,\)\) is required"):
        loss.backward()
    with pytest.raises(ValueError, match=r"dy must have the shape of the losses \(3,\), got \(3, 1\)"):
        loss.backward(np.ones((3, 1)))
    mean = losses.MSE()
    mean.forward(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="dy must be a scalar"):
        mean.backward(np.ones(3))
    assert repr(losses.BCE(reduction="sum")) == "BCE(reduction='sum')" and repr(losses.BCE()) == "BCE()"
