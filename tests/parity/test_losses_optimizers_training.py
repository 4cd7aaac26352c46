"""Losses, optimizers and a whole training run against PyTorch itself (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastnn as fnn  # noqa: E402
from fastnn import layers as L  # noqa: E402
from fastnn import losses, optim  # noqa: E402
from fastnn.layers import Parameter  # noqa: E402


def torch_loss_and_grad(fn, pred, target):
    p = torch.tensor(pred, requires_grad=True)
    value = fn(p, target)
    value.backward()
    return value.item(), p.grad.numpy()


def check_loss(ours, theirs, pred, target, target_torch):
    value = ours.forward(pred, target)
    grad = ours.backward()
    t_value, t_grad = torch_loss_and_grad(theirs, pred, target_torch)
    np.testing.assert_allclose(value, t_value, rtol=1e-10)
    np.testing.assert_allclose(grad, t_grad, rtol=1e-8, atol=1e-14)


def test_losses_match_torch():
    r = np.random.default_rng(0)
    F = torch.nn.functional
    logits = r.normal(scale=3, size=(6, 5))
    labels = r.integers(0, 5, size=6)
    check_loss(losses.CrossEntropy(), F.cross_entropy, logits, labels, torch.tensor(labels))
    probs = r.dirichlet(np.ones(5), size=6)
    check_loss(losses.CrossEntropy(), F.cross_entropy, logits, probs, torch.tensor(probs))
    # (N, T, C) logits with (N, T) labels: torch wants the class axis second
    seq, seq_labels = r.normal(size=(2, 3, 4)), r.integers(0, 4, size=(2, 3))
    check_loss(losses.CrossEntropy(), lambda p, t: F.cross_entropy(p.permute(0, 2, 1), t),
               seq, seq_labels, torch.tensor(seq_labels))
    pred, target = r.normal(size=(4, 3)), r.normal(size=(4, 3))
    check_loss(losses.MSE(), F.mse_loss, pred, target, torch.tensor(target))
    p, t = r.uniform(0.01, 0.99, size=(4, 3)), r.uniform(size=(4, 3))
    check_loss(losses.BCE(), F.binary_cross_entropy, p, t, torch.tensor(t))
    edge = np.array([0.0, 1.0, 0.5, 1.0])
    edge_t = np.array([1.0, 0.0, 1.0, 1.0])
    assert losses.BCE().forward(edge, edge_t) == pytest.approx(
        F.binary_cross_entropy(torch.tensor(edge), torch.tensor(edge_t)).item(), rel=1e-12)
    z = r.normal(scale=5, size=(4, 3))
    check_loss(losses.BCEWithLogits(), F.binary_cross_entropy_with_logits, z, t, torch.tensor(t))


OPTIMIZERS = [
    ("SGD", dict(lr=0.1), dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
     dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("AdaGrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
    ("RMSProp", dict(lr=0.01, alpha=0.9, weight_decay=0.1), dict(lr=0.01, alpha=0.9, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, weight_decay=0.1), dict(lr=0.05, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05), dict(lr=0.05)),
]
TORCH_NAMES = {"SGD": "SGD", "AdaGrad": "Adagrad", "RMSProp": "RMSprop", "Adam": "Adam", "AdamW": "AdamW"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, ours_kw, torch_kw", OPTIMIZERS)
def test_optimizer_trajectories_match_torch(name, ours_kw, torch_kw, dtype):
    r = np.random.default_rng(1)
    start = r.normal(size=(4, 3)).astype(dtype)
    target = r.normal(size=(4, 3)).astype(dtype)
    ours = Parameter("w", start.copy())
    theirs = torch.tensor(start.copy(), requires_grad=True)
    opt = getattr(optim, name)([ours], **ours_kw)
    t_opt = getattr(torch.optim, TORCH_NAMES[name])([theirs], **torch_kw)
    for step in range(8):
        # the gradient of sum((w - target)^2 * (1 + step/4)) / 2, computed by each side
        opt.zero_grad()
        ours.grad += (ours.data - target) * dtype(1 + step / 4)
        opt.step()
        t_opt.zero_grad()
        (((theirs - torch.tensor(target)) ** 2).sum() * (1 + step / 4) / 2).backward()
        t_opt.step()
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), **tol)


def test_clip_grad_norm_matches_torch():
    r = np.random.default_rng(2)
    grads = [r.normal(size=(3, 4)), r.normal(size=5)]
    ours = [Parameter(str(i), np.zeros_like(g)) for i, g in enumerate(grads)]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad[...] = g
        t.grad = torch.tensor(g)
    total = optim.clip_grad_norm(ours, 0.5)
    t_total = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    assert total == pytest.approx(t_total.item(), rel=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12)


def test_sequential_training_matches_torch_step_for_step():
    """Same weights, data and Adam settings: a few full-batch steps of an MLP agree with torch."""
    fnn.seed(0)
    model = fnn.Sequential(L.Dense(6, 8), L.Tanh(), L.Dense(8, 3)).astype(np.float64)
    t_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    t_model.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    r = np.random.default_rng(3)
    X, y = r.normal(size=(16, 6)), r.integers(0, 3, size=16)
    model.fit(X, y, optimizer=optim.Adam(model.parameters(), lr=0.01), epochs=5,
              batch_size=16, shuffle=False, verbose=0)
    t_opt = torch.optim.Adam(t_model.parameters(), lr=0.01)
    for _ in range(5):
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(t_model(torch.tensor(X)), torch.tensor(y)).backward()
        t_opt.step()
    for key, value in t_model.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-8, atol=1e-10)
