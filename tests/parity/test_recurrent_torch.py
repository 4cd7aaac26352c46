"""PyTorch parity for the sequence layers: same weights give the same outputs and gradients."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastnn as fnn  # noqa: E402
from fastnn import layers as L  # noqa: E402

PAIRS = {"RNN": (L.RNN, torch.nn.RNN), "LSTM": (L.LSTM, torch.nn.LSTM), "GRU": (L.GRU, torch.nn.GRU)}


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_matches_torch(kind, return_sequences, with_state):
    ours_cls, torch_cls = PAIRS[kind]
    fnn.seed(0)
    ours = ours_cls(5, 7, return_sequences=return_sequences)
    theirs = torch_cls(5, 7, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    h0 = rng.standard_normal((3, 7)).astype(np.float32)
    c0 = rng.standard_normal((3, 7)).astype(np.float32)
    kwargs = {}
    if with_state:
        kwargs["h0"] = h0
        if kind == "LSTM":
            kwargs["c0"] = c0
    y = ours.forward(x, **kwargs)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    tc0 = torch.tensor(c0[None], requires_grad=True)
    if not with_state:
        out, _ = theirs(tx)
    elif kind == "LSTM":
        out, _ = theirs(tx, (th0, tc0))
    else:
        out, _ = theirs(tx, th0)
    ty = out if return_sequences else out[:, -1]
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)

    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ours.backward(dy)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    grads = dict(theirs.named_parameters())
    for p in ours.parameters():
        np.testing.assert_allclose(p.grad, grads[p.name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=p.name)
    if with_state:
        np.testing.assert_allclose(ours.dh0, th0.grad.numpy()[0], rtol=1e-4, atol=1e-5)
        if kind == "LSTM":
            np.testing.assert_allclose(ours.dc0, tc0.grad.numpy()[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("layers, bidirectional", [(2, False), (1, True), (3, True)])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_stacked_and_bidirectional_match_torch(kind, layers, bidirectional, return_sequences):
    """num_layers and bidirectional with torch's parameter names (_l1, _reverse), initial states
    (num_layers * directions, N, H) and their gradients; the last-step output is each direction's
    final state (torch's h_n of the top layer)."""
    ours_cls, torch_cls = PAIRS[kind]
    fnn.seed(0)
    ours = ours_cls(5, 7, num_layers=layers, bidirectional=bidirectional,
                    return_sequences=return_sequences)
    theirs = torch_cls(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    dirs = 2 if bidirectional else 1
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    h0 = rng.standard_normal((layers * dirs, 3, 7)).astype(np.float32)
    c0 = rng.standard_normal((layers * dirs, 3, 7)).astype(np.float32)
    kwargs = {"h0": h0} | ({"c0": c0} if kind == "LSTM" else {})
    y = ours.forward(x, **kwargs)
    tx = torch.tensor(x, requires_grad=True)
    th0, tc0 = torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)
    out, hn = theirs(tx, (th0, tc0) if kind == "LSTM" else th0)
    hn = hn[0] if kind == "LSTM" else hn
    ty = out if return_sequences else torch.cat(list(hn[-dirs:]), dim=1)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ours.backward(dy)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    np.testing.assert_allclose(ours.dh0, th0.grad.numpy(), rtol=1e-4, atol=1e-5)
    if kind == "LSTM":
        np.testing.assert_allclose(ours.dc0, tc0.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_dropout_between_layers_is_off_in_inference_and_scales_in_training():
    fnn.seed(3)
    dropped = L.LSTM(4, 5, num_layers=2, dropout=0.5)
    plain = L.LSTM(4, 5, num_layers=2)
    plain.load_state_dict(dropped.state_dict())
    x = np.random.default_rng(3).standard_normal((64, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(dropped.forward(x, training=False), plain.forward(x, training=False))
    y_train = dropped.forward(x, training=True)
    assert not np.allclose(y_train, plain.forward(x, training=True))
    assert dropped.config()["dropout"] == 0.5


def test_embedding_matches_torch():
    fnn.seed(0)
    ours = L.Embedding(10, 4)
    theirs = torch.nn.Embedding(10, 4)
    theirs.load_state_dict({"weight": torch.from_numpy(ours.weight.data)})
    ids = np.array([[1, 1, 9], [0, 1, 3]])
    y = ours.forward(ids)
    ty = theirs(torch.from_numpy(ids))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    dy = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    ours.backward(dy)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
